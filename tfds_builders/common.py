"""What the three builders share: configs, features, metadata, reports.

A builder has one config per record kind: ``videos`` (pre-training videos
with subtitles and alignment), and query configs (``tvr``/``how2r`` moments,
``tvqa``/``how2qa`` questions) that hold video ids, joined to ``videos`` at
load time. Records are written in generation order (``disable_shuffling``)
so that the video ids in the metadata give each record's index.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import tensorflow_datasets as tfds

from hero_jax.data import records
from hero_jax.data.report import BuildReport

MOMENTS, QA, VIDEOS = "moments", "qa", "videos"


@dataclasses.dataclass
class HeroConfig(tfds.core.BuilderConfig):
  kind: str = VIDEOS


class HeroBuilder(tfds.core.GeneratorBasedBuilder):
  """Base: subclasses set the configs, defaults and ``_split_generators``.

  Build options (constructor keywords, set by ``hero_jax.data.build``):
    feature_dim: frame feature size; a source with another size is refused.
    tokenizer: a ``hero_jax.data.tokenizers.Tokenizer`` for raw sources.
    frame_length: seconds per frame of the features.
    max_clip_len: videos longer than this are kept whole but noted (the cut
      happens at load time).
  """
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  DEFAULT_FEATURE_DIM = 4352
  DEFAULT_FRAME_LENGTH = 1.5

  def __init__(self, *, feature_dim: Optional[int] = None, tokenizer=None,
               frame_length: Optional[float] = None, max_clip_len: int = 100, **kwargs):
    self.feature_dim = int(feature_dim or self.DEFAULT_FEATURE_DIM)
    self.tokenizer = tokenizer
    self.frame_length = float(frame_length or self.DEFAULT_FRAME_LENGTH)
    self.max_clip_len = int(max_clip_len)
    self.reports: dict = {}
    self.video_ids: dict = {}
    self.frame_rows: dict = {}   # stored frame rows per record: the frame bank's layout
    self.special_ids: Optional[dict] = None
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    kind = self.builder_config.kind
    features = {VIDEOS: lambda: records.video_features(self.feature_dim),
                MOMENTS: records.moment_features, QA: records.qa_features}[kind]()
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=features,
        homepage="https://github.com/linjieli222/HERO",
        # Generation order, so the metadata's video ids give each record's
        # index; Beam builds cannot keep an order (their ids come from a scan).
        disable_shuffling=not getattr(self, "beam", False),
        metadata=tfds.core.MetadataDict(), citation=CITATION)

  def _generate_examples(self, **kwargs):
    # Required by the TFDS base class; our _split_generators return the
    # example generators directly (one per split), so this is never called.
    raise NotImplementedError("HeroBuilder splits come from _split_generators")

  # --- helpers for subclasses -------------------------------------------------

  def _report(self, split: str) -> BuildReport:
    return self.reports.setdefault(split, BuildReport(f"{self.name}/{self.builder_config.name}"
                                                      f"[{split}]"))

  def _set_meta(self, special_ids: dict, tokenizer_name: str) -> None:
    self.special_ids = dict(special_ids)
    self.info.metadata.update({
        "special_ids": dict(special_ids), "tokenizer": tokenizer_name,
        "feature_dim": self.feature_dim, "frame_length": self.frame_length,
        "kind": self.builder_config.kind})

  def _set_video_index(self, index) -> None:
    """Query configs: the data's global video index per split (None: none)."""
    if index is not None:
      self.info.metadata["video_index"] = index

  def _video_examples(self, split: str, recs):
    """(key, example) of stored videos; refuses a split with no usable video."""
    report, ids = self._report(split), self.video_ids.setdefault(split, [])
    rows = self.frame_rows.setdefault(split, [])
    for rec in recs:
      ids.append(rec.vid)
      rows.append(len(rec.frames))
      yield rec.vid, records.encode_video(rec)
    self.info.metadata["video_ids"] = self.video_ids
    self.info.metadata["frame_rows"] = self.frame_rows
    print(report.format())
    report.check_videos()

  def _query_examples(self, split: str, queries, encode):
    report = self._report(split)
    for q in queries:
      yield q.qid, encode(q)
    print(report.format())
    report.check_queries()

  def _require_tokenizer(self):
    if self.tokenizer is None:
      raise ValueError(f"{self.name}: the raw layout is tokenized at build time; pass a "
                       "tokenizer (hero_jax.data.build --tokenizer roberta:<dir> | "
                       "sentencepiece:<file.model>)")
    return self.tokenizer


def source_format(manual_dir) -> str:
  """'release' (video_db + txt_db) or 'raw' (features/ + JSONL)."""
  manual_dir = os.fspath(manual_dir)
  if os.path.isdir(os.path.join(manual_dir, "txt_db")):
    return "release"
  if os.path.isdir(os.path.join(manual_dir, "features")):
    return "raw"
  raise FileNotFoundError(
      f"manual_dir {manual_dir}: found neither txt_db/ + video_db/ (HERO release layout) nor "
      "features/ (raw layout); see the builder's MANUAL_DOWNLOAD_INSTRUCTIONS")


CITATION = """@inproceedings{li2020hero,
  title={HERO: Hierarchical Encoder for Video+Language Omni-representation Pre-training},
  author={Li, Linjie and Chen, Yen-Chun and Cheng, Yu and Gan, Zhe and Yu, Licheng and Liu, Jingjing},
  booktitle={EMNLP}, year={2020}}"""

MANUAL_LAYOUTS = """\
Two layouts are accepted in manual_dir (the format is detected):

(a) HERO's release layout, as its download scripts unpack it:
    video_db/<dataset>/id2nframe.json
    video_db/<dataset>/resnet_slowfast_<frame_length>[_compressed]/   (LMDB)
    txt_db/<dataset>_subtitles.db/      (LMDB + meta.json, vid2len.json, ...)
    txt_db/<task>_<split>.db/           (query LMDBs: tvr_train.db, tvqa_val.db, ...)
    txt_db/pretrain_splits/<dataset>_<split>.json
  The released token ids and alignment are kept.

(b) raw: features you extracted plus annotation files:
    features/<vid>.npz      'features' [n, D] or 'resnet' + 'slowfast'
    subtitles.jsonl         {"vid_name", "sub": [{"text", "start", "end"}]} per line
                            (HowTo100M: or captions.json = raw_caption.json)
    vid2nframe.json         optional; splits/<split>.json optional
    <task>_<split>.jsonl    TVR/How2R or TVQA/How2QA annotation lines
  Text is tokenized at build time (--tokenizer).
"""
