"""``python -m hero_jax.main`` in subprocesses, for the resume and preemption tests.

Every run is the same short tiny pre-training run (``command``), so one
uninterrupted run (the ``reference_run`` fixture in ``conftest.py``) is the
yardstick of all of them: a run interrupted any way and resumed must equal it
bit for bit. They share a persistent compilation cache, so only the first
run pays for compiling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

REPO = Path(__file__).resolve().parents[1]
STEPS = 20
CHECKPOINT_EVERY = 4


def command(workdir, data_dir, *extra, bucket_root=None) -> list:
  """The run; with ``bucket_root`` its gs:// paths live there (``tests/fake_gcs.py``)."""
  main = [sys.executable, "-m", "hero_jax.main"]
  if bucket_root is not None:
    main = [sys.executable, str(REPO / "tests" / "fake_gcs.py"), str(bucket_root), "-m",
            "hero_jax.main"]
  return main + [
      "--config", "configs/pretrain_tiny.py", "--workdir", str(workdir),
      f"--config.train.num_steps={STEPS}", f"--config.checkpoint_every={CHECKPOINT_EVERY}",
      "--config.log_every=1", "--config.eval_every=0", "--config.train.batch_videos=8",
      "--config.model.cross_layers=1", f"--config.data.datasets.synthetic.data_dir={data_dir}",
      # Two of the mix's objectives: the task draw and both pipelines' positions
      # are resumed all the same, for half the compilations.
      "--config.objectives.mfm_nce.ratio=0", "--config.objectives.vsm.ratio=0",
      "--config.data.synthetic.train_videos=24", "--config.data.synthetic.val_videos=8",
      *extra]


def environment(cache) -> dict:
  """Two CPU devices (data parallel, sharded state) and the shared compilation cache."""
  env = dict(os.environ)
  env.update({"PYTHONPATH": str(REPO), "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",
              "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
              "JAX_COMPILATION_CACHE_DIR": str(cache),
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
  return env


def start(argv, env, log, **kwargs) -> subprocess.Popen:
  return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                          **kwargs)


def wait_for(proc, path: Path, timeout: float = 600) -> None:
  """Waits for ``path`` to exist while ``proc`` runs."""
  deadline = time.time() + timeout
  while not Path(path).exists():
    assert proc.poll() is None, f"run ended (rc {proc.returncode}) before {path} appeared"
    assert time.time() < deadline, f"no {path} after {timeout} s"
    time.sleep(0.02)


def checkpoint_steps(workdir) -> list:
  return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir()
                if p.name.isdigit())


def train_lines(workdir) -> dict:
  """step -> train/* scalars, the last line written for each step."""
  out = {}
  for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
    rec = json.loads(line)
    train = {k: v for k, v in rec.items() if k.startswith("train/")}
    if train:
      out[rec["step"]] = train
  return out


def final_params(workdir) -> dict:
  """{path: array} of the state in the last checkpoint (step ``STEPS``)."""
  import jax
  mngr = ocp.CheckpointManager(Path(workdir) / "checkpoints",
                               item_names=("state", "data", "config"))
  assert mngr.latest_step() == STEPS
  state = mngr.restore(STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def assert_same_run(reference, resumed) -> None:
  """Every step's train metrics and the final state are equal, bit for bit."""
  a, b = train_lines(reference), train_lines(resumed)
  assert sorted(a) == sorted(b) == list(range(1, STEPS + 1)), (sorted(a), sorted(b))
  for step, line in a.items():
    assert line == b[step], (step, line, b[step])
  pa, pb = final_params(reference), final_params(resumed)
  assert pa.keys() == pb.keys()
  for k, value in pa.items():
    np.testing.assert_array_equal(value, pb[k], err_msg=k)
