"""hero_tv: TV pre-training videos (TVR/TVQA clips) and the TVR and TVQA queries."""

from __future__ import annotations

import os

from hero_jax.data import raw, records, release, sources
from tfds_builders import common

DATASET = "tv"


class HeroTv(common.HeroBuilder):
  """TV show clips with ResNet+SlowFast frame features and subtitles (HERO's pre-training set).

  Configs: ``videos`` (frames, subtitles, alignment), ``tvr`` (moment queries),
  ``tvqa`` (questions with five answers). Queries hold video ids.
  """
  BUILDER_CONFIGS = [
      common.HeroConfig(name="videos", kind=common.VIDEOS,
                        description="Videos: float16 frame features, subtitles, alignment."),
      common.HeroConfig(name="tvr", kind=common.MOMENTS, description="TVR moment queries."),
      common.HeroConfig(name="tvqa", kind=common.QA, description="TVQA questions."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.MANUAL_LAYOUTS + """
For TV, <dataset> is 'tv' and <task> is 'tvr' or 'tvqa'. HERO's download
scripts (scripts/download_tv_pretrain.sh, download_tvr.sh, download_tvqa.sh of
the original repository) produce layout (a).
"""
  QUERY_TASKS = {"tvr": "tvr", "tvqa": "tvqa"}

  def _split_generators(self, dl_manager):
    return split_generators(self, os.fspath(dl_manager.manual_dir), DATASET, self.QUERY_TASKS)


def split_generators(builder: common.HeroBuilder, manual_dir: str, dataset: str,
                     query_tasks: dict, clip_seconds=None) -> dict:
  """The splits of a TV-like builder from either manual layout."""
  fmt = common.source_format(manual_dir)
  kind = builder.builder_config.kind
  if fmt == "release":
    if kind == common.VIDEOS:
      sub_db = release.ReleaseTxtDb(
          os.path.join(manual_dir, "txt_db", f"{dataset}_subtitles.db"), "subtitles")
      builder._set_meta(release.special_ids(sub_db.meta), str(sub_db.meta.get("tokenizer", "")))
      splits = release.video_splits(manual_dir, dataset, sub_db.keys())
      return {split: builder._video_examples(split, release.read_videos(
          manual_dir, dataset, vids, feature_dim=builder.feature_dim,
          feat_version="resnet_slowfast", frame_length=builder.frame_length,
          max_clip_len=builder.max_clip_len, report=builder._report(split)))
              for split, vids in splits.items()}
    task = query_tasks[builder.builder_config.name]
    known = set(release.ReleaseVideoDb(manual_dir, dataset, "resnet_slowfast",
                                       builder.frame_length).id2nframe)
    dbs = release.query_splits(manual_dir, task)
    meta = release.ReleaseTxtDb(next(iter(dbs.values())), "queries").meta
    builder._set_meta(release.special_ids(meta), str(meta.get("tokenizer", "")))
    builder._set_video_index(sources.read_video_index(
        [os.path.join(manual_dir, "txt_db", f"{dataset}_subtitles.db"), manual_dir]))
    read, encode = ((release.read_moments, records.encode_moment) if kind == common.MOMENTS
                    else (release.read_qa, records.encode_qa))
    return {split: builder._query_examples(split, read(path, known, builder._report(split)),
                                           encode)
            for split, path in dbs.items()}

  tok = builder._require_tokenizer()
  builder._set_meta(tok.special_ids(), tok.name)
  if kind == common.VIDEOS:
    videos = raw.RawVideos(manual_dir)
    splits = raw.video_splits(manual_dir, videos.files)
    return {split: builder._video_examples(split, videos.records(
        vids, tok, feature_dim=builder.feature_dim,
        frame_length=builder.frame_length, max_clip_len=builder.max_clip_len,
        report=builder._report(split), clip_seconds=clip_seconds))
            for split, vids in splits.items()}
  task = query_tasks[builder.builder_config.name]
  known = set(raw.feature_files(manual_dir))
  builder._set_video_index(sources.read_video_index([manual_dir]))
  if clip_seconds is not None:
    known = ClipNames(known)
  read, encode = ((raw.read_moments, records.encode_moment) if kind == common.MOMENTS
                  else (raw.read_qa, records.encode_qa))
  return {split: builder._query_examples(split, read(path, tok, known, builder._report(split)),
                                         encode)
          for split, path in raw.query_splits(manual_dir, task).items()}



class ClipNames:
  """Membership of clip names ``<vid>.<k>`` given the whole videos' names."""

  def __init__(self, vids: set):
    self.vids = vids

  def __contains__(self, name: str) -> bool:
    return name.rsplit(".", 1)[0] in self.vids
