"""A run whose workdir is a gs:// bucket: train, checkpoint, preempt, resume, bit for bit.

``tests/fake_gcs.py`` runs ``python -m hero_jax.main`` with every gs:// path
mapped onto a local folder (etils.epath mocked, orbax's TensorStore kvstore
mapped), so the run takes the bucket code paths offline: epath for the
config copy, metrics and TensorBoard events, orbax's GCS commit protocol.
It must equal the session's ``reference_run`` (a local folder) bit for bit.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests import runs


@pytest.mark.slow
def test_bucket_workdir_preempted_and_resumed_exactly(reference_run, tmp_path):
  reference, data_dir, env = reference_run
  root = tmp_path / "bucket_root"
  argv = runs.command("gs://bucket/run", data_dir, bucket_root=root)
  in_bucket = root / "bucket" / "run"
  with open(tmp_path / "log.txt", "w") as log:
    proc = runs.start(argv, env, log)
    # orbax's GCS protocol: a step is complete once its commit_success.txt exists.
    runs.wait_for(proc, in_bucket / "checkpoints" / "4" / "commit_success.txt")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    assert runs.start(argv, env, log).wait(timeout=900) == 0
  text = (tmp_path / "log.txt").read_text()
  assert "SIGTERM: saved checkpoint" in text, text[-3000:]

  assert json.loads((in_bucket / "config.json").read_text())["train"]["num_steps"] == runs.STEPS
  assert len(list((in_bucket / "tb").glob("events.out.tfevents.*"))) == 2  # one per start
  runs.assert_same_run(reference, in_bucket)


def test_bucket_without_the_gcs_extra_is_a_clear_error(tmp_path):
  try:
    import gcsfs  # noqa: F401
    pytest.skip("gcsfs is installed: the error is for machines without the gcs extra")
  except ImportError:
    pass
  done = subprocess.run(runs.command("gs://bucket/run", tmp_path / "tfds"), cwd=runs.REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert "--workdir gs://bucket/run" in done.stderr and "pip install -e '.[gcs]'" in done.stderr
