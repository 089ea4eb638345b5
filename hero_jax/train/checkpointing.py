"""orbax checkpoints of a run: state (params, optimizer, step), data-iterator states, config.

Saved asynchronously by a ``CheckpointManager`` (newest ``keep`` kept);
orbax writes each step to a temporary folder and renames it when complete,
so a killed run never leaves a half checkpoint behind. Restoring takes the
abstract state with the *current* mesh's shardings, so a run can resume on a
different mesh.
"""

from __future__ import annotations

from typing import Optional

import jax
import orbax.checkpoint as ocp

from hero_jax import paths


def manager(workdir, keep: int) -> ocp.CheckpointManager:
  """``<workdir>/checkpoints`` (a local folder or a bucket: orbax writes gs:// itself)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                         create=True)
  return ocp.CheckpointManager(paths.absolute(workdir) / "checkpoints",
                               options=options, item_names=("state", "data", "config"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict, config: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
      config=ocp.args.JsonSave(config)))


def restore(mngr: ocp.CheckpointManager, state_like, step: Optional[int] = None):
  """(state, data_state, step) of the newest (or given) checkpoint; None if there is none."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
  return out.state, out.data, step
