"""The validation report every dataset build ends with.

The builders feed each stored record (and each record they had to skip) in
here; the build prints the summary, writes it next to the data
(``build_report.json``) and refuses to finish when the data is plainly
broken. Nothing is dropped without a count and a reason.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Optional

import numpy as np
from etils import epath


class BrokenDataError(ValueError):
  """The source data cannot make a usable dataset (the build stops)."""


@dataclasses.dataclass
class BuildReport:
  """Counts and distributions of one build (all splits of one config)."""
  name: str
  videos: int = 0
  queries: int = 0
  frames: int = 0
  matched_frames: int = 0
  subtitles: int = 0
  empty_subtitles: int = 0
  subtitles_without_frames: int = 0
  videos_with_subtitles: int = 0
  token_lengths: list = dataclasses.field(default_factory=list)
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict = dataclasses.field(default_factory=dict)  # reason -> first few ids

  def skip(self, reason: str, record_id: str) -> None:
    """Counts a record that is not stored, with the first ids per reason."""
    self.skipped[reason] += 1
    self._remember(reason, record_id)

  def note(self, event: str, record_id: str, n: int = 1) -> None:
    """Counts something odd that was kept (e.g. a subtitle ending before it starts)."""
    self.notes[event] += n
    self._remember(event, record_id)

  def _remember(self, key: str, record_id: str) -> None:
    ids = self.examples.setdefault(key, [])
    if len(ids) < 5:
      ids.append(record_id)

  def add_video(self, rec) -> None:
    """Statistics of one stored ``records.VideoRecord``."""
    self.videos += 1
    n = int(rec.frames.shape[0])
    self.frames += n
    owned = set()
    for fr in rec.row_frames:
      owned.update(int(f) for f in fr if f < n)
    self.matched_frames += len(owned)
    if rec.pseudo:
      return
    self.videos_with_subtitles += 1
    self.subtitles += len(rec.row_ids)
    for ids, fr in zip(rec.row_ids, rec.row_frames):
      self.token_lengths.append(len(ids))
      self.empty_subtitles += len(ids) == 0
      self.subtitles_without_frames += len(fr) == 0

  def add_query(self) -> None:
    self.queries += 1

  def summary(self) -> dict:
    lengths = np.asarray(self.token_lengths or [0])
    pct = {f"p{p}": float(np.percentile(lengths, p)) for p in (50, 90, 99, 100)}
    return {
        "name": self.name,
        "videos": self.videos,
        "queries": self.queries,
        "frames": self.frames,
        "subtitles": self.subtitles,
        "videos_with_subtitles": self.videos_with_subtitles,
        "matched_frame_share": self.matched_frames / max(self.frames, 1),
        "empty_subtitles": self.empty_subtitles,
        "subtitles_without_frames": self.subtitles_without_frames,
        "subtitle_token_length_percentiles": pct if self.token_lengths else {},
        "skipped": dict(sorted(self.skipped.items())),
        "skipped_total": int(sum(self.skipped.values())),
        "notes": dict(sorted(self.notes.items())),
        "first_ids": {k: v for k, v in sorted(self.examples.items())},
    }

  def format(self) -> str:
    s = self.summary()
    lines = [f"build report: {s['name']}"]
    for key in ("videos", "queries", "frames", "subtitles", "videos_with_subtitles",
                "empty_subtitles", "subtitles_without_frames"):
      lines.append(f"  {key:28s} {s[key]}")
    lines.append(f"  {'matched_frame_share':28s} {s['matched_frame_share']:.3f}")
    if s["subtitle_token_length_percentiles"]:
      pct = ", ".join(f"{k}={v:g}" for k, v in s["subtitle_token_length_percentiles"].items())
      lines.append(f"  {'subtitle tokens':28s} {pct}")
    lines.append(f"  {'skipped records':28s} {s['skipped_total']}")
    def first(key):
      ids = s["first_ids"].get(key)  # absent for counts from Beam counters
      return f" (first: {', '.join(ids)})" if ids else ""
    for reason, n in s["skipped"].items():
      lines.append(f"    {reason}: {n}{first(reason)}")
    for event, n in s["notes"].items():
      lines.append(f"  note {event}: {n}{first(event)}")
    return "\n".join(lines)

  def check_videos(self) -> None:
    """Refuses a video build with nothing usable in it."""
    if self.videos == 0:
      raise BrokenDataError(f"{self.name}: no video could be stored\n{self.format()}")
    if self.videos_with_subtitles == 0:
      raise BrokenDataError(
          f"{self.name}: none of the {self.videos} videos has a subtitle; check the "
          f"subtitle file and that its vid_name values match the feature names\n{self.format()}")

  def check_queries(self) -> None:
    if self.queries == 0:
      raise BrokenDataError(f"{self.name}: no query could be stored\n{self.format()}")

  def write(self, path) -> None:
    epath.Path(path).write_text(json.dumps(self.summary(), indent=1))


def read(path) -> Optional[dict]:
  try:
    return json.loads(epath.Path(path).read_text())
  except FileNotFoundError:
    return None
