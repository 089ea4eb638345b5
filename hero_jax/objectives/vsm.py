"""VSM: video-subtitle matching, local (start/end) and global (spec 2.4)."""

from __future__ import annotations

import dataclasses

import numpy as np
import jax
import jax.numpy as jnp

from hero_jax import layout, packing
from hero_jax.model import layers
from hero_jax.objectives import common
from hero_jax.objectives import host
from hero_jax.objectives import registry

# --- host side (numpy) ---

FIELDS = layout.VIDEO_FIELDS + ("query_ids", "query_mask", "query_st_ed")


@dataclasses.dataclass(frozen=True)
class VsmChoices:
  """``sampled``: int [min(Q, count)], the subtitles drawn as queries among
  those with at least one matched frame, in draw order (order is irrelevant:
  the build sorts them)."""
  sampled: np.ndarray


def matched_subtitles(video: layout.VideoExample) -> np.ndarray:
  """Indices of the subtitles with at least one matched frame."""
  return np.array([r for r, fr in enumerate(video.sub_frames) if np.size(fr)], np.int64)


def draw_vsm_choices(video: layout.VideoExample, rng: np.random.Generator,
                     ctx: host.HostContext) -> VsmChoices:
  """min(Q, count) matched subtitles without replacement (``random.sample``).

  A video without any matched subtitle has no query (the original crashes).
  """
  matched = matched_subtitles(video)
  if matched.size == 0:
    raise registry.SkipExample(
        "vsm_no_matched_subtitle", f"video {video.vid!r} has no subtitle with a matched frame")
  k = min(ctx.queries_per_video, matched.size)
  return VsmChoices(sampled=rng.choice(matched, size=k, replace=False))


def query_subtitles(video: layout.VideoExample, choices: VsmChoices,
                    ctx: host.HostContext) -> np.ndarray:
  """The subtitle of each of the Q query rows: sampled ones in subtitle
  order, the last repeated up to Q (the global loss needs Q per video)."""
  sampled = np.sort(np.asarray(choices.sampled, np.int64))
  matched = set(matched_subtitles(video).tolist())
  q = ctx.queries_per_video
  if (sampled.size == 0 or sampled.size > q or np.unique(sampled).size != sampled.size
      or not set(sampled.tolist()) <= matched):
    raise ValueError(
        f"video {video.vid!r}: VSM choices must be 1..{q} distinct subtitles with matched "
        f"frames {sorted(matched)}, got {np.asarray(choices.sampled).tolist()}")
  return np.concatenate([sampled, np.repeat(sampled[-1], q - sampled.size)])


def query_st_ed(video: layout.VideoExample, sub: int) -> tuple:
  """Start and inclusive end frame: first matched frame, and the last one
  but at least st + 1, capped at the last frame of the video."""
  fr = np.asarray(video.sub_frames[sub], np.int64)
  st = int(fr[0])
  return st, min(max(st + 1, int(fr[-1])), video.num_frames - 1)


def build_vsm_example(video: layout.VideoExample, choices: VsmChoices,
                      ctx: host.HostContext, stats=None) -> dict:
  """Video rows without the query subtitles' text, plus the Q queries.

  Like VsmDataset, the other rows are [SEP] + ids[:max_txt_len]. Query text is [CLS] + ids[:max_txt_len]; a query longer than the Lq slots
  is cut, and the dropped tokens counted under ``"query_tokens_truncated"``.
  """
  s = ctx.sizes
  subs = query_subtitles(video, choices, ctx)
  rows = host.sep_row_texts(video, ctx, text_removed=subs, max_txt_len=ctx.max_txt_len)
  out = host.build_video_fields(video, ctx, rows, stats, pack=not ctx.pack_queries)
  query_ids = np.full((s.queries, s.max_query_tokens), ctx.ids.pad, np.int32)
  query_mask = np.zeros((s.queries, s.max_query_tokens), np.int32)
  st_ed = np.zeros((s.queries, 2), np.int32)
  for q, sub in enumerate(subs):
    text = np.concatenate(
        [[ctx.ids.cls], np.asarray(video.sub_ids[sub], np.int64)[:ctx.max_txt_len]])
    if text.size > s.max_query_tokens:
      host.count(stats, "query_tokens_truncated", text.size - s.max_query_tokens)
      text = text[:s.max_query_tokens]
    query_ids[q, :text.size] = text
    query_mask[q, :text.size] = 1
    st_ed[q] = query_st_ed(video, sub)
  out["query_ids"] = query_ids
  out["query_mask"] = query_mask
  out["query_st_ed"] = st_ed
  if s.packed and ctx.pack_queries:
    out.update(pack_with_queries(video, out, ctx))
  return out


