"""The parameter tree of ``Hero``: abstract (shapes only) or initialised.

Both return the *unboxed* ``params`` collection, i.e. the tree that
``Hero(cfg).apply({"params": params}, ...)`` takes, with plain arrays at the
leaves (``nn.init`` returns ``LogicallyPartitioned`` boxes; the logical axis
names are not needed to hold or convert weights).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

from hero_jax import layout
from hero_jax.model.config import HeroConfig
from hero_jax.model.hero import Hero

# The smallest batch that reaches every parameter; parameter shapes do not
# depend on the batch sizes.
_INIT_SIZES = layout.LayoutSizes(max_frames=2, max_rows=1, max_row_frames=1, max_row_tokens=2,
                                 queries=1, max_query_tokens=2, max_predictions=1)


def dummy_inputs(cfg: HeroConfig):
  """(batch, query_ids, query_mask) of one video, for ``Hero.init_all``."""
  shapes = layout.field_shapes(_INIT_SIZES, cfg.frame_feat_dim,
                               layout.VIDEO_FIELDS + ("query_ids", "query_mask"))
  arrays = {k: np.zeros((1,) + shape, dtype) for k, (shape, dtype) in shapes.items()}
  arrays["frame_mask"][:] = 1
  arrays["row_txt_mask"][:] = 1
  arrays["row_frame_mask"][:] = 1
  arrays["query_mask"][:] = 1
  query_ids, query_mask = arrays.pop("query_ids"), arrays.pop("query_mask")
  return arrays, query_ids, query_mask


def _variables_fn(cfg: HeroConfig):
  batch, query_ids, query_mask = dummy_inputs(cfg)
  return lambda key: Hero(cfg).init(key, batch, query_ids, query_mask, method=Hero.init_all)


def init_fn(cfg: HeroConfig):
  """``key -> params`` (unboxed) of a fresh model; jit or eval_shape it."""
  variables_fn = _variables_fn(cfg)

  def init(key):
    params = nn.unbox(variables_fn(key)["params"])
    if cfg.heads == "videoqa":
      # The original builds st_ed_pool as a deepcopy of qa_pool: same start.
      params = {**params, "st_ed_pool": params["qa_pool"]}
    return params
  return init


@functools.lru_cache(maxsize=16)
def boxed_abstract_variables(cfg: HeroConfig):
  """``Hero(cfg).init``'s variables as shapes, with their logical axis boxes (for sharding)."""
  return jax.eval_shape(_variables_fn(cfg), jax.random.key(0))


@functools.lru_cache(maxsize=16)
def _abstract_params(cfg: HeroConfig):
  return nn.unbox(boxed_abstract_variables(cfg)["params"])


def abstract_params(cfg: HeroConfig):
  """The params tree as ``jax.ShapeDtypeStruct`` leaves (nothing computed).

  Cached per config (tracing the model takes about a second); each call
  returns fresh dicts around the shared, immutable leaves.
  """
  return jax.tree.map(lambda x: x, _abstract_params(cfg))


def init_params(cfg: HeroConfig, seed: int = 0):
  """Freshly initialised params (HERO's from-scratch init, spec 1.11)."""
  return jax.jit(init_fn(cfg))(jax.random.key(seed))


def count_params(params) -> int:
  """Number of scalars in a params tree (121,037,262 for the base model)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
