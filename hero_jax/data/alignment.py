"""Subtitle -> frame alignment, reproducing HERO's preprocessing bit for bit.

HERO decides once, offline, which frames of a video each subtitle "owns"
(``scripts/prepro_sub.py``), and cuts that assignment to ``max_clip_len`` when
the text DB is loaded (``SubTokLmdb.compute_sub2frames``). Every cross-modal
row of the model is built from the result, so a checkpoint trained by the
original only sees the same inputs here if the assignment is identical,
quirks included. This module is pure numpy/stdlib and follows the original
step by step (spec ``hero_reference.md`` section 4.3):

1. Timestamps are stored as **float32** and divided by ``frame_length`` in
   float32, as the original does (``np.array(..., dtype=np.float32)``). The
   frame range of a subtitle is ``floor(start/fl) .. ceil(end/fl) - 1``.
2. A subtitle whose start is at or after the video end (``fl * num_frames``)
   is skipped: it covers no frame. The *last* subtitle, if its duration
   (end clipped to the video end) exceeds 16 s, keeps only its first 11
   frames (``extra_long_subs``).
3. Each frame in ``range(num_frames)`` covered by at least one subtitle goes
   to the covering subtitle with the largest temporal IoU between
   ``[f, f+1]`` and ``[start/fl, end/fl]`` (IoU in float32 like the original;
   strict ``>`` so among equal IoUs the first subtitle wins). The running
   best starts at index 0 with IoU 0, so a frame covered only by zero-length
   subtitles (IoU 0) goes to subtitle 0 even when subtitle 0 does not cover
   it. Frames covered by nobody are "unmatched".
4. Videos without subtitles (or with 0 frames) get pseudo-subtitles with no
   text covering consecutive groups of 5 frames (``allow_empty_sub``).
5. ``vid2nframe == 0`` means "unknown": the frame count becomes
   ``int(int(last_end) / fl)`` (note the inner ``int`` on seconds).

The loader's ``max_clip_len`` cut (``cut_to_max_clip_len``) keeps a prefix of
``unique_sub2frames``: see its docstring.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

SubFrames = Tuple[Tuple[int, Tuple[int, ...]], ...]

# Constants of the original script (not configurable there).
LONG_LAST_SUB_SECONDS = 16
LONG_LAST_SUB_KEEP_FRAMES = 11
PSEUDO_SUB_GROUP = 5


@dataclasses.dataclass(frozen=True)
class Alignment:
  """What ``prepro_sub.py`` stores for one video.

  Attributes:
    num_frames: the original's ``num_of_frames`` (``vid2nframe``, or derived
      from the last subtitle end when that is 0); also ``vid2len``.
    unique_sub2frames: ``(sub_idx, frames)`` for every subtitle in order, each
      frame owned by exactly one subtitle (possibly none: empty tuple). This
      is what the model uses.
    sub2frames: ``(sub_idx, frames)`` with every frame the subtitle's time
      range covers (overlapping, may reach past the video end, 11-frame cap on
      a long last subtitle); empty for subtitles after the video end. Only
      used for ``max_matched_sub_len``.
    unmatched_frames: frames of ``range(num_frames)`` covered by no subtitle.
    max_matched_sub_len: max over subtitles of
      ``len(tokens) + len(sub2frames frames)`` (``vid2max_frame_sub_len``).
    frame2unique_sub: frame -> owning subtitle, for covered frames; None for
      pseudo-subtitles (the original stores nothing then).
    frame2subs: frame -> all covering subtitles (ascending); None likewise.
    extra_long_subs: 1 if the last subtitle was capped to 11 frames, else 0.
    pseudo: True when the rows are the 5-frame pseudo-subtitles without text
      (the original then also replaces the token lists by empty lists).
  """
  num_frames: int
  unique_sub2frames: SubFrames
  sub2frames: SubFrames
  unmatched_frames: Tuple[int, ...]
  max_matched_sub_len: int
  frame2unique_sub: Optional[Mapping[int, int]]
  frame2subs: Optional[Mapping[int, Tuple[int, ...]]]
  extra_long_subs: int = 0
  pseudo: bool = False

  def cut(self, max_clip_len: Optional[int]):
    """``cut_to_max_clip_len`` applied to this video."""
    return cut_to_max_clip_len(self.unique_sub2frames, self.unmatched_frames,
                               self.num_frames, max_clip_len)

  def to_original_json(self) -> dict:
    """The fields in the original's JSON form (lists, string frame keys)."""
    def lists(pairs):
      return [[s, list(f)] for s, f in pairs]
    return {
        "num_of_frames": self.num_frames,
        "unique_sub2frames": lists(self.unique_sub2frames),
        "sub2frames": lists(self.sub2frames),
        "unmatched_frames": list(self.unmatched_frames),
        "max_mtached_sub_len": self.max_matched_sub_len,
        "frame2unique_sub": (None if self.frame2unique_sub is None else
                             {str(k): v for k, v in self.frame2unique_sub.items()}),
        "frame2subs": (None if self.frame2subs is None else
                       {str(k): list(v) for k, v in self.frame2subs.items()}),
        "extra_long_subs": self.extra_long_subs,
    }


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def _check_subtitles(subtitles) -> list:
  out = []
  for i, sub in enumerate(subtitles):
    try:
      start, end = sub
    except (TypeError, ValueError):
      raise ValueError(f"subtitles[{i}] must be a (start, end) pair, got {sub!r}") from None
    for field, value in (("start", start), ("end", end)):
      if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"subtitles[{i}].{field} must be a number, got {value!r}")
      if not math.isfinite(float(value)):
        raise ValueError(f"subtitles[{i}].{field} must be finite, got {value!r}")
    out.append((float(start), float(end)))
  return out


