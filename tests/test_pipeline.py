"""grain pipelines over the synthetic set: seeds, exact resume, shards, skips, global arrays."""

import dataclasses
import multiprocessing
import os
import signal
import threading
import time

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hero_jax import layout
from hero_jax.data import build, pipeline, synthetic
from hero_jax.objectives import registry
from hero_jax.objectives.host import repr_example

SPEC = synthetic.SyntheticSpec(train_videos=40, val_videos=8, feature_dim=16, min_frames=8,
                               max_frames=20)
SIZES = layout.LayoutSizes(max_frames=20, max_rows=16, max_row_frames=4, max_row_tokens=9,
                           queries=2, max_query_tokens=9, max_predictions=24)
OBJECTIVES = ("mlm", "mfm-nce", "fom", "vsm")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  b = build.build("hero_synthetic/videos", str(tmp_path_factory.mktemp("tfds")), spec=SPEC)
  return pipeline.VideoSource(b.data_dir, "train", max_clip_len=20)


def make(videos, objective="mlm", **kw):
  kw.setdefault("batch_videos", 8)
  process = dict(process_index=kw.pop("process_index", 0), process_count=kw.pop("process_count", 1))
  ctx = pipeline.host_context(videos, SIZES, queries_per_video=2)
  return pipeline.make_pipeline(videos, objective, ctx, pipeline.PipelineOptions(**kw), **process)


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_same_seed_same_batches_static_shapes(videos, objective):
  a = take(make(videos, objective, seed=3), 6)  # 6 batches of 8 > one epoch of 40
  assert_same(a, take(make(videos, objective, seed=3), 6))
  shapes = {k: v.shape for k, v in a[0].items()}
  assert all({k: v.shape for k, v in b.items()} == shapes for b in a)
  expected = layout.field_shapes(SIZES, 16, registry.get(objective).fields)
  assert {k: s[1:] for k, s in shapes.items()} == {k: s for k, (s, _) in expected.items()}
  c = take(make(videos, objective, seed=4), 1)
  assert not np.array_equal(a[0]["frames"], c[0]["frames"])


def test_epochs_reshuffle_and_redraw(videos):
  it = make(videos, "mlm", seed=0, batch_videos=40)
  first, second = next(it), next(it)
  # Same videos, new order, new masking draws in the second epoch.
  assert sorted(first["frames"][:, 0, 0]) == sorted(second["frames"][:, 0, 0])
  assert not np.array_equal(first["frames"], second["frames"])


@pytest.mark.parametrize("objective", ["mlm", "vsm"])
def test_restored_iterator_continues_with_exactly_the_next_batch(videos, objective):
  it = make(videos, objective, seed=1)
  take(it, 4)
  state = it.get_state()
  expected = take(it, 3)  # crosses the epoch boundary (5 batches per epoch)
  fresh = make(videos, objective, seed=1)
  fresh.set_state(state)
  assert_same(take(fresh, 3), expected)
  assert fresh.batches == 7


def test_worker_processes_give_the_same_batches(videos):
  ref = take(make(videos, "fom", seed=2), 3)
  it = make(videos, "fom", seed=2, worker_count=1)
  got = take(it, 2)
  state = it.get_state()
  assert_same(got, ref[:2])
  resumed = make(videos, "fom", seed=2, worker_count=1)
  resumed.set_state(state)
  assert_same(take(resumed, 1), ref[2:])


def new_children(before: set, n: int, timeout: float = 60) -> set:
  deadline = time.time() + timeout
  while len(set(multiprocessing.active_children()) - before) < n:
    assert time.time() < deadline, f"fewer than {n} worker processes after {timeout} s"
    time.sleep(0.001)
  return set(multiprocessing.active_children()) - before


def test_workers_outlive_sigterm_until_closed_then_resume_exactly(videos):
  """A preemption signals the whole process group: workers starting or running
  live on, give the same batches and stop when closed; the state resumes exactly."""
  ref = take(make(videos, "fom", seed=2), 4)
  before = set(multiprocessing.active_children())
  # Chunks of 4 videos: the first two batches need both workers.
  it = make(videos, "fom", seed=2, worker_count=2, chunk_videos=4)
  got = []
  fetch = threading.Thread(target=lambda: got.extend(take(it, 2)))
  fetch.start()  # grain starts the workers inside this call
  workers = new_children(before, 2)
  for w in workers:  # still starting: before worker_init ignores the signal
    os.kill(w.pid, signal.SIGTERM)
  fetch.join(timeout=120)
  assert all(w.is_alive() for w in workers), [w.exitcode for w in workers]
  for w in workers:  # running
    os.kill(w.pid, signal.SIGTERM)
    os.kill(w.pid, signal.SIGINT)
  got += take(it, 1)
  state = it.get_state()
  it.close()
  assert all(not w.is_alive() and w.exitcode == 0 for w in workers), [w.exitcode for w in workers]
  assert it.get_state() == state
  assert_same(got, ref[:3])
  resumed = make(videos, "fom", seed=2, worker_count=2, chunk_videos=4)
  resumed.set_state(state)
  assert_same(take(resumed, 1), ref[3:])
  resumed.close()


