"""``fom-device``: FOM with its frame reordering drawn in the step.

The host sends each video's ``repr`` fields as read; the step draws HERO's
``random_reorder`` for the whole batch: each real frame selected with
probability ``mask_prob`` (no at-least-one rule, as the original), then the
selected positions shuffled among themselves (a uniform permutation: the
order of iid uniform keys). From the draw it builds ``fom_source`` and
``fom_targets`` exactly as ``fom.build_fom_example`` does from the host's
choices. The same distribution as ``fom`` (the parity path), another random
stream; with no host draw its examples can live in the device example bank.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hero_jax import layout
from hero_jax.objectives import common, fom, host, registry


def make_repr_example(video: layout.VideoExample, rng, ctx: host.HostContext,
                      stats=None) -> dict:
  """The ``repr`` fields of the video (``rng`` unused: the device draws)."""
  del rng
  return host.repr_example(video, ctx, stats)


@dataclasses.dataclass(frozen=True)
class FomDeviceSettings:
  """``mask_prob``: HERO's 0.15, the share of real frames selected."""
  mask_prob: float = 0.15

  def __post_init__(self):
    common.check_mask_prob(self.mask_prob, "fom_device")


def draw(frame_mask, key, mask_prob: float) -> dict:
  """``fom_source`` and ``fom_targets`` int32 [V, F] of one reordering per video.

  With s_0 < ... < s_{k-1} the selected positions and p_0..p_{k-1} the same
  positions in random order, the frame at s_i moves to p_i (HERO's
  ``orders[s_i] = p_i``): the shuffled timeline takes frame s_i at p_i
  (``fom_source[p_i] = s_i``, identity elsewhere) and labels it s_i
  (``fom_targets[p_i] = s_i``, -1 elsewhere).
  """
  v, f = frame_mask.shape
  key_select, key_order = jax.random.split(key)
  slots = jnp.broadcast_to(jnp.arange(f, dtype=jnp.int32), (v, f))
  selected = (frame_mask > 0) & (jax.random.uniform(key_select, (v, f)) < mask_prob)
  # Selected positions first (increasing / in random order), the rest after.
  increasing = jnp.argsort(jnp.where(selected, slots, f + slots), axis=-1)
  shuffled = jnp.argsort(jnp.where(selected, jax.random.uniform(key_order, (v, f)), 2.0 + slots),
                         axis=-1)
  count = jnp.sum(selected, axis=-1, keepdims=True)
  moved = jnp.where(slots < count, shuffled, f).astype(jnp.int32)   # f: dropped by the scatter
  rows = jnp.arange(v)[:, None]
  source = slots.at[rows, moved].set(increasing.astype(jnp.int32), mode="drop")
  targets = jnp.full((v, f), -1, jnp.int32).at[rows, moved].set(increasing.astype(jnp.int32),
                                                                  mode="drop")
  return {"fom_source": source, "fom_targets": targets}


def fom_device_loss(model, params, batch, settings=FomDeviceSettings(), *, step=0, rng=None,
                    deterministic=True):
  """``fom.fom_loss`` on the reordering drawn here."""
  rng, key = common.device_draw_key(rng, step)
  batch = {**batch, **draw(batch["frame_mask"], key, settings.mask_prob)}
  return fom.fom_loss(model, params, batch, None, step=step, rng=rng,
                      deterministic=deterministic)


OBJECTIVE = registry.register(registry.Objective(
    name="fom-device", fields=layout.VIDEO_FIELDS, make_example=make_repr_example,
    loss=fom_device_loss, settings=FomDeviceSettings, host_draws=False))
