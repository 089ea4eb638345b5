"""Metric writers for the training loop, without TensorFlow.

``clu.metric_writers`` pulls in TensorFlow just to write TensorBoard event
files, and this project does not depend on TF. An event file is only a
TFRecord stream of ``Event`` protobufs, and a scalar needs a handful of
fields, so this module encodes them by hand:

* TFRecord framing: per record, uint64 LE length, masked CRC32C of the
  length bytes, the data, masked CRC32C of the data.
* ``Event``: ``wall_time`` (1, double), ``step`` (2, int64),
  ``file_version`` (3, string), ``summary`` (5, message).
* ``Summary.value`` (1, message) -> ``Value``: ``tag`` (1, string),
  ``simple_value`` (2, float).

``read_event_scalars`` decodes what we write (and skips fields it does not
know), so tests and users can read metrics back without TF either.
``JsonlWriter`` keeps a plain-text copy that any tool can parse.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import socket
import struct
import time
from typing import (BinaryIO, Iterator, List, Mapping, Optional, Sequence,
                    TextIO, Tuple, Union)

PathLike = Union[str, os.PathLike]

FILE_VERSION = "brain.Event:2"
_CRC_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

# Protobuf wire types.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


# --- CRC32C ---------------------------------------------------------------


def _crc32c_table() -> Tuple[int, ...]:
  poly = 0x82F63B78  # Castagnoli, reflected.
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC_TABLE = _crc32c_table()


def _crc32c_python(data: bytes) -> int:
  crc = _U32
  for b in data:
    crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ _U32


def _native_crc32c():
  """A C implementation if one is already installed; records are small, so
  the pure-Python table is only a speed fallback, never a correctness one."""
  try:
    import google_crc32c  # pylint: disable=g-import-not-at-top
    return google_crc32c.value
  except ImportError:
    pass
  try:
    import crc32c as crc32c_mod  # pylint: disable=g-import-not-at-top
    return crc32c_mod.crc32c
  except ImportError:
    return None


_NATIVE_CRC32C = _native_crc32c()


def crc32c(data: bytes) -> int:
  """CRC32C (Castagnoli) of ``data``, as TFRecord framing uses it."""
  if _NATIVE_CRC32C is not None:
    return int(_NATIVE_CRC32C(bytes(data)))
  return _crc32c_python(data)


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: a CRC stored next to CRC'd data is masked so the
  record does not look like valid data to a CRC of itself."""
  crc = crc32c(data)
  return ((((crc >> 15) | (crc << 17)) & _U32) + _CRC_MASK_DELTA) & _U32


def _frame_record(data: bytes) -> bytes:
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


# --- Protobuf encoding ----------------------------------------------------


def _varint(value: int) -> bytes:
  value &= _U64  # Negative int64: two's complement, 10 bytes.
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
  return _key(field, _LEN) + _varint(len(payload)) + payload


def _float32_bytes(value: float) -> bytes:
  """float32 LE; doubles beyond float32 range become +-inf like a C cast
  (``struct`` would raise instead)."""
  try:
    return struct.pack("<f", value)
  except OverflowError:
    return struct.pack("<f", math.copysign(math.inf, value))


def _scalar_value(tag: str, value: float) -> bytes:
  return (_len_field(1, tag.encode("utf-8"))
          + _key(2, _FIXED32) + _float32_bytes(value))


def _event(wall_time: float, *, step: Optional[int] = None,
           file_version: Optional[str] = None,
           summary: Optional[bytes] = None) -> bytes:
  out = _key(1, _FIXED64) + struct.pack("<d", wall_time)
  if step is not None:
    out += _key(2, _VARINT) + _varint(step)
  if file_version is not None:
    out += _len_field(3, file_version.encode("utf-8"))
  if summary is not None:
    out += _len_field(5, summary)
  return out


def _scalar_event(wall_time: float, step: int,
                  scalars: Mapping[str, float]) -> bytes:
  summary = b"".join(_len_field(1, _scalar_value(str(tag), float(value)))
                     for tag, value in scalars.items())
  return _event(wall_time, step=step, summary=summary)


def _check_step(step) -> int:
  if isinstance(step, bool):
    raise TypeError(f"step must be an int, got {step!r}")
  try:
    return int(step.__index__())
  except AttributeError:
    raise TypeError(f"step must be an int, got {step!r}") from None


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


class _FileWriter(_Writer):
  """A writer backed by one open file (``self._file``, None once closed)."""

  _file = None

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


class TensorBoardWriter(_FileWriter):
  """Scalars to a TensorBoard event file, written without TF.

  The file is ``events.out.tfevents.<int time>.<hostname>`` in ``logdir``
  (created if needed); TensorBoard finds any file with ``tfevents`` in its
  name. It is opened for append, so a second writer started in the same
  second on the same host adds to the same file instead of clobbering it.
  Non-finite values are written as they are (NaN/inf are valid floats).
  """

  def __init__(self, logdir: PathLike):
    self.logdir = pathlib.Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    self.path = self.logdir / (
        f"events.out.tfevents.{int(now)}.{socket.gethostname()}")
    self._file: BinaryIO = open(self.path, "ab")
    self._write(_event(now, file_version=FILE_VERSION))
    self.flush()  # So TensorBoard sees a valid file from the start.

  def _write(self, event: bytes) -> None:
    if self._file is None:
      raise ValueError(f"write to closed TensorBoardWriter ({self.path})")
    self._file.write(_frame_record(event))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._write(_scalar_event(time.time(), _check_step(step), scalars))


