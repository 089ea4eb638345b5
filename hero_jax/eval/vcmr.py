"""Full video corpus moment retrieval evaluation (TVR, How2R; spec 5.1).

What ``eval_vcmr.validate_full_vcmr`` does, and so this:

1. **Frame bank.** Every video of the split's corpus, in sorted name order,
   is encoded in batches of ``video_batch`` into temporal outputs
   [N, F, H]. As the original pads each batch to its longest video and leaves
   the bank zero beyond, positions past a batch's longest video are zero
   (``conv_sees_padding``; False zeroes everything past each video's end).
2. **Scores.** Each query's modular vector gives S[q, v] = max over real
   frames of the cosine, and start/end logits against every video
   (``mask_logits``), softmaxed over frames.
3. **VR**: exp(``q2c_alpha`` S), the top ``max_vcmr_video`` videos (at most
   the corpus size).
4. **SVMR**: on the ground-truth video, P_st[i] P_ed[j] with
   ``min_pred_l <= j - i < max_pred_l``, top ``max_before_nms``.
5. **VCMR**: over the VR top videos, P_st[i] exp(alpha S) P_ed[j] with the
   same length mask, top ``max_before_nms`` over all of them.
6. Times are i * interval and (j + 1) * interval; every list is cut to
   ``max_after_nms``; for TVR, greedy temporal NMS (IoU > ``nms_thd``) runs
   on those cut lists, and the saved VCMR/SVMR lists are the after-NMS ones.

Differences: (a) the original unravels VCMR indices with ``max_clip_len``
although its scores are sized by the longest video of the bank, so its times
are wrong whenever that video is shorter; we decode with the real sizes
(equal whenever the original is right). (b) Queries are scored in jitted
blocks against blocks of ``video_block`` videos with a running top-K, so
memory is bounded by the block sizes whatever the corpus size; the (queries
x videos x frames x frames) tensor never exists. (c) Metrics are computed
over all queries at once (the original's multi-GPU logs average rounded
per-rank values).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from hero_jax import layout, packing
from hero_jax.eval import nms as nms_lib
from hero_jax.eval import retrieval_metrics
from hero_jax.objectives import common, host, vsm

TASKS = ("VCMR", "SVMR", "VR")


@dataclasses.dataclass(frozen=True)
class VcmrEvalSettings:
  """The original's inference settings (TVR: ``train-tvr-8gpu.json``)."""
  q2c_alpha: float = 20.0
  max_vcmr_video: int = 100
  min_pred_l: int = 2
  max_pred_l: int = 16
  max_before_nms: int = 200
  max_after_nms: int = 100
  nms_thd: float = 0.5           # < 0: no NMS (How2R)
  video_batch: int = 50          # videos per bank batch (the padding the conv sees)
  video_block: int = 256         # bank videos scored per scan step
  query_batch: int = 80
  use_desc_type: bool = True     # TVR's by-query-type breakdown
  conv_sees_padding: bool = True

  def __post_init__(self):
    if not 0 <= self.min_pred_l < self.max_pred_l:
      raise ValueError(f"need 0 <= min_pred_l < max_pred_l, got {self.min_pred_l}, {self.max_pred_l}")
    for name in ("max_vcmr_video", "max_before_nms", "max_after_nms", "video_batch",
                 "video_block", "query_batch"):
      if getattr(self, name) <= 0:
        raise ValueError(f"VcmrEvalSettings.{name} must be positive, got {getattr(self, name)}")


# --- corpus and frame bank ----------------------------------------------------