def pack_with_queries(video: layout.VideoExample, example: dict, ctx: host.HostContext) -> dict:
  """The packing fields of a VSM example whose queries share the packed rows:
  packed here when each video packs alone; with pack groups, a placeholder
  ``query_unpack_src`` that marks the example's queries for the batch's
  packing (``packing.pack_stacked``)."""
  s = ctx.sizes
  if s.packs_batches:
    return {"query_unpack_src": np.zeros((s.queries, s.max_query_tokens), np.int32)}
  try:
    return packing.pack_fields(example["row_frame_mask"], example["row_txt_mask"], s,
                               example["query_mask"])
  except packing.RowsDoNotFit as e:
    raise ValueError(f"video {video.vid!r}: {packing.does_not_fit(e, queries=True)}") from None


def make_vsm_example(video: layout.VideoExample, rng: np.random.Generator,
                     ctx: host.HostContext, stats=None) -> dict:
  return build_vsm_example(video, draw_vsm_choices(video, rng, ctx), ctx, stats)


# --- device side (jax) ---


@dataclasses.dataclass(frozen=True)
class VsmSettings:
  """Video-subtitle matching (HERO's pre-training values).

  Local start/end loss weight ``lw_st_ed``, trained on a step only when a
  uniform draw exceeds ``drop_svmr_prob``; global hinge ranking with margin
  ``margin`` against all negative videos (``lw_neg_ctx``) and all negative
  queries (``lw_neg_q``). From ``hard_negative_start_step`` on, the
  ``hard_pool_size`` hardest negatives weigh ``hard_neg_weight`` and the rest
  0.1. ``ranking_loss``: ``hinge`` or ``lse`` (log(1 + exp(neg - pos))).
  ``conv_sees_padding``: as the original, the start/end Conv1d reads padded
  frames' outputs up to the batch's longest video; False zeroes everything
  past each video's own end.
  ``group_videos``: the ranking negatives come from groups of this many
  consecutive videos of the global batch (the original gathers them over
  its GPUs in each forward pass); 0 = the whole batch. Grouping is by
  position in the batch, so it does not depend on the mesh.
  ``ranking_loss_scale`` multiplies both ranking terms. The original's
  all-gather sends each rank only its own slice of the gradient and Horovod
  averages over the n ranks, so its ranking gradient is 1/n of the gathered
  loss's while the start/end loss is a plain mean: 1/n reproduces n GPUs.
  """
  lw_st_ed: float = 0.01
  lw_neg_ctx: float = 8.0
  lw_neg_q: float = 8.0
  margin: float = 0.1
  ranking_loss: str = "hinge"
  drop_svmr_prob: float = 0.8
  hard_negative_start_step: int = 20000
  hard_pool_size: int = 20
  hard_neg_weight: float = 10.0
  conv_sees_padding: bool = True
  group_videos: int = 0
  ranking_loss_scale: float = 1.0

  def __post_init__(self):
    if self.ranking_loss not in ("hinge", "lse"):
      raise ValueError(f"vsm ranking_loss must be 'hinge' or 'lse', got {self.ranking_loss!r}")
    if self.group_videos < 0:
      raise ValueError(f"vsm group_videos must be >= 0, got {self.group_videos}")


def vsm_outputs(model, batch, conv_sees_padding=True, deterministic=True):
  """Frames [V, F, H], modular queries [V, Q, H], own-video start/end logits
  [V, Q, F] (a model method)."""
  if "query_unpack_src" in batch:   # queries packed with the rows: one encoder pass
    seq, queries = model.video_and_queries(batch, deterministic)
  else:
    seq = model(batch, deterministic=deterministic)
    queries = model.encode_query(batch["query_ids"], batch["query_mask"], deterministic)
  frame_mask = batch["frame_mask"]
  conv_mask = common.below_longest_video(frame_mask) if conv_sees_padding else frame_mask
  st, ed = model.st_ed_logits(queries, seq[:, None], frame_mask[:, None], conv_mask[:, None])
  return seq, queries, st, ed


def l2_normalize(x, eps=1e-5):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def query_video_scores(queries, frames, frame_mask):
  """S [Nq, Nv]: max over each video's real frames of the cosine similarity."""
  sim = jnp.einsum("qh,vfh->qvf", l2_normalize(queries.astype(jnp.float32)),
                   l2_normalize(frames.astype(jnp.float32)))
  return jnp.max(layers.mask_logits(sim, frame_mask[None]), axis=-1)


def negative_weights(num, hard, settings: VsmSettings):
  """Column weights of the sorted negatives (hardest first)."""
  hard_w = jnp.where(jnp.arange(num) < settings.hard_pool_size, settings.hard_neg_weight, 0.1)
  return jnp.where(hard, hard_w, jnp.ones(num))


