"""Reader of HERO's released data layout (``video_db`` + ``txt_db`` LMDBs).

Layout (as HERO's download scripts unpack it, and as the fixtures'
``release_format/`` folder holds it)::

  video_db/<dataset>/id2nframe.json
  video_db/<dataset>/<feat_version>_<frame_length>[_compressed]/   LMDB: vid -> features
  txt_db/<dataset>_subtitles.db/   LMDB: vid -> lz4(msgpack(record)), meta.json, vid2len.json
  txt_db/<task>_<split>.db/        LMDB: qid -> lz4(msgpack(record)), meta.json
  txt_db/pretrain_splits/<dataset>_<split>.json   lists of video names

Video values are msgpack(msgpack_numpy) dicts ``{"features": float32 [n, D]}``
or, in ``*_compressed``, ``.npz`` bytes with the same member. The released
token ids and alignment (``unique_sub2frames``) are kept as they are; the
alignment is recomputed from the subtitle times as a check and differences
are noted in the build report.
"""

from __future__ import annotations

import io
import os
from typing import Iterator, Optional

import numpy as np

from hero_jax.data import alignment as alignment_lib
from hero_jax.data import records, sources
from hero_jax.data.report import BuildReport
from hero_jax.data.tokenizers import SPECIAL_KEYS


def open_lmdb(path: str, what: str):
  """Opens an LMDB folder read-only (no lock file: release folders may be read-only)."""
  import lmdb
  if not os.path.exists(os.path.join(path, "data.mdb")):
    raise FileNotFoundError(f"{what}: no LMDB at {path} (expected {path}/data.mdb)")
  try:
    return lmdb.open(path, readonly=True, lock=False, create=False, readahead=False,
                     max_readers=512)
  except lmdb.Error as e:
    raise ValueError(f"{what}: {path}/data.mdb is not a readable LMDB ({e})") from None


class LmdbTable:
  """Key -> value bytes of one LMDB, with errors that name the file."""

  def __init__(self, path: str, what: str):
    self.path, self.what = path, what
    self.env = open_lmdb(path, what)

  def keys(self) -> list:
    import lmdb
    try:
      with self.env.begin() as txn:
        return [k.decode("utf-8") for k in txn.cursor().iternext(values=False)]
    except lmdb.Error as e:
      raise ValueError(f"{self.what}: {self.path}/data.mdb is corrupt ({e})") from None

  def get(self, key: str) -> Optional[bytes]:
    import lmdb
    try:
      with self.env.begin() as txn:
        return txn.get(key.encode("utf-8"))
    except lmdb.Error as e:
      raise ValueError(f"{self.what}: {self.path}/data.mdb is corrupt, reading key "
                       f"{key!r} ({e})") from None


def decode_text_value(value: bytes, origin: str) -> dict:
  import lz4.frame
  import msgpack
  try:
    return msgpack.loads(lz4.frame.decompress(value), raw=False)
  except Exception as e:  # lz4 and msgpack raise several types
    raise ValueError(f"{origin}: value is not lz4(msgpack(dict)) ({type(e).__name__}: {e})") from None


def decode_video_value(value: bytes, compressed: bool) -> np.ndarray:
  if compressed:
    with np.load(io.BytesIO(value), allow_pickle=False) as z:
      return z["features"]
  import msgpack
  import msgpack_numpy
  return msgpack.loads(value, object_hook=msgpack_numpy.decode, raw=False)["features"]


def find_video_lmdb(dataset_dir: str, feat_version: str, frame_length: float) -> tuple:
  """(path, compressed) of the feature LMDB; the plain one is preferred."""
  found = {}
  if os.path.isdir(dataset_dir):
    for name in os.listdir(dataset_dir):
      if not name.startswith(feat_version + "_"):
        continue
      rest = name[len(feat_version) + 1:]
      compressed = rest.endswith("_compressed")
      rest = rest[:-len("_compressed")] if compressed else rest
      try:
        if float(rest) == float(frame_length):
          found[compressed] = os.path.join(dataset_dir, name)
      except ValueError:
        continue
  for compressed in (False, True):
    if compressed in found:
      return found[compressed], compressed
  raise FileNotFoundError(
      f"video features: no LMDB named {feat_version}_{frame_length:g}[_compressed] in "
      f"{dataset_dir}")


