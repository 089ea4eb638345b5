"""Checks and record-making shared by the source readers (release, raw, synthetic).

Each reader turns its files into ``records.VideoRecord`` / query records and
reports through a ``report.BuildReport``: unusable records are skipped with a
reason, odd-but-usable ones are kept and noted, and input that makes the
whole build meaningless (a wrong feature dimension) raises naming the file.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional, Sequence

import numpy as np

from hero_jax.data import alignment as alignment_lib
from hero_jax.data import records
from hero_jax.data.report import BuildReport


def load_json(path: str, what: str):
  """Reads a JSON file; a missing or malformed one names the path and its role."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{what}: {path} does not exist")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{what}: {path} is not valid JSON ({e})") from None


def read_jsonl(path: str, what: str):
  """Yields (line number, record) of a JSONL file, naming file and line on errors."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{what}: {path} does not exist")
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield n, json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{what}: {path} line {n} is not valid JSON ({e})") from None


def video_splits(split_dir: str, file_pattern: str, all_vids) -> dict:
  """{split: [vid]} from ``split_dir/file_pattern`` files, or every video as 'train'."""
  splits = {}
  for split in ("train", "val", "test"):
    path = os.path.join(split_dir, file_pattern.format(split=split))
    if os.path.exists(path):
      splits[split] = [str(v) for v in load_json(path, f"{split} split")]
  return splits or {"train": sorted(all_vids)}


def check_frames(vid: str, frames: np.ndarray, feature_dim: int, origin: str,
                 report: BuildReport) -> Optional[np.ndarray]:
  """The video's features as float32, or None (counted) when unusable.

  A wrong feature dimension is an error, not a skip: it means the whole
  source does not match the requested build.
  """
  frames = np.asarray(frames)
  if frames.ndim != 2:
    raise ValueError(f"{origin}: features of video {vid!r} must be [frames, dim], "
                     f"got shape {frames.shape}")
  if frames.shape[1] != feature_dim:
    raise ValueError(f"{origin}: features of video {vid!r} have dim {frames.shape[1]}, "
                     f"expected feature_dim={feature_dim}")
  if frames.shape[0] == 0:
    report.skip("no_frames", vid)
    return None
  frames = frames.astype(np.float32)
  if not np.all(np.isfinite(frames)):
    report.skip("non_finite_features", vid)
    return None
  if np.any(np.abs(frames) > np.finfo(np.float16).max):  # stored as float16
    report.skip("features_overflow_float16", vid)
    return None
  return frames


def note_subtitle_oddities(vid: str, times: np.ndarray, num_frames: int,
                           frame_length: float, report: BuildReport) -> None:
  """Counts subtitles the original keeps but that usually mean bad annotations."""
  if not len(times):
    return
  n_back = int(np.sum(times[:, 1] < times[:, 0]))
  if n_back:
    report.note("subtitle_end_before_start", vid, n_back)
  n_after = int(np.sum(times[:, 0] >= frame_length * num_frames))
  if n_after:
    report.note("subtitle_after_video_end", vid, n_after)


def subtitle_times(vid: str, subs: Sequence[dict], origin: str) -> np.ndarray:
  """[S, 2] (start, end) of the subtitle dicts, checked to be finite numbers."""
  times = np.zeros((len(subs), 2), np.float64)
  for i, sub in enumerate(subs):
    for j, key in enumerate(("start", "end")):
      value = sub.get(key) if isinstance(sub, dict) else None
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not math.isfinite(value)):
        raise ValueError(f"{origin}: video {vid!r} subtitle {i} field {key!r} must be a "
                         f"finite number of seconds, got {value!r}")
      times[i, j] = value
  return times


def aligned_record(vid: str, frames: np.ndarray, subs: Sequence[dict], token_ids: Sequence,
                   num_frames: int, frame_length: float, origin: str,
                   report: BuildReport) -> records.VideoRecord:
  """A record aligned by ``align_subtitles`` (raw and synthetic sources)."""
  times = subtitle_times(vid, subs, origin)
  try:
    al = alignment_lib.align_subtitles([tuple(t) for t in times], num_frames, frame_length,
                                       [len(t) for t in token_ids])
  except ValueError as e:
    raise ValueError(f"{origin}: video {vid!r}: {e}") from None
  note_subtitle_oddities(vid, times, al.num_frames, frame_length, report)
  if al.pseudo:
    rows = [np.zeros((0,), np.int32) for _ in al.unique_sub2frames]
    times, texts = np.zeros((0, 2)), []
  else:
    rows = [np.asarray(t, np.int32) for t in token_ids]
    texts = [s.get("text", "") for s in subs]
  return records.VideoRecord(
      vid=vid, frames=frames, num_frames=al.num_frames, sub_times=times, sub_texts=texts,
      row_ids=rows, row_frames=[np.asarray(f, np.int32) for _, f in al.unique_sub2frames],
      unmatched_frames=np.asarray(al.unmatched_frames, np.int32), pseudo=al.pseudo)


def finish_video(rec: records.VideoRecord, max_clip_len: int,
                 report: BuildReport) -> records.VideoRecord:
  """Notes what is odd about a video about to be stored, and counts it in."""
  n = rec.frames.shape[0]
  if any(len(fr) and int(np.max(fr)) >= n for fr in rec.row_frames):
    # Kept: at load time those frames are dropped from their subtitles, as
    # the original's dataset does.
    report.note("alignment_beyond_features", rec.vid)
  if n > max_clip_len:
    report.note("longer_than_max_clip_len", rec.vid)
  report.add_video(rec)
  return rec


def moment_ts(record: dict, origin: str) -> tuple:
  """(start, end) of a TVR-style ``ts`` list, or NaNs when the split has none."""
  ts = record.get("ts")
  if ts is None:
    return (math.nan, math.nan)
  if (not isinstance(ts, (list, tuple)) or len(ts) != 2
      or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ts)):
    raise ValueError(f"{origin}: field 'ts' must be [start, end] seconds, got {ts!r}")
  return (float(ts[0]), float(ts[1]))


def qa_ts(record: dict, origin: str, report: Optional[BuildReport] = None) -> tuple:
  """(start, end) of a TVQA-style ``ts`` string "st-ed", or NaNs when absent.

  A ``ts`` that does not parse is kept as NaNs, as the original's
  ``get_st_ed_label`` turns it into no target (-1, -1); noted as
  ``qa_ts_unparsed`` in the report.
  """
  ts = record.get("ts")
  if ts is None:
    return (math.nan, math.nan)
  if isinstance(ts, (list, tuple)):
    return moment_ts(record, origin)
  try:
    st, ed = str(ts).split("-")
    return (float(st), float(ed))
  except ValueError:
    if report is None:
      raise ValueError(f"{origin}: field 'ts' must be 'start-end' seconds, got {ts!r}") from None
    report.note("qa_ts_unparsed", str(record.get("qid", origin)))
    return (math.nan, math.nan)


def qa_answer_keys(record: dict, origin: str) -> list:
  """``a0``, ``a1``, ... present in a question record (TVQA 5, How2QA 4)."""
  keys = []
  while f"a{len(keys)}" in record:
    keys.append(f"a{len(keys)}")
  if len(keys) < 2:
    raise ValueError(f"{origin}: a question needs answers a0, a1, ...; found {keys}")
  return keys


def known_video(vid: str, qid: str, known, report: BuildReport) -> bool:
  """False (counted) for a query about a video the video set lacks."""
  if known is not None and vid and vid not in known:
    report.skip("query_unknown_video", f"{qid} (video {vid})")
    return False
  return True


VIDEO_INDEX_FILES = ("vid2dur_idx.json", "video2dur_idx.json")


def read_video_index(folders: Sequence[str]) -> Optional[dict]:
  """The data's global video index, {split: {video id: index}}, from the
  first ``vid2dur_idx.json`` (HERO's txt_db; TVR's ``{split: {vid:
  [duration, index]}}``) found in ``folders``; None when there is none.

  It fixes each split's evaluation corpus and the ``video_idx`` written in
  prediction files, as the original's ``validate_full_vcmr`` uses it.
  """
  for folder in folders:
    for name in VIDEO_INDEX_FILES:
      path = os.path.join(folder, name)
      if not os.path.exists(path):
        continue
      data = load_json(path, "video index")
      try:
        return {split: {vid: int(v[1]) for vid, v in videos.items()}
                for split, videos in data.items()}
      except (AttributeError, TypeError, IndexError, ValueError):
        raise ValueError(f"{path}: expected {{split: {{video id: [duration, index]}}}}") from None
  return None