@dataclasses.dataclass
class FrameBank:
  """Temporal outputs of a video corpus, encoded once.

  ``vids``: sorted video ids; ``video2idx``: the index written in prediction
  files; ``frames`` float [N, F, H] (zero where the conv must read zeros);
  ``mask`` int [N, F]; ``frame_length``: seconds per frame; ``meta``: JSON
  notes kept with a saved bank (e.g. the tokenizer its queries need).
  """
  vids: list
  video2idx: dict
  frames: np.ndarray
  mask: np.ndarray
  frame_length: float
  meta: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.vids:
      raise ValueError("the video corpus is empty: nothing to retrieve from")
    if len(self.vids) != self.frames.shape[0] or self.frames.shape[:2] != self.mask.shape:
      raise ValueError(f"bank of {len(self.vids)} videos has frames {self.frames.shape} and "
                       f"mask {self.mask.shape}")
    missing = [v for v in self.vids if v not in self.video2idx]
    if missing:
      raise ValueError(f"video2idx lacks {len(missing)} corpus videos, e.g. {missing[:5]}")

  def save(self, path) -> None:
    """One ``.npz`` file."""
    with epath.Path(path).open("wb") as f:
      np.savez(f, vids=np.array(self.vids), frames=self.frames, mask=self.mask,
               video_index=np.array([self.video2idx[v] for v in self.vids], np.int64),
               frame_length=np.float64(self.frame_length), meta=np.array(json.dumps(self.meta)))

  @classmethod
  def load(cls, path) -> "FrameBank":
    try:
      with epath.Path(path).open("rb") as f, np.load(f, allow_pickle=False) as z:
        vids = [str(v) for v in z["vids"]]
        return cls(vids=vids, video2idx=dict(zip(vids, (int(i) for i in z["video_index"]))),
                   frames=z["frames"], mask=z["mask"], frame_length=float(z["frame_length"]),
                   meta=json.loads(str(z["meta"])) if "meta" in z.files else {})
    except FileNotFoundError:
      raise FileNotFoundError(f"frame bank {path} does not exist") from None
    except (OSError, KeyError, ValueError) as e:
      raise ValueError(f"{path} is not a frame bank written by hero_jax: {e}") from None


def _empty_video(dim: int) -> layout.VideoExample:
  return layout.VideoExample(vid="", frames=np.zeros((0, dim), np.float32), sub_ids=[], sub_frames=[])


def bank_outputs(model, batch, conv_sees_padding: bool):
  """Temporal outputs of a batch of videos, zero where the bank is zero."""
  seq = model(batch, deterministic=True).astype(jnp.float32)
  fm = batch["frame_mask"]
  keep = common.below_longest_video(fm) if conv_sees_padding else fm.astype(bool)
  return jnp.where(keep[..., None], seq, 0.0)


def under_mesh(mesh, rules, fn):
  """``fn`` run inside the mesh and logical rules (when a mesh is given)."""
  if mesh is None:
    return fn

  def run(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules or ()):
      return fn(*args)
  return run


def encode_fn(model, settings: VcmrEvalSettings):
  """The jitted ``(params, batch) -> bank rows`` of ``encode_bank``."""
  return jax.jit(lambda p, b: model.apply({"params": p}, b, settings.conv_sees_padding,
                                          method=bank_outputs))


def encode_bank(model, params, videos: Sequence[layout.VideoExample], ctx: host.HostContext,
                settings: VcmrEvalSettings, video2idx: dict, *, mesh=None, rules=None,
                progress=None) -> FrameBank:
  """The frame bank of ``videos`` (any order; stored sorted by id)."""
  videos = sorted(videos, key=lambda v: v.vid)
  if not videos:
    raise ValueError("the video corpus is empty: nothing to retrieve from")
  dim = videos[0].frames.shape[1]
  encode = under_mesh(mesh, rules, encode_fn(model, settings))
  frames, masks = [], []
  for start in range(0, len(videos), settings.video_batch):
    chunk = list(videos[start:start + settings.video_batch])
    chunk += [_empty_video(dim)] * (settings.video_batch - len(chunk))
    batch = layout.stack_examples([host.repr_example(v, ctx) for v in chunk])
    n = min(settings.video_batch, len(videos) - start)
    packed, undo = packing.pack_keeping_order(batch, ctx.sizes)   # pack groups, if any
    out = np.asarray(encode(params, packed))
    frames.append((out if undo is None else out[undo])[:n])
    masks.append(batch["frame_mask"][:n])
    if progress:
      progress(start + n, len(videos))
  return FrameBank(vids=[v.vid for v in videos], video2idx=dict(video2idx),
                   frames=np.concatenate(frames), mask=np.concatenate(masks),
                   frame_length=ctx.frame_length)


