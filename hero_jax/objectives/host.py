"""Host-side (numpy) helpers shared by the example transforms of the objectives.

A transform turns one ``layout.VideoExample`` into the per-video fields of
``hero_jax.layout`` (no V axis). Everything here is deterministic; the random
decisions live in each objective's ``draw_*_choices`` so that they can be
replaced by recorded ones (the parity tests feed in the original's choices).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from hero_jax import layout, packing


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Special token ids of the text DB (RoBERTa BPE ids by default).

  ``v_range`` is the range of ids an MLM random replacement is drawn from,
  upper bound exclusive. The default upper bound is not verified against the
  real roberta-base vocabulary: take it from the text DB's ``meta.json`` (or
  the tokenizer) in real runs.
  """
  cls: int = 0
  sep: int = 2
  pad: int = layout.PAD_ID
  unk: int = 3
  mask: int = 50264
  v_range: tuple = (4, 50261)

  def __post_init__(self):
    lo, hi = self.v_range
    if not lo < hi:
      raise ValueError(f"SpecialIds.v_range must be a non-empty [lo, hi) range, got {self.v_range}")


@dataclasses.dataclass(frozen=True)
class HostContext:
  """What the host transforms need besides the video (one per objective).

  ``max_txt_len`` is HERO's subtitle/query truncation (MLM text, VSM queries);
  ``queries_per_video`` is VSM's ``query_per_video`` and must equal
  ``sizes.queries`` because every video contributes exactly that many rows.
  ``frame_length``: seconds per frame of the features (moment times ->
  frame indices). ``pack_queries``: with packed rows, VSM's queries are
  packed into the rows' packed rows too (``hero_jax.packing``).
  """
  sizes: layout.LayoutSizes
  ids: SpecialIds = SpecialIds()
  max_txt_len: int = 60
  mask_prob: float = 0.15
  queries_per_video: int = 5
  frame_length: float = 1.5
  pack_queries: bool = True

  def __post_init__(self):
    if self.queries_per_video != self.sizes.queries:
      raise ValueError(
          f"HostContext.queries_per_video ({self.queries_per_video}) must equal "
          f"sizes.queries ({self.sizes.queries})")
    if not 0.0 <= self.mask_prob <= 1.0:
      raise ValueError(f"HostContext.mask_prob must be in [0, 1], got {self.mask_prob}")
    if self.max_txt_len <= 0:
      raise ValueError(f"HostContext.max_txt_len must be positive, got {self.max_txt_len}")
    if self.frame_length <= 0:
      raise ValueError(f"HostContext.frame_length must be positive, got {self.frame_length}")


def count(stats: Optional[collections.Counter], key: str, n: int = 1) -> None:
  """Adds n to stats[key] when stats are collected (stats may be None)."""
  if stats is not None and n:
    stats[key] += int(n)


def _overflow(video, field: str, value: int, limit_name: str, limit: int) -> ValueError:
  return ValueError(
      f"video {video.vid!r}: {field} is {value}, more than {limit_name}={limit}; "
      f"raise {limit_name} in the layout sizes or filter the video")


def build_video_fields(video: layout.VideoExample, ctx: HostContext,
                       row_texts: Sequence[np.ndarray], stats=None, pack: bool = True) -> dict:
  """The six ``layout.VIDEO_FIELDS`` of one video (no V axis), and the
  ``layout.PACK_FIELDS`` when the sizes pack rows (and ``pack``).

  ``row_texts[r]`` is the full text of row r, leading special id included.
  Sizes that would silently change the model input (frames, rows, frames of a
  row, packed rows) raise; text longer than T is cut to T (the original never
  cuts the 'repr' text, so this only happens with a T smaller than the data
  needs) and the dropped tokens are counted under ``"row_tokens_truncated"``.
  """
  s = ctx.sizes
  n = video.num_frames
  n_rows = len(video.sub_frames)
  if n > s.max_frames:
    raise _overflow(video, "number of frames", n, "max_frames", s.max_frames)
  if n_rows > s.max_rows:
    raise _overflow(video, "number of subtitle rows", n_rows, "max_rows", s.max_rows)
  if len(row_texts) != n_rows:
    raise ValueError(
        f"video {video.vid!r}: {len(row_texts)} row texts for {n_rows} subtitles")

  # float16 features (every built dataset's) stay float16 until the device.
  dtype = np.float16 if video.frames.dtype == np.float16 else np.float32
  frames = np.zeros((s.max_frames, video.frames.shape[1]), dtype)
  frames[:n] = video.frames
  frame_mask = np.zeros((s.max_frames,), np.int32)
  frame_mask[:n] = 1

  row_frame_idx = np.zeros((s.max_rows, s.max_row_frames), np.int32)
  row_frame_mask = np.zeros((s.max_rows, s.max_row_frames), np.int32)
  for r in range(n_rows):
    fr = np.asarray(video.sub_frames[r], np.int64)
    if fr.size > s.max_row_frames:
      raise _overflow(video, f"number of frames of subtitle {r}", fr.size,
                      "max_row_frames", s.max_row_frames)
    row_frame_idx[r, :fr.size] = fr
    row_frame_mask[r, :fr.size] = 1
  row_ids, row_txt_mask = text_rows(row_texts, ctx, stats)
  out = {
      "frames": frames,
      "frame_mask": frame_mask,
      "row_ids": row_ids,
      "row_txt_mask": row_txt_mask,
      "row_frame_idx": row_frame_idx,
      "row_frame_mask": row_frame_mask,
  }
  if pack and s.packs_examples:   # pack groups of several videos: per batch
    try:
      out.update(packing.pack_fields(row_frame_mask, row_txt_mask, s))
    except packing.RowsDoNotFit as e:
      raise ValueError(f"video {video.vid!r}: {packing.does_not_fit(e)}") from None
  return out


