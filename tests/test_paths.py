"""gs:// paths through etils.epath: converter files, converted checkpoints, dataset lookup, and
the errors for a bucket that cannot be used (offline, through ``tests/fake_gcs.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from hero_jax import paths
from tests.fake_gcs import fake_gcs


def test_converter_files_and_checkpoints_in_a_bucket(tmp_path):
  from hero_jax.convert import checkpoint, files
  from hero_jax.model.config import tiny_config
  from hero_jax.model.params import init_params
  sd = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)}
  cfg = tiny_config(cross_layers=1, temporal_layers=1)
  params = init_params(cfg, 0)
  with fake_gcs(tmp_path / "root"):
    for name in ("sd.npz", "sd.pt"):
      files.save_state_dict(sd, f"gs://b/conv/{name}")
      back = files.load_state_dict(f"gs://b/conv/{name}")
      for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v)
    checkpoint.save_hero_checkpoint("gs://b/ck", params, cfg)
    restored, cfg_back = checkpoint.load_hero_checkpoint("gs://b/ck")
  assert cfg_back == cfg
  assert (tmp_path / "root/b/conv/sd.npz").is_file() and (tmp_path / "root/b/ck").is_dir()
  np.testing.assert_array_equal(
      np.asarray(restored["v_encoder"]["f_encoder"]["embeddings"]["word_embeddings"]["embedding"]),
      np.asarray(params["v_encoder"]["f_encoder"]["embeddings"]["word_embeddings"]["embedding"]))


def test_dataset_lookup_in_a_bucket(tmp_path):
  from hero_jax.data import build, pipeline, synthetic
  root = tmp_path / "root"
  build.build("hero_synthetic/videos", str(root / "b" / "tfds"),
              spec=synthetic.SyntheticSpec(train_videos=4, val_videos=2, feature_dim=8))
  with fake_gcs(root):
    path = pipeline.dataset_dir("gs://b/tfds", "hero_synthetic/videos")
    assert path.startswith("gs://b/tfds/hero_synthetic/videos/")
    with pytest.raises(FileNotFoundError, match="no built dataset 'hero_synthetic/tvr' in gs://b/tfds"):
      pipeline.dataset_dir("gs://b/tfds", "hero_synthetic/tvr")


def test_a_bucket_that_cannot_be_written_is_named(tmp_path):
  from etils.epath import testing

  def refuse(fn, path, *args, **kwargs):
    del fn, args, kwargs
    raise PermissionError(f"403 Forbidden: {path}")

  with testing.mock_epath(mkdir=refuse, makedirs=refuse):
    with pytest.raises(OSError, match=r"--workdir gs://nobody/run: cannot create or reach it "
                                      r"\(PermissionError: 403 Forbidden"):
      paths.workdir("gs://nobody/run")
  assert paths.workdir(tmp_path / "w").is_dir()
  assert str(paths.resolve("~/x")).startswith("/") and paths.is_remote("gs://a/b")
