"""Preemption with data workers in a bucket workdir: SIGTERM to the whole process group, as a TPU
VM's preemption (or ``kill -TERM -<pgid>``) sends it, saves a checkpoint, exits 0, leaves no
worker process behind, and the restart continues bit for bit. Before it, a first start is
SIGKILLed with its whole group (a lost VM: nothing saved, perhaps a checkpoint half written).

The run is ``tests/runs.py``'s ``python -m hero_jax.main`` with two grain workers per pipeline,
in its own process group (session), with its workdir in ``gs://bucket/run``: ``tests/fake_gcs.py``
maps every gs:// path onto a local folder (etils.epath mocked, orbax's TensorStore kvstore
mapped), so the run takes the bucket code paths offline (epath for the config copy, metrics and
TensorBoard events, orbax's GCS commit protocol). It must equal the session's ``reference_run``
(no workers, a local folder, never interrupted) bit for bit.

One test, three starts: each start of a run costs about 20 s of imports and cache loads.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests import runs

pytestmark = pytest.mark.slow  # trains a tiny model in subprocesses


WORKDIR = "gs://bucket/run"


def start(bucket_root, data_dir, env, log):
  """A run with two data workers per pipeline and its workdir in the bucket, in
  a new session: its process group holds it and its workers only."""
  argv = runs.command(WORKDIR, data_dir, "--config.data.worker_count=2", bucket_root=bucket_root)
  return runs.start(argv, env, log, start_new_session=True)


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


def run_to_end(bucket_root, data_dir, env, log_path) -> None:
  with open(log_path, "w") as log:
    proc = start(bucket_root, data_dir, env, log)
    try:
      rc = proc.wait(timeout=900)
    finally:
      kill_group(proc.pid)
  assert rc == 0, Path(log_path).read_text()[-3000:]


def preempt(bucket_root, data_dir, env, log_path, after_step: int) -> None:
  """Starts a run, sends SIGTERM to its whole process group once checkpoint
  ``after_step`` is committed, and checks it saved, exited 0 and left nothing behind."""
  with open(log_path, "w") as log:
    proc = start(bucket_root, data_dir, env, log)
    pgid = proc.pid  # the session leader's pid is the group id
    try:
      # orbax's GCS protocol: a step is complete once its commit_success.txt exists.
      runs.wait_for(proc, in_bucket(bucket_root) / "checkpoints" / str(after_step) /
                    "commit_success.txt")
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


def in_bucket(bucket_root) -> Path:
  """The local folder that holds ``WORKDIR``."""
  return Path(bucket_root) / "bucket" / "run"


def test_killed_then_preempted_run_with_workers_in_a_bucket_resumes_exactly(reference_run, tmp_path):
  """SIGKILL to the whole group (a lost VM: nothing saved, maybe a checkpoint
  half written), then a restart preempted by SIGTERM, then a restart to the
  end: the same run as the reference, bit for bit."""
  reference, data_dir, env = reference_run
  root = tmp_path / "bucket_root"
  with open(tmp_path / "b0.log", "w") as log:
    proc = start(root, data_dir, env, log)
    try:
      runs.wait_for(proc, in_bucket(root) / "checkpoints" / "4" / "commit_success.txt")
    finally:
      kill_group(proc.pid)
    proc.wait(timeout=60)
  assert not wait_group_gone(proc.pid)
  preempt(root, data_dir, env, tmp_path / "b1.log", after_step=8)
  assert 8 <= runs.checkpoint_steps(in_bucket(root))[-1] < runs.STEPS
  run_to_end(root, data_dir, env, tmp_path / "b2.log")
  run = in_bucket(root)
  assert json.loads((run / "config.json").read_text())["train"]["num_steps"] == runs.STEPS
  assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 3  # one per start
  # The reference ran without workers, on a local disk: neither changes anything.
  runs.assert_same_run(reference, run)
