"""The embedded default dataset: TV-like videos that every objective can learn.

No download. Each video has a topic (a few words of a small vocabulary);
its subtitles are runs of topic words over consecutive frames, and a frame's
feature is the mean embedding of its subtitle's words plus a smooth drift
over time plus noise. So:

* MLM: a masked word is predictable from its neighbours (words mostly follow
  a fixed successor of the previous word), the subtitle's frames and the topic;
* MFM (NCE / regression): a masked frame is predictable from its subtitle's
  text and its neighbours' drift;
* FOM: the drift is the same function of time in every video, so the
  original order of shuffled frames is recoverable;
* VSM / TVR queries: a query is made of the words of one or two consecutive
  subtitles, so it matches the frames of exactly that moment;
* QA: a question is made of words of one moment (one or two consecutive
  subtitles); the right answer is two other words of that moment, the four
  wrong ones are words said nowhere in the video, so the answer is in the
  subtitles and frames inside the question's time span.

Everything is a function of ``SyntheticSpec`` (seed included): the same spec
gives the same bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from hero_jax.data import records, sources
from hero_jax.data.report import BuildReport
from hero_jax.data.tokenizers import WordTokenizer


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """Sizes of the synthetic set (defaults: a few CPU minutes of pre-training)."""
  train_videos: int = 512
  val_videos: int = 64
  feature_dim: int = 48
  vocab_words: int = 120
  topic_words: int = 12
  min_frames: int = 12
  max_frames: int = 30
  min_sub_words: int = 3
  max_sub_words: int = 7
  frame_length: float = 1.5
  queries_per_video: int = 2
  noise: float = 0.1
  seed: int = 0

  def __post_init__(self):
    if not 0 < self.min_frames <= self.max_frames:
      raise ValueError(f"SyntheticSpec: need 0 < min_frames <= max_frames, got "
                       f"{self.min_frames}, {self.max_frames}")
    if not 0 < self.min_sub_words <= self.max_sub_words:
      raise ValueError("SyntheticSpec: need 0 < min_sub_words <= max_sub_words")
    if not 0 < self.topic_words <= self.vocab_words:
      raise ValueError("SyntheticSpec: need 0 < topic_words <= vocab_words")

  def num_videos(self, split: str) -> int:
    return {"train": self.train_videos, "val": self.val_videos}[split]


def tokenizer(spec: SyntheticSpec) -> WordTokenizer:
  return WordTokenizer([f"w{i}" for i in range(spec.vocab_words)])


class _World:
  """The fixed parts shared by all videos: word embeddings and the drift."""

  def __init__(self, spec: SyntheticSpec):
    rng = np.random.default_rng([spec.seed, 0])
    self.embeddings = rng.normal(size=(spec.vocab_words, spec.feature_dim)).astype(np.float32)
    self.freqs = rng.uniform(0.05, 0.6, size=spec.feature_dim).astype(np.float32)
    self.phases = rng.uniform(0, 2 * np.pi, size=spec.feature_dim).astype(np.float32)
    self.successor = rng.permutation(spec.vocab_words)

  def sentence(self, rng, topic, length: int) -> np.ndarray:
    """Words that mostly follow their predecessor's fixed successor."""
    words = [int(rng.choice(topic))]
    for _ in range(length - 1):
      follow = rng.random() < 0.7
      words.append(int(self.successor[words[-1]]) if follow else int(rng.choice(topic)))
    return np.asarray(words)

  def drift(self, n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float32)[:, None]
    return 0.7 * np.sin(t * self.freqs + self.phases)


def _split_seed(split: str) -> int:
  return {"train": 1, "val": 2}[split]