class ReleaseVideoDb:
  """``VideoFeatLmdb``: features[:id2nframe[vid]] as float32."""

  def __init__(self, manual_dir: str, dataset: str, feat_version: str, frame_length: float):
    dataset_dir = os.path.join(manual_dir, "video_db", dataset)
    self.id2nframe = sources.load_json(os.path.join(dataset_dir, "id2nframe.json"),
                                       "video frame counts")
    path, self.compressed = find_video_lmdb(dataset_dir, feat_version, frame_length)
    self.table = LmdbTable(path, "video features")

  def features(self, vid: str) -> Optional[np.ndarray]:
    """The features, None when the video is absent; raises if undecodable."""
    value = self.table.get(vid)
    if value is None:
      return None
    try:
      feats = decode_video_value(value, self.compressed)
    except Exception as e:
      raise ValueError(f"video features: {self.table.path}: value of {vid!r} cannot be "
                       f"decoded ({type(e).__name__}: {e})") from None
    return feats[:int(self.id2nframe.get(vid, len(feats)))]


class ReleaseTxtDb:
  """A ``txt_db/*.db`` folder: ``meta.json`` + LMDB of lz4(msgpack) records."""

  def __init__(self, path: str, what: str):
    self.path = path
    self.meta = sources.load_json(os.path.join(path, "meta.json"), what + " meta")
    self.table = LmdbTable(path, what)

  def keys(self) -> list:
    return self.table.keys()

  def get(self, key: str) -> Optional[dict]:
    value = self.table.get(key)
    if value is None:
      return None
    return decode_text_value(value, f"{self.table.path} record {key!r}")


def special_ids(meta: dict) -> dict:
  """The special ids of a ``meta.json`` in the tokenizers' form."""
  try:
    return {**{k: meta[k.upper()] for k in SPECIAL_KEYS}, "v_range": list(meta["v_range"])}
  except KeyError as e:
    raise ValueError(f"meta.json lacks the special id {e}") from None


def video_splits(manual_dir: str, dataset: str, all_vids) -> dict:
  """{split: [vid]} from ``pretrain_splits``, or every video as 'train'."""
  return sources.video_splits(os.path.join(manual_dir, "txt_db", "pretrain_splits"),
                              dataset + "_{split}.json", all_vids)


def read_videos(manual_dir: str, dataset: str, vids, *, feature_dim: int,
                feat_version: str, frame_length: float, max_clip_len: int,
                report: BuildReport) -> Iterator[records.VideoRecord]:
  """The stored-ready records of ``vids`` (skips counted in ``report``)."""
  sub_db = ReleaseTxtDb(os.path.join(manual_dir, "txt_db", f"{dataset}_subtitles.db"),
                        "subtitles")
  video_db = ReleaseVideoDb(manual_dir, dataset, feat_version, frame_length)
  for vid in vids:
    sub = sub_db.get(vid)
    if sub is None:
      report.skip("no_subtitle_record", vid)
      continue
    feats = video_db.features(vid)
    if feats is None:
      report.skip("missing_features", vid)
      continue
    frames = sources.check_frames(vid, feats, feature_dim, video_db.table.path, report)
    if frames is None:
      continue
    rec = _record(vid, frames, sub, frame_length, f"{sub_db.table.path} record {vid!r}", report)
    yield sources.finish_video(rec, max_clip_len, report)


