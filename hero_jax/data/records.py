"""The records the dataset builders store, and how they become model inputs.

Every source format (HERO's release LMDBs, raw ``.npz`` + JSONL, the
synthetic generator) is read into the same plain records; the TFDS builders
store them with ``video_features``/``tvr_features``/``qa_features`` and the
pipelines turn a stored example back into a ``layout.VideoExample`` with
``decode_video``. Ragged lists (token ids per subtitle, frames per subtitle)
are stored flat with a length per entry, because TFDS decodes nested
sequences into Python lists without TensorFlow.

A video keeps all its frames and its full alignment (``unique_sub2frames``
before any cut); ``max_clip_len`` is applied at load time, exactly where the
original applies it (``SubTokLmdb.compute_sub2frames``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence

import numpy as np

from hero_jax import layout
from hero_jax.data import alignment as alignment_lib


@dataclasses.dataclass
class VideoRecord:
  """One video with its subtitles, aligned.

  frames: [n, D] features (float32 in memory, stored as float16).
  num_frames: the alignment's frame count (HERO's ``vid2len``).
  sub_times: [S, 2] subtitle (start, end) seconds; S = 0 for pseudo-subtitles.
  sub_texts: S subtitle texts, as in the annotation (not normalised).
  row_ids: one token-id array per row (a row = a subtitle, or a 5-frame
    pseudo-subtitle with no text).
  row_frames: one sorted frame-index array per row (``unique_sub2frames``).
  unmatched_frames: frames owned by no subtitle.
  pseudo: rows are pseudo-subtitles (the video had no subtitle).
  """
  vid: str
  frames: np.ndarray
  num_frames: int
  sub_times: np.ndarray
  sub_texts: list
  row_ids: list
  row_frames: list
  unmatched_frames: np.ndarray
  pseudo: bool = False


def _flat(arrays: Sequence) -> tuple:
  lengths = np.array([len(a) for a in arrays], np.int32)
  flat = (np.concatenate([np.asarray(a, np.int32) for a in arrays])
          if arrays else np.zeros((0,), np.int32))
  return flat.astype(np.int32), lengths


def _split(flat: np.ndarray, lengths: np.ndarray) -> list:
  ends = np.cumsum(lengths)
  return [flat[e - n:e] for n, e in zip(lengths, ends)]


def video_features(feature_dim: int):
  """The TFDS feature spec of a video record (imports tfds lazily)."""
  import tensorflow_datasets as tfds
  ints = lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32)  # noqa: E731
  return tfds.features.FeaturesDict({
      "vid": tfds.features.Text(),
      "frames": tfds.features.Tensor(shape=(None, feature_dim), dtype=np.float16,
                                     encoding=tfds.features.Encoding.ZLIB),
      "num_frames": tfds.features.Scalar(dtype=np.int32),
      "sub_times": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
      "sub_texts": tfds.features.Text(),  # JSON list of strings
      "row_token_ids": ints(),
      "row_token_lengths": ints(),
      "row_frames": ints(),
      "row_frame_counts": ints(),
      "unmatched_frames": ints(),
      "pseudo": tfds.features.Scalar(dtype=np.bool_),
  })


def encode_video(rec: VideoRecord) -> dict:
  """A ``VideoRecord`` as a dict for ``video_features``."""
  ids, id_lengths = _flat(rec.row_ids)
  frames_flat, frame_counts = _flat(rec.row_frames)
  return {
      "vid": rec.vid,
      "frames": np.asarray(rec.frames, np.float16),
      "num_frames": np.int32(rec.num_frames),
      "sub_times": np.asarray(rec.sub_times, np.float32).reshape(-1, 2),
      "sub_texts": json.dumps(list(rec.sub_texts)),
      "row_token_ids": ids,
      "row_token_lengths": id_lengths,
      "row_frames": frames_flat,
      "row_frame_counts": frame_counts,
      "unmatched_frames": np.asarray(rec.unmatched_frames, np.int32).reshape(-1),
      "pseudo": bool(rec.pseudo),
  }


def text(value) -> str:
  """A decoded TFDS Text field (bytes) as str."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_from_example(example: dict) -> VideoRecord:
  """A stored video back as a ``VideoRecord`` (full length, no cut)."""
  return VideoRecord(
      vid=text(example["vid"]), frames=np.asarray(example["frames"], np.float32),
      num_frames=int(example["num_frames"]), sub_times=np.asarray(example["sub_times"]),
      sub_texts=sub_texts(example),
      row_ids=_split(example["row_token_ids"], example["row_token_lengths"]),
      row_frames=_split(example["row_frames"], example["row_frame_counts"]),
      unmatched_frames=np.asarray(example["unmatched_frames"]), pseudo=bool(example["pseudo"]))


