"""The datasets a training config names, opened and checked against the model.

An entry of ``config.data.datasets`` is a built dataset ``<data_dir>/<name>``
(a local folder or a bucket); a query dataset (``videos`` set) is joined onto
every split of the videos dataset it refers to. The synthetic set is built on
first use, so the embedded default needs no download.
"""

from __future__ import annotations

import dataclasses
import json

from hero_jax import paths
from hero_jax.data import pipeline


def _synthetic_spec(config):
  from hero_jax.data import synthetic
  return dataclasses.replace(synthetic.SyntheticSpec(), **dict(config.data.synthetic))


def _check_synthetic_spec(folder: str, config) -> None:
  """A synthetic set built earlier must be the one ``config.data.synthetic``
  describes: another spec's set in the same folder would be used silently."""
  built = json.loads((paths.resolve(folder) / "metadata.json").read_text()).get("synthetic_spec")
  wanted = dataclasses.asdict(_synthetic_spec(config))
  differ = {k: (built.get(k), v) for k, v in wanted.items() if built and built.get(k) != v}
  if differ:
    fields = ", ".join(f"{k}: built {b!r}, config {w!r}" for k, (b, w) in sorted(differ.items()))
    raise ValueError(f"{folder} was built from another synthetic spec than "
                     f"config.data.synthetic ({fields}); give the dataset another data_dir, "
                     "or remove the folder to rebuild it")


def dataset_dir(name: str, data_dir: str, config) -> str:
  """A built dataset's folder; the synthetic set is built on first use (and
  checked against ``config.data.synthetic`` when it exists)."""
  synthetic = name.startswith("hero_synthetic/")
  if synthetic:
    _build_once(name, data_dir, config)
  folder = pipeline.dataset_dir(data_dir, name)
  if synthetic:
    _check_synthetic_spec(folder, config)
  return folder


def _build_once(name: str, data_dir: str, config) -> None:
  """Builds the synthetic set unless a build is there. The processes of a
  multi-process run may all build it (a shared folder): TFDS builds into a
  temporary folder renamed at the end, so the first to finish is kept and the
  others, whose rename fails, use it."""
  try:
    pipeline.dataset_dir(data_dir, name)
    return
  except FileNotFoundError:
    pass
  from hero_jax.data import build
  try:
    build.build(name, str(paths.resolve(data_dir)), spec=_synthetic_spec(config))
  except OSError as e:   # the final rename: another process's build got there first
    try:
      pipeline.dataset_dir(data_dir, name)
    except FileNotFoundError:
      raise e from None


def open_split(entry, split: str, config, decode_frames: bool = True):
  """The split of a dataset entry: a ``VideoSource``, or for a query dataset
  (an entry with ``videos``) a ``QueryJoin`` onto every split of its videos.
  ``decode_frames=False``: frame features left undecoded (frame-bank runs)."""
  data_dir = entry["data_dir"]
  if not entry["videos"]:
    return pipeline.VideoSource(dataset_dir(entry["name"], data_dir, config), split,
                                config.data.max_clip_len, decode_frames)
  corpus = pipeline.VideoCorpus(dataset_dir(entry["videos"], data_dir, config),
                                config.data.max_clip_len, decode_frames)
  queries = pipeline.QuerySource(dataset_dir(entry["name"], data_dir, config), split)
  return pipeline.QueryJoin(queries, corpus)


def check_fits_model(videos, cfg) -> None:
  """The data's frame features and token ids fit the model's tables."""
  if videos.feature_dim != cfg.frame_feat_dim:
    raise ValueError(f"{videos.path}: frame features have dim {videos.feature_dim}, the model "
                     f"config.model.frame_feat_dim is {cfg.frame_feat_dim}")
  ids = videos.special_ids
  top = max(ids.cls, ids.sep, ids.pad, ids.unk, ids.mask, ids.v_range[1] - 1)
  if top >= cfg.vocab_size:
    raise ValueError(f"{videos.path}: token ids reach {top}, the model's "
                     f"config.model.vocab_size is {cfg.vocab_size}")


def bank_sources(entry, split: str, config) -> list:
  """The ``VideoSource``s (frames decoded) whose frames a split's frame bank
  holds: the split itself, or for a query dataset every split of its videos."""
  source = open_split(entry, split, config)
  return list(source.videos.splits.values()) if entry["videos"] else [source]


def open_checked(entry, split: str, config, cfg, decode_frames: bool = True):
  """``open_split``, then ``check_fits_model``: what the training loop reads."""
  source = open_split(entry, split, config, decode_frames)
  check_fits_model(source, cfg)
  return source
