"""Test setup: 8 virtual CPU devices (sharding tests) and parsed absl flags."""

import os

# Must happen before jax is imported anywhere.
# Two test processes share CI's two cores: one XLA thread each (6% faster
# on the model and baseline tests than XLA's thread pools contending).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _fast_compiles():
  # Tiny models: XLA's optimisation passes cost more than they save here.
  import jax
  jax.config.update("jax_disable_most_optimizations", True)


_fast_compiles()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
  """One uninterrupted ``tests/runs.py`` run: (workdir, data dir, environment).

  Session-scoped, so the resume and preemption tests compare against the same
  run and share its data and compilation cache. Under pytest-xdist the workers
  share it too: the first to need it runs it under a file lock, the others wait
  and reuse it."""
  import fcntl
  import os
  from tests import runs
  base = tmp_path_factory.getbasetemp()
  root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "reference_run"
  root.mkdir(exist_ok=True)
  env = runs.environment(root / "jax_cache")
  workdir, data_dir = root / "run", root / "tfds"
  with open(root / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (root / "done").exists():
      with open(root / "log.txt", "w") as log:
        rc = runs.start(runs.command(workdir, data_dir), env, log).wait(timeout=900)
      assert rc == 0, (root / "log.txt").read_text()[-3000:]
      (root / "done").touch()
  return workdir, data_dir, env
