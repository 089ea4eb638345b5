"""hero_jax checkpoints: params + model config in one orbax directory.

Layout (``ocp.CompositeCheckpointHandler``, no step sub-folders)::

  DIR/params/   the params tree (``ocp.args.StandardSave``), float32
  DIR/config/   ``HeroConfig.to_dict()`` (``ocp.args.JsonSave``)
  DIR/meta/     optional JSON: where the weights came from, the report

Training code that starts "from a converted checkpoint" calls
``load_hero_checkpoint(DIR, target=...)`` with an abstract tree carrying its
shardings; the restore places every leaf directly.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
from etils import epath
import jax.numpy as jnp
import orbax.checkpoint as ocp

from hero_jax import paths
from hero_jax.model.config import HeroConfig
from hero_jax.model.params import abstract_params

PARAMS, CONFIG, META = "params", "config", "meta"


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def _check_dir(path: epath.Path) -> None:
  if not path.is_dir():
    raise FileNotFoundError(f"hero_jax checkpoint directory not found: {path}")
  for item in (PARAMS, CONFIG):
    if not (path / item).exists():
      raise FileNotFoundError(
          f"{path} is not a hero_jax checkpoint: it has no {item!r} item "
          "(write one with save_hero_checkpoint or `python -m hero_jax.convert`)")


def save_hero_checkpoint(path, params: Mapping, cfg: HeroConfig, *,
                         meta: Mapping[str, Any] | None = None, overwrite: bool = False) -> epath.Path:
  """Writes ``params`` and ``cfg`` (and optional JSON ``meta``) to directory ``path``."""
  path = paths.absolute(path)
  if path.exists() and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
  # jax arrays (not numpy) so that a restore returns jax arrays too.
  arrays = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), dict(params))
  items = {PARAMS: ocp.args.StandardSave(arrays), CONFIG: ocp.args.JsonSave(cfg.to_dict())}
  if meta is not None:
    items[META] = ocp.args.JsonSave(dict(meta))
  with _checkpointer() as ckptr:
    ckptr.save(path, args=ocp.args.Composite(**items), force=overwrite)
  return path


def load_hero_config(path) -> HeroConfig:
  path = paths.absolute(path)
  _check_dir(path)
  with _checkpointer() as ckptr:
    restored = ckptr.restore(path, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
  return HeroConfig.from_dict(restored[CONFIG])


def load_hero_meta(path) -> dict | None:
  path = paths.absolute(path)
  if not (path / META).exists():
    return None
  with _checkpointer() as ckptr:
    return ckptr.restore(path, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]


def load_hero_checkpoint(path, *, target=None) -> tuple[dict, HeroConfig]:
  """(params, HeroConfig) from a directory written by ``save_hero_checkpoint``.

  ``target``: optional abstract params tree (``jax.ShapeDtypeStruct`` leaves,
  with ``sharding`` to restore sharded); default ``abstract_params(cfg)``.
  """
  path = paths.absolute(path)
  cfg = load_hero_config(path)
  if target is None:
    target = abstract_params(cfg)
  with _checkpointer() as ckptr:
    restored = ckptr.restore(path, args=ocp.args.Composite(**{PARAMS: ocp.args.StandardRestore(target)}))
  return restored[PARAMS], cfg
