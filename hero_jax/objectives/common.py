"""Device-side helpers shared by the objectives' losses (jax only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_f32 = jnp.float32


def apply(model, params, method, *args, rng=None, deterministic=True, **kwargs):
  """``model.apply`` with dropout rngs only when training."""
  rngs = None if deterministic or rng is None else {"dropout": rng}
  return model.apply({"params": params}, *args, method=method, rngs=rngs, **kwargs)


def device_draw_key(rng, step):
  """(rng left for the loss, key of the step's own draw) of an objective that
  draws its random choices on the device. Evaluation (``rng`` None) draws from
  a key of the step, so it is repeatable."""
  if rng is None:
    return None, jax.random.fold_in(jax.random.key(0), step)
  return tuple(jax.random.split(rng))


def check_mask_prob(p: float, key: str) -> None:
  """A device objective's ``mask_prob`` setting (``objectives.<key>.mask_prob``)."""
  if not 0.0 < p <= 1.0:
    raise ValueError(f"objectives.{key}.mask_prob must be in (0, 1], got {p}")


def cross_entropy(logits, labels):
  """Per-example cross-entropy in float32; labels < 0 give a finite dummy
  value that the caller masks out (HERO's ``ignore_index=-1``)."""
  logits = logits.astype(_f32)
  picked = jnp.take_along_axis(logits, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def masked_mean(x, weights):
  weights = weights.astype(_f32)
  return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def metric(values, weights):
  """A mergeable metric: (weighted sum, count)."""
  weights = weights.astype(_f32)
  return jnp.sum(values.astype(_f32) * weights), jnp.sum(weights)


def accuracy(logits, labels):
  return (jnp.argmax(logits, axis=-1) == labels).astype(_f32)


def below_longest_video(frame_mask):
  """[V, F] mask of the positions below the longest video of the batch.

  The original pads each batch to its longest video and lets those padded
  positions take part in MFM-NCE negatives and the start/end convolution;
  with static shapes this mask reproduces exactly that.
  """
  longest = jnp.max(jnp.sum(frame_mask, axis=-1))
  return jnp.broadcast_to(jnp.arange(frame_mask.shape[-1]) < longest, frame_mask.shape)
