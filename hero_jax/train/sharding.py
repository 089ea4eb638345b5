"""The device mesh, logical axis rules and the shardings of state and batches.

Mesh axes: ``data`` (batch only), ``fsdp`` (batch and parameter shards),
``model`` (tensor parallel). The model names its parameter and activation
axes logically (``embed``, ``mlp``, ``joined_kv``, ``vocab``, ``batch``,
``length``...); the config's rules map them to mesh axes, so FSDP and tensor
parallelism are a config change. Results do not depend on the mesh: the
losses reduce over the global batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
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


def make_mesh(shape: dict, devices=None) -> Mesh:
  """A mesh with axes ``data, fsdp, model``; one size may be -1 (the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  unknown = [k for k in shape if k not in AXES]
  if unknown:
    raise ValueError(f"mesh.shape: unknown axes {unknown}; axes are {AXES}")
  sizes = [int(shape.get(a, 1)) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh.shape: at most one axis may be -1, got {dict(zip(AXES, sizes))}")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices) or min(sizes) < 1:
    raise ValueError(f"mesh.shape {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"there are {len(devices)}")
  grid = np.array(devices).reshape(sizes)
  return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


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