def num_frames_from_subtitles(subtitles, frame_length: float = 1.5) -> int:
  """Frame count the original uses when ``vid2nframe`` is 0.

  ``int(int(last_end) / frame_length)``: the end time is truncated to whole
  seconds first, so this can be smaller than the frames the subtitles cover.
  0 when there are no subtitles (the original crashes there).
  """
  return _frames_from_last_end(_check_subtitles(subtitles), frame_length)


def _frames_from_last_end(subs: list, frame_length: float) -> int:
  return int(int(subs[-1][1]) / frame_length) if subs else 0


def pseudo_subtitles(num_frames: int, group: int = PSEUDO_SUB_GROUP) -> SubFrames:
  """Text-less subtitles over consecutive groups of ``group`` frames.

  What the original stores for a video without subtitles so that its frames
  still pass through the cross-modal transformer (rows ``[SEP]`` + frames).
  """
  num_frames = _check_int("num_frames", num_frames, 0)
  group = _check_int("group", group, 1)
  return tuple((i, tuple(range(st, min(st + group, num_frames))))
               for i, st in enumerate(range(0, num_frames, group)))


def _pseudo_alignment(num_frames: int) -> Alignment:
  subs = pseudo_subtitles(num_frames)
  return Alignment(
      num_frames=num_frames, unique_sub2frames=subs, sub2frames=subs,
      unmatched_frames=(),
      max_matched_sub_len=max((len(f) for _, f in subs), default=0),
      frame2unique_sub=None, frame2subs=None, extra_long_subs=0, pseudo=True)


def _temporal_iou(frame: int, st, ed):
  """IoU of [frame, frame+1] and [st, ed]; float32 like the original.

  ``st``/``ed`` are np.float32 and the frame bounds Python ints, so every
  operation stays in float32 (under numpy 1.x and 2.x alike).
  """
  max_start = max(frame, st)
  min_end = min(frame + 1, ed)
  if min_end <= max_start:
    return 0
  return (min_end - max_start) / (max(frame + 1, ed) - min(frame, st))


