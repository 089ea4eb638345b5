"""VCMR: video corpus moment retrieval fine-tuning (TVR, How2R; spec 5.1).

The original's ``HeroForVcmr`` is the VSM head (``vsm.py``) on the
hierarchical encoder, trained with one query per example: every example is a
query and its video, so the start/end head runs in paired mode (query n
against video n) and the ranking negatives are the other examples' videos
and queries. The loss is VSM's, unchanged; only the host transform and the
defaults differ.

Data rules as the original (``VcmrDataset``):
* video rows are the plain ``'repr'`` input (no subtitle text removed);
* query = ``[CLS]`` + its token ids; training drops a query longer than
  ``max_txt_len`` tokens (``QueryTokLmdb`` filters it; it never truncates),
  counted under ``query_longer_than_max_txt_len``;
* target frames: st = min(floor(st_s / interval), n - 1),
  ed = min(max(ceil(ed_s / interval) - 1, st + 1), n - 1), n the frames
  after the ``max_clip_len`` cut; a query without times gets (-1, -1), which
  the start/end loss ignores.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hero_jax import layout
from hero_jax.objectives import host
from hero_jax.objectives import registry
from hero_jax.objectives import vsm

FIELDS = vsm.FIELDS


def query_tokens(query, ctx: host.HostContext) -> np.ndarray:
  """``[CLS]`` + the query's token ids (never truncated)."""
  return np.concatenate([[ctx.ids.cls], np.asarray(query.token_ids, np.int64)])


def build_vcmr_example(item: layout.QueryExample, ctx: host.HostContext, stats=None) -> dict:
  """The video's ``'repr'`` rows plus its one query (Q = 1) and target frames."""
  video, query = item.video, item.query
  s = ctx.sizes
  if s.queries != 1:
    raise ValueError(f"vcmr examples hold one query per video: set layout queries=1, "
                     f"got {s.queries}")
  text = query_tokens(query, ctx)
  if text.size > s.max_query_tokens:
    raise ValueError(f"query {query.qid!r} has {text.size} tokens with [CLS], more than "
                     f"max_query_tokens={s.max_query_tokens}; raise it in the layout sizes")
  out = host.repr_example(video, ctx, stats)
  out["query_ids"] = np.full((1, s.max_query_tokens), ctx.ids.pad, np.int32)
  out["query_ids"][0, :text.size] = text
  out["query_mask"] = np.zeros((1, s.max_query_tokens), np.int32)
  out["query_mask"][0, :text.size] = 1
  st, ed = host.moment_frames(query.ts, video.num_frames, ctx.frame_length)
  if host.starts_after_end(query.ts, video.num_frames, ctx.frame_length):
    host.count(stats, "moment_starts_after_video_end")   # clamped to the last frame, as the original
  out["query_st_ed"] = np.array([[st, ed]], np.int32)
  return out


def make_vcmr_example(item: layout.QueryExample, rng: np.random.Generator,
                      ctx: host.HostContext, stats=None) -> dict:
  """Training example: a query longer than ``max_txt_len`` is skipped (counted)."""
  del rng   # nothing is sampled: one query, its own video
  n = np.size(item.query.token_ids)
  if n > ctx.max_txt_len:
    raise registry.SkipExample("query_longer_than_max_txt_len",
                               f"query {item.query.qid!r} has {n} tokens > {ctx.max_txt_len}")
  return build_vcmr_example(item, ctx, stats)


@dataclasses.dataclass(frozen=True)
class VcmrSettings(vsm.VsmSettings):
  """VSM's settings with the TVR recipe's values (``train-tvr-8gpu.json``):
  hard negatives from step 2000. ``group_videos`` / ``ranking_loss_scale``
  reproduce a GPU count (see ``vsm.VsmSettings``; the TVR config sets 256 and
  1/8 for the original's 8 GPUs x 32 queries)."""
  hard_negative_start_step: int = 2000


OBJECTIVE = registry.register(registry.Objective(
    name="vcmr", fields=FIELDS, make_example=make_vcmr_example, loss=vsm.vsm_loss,
    settings=VcmrSettings, records="moments", heads="pretraining"))
