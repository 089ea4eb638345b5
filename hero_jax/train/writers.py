"""Metric writers for the training loop: TensorBoard, JSONL and the log.

``clu.metric_writers`` cannot be imported without TensorFlow, which this
project does not depend on, so the loop talks to one small interface of its
own (``write_scalars(step, scalars)``, ``flush()``, ``close()``) with three
back ends:

* ``TensorBoardWriter``: event files under ``workdir/tb``, encoded by
  tensorboardX (no TF needed).
* ``JsonlWriter``: ``workdir/metrics.jsonl``, one ``{"step", "time",
  **scalars}`` line per call, appended across resumes.
* ``LoggingWriter``: one INFO line of the scalars on the ``hero_jax`` logger.

``create_default_writer`` wraps them in an ``AsyncWriter`` so file I/O (a
round trip to GCS for a ``gs://`` workdir) never stalls the training thread.

Paths go through ``etils.epath``, so the workdir may be ``gs://``. Object
stores have no append, so a file there is kept in memory and rewritten whole
on every ``flush()`` (``_RewriteFile``); metrics files stay small (a few MB
for a long run), and one object upload is atomic, so a run killed mid-flush
keeps the previous version instead of a torn file.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import weakref
from typing import Mapping, Sequence, Union

from etils import epath

from hero_jax import paths
from tensorboardX import event_file_writer, record_writer
from tensorboardX.proto import event_pb2, summary_pb2

PathLike = Union[str, os.PathLike]

log = logging.getLogger("hero_jax")


def _check_step(step) -> int:
  if isinstance(step, bool):
    raise TypeError(f"step must be an int, got {step!r}")
  try:
    return int(step.__index__())
  except AttributeError:
    raise TypeError(f"step must be an int, got {step!r}") from None


def _is_local(path: PathLike) -> bool:
  return not paths.is_remote(path)


# --- Files that survive a kill, locally and on object stores ---------------


class _AppendFile:
  """A local file opened for append; ``flush()`` reaches the disk (fsync)."""

  def __init__(self, path: epath.Path):
    self._file = path.open("ab")

  def write(self, data: bytes) -> None:
    self._file.write(data)

  def flush(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self._file.close()


class _RewriteFile:
  """A file on an object store (``gs://``), which has no append: the content
  (including what the file already held) is kept in memory and uploaded
  whole on every ``flush()`` that has something new."""

  def __init__(self, path: epath.Path):
    self._path = path
    exists = path.exists()
    self._data = bytearray(path.read_bytes() if exists else b"")
    self._dirty = not exists  # Create it at the first flush.

  def write(self, data: bytes) -> None:
    self._data += data
    self._dirty = True

  def flush(self) -> None:
    if self._dirty:
      self._path.write_bytes(bytes(self._data))
      self._dirty = False

  def close(self) -> None:
    self.flush()


def _open_for_append(path: epath.Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  return _AppendFile(path) if _is_local(path) else _RewriteFile(path)


class _EpathRecordWriterFactory:
  """tensorboardX's hook for ``gs://`` (and ``s3://``) event files. Its own
  writers need ``google-cloud-storage``/``boto3`` and credentials of their
  own; this one goes through epath like every other file of the run (and
  ``mock_epath`` in tests), with the same rewrite-on-flush as theirs."""

  def open(self, path: str) -> _RewriteFile:
    return _RewriteFile(epath.Path(path))

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


for _prefix in ("gs", "s3"):
  record_writer.register_writer_factory(_prefix, _EpathRecordWriterFactory())


# --- Writers --------------------------------------------------------------


class _Writer:
  """Context-manager plumbing shared by every writer."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    raise NotImplementedError

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class TensorBoardWriter(_Writer):
  """Scalars to a new TensorBoard event file in ``logdir``.

  tensorboardX's ``EventsWriter`` (synchronous) is used rather than its
  ``SummaryWriter``: the latter queues events to a thread of its own whose
  ``flush()`` does not wait for that queue and whose errors are lost, and
  ``AsyncWriter`` already keeps I/O off the training thread. The file name
  gets a suffix of nanoseconds and the pid: tensorboardX's name (seconds +
  host) is opened for write, so two writers started in the same second (a
  quick resume) would truncate each other's file, and TensorBoard reads the
  files of a folder in name order, which the nanoseconds keep chronological.
  """

  def __init__(self, logdir: PathLike):
    logdir = epath.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    self._events = event_file_writer.EventsWriter(
        os.fspath(logdir / "events"), filename_suffix=f".{time.time_ns()}.{os.getpid()}")
    self.path = epath.Path(self._events._file_name)  # pylint: disable=protected-access
    self._closed = False
    self.flush()  # TensorBoard sees a valid (header-only) file from the start.

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._closed:
      raise ValueError(f"write to closed TensorBoardWriter ({self.path})")
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=str(tag), simple_value=float(value))
        for tag, value in scalars.items()])
    self._events.write_event(event_pb2.Event(
        wall_time=time.time(), step=_check_step(step), summary=summary))

  def flush(self) -> None:
    if not self._closed:
      self._events.flush()

  def close(self) -> None:
    if not self._closed:
      self._events.close()
      self._closed = True


