"""A gs:// workdir without the gcs extra is a clear error. (A whole run in a bucket,
preempted with workers and resumed bit for bit, is ``tests/test_preemption.py``.)"""

from __future__ import annotations

import subprocess

import pytest

from tests import runs


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
