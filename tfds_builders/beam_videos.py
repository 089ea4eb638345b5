"""Generating a raw videos config with Apache Beam (optional: ``pip install -e '.[beam]'``).

Each worker loads the raw layout's index once (``RawVideos``) and turns video
names into stored records. Skips and notes become Beam counters (namespace
``hero_jax``, names ``skipped:<reason>`` / ``note:<event>``) that the builder
reads from the pipeline result; the rest of the report and the record order
(Beam does not keep it) come from a scan of the built data
(``hero_jax.data.build.finish_beam_build``).
"""

from __future__ import annotations

from hero_jax.data import raw, records
from hero_jax.data.report import BuildReport

NAMESPACE = "hero_jax"


def split_transforms(builder, manual_dir: str, clip_seconds) -> dict:
  import apache_beam as beam
  tok = builder._require_tokenizer()
  builder._set_meta(tok.special_ids(), tok.name)
  splits = raw.video_splits(manual_dir, raw.feature_files(manual_dir))
  options = dict(manual_dir=manual_dir, tokenizer=tok, feature_dim=builder.feature_dim,
                 frame_length=builder.frame_length, max_clip_len=builder.max_clip_len,
                 clip_seconds=clip_seconds)
  return {split: beam.Create(vids) | f"records_{split}" >> beam.ParDo(_RecordsFn(**options))
          for split, vids in splits.items()}


def _dofn_base():
  import apache_beam as beam
  return beam.DoFn


class _RecordsFn(_dofn_base()):
  """video name -> (key, stored example) of each of its clips."""

  def __init__(self, *, manual_dir, tokenizer, feature_dim, frame_length, max_clip_len,
               clip_seconds):
    super().__init__()
    self.manual_dir, self.tokenizer = manual_dir, tokenizer
    self.options = dict(feature_dim=feature_dim, frame_length=frame_length,
                        max_clip_len=max_clip_len, clip_seconds=clip_seconds)
    self.videos = None

  def setup(self):
    self.videos = raw.RawVideos(self.manual_dir)

  def process(self, vid):
    from apache_beam.metrics import Metrics
    report = BuildReport("beam")
    for rec in self.videos.records([vid], self.tokenizer, report=report, **self.options):
      yield rec.vid, records.encode_video(rec)
    for reason, n in report.skipped.items():
      Metrics.counter(NAMESPACE, f"skipped:{reason}").inc(n)
    for event, n in report.notes.items():
      Metrics.counter(NAMESPACE, f"note:{event}").inc(n)


def counters(pipeline_result) -> dict:
  """{'skipped:<reason>' | 'note:<event>': count} of a finished pipeline."""
  from apache_beam.metrics.metric import MetricsFilter
  result = pipeline_result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
  return {c.key.metric.name: int(c.committed or c.attempted or 0) for c in result["counters"]}
