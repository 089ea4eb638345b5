"""Reader of the raw layout: features you extracted + public annotation files.

Layout::

  features/<vid>.npz      "features" [n, D], or "resnet" [n, 2048] + "slowfast" [n, 2304]
                          (concatenated and cut to the shorter, as convert_videodb.py)
  subtitles.jsonl         {"vid_name": ..., "sub": [{"text", "start", "end"}, ...]} per line
                          (TVR/TVQA's subtitle format); for HowTo100M also accepted:
  captions.json           HowTo100M's raw_caption.json {vid: {"start": [], "end": [], "text": []}}
  vid2nframe.json         optional {vid: frames}; default: the feature length
  splits/<split>.json     optional lists of video names; default: every video is 'train'
  <task>_<split>.jsonl    queries: TVR / How2R lines {desc_id, desc, vid_name, ts, duration,
                          type}; TVQA / How2QA lines {qid, q, a0..a4 (How2QA: a0..a3), answer_idx, ts, vid_name}

Text is tokenized at build time with the original's normalisation (html
unescape for subtitles, lower-casing all-caps text).
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Iterator, Optional

import numpy as np

from hero_jax.data import records, sources
from hero_jax.data.report import BuildReport
from hero_jax.data.tokenizers import tokenize

FEATURES_DIR = "features"
SUBTITLES_FILE = "subtitles.jsonl"
CAPTIONS_FILE = "captions.json"


def load_features(path: str) -> np.ndarray:
  """One video's ``.npz`` as float32 [n, D] (ResNet + SlowFast concatenated)."""
  try:
    z = np.load(path, allow_pickle=False)
    arrays = {k: z[k] for k in z.files}
  except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: not a readable .npz of numeric arrays ({e})") from None
  if "features" in arrays:
    return arrays["features"].astype(np.float32)
  if "resnet" in arrays and "slowfast" in arrays:
    resnet, slowfast = arrays["resnet"], arrays["slowfast"]
    n = min(len(resnet), len(slowfast))
    return np.concatenate([resnet[:n], slowfast[:n]], axis=1).astype(np.float32)
  raise ValueError(f"{path}: expected array 'features' or arrays 'resnet' and "
                   f"'slowfast', found {sorted(arrays)}")


def feature_files(manual_dir: str) -> dict:
  """{vid: path} of ``features/*.npz``."""
  d = os.path.join(manual_dir, FEATURES_DIR)
  if not os.path.isdir(d):
    raise FileNotFoundError(f"raw layout: feature folder {d} does not exist")
  return {name[:-4]: os.path.join(d, name) for name in sorted(os.listdir(d))
          if name.endswith(".npz")}


def load_subtitles(manual_dir: str) -> tuple:
  """({vid: [{"text", "start", "end"}]}, the file read): subtitles.jsonl or captions.json."""
  jsonl = os.path.join(manual_dir, SUBTITLES_FILE)
  captions = os.path.join(manual_dir, CAPTIONS_FILE)
  if os.path.exists(jsonl):
    out = {}
    for line, rec in sources.read_jsonl(jsonl, "subtitles"):
      if not isinstance(rec, dict) or "vid_name" not in rec or not isinstance(rec.get("sub"), list):
        raise ValueError(f"subtitles: {jsonl} line {line}: expected "
                         f'{{"vid_name": ..., "sub": [...]}}')
      out[str(rec["vid_name"])] = rec["sub"]
    return out, jsonl
  if os.path.exists(captions):
    out = {}
    for vid, cap in sources.load_json(captions, "captions").items():
      try:
        out[str(vid)] = [{"text": t, "start": s, "end": e}
                         for s, e, t in zip(cap["start"], cap["end"], cap["text"], strict=True)]
      except (KeyError, TypeError, ValueError):
        raise ValueError(f"captions: {captions} video {vid!r}: expected equally long "
                         f"'start', 'end' and 'text' lists") from None
    return out, captions
  raise FileNotFoundError(f"raw layout: neither {jsonl} nor {captions} exists")


def video_splits(manual_dir: str, all_vids) -> dict:
  return sources.video_splits(os.path.join(manual_dir, "splits"), "{split}.json", all_vids)


def clips_of(vid: str, frames: np.ndarray, subs: list, clip_seconds: float,
             frame_length: float) -> list:
  """HowTo100M: cut a whole video into clips ``<vid>.<k>`` as convert_videodb.py does.

  Clip k holds frames [k*c, min((k+1)*c, n)) with c = int(clip_seconds /
  frame_length); a caption goes to the clip its start falls in, with times
  made relative to the clip start (the original's caption split was not
  released; this is the natural reading of its clip keys).
  """
  c = int(clip_seconds / frame_length)
  out = []
  for k, st in enumerate(range(0, len(frames), c)):
    ed = min(st + c, len(frames))
    t0, t1 = st * frame_length, ed * frame_length
    clip_subs = [{"text": s.get("text", ""), "start": s["start"] - t0, "end": s["end"] - t0}
                 for s in subs if t0 <= s["start"] < t1]
    out.append((f"{vid}.{k}", frames[st:ed], clip_subs))
  return out


