"""The device frame bank gives the same batches and the same training as the host-fed path."""


import jax
import numpy as np
import pytest

from configs import common, pretrain_tiny
from hero_jax.data import build, frame_bank, pipeline
from hero_jax.train import loop, sharding
from tests.counting import CountingSource


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  built = build.build("hero_synthetic/videos", str(tmp_path_factory.mktemp("tfds")))
  return built.data_dir


def test_bank_batches_equal_host_batches(synthetic):
  """Every pre-training objective: the bank's rows gathered on the host give
  the host path's frames, every other field is the same."""
  from hero_jax import layout
  sizes = layout.LayoutSizes(max_frames=40, max_rows=16, max_row_frames=12, max_row_tokens=12,
                             queries=2, max_query_tokens=12, max_predictions=24,
                             packed_rows=8, packed_width=48)
  host_videos = pipeline.VideoSource(synthetic, "train", max_clip_len=30)
  bank_videos = pipeline.VideoSource(synthetic, "train", max_clip_len=30, decode_frames=False)
  host_bank, indexes = frame_bank.load_rows({"tv": [host_videos]}, max_clip_len=30)
  assert host_bank.dtype == np.float16 and not host_bank[0].any()
  for objective in ("mlm", "mfm-nce", "fom", "vsm"):
    ctx = pipeline.host_context(host_videos, sizes, queries_per_video=sizes.queries)
    options = pipeline.PipelineOptions(batch_videos=4, seed=3)
    host_it = pipeline.make_pipeline(host_videos, objective, ctx, options, process_index=0,
                                     process_count=1)
    bank_it = pipeline.make_pipeline(bank_videos, objective, ctx, options, process_index=0,
                                     process_count=1, frame_index=indexes["tv"])
    for _ in range(3):
      host, bank = next(host_it), next(bank_it)
      assert set(bank) == set(host) - {"frames"} | {"frame_ids"}, objective
      np.testing.assert_array_equal(host_bank[bank["frame_ids"]].astype(np.float32),
                                    host["frames"], err_msg=objective)
      for key in set(host) - {"frames"}:
        np.testing.assert_array_equal(bank[key], host[key], err_msg=f"{objective} {key}")


def test_bank_rows_cut_to_max_clip_len_and_missing_videos_are_named(synthetic):
  videos = pipeline.VideoSource(synthetic, "val", max_clip_len=5)
  host_bank, indexes = frame_bank.load_rows({"tv": [videos, videos]}, max_clip_len=5)
  index = indexes["tv"]
  assert len(index.rows) == len(videos)  # a video listed twice is stored once
  assert host_bank.shape[0] == 1 + sum(min(videos.video(i).num_frames, 5)
                                       for i in range(len(videos)))
  with pytest.raises(KeyError, match="'nope' is not in the frame bank"):
    index.placeholder("nope")
  with pytest.raises(ValueError, match="config.data.frame_bank: 'on' is not one of"):
    frame_bank.check_config("on", "float16")


def test_builders_record_each_videos_stored_frame_rows(synthetic):
  for split in ("train", "val"):
    videos = pipeline.VideoSource(synthetic, split, max_clip_len=None)
    assert videos.metadata["frame_rows"][split] == [
        len(videos[i]["frames"]) for i in range(len(videos))]


