"""Exact resume: SIGKILL mid-run, SIGTERM (preemption), restart: same losses and params, bit for bit.

Every run is ``python -m hero_jax.main`` in a subprocess with the same
environment (8 CPU devices, data parallel), sharing a persistent compilation
cache so only the first run pays for compiling.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import orbax.checkpoint as ocp

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains a tiny model for minutes
STEPS = 40


def command(workdir, data_dir):
  return [sys.executable, "-m", "hero_jax.main", "--config", "configs/pretrain_tiny.py",
          "--workdir", str(workdir),
          f"--config.train.num_steps={STEPS}", "--config.checkpoint_every=4",
          "--config.log_every=1", "--config.eval_every=0", "--config.train.batch_videos=8",
          "--config.model.cross_layers=1",
          f"--config.data.datasets.synthetic.data_dir={data_dir}",
          "--config.data.synthetic.train_videos=24", "--config.data.synthetic.val_videos=8",
          "--config.data.synthetic.feature_dim=48"]


def environment(cache):
  env = dict(os.environ)
  env.update({"PYTHONPATH": str(REPO), "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",
              "JAX_COMPILATION_CACHE_DIR": str(cache),
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
  return env


def start(workdir, data_dir, env, log):
  return subprocess.Popen(command(workdir, data_dir), cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT)


def wait_for_checkpoint(proc, workdir, step, timeout=600):
  target = Path(workdir) / "checkpoints" / str(step)
  deadline = time.time() + timeout
  while not target.exists():
    assert proc.poll() is None, f"run ended (rc {proc.returncode}) before checkpoint {step}"
    assert time.time() < deadline, f"no checkpoint {step} after {timeout} s"
    time.sleep(0.02)


def train_lines(workdir) -> dict:
  """step -> train/* scalars, the last line written for each step."""
  out = {}
  for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
    rec = json.loads(line)
    train = {k: v for k, v in rec.items() if k.startswith("train/")}
    if train:
      out[rec["step"]] = train
  return out


def final_params(workdir):
  mngr = ocp.CheckpointManager(Path(workdir) / "checkpoints", item_names=("state", "data", "config"))
  assert mngr.latest_step() == STEPS
  state = mngr.restore(STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return state


def test_killed_and_preempted_run_resumes_exactly(tmp_path):
  env = environment(tmp_path / "jax_cache")
  data_dir = tmp_path / "tfds"
  with open(tmp_path / "log.txt", "w") as log:
    uninterrupted = tmp_path / "a"
    assert start(uninterrupted, data_dir, env, log).wait(timeout=900) == 0

    resumed = tmp_path / "b"
    proc = start(resumed, data_dir, env, log)
    wait_for_checkpoint(proc, resumed, 4)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    proc = start(resumed, data_dir, env, log)
    wait_for_checkpoint(proc, resumed, 12)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0  # preemption: save, then exit cleanly
    steps = sorted(int(p.name) for p in (resumed / "checkpoints").iterdir() if p.name.isdigit())
    assert 12 <= steps[-1] < STEPS, steps

    assert start(resumed, data_dir, env, log).wait(timeout=900) == 0
  log_text = (tmp_path / "log.txt").read_text()
  assert "SIGTERM: saved checkpoint" in log_text, log_text[-3000:]

  a, b = train_lines(uninterrupted), train_lines(resumed)
  assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
  for step in a:
    assert a[step] == b[step], (step, a[step], b[step])  # bit for bit
  pa, pb = final_params(uninterrupted), final_params(resumed)
  flat_a = dict(zip(*_flatten(pa)))
  flat_b = dict(zip(*_flatten(pb)))
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_a[k]), np.asarray(flat_b[k]), err_msg=k)


def _flatten(tree):
  import jax
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [jax.tree_util.keystr(p) for p, _ in leaves], [v for _, v in leaves]