def decode_video(example: dict, max_clip_len: Optional[int]) -> layout.VideoExample:
  """A stored video as the host transforms take it, cut to ``max_clip_len``.

  Frames: the first ``min(n, max_clip_len)`` (``VideoFeatLmdb``); rows: the
  prefix ``cut_to_max_clip_len`` keeps (``SubTokLmdb.compute_sub2frames``).
  """
  vid = text(example["vid"])
  row_ids = _split(example["row_token_ids"], example["row_token_lengths"])
  frames = np.asarray(example["frames"])
  n = frames.shape[0] if max_clip_len is None else min(frames.shape[0], max_clip_len)
  flat_frames = np.asarray(example["row_frames"], np.int64)
  counts = np.asarray(example["row_frame_counts"])
  row_frames = _split(flat_frames, counts)
  if _nothing_to_cut(flat_frames, counts, n, max_clip_len is None):
    # The common case, in array operations: every row kept with all its frames.
    return layout.VideoExample(vid=vid, frames=frames[:n],
                               sub_ids=[np.asarray(ids, np.int64) for ids in row_ids],
                               sub_frames=row_frames)
  pairs = tuple((i, tuple(int(f) for f in fr)) for i, fr in enumerate(row_frames))
  kept, _, _ = alignment_lib.cut_to_max_clip_len(
      pairs, tuple(int(f) for f in example["unmatched_frames"]),
      int(example["num_frames"]), max_clip_len)
  # The original keeps only the frames the features have (VideoFeatSubTokDataset:
  # ``f_idx in range(v_feat.shape[0])``), when the alignment counted more.
  # Frames stay float16 as stored (half the bytes between processes and to the
  # device); the step casts them to float32, which is exact.
  return layout.VideoExample(
      vid=vid, frames=frames[:n],
      sub_ids=[np.asarray(row_ids[i], np.int64) for i, _ in kept],
      sub_frames=[np.asarray([f for f in fr if f < n], np.int64) for _, fr in kept])


def _nothing_to_cut(flat_frames: np.ndarray, counts: np.ndarray, n: int, no_cut: bool) -> bool:
  """Whether ``cut_to_max_clip_len`` and the frame filter keep every row and
  frame as stored: all frames < n (n <= max_clip_len) and, when there is a cut
  (which sorts each row's frames), every row already sorted."""
  if flat_frames.size and flat_frames.max() >= n:
    return False
  if no_cut or flat_frames.size < 2:
    return True
  new_row = np.zeros(flat_frames.size, bool)
  new_row[(np.cumsum(counts) - counts)[counts > 0]] = True
  return bool(np.all((np.diff(flat_frames) >= 0) | new_row[1:]))


def sub_texts(example: dict) -> list:
  return json.loads(text(example["sub_texts"]))


# --- query datasets (TVR / How2R moments, TVQA / How2QA questions) ---------


@dataclasses.dataclass
class MomentQuery:
  """A TVR-style query: text, the video it is about and its moment."""
  qid: str
  vid: str
  text: str
  token_ids: np.ndarray
  ts: tuple  # (start, end) seconds; (nan, nan) when the split has no labels
  duration: float
  query_type: str = ""


def moment_features():
  import tensorflow_datasets as tfds
  return tfds.features.FeaturesDict({
      "qid": tfds.features.Text(),
      "vid": tfds.features.Text(),
      "text": tfds.features.Text(),
      "token_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "ts": tfds.features.Tensor(shape=(2,), dtype=np.float32),
      "duration": tfds.features.Scalar(dtype=np.float32),
      "query_type": tfds.features.Text(),
  })


def encode_moment(q: MomentQuery) -> dict:
  return {"qid": q.qid, "vid": q.vid, "text": q.text,
          "token_ids": np.asarray(q.token_ids, np.int32),
          "ts": np.asarray(q.ts, np.float32), "duration": np.float32(q.duration),
          "query_type": q.query_type}


def decode_moment(example: dict) -> MomentQuery:
  """A stored moment query back as a ``MomentQuery``."""
  return MomentQuery(qid=text(example["qid"]), vid=text(example["vid"]), text=text(example["text"]),
                     token_ids=np.asarray(example["token_ids"], np.int64),
                     ts=tuple(float(t) for t in example["ts"]),
                     duration=float(example["duration"]),
                     query_type=text(example["query_type"]))


@dataclasses.dataclass
class QaQuery:
  """A TVQA-style question with its answers, video and moment."""
  qid: str
  vid: str
  question: str
  answers: list
  question_ids: np.ndarray
  answer_ids: list
  answer_idx: int  # -1 when the split has no labels
  ts: tuple  # (start, end) seconds; (nan, nan) when absent


def qa_features():
  import tensorflow_datasets as tfds
  ints = lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32)  # noqa: E731
  return tfds.features.FeaturesDict({
      "qid": tfds.features.Text(),
      "vid": tfds.features.Text(),
      "question": tfds.features.Text(),
      "answers": tfds.features.Text(),  # JSON list of strings
      "question_ids": ints(),
      "answer_token_ids": ints(),
      "answer_token_lengths": ints(),
      "answer_idx": tfds.features.Scalar(dtype=np.int32),
      "ts": tfds.features.Tensor(shape=(2,), dtype=np.float32),
  })


def encode_qa(q: QaQuery) -> dict:
  ids, lengths = _flat(q.answer_ids)
  return {"qid": q.qid, "vid": q.vid, "question": q.question,
          "answers": json.dumps(list(q.answers)),
          "question_ids": np.asarray(q.question_ids, np.int32),
          "answer_token_ids": ids, "answer_token_lengths": lengths,
          "answer_idx": np.int32(q.answer_idx), "ts": np.asarray(q.ts, np.float32)}


def decode_qa(example: dict) -> QaQuery:
  """A stored question back as a ``QaQuery``."""
  return QaQuery(qid=text(example["qid"]), vid=text(example["vid"]),
                 question=text(example["question"]), answers=json.loads(text(example["answers"])),
                 question_ids=np.asarray(example["question_ids"], np.int64),
                 answer_ids=[np.asarray(a, np.int64) for a in decode_qa_answers(example)],
                 answer_idx=int(example["answer_idx"]),
                 ts=tuple(float(t) for t in example["ts"]))


def decode_qa_answers(example: dict) -> list:
  """The answers' token ids of a stored QA example, one array per answer."""
  return _split(example["answer_token_ids"], example["answer_token_lengths"])