# --- scoring ------------------------------------------------------------------


def band(num_frames: int, min_l: int, max_l: int):
  """(end frame [F, D], valid [F, D]) of the spans (i, i + d), d in [min_l, max_l)."""
  ends = jnp.arange(num_frames)[:, None] + jnp.arange(min_l, max_l)[None, :]
  return jnp.minimum(ends, num_frames - 1), (ends < num_frames).astype(jnp.float32)


def _rank_queries(model, params, query_ids, query_mask, gt_video, frames, mask, conv_mask, valid,
                  *, settings: VcmrEvalSettings, k: int, top_n: int):
  """One block of queries against the whole bank (a jitted function).

  ``frames`` [nb, Vb, F, H] etc. are the bank in blocks (``valid`` marks real
  videos). A scan over the blocks keeps each query's top-``k`` videos by S
  with their start/end logits, and the ground-truth video's logits.
  Returns VR (scores exp(alpha S) [B, k], bank indices [B, k]), VCMR
  (scores [B, n], flat (video, start, length offset) indices into
  [k, F, max_pred_l - min_pred_l]) and the SVMR score matrices [B, F, F].
  """
  apply = lambda method, *a: model.apply({"params": params}, *a, method=method)  # noqa: E731
  q = apply(lambda m, i, msk: m.encode_query(i, msk), query_ids, query_mask)     # [B, H]
  b, f = q.shape[0], frames.shape[2]
  vb = frames.shape[1]

  def block(carry, xs):
    top_s, top_i, top_st, top_ed, gt_st, gt_ed = carry
    fr, fm, cm, ok, offset = xs
    s = jnp.where(ok[None], vsm.query_video_scores(q, fr, fm), -jnp.inf)          # [B, Vb]
    st, ed = apply(lambda m, qq, ff, mm, cc: m.st_ed_logits(qq[:, None], ff[None], mm[None], cc[None]),
                   q, fr, fm, cm)                                                  # [B, Vb, F]
    idx = offset + jnp.arange(vb)
    all_s = jnp.concatenate([top_s, s], 1)
    all_i = jnp.concatenate([top_i, jnp.broadcast_to(idx, (b, vb))], 1)
    new_s, pos = jax.lax.top_k(all_s, k)
    pick = lambda x, y: jnp.take_along_axis(jnp.concatenate([x, y], 1), pos[..., None], 1)  # noqa: E731
    local = gt_video - offset
    hit = ((local >= 0) & (local < vb))[:, None]
    rows = jnp.arange(b)
    loc = jnp.clip(local, 0, vb - 1)
    carry = (new_s, jnp.take_along_axis(all_i, pos, 1), pick(top_st, st), pick(top_ed, ed),
             jnp.where(hit, st[rows, loc], gt_st), jnp.where(hit, ed[rows, loc], gt_ed))
    return carry, None

  nb = frames.shape[0]
  init = (jnp.full((b, k), -jnp.inf), jnp.zeros((b, k), jnp.int32), jnp.zeros((b, k, f)),
          jnp.zeros((b, k, f)), jnp.zeros((b, f)), jnp.zeros((b, f)))
  offsets = jnp.arange(nb, dtype=jnp.int32) * vb
  (top_s, top_i, top_st, top_ed, gt_st, gt_ed), _ = jax.lax.scan(
      block, init, (frames, mask, conv_mask, valid, offsets))

  vr = jnp.exp(settings.q2c_alpha * top_s)                                         # [B, k]
  p_st, p_ed = jax.nn.softmax(top_st, -1), jax.nn.softmax(top_ed, -1)
  # Only spans inside the length mask can score above zero, so VCMR ranks the
  # band (start i, length offset d) instead of all F x F cells.
  ends, in_band = band(f, settings.min_pred_l, settings.max_pred_l)

  def vcmr_one(args):
    ps, v, pe = args
    scores = (ps * v[:, None])[:, :, None] * pe[:, ends] * in_band                # [k, F, D]
    return jax.lax.top_k(scores.reshape(-1), top_n)
  vcmr_s, vcmr_i = jax.lax.map(vcmr_one, (p_st, vr, p_ed))
  lmask = jnp.asarray(nms_lib.generate_min_max_length_mask((f, f), settings.min_pred_l,
                                                            settings.max_pred_l))

  # SVMR's (F, F) matrices go to the host: the original ranks them with
  # numpy's argsort, whose order among the (many) exact zeros decides which
  # zero-score spans fill a list and so can change R@100.
  svmr = jnp.einsum("bm,bn->bmn", jax.nn.softmax(gt_st, -1), jax.nn.softmax(gt_ed, -1)) * lmask
  return dict(vr_scores=vr, vr_index=top_i, vcmr_scores=vcmr_s, vcmr_index=vcmr_i,
              svmr_product=svmr)


