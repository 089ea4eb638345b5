"""hero_howto100m: HowTo100M clips with ASR captions, plus How2R and How2QA queries."""

from __future__ import annotations

import os

from tfds_builders import common, hero_tv

DATASET = "howto100m"
CLIP_SECONDS = 60.0


class HeroHowto100m(common.HeroBuilder):
  """HowTo100M instructional videos cut into 60 s clips (keys ``<vid>.<k>``) with ASR captions.

  Configs: ``videos``, ``how2r`` (moment queries), ``how2qa`` (questions).
  Whole videos of the raw layout are cut as HERO's ``convert_videodb.py
  --clip_interval 60`` does; release-layout LMDBs already hold the clips.
  """
  BUILDER_CONFIGS = [
      common.HeroConfig(name="videos", kind=common.VIDEOS,
                        description="60 s clips: float16 features, ASR captions, alignment."),
      common.HeroConfig(name="how2r", kind=common.MOMENTS, description="How2R moment queries."),
      common.HeroConfig(name="how2qa", kind=common.QA, description="How2QA questions."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.MANUAL_LAYOUTS + """
For HowTo100M, <dataset> is 'howto100m' and <task> is 'how2r' or 'how2qa'.
HERO never released HowTo100M features: extract them with
HERO_Video_Feature_Extractor (one feature per 2 s by default) into layout (b);
captions.json is HowTo100M's raw_caption.json. How2R / How2QA annotations come
from the VALUE benchmark; convert them to TVR / TVQA-style JSONL lines.
"""
  DEFAULT_FRAME_LENGTH = 2.0
  QUERY_TASKS = {"how2r": "how2r", "how2qa": "how2qa"}

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    clip = CLIP_SECONDS if common.source_format(manual_dir) == "raw" else None
    return hero_tv.split_generators(self, manual_dir, DATASET, self.QUERY_TASKS, clip)
