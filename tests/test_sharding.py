"""Meshes: sizes and errors from the config, every device once, slices along the data axis."""

from __future__ import annotations

import dataclasses
import random

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

from configs import common
from hero_jax.train import sharding


@dataclasses.dataclass(frozen=True)
class FakeTpu:
  """What mesh_utils reads of a TPU v4 chip (one core per chip, "megacore")."""
  id: int
  slice_index: int
  coords: tuple
  process_index: int = 0
  core_on_chip: int = 0
  platform: str = "tpu"
  device_kind: str = "TPU v4"


def fake_slices(num_slices: int, dims=(2, 2, 2), seed: int = 0) -> list[FakeTpu]:
  """``num_slices`` slices of ``dims`` chips each, listed in a shuffled order."""
  per_slice = int(np.prod(dims))
  devices = [FakeTpu(id=s * per_slice + i, slice_index=s,
                     coords=tuple(int(c) for c in np.unravel_index(i, dims)))
             for s in range(num_slices) for i in range(per_slice)]
  random.Random(seed).shuffle(devices)
  return devices


def sizes(mesh) -> tuple:
  return tuple(mesh.shape[a] for a in sharding.AXES)


@pytest.mark.parametrize("shape, expected", [
    ({"data": -1}, (8, 1, 1)),
    ({"data": -1, "fsdp": 1, "model": 1}, (8, 1, 1)),
    ({"data": -1, "model": 2}, (4, 1, 2)),
    ({"data": 2, "fsdp": -1, "model": 2}, (2, 2, 2)),
    ({"fsdp": -1}, (1, 8, 1)),
    ({"data": 2, "fsdp": 2, "model": 2}, (2, 2, 2)),
])
def test_mesh_holds_every_device_once(shape, expected):
  mesh = sharding.make_mesh(shape)
  assert mesh.axis_names == sharding.AXES and sizes(mesh) == expected
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
  # Auto axes: shardings come from the logical rules, not from the types of the arrays.
  assert mesh.axis_types == (AxisType.Auto,) * 3


def test_explicit_devices_make_a_smaller_mesh():
  devices = jax.devices()[2:4]
  mesh = sharding.make_mesh({"data": -1}, devices)
  assert sizes(mesh) == (2, 1, 1) and set(mesh.devices.flat) == set(devices)
  assert sizes(sharding.make_mesh({"data": 1}, jax.devices()[:1])) == (1, 1, 1)


def test_the_default_config_makes_a_data_parallel_mesh():
  c = common.base_config(model="tiny")
  mesh = sharding.make_mesh(dict(c.mesh.shape), dcn_data=c.mesh.dcn_data)
  assert sizes(mesh) == (8, 1, 1)


@pytest.mark.parametrize("shape, dcn_data, message", [
    ({"data": 16}, 1, (r"config.mesh.shape \{'data': 16, 'fsdp': 1, 'model': 1\} needs 16 "
                       r"devices, there are 8$")),
    ({"model": 2}, 1, "needs 2 devices, there are 8"),
    ({"batch": 8}, 1, r"config.mesh.shape: unknown axes \['batch'\]"),
    ({"data": -1, "fsdp": -1}, 1, "at most one axis may be -1"),
    ({"data": -1, "model": 3}, 1, "8 devices per slice do not divide by 3"),
    ({"data": 0, "model": -1}, 1, "do not divide by 0"),
    ({"data": 3}, 2, (r"needs 3 devices per slice, there are 4 \(8 devices, "
                      r"config.mesh.dcn_data=2\)")),
    ({"data": -1}, 3, "config.mesh.dcn_data=3 must be a positive divisor of the device count"),
    ({"data": -1}, 0, "config.mesh.dcn_data=0 must be a positive divisor"),
])
def test_bad_shapes_name_the_config_field(shape, dcn_data, message):
  with pytest.raises(ValueError, match=message):
    sharding.ici_sizes(shape, 8, dcn_data)


def test_ici_sizes_resolve_minus_one_per_slice():
  assert sharding.ici_sizes({"data": -1, "model": 2}, 16, 2) == [4, 1, 2]
  assert sharding.ici_sizes({"data": 2, "fsdp": -1}, 64, 4) == [2, 8, 1]


def test_cpu_devices_have_one_slice():
  with pytest.raises(ValueError, match="config.mesh.dcn_data=2 needs devices that know their "
                                       "slice .* cpu devices have no slice_index"):
    sharding.make_mesh({"data": -1}, dcn_data=2)


def test_one_slice_is_ordered_by_topology():
  """jax.make_mesh orders by chip coordinates: the device list's order does not matter."""
  first = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2}, fake_slices(1, seed=0))
  again = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2}, fake_slices(1, seed=1))
  assert [d.id for d in first.devices.flat] == [d.id for d in again.devices.flat]
  assert [d.id for d in first.devices.flat] != [d.id for d in fake_slices(1, seed=0)]


@pytest.mark.parametrize("shape", [{"data": -1}, {"data": -1, "fsdp": 2},
                                   {"data": 2, "fsdp": 2, "model": 2},
                                   {"data": 1, "fsdp": -1}, {"data": 1, "model": -1}])
@pytest.mark.parametrize("num_slices", [2, 4])
def test_data_axis_spans_the_slices(shape, num_slices):
  devices = fake_slices(num_slices)
  mesh = sharding.make_mesh(shape, devices, dcn_data=num_slices)
  ici = sharding.ici_sizes(shape, len(devices), num_slices)
  assert sizes(mesh) == (ici[0] * num_slices, ici[1], ici[2])
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in devices)
  # Slice s holds data rows [s * ici_data, (s + 1) * ici_data): fsdp and model
  # collectives never leave a slice, data's cross slices once per step.
  grid = np.vectorize(lambda d: d.slice_index)(mesh.devices)
  for s in range(num_slices):
    assert (grid[s * ici[0]:(s + 1) * ici[0]] == s).all()
  # Within a slice, the order is each slice's own topology-aware mesh.
  for s in range(1, num_slices):
    rows = mesh.devices[s * ici[0]:(s + 1) * ici[0]]
    first = mesh.devices[:ici[0]]
    assert [d.coords for d in rows.flat] == [d.coords for d in first.flat]


def test_slice_count_must_match_dcn_data():
  devices = fake_slices(2)
  for dcn_data in (1, 4):
    with pytest.raises(ValueError, match=rf"the devices span 2 slice\(s\) but config.mesh."
                                         rf"dcn_data={dcn_data}; set --config.mesh.dcn_data=2"):
      sharding.make_mesh({"data": -1}, devices, dcn_data=dcn_data)
  uneven = devices[:-1]
  with pytest.raises(ValueError, match="slices must have equal device counts"):
    sharding.make_mesh({"data": -1}, uneven, dcn_data=2)


def test_batch_split_names_the_fields():
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "model": 1}, jax.devices()[:8])
  assert sharding.batch_split(mesh, 16) == (8, 16)
  with pytest.raises(ValueError, match=r"config.train.batch_videos=12 must be divisible .* 8"):
    sharding.batch_split(mesh, 12)
