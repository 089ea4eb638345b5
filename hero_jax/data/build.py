"""Builds a hero_jax TFDS dataset through the Python API (no TensorFlow needed).

  python -m hero_jax.data.build --dataset hero_tv/videos --manual_dir ~/hero_data \\
      --data_dir ~/tensorflow_datasets
  python -m hero_jax.data.build --dataset hero_tv/tvr --manual_dir ~/hero_data ...
  python -m hero_jax.data.build --dataset hero_synthetic/videos --data_dir /tmp/tfds

Prints the validation report of every split and writes it to
``<data_dir>/<name>/<config>/<version>/build_report.json``. A build whose data
is plainly broken stops with an error and leaves no dataset behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from absl import app, flags
from etils import epath

BUILDERS = ("hero_tv", "hero_howto100m", "hero_synthetic")
REPORT_FILE = "build_report.json"


def builder_class(name: str):
  """The builder class of ``name`` (imports its module, which registers it)."""
  import importlib
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; known: {list(BUILDERS)}")
  module = importlib.import_module(f"tfds_builders.{name}")
  classes = [v for v in vars(module).values()
             if isinstance(v, type) and getattr(v, "name", None) == name]
  return classes[0]


class _EpathGfile:
  """The three ``tf.io.gfile`` calls of TFDS's shuffler, on etils.epath."""

  @staticmethod
  def GFile(path, mode="r"):  # noqa: N802  (tf's name)
    return epath.Path(path).open(mode)

  @staticmethod
  def exists(path) -> bool:
    return epath.Path(path).exists()

  @staticmethod
  def remove(path) -> None:
    epath.Path(path).unlink()


class _TensorflowForShuffler:
  """What ``tensorflow_datasets.core.shuffle`` reads of ``tf``."""
  io = type("io", (), {"gfile": _EpathGfile})

  class errors:  # noqa: N801
    class ResourceExhaustedError(OSError):
      """Raised by TensorFlow's files only; never by epath's."""
      message = ""


def spill_without_tensorflow() -> None:
  """Lets a split of more than 1 GB be written without TensorFlow.

  TFDS writes every split through its shuffler (ours with shuffling off,
  for the generation order), which keeps records in memory up to 1 GB and
  then spills them to bucket files through ``tf.io.gfile``: with no
  TensorFlow installed that fails, e.g. on the TV set's 10 GB. The buckets
  are plain files; without TensorFlow the shuffler gets epath's."""
  try:
    import tensorflow  # noqa: F401
    return
  except ImportError:
    from tensorflow_datasets.core import shuffle
    shuffle.tf = _TensorflowForShuffler


def build(dataset: str, data_dir: str, *, manual_dir: Optional[str] = None,
          tokenizer: Optional[str] = None, beam_flags=(), **options):
  """Builds ``<name>/<config>`` into ``data_dir``; returns the builder.

  ``options`` go to the builder (``feature_dim``, ``frame_length``,
  ``max_clip_len``; ``spec`` for hero_synthetic). ``tokenizer`` is a
  ``hero_jax.data.tokenizers.load_tokenizer`` spec (raw layouts only).
  ``beam=True`` (hero_howto100m) runs the generation on Apache Beam with
  ``beam_flags`` (e.g. ``["--runner=DirectRunner", "--direct_num_workers=4"]``).
  """
  import tensorflow_datasets as tfds
  from hero_jax.data.tokenizers import load_tokenizer
  name, _, config = dataset.partition("/")
  cls = builder_class(name)
  configs = [c.name for c in cls.BUILDER_CONFIGS]
  if config not in configs:
    raise ValueError(f"{name}: unknown config {config!r}; known: {configs}")
  if tokenizer:
    options["tokenizer"] = load_tokenizer(tokenizer)
  builder = cls(config=config, data_dir=data_dir, file_format="array_record", **options)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
  if manual_dir and not os.path.isdir(os.path.expanduser(manual_dir)):
    raise FileNotFoundError(f"manual_dir {manual_dir} does not exist")
  if getattr(builder, "beam", False):
    import apache_beam as beam
    download_config.beam_options = beam.options.pipeline_options.PipelineOptions(
        flags=list(beam_flags))
  spill_without_tensorflow()
  builder.download_and_prepare(download_config=download_config)
  if getattr(builder, "beam", False):
    finish_beam_build(builder)
  if builder.reports:   # through epath: data_dir may be a bucket
    (epath.Path(builder.data_dir) / REPORT_FILE).write_text(json.dumps(
        {split: r.summary() for split, r in builder.reports.items()}, indent=1))
  return builder


