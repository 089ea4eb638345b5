"""Exact resume: SIGKILL mid-run, SIGTERM (preemption), restart: same losses and params, bit for bit.

The runs are ``tests/runs.py``'s ``python -m hero_jax.main`` subprocesses (2
CPU devices, data parallel), compared with the session's uninterrupted
``reference_run``.
"""

import signal

import pytest

from tests import runs

pytestmark = pytest.mark.slow  # trains a tiny model in several subprocesses


def test_killed_and_preempted_run_resumes_exactly(reference_run, tmp_path):
  reference, data_dir, env = reference_run
  resumed = tmp_path / "run"
  argv = runs.command(resumed, data_dir)
  with open(tmp_path / "log.txt", "w") as log:
    proc = runs.start(argv, env, log)
    runs.wait_for(proc, resumed / "checkpoints" / "4")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    proc = runs.start(argv, env, log)
    runs.wait_for(proc, resumed / "checkpoints" / "8")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0  # preemption: save, then exit cleanly
    assert 8 <= runs.checkpoint_steps(resumed)[-1] < runs.STEPS

    assert runs.start(argv, env, log).wait(timeout=900) == 0
  log_text = (tmp_path / "log.txt").read_text()
  assert "SIGTERM: saved checkpoint" in log_text, log_text[-3000:]
  runs.assert_same_run(reference, resumed)
