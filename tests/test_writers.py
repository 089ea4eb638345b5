"""Metric writers: event files TensorBoard can read, without TF."""

from __future__ import annotations

import json
import math
import socket
import struct

import numpy as np
import pytest

from hero_jax.train import writers


def _event_files(logdir):
  return sorted(logdir.glob("events.out.tfevents.*"))


def _records(data: bytes):
  """Payloads of a TFRecord stream, framing checked with an independent
  (spec-formula) mask, not the module's helper."""
  def masked(b):
    crc = writers.crc32c(b)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
  out, pos = [], 0
  while pos < len(data):
    (n,) = struct.unpack("<Q", data[pos:pos + 8])
    assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked(data[pos:pos + 8])
    payload = data[pos + 12:pos + 12 + n]
    assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == masked(payload)
    out.append(payload)
    pos += 16 + n
  return out


# RFC 3720 (iSCSI) appendix B.4 vectors plus the usual check value.
@pytest.mark.parametrize("data,expected", [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
])
def test_crc32c_known_vectors(data, expected):
  assert writers.crc32c(data) == expected
  assert writers._crc32c_python(data) == expected  # The fallback, always.


def test_first_record_is_file_version_event(tmp_path, monkeypatch):
  monkeypatch.setattr(writers.time, "time", lambda: 1234.5)
  with writers.TensorBoardWriter(tmp_path) as w:
    path = w.path
  assert path.name == f"events.out.tfevents.1234.{socket.gethostname()}"
  (record,) = _records(path.read_bytes())
  # Hand-assembled Event{wall_time=1234.5, file_version="brain.Event:2"}.
  assert record == (b"\x09" + struct.pack("<d", 1234.5)
                    + b"\x1a\x0d" + b"brain.Event:2")


def test_scalar_event_bytes(tmp_path, monkeypatch):
  monkeypatch.setattr(writers.time, "time", lambda: 2.0)
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(300, {"loss": 0.5})
    path = w.path
  record = _records(path.read_bytes())[1]
  value = b"\x0a\x04loss" + b"\x15" + struct.pack("<f", 0.5)
  summary = b"\x0a" + bytes([len(value)]) + value
  assert record == (b"\x09" + struct.pack("<d", 2.0) + b"\x10\xac\x02"
                    + b"\x2a" + bytes([len(summary)]) + summary)


def test_round_trip_scalars(tmp_path):
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(0, {"loss": 0.1, "acc": np.float32(0.75)})
    w.write_scalars(7, {"lr": np.float64(3e-4), "big": 1e40, "nan": math.nan})
    w.write_scalars(2**40, {"neg_inf": -math.inf})
    w.write_scalars(-3, {"t/é": 2})
  got = writers.read_event_scalars(w.path)
  f32 = lambda x: float(np.float32(x))
  assert [(s, t) for s, t, _ in got] == [
      (0, "loss"), (0, "acc"), (7, "lr"), (7, "big"), (7, "nan"),
      (2**40, "neg_inf"), (-3, "t/é")]
  values = [v for _, _, v in got]
  assert values[0] == f32(0.1) and values[0] != 0.1  # float32 precision.
  assert values[1:4] == [0.75, f32(3e-4), math.inf]
  assert math.isnan(values[4])
  assert values[5:] == [-math.inf, 2.0]


def test_jax_scalars_and_bad_step(tmp_path):
  import jax.numpy as jnp
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(jnp.int32(5), {"x": jnp.float32(1.5)})
    with pytest.raises(TypeError):
      w.write_scalars(1.0, {"x": 1.0})
  assert writers.read_event_scalars(w.path) == [(5, "x", 1.5)]


def test_decodes_with_protobuf_runtime(tmp_path):
  """An independent decoder: the protobuf runtime with the Event schema
  declared here, so an encoding mistake cannot cancel out in our reader."""
  pb = pytest.importorskip("google.protobuf")
  del pb
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
  T = descriptor_pb2.FieldDescriptorProto
  fdp = descriptor_pb2.FileDescriptorProto(name="ev_test.proto", package="t")
  def msg(name, fields):
    m = fdp.message_type.add(name=name)
    for fname, num, ftype, label, type_name in fields:
      m.field.add(name=fname, number=num, type=ftype, label=label,
                  type_name=type_name)
  opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
  msg("Value", [("tag", 1, T.TYPE_STRING, opt, None),
                ("simple_value", 2, T.TYPE_FLOAT, opt, None)])
  msg("Summary", [("value", 1, T.TYPE_MESSAGE, rep, ".t.Value")])
  msg("Event", [("wall_time", 1, T.TYPE_DOUBLE, opt, None),
                ("step", 2, T.TYPE_INT64, opt, None),
                ("file_version", 3, T.TYPE_STRING, opt, None),
                ("summary", 5, T.TYPE_MESSAGE, opt, ".t.Summary")])
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fdp)
  Event = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Event"))
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(-2, {"a": 1.25, "b": -4.0})
  first, second = [Event.FromString(r) for r in _records(w.path.read_bytes())]
  assert first.file_version == "brain.Event:2" and first.wall_time > 1e9
  assert second.step == -2
  assert [(v.tag, v.simple_value) for v in second.summary.value] == [
      ("a", 1.25), ("b", -4.0)]


