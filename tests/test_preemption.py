"""Preemption with data workers: SIGTERM to the whole process group, as a TPU VM's preemption
(or ``kill -TERM -<pgid>``) sends it, saves a checkpoint, exits 0, leaves no worker process
behind, and the restart continues bit for bit.

The runs are ``python -m hero_jax.main`` subprocesses with two grain worker processes per
pipeline, each in its own process group (session), sharing a persistent compilation cache.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import test_train_resume as resume

REPO = Path(__file__).resolve().parents[1]
STEPS = 16


def command(workdir, data_dir):
  # No model overrides: the tiny preset is small enough.
  return [sys.executable, "-m", "hero_jax.main", "--config", "configs/pretrain_tiny.py",
          "--workdir", str(workdir), "--config.data.worker_count=2",
          f"--config.train.num_steps={STEPS}", "--config.checkpoint_every=4",
          "--config.log_every=1", "--config.eval_every=0", "--config.train.batch_videos=8",
          f"--config.data.datasets.synthetic.data_dir={data_dir}",
          "--config.data.synthetic.train_videos=24", "--config.data.synthetic.val_videos=8",
          "--config.data.synthetic.feature_dim=48"]


def start(workdir, data_dir, env, log):
  """A run in a new session: its process group holds it and its workers only."""
  return subprocess.Popen(command(workdir, data_dir), cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)


def group_members(pgid: int) -> list:
  """(pid, name) of the live (not zombie) processes in group ``pgid``.

  Zombies are left out: this container's init may never reap a reparented child.
  """
  members = []
  for entry in Path("/proc").iterdir():
    if not entry.name.isdigit():
      continue
    try:
      stat = (entry / "stat").read_text()
    except OSError:
      continue  # it ended meanwhile
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    state, _, group = stat[stat.rindex(")") + 2:].split()[:3]
    if int(group) == pgid and state != "Z":
      members.append((int(entry.name), name))
  return members


def wait_group_gone(pgid: int, timeout: float = 30) -> list:
  """Waits for group ``pgid`` to empty; returns the members still alive at the timeout."""
  deadline = time.time() + timeout
  while True:
    try:
      os.killpg(pgid, 0)
    except ProcessLookupError:
      return []
    left = group_members(pgid)
    if not left or time.time() > deadline:
      return left
    time.sleep(0.1)


def kill_group(pgid: int) -> None:
  try:
    os.killpg(pgid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def final_params(workdir):
  mngr = ocp.CheckpointManager(Path(workdir) / "checkpoints", item_names=("state", "data", "config"))
  assert mngr.latest_step() == STEPS
  return mngr.restore(STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def run_to_end(workdir, data_dir, env, log_path) -> None:
  with open(log_path, "w") as log:
    proc = start(workdir, data_dir, env, log)
    try:
      rc = proc.wait(timeout=900)
    finally:
      kill_group(proc.pid)
  assert rc == 0, Path(log_path).read_text()[-3000:]


def preempt(workdir, data_dir, env, log_path, after_step: int) -> None:
  """Starts a run, sends SIGTERM to its whole process group once checkpoint
  ``after_step`` exists, and checks it saved, exited 0 and left nothing behind."""
  with open(log_path, "w") as log:
    proc = start(workdir, data_dir, env, log)
    pgid = proc.pid  # the session leader's pid is the group id
    try:
      resume.wait_for_checkpoint(proc, workdir, after_step)
      os.killpg(pgid, signal.SIGTERM)
      rc = proc.wait(timeout=300)
      left = wait_group_gone(pgid)
    finally:
      kill_group(pgid)
  text = Path(log_path).read_text()
  assert rc == 0, (rc, text[-3000:])  # preemption: save, then exit cleanly
  assert "SIGTERM: saved checkpoint" in text, text[-3000:]
  assert not left, (f"processes of the group still alive after the run exited: {left}",
                    text[-3000:])
  assert "Traceback" not in text, text[-3000:]  # no worker died of the signal


@pytest.mark.slow
def test_sigterm_to_process_group_with_workers_saves_and_resumes_exactly(tmp_path):
  env = resume.environment(tmp_path / "jax_cache")
  data_dir = tmp_path / "tfds"
  uninterrupted = tmp_path / "a"
  run_to_end(uninterrupted, data_dir, env, tmp_path / "a.log")

  resumed = tmp_path / "b"
  preempt(resumed, data_dir, env, tmp_path / "b1.log", after_step=4)
  steps = sorted(int(p.name) for p in (resumed / "checkpoints").iterdir() if p.name.isdigit())
  assert 4 <= steps[-1] < STEPS, steps
  run_to_end(resumed, data_dir, env, tmp_path / "b2.log")

  a, b = resume.train_lines(uninterrupted), resume.train_lines(resumed)
  assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
  for step, line in a.items():
    assert line == b[step], (step, line, b[step])  # bit for bit
  flat_a = dict(zip(*resume._flatten(final_params(uninterrupted))))
  flat_b = dict(zip(*resume._flatten(final_params(resumed))))
  assert flat_a.keys() == flat_b.keys()
  for k, value in flat_a.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_b[k]), err_msg=k)
