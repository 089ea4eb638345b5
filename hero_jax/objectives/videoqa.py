"""Video QA fine-tuning (TVQA, How2QA; spec 5.3, 5.6): ``HeroForVideoQA``.

Each question with A candidate answers (5 for TVQA, 4 for How2QA) makes A
copies of its video: copy i appends ``[SEP] q [SEP] a_i`` to every subtitle
row of the cross-modal transformer, and the temporal transformer reads the
copy's frames followed by the same QA tokens (``Hero.videoqa_logits``).
Loss = CE(answer) + ``lw_st_ed`` * (CE_st + CE_ed) / 2, ignore index -1.

Data rules as the original's ``VideoQaDataset``: target frames from the
question's time span as ``get_st_ed_label`` (no time span, or one that does
not parse, gives (-1, -1)); training skips a question when len(q) +
max_i len(a_i) exceeds ``max_txt_len`` (the original's ``QaQueryTokLmdb``
filter; it never truncates), counted as ``question_longer_than_max_txt_len``;
validation and test keep every question.

One change: when every start/end target of a batch is ignored, the
original's mean over no element is NaN; here that term is 0.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from hero_jax import layout
from hero_jax.objectives import common, host, registry

FIELDS = ("frames", "frame_mask", "row_frame_idx", "row_frame_mask", "qa_row_ids",
          "qa_row_txt_mask", "qa_ids", "qa_mask", "qa_target", "qa_st_ed")


def qa_texts(query, ctx: host.HostContext) -> list:
  """``[SEP] q [SEP] a_i`` of every answer."""
  sep = [ctx.ids.sep]
  q = list(np.asarray(query.question_ids, np.int64))
  return [np.asarray(sep + q + sep + list(np.asarray(a, np.int64)), np.int64)
          for a in query.answer_ids]


def qa_length(query) -> int:
  """len(q) + the longest answer: what the original's training filter measures."""
  return len(query.question_ids) + max((len(a) for a in query.answer_ids), default=0)


def check_question(query, num_answers: int) -> None:
  if len(query.answer_ids) != num_answers:
    raise ValueError(f"question {query.qid!r} has {len(query.answer_ids)} answers, the layout "
                     f"expects answers={num_answers}")
  if not -1 <= int(query.answer_idx) < num_answers:
    raise ValueError(f"question {query.qid!r}: answer_idx {query.answer_idx} is outside "
                     f"[0, {num_answers})")


def build_videoqa_example(item: layout.QueryExample, ctx: host.HostContext, stats=None) -> dict:
  """One question: the video once, its rows and QA tokens once per answer."""
  video, query = item.video, item.query
  s = ctx.sizes
  check_question(query, s.answers)
  texts = qa_texts(query, ctx)
  rows = host.sep_row_texts(video, ctx)
  out = host.build_video_fields(video, ctx, rows, stats, pack=False)   # rows differ per answer
  out["qa_row_ids"] = np.full((s.answers, s.max_rows, s.max_row_tokens), ctx.ids.pad, np.int32)
  out["qa_row_txt_mask"] = np.zeros((s.answers, s.max_rows, s.max_row_tokens), np.int32)
  out["qa_ids"] = np.full((s.answers, s.max_qa_tokens), ctx.ids.pad, np.int32)
  out["qa_mask"] = np.zeros((s.answers, s.max_qa_tokens), np.int32)
  for i, qa in enumerate(texts):
    if qa.size > s.max_qa_tokens:
      raise ValueError(f"question {query.qid!r} answer {i}: {qa.size} QA tokens, more than "
                       f"max_qa_tokens={s.max_qa_tokens}; raise it in the layout sizes")
    try:
      out["qa_row_ids"][i], out["qa_row_txt_mask"][i] = host.text_rows(
          [np.concatenate([r, qa]) for r in rows], ctx, truncate=False)
    except ValueError as e:
      raise ValueError(f"question {query.qid!r} answer {i}, video {video.vid!r}: {e}") from None
    out["qa_ids"][i, :qa.size] = qa
    out["qa_mask"][i, :qa.size] = 1
  for key in ("row_ids", "row_txt_mask"):   # the rows live in the per-answer copies
    del out[key]
  out["qa_target"] = np.int32(query.answer_idx)
  out["qa_st_ed"] = np.array(host.moment_frames(query.ts, video.num_frames, ctx.frame_length),
                             np.int32)
  if host.starts_after_end(query.ts, video.num_frames, ctx.frame_length):
    host.count(stats, "moment_starts_after_video_end")   # clamped, as the original
  return out


def make_videoqa_example(item: layout.QueryExample, rng: np.random.Generator,
                         ctx: host.HostContext, stats=None) -> dict:
  """Training example: a question longer than ``max_txt_len`` is skipped (counted)."""
  del rng
  n = qa_length(item.query)
  if n > ctx.max_txt_len:
    raise registry.SkipExample("question_longer_than_max_txt_len",
                               f"question {item.query.qid!r}: {n} tokens > {ctx.max_txt_len}")
  return build_videoqa_example(item, ctx, stats)


@dataclasses.dataclass(frozen=True)
class VideoQaSettings:
  """``lw_st_ed``: weight of the temporal (start/end) loss (0.4 in TVQA and How2QA)."""
  lw_st_ed: float = 0.4


def videoqa_loss(model, params, batch, settings=VideoQaSettings(), *, step=0, rng=None,
                 deterministic=True):
  """CE(answer) + lw_st_ed * (CE_st + CE_ed) / 2, means over labelled questions."""
  del step
  logits, st, ed = common.apply(model, params, lambda m, b, d: m.videoqa_logits(b, d), batch,
                                deterministic, rng=rng, deterministic=deterministic)
  target, span = batch["qa_target"], batch["qa_st_ed"]
  labelled = target >= 0
  ce = common.cross_entropy(logits, target)
  qa = common.masked_mean(ce, labelled)
  ce_st = common.cross_entropy(st, span[:, 0])
  ce_ed = common.cross_entropy(ed, span[:, 1])
  temporal = (common.masked_mean(ce_st, span[:, 0] >= 0)
              + common.masked_mean(ce_ed, span[:, 1] >= 0)) / 2
  total = qa + settings.lw_st_ed * temporal
  n = jnp.asarray(float(target.shape[0]))
  metrics = {
      "loss": (total * n, n),
      "loss_qa": common.metric(ce, labelled),
      "loss_st": common.metric(ce_st, span[:, 0] >= 0),
      "loss_ed": common.metric(ce_ed, span[:, 1] >= 0),
      "acc": common.metric(common.accuracy(logits, target), labelled),
  }
  return total, metrics


OBJECTIVE = registry.register(registry.Objective(
    name="videoqa", fields=FIELDS, make_example=make_videoqa_example, loss=videoqa_loss,
    settings=VideoQaSettings, records="qa", heads="videoqa"))