@pytest.mark.parametrize("mode", ["replicated", "sharded"])
def test_bank_laid_out_from_the_metadata_equals_the_one_pass_bank(synthetic, mode):
  """The bank from the recorded frame rows (each host reads only its devices'
  rows) equals the bank read in one pass, and so does the older-build path
  that counts the rows first."""
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "model": 1})
  sources = {"tv": [pipeline.VideoSource(synthetic, "train", max_clip_len=30),
                    pipeline.VideoSource(synthetic, "val", max_clip_len=30)]}
  host_bank, indexes = frame_bank.load_rows(sources, max_clip_len=30)
  bank, got_indexes = frame_bank.load(sources, 30, mesh, mode, "float16")
  assert got_indexes == indexes
  n = host_bank.shape[0]
  assert bank.shape[0] == (-(-n // 8) * 8 if mode == "sharded" else n)
  np.testing.assert_array_equal(np.asarray(bank)[:n], host_bank)
  assert not np.asarray(bank)[n:].any()
  counted = frame_bank.counted_rows(sources)
  assert counted == frame_bank.recorded_rows(sources)
  plan = frame_bank.BankPlan(sources, 30, counted)
  assert plan.indexes == indexes and plan.total == n and not plan.frames


def test_a_host_reads_only_the_records_of_its_devices_rows(synthetic):
  """Process 1 of 2 of a sharded bank over 8 devices holds the last 4 blocks:
  it reads just the records with rows there, and gets the bank's rows."""
  videos = CountingSource(pipeline.VideoSource(synthetic, "train", max_clip_len=30))
  sources = {"tv": [videos]}
  host_bank, _ = frame_bank.load_rows(sources, max_clip_len=30)
  plan = frame_bank.BankPlan(sources, 30, frame_bank.recorded_rows(sources))
  videos.reads.clear()
  size = -(-plan.total // 8)
  blocks = [(b * size, (b + 1) * size) for b in range(4, 8)]
  got = frame_bank.host_blocks(plan, blocks)
  padded = np.concatenate([host_bank, np.zeros((8 * size - plan.total, plan.dim), np.float16)])
  for start, stop in blocks:
    np.testing.assert_array_equal(got[(start, stop)], padded[start:stop])
  first = 4 * size
  assert videos.reads == [v.record for v in plan.videos if v.offset + v.rows > first]
  assert 0 < len(videos.reads) < len(videos)


def test_frame_rows_that_disagree_with_a_record_are_named(synthetic):
  videos = pipeline.VideoSource(synthetic, "train", max_clip_len=30)
  sources = {"tv": [videos]}
  stored = frame_bank.recorded_rows(sources)
  stored[id(videos)] = [n + 1 for n in stored[id(videos)]]
  plan = frame_bank.BankPlan(sources, 30, stored)
  with pytest.raises(ValueError, match=f"video {videos.video_ids[0]!r} has frames .* "
                     "frame_rows .* rebuild the dataset"):
    frame_bank.host_blocks(plan, [(0, plan.total)])


@pytest.mark.parametrize("mode", ["replicated", "sharded"])
def test_placed_bank_gathers_the_rows_on_a_mesh(mode):
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "model": 1})
  rows = np.random.default_rng(0).normal(size=(13, 6)).astype(np.float16)
  bank = frame_bank.place(rows, mesh, mode, "float16")
  assert bank.shape[0] == (16 if mode == "sharded" else 13)
  ids = np.random.default_rng(1).integers(0, 13, size=(8, 5)).astype(np.int32)
  batch = pipeline.make_global_batch({"frame_ids": ids}, sharding.batch_sharding(mesh))
  gathered = jax.jit(frame_bank.device_frames)(batch, bank)["frames"]
  np.testing.assert_array_equal(np.asarray(gathered), rows[ids].astype(np.float32))


def tiny_config(tmp_path, bank: str, devices: int):
  c = pretrain_tiny.get_config()
  c.data.datasets.synthetic.data_dir = str(tmp_path / "tfds")
  c.data.synthetic.train_videos, c.data.synthetic.val_videos = 32, 8
  c.data.frame_bank = bank
  # The objective that reads frames most: as input and as targets (MFM-NCE).
  common.use_objectives(c, mfm_nce=1.0)
  c.train.num_steps, c.train.batch_videos = 6, 8
  c.log_every, c.eval_every, c.checkpoint_every = 1, 0, 6
  c.mesh.num_devices = devices
  return c


@pytest.mark.slow
def test_training_on_a_sharded_bank_equals_the_host_path(tmp_path):
  """Six MFM-NCE steps on 2 devices, the bank's rows split over both: the same
  losses and parameters as the host path, bit for bit."""
  def run(mode):
    trainer = loop.Trainer(tiny_config(tmp_path, mode, devices=2), str(tmp_path / mode))
    last = trainer.train()
    assert (trainer.frame_bank is None) == (mode == "off")
    return last, jax.device_get(trainer.state.params)
  host_last, host_params = run("off")
  bank_last, bank_params = run("sharded")
  losses = {k: v for k, v in host_last.items() if k.startswith("train/") and "loss" in k}
  assert losses and {k: bank_last[k] for k in losses} == losses
  jax.tree.map(np.testing.assert_array_equal, bank_params, host_params)