class JsonlWriter(_FileWriter):
  """One JSON line ``{"step", "time", **scalars}`` per ``write_scalars``.

  A plain-text copy of the metrics that needs no decoder. The file is opened
  for append, so a resumed run continues the same file. Values go through
  ``float()`` (numpy/jax scalars included); NaN/inf are written as Python's
  ``json`` does (``NaN``, ``Infinity``), which ``json.loads`` reads back.
  """

  _RESERVED = ("step", "time")

  def __init__(self, path: PathLike):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file: TextIO = open(self.path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._file is None:
      raise ValueError(f"write to closed JsonlWriter ({self.path})")
    clash = [k for k in self._RESERVED if k in scalars]
    if clash:
      raise ValueError(f"scalar names {clash} clash with the line's own keys")
    line = {"step": _check_step(step), "time": time.time()}
    line.update((str(k), float(v)) for k, v in scalars.items())
    self._file.write(json.dumps(line) + "\n")


class MultiWriter(_Writer):
  """Fans every call out to several writers, in order."""

  def __init__(self, writers: Sequence[_Writer]):
    self.writers = tuple(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


class NullWriter(_Writer):
  """Discards everything: what non-zero processes get, so the loop can call
  the writer unconditionally while only process 0 touches the disk."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    del step, scalars


def create_default_writer(workdir: PathLike, *, just_logging: bool) -> _Writer:
  """The training loop's writer.

  Process 0 (``just_logging=False``) writes ``workdir/tb/events.out...`` and
  ``workdir/metrics.jsonl``; other processes (``just_logging=True``, i.e.
  ``jax.process_index() != 0``) get a ``NullWriter``. The caller passes the
  flag so this module does not import jax.
  """
  if just_logging:
    return NullWriter()
  workdir = pathlib.Path(workdir)
  return MultiWriter([TensorBoardWriter(workdir / "tb"),
                      JsonlWriter(workdir / "metrics.jsonl")])


# --- Reading back ---------------------------------------------------------


def _read_records(path: pathlib.Path) -> Iterator[bytes]:
  data = path.read_bytes()
  pos = 0
  while pos < len(data):
    if pos + 12 > len(data):
      raise ValueError(f"{path}: truncated record header at byte {pos}")
    length_bytes = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", length_bytes)
    (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
    if masked_crc32c(length_bytes) != length_crc:
      raise ValueError(f"{path}: length CRC mismatch at byte {pos}")
    start, end = pos + 12, pos + 12 + length
    if end + 4 > len(data):
      raise ValueError(f"{path}: truncated record at byte {pos}")
    payload = data[start:end]
    (data_crc,) = struct.unpack("<I", data[end:end + 4])
    if masked_crc32c(payload) != data_crc:
      raise ValueError(f"{path}: data CRC mismatch at byte {pos}")
    yield payload
    pos = end + 4


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
  value, shift = 0, 0
  while True:
    if pos >= len(buf) or shift > 63:
      raise ValueError("bad varint")
    b = buf[pos]
    value |= (b & 0x7F) << shift
    pos += 1
    shift += 7
    if not b & 0x80:
      return value & _U64, pos


def _fields(buf: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
  """``(field, wire_type, raw)`` of one message; raw is an int for varints,
  bytes otherwise. Unknown fields are yielded too, so callers can skip them."""
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    field, wire_type = key >> 3, key & 7
    if wire_type == _VARINT:
      raw, pos = _read_varint(buf, pos)
    elif wire_type in (_FIXED64, _FIXED32):
      size = 8 if wire_type == _FIXED64 else 4
      raw, pos = buf[pos:pos + size], pos + size
      if len(raw) != size:
        raise ValueError("truncated fixed-size field")
    elif wire_type == _LEN:
      size, pos = _read_varint(buf, pos)
      raw, pos = buf[pos:pos + size], pos + size
      if len(raw) != size:
        raise ValueError("truncated length-delimited field")
    else:
      raise ValueError(f"unsupported wire type {wire_type}")
    yield field, wire_type, raw


def _decode_value(buf: bytes) -> Tuple[str, float]:
  tag, value = "", None
  for field, wire_type, raw in _fields(buf):
    if field == 1 and wire_type == _LEN:
      tag = raw.decode("utf-8")
    elif field == 2 and wire_type == _FIXED32:
      (value,) = struct.unpack("<f", raw)
  return tag, value


def _decode_scalars(event: bytes) -> List[Tuple[int, str, float]]:
  step, values = 0, []
  for field, wire_type, raw in _fields(event):
    if field == 2 and wire_type == _VARINT:
      step = raw - (1 << 64) if raw >> 63 else raw
    elif field == 5 and wire_type == _LEN:
      values += [_decode_value(v) for f, w, v in _fields(raw)
                 if f == 1 and w == _LEN]
  return [(step, tag, value) for tag, value in values if value is not None]


def read_event_scalars(path: PathLike) -> List[Tuple[int, str, float]]:
  """``(step, tag, value)`` of every ``simple_value`` in an event file.

  Reads what ``TensorBoardWriter`` writes, without TF; both CRCs of every
  record are checked and a mismatch, truncation or undecodable record raises
  ``ValueError`` naming the file. Values are float32 widened to float.
  """
  path = pathlib.Path(path)
  out = []
  for i, record in enumerate(_read_records(path)):
    try:
      out += _decode_scalars(record)
    except (ValueError, UnicodeDecodeError) as e:
      raise ValueError(f"{path}: record {i} does not decode: {e}") from None
  return out
