"""Downstream evaluation of a model on whole query splits, and the files it writes.

``EVALUATORS`` maps an objective to the function that evaluates it on a
split (the training loop calls it every ``eval_every`` steps and in
``mode=eval``). Each writes, under ``<workdir>/results/<dataset>/<split>/
step_<N>/``, the original's prediction file(s) and ``metrics.json``, and
returns flat metrics for TensorBoard / JSONL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Optional, Sequence

from etils import epath

from hero_jax.eval import vcmr as vcmr_lib

log = logging.getLogger("hero_jax")


@dataclasses.dataclass
class EvalContext:
  """What an evaluator needs from the run."""
  model: object
  params: object
  sizes: object            # layout.LayoutSizes (the bank's static shapes)
  objective_settings: object
  eval_config: dict        # config.eval as a dict
  workdir: str
  mesh: object = None
  batch_multiple: int = 1  # eval batches are rounded up to a multiple of this
  write_files: bool = True  # one process writes (multi-host)


def corpus_for(queries: Sequence, video_index: Optional[dict], all_vids) -> tuple:
  """(sorted corpus video ids, video2idx) of a query split, as the original:
  the split's entry of the data's video index when it has one (TVR's
  vid2dur_idx.json), else the videos its queries name, numbered by their
  place among all videos sorted by name."""
  if video_index:
    return sorted(video_index), dict(video_index)
  vids = sorted({q.vid for q in queries})
  number = {v: i for i, v in enumerate(sorted(all_vids))}
  missing = [v for v in vids if v not in number]
  if missing:
    raise ValueError(f"{len(missing)} videos named by the queries are in no split of the video "
                     f"dataset, e.g. {missing[:5]}")
  return vids, {v: number[v] for v in vids}


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def vcmr_settings(ctx: EvalContext) -> vcmr_lib.VcmrEvalSettings:
  kw = dict(ctx.eval_config.get("vcmr", {}))
  kw["conv_sees_padding"] = getattr(ctx.objective_settings, "conv_sees_padding", True)
  s = vcmr_lib.VcmrEvalSettings(**kw)
  m = ctx.batch_multiple
  return dataclasses.replace(s, video_batch=_round_up(s.video_batch, m),
                             query_batch=_round_up(s.query_batch, m))


def write_json(path, obj) -> None:
  """Written whole, then renamed: a reader never sees half a file (a local folder
  or a bucket, through epath)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_text(json.dumps(obj))
  tmp.replace(path)


def results_dir(ctx: EvalContext, *parts) -> epath.Path:
  return epath.Path(ctx.workdir).joinpath("results", *parts)


def evaluate_vcmr(ctx: EvalContext, join, dataset: str, split: str, step: int) -> dict:
  """VCMR / SVMR / VR on a whole split; writes the prediction files."""
  from hero_jax.objectives import host
  settings = vcmr_settings(ctx)
  queries = [join.queries.query(i) for i in range(len(join))]
  if not queries:
    raise ValueError(f"{join.path} split {split!r} has no queries")
  vids, video2idx = corpus_for(queries, join.queries.video_index, join.videos.owner)
  missing = [v for v in vids if v not in join.videos]
  if missing:
    raise ValueError(f"{len(missing)} of the {len(vids)} corpus videos of {dataset} {split!r} "
                     f"are in no split of {join.videos.path}, e.g. {missing[:5]}")
  unknown = sorted({q.vid for q in queries} - set(vids))
  if unknown:
    raise ValueError(f"queries of {dataset} {split!r} name {len(unknown)} videos outside the "
                     f"split's corpus of {len(vids)}, e.g. {unknown[:5]}")
  videos = [join.videos.video_by_id(v) for v in vids]
  hctx = host.HostContext(sizes=dataclasses.replace(ctx.sizes, queries=1), ids=join.special_ids,
                          queries_per_video=1, frame_length=join.frame_length)
  log.info("eval %s %s: encoding %d videos, ranking %d queries", dataset, split, len(vids),
           len(queries))
  bank = vcmr_lib.encode_bank(ctx.model, ctx.params, videos, hctx, settings, video2idx,
                              mesh=ctx.mesh)
  ids = join.special_ids
  result = vcmr_lib.evaluate(ctx.model, ctx.params, bank, queries, ids.pad, ids.cls, settings,
                             split, mesh=ctx.mesh)
  if ctx.write_files:
    out = results_dir(ctx, dataset, split, f"step_{step}")
    write_json(out / "predictions.json", result.submission)
    if settings.nms_thd >= 0:
      write_json(out / "predictions_no_nms.json", result.submission_no_nms)
    write_json(out / "metrics.json", {"step": step, "metrics": result.metrics, "log": result.log})
    log.info("wrote %s", out)
  return result.log, result.submission


