"""The device example bank holds the host path's examples, its index stream covers every
video once an epoch and resumes exactly, and a run trains from it and resumes its position."""

import jax
import numpy as np
import pytest

from configs import common, pretrain_tiny
from hero_jax import layout, packing as packing_lib
from hero_jax.data import build, example_bank, frame_bank, pipeline
from hero_jax.objectives import registry
from hero_jax.train import loop, sharding, step as step_lib

SIZES = layout.LayoutSizes(max_frames=32, max_rows=24, max_row_frames=4, max_row_tokens=9,
                           queries=2, max_query_tokens=9, max_predictions=40,
                           packed_rows=12, packed_width=48)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  return build.build("hero_synthetic/videos", str(tmp_path_factory.mktemp("tfds"))).data_dir


@pytest.mark.parametrize("objective,group", [
    ("mlm-device", 1), ("mfm-nce-device", 1), ("fom-device", 1), ("vsm-device", 1),
    ("mlm-device", 2), ("vsm-device", 2)])
def test_bank_examples_are_the_host_paths(synthetic, objective, group):
  """Bank rows, gathered in a jitted step on a sharded mesh, equal the host-fed
  pipeline's batches of the same records, frames included; with pack groups of
  ``group`` videos, the index stream packs the groups as the pipeline does."""
  host_videos = pipeline.VideoSource(synthetic, "train", max_clip_len=30)
  bank_videos = pipeline.VideoSource(synthetic, "train", max_clip_len=30, decode_frames=False)
  host_frames, indexes = frame_bank.load_rows({"tv": [host_videos]}, max_clip_len=30)
  sizes = layout.LayoutSizes(**{**SIZES.__dict__, "pack_videos": group,
                                "packed_rows": SIZES.packed_rows * group - group // 2})
  ctx = pipeline.host_context(host_videos, sizes, queries_per_video=SIZES.queries)
  stacked, rows = example_bank.make_examples(bank_videos, objective, ctx, indexes["tv"])
  assert (rows.start, rows.end) == (0, len(host_videos)) and not rows.skipped
  packing = {"pack_src", "pack_seg", "unpack_src"} if group == 1 else set()   # else per batch
  spare = {"row_spare"} if objective == "vsm-device" else set()   # its queries' [CLS] slots
  assert set(stacked) == (set(registry.get(objective).fields) - {"frames"} | {"frame_ids"}
                          | packing | spare)
  host = next(pipeline.make_pipeline(host_videos, objective, ctx, pipeline.PipelineOptions(
      batch_videos=8, shuffle=False), process_index=0, process_count=1))

  # A pack group never spans two batch shards: 8 videos over 4 shards here.
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2 // group, "model": group})
  banks = {"frames": frame_bank.place(host_frames, mesh, "sharded", "float16"),
           "examples": example_bank.place(stacked, mesh, "sharded")}
  index_batch = next(example_bank.IndexIterator(rows, objective, 8, seed=0, shuffle=False,
                                                sizes=sizes))
  assert list(index_batch["example_ids"]) == list(range(8))
  ids = pipeline.make_global_batch(index_batch, sharding.batch_sharding(mesh))
  gathered = jax.device_get(jax.jit(step_lib.device_batch)(ids, banks))
  assert set(gathered) == set(host)
  for key in host:
    np.testing.assert_array_equal(gathered[key], host[key], err_msg=key)


@pytest.mark.parametrize("objective,group", [("fom-device", 1), ("vsm-device", 2)])
def test_each_process_makes_and_holds_only_its_share_of_a_sharded_bank(synthetic, objective,
                                                                        group):
  """Two simulated processes of 4 devices each: each makes the examples of
  every second record, puts them in its own devices' rows, and its index
  stream draws only those; the gathered rows are the one-process bank's
  examples of the same records, with the same pack fields."""
  videos = pipeline.VideoSource(synthetic, "train", max_clip_len=30, decode_frames=False)
  _, indexes = frame_bank.load_rows({"tv": [pipeline.VideoSource(synthetic, "train",
                                                                 max_clip_len=30)]}, 30)
  sizes = layout.LayoutSizes(**{**SIZES.__dict__, "pack_videos": group,
                                "packed_rows": SIZES.packed_rows * group - group // 2})
  ctx = pipeline.host_context(videos, sizes, queries_per_video=SIZES.queries)
  whole, whole_rows = example_bank.make_examples(videos, objective, ctx, indexes["tv"])
  assert not whole_rows.skipped
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2 // group, "model": group})
  n = len(videos)
  per_device = example_bank.rows_per_device([len(range(q, n, 2)) for q in range(2)], [4, 4])
  shape = (per_device * mesh.size,)
  held = frame_bank.bank_sharding(mesh, "sharded").devices_indices_map(shape)
  blocks, rows = {}, []
  for p in range(2):
    part = example_bank.concatenate({"tv": example_bank.make_examples(
        videos, objective, ctx, indexes["tv"], share=(p, 2))})
    own = [index[0].indices(shape[0])[:2] for d, index in held.items() if d.id // 4 == p]
    part_blocks, part_rows = example_bank.share_blocks(*part, own)
    for field, field_blocks in part_blocks.items():
      blocks.setdefault(field, {}).update(field_blocks)
    assert all(any(s <= i < e for s, e in own) for i in part_rows["tv"].ids)
    rows.append(part_rows["tv"])
  bank = {field: frame_bank.place_blocks(b, shape + whole[field].shape[1:], mesh, "sharded")
          for field, b in blocks.items()}
  for p in range(2):
    batch = next(example_bank.IndexIterator(rows[p], objective, 4, seed=0, shuffle=False,
                                            process_index=p, process_count=2, sizes=sizes))
    records = list(range(p, n, 2))[:4]
    gathered = jax.device_get(jax.jit(example_bank.gather)(batch, bank))
    for field in whole:
      np.testing.assert_array_equal(gathered[field], whole[field][records], err_msg=field)
    if group > 1:
      pack, _ = packing_lib.pack_batch(whole_rows.row_counts[records], sizes, vids=records)
      for field in pack:
        np.testing.assert_array_equal(batch[field], pack[field], err_msg=field)
  with pytest.raises(ValueError, match="process 1 has no device in the mesh"):
    example_bank.rows_per_device([10, 10], [8, 0])


@pytest.mark.slow
def test_worker_processes_make_the_same_bank(synthetic):
  """The bank made in two spawned worker processes (chunks of 50 records)
  equals the one made in process, skips included (host MLM with few
  prediction slots: its draws are a function of the record, as every
  objective's here)."""
  videos = pipeline.VideoSource(synthetic, "train", max_clip_len=30, decode_frames=False)
  _, indexes = frame_bank.load_rows({"tv": [pipeline.VideoSource(synthetic, "train",
                                                                 max_clip_len=30)]}, 30)
  sizes = layout.LayoutSizes(**{**SIZES.__dict__, "max_predictions": 12})
  ctx = pipeline.host_context(videos, sizes, queries_per_video=sizes.queries)
  alone, rows = example_bank.make_examples(videos, "mlm", ctx, indexes["tv"])
  pooled, pooled_rows = example_bank.make_examples(videos, "mlm", ctx, indexes["tv"],
                                                   workers=2, chunk=50)
  assert rows.skipped and pooled_rows == rows
  assert set(pooled) == set(alone)
  for key in alone:
    np.testing.assert_array_equal(pooled[key], alone[key], err_msg=key)


def rows_of(n: int, skipped=None) -> example_bank.DatasetRows:
  import collections
  return example_bank.DatasetRows(10, 10 + n, collections.Counter(skipped or {}), {},
                                  collections.Counter(), {"frames": 0.5})


def test_index_stream_covers_each_epoch_and_resumes_exactly():
  it = example_bank.IndexIterator(rows_of(20), "mlm-device", batch_videos=8, seed=1)
  seen = np.concatenate([next(it)["example_ids"] for _ in range(5)])   # two epochs of 20
  assert sorted(seen[:20]) == list(range(10, 30)) == sorted(seen[20:40])
  assert list(seen[:20]) != list(seen[20:40])                          # a new order each epoch
  state = it.get_state()
  after = [next(it)["example_ids"] for _ in range(3)]
  again = example_bank.IndexIterator(rows_of(20), "mlm-device", batch_videos=8, seed=1)
  again.set_state(state)
  for a, b in zip(after, [next(again)["example_ids"] for _ in range(3)]):
    np.testing.assert_array_equal(a, b)
  shards = [example_bank.IndexIterator(rows_of(20), "mlm-device", 5, seed=1, process_index=p,
                                       process_count=2) for p in range(2)]
  firsts = [np.concatenate([next(s)["example_ids"] for _ in range(2)]) for s in shards]
  assert sorted(np.concatenate(firsts)) == list(range(10, 30))         # disjoint, complete
  finite = example_bank.IndexIterator(rows_of(20), "mlm-device", 8, seed=1, num_epochs=1)
  assert len(list(finite)) == 2                                        # the partial batch dropped


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="fewer than batch_videos=8"):
    example_bank.IndexIterator(rows_of(5), "mlm-device", 8, seed=0)
  it = example_bank.IndexIterator(rows_of(20), "mlm-device", 8, seed=0)
  with pytest.raises(ValueError, match="written by a run without example bank"):
    it.set_state({"version": 2, "grain": {}})
  with pytest.raises(ValueError, match="'mlm' draws its examples on the host"):
    example_bank.check_objective("mlm")
  with pytest.raises(ValueError, match="config.data.example_bank: 'on' is not one of"):
    example_bank.check_config("on", "sharded")
  with pytest.raises(ValueError, match="needs the frame bank"):
    example_bank.check_config("replicated", "off")
  with pytest.raises(ValueError, match="example_bank_workers must be >= -1, got -2"):
    example_bank.worker_count(-2)
  assert example_bank.worker_count(-1) >= 1 and example_bank.worker_count(3) == 3


def test_a_sharded_bank_stops_every_process_on_one_processs_short_share():
  """``check_shares`` reads every process's report (the same dict on all), so
  all raise the same error, naming the process and dataset."""
  reports = {"0": {"tv": {"examples": 12, "skipped": {"too_short": 1}}},
             "1": {"tv": {"examples": 3, "skipped": {"too_short": 2}}}}
  example_bank.check_shares("mlm-device", reports, min_examples=3)
  assert example_bank.total_skips(reports) == {"tv": {"too_short": 3}}
  with pytest.raises(ValueError, match=r"process 1, dataset 'tv': 3 examples, fewer than "
                                       r"batch_videos=4.*'replicated'"):
    example_bank.check_shares("mlm-device", reports, min_examples=4)
  reports["0"]["tv"] = {"error": "skipped every one of its 10 records (process 0 of 2)"}
  with pytest.raises(ValueError, match=r"process 0: skipped every one.*; process 1, dataset"):
    example_bank.check_shares("mlm-device", reports, min_examples=4)


def tiny_config(tmp_path, steps: int):
  c = pretrain_tiny.get_config()
  c.data.datasets.synthetic.data_dir = str(tmp_path / "tfds")
  c.data.synthetic.train_videos, c.data.synthetic.val_videos = 32, 8
  c.data.frame_bank, c.data.example_bank = "sharded", "sharded"
  common.use_objectives(c, mlm=1.0)
  c.objective_draws = "device"   # mlm trains as mlm-device, as the example bank needs
  c.train.num_steps, c.train.batch_videos = steps, 8
  c.log_every, c.eval_every, c.checkpoint_every = 2, 0, 2
  c.mesh.num_devices = 2
  return c


@pytest.mark.slow
def test_a_run_trains_from_the_bank_and_resumes_its_position(tmp_path):
  """mlm-device from the example bank: its batches are indices, and a restart
  restores its position."""
  trainer = loop.Trainer(tiny_config(tmp_path, 4), str(tmp_path / "run"))
  last = trainer.train()
  banked = trainer.iterators["synthetic:mlm-device"]
  assert isinstance(banked, example_bank.IndexIterator)
  assert banked.batches == 4 and np.isfinite(last["train/mlm-device/loss"])
  assert trainer.steps["mlm-device"].jitted._cache_size() == 1   # index batches: one compile
  resumed = loop.Trainer(tiny_config(tmp_path, 4), str(tmp_path / "run"))
  assert resumed.restore() == 4
  assert resumed.iterators["synthetic:mlm-device"].get_state() == banked.get_state()
  assert banked.position == 8 * banked.batches > 0
