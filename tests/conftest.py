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


# Seconds each slow file took in the last full run (two workers, CI's two
# cores). xdist (--dist loadfile) hands out files in collection order, so the
# longest go first: a long file started last would leave one core idle while
# it finishes.
FILE_SECONDS = {"test_train_step.py": 480, "test_baselines.py": 350, "test_model.py": 280,
                "test_finetune_vcmr.py": 275, "test_finetune_videoqa.py": 270,
                "test_train_loop.py": 250, "test_preemption.py": 230, "test_ablation.py": 140,
                "test_parity.py": 120, "test_frame_bank.py": 80, "test_device_draws.py": 60,
                "test_example_bank.py": 55, "test_pruning.py": 50, "test_multihost.py": 80}


def pytest_collection_modifyitems(items):
  # sort() is stable: each file's tests stay together, in their order.
  items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))