def text_rows(row_texts: Sequence[np.ndarray], ctx: HostContext, stats=None,
              truncate: bool = True) -> tuple:
  """(ids [R, T], mask [R, T]) of the rows' texts, padded with PAD. A text
  longer than T is cut (counted under ``row_tokens_truncated``) or, with
  ``truncate=False``, an error."""
  s = ctx.sizes
  row_ids = np.full((s.max_rows, s.max_row_tokens), ctx.ids.pad, np.int32)
  row_txt_mask = np.zeros((s.max_rows, s.max_row_tokens), np.int32)
  for r, text in enumerate(row_texts):
    text = np.asarray(text, np.int64)
    if text.size > s.max_row_tokens:
      if not truncate:
        raise ValueError(f"row {r} has {text.size} text tokens, more than max_row_tokens="
                         f"{s.max_row_tokens}; raise it in the layout sizes")
      count(stats, "row_tokens_truncated", text.size - s.max_row_tokens)
      text = text[:s.max_row_tokens]
    row_ids[r, :text.size] = text
    row_txt_mask[r, :text.size] = 1
  return row_ids, row_txt_mask


def moment_frames(ts, num_frames: int, frame_length: float) -> tuple:
  """(start, inclusive end) frame of a moment in seconds, as the original's
  ``get_st_ed_label``: st = min(floor(st_s / interval), n - 1), ed =
  min(max(ceil(ed_s / interval) - 1, st + 1), n - 1); (-1, -1) when the
  times are missing or not finite."""
  try:
    st_s, ed_s = (float(t) for t in ts)
  except (TypeError, ValueError):
    return -1, -1
  if not (math.isfinite(st_s) and math.isfinite(ed_s)):
    return -1, -1
  last = num_frames - 1
  st = min(math.floor(st_s / frame_length), last)
  ed = min(max(math.ceil(ed_s / frame_length) - 1, st + 1), last)
  return st, ed


def starts_after_end(ts, num_frames: int, frame_length: float) -> bool:
  """The moment starts past the video's last frame (the original clamps it)."""
  st_s = float(ts[0])
  return math.isfinite(st_s) and math.floor(st_s / frame_length) >= num_frames


def sep_row_texts(video: layout.VideoExample, ctx: HostContext,
                  text_removed: Sequence[int] = (), max_txt_len: Optional[int] = None) -> list:
  """Row texts [SEP] + subtitle ids (cut to ``max_txt_len`` when given).

  The 'repr' input does not cut the ids; VSM does. Rows listed in
  ``text_removed`` are just [SEP] (VSM removes the query subtitles' text from
  the video input but keeps their frames).
  """
  removed = set(int(r) for r in text_removed)
  sep = np.array([ctx.ids.sep], np.int64)
  return [sep if r in removed else np.concatenate([sep, np.asarray(ids, np.int64)[:max_txt_len]])
          for r, ids in enumerate(video.sub_ids)]


def repr_example(video: layout.VideoExample, ctx: HostContext, stats=None) -> dict:
  """HERO's ``'repr'`` input (VideoFeatSubTokDataset): every subtitle a row."""
  return build_video_fields(video, ctx, sep_row_texts(video, ctx), stats)