def _corrupt(path, offset):
  data = bytearray(path.read_bytes())
  data[offset] ^= 0x01
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("where,match", [
    ("length", "length CRC"), ("data", "data CRC"), ("data_crc", "data CRC")])
def test_corrupted_byte_raises(tmp_path, where, match):
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(1, {"loss": 1.0})
  assert len(writers.read_event_scalars(w.path)) == 1
  second = len(_records(w.path.read_bytes())[0]) + 16  # Start of record 2.
  n = len(_records(w.path.read_bytes())[1])
  offset = {"length": second + 1, "data": second + 12 + n // 2,
            "data_crc": second + 12 + n + 2}[where]
  _corrupt(w.path, offset)
  with pytest.raises(ValueError, match=match) as e:
    writers.read_event_scalars(w.path)
  assert str(w.path) in str(e.value)


def test_truncated_file_raises(tmp_path):
  with writers.TensorBoardWriter(tmp_path) as w:
    w.write_scalars(1, {"loss": 1.0})
  w.path.write_bytes(w.path.read_bytes()[:-3])
  with pytest.raises(ValueError, match="truncated"):
    writers.read_event_scalars(w.path)


def test_write_after_close_raises(tmp_path):
  w = writers.TensorBoardWriter(tmp_path)
  w.close()
  w.close()  # Idempotent.
  with pytest.raises(ValueError, match="closed"):
    w.write_scalars(0, {"x": 1.0})


def test_jsonl_content_and_append_on_reopen(tmp_path):
  path = tmp_path / "sub" / "metrics.jsonl"
  with writers.JsonlWriter(path) as w:
    w.write_scalars(np.int64(1), {"loss": np.float32(0.5), "n": 3})
    w.write_scalars(2, {"loss": math.nan})
  with writers.JsonlWriter(path) as w:  # A resumed run.
    w.write_scalars(3, {"loss": 0.25})
  lines = [json.loads(l) for l in path.read_text().splitlines()]
  assert [l["step"] for l in lines] == [1, 2, 3]
  assert all(isinstance(l["time"], float) and l["time"] > 1e9 for l in lines)
  assert {k: v for k, v in lines[0].items() if k != "time"} == {
      "step": 1, "loss": 0.5, "n": 3.0}
  assert isinstance(lines[0]["n"], float)
  assert math.isnan(lines[1]["loss"]) and lines[2]["loss"] == 0.25


def test_jsonl_rejects_reserved_names(tmp_path):
  with writers.JsonlWriter(tmp_path / "m.jsonl") as w:
    with pytest.raises(ValueError, match="clash"):
      w.write_scalars(0, {"step": 1.0})


class _Recorder:
  def __init__(self):
    self.calls = []

  def write_scalars(self, step, scalars):
    self.calls.append(("write", step, dict(scalars)))

  def flush(self):
    self.calls.append(("flush",))

  def close(self):
    self.calls.append(("close",))


def test_multi_writer_fans_out():
  a, b = _Recorder(), _Recorder()
  with writers.MultiWriter([a, b]) as w:
    w.write_scalars(4, {"x": 1.0})
    w.flush()
  expected = [("write", 4, {"x": 1.0}), ("flush",), ("close",)]
  assert a.calls == expected and b.calls == expected


def test_create_default_writer_layout(tmp_path):
  with writers.create_default_writer(tmp_path, just_logging=False) as w:
    w.write_scalars(10, {"loss": 2.0})
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tb"]
  (event_file,) = _event_files(tmp_path / "tb")
  assert event_file.name.endswith("." + socket.gethostname())
  assert writers.read_event_scalars(event_file) == [(10, "loss", 2.0)]
  (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert json.loads(line)["loss"] == 2.0


def test_create_default_writer_just_logging_writes_nothing(tmp_path):
  workdir = tmp_path / "work"
  with writers.create_default_writer(workdir, just_logging=True) as w:
    w.write_scalars(1, {"loss": 1.0})
    w.flush()
  assert isinstance(w, writers.NullWriter)
  assert not workdir.exists()
