"""The device mesh, logical axis rules and the shardings of state and batches.

Mesh axes: ``data`` (batch only), ``fsdp`` (batch and parameter shards),
``model`` (tensor parallel). The model names its parameter and activation
axes logically (``embed``, ``mlp``, ``joined_kv``, ``vocab``, ``batch``,
``length``...); the config's rules map them to mesh axes, so FSDP and tensor
parallelism are a config change. Results do not depend on the mesh: the
losses reduce over the global batch.

Devices are placed by topology (``jax.make_mesh``); on a multi-slice TPU pod
``data`` also spans the slices (``config.mesh.dcn_data``), so only its
traffic crosses the slower data-centre network.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Data parallel: batch over data x fsdp; with fsdp > 1 parameters are sharded
# over their 'embed' axis; with model > 1 the MLP, attention heads and the
# vocabulary are split (tensor parallel).
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("joined_kv", "model"),
    ("vocab", "model"),
)


def make_mesh(shape: dict, devices=None, dcn_data: int = 1) -> Mesh:
  """A mesh with axes ``data, fsdp, model`` in a topology-aware device order.

  ``shape`` is one slice's (ICI) mesh; one size may be -1 (the rest of the
  slice). With ``dcn_data`` > 1 slices (multi-slice TPU pods) the ``data``
  axis also spans the slices: its global size is ``shape['data'] x dcn_data``
  and ``fsdp`` / ``model`` collectives stay on a slice's fast interconnect.
  """
  devices, dcn_data = list(jax.devices() if devices is None else devices), int(dcn_data)
  slices = _slices(devices, dcn_data)  # first: its error says what dcn_data should be
  sizes = ici_sizes(shape, len(devices), dcn_data)
  auto = (AxisType.Auto,) * len(AXES)
  if dcn_data == 1:
    return jax.make_mesh(sizes, AXES, axis_types=auto, devices=devices)
  dcn = [dcn_data if a == "data" else 1 for a in AXES]
  # Split physical axes only where a slice's torus cannot hold the shape otherwise.
  grid = mesh_utils.create_hybrid_device_mesh(sizes, dcn, [d for s in slices for d in s],
                                              allow_split_physical_axes=True)
  return Mesh(grid, AXES, axis_types=auto)


def mesh_devices(num_devices: int) -> list:
  """The first ``num_devices`` devices (0: all), for ``config.mesh.num_devices``."""
  devices = jax.devices()
  if num_devices == 0:
    return devices
  if jax.process_count() > 1:
    raise ValueError(f"config.mesh.num_devices={num_devices}: a subset of the devices works in a "
                     f"single process only; this run has {jax.process_count()} (use 0: all)")
  if not 0 < num_devices <= len(devices):
    raise ValueError(f"config.mesh.num_devices={num_devices} must be 0 (all) or 1..{len(devices)}")
  return devices[:num_devices]


def ici_sizes(shape: dict, num_devices: int, dcn_data: int = 1) -> list[int]:
  """One slice's axis sizes (``AXES`` order), -1 resolved, checked against the devices."""
  unknown = [k for k in shape if k not in AXES]
  if unknown:
    raise ValueError(f"config.mesh.shape: unknown axes {unknown}; axes are {AXES}")
  if dcn_data < 1 or num_devices % dcn_data:
    raise ValueError(f"config.mesh.dcn_data={dcn_data} must be a positive divisor of the "
                     f"device count ({num_devices})")
  per_slice = num_devices // dcn_data
  sizes = [int(shape.get(a, 1)) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh.shape: at most one axis may be -1, got "
                     f"{dict(zip(AXES, sizes))}")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if known < 1 or per_slice % known:
      raise ValueError(f"config.mesh.shape {dict(zip(AXES, sizes))}: the -1 axis cannot take "
                       f"the rest, {per_slice} devices per slice do not divide by {known}")
    sizes[sizes.index(-1)] = per_slice // known
  if math.prod(sizes) != per_slice or min(sizes) < 1:
    where = (f"devices, there are {num_devices}" if dcn_data == 1 else
             f"devices per slice, there are {per_slice} ({num_devices} devices, "
             f"config.mesh.dcn_data={dcn_data})")
    raise ValueError(f"config.mesh.shape {dict(zip(AXES, sizes))} needs {math.prod(sizes)} "
                     f"{where}")
  return sizes