def ranking_losses(scores, queries_per_video, hard, settings: VsmSettings):
  """Per-query mean ranking loss against negative videos and negative queries.

  Query m belongs to video m // k. Positives are pushed out of the sorted
  negatives by writing 999 over them, as the original does.
  """
  nq, nv = scores.shape
  if nv == 1:
    return jnp.zeros(nq), jnp.zeros(nq)
  k = queries_per_video
  video_of = jnp.arange(nq) // k
  is_pos = video_of[:, None] == jnp.arange(nv)[None]
  pos = jnp.sum(jnp.where(is_pos, scores, 0.0), axis=1)[:, None]
  excluded = jnp.where(is_pos, 999.0, scores)
  neg_ctx = -jnp.sort(-excluded, axis=1)[:, 1:]                 # [Nq, Nv-1]
  neg_q = (-jnp.sort(-excluded.T, axis=1)[:, k:])[video_of]     # [Nq, Nq-k]
  if settings.ranking_loss == "hinge":
    loss = lambda neg: jax.nn.relu(settings.margin + neg - pos)
  else:
    loss = lambda neg: jnp.log1p(jnp.exp(neg - pos))
  l_ctx = loss(neg_ctx) * negative_weights(nv - 1, hard, settings)
  l_q = loss(neg_q) * negative_weights(nq - k, hard, settings)
  return jnp.mean(l_ctx, axis=1), jnp.mean(l_q, axis=1)


def grouped_ranking_losses(queries, frames, frame_mask, hard, settings: VsmSettings):
  """Per-query ranking losses [V * k] with negatives from groups of
  ``settings.group_videos`` consecutive videos (queries [V, k, H])."""
  v, k = queries.shape[:2]
  g = settings.group_videos or v
  if v % g:
    raise ValueError(f"vsm group_videos={g} does not divide the batch of {v} videos")

  def one_group(q, f, m):
    return ranking_losses(query_video_scores(q.reshape(g * k, -1), f, m), k, hard, settings)
  l_ctx, l_q = jax.vmap(one_group)(queries.reshape((v // g, g) + queries.shape[1:]),
                                   frames.reshape((v // g, g) + frames.shape[1:]),
                                   frame_mask.reshape(v // g, g, -1))
  return l_ctx.reshape(v * k), l_q.reshape(v * k)


def local_branch_on(rng, settings: VsmSettings):
  """1.0 when this step trains the local start/end loss: always without an
  rng (evaluation), else when a uniform draw exceeds ``drop_svmr_prob``."""
  if rng is None:
    return jnp.asarray(1.0)
  return (jax.random.uniform(rng) > settings.drop_svmr_prob).astype(jnp.float32)


def vsm_loss(model, params, batch, settings=VsmSettings(), *, step=0, rng=None, deterministic=True):
  """lw_st_ed * (CE_st + CE_ed) + lw_neg_ctx * L_ctx + lw_neg_q * L_q.

  Negatives come from the whole (global) batch. Without ``rng`` (evaluation)
  the local branch is always on; with it, it is on with probability
  ``1 - drop_svmr_prob``.
  """
  dropout_rng = local_rng = None
  if rng is not None:
    dropout_rng, local_rng = jax.random.split(rng)
  seq, queries, st, ed = common.apply(
      model, params, vsm_outputs, batch, settings.conv_sees_padding,
      rng=dropout_rng, deterministic=deterministic)
  v, k, f = st.shape
  targets = batch["query_st_ed"].reshape(v * k, 2)
  ce_st = common.cross_entropy(st.reshape(v * k, f), targets[:, 0])
  ce_ed = common.cross_entropy(ed.reshape(v * k, f), targets[:, 1])
  st_ed = (common.masked_mean(ce_st, targets[:, 0] >= 0) + common.masked_mean(ce_ed, targets[:, 1] >= 0))
  use_local = local_branch_on(local_rng, settings)
  hard = jnp.asarray(step) >= settings.hard_negative_start_step
  l_ctx, l_q = grouped_ranking_losses(queries, seq, batch["frame_mask"], hard, settings)
  ranking = settings.lw_neg_ctx * jnp.mean(l_ctx) + settings.lw_neg_q * jnp.mean(l_q)
  total = settings.lw_st_ed * use_local * st_ed + settings.ranking_loss_scale * ranking
  ones = jnp.ones(v * k)
  per_query_st_ed = ce_st * (targets[:, 0] >= 0) + ce_ed * (targets[:, 1] >= 0)
  metrics = {
      "loss": (total * v * k, jnp.asarray(float(v * k))),
      "loss_st_ed": common.metric(per_query_st_ed, ones),
      "loss_neg_ctx": common.metric(l_ctx, ones),
      "loss_neg_q": common.metric(l_q, ones),
      "local_branch": (use_local, jnp.asarray(1.0)),
  }
  return total, metrics


OBJECTIVE = registry.register(registry.Objective(
    name="vsm", fields=FIELDS, make_example=make_vsm_example, loss=vsm_loss,
    settings=VsmSettings, heads="pretraining"))