def _video(spec: SyntheticSpec, world: _World, split: str, index: int):
  """(vid, frames, subtitle dicts, subtitle words) of one video."""
  rng = np.random.default_rng([spec.seed, _split_seed(split), index])
  n = int(rng.integers(spec.min_frames, spec.max_frames + 1))
  topic = rng.choice(spec.vocab_words, size=spec.topic_words, replace=False)
  frames = world.drift(n) + spec.noise * rng.normal(size=(n, spec.feature_dim)).astype(np.float32)
  subs, words = [], []
  f = int(rng.integers(0, 2))
  fl = spec.frame_length
  while f < n:
    length = int(min(rng.integers(1, 4), n - f))
    w = world.sentence(rng, topic, int(rng.integers(spec.min_sub_words, spec.max_sub_words + 1)))
    frames[f:f + length] += world.embeddings[w].mean(axis=0)
    subs.append({"text": " ".join(f"w{i}" for i in w),
                 "start": round(f * fl + 0.1, 3), "end": round((f + length) * fl - 0.1, 3)})
    words.append(w)
    f += length + int(rng.random() < 0.25)  # an occasional unmatched frame
  return f"synthetic_{split}_{index:06d}", frames, subs, words


def videos(spec: SyntheticSpec, split: str, max_clip_len: int,
           report: BuildReport) -> Iterator[records.VideoRecord]:
  world, tok = _World(spec), tokenizer(spec)
  for i in range(spec.num_videos(split)):
    vid, frames, subs, _ = _video(spec, world, split, i)
    ids = [tok.encode(s["text"]) for s in subs]
    rec = sources.aligned_record(vid, frames, subs, ids, len(frames), spec.frame_length,
                                 "synthetic", report)
    yield sources.finish_video(rec, max_clip_len, report)


def _moments(spec: SyntheticSpec, split: str, stream: int):
  """Per video and query: (vid, frames, subs, words, rng, query number, first
  and last subtitle of a moment of 1-2 consecutive subtitles)."""
  world = _World(spec)
  for i in range(spec.num_videos(split)):
    vid, frames, subs, words = _video(spec, world, split, i)
    rng = np.random.default_rng([spec.seed, _split_seed(split), i, stream])
    for q in range(spec.queries_per_video):
      first = int(rng.integers(0, len(subs)))
      last = min(first + int(rng.integers(0, 2)), len(subs) - 1)
      yield vid, frames, subs, words, rng, q, first, last


def moments(spec: SyntheticSpec, split: str, report: BuildReport) -> Iterator[records.MomentQuery]:
  """TVR-style queries: words of 1-2 consecutive subtitles, their time span."""
  tok = tokenizer(spec)
  for vid, frames, subs, words, rng, q, first, last in _moments(spec, split, 1):
    pool = np.concatenate(words[first:last + 1])
    text = " ".join(f"w{w}" for w in rng.choice(pool, size=min(4, len(pool)), replace=False))
    report.add_query()
    yield records.MomentQuery(
        qid=f"{vid}.q{q}", vid=vid, text=text, token_ids=np.asarray(tok.encode(text), np.int32),
        ts=(subs[first]["start"], subs[last]["end"]),
        duration=len(frames) * spec.frame_length, query_type="synthetic")


QA_ANSWERS = 5


def questions(spec: SyntheticSpec, split: str, report: BuildReport) -> Iterator[records.QaQuery]:
  """TVQA-style questions with five answers (see the module docstring)."""
  tok = tokenizer(spec)
  for vid, _, subs, words, rng, q, first, last in _moments(spec, split, 2):
    pool = np.unique(np.concatenate(words[first:last + 1]))
    if pool.size < 3:
      report.skip("synthetic_moment_too_short", f"{vid}.qa{q}")
      continue
    pool = rng.permutation(pool)
    question, right = pool[:min(3, pool.size - 2)], pool[-2:]
    # Wrong answers: words said nowhere in the video.
    absent = np.setdiff1d(np.arange(spec.vocab_words), np.concatenate(words))
    wrong = [rng.choice(absent, size=2, replace=False) for _ in range(QA_ANSWERS - 1)]
    answer_idx = int(rng.integers(0, QA_ANSWERS))
    answers = wrong[:answer_idx] + [right] + wrong[answer_idx:]
    text = lambda ws: " ".join(f"w{int(w)}" for w in ws)  # noqa: E731
    report.add_query()
    yield records.QaQuery(
        qid=f"{vid}.qa{q}", vid=vid, question=text(question),
        answers=[text(a) for a in answers],
        question_ids=np.asarray(tok.encode(text(question)), np.int32),
        answer_ids=[np.asarray(tok.encode(text(a)), np.int32) for a in answers],
        answer_idx=answer_idx, ts=(subs[first]["start"], subs[last]["end"]))