def _slices(devices: Sequence, dcn_data: int) -> list[list]:
  """The devices grouped by ``slice_index``, checked against ``config.mesh.dcn_data``."""
  if not hasattr(devices[0], "slice_index"):
    if dcn_data > 1:
      raise ValueError(f"config.mesh.dcn_data={dcn_data} needs devices that know their slice "
                       f"(multi-slice TPU); {devices[0].platform} devices have no slice_index")
    return [devices]
  groups: dict = {}
  for d in devices:
    groups.setdefault(d.slice_index, []).append(d)
  if len(groups) != dcn_data:
    # jax's own errors here name neither the config field nor the value to set.
    raise ValueError(f"the devices span {len(groups)} slice(s) but config.mesh.dcn_data="
                     f"{dcn_data}; set --config.mesh.dcn_data={len(groups)}")
  counts = {k: len(v) for k, v in sorted(groups.items())}
  if len(set(counts.values())) > 1:
    raise ValueError(f"slices must have equal device counts, got {counts} (slice_index: count)")
  return [groups[k] for k in sorted(groups)]


def batch_split(mesh: Mesh, batch_videos: int, pack_videos: int = 1) -> tuple[int, int]:
  """(batch shards = global data x fsdp, videos each process feeds per micro-step).
  ``pack_videos``: a pack group (``layout.pack_videos``) must not span two shards."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if shards % jax.process_count():
    # Each process must own whole batch shards: it feeds its own videos.
    raise ValueError(f"config.mesh: data x fsdp = {shards} batch shards (data includes "
                     f"mesh.dcn_data) must be a multiple of the process count "
                     f"({jax.process_count()})")
  if batch_videos % shards:
    raise ValueError(f"config.train.batch_videos={batch_videos} must be divisible by the "
                     f"batch shards (data x fsdp = {shards})")
  if (batch_videos // shards) % pack_videos:
    raise ValueError(f"config.layout.pack_videos={pack_videos} must divide each batch shard's "
                     f"videos: config.train.batch_videos={batch_videos} over data x fsdp = "
                     f"{shards} shards gives {batch_videos // shards}")
  return shards, batch_videos // jax.process_count()


def rules_from_config(rules: Sequence) -> tuple:
  """Config rules (lists from ml_collections) as flax's tuple form."""
  return tuple((str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes)
               for name, axes in rules)


def param_shardings(boxed_abstract_variables, mesh: Mesh, rules) -> dict:
  """NamedShardings of the params from the model's logical axis names."""
  specs = nn.get_partition_spec(boxed_abstract_variables)["params"]
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
  """Videos split over data x fsdp; ``leading_axes`` unsplit axes before (micro-steps)."""
  return NamedSharding(mesh, P(*([None] * leading_axes), BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def any_process(flag: bool) -> bool:
  """True on every process if it is True on any (e.g. a SIGTERM one host got)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.max(multihost_utils.process_allgather(np.int32(bool(flag)))))


def gather_json(local) -> dict:
  """{process index: this process's JSON-able value}, the same dict on every process."""
  import json
  if jax.process_count() == 1:
    return {"0": local}
  from jax.experimental import multihost_utils
  data = np.frombuffer(json.dumps(local).encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.int32(data.size)))
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:data.size] = data
  everyone = np.asarray(multihost_utils.process_allgather(padded))
  return {str(i): json.loads(bytes(everyone[i, :lengths[i]]).decode())
          for i in range(jax.process_count())}