def test_process_shards_are_disjoint_and_cover_the_split(videos):
  seen = []
  for p in range(2):
    it = make(videos, "mlm", batch_videos=1, shuffle=False, num_epochs=1, process_index=p,
              process_count=2)
    batches = list(it)
    assert len(batches) == len(videos) // 2
    for k, b in enumerate(batches):
      i = p + 2 * k
      n = videos.video(i).num_frames
      np.testing.assert_array_equal(b["frames"][0, :n], videos.video(i).frames)
      seen.append(i)
  assert sorted(seen) == list(range(len(videos)))


def test_skipped_videos_are_counted_and_batches_stay_full(videos):
  def make_example(video, rng, ctx, stats=None):
    del rng
    if video.num_frames % 2:
      raise registry.SkipExample("odd_length")
    return repr_example(video, ctx, stats)
  registry.register(registry.Objective(
      name="even-only", fields=layout.VIDEO_FIELDS, make_example=make_example,
      loss=None, settings=dataclasses.make_dataclass("S", [], frozen=True)))
  try:
    it = make(videos, "even-only", batch_videos=2, shuffle=False, num_epochs=1)
    batches = list(it)
  finally:
    registry.unregister("even-only")
  odd = sum(videos.video(i).num_frames % 2 for i in range(len(videos)))
  assert it.skipped == {"odd_length": odd}
  assert len(it.skipped_ids["odd_length"]) == min(odd, 5)
  assert len(batches) == (len(videos) - odd) // 2
  assert all(b["frames"].shape[0] == 2 for b in batches)
  assert set(it.padding) == {"frames", "row_tokens", "row_frames"}
  assert 0.0 < it.padding["frames"] < 1.0


def test_global_batch_from_process_local_data(videos):
  batch = next(make(videos, "mlm", batch_videos=8))
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(8), ("data",))
  arrays = pipeline.make_global_batch(batch, NamedSharding(mesh, P("data")))
  for k, v in arrays.items():
    assert v.shape == batch[k].shape
    assert len(v.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(v), batch[k])


def test_bad_options_and_lookups(videos):
  with pytest.raises(ValueError, match="batch_videos"):
    pipeline.PipelineOptions(batch_videos=0)
  with pytest.raises(ValueError, match="chunk_videos must be positive, got 0"):
    pipeline.PipelineOptions(batch_videos=8, chunk_videos=0)
  with pytest.raises(ValueError, match="read_threads and read_buffer must be >= 0"):
    pipeline.PipelineOptions(batch_videos=8, read_threads=-1)
  with pytest.raises(ValueError, match="fewer than batch_videos=64"):
    make(videos, batch_videos=64)
  with pytest.raises(KeyError, match="'nope'.*split 'train'"):
    videos.video_by_id("nope")
  with pytest.raises(FileNotFoundError, match="python -m hero_jax.data.build"):
    pipeline.dataset_dir(videos.path, "hero_tv/videos")
  with pytest.raises(ValueError, match="no split 'test'"):
    pipeline.VideoSource(videos.path, "test")


def test_synthetic_generation_is_deterministic(tmp_path):
  spec = dataclasses.replace(SPEC, train_videos=6, val_videos=2)
  a = build.build("hero_synthetic/videos", str(tmp_path / "a"), spec=spec)
  b = build.build("hero_synthetic/videos", str(tmp_path / "b"), spec=spec)
  da, db = pipeline.VideoSource(a.data_dir, "val"), pipeline.VideoSource(b.data_dir, "val")
  for i in range(len(da)):
    for k in da[i]:
      np.testing.assert_array_equal(da[i][k], db[i][k])
  c = build.build("hero_synthetic/videos", str(tmp_path / "c"),
                  spec=dataclasses.replace(spec, seed=1))
  assert not np.array_equal(pipeline.VideoSource(c.data_dir, "val")[0]["frames"], da[0]["frames"])


def test_data_that_does_not_fit_the_model_is_named(tmp_path):
  from hero_jax.data import build, datasets, synthetic
  from hero_jax.model.config import tiny_config
  build.build("hero_synthetic/videos", str(tmp_path),
              spec=synthetic.SyntheticSpec(train_videos=4, val_videos=2, feature_dim=8))
  videos = pipeline.VideoSource(pipeline.dataset_dir(str(tmp_path), "hero_synthetic/videos"),
                                "train")
  datasets.check_fits_model(videos, tiny_config(frame_feat_dim=8))
  with pytest.raises(ValueError, match=r"frame features have dim 8, .*frame_feat_dim is 48"):
    datasets.check_fits_model(videos, tiny_config(frame_feat_dim=48))
  with pytest.raises(ValueError, match=r"token ids reach \d+, .*config.model.vocab_size is 16"):
    datasets.check_fits_model(videos, tiny_config(frame_feat_dim=8, vocab_size=16))


def test_a_synthetic_set_built_from_another_spec_is_refused(tmp_path):
  import ml_collections
  from hero_jax.data import datasets
  spec = synthetic.SyntheticSpec(train_videos=4, val_videos=2, feature_dim=8)
  config = ml_collections.ConfigDict({"data": {"synthetic": dataclasses.asdict(spec)}})
  folder = datasets.dataset_dir("hero_synthetic/videos", str(tmp_path), config)   # built here
  assert datasets.dataset_dir("hero_synthetic/videos", str(tmp_path), config) == folder
  config.data.synthetic.max_frames = 16
  with pytest.raises(ValueError, match=r"videos/1.0.0 was built from another synthetic spec .*"
                                       r"max_frames: built 30, config 16"):
    datasets.dataset_dir("hero_synthetic/videos", str(tmp_path), config)
