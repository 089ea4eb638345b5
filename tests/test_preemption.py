"""Preemption with data workers: SIGTERM to the whole process group, as a TPU VM's preemption
(or ``kill -TERM -<pgid>``) sends it, saves a checkpoint, exits 0, leaves no worker process
behind, and the restart continues bit for bit.

The runs are ``tests/runs.py``'s ``python -m hero_jax.main`` subprocesses with two grain workers per
pipeline, each in its own process group (session), compared with the session's ``reference_run``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests import runs

pytestmark = pytest.mark.slow  # trains a tiny model in subprocesses


def start(workdir, data_dir, env, log):
  """A run with two data workers per pipeline, in a new session: its process
  group holds it and its workers only."""
  return runs.start(runs.command(workdir, data_dir, "--config.data.worker_count=2"), env, log,
                    start_new_session=True)


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
      runs.wait_for(proc, Path(workdir) / "checkpoints" / str(after_step))
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


def test_sigterm_to_process_group_with_workers_saves_and_resumes_exactly(reference_run, tmp_path):
  reference, data_dir, env = reference_run
  resumed = tmp_path / "run"
  preempt(resumed, data_dir, env, tmp_path / "b1.log", after_step=4)
  assert 4 <= runs.checkpoint_steps(resumed)[-1] < runs.STEPS
  run_to_end(resumed, data_dir, env, tmp_path / "b2.log")
  # The reference ran without workers: workers change nothing, bit for bit.
  runs.assert_same_run(reference, resumed)