class RawVideos:
  """The raw layout's video side, loaded once (a Beam worker keeps one per process)."""

  def __init__(self, manual_dir: str):
    self.manual_dir = manual_dir
    self.files = feature_files(manual_dir)
    self.subtitles, self.subtitle_file = load_subtitles(manual_dir)
    nframe_path = os.path.join(manual_dir, "vid2nframe.json")
    self.vid2nframe = (sources.load_json(nframe_path, "frame counts")
                       if os.path.exists(nframe_path) else {})

  def records(self, vids, tokenizer, *, feature_dim: int, frame_length: float,
              max_clip_len: int, report: BuildReport,
              clip_seconds: Optional[float] = None) -> Iterator[records.VideoRecord]:
    """Records of ``vids`` (whole videos, or their clips when ``clip_seconds``)."""
    origin = self.subtitle_file
    for vid in vids:
      if vid not in self.files:
        report.skip("missing_features", vid)
        continue
      feats = load_features(self.files[vid])
      if vid in self.vid2nframe:
        feats = feats[:int(self.vid2nframe[vid])]
      frames = sources.check_frames(vid, feats, feature_dim, self.files[vid], report)
      if frames is None:
        continue
      subs = self.subtitles.get(vid)
      if subs is None:
        report.note("video_without_subtitle_record", vid)
        subs = []
      sources.subtitle_times(vid, subs, origin)  # checked before clips_of reads them
      pieces = ([(vid, frames, subs)] if clip_seconds is None
                else clips_of(vid, frames, subs, clip_seconds, frame_length))
      for name, clip_frames, clip_subs in pieces:
        ids = [tokenize(tokenizer, str(s.get("text", "")), unescape_html=True) for s in clip_subs]
        rec = sources.aligned_record(name, clip_frames, clip_subs, ids, len(clip_frames),
                                     frame_length, origin, report)
        yield sources.finish_video(rec, max_clip_len, report)


def query_splits(manual_dir: str, task: str) -> dict:
  """{split: path} of ``<task>_<split>.jsonl`` files present."""
  pattern = re.compile(re.escape(task) + r"_(\w+?)(?:_release)?\.jsonl$")
  out = {}
  for name in sorted(os.listdir(manual_dir)):
    m = pattern.match(name)
    if m:
      out[m.group(1)] = os.path.join(manual_dir, name)
  if not out:
    raise FileNotFoundError(f"{task}: no {manual_dir}/{task}_<split>.jsonl file")
  return out


def read_moments(path: str, tokenizer, known_vids: Optional[set],
                 report: BuildReport) -> Iterator[records.MomentQuery]:
  for line, rec in sources.read_jsonl(path, "queries"):
    origin = f"{path} line {line}"
    if "desc" not in rec or "desc_id" not in rec:
      raise ValueError(f"{origin}: a TVR-style query needs 'desc_id' and 'desc'")
    qid, vid = str(rec["desc_id"]), str(rec.get("vid_name") or "")
    if not sources.known_video(vid, qid, known_vids, report):
      continue
    report.add_query()
    yield records.MomentQuery(
        qid=qid, vid=vid, text=str(rec["desc"]),
        token_ids=np.asarray(tokenize(tokenizer, str(rec["desc"]), unescape_html=False), np.int32),
        ts=sources.moment_ts(rec, origin), duration=float(rec.get("duration") or 0.0),
        query_type=str(rec.get("type", "")))


def read_qa(path: str, tokenizer, known_vids: Optional[set],
            report: BuildReport) -> Iterator[records.QaQuery]:
  for line, rec in sources.read_jsonl(path, "questions"):
    origin = f"{path} line {line}"
    missing = [k for k in ("qid", "q") if k not in rec]
    if missing:
      raise ValueError(f"{origin}: a TVQA-style question lacks fields {missing}")
    answer_keys = sources.qa_answer_keys(rec, origin)
    qid, vid = str(rec["qid"]), str(rec.get("vid_name") or "")
    if not sources.known_video(vid, qid, known_vids, report):
      continue
    enc = lambda text: np.asarray(tokenize(tokenizer, str(text), unescape_html=False), np.int32)  # noqa: E731
    try:
      answer_idx = int(rec.get("answer_idx", -1))
    except (TypeError, ValueError):
      raise ValueError(f"{origin}: field 'answer_idx' must be an integer, "
                       f"got {rec.get('answer_idx')!r}") from None
    report.add_query()
    yield records.QaQuery(
        qid=qid, vid=vid, question=str(rec["q"]), answers=[str(rec[k]) for k in answer_keys],
        question_ids=enc(rec["q"]), answer_ids=[enc(rec[k]) for k in answer_keys],
        answer_idx=answer_idx, ts=sources.qa_ts(rec, origin, report))