def _record(vid: str, frames: np.ndarray, sub: dict, frame_length: float, origin: str,
            report: BuildReport) -> records.VideoRecord:
  for key in ("sub", "input_ids", "unique_sub2frames", "duration"):
    if key not in sub:
      raise ValueError(f"{origin}: missing field {key!r}")
  subs = sub["sub"] or []
  pseudo = not subs
  times = sources.subtitle_times(vid, subs, origin) if subs else np.zeros((0, 2))
  rows = [np.asarray(ids, np.int32) for ids in sub["input_ids"]]
  row_frames = [np.asarray(fr, np.int32) for _, fr in sub["unique_sub2frames"]]
  if len(rows) != len(row_frames):
    raise ValueError(f"{origin}: {len(rows)} input_ids lists but {len(row_frames)} "
                     f"unique_sub2frames entries")
  num_frames = int(sub["duration"])
  if not pseudo:
    sources.note_subtitle_oddities(vid, times, num_frames, frame_length, report)
    try:  # only a check: the released alignment is what is stored
      ours = alignment_lib.align_subtitles([tuple(t) for t in times], num_frames, frame_length)
    except ValueError:
      report.note("alignment_check_failed", vid)
    else:
      if [tuple(f) for _, f in ours.unique_sub2frames] != [tuple(int(x) for x in f)
                                                           for f in row_frames]:
        report.note("alignment_differs_from_release", vid)
  return records.VideoRecord(
      vid=vid, frames=frames, num_frames=num_frames, sub_times=times,
      sub_texts=[s.get("text", "") for s in subs], row_ids=rows, row_frames=row_frames,
      unmatched_frames=np.asarray(sub.get("unmatched_frames", []), np.int32), pseudo=pseudo)


def query_splits(manual_dir: str, task: str) -> dict:
  """{split: txt_db folder} of ``<task>_<split>.db`` folders present."""
  txt_dir = os.path.join(manual_dir, "txt_db")
  out = {}
  if os.path.isdir(txt_dir):
    for name in sorted(os.listdir(txt_dir)):
      if name.startswith(task + "_") and name.endswith(".db") and name != f"{task}_subtitles.db":
        out[name[len(task) + 1:-3]] = os.path.join(txt_dir, name)
  if not out:
    raise FileNotFoundError(f"{task}: no {txt_dir}/{task}_<split>.db folder")
  return out


def _query_records(db_path: str, what: str, known_vids, report: BuildReport):
  """(key, record, origin, vid) of a query DB, queries on unknown videos counted out."""
  db = ReleaseTxtDb(db_path, what)
  for key in db.keys():
    rec = db.get(key)
    origin = f"{db_path} record {key!r}"
    if "input_ids" not in rec:
      raise ValueError(f"{origin}: missing field 'input_ids'")
    vid = str(rec.get("vid") or rec.get("vid_name") or "")
    if sources.known_video(vid, key, known_vids, report):
      yield key, rec, origin, vid


def read_moments(db_path: str, known_vids: Optional[set],
                 report: BuildReport) -> Iterator[records.MomentQuery]:
  """TVR-style query records (``prepro_query.py --task tvr``)."""
  for key, rec, origin, vid in _query_records(db_path, "queries", known_vids, report):
    report.add_query()
    yield records.MomentQuery(
        qid=str(rec.get("qid", key)), vid=vid, text=str(rec.get("desc", "")),
        token_ids=np.asarray(rec["input_ids"], np.int32), ts=sources.moment_ts(rec, origin),
        duration=float(rec.get("duration") or 0.0), query_type=str(rec.get("type", "")))


def read_qa(db_path: str, known_vids: Optional[set],
            report: BuildReport) -> Iterator[records.QaQuery]:
  """TVQA-style question records (``prepro_query.py --task tvqa``)."""
  for key, rec, origin, vid in _query_records(db_path, "questions", known_vids, report):
    ids = rec["input_ids"]
    if len(ids) < 3:
      raise ValueError(f"{origin}: input_ids must hold the question and its answers (5 for "
                       f"TVQA, 4 for How2QA), got {len(ids)} lists")
    target = rec.get("target")
    report.add_query()
    yield records.QaQuery(
        qid=str(rec.get("qid", key)), vid=vid, question=str(rec.get("q", "")),
        answers=[str(rec.get(f"a{i}", "")) for i in range(len(ids) - 1)],
        question_ids=np.asarray(ids[0], np.int32),
        answer_ids=[np.asarray(a, np.int32) for a in ids[1:]],
        answer_idx=-1 if target is None else int(target), ts=sources.qa_ts(rec, origin, report))
