"""Run paths through ``etils.epath``: local folders and ``gs://`` buckets alike.

On a TPU VM there is no shared disk, so the workdir (checkpoints, metrics,
results), datasets and starting weights may live in a bucket. Every path the
run touches goes through ``epath.Path``; ``gs://`` needs the ``gcs`` extra
(``pip install -e '.[gcs]'``: gcsfs, which epath uses without TensorFlow).
"""

from __future__ import annotations

import os

from etils import epath

def is_remote(path) -> bool:
  """A URL (``gs://``, ``s3://``...): no local file system, no append, no ~."""
  return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
  """``path`` as an ``epath.Path``; ``~`` expanded for local paths."""
  text = os.fspath(path)
  return epath.Path(text if is_remote(text) else os.path.expanduser(text))


def absolute(path) -> epath.Path:
  """``resolve``, made absolute for local paths (orbax wants absolute paths)."""
  out = resolve(path)
  return out if is_remote(out) else out.absolute()


def workdir(path, *, create: bool = True) -> epath.Path:
  """The run folder, created; a bucket that cannot be used fails here, at start,
  with the path and the reason, not at the first checkpoint."""
  out = resolve(path)
  if not create:
    return out
  try:
    out.mkdir(parents=True, exist_ok=True)
  except ImportError as e:
    raise ImportError(f"--workdir {path}: {e}; gs:// paths need the gcs extra: "
                      "pip install -e '.[gcs]'") from None
  except Exception as e:  # pylint: disable=broad-except  (gcsfs raises many kinds)
    raise OSError(f"--workdir {path}: cannot create or reach it ({type(e).__name__}: {e}); "
                  "expected a writable local folder or a gs://bucket/folder this machine's "
                  "credentials can write") from e
  return out
