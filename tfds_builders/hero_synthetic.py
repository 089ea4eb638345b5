"""hero_synthetic: the embedded default, TV-like videos generated on the fly (no download)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from hero_jax.data import records, synthetic
from tfds_builders import common


class HeroSynthetic(common.HeroBuilder):
  """Synthetic TV-like videos whose structure every HERO objective can learn.

  Configs: ``videos`` (train/val), ``tvr`` (moment queries on them) and
  ``qa`` (questions with five answers). Sizes
  come from ``hero_jax.data.synthetic.SyntheticSpec`` (constructor keyword
  ``spec``); the spec is recorded in the metadata.
  """
  BUILDER_CONFIGS = [
      common.HeroConfig(name="videos", kind=common.VIDEOS, description="Synthetic videos."),
      common.HeroConfig(name="tvr", kind=common.MOMENTS, description="Synthetic moment queries."),
      common.HeroConfig(name="qa", kind=common.QA,
                        description="Synthetic TVQA-style questions with five answers."),
  ]

  def __init__(self, *, spec: Optional[synthetic.SyntheticSpec] = None, **kwargs):
    self.spec = spec or synthetic.SyntheticSpec()
    kwargs.setdefault("feature_dim", self.spec.feature_dim)
    kwargs.setdefault("frame_length", self.spec.frame_length)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    tok = synthetic.tokenizer(self.spec)
    self._set_meta(tok.special_ids(), tok.name)
    self.info.metadata["synthetic_spec"] = dataclasses.asdict(self.spec)
    if self.builder_config.kind == common.VIDEOS:
      return {split: self._video_examples(split, synthetic.videos(
          self.spec, split, self.max_clip_len, self._report(split)))
              for split in ("train", "val")}
    if self.builder_config.kind == common.QA:
      return {split: self._query_examples(split, synthetic.questions(
          self.spec, split, self._report(split)), records.encode_qa)
              for split in ("train", "val")}
    return {split: self._query_examples(split, synthetic.moments(
        self.spec, split, self._report(split)), records.encode_moment)
            for split in ("train", "val")}
