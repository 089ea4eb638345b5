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
  ``beam=True`` generates the raw ``videos`` config with Apache Beam
  (``pip install -e '.[beam]'``): 1.2 M videos are beyond one machine.
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

  def __init__(self, *, beam: bool = False, **kwargs):
    self.beam = beam
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    fmt = common.source_format(manual_dir)
    if self.beam:
      if fmt != "raw" or self.builder_config.kind != common.VIDEOS:
        raise ValueError("hero_howto100m: beam=True builds the 'videos' config of a raw layout; "
                         f"got config {self.builder_config.name!r} of a {fmt} layout")
      from tfds_builders import beam_videos  # needs apache_beam: only imported here
      return beam_videos.split_transforms(self, manual_dir, CLIP_SECONDS)
    clip = CLIP_SECONDS if fmt == "raw" else None
    return hero_tv.split_generators(self, manual_dir, DATASET, self.QUERY_TASKS, clip)

  def _process_pipeline_result(self, pipeline_result):
    from tfds_builders import beam_videos
    self.beam_counts = beam_videos.counters(pipeline_result)