class JsonlWriter(_Writer):
  """One JSON line ``{"step", "time", **scalars}`` per ``write_scalars``.

  A plain-text copy of the metrics that needs no decoder. The file is
  appended to, so a resumed run continues it. Values go through ``float()``
  (numpy/jax scalars included); NaN/inf are written as Python's ``json``
  does (``NaN``, ``Infinity``), which ``json.loads`` reads back.
  """

  _RESERVED = ("step", "time")

  def __init__(self, path: PathLike):
    self.path = epath.Path(path)
    self._file = _open_for_append(self.path)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._file is None:
      raise ValueError(f"write to closed JsonlWriter ({self.path})")
    clash = [k for k in self._RESERVED if k in scalars]
    if clash:
      raise ValueError(f"scalar names {clash} clash with the line's own keys")
    line = {"step": _check_step(step), "time": time.time()}
    line.update((str(k), float(v)) for k, v in scalars.items())
    self._file.write((json.dumps(line) + "\n").encode("utf-8"))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


class LoggingWriter(_Writer):
  """One INFO line of the scalars (sorted by name) on the ``hero_jax``
  logger: the progress log, for runs nobody watches in TensorBoard."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    values = ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(scalars.items()))
    log.info("[%d] %s", _check_step(step), values)


class MultiWriter(_Writer):
  """Fans every call out to several writers, in order. A writer that raises
  does not cost the others their call; the first error is re-raised after."""

  def __init__(self, writers: Sequence[_Writer]):
    self.writers = tuple(writers)

  def _each(self, method: str, *args) -> None:
    error = None
    for w in self.writers:
      try:
        getattr(w, method)(*args)
      except Exception as e:  # pylint: disable=broad-except
        if error is None:
          error = e
        else:
          log.error("metric writer %r also failed: %r", w, e)
    if error is not None:
      raise error

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._each("write_scalars", step, scalars)

  def flush(self) -> None:
    self._each("flush")

  def close(self) -> None:
    self._each("close")


_STOP = "stop"


def _drain(jobs: queue.Queue, writer: _Writer, errors: list) -> None:
  """The writer thread: runs ``(method, args)`` jobs in order, keeping the
  exceptions for the caller's next call, until ``_STOP`` (then closes)."""
  while True:
    method, args = jobs.get()
    try:
      getattr(writer, "close" if method == _STOP else method)(*args)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
    finally:
      jobs.task_done()
    if method == _STOP:  # Even if close failed: the caller is joining.
      return


def _stop(jobs: queue.Queue, thread: threading.Thread) -> None:
  jobs.put((_STOP, ()))
  if threading.current_thread() is not thread:
    thread.join()


class AsyncWriter(_Writer):
  """Runs another writer's calls on a background thread, in order.

  ``write_scalars`` only queues (a copy of) the scalars; ``flush()`` blocks
  until everything queued so far is written and flushed, so a run killed
  after a flush keeps its metrics. An exception in the thread is raised by
  the caller's next ``write_scalars``/``flush``/``close`` (further ones
  meanwhile are logged), never lost. Like clu's ``AsyncWriter``, without TF.
  """

  def __init__(self, writer: _Writer, *, max_queue: int = 1000):
    self._jobs = queue.Queue(max_queue)  # Bounded: a stuck disk slows training, not RAM.
    self._errors = []
    thread = threading.Thread(target=_drain, args=(self._jobs, writer, self._errors),
                              name="hero_jax-metric-writer", daemon=True)
    thread.start()
    self._thread = thread
    # The thread holds the queue and the writer but not self, so a dropped
    # AsyncWriter is collected; this then closes the back end and ends the
    # thread (also at interpreter exit) instead of leaking both.
    self._finalizer = weakref.finalize(self, _stop, self._jobs, thread)

  def _raise_error(self) -> None:
    if not self._errors:
      return
    first, *others = list(self._errors)
    del self._errors[:1 + len(others)]
    for e in others:
      log.error("metric writer also failed: %r", e)
    raise first

  def _put(self, method: str, *args) -> None:
    self._raise_error()
    if not self._finalizer.alive:
      raise ValueError("write to closed AsyncWriter")
    self._jobs.put((method, args))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._put("write_scalars", _check_step(step), dict(scalars))

  def flush(self) -> None:
    # Flushes even when an earlier job failed, so the other back ends still
    # reach the disk, then raises that failure. Closed: flushed by close.
    if self._finalizer.alive:
      self._jobs.put(("flush", ()))
      self._jobs.join()
    self._raise_error()

  def close(self) -> None:
    self._finalizer()  # Once: queues the stop and waits for the thread.
    self._raise_error()


class NullWriter(_Writer):
  """Discards everything: what non-zero processes get, so the loop can call
  the writer unconditionally while only process 0 touches the disk."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    del step, scalars


def create_default_writer(workdir: PathLike, *, just_logging: bool) -> _Writer:
  """The training loop's writer.

  Process 0 (``just_logging=False``) gets an ``AsyncWriter`` over
  ``workdir/tb/events.out...``, ``workdir/metrics.jsonl`` and the log; other
  processes (``just_logging=True``, i.e. ``jax.process_index() != 0``) get a
  ``NullWriter``, as every host computes the same (global) metrics. The
  caller passes the flag so this module does not import jax.
  """
  if just_logging:
    return NullWriter()
  workdir = epath.Path(workdir)
  return AsyncWriter(MultiWriter([TensorBoardWriter(workdir / "tb"),
                                  JsonlWriter(workdir / "metrics.jsonl"),
                                  LoggingWriter()]))
