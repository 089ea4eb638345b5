"""An offline ``gs://`` bucket for tests: every ``gs://<bucket>/<path>`` is
``<root>/<bucket>/<path>`` on the local disk.

``etils.epath.testing.mock_epath`` swaps epath's back ends (our code, orbax's
metadata, TFDS) for the local one with each call's paths mapped; orbax hands
array data to TensorStore, whose own GCS driver cannot be mocked, so its
kvstore path is mapped the same way, and orbax's question to the GCS API
(does the bucket have a hierarchical namespace?) is answered "no", as for
a plain bucket. Everything else runs the code a bucket
run runs: orbax still sees a gs:// path (and uses its GCS commit protocol).

  python tests/fake_gcs.py <root> -m hero_jax.main --workdir gs://bucket/run ...
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from unittest import mock

PREFIX = "gs://"


def _local(root: Path, path) -> str:
  text = os.fspath(path)
  if text.startswith(PREFIX):
    return str(root / text[len(PREFIX):])
  if text.startswith("gs:/"):   # os.path.normpath's form of a gs:// path
    return str(root / text[len("gs:/"):])
  return text


def _remote(root: Path, path) -> str:
  text = os.fspath(path)
  base = str(root) + os.sep
  return PREFIX + text[len(base):] if text.startswith(base) else text


@contextlib.contextmanager
def fake_gcs(root):
  from etils.epath import testing
  from orbax.checkpoint._src.path import gcs_utils
  from orbax.checkpoint._src.serialization import tensorstore_utils
  root = Path(root)
  root.mkdir(parents=True, exist_ok=True)

  def one(fn, path, *args, **kwargs):
    return fn(_local(root, path), *args, **kwargs)

  def two(fn, path, dst, *args, **kwargs):
    return fn(_local(root, path), _local(root, dst), *args, **kwargs)

  def glob(fn, pattern):
    return [_remote(root, p) for p in fn(_local(root, pattern))]

  def walk(fn, top, **kwargs):
    for dirpath, dirs, files in fn(_local(root, top), **kwargs):
      yield _remote(root, dirpath), dirs, files

  normalize = tensorstore_utils._normalize_path  # pylint: disable=protected-access
  with testing.mock_epath(
      open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, rmtree=one,
      remove=one, stat=one, rename=two, replace=two, copy=two, glob=glob, walk=walk), \
      mock.patch.object(tensorstore_utils, "_normalize_path",
                        lambda path: normalize(_local(root, path))), \
      mock.patch.object(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False):
    yield root


def main(argv):
  """``fake_gcs.py <root> -m module args...``: runs a module with the fake bucket."""
  import runpy
  root, flag, module, *rest = argv[1:]
  assert flag == "-m", argv
  sys.argv = [module, *rest]
  with fake_gcs(root):
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main(sys.argv)