def finish_beam_build(builder) -> None:
  """What Beam cannot keep: the record order (video ids) and the report, from a scan.

  Refuses (and removes) a build with no usable video, like the in-process builds.
  """
  from hero_jax.data import records
  from hero_jax.data.report import BrokenDataError
  counts = dict(getattr(builder, "beam_counts", {}))
  ids, rows = {}, {}
  for split in builder.info.splits:
    report = builder._report(split)
    source = builder.as_data_source(split)
    ids[split], rows[split] = [], []
    for i in range(len(source)):
      rec = records.record_from_example(source[i])
      ids[split].append(rec.vid)
      rows[split].append(len(rec.frames))
      report.add_video(rec)
  for name, n in counts.items():  # Beam counters cover all splits together
    kind, _, reason = name.partition(":")
    target = builder._report("all_splits")
    (target.skipped if kind == "skipped" else target.notes)[reason] += n
  try:
    for split in builder.info.splits:
      builder.reports[split].check_videos()
  except BrokenDataError:
    if epath.Path(builder.data_dir).exists():
      epath.Path(builder.data_dir).rmtree()
    raise
  builder.info.metadata["video_ids"] = ids
  builder.info.metadata["frame_rows"] = rows
  builder.info.write_to_directory(builder.data_dir)
  for report in builder.reports.values():
    print(report.format())


def read_report(dataset_dir: str) -> Optional[dict]:
  """The build report stored next to a built dataset (None if absent)."""
  path = epath.Path(dataset_dir) / REPORT_FILE
  if not path.exists():
    return None
  return json.loads(path.read_text())


FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "<builder>/<config>, e.g. hero_tv/videos, hero_tv/tvr, "
                    "hero_howto100m/videos, hero_synthetic/videos.")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "Output root.")
flags.DEFINE_string("manual_dir", None, "Folder with the source data (see the README).")
flags.DEFINE_string("tokenizer", None, "roberta:<dir with vocab.json, merges.txt> | "
                    "sentencepiece:<file.model> | words:<file.txt> (raw layout only).")
flags.DEFINE_integer("feature_dim", None, "Frame feature size (default: the builder's).")
flags.DEFINE_float("frame_length", None, "Seconds per frame (default: the builder's).")
flags.DEFINE_integer("max_clip_len", 100, "Videos longer than this are noted in the report.")
flags.DEFINE_integer("synthetic_train_videos", None, "hero_synthetic: train videos.")
flags.DEFINE_integer("synthetic_val_videos", None, "hero_synthetic: val videos.")
flags.DEFINE_integer("synthetic_seed", None, "hero_synthetic: seed.")
flags.DEFINE_bool("beam", False, "hero_howto100m/videos (raw layout): generate with Apache Beam.")
flags.DEFINE_list("beam_flags", [], "Beam pipeline flags, e.g. --runner=DataflowRunner,...")


def synthetic_spec_from_flags():
  from hero_jax.data import synthetic
  changes = {k: v for k, v in {
      "train_videos": FLAGS.synthetic_train_videos, "val_videos": FLAGS.synthetic_val_videos,
      "seed": FLAGS.synthetic_seed, "feature_dim": FLAGS.feature_dim}.items() if v is not None}
  return dataclasses.replace(synthetic.SyntheticSpec(), **changes)


def main(argv):
  del argv
  if not FLAGS.dataset:
    raise app.UsageError("--dataset is required, e.g. --dataset hero_tv/videos")
  options = {"max_clip_len": FLAGS.max_clip_len}
  if FLAGS.dataset.startswith("hero_synthetic"):
    options["spec"] = synthetic_spec_from_flags()
  else:
    options.update({k: v for k, v in {"feature_dim": FLAGS.feature_dim,
                                      "frame_length": FLAGS.frame_length}.items() if v})
  if FLAGS.beam:
    options.update(beam=True)
  builder = build(FLAGS.dataset, FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                  tokenizer=FLAGS.tokenizer, beam_flags=FLAGS.beam_flags, **options)
  print(f"built {FLAGS.dataset} in {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
