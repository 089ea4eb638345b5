"""``--config.profile_steps``: a jax.profiler trace of the chosen steps."""

from __future__ import annotations

import gzip
import json
import os

import jax
import jax.numpy as jnp
import pytest
from etils.epath import testing as epath_testing

from hero_jax.train import profiling


def _run(profiler, steps: int):
  """A jitted 'training loop' driven the way ``Trainer.train`` drives it."""
  step_fn = jax.jit(lambda x: jnp.tanh(x @ x))
  x = jnp.ones((32, 32))
  try:
    for step in range(steps):
      with profiler.step(step):
        x = step_fn(x)
      profiler.step_done(step, x)
  finally:
    profiler.stop()


def _traced_steps(logdir) -> list:
  """The ``train`` annotations' step numbers in the Chrome trace jax wrote."""
  (trace,) = logdir.glob("plugins/profile/*/*.trace.json.gz")
  events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
  return sorted(int(e["args"]["step_num"]) for e in events if e.get("name") == "train")


def test_traces_the_window_with_step_annotations(tmp_path):
  logdir = tmp_path / "profile"
  profiler = profiling.StepProfiler(logdir, start=2, num_steps=3)
  _run(profiler, steps=8)
  assert profiler.done and not profiler.active
  assert list(logdir.glob("plugins/profile/*/*.xplane.pb"))
  assert _traced_steps(logdir) == [2, 3, 4]


def test_run_ending_inside_the_window_still_writes(tmp_path):
  profiler = profiling.StepProfiler(tmp_path, start=1, num_steps=10)
  _run(profiler, steps=3)
  assert _traced_steps(tmp_path) == [1, 2]


def test_resumed_inside_the_window_traces_the_rest(tmp_path):
  profiler = profiling.StepProfiler(tmp_path, start=0, num_steps=3)
  step_fn = jax.jit(lambda x: x + 1)
  x = jnp.zeros(())
  for step in (2, 3, 4):  # A run restored at step 2.
    with profiler.step(step):
      x = step_fn(x)
    profiler.step_done(step, x)
  assert not profiler.active and _traced_steps(tmp_path) == [2]


def test_zero_steps_is_off(tmp_path):
  logdir = tmp_path / "profile"
  _run(profiling.StepProfiler(logdir, start=0, num_steps=0), steps=3)
  assert not logdir.exists()


def test_negative_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="profile_steps"):
    profiling.StepProfiler(tmp_path, start=0, num_steps=-1)


def test_gcs_logdir_is_copied_through_epath(tmp_path):
  root = tmp_path / "gcs"

  def mapped(original, path, *args, **kwargs):
    path = os.fspath(path)
    if path.startswith("gs://"):
      path = os.fspath(root / path[len("gs://"):])
    return original(path, *args, **kwargs)

  with epath_testing.mock_epath(open=mapped, exists=mapped, makedirs=mapped, mkdir=mapped):
    _run(profiling.StepProfiler("gs://bucket/run/profile", start=1, num_steps=2), steps=4)
  logdir = root / "bucket/run/profile"
  assert list(logdir.glob("plugins/profile/*/*.xplane.pb"))
  assert _traced_steps(logdir) == [1, 2]
