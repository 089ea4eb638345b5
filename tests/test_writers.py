"""Metric writers: TensorBoard (read back by TensorBoard itself), JSONL, the
log, the async wrapper and gs:// workdirs."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import socket
import threading

import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hero_jax.train import writers


def _scalars(logdir) -> dict:
  """``{tag: [(step, value), ...]}`` as TensorBoard reads ``logdir``."""
  acc = EventAccumulator(os.fspath(logdir))
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
          for tag in acc.Tags()["scalars"]}


def _event_files(logdir):
  return sorted(epath.Path(logdir).glob("events.out.tfevents.*"))


# --- TensorBoard ----------------------------------------------------------


def test_tensorboard_round_trip(tmp_path):
  import jax.numpy as jnp
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(0, {"loss": 0.1, "acc": np.float32(0.75)})
    w.write_scalars(jnp.int32(7), {"loss": jnp.float32(1.5), "big": 1e40,
                                   "nan": math.nan})
    w.write_scalars(2**40, {"loss": -math.inf, "t/é": 2})
  got = _scalars(tmp_path)
  f32 = lambda x: float(np.float32(x))  # simple_value is a float32.
  assert got["loss"] == [(0, f32(0.1)), (7, 1.5), (2**40, -math.inf)]
  assert got["acc"] == [(0, 0.75)] and got["t/é"] == [(2**40, 2.0)]
  assert got["big"] == [(7, math.inf)]
  assert math.isnan(got["nan"][0][1])


def test_tensorboard_file_name_and_bad_step(tmp_path):
  with writers.TensorBoardWriter(tmp_path) as w:
    with pytest.raises(TypeError):
      w.write_scalars(1.0, {"x": 1.0})
  (path,) = _event_files(tmp_path)
  assert path == w.path and f".{socket.gethostname()}." in path.name


def test_tensorboard_header_is_on_disk_before_any_write(tmp_path):
  w = writers.TensorBoardWriter(tmp_path)
  assert w.path.stat().length > 0
  w.close()


def test_tensorboard_writers_in_the_same_second_keep_both_files(tmp_path):
  # A quick resume: the second writer must not truncate the first's file.
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(1, {"loss": 1.0})
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(2, {"loss": 2.0})
  assert len(_event_files(tmp_path)) == 2
  assert _scalars(tmp_path)["loss"] == [(1, 1.0), (2, 2.0)]


def test_tensorboard_write_after_close_raises(tmp_path):
  w = writers.TensorBoardWriter(tmp_path)
  w.close()
  w.close()  # Idempotent.
  w.flush()
  with pytest.raises(ValueError, match="closed"):
    w.write_scalars(0, {"x": 1.0})


# --- JSONL and the log ----------------------------------------------------


def test_jsonl_content_and_append_on_reopen(tmp_path):
  path = tmp_path / "sub" / "metrics.jsonl"
  with writers.JsonlWriter(path) as w:
    w.write_scalars(np.int64(1), {"loss": np.float32(0.5), "n": 3})
    w.write_scalars(2, {"loss": math.nan})
  with writers.JsonlWriter(path) as w:  # A resumed run.
    w.write_scalars(3, {"loss": 0.25})
  lines = [json.loads(line) for line in path.read_text().splitlines()]
  assert [line["step"] for line in lines] == [1, 2, 3]
  assert all(isinstance(line["time"], float) and line["time"] > 1e9 for line in lines)
  assert {k: v for k, v in lines[0].items() if k != "time"} == {
      "step": 1, "loss": 0.5, "n": 3.0}
  assert isinstance(lines[0]["n"], float)
  assert math.isnan(lines[1]["loss"]) and lines[2]["loss"] == 0.25


def test_jsonl_flush_reaches_the_file(tmp_path):
  path = tmp_path / "m.jsonl"
  w = writers.JsonlWriter(path)
  w.write_scalars(1, {"x": 1.0})
  w.flush()
  assert json.loads(path.read_text())["x"] == 1.0
  w.close()


def test_jsonl_rejects_reserved_names(tmp_path):
  with writers.JsonlWriter(tmp_path / "m.jsonl") as w:
    with pytest.raises(ValueError, match="clash"):
      w.write_scalars(0, {"step": 1.0})


def test_logging_writer_one_sorted_line(caplog):
  with caplog.at_level(logging.INFO, logger="hero_jax"):
    writers.LoggingWriter().write_scalars(12, {"b": 0.5, "a": np.float32(2)})
  (record,) = caplog.records
  assert record.name == "hero_jax" and record.levelno == logging.INFO
  assert record.getMessage() == "[12] a=2, b=0.5"


# --- Fan-out and async ----------------------------------------------------


class _Recorder:
  """A back end that records its calls; ``gate`` (if set) holds writes."""

  def __init__(self, gate=None, fail=None):
    self.calls, self.gate, self.fail = [], gate, fail or {}

  def _call(self, *call):
    if call[0] in self.fail:
      raise self.fail[call[0]]
    self.calls.append(call)

  def write_scalars(self, step, scalars):
    if self.gate is not None:
      assert self.gate.wait(10)
    self._call("write", step, dict(scalars))

  def flush(self):
    self._call("flush")

  def close(self):
    self._call("close")


def test_multi_writer_fans_out():
  a, b = _Recorder(), _Recorder()
  with writers.MultiWriter([a, b]) as w:
    w.write_scalars(4, {"x": 1.0})
    w.flush()
  expected = [("write", 4, {"x": 1.0}), ("flush",), ("close",)]
  assert a.calls == expected and b.calls == expected


def test_multi_writer_failure_does_not_cost_the_others():
  a, b = _Recorder(fail={"write": OSError("disk full")}), _Recorder()
  w = writers.MultiWriter([a, b])
  with pytest.raises(OSError, match="disk full"):
    w.write_scalars(1, {"x": 1.0})
  assert b.calls == [("write", 1, {"x": 1.0})]


def test_async_write_does_not_wait_and_flush_does():
  gate = threading.Event()
  backend = _Recorder(gate=gate)
  w = writers.AsyncWriter(backend)
  scalars = {"x": 1.0}
  w.write_scalars(1, scalars)  # Returns with the back end still held.
  scalars["x"] = 2.0  # The queued call keeps what was passed.
  w.write_scalars(2, scalars)
  assert backend.calls == []
  threading.Timer(0.2, gate.set).start()
  w.flush()  # Blocks until both writes and the flush ran.
  assert backend.calls == [("write", 1, {"x": 1.0}), ("write", 2, {"x": 2.0}),
                           ("flush",)]
  w.close()
  assert backend.calls[-1] == ("close",)


def test_async_error_surfaces_on_flush_then_recovers():
  backend = _Recorder(fail={"write": OSError("bucket gone")})
  w = writers.AsyncWriter(backend)
  w.write_scalars(1, {"x": 1.0})
  with pytest.raises(OSError, match="bucket gone"):
    w.flush()
  del backend.fail["write"]
  w.write_scalars(2, {"x": 2.0})
  w.flush()  # Reported once, not again.
  assert backend.calls == [("flush",), ("write", 2, {"x": 2.0}), ("flush",)]
  w.close()


def test_async_error_surfaces_on_next_write():
  backend = _Recorder(fail={"write": OSError("bucket gone")})
  w = writers.AsyncWriter(backend)
  w.write_scalars(1, {"x": 1.0})
  w._jobs.join()  # pylint: disable=protected-access  # The thread has failed.
  with pytest.raises(OSError, match="bucket gone"):
    w.write_scalars(2, {"x": 2.0})
  w.close()


@pytest.mark.parametrize("method", ["flush", "close"])
def test_async_error_in_back_end_flush_or_close_surfaces(method):
  w = writers.AsyncWriter(_Recorder(fail={method: RuntimeError(method)}))
  with pytest.raises(RuntimeError, match=method):
    getattr(w, method)()


def test_async_close_then_use():
  backend = _Recorder()
  w = writers.AsyncWriter(backend)
  w.close()
  w.close()  # Idempotent.
  w.flush()  # Nothing left to flush.
  assert backend.calls == [("close",)]
  with pytest.raises(ValueError, match="closed"):
    w.write_scalars(1, {"x": 1.0})


def test_async_writer_dropped_closes_back_end_and_thread():
  backend = _Recorder()
  w = writers.AsyncWriter(backend)
  w.write_scalars(1, {"x": 1.0})
  thread = w._thread  # pylint: disable=protected-access
  del w
  gc.collect()
  thread.join(10)
  assert not thread.is_alive()
  assert backend.calls == [("write", 1, {"x": 1.0}), ("close",)]


def test_async_bad_step_raises_in_caller():
  w = writers.AsyncWriter(_Recorder())
  with pytest.raises(TypeError):
    w.write_scalars(True, {"x": 1.0})
  w.close()


# --- The loop's writer ----------------------------------------------------


def test_create_default_writer_layout(tmp_path, caplog):
  with caplog.at_level(logging.INFO, logger="hero_jax"):
    w = writers.create_default_writer(tmp_path, just_logging=False)
    w.write_scalars(10, {"loss": 2.0})
    w.flush()
    # Flushed means on disk, before the writer is closed.
    assert _scalars(tmp_path / "tb") == {"loss": [(10, 2.0)]}
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["loss"] == 2.0
    assert "[10] loss=2" in caplog.messages
    w.close()
  assert isinstance(w, writers.AsyncWriter)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tb"]


def test_create_default_writer_just_logging_writes_nothing(tmp_path, caplog):
  workdir = tmp_path / "work"
  with caplog.at_level(logging.INFO, logger="hero_jax"):
    with writers.create_default_writer(workdir, just_logging=True) as w:
      w.write_scalars(1, {"loss": 1.0})
      w.flush()
  assert isinstance(w, writers.NullWriter)
  assert not workdir.exists() and not caplog.records


@pytest.fixture
def gcs(tmp_path):
  """gs://... paths served from ``tmp_path/gcs`` through ``mock_epath``;
  yields that folder."""
  root = tmp_path / "gcs"

  def local(path):
    path = os.fspath(path)
    return os.fspath(root / path[len("gs://"):]) if path.startswith("gs://") else path

  def mapped(original, path, *args, **kwargs):
    return original(local(path), *args, **kwargs)

  names = ("open", "exists", "isdir", "listdir", "glob", "makedirs", "mkdir",
           "remove", "stat")
  with epath_testing.mock_epath(**{name: mapped for name in names}):
    yield root


def test_gcs_workdir_written_through_epath(gcs):
  w = writers.create_default_writer("gs://bucket/run", just_logging=False)
  w.write_scalars(1, {"loss": 1.0})
  w.write_scalars(2, {"loss": 0.5})
  w.flush()
  # The objects are complete after a flush, not only after close.
  assert _scalars(gcs / "bucket/run/tb") == {"loss": [(1, 1.0), (2, 0.5)]}
  jsonl = gcs / "bucket/run/metrics.jsonl"
  assert [json.loads(line)["step"] for line in jsonl.read_text().splitlines()] == [1, 2]
  w.close()
  # A resumed run: the JSONL object is rewritten with the old lines first
  # (no append on object stores); the events go to a new object.
  with writers.create_default_writer("gs://bucket/run", just_logging=False) as w:
    w.write_scalars(3, {"loss": 0.25})
  assert [json.loads(line)["step"] for line in jsonl.read_text().splitlines()] == [1, 2, 3]
  assert len(_event_files(gcs / "bucket/run/tb")) == 2
  assert _scalars(gcs / "bucket/run/tb")["loss"] == [(1, 1.0), (2, 0.5), (3, 0.25)]
