"""One process of a two-process CPU run (``tests/test_multihost.py``): loads
a sharded frame bank and a sharded example bank over 2 x 4 devices, checks
that this process read and holds only its share, and that batches gathered on
the global mesh equal the banks made in one process.

  python tests/multihost_banks.py PROCESS_ID PORT DATA_DIR
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main(process_id: int, port: int, data_dir: str) -> None:
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
  import numpy as np
  from hero_jax import layout
  from hero_jax.data import example_bank, frame_bank, pipeline
  from hero_jax.train import sharding
  from tests.counting import CountingSource
  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "model": 1})
  videos = pipeline.VideoSource(data_dir, "train", max_clip_len=30)
  sources = {"tv": [videos]}
  whole_frames, indexes = frame_bank.load_rows(sources, max_clip_len=30)   # the one-process bank

  # Frame bank: this process reads only the records of its blocks.
  counting = CountingSource(videos)
  bank, got = frame_bank.load({"tv": [counting]}, 30, mesh, "sharded", "float16")
  assert got == indexes
  n = whole_frames.shape[0]
  assert 0 < len(set(counting.reads)) < len(videos), counting.reads
  held = sum(s.data.shape[0] for s in bank.addressable_shards)
  assert held == bank.shape[0] // 2, (held, bank.shape)
  # A dataset built without frame_rows: counted first (every record), then the same share.
  older = CountingSource(videos, metadata={k: v for k, v in videos.metadata.items()
                                           if k != "frame_rows"})
  counted, _ = frame_bank.load({"tv": [older]}, 30, mesh, "sharded", "float16")
  for a, b in zip(bank.addressable_shards, counted.addressable_shards):
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
  ids = np.random.default_rng(process_id).integers(0, n, size=(4, 6)).astype(np.int32)
  batch = pipeline.make_global_batch({"frame_ids": ids}, sharding.batch_sharding(mesh))
  frames = jax.jit(frame_bank.device_frames)(batch, bank)["frames"]
  for shard in frames.addressable_shards:   # this process's videos
    rows = ids[shard.index[0].start % 4:][:shard.data.shape[0]]
    np.testing.assert_array_equal(np.asarray(shard.data), whole_frames[rows].astype(np.float32))

  # Example bank: this process makes every second record's example, on its devices.
  sizes = layout.LayoutSizes(max_frames=32, max_rows=24, max_row_frames=4, max_row_tokens=9,
                             queries=2, max_query_tokens=9, max_predictions=40)
  bank_videos = pipeline.VideoSource(data_dir, "train", max_clip_len=30, decode_frames=False)
  ctx = pipeline.host_context(bank_videos, sizes, queries_per_video=2)
  whole, _ = example_bank.make_examples(bank_videos, "fom-device", ctx, indexes["tv"])
  examples, rows = example_bank.load("fom-device", {"tv": bank_videos}, {"tv": ctx},
                                     indexes, mesh, "sharded")
  own = rows["tv"].ids
  assert len(own) == len(range(process_id, len(videos), 2))
  held_rows = sorted(i for s in examples["row_ids"].addressable_shards
                     for i in range(*s.index[0].indices(examples["row_ids"].shape[0])[:2]))
  assert set(own) <= set(held_rows)
  it = example_bank.IndexIterator(rows["tv"], "fom-device", 4, seed=0, shuffle=False,
                                  process_index=process_id, process_count=2)
  local = next(it)
  records = list(range(process_id, len(videos), 2))[:4]
  batch = pipeline.make_global_batch(local, sharding.batch_sharding(mesh))
  gathered = jax.jit(example_bank.gather)(batch, examples)
  for field in whole:
    for shard in gathered[field].addressable_shards:
      start = shard.index[0].start % 4
      want = whole[field][records[start:start + shard.data.shape[0]]]
      np.testing.assert_array_equal(np.asarray(shard.data), want, err_msg=field)
  check_one_short_share_stops_both(process_id, bank_videos, ctx, indexes, mesh)
  print(f"process {process_id}: frame bank {held} of {bank.shape[0]} rows held, "
        f"{len(set(counting.reads))} of {len(videos)} records read; example bank "
        f"{len(own)} examples made; OK", flush=True)


def check_one_short_share_stops_both(process_id, videos, ctx, indexes, mesh) -> None:
  """Process 1 fails to make its share (as when it skips every record, or
  reads a bad one): both processes raise the same error, naming process 1
  and the error (neither waits for the other in a collective)."""
  from hero_jax.data import example_bank
  make_examples = example_bank.make_examples

  def skip_all_on_process_1(*args, **kwargs):
    if process_id == 1:
      raise ValueError("every record of process 1's share skipped")
    return make_examples(*args, **kwargs)

  example_bank.make_examples = skip_all_on_process_1
  try:
    example_bank.load("fom-device", {"tv": videos}, {"tv": ctx}, indexes, mesh, "sharded")
  except ValueError as e:
    assert "process 1: ValueError: every record of process 1's share skipped" in str(e), e
  else:
    raise AssertionError("a sharded bank with an empty share loaded")
  finally:
    example_bank.make_examples = make_examples


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