def write_vcmr_upload(ctx: EvalContext, dataset: str, step: int, by_split: dict) -> None:
  """The leaderboard upload of ``eval.submission``: ``tvr`` (CodaLab zip of
  the val and test_public predictions) or ``how2r`` (VALUE's format, from the
  splits named val* and test*)."""
  from hero_jax.eval import submission
  kind = ctx.eval_config.get("submission", "")
  if not kind or not ctx.write_files:
    return
  out = results_dir(ctx, dataset)
  out.mkdir(parents=True, exist_ok=True)
  if kind == "tvr":
    if not {"val", "test_public"} <= set(by_split):
      log.info("TVR CodaLab zip not written: it needs the val and test_public predictions "
               "(eval.splits=%s)", sorted(by_split))
      return
    path = out / f"tvr_codalab_step_{step}.zip"
    submission.write_tvr_codalab_zip(path, by_split["val"], by_split["test_public"])
  elif kind == "how2r":
    first = lambda prefix: next((v for k, v in sorted(by_split.items()) if k.startswith(prefix)), None)  # noqa: E731
    path = out / f"how2r_value_step_{step}.zip"
    submission.write_value_how2r_zip(path, val_submission=first("val"),
                                     test_public_submission=first("test"))
  else:
    raise ValueError(f"config.eval.submission must be '', 'tvr' or 'how2r', got {kind!r}")
  log.info("wrote %s", path)


def qa_predictions(model, params, items: Sequence, hctx, batch_size: int, *, mesh=None,
                   progress=None):
  """(answer logits [N, A], start logits [N, F], end logits [N, F]) of every
  question (``layout.QueryExample``), in jitted batches of ``batch_size``."""
  import jax
  import numpy as np
  from hero_jax import layout
  from hero_jax.model.hero import Hero
  from hero_jax.objectives import videoqa
  fn = vcmr_lib.under_mesh(mesh, None, jax.jit(
      lambda p, b: model.apply({"params": p}, b, method=Hero.videoqa_logits)))
  outs = []
  for start in range(0, len(items), batch_size):
    chunk = list(items[start:start + batch_size])
    examples = [videoqa.build_videoqa_example(x, hctx) for x in chunk]
    examples += [examples[-1]] * (batch_size - len(chunk))   # static shapes; dropped below
    out = jax.device_get(fn(params, layout.stack_examples(examples)))
    outs.append([np.asarray(o)[:len(chunk)] for o in out])
    if progress:
      progress(start + len(chunk), len(items))
  return tuple(np.concatenate([o[i] for o in outs]) for i in range(3))


def evaluate_videoqa(ctx: EvalContext, join, dataset: str, split: str, step: int) -> tuple:
  """Accuracy of the argmax answer over a whole split; ``{qid: answer_idx}`` predictions."""
  import numpy as np
  from hero_jax.objectives import host
  items = [join.example(i) for i in range(len(join))]
  if not items:
    raise ValueError(f"{join.path} split {split!r} has no questions")
  hctx = host.HostContext(sizes=ctx.sizes, ids=join.special_ids, queries_per_video=ctx.sizes.queries,
                          frame_length=join.frame_length)
  batch = _round_up(int(ctx.eval_config.get("qa_batch", 16)), ctx.batch_multiple)
  log.info("eval %s %s: %d questions", dataset, split, len(items))
  logits, _, _ = qa_predictions(ctx.model, ctx.params, items, hctx, batch, mesh=ctx.mesh)
  pred = logits.argmax(-1)
  target = np.array([int(x.query.answer_idx) for x in items])
  labelled = target >= 0
  predictions = {x.query.qid: int(p) for x, p in zip(items, pred)}
  metrics = {}
  if labelled.any():
    metrics = {"acc": float(np.mean(pred[labelled] == target[labelled])),
               "questions": float(labelled.sum())}
  if ctx.write_files:
    out = results_dir(ctx, dataset, split, f"step_{step}")
    write_json(out / "predictions.json", predictions)
    write_json(out / "metrics.json", {"step": step, "metrics": metrics})
    log.info("wrote %s", out)
  return metrics, predictions


def no_upload(ctx, dataset, step, by_split) -> None:
  """QA predictions are uploaded as they are (``{qid: answer_idx}`` per split)."""
  del ctx, dataset, step, by_split


EVALUATORS = {"vcmr": (evaluate_vcmr, write_vcmr_upload),
              "videoqa": (evaluate_videoqa, no_upload)}