def align_subtitles(subtitles: Sequence[Tuple[float, float]], num_frames: int,
                    frame_length: float = 1.5,
                    num_tokens: Optional[Sequence[int]] = None) -> Alignment:
  """Align one video's subtitles to its frames like ``prepro_sub.py``.

  Args:
    subtitles: ``(start, end)`` in seconds, in file order; start times must be
      non-decreasing (the original asserts it). ``end < start`` is accepted as
      the original does (it then behaves like a zero-length subtitle: it may
      cover one frame, with IoU 0).
    num_frames: the video's ``vid2nframe`` entry; 0 means unknown and is
      replaced by ``num_frames_from_subtitles``.
    frame_length: seconds per frame (1.5 for HERO's TV features).
    num_tokens: token count of each subtitle, only for
      ``max_matched_sub_len`` (zeros if omitted).

  Returns:
    The ``Alignment``; pseudo-subtitles when there are no subtitles or the
    (derived) frame count is 0.
  """
  subs = _check_subtitles(subtitles)
  num_frames = _check_int("num_frames", num_frames, 0)
  if (isinstance(frame_length, bool) or not isinstance(frame_length, (int, float, np.number))
      or not math.isfinite(float(frame_length)) or frame_length <= 0):
    raise ValueError(f"frame_length must be a finite number > 0, got {frame_length!r}")
  frame_length = float(frame_length)
  if num_tokens is None:
    num_tokens = [0] * len(subs)
  if len(num_tokens) != len(subs):
    raise ValueError(f"num_tokens has {len(num_tokens)} entries for {len(subs)} subtitles")
  num_tokens = [_check_int(f"num_tokens[{i}]", n, 0) for i, n in enumerate(num_tokens)]

  if num_frames == 0:
    num_frames = _frames_from_last_end(subs, frame_length)
  if not subs or num_frames == 0:
    return _pseudo_alignment(num_frames)

  orig = np.array(subs, dtype=np.float32)  # (n_subs, 2), as the original
  starts = orig[:, 0]
  if np.any(starts[1:] < starts[:-1]):
    bad = int(np.argmax(starts[1:] < starts[:-1])) + 1
    raise ValueError(f"subtitles must be sorted by start time; subtitles[{bad}].start "
                     f"{subs[bad][0]} < subtitles[{bad - 1}].start {subs[bad - 1][0]}")
  ts = orig / np.float32(frame_length)  # float32, same rounding as the original
  st_idx = np.floor(ts[:, 0]).astype(np.int64)
  ed_idx = np.ceil(ts[:, 1]).astype(np.int64)

  video_end = frame_length * num_frames
  n_subs = len(subs)
  covered = {}  # sub_idx -> frames, insertion order = sub order
  extra_long = 0
  for i in range(n_subs):
    frames = list(range(int(st_idx[i]), int(ed_idx[i])))
    start = orig[i, 0]
    # numpy 1.x compared float32 scalars with Python floats in float64.
    if float(start) >= video_end:
      continue
    # The original: end = min(float32 end, python float video end); the
    # difference is float32 when the end is not clipped, float64 otherwise.
    if video_end < float(orig[i, 1]):
      duration = video_end - float(start)
    else:
      duration = orig[i, 1] - start
    if i == n_subs - 1 and duration > LONG_LAST_SUB_SECONDS:
      extra_long += 1
      frames = frames[:LONG_LAST_SUB_KEEP_FRAMES]
    covered[i] = frames

  frame2subs = {}
  frame2unique = {}
  unmatched = []
  covering_sets = {i: set(f) for i, f in covered.items()}
  for frame in range(num_frames):
    subs_here = [i for i, fs in covering_sets.items() if frame in fs]
    if not subs_here:
      unmatched.append(frame)
      continue
    frame2subs[frame] = tuple(subs_here)
    best, best_iou = 0, 0  # default index 0: the zero-IoU quirk
    for i in subs_here:
      iou = _temporal_iou(frame, ts[i, 0], ts[i, 1])
      if iou > best_iou:
        best, best_iou = i, iou
    frame2unique[frame] = best

  owned = {i: [] for i in range(n_subs)}
  for frame, i in frame2unique.items():
    owned[i].append(frame)
  unique_sub2frames = tuple((i, tuple(sorted(owned[i]))) for i in range(n_subs))
  sub2frames = tuple((i, tuple(covered.get(i, ()))) for i in range(n_subs))
  max_len = max(num_tokens[i] + len(f) for i, f in sub2frames)
  return Alignment(
      num_frames=num_frames, unique_sub2frames=unique_sub2frames,
      sub2frames=sub2frames, unmatched_frames=tuple(unmatched),
      max_matched_sub_len=max_len, frame2unique_sub=frame2unique,
      frame2subs=frame2subs, extra_long_subs=extra_long, pseudo=False)


def cut_to_max_clip_len(unique_sub2frames, unmatched_frames, num_frames: int,
                        max_clip_len: Optional[int]):
  """What ``SubTokLmdb.compute_sub2frames`` keeps for ``max_clip_len``.

  Walking the subtitles in order, frames >= ``max_clip_len`` are dropped; a
  subtitle is kept if it still has frames or never had any. At the first
  subtitle that lost a frame the walk stops (that subtitle is kept with its
  in-range frames, or dropped if none remain). The result is therefore a
  prefix ``0..K`` of the subtitles, which the model relies on (subtitle index
  == row index).

  Args:
    unique_sub2frames: ``(sub_idx, frames)`` pairs (``Alignment.unique_sub2frames``).
    unmatched_frames: the video's unmatched frames.
    num_frames: the stored frame count (``vid2len``).
    max_clip_len: the cut; ``None`` keeps everything. ``-1`` reproduces the
      original's "no cut" literally: subtitles untouched, but every unmatched
      frame dropped (``i < -1``) and the length set to ``min(n, -1) = -1``.

  Returns:
    ``(sub2frames, unmatched_frames, n_frames)`` as tuples / int.
  """
  num_frames = _check_int("num_frames", num_frames, 0)
  pairs = tuple((int(s), tuple(int(f) for f in fs)) for s, fs in unique_sub2frames)
  unmatched = tuple(int(f) for f in unmatched_frames)
  if max_clip_len is None:
    return pairs, unmatched, num_frames
  max_clip_len = _check_int("max_clip_len", max_clip_len, -1)
  kept = []
  if max_clip_len > -1:
    for sub_idx, frames in pairs:
      in_range = []
      cutoff = False
      for f in sorted(frames):
        if f < max_clip_len:
          in_range.append(f)
        else:
          cutoff = True
      if in_range or not frames:
        kept.append((sub_idx, tuple(in_range)))
      if cutoff:
        break
  else:
    kept = list(pairs)
  unmatched = tuple(f for f in unmatched if f < max_clip_len)
  return tuple(kept), unmatched, min(num_frames, max_clip_len)
