"""A run whose workdir is a gs:// bucket: train, checkpoint, preempt, resume, bit for bit.

``tests/fake_gcs.py`` runs ``python -m hero_jax.main`` with every gs:// path
mapped onto a local folder (etils.epath mocked, orbax's TensorStore kvstore
mapped), so the run takes the bucket code paths offline: epath for the
config copy, metrics and TensorBoard events, orbax's GCS commit protocol.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.test_train_resume import _flatten, environment, train_lines

REPO = Path(__file__).resolve().parents[1]
STEPS = 12
pytestmark = pytest.mark.slow


def command(workdir, data_dir, bucket_root=None):
  main = [sys.executable, "-m", "hero_jax.main"]
  if bucket_root is not None:
    main = [sys.executable, str(REPO / "tests" / "fake_gcs.py"), str(bucket_root), "-m",
            "hero_jax.main"]
  return main + [
      "--config", "configs/pretrain_tiny.py", "--workdir", str(workdir),
      f"--config.train.num_steps={STEPS}", "--config.checkpoint_every=4", "--config.log_every=1",
      "--config.eval_every=0", "--config.train.batch_videos=8", "--config.model.cross_layers=1",
      f"--config.data.datasets.synthetic.data_dir={data_dir}",
      "--config.data.synthetic.train_videos=24", "--config.data.synthetic.val_videos=8"]


def wait_for(proc, path: Path, timeout=600):
  deadline = time.time() + timeout
  while not path.exists():
    assert proc.poll() is None, f"run ended (rc {proc.returncode}) before {path} appeared"
    assert time.time() < deadline, f"no {path} after {timeout} s"
    time.sleep(0.05)


def params(checkpoints: Path, step: int) -> dict:
  mngr = ocp.CheckpointManager(checkpoints, item_names=("state", "data", "config"))
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return dict(zip(*_flatten(state)))


def test_bucket_workdir_preempted_and_resumed_exactly(tmp_path):
  env = environment(tmp_path / "jax_cache")
  data_dir, root = tmp_path / "tfds", tmp_path / "bucket_root"
  run = lambda workdir, bucket=None: subprocess.Popen(  # noqa: E731
      command(workdir, data_dir, bucket), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
  with open(tmp_path / "log.txt", "w") as log:
    assert run(tmp_path / "local").wait(timeout=900) == 0

    proc = run("gs://bucket/run", root)
    in_bucket = root / "bucket" / "run"
    # orbax's GCS protocol: a step is complete once its commit_success.txt exists.
    wait_for(proc, in_bucket / "checkpoints" / "4" / "commit_success.txt")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    assert run("gs://bucket/run", root).wait(timeout=900) == 0
  text = (tmp_path / "log.txt").read_text()
  assert "SIGTERM: saved checkpoint" in text, text[-3000:]

  assert json.loads((in_bucket / "config.json").read_text())["train"]["num_steps"] == STEPS
  assert list((in_bucket / "tb").glob("events.out.tfevents.*"))
  local, bucket = train_lines(tmp_path / "local"), train_lines(in_bucket)
  assert sorted(local) == sorted(bucket) == list(range(1, STEPS + 1))
  for step in local:
    assert local[step] == bucket[step], (step, local[step], bucket[step])
  a, b = params(tmp_path / "local" / "checkpoints", STEPS), params(in_bucket / "checkpoints", STEPS)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_bucket_without_the_gcs_extra_is_a_clear_error(tmp_path):
  pytest.importorskip("etils.epath")
  try:
    import gcsfs  # noqa: F401
    pytest.skip("gcsfs is installed: the error is for machines without the gcs extra")
  except ImportError:
    pass
  done = subprocess.run(command("gs://bucket/run", tmp_path / "tfds"), cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert "--workdir gs://bucket/run" in done.stderr and "pip install -e '.[gcs]'" in done.stderr