def rank_fn(model, settings: VcmrEvalSettings, k: int, top_n: int):
  """The jitted ``(params, ids, mask, gt, *bank_blocks) -> rankings`` of ``rank``."""
  return jax.jit(lambda p, ids, msk, gt, *bk: _rank_queries(
      model, p, ids, msk, gt, *bk, settings=settings, k=k, top_n=top_n))


def bank_blocks(bank: FrameBank, settings: VcmrEvalSettings):
  """The bank as [nb, Vb, ...] blocks, the last padded with invalid videos."""
  n = len(bank.vids)
  vb = min(settings.video_block, n)
  nb = math.ceil(n / vb)
  pad = nb * vb - n

  def blocks(x):
    x = np.asarray(x)
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    return x.reshape((nb, vb) + x.shape[1:])
  frames = blocks(bank.frames)
  mask = blocks(bank.mask)
  # The conv reads the bank as stored (zeros where the original has zeros);
  # padded frames inside a batch's longest video hold real outputs.
  conv_mask = blocks(np.ones_like(bank.mask))
  valid = blocks(np.ones(n, bool))
  return frames, mask, conv_mask, valid


@dataclasses.dataclass
class Ranking:
  """Host-side results of ``rank``: per query, indices into the bank."""
  vr_scores: np.ndarray
  vr_index: np.ndarray
  vcmr_scores: np.ndarray
  vcmr_video: np.ndarray
  vcmr_st: np.ndarray
  vcmr_ed: np.ndarray
  svmr_scores: Optional[np.ndarray]
  svmr_st: Optional[np.ndarray]
  svmr_ed: Optional[np.ndarray]


def rank(model, params, bank: FrameBank, query_tokens: Sequence[np.ndarray], pad_id: int,
         settings: VcmrEvalSettings, gt_vids: Optional[Sequence[str]] = None, *, mesh=None,
         rules=None, progress=None) -> Ranking:
  """VR, VCMR and (with ground-truth videos) SVMR rankings of every query.

  ``query_tokens``: one id array per query, ``[CLS]`` included, never
  truncated (the static length is the longest query, rounded up to 8).
  """
  n = len(bank.vids)
  k = min(settings.max_vcmr_video, n)
  f = bank.frames.shape[1]
  width = settings.max_pred_l - settings.min_pred_l
  top_n = min(settings.max_before_nms, k * f * width)
  if not query_tokens:
    raise ValueError("no queries to rank")
  length = max(len(t) for t in query_tokens)
  length = -(-length // 8) * 8
  local = {vid: i for i, vid in enumerate(bank.vids)}
  if gt_vids is not None:
    unknown = sorted({v for v in gt_vids if v not in local})
    if unknown:
      raise ValueError(f"{len(unknown)} ground-truth videos are not in the corpus of "
                       f"{n} videos, e.g. {unknown[:5]}")
  blocks = [jnp.asarray(x) for x in bank_blocks(bank, settings)]
  fn = under_mesh(mesh, rules, rank_fn(model, settings, k, top_n))
  outs = []
  qb = settings.query_batch
  for start in range(0, len(query_tokens), qb):
    chunk = list(query_tokens[start:start + qb])
    ids = np.full((qb, length), pad_id, np.int32)
    msk = np.zeros((qb, length), np.int32)
    for i, t in enumerate(chunk):
      ids[i, :len(t)], msk[i, :len(t)] = t, 1
    msk[len(chunk):, 0] = 1   # padding queries: one real token, results dropped
    gt = np.full(qb, -1, np.int32)
    if gt_vids is not None:
      gt[:len(chunk)] = [local[v] for v in gt_vids[start:start + qb]]
    out = jax.device_get(fn(params, ids, msk, gt, *blocks))
    outs.append({key: v[:len(chunk)] for key, v in out.items()})
    if progress:
      progress(start + len(chunk), len(query_tokens))
  cat = {key: np.concatenate([o[key] for o in outs]) for key in outs[0] if key != "svmr_product"}
  video_k, st, offset = np.unravel_index(cat["vcmr_index"], (k, f, width))
  ed = np.minimum(st + settings.min_pred_l + offset, f - 1)
  vcmr_video = np.take_along_axis(cat["vr_index"], video_k, 1)
  svmr = (None, None, None)
  if gt_vids is not None:
    # The original's SVMR matrices are as wide as the longest video of the bank.
    width = int(bank.mask.sum(1).max())
    triples = np.stack([t for o in outs for t in nms_lib.find_max_triples_from_upper_triangle_product(
        o["svmr_product"][:, :width, :width], top_n=settings.max_before_nms)])
    svmr = (triples[..., 2], triples[..., 0].astype(np.int64), triples[..., 1].astype(np.int64))
  return Ranking(cat["vr_scores"], cat["vr_index"], cat["vcmr_scores"], vcmr_video, st, ed, *svmr)


# --- predictions and metrics ----------------------------------------------------


def desc_id(qid: str):
  """The original's ``int(qid)`` where the id is a number; else the string."""
  return int(qid) if str(qid).lstrip("-").isdigit() else str(qid)


def _seconds(index: np.ndarray, frame_length: float, end: bool) -> list:
  # float32 arithmetic, as the original (times are multiples of the interval).
  t = np.asarray(index, np.float32) * np.float32(frame_length)
  return (t + np.float32(frame_length) if end else t).tolist()


def predictions(ranking: Ranking, bank: FrameBank, qids: Sequence[str],
                gt_vids: Optional[Sequence[str]] = None) -> dict:
  """The original's result dict: ``video2idx`` and per task the per-query
  ``{desc_id, desc, predictions: [[video_idx, st, ed, score], ...]}``
  (SVMR, on the ground-truth videos ``gt_vids``, when they are given)."""
  gidx = np.array([bank.video2idx[v] for v in bank.vids], np.int64)
  fl = bank.frame_length
  out = {"video2idx": {v: int(bank.video2idx[v]) for v in bank.vids}}

  def entry(i, preds):
    return {"desc_id": desc_id(qids[i]), "desc": "", "predictions": preds}
  out["VR"] = [entry(i, [[int(gidx[v]), 0, 0, float(s)] for v, s in
                         zip(ranking.vr_index[i], ranking.vr_scores[i])])
               for i in range(len(qids))]
  out["VCMR"] = [entry(i, [[int(gidx[v]), st, ed, float(s)] for v, st, ed, s in zip(
      ranking.vcmr_video[i], _seconds(ranking.vcmr_st[i], fl, False),
      _seconds(ranking.vcmr_ed[i], fl, True), ranking.vcmr_scores[i])])
                 for i in range(len(qids))]
  if gt_vids is not None:
    out["SVMR"] = [entry(i, [[int(bank.video2idx[gt_vids[i]]), st, ed, float(s)] for st, ed, s in zip(
        _seconds(ranking.svmr_st[i], fl, False), _seconds(ranking.svmr_ed[i], fl, True),
        ranking.svmr_scores[i])]) for i in range(len(qids))]
  return out


def ground_truth(queries: Sequence) -> list:
  """Metric ground truth (``tvr_standalone_eval``'s query records)."""
  return [{"desc_id": desc_id(q.qid), "desc": q.text, "vid_name": q.vid,
           "ts": [float(q.ts[0]), float(q.ts[1])], "duration": float(q.duration),
           "type": q.query_type} for q in queries]


def has_ground_truth(queries: Sequence) -> bool:
  return all(math.isfinite(float(t)) for q in queries for t in q.ts)


def metric_log(metrics: dict, suffix: str = "", tasks=TASKS) -> dict:
  """Flat metric names as the original logs them (``VCMR/0.7-r1``, ``VR/r10``,
  ``VCMR_by_type/v-0.7-r1``; NMS runs get ``VCMR_nms_0.5/...``)."""
  return {f"{group}{suffix}/{name}": float(value)
          for group, values in metrics.items() if group.removesuffix("_by_type") in tasks
          for name, value in values.items() if name != "desc_type_ratio"}


@dataclasses.dataclass
class VcmrResult:
  """``submission``: the saved results (after NMS when it ran, as the
  original); ``submission_no_nms``; ``metrics`` (None without ground truth):
  ``{"no_nms": ..., "nms": ...}`` as ``eval_retrieval`` returns them;
  ``log``: the flat metric names (``VCMR/0.7-r1``, ...)."""
  submission: dict
  submission_no_nms: dict
  metrics: Optional[dict]
  log: dict


def evaluate(model, params, bank: FrameBank, queries: Sequence, pad_id: int, cls_id: int,
             settings: VcmrEvalSettings, split: str = "val", *, mesh=None, rules=None,
             progress=None) -> VcmrResult:
  """The whole evaluation of ``queries`` (``records.MomentQuery``) on ``bank``."""
  queries = list(queries)
  with_gt = has_ground_truth(queries)
  tokens = [np.concatenate([[cls_id], np.asarray(q.token_ids, np.int64)]) for q in queries]
  ranking = rank(model, params, bank, tokens, pad_id, settings,
                 gt_vids=[q.vid for q in queries] if with_gt else None,
                 mesh=mesh, rules=rules, progress=progress)
  full = predictions(ranking, bank, [q.qid for q in queries],
                     [q.vid for q in queries] if with_gt else None)
  cut = retrieval_metrics.get_submission_top_n(full, top_n=settings.max_after_nms)
  submission, metrics, log = cut, None, {}
  use_types = settings.use_desc_type and all(q.query_type for q in queries)
  gt = ground_truth(queries)

  def score(sub):
    return retrieval_metrics.eval_retrieval(sub, gt, use_desc_type=use_types)
  if settings.nms_thd >= 0:
    submission = dict(cut)
    kw = dict(nms_thd=settings.nms_thd, max_before_nms=settings.max_before_nms,
              max_after_nms=settings.max_after_nms)
    submission["VCMR"] = nms_lib.post_processing_vcmr_nms(cut["VCMR"], **kw)
    if "SVMR" in cut:
      submission["SVMR"] = nms_lib.post_processing_svmr_nms(cut["SVMR"], **kw)
  if with_gt:
    metrics = {"no_nms": score(cut)}
    if settings.nms_thd >= 0:
      metrics["nms"] = score(submission)
    log = metric_log(metrics["no_nms"])
    if "nms" in metrics:
      log.update(metric_log(metrics["nms"], f"_nms_{settings.nms_thd}", tasks=("VCMR", "SVMR")))
  return VcmrResult(submission=submission, submission_no_nms=cut, metrics=metrics, log=log)
