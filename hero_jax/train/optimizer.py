"""HERO's optimizer: AdamW (0.9, 0.98, eps 1e-6) with decay applied after the Adam step.

Matches the original (spec 7, its ``optim/adamw.py``): Adam with the bias
corrections folded into the step size, ``lr * sqrt(1 - b2^t) / (1 - b1^t) *
m / (sqrt(v) + eps)`` (so eps acts as ``eps / sqrt(1 - b2^t)`` on the
corrected moments, unlike optax's ``scale_by_adam``), then the decoupled decay
``p <- p - lr * wd * p`` on the already-updated parameter; no decay for
biases and for LayerNorms whose name ends in ``LayerNorm`` (the LayerNorm
inside ``feat_regress`` is ``net_2`` and IS decayed, as in the original);
global-norm clipping at 1.0; linear warmup then linear decay, clamped at
1e-8, with the first update at step 1. Gradients of accumulated micro-batches
are summed, not averaged (the original never divides by the count).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def learning_rate(base_lr: float, warmup_steps: int, total_steps: int):
  """lr(update) for update = 0, 1, ... (the original's step = update + 1)."""
  def schedule(count):
    step = jnp.asarray(count, jnp.float32) + 1.0
    warm = step / max(warmup_steps, 1)
    decay = jnp.maximum(0.0, (total_steps - step) / max(total_steps - warmup_steps, 1))
    return jnp.maximum(base_lr * jnp.where(step < warmup_steps, warm, decay), 1e-8)
  return schedule


def decay_mask(params):
  """True where weight decay applies (not biases, not '*LayerNorm' scales)."""
  def decays(path, _):
    names = [getattr(k, "key", str(k)) for k in path]
    if names[-1] == "bias":
      return False
    return not (names[-1] == "scale" and len(names) > 1 and names[-2].endswith("LayerNorm"))
  return jax.tree_util.tree_map_with_path(decays, params)


class _AdamState(NamedTuple):
  count: jax.Array
  mu: Any
  nu: Any


def scale_by_original_adam(b1: float, b2: float, eps: float):
  """u = sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), as the original AdamW."""
  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return _AdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=jax.tree.map(jnp.copy, zeros))

  def update(updates, state, params=None):
    del params
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)
    t = count.astype(jnp.float32)
    step_size = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    out = jax.tree.map(lambda m, v: step_size * m / (jnp.sqrt(v) + eps), mu, nu)
    return out, _AdamState(count=count, mu=mu, nu=nu)
  return optax.GradientTransformation(init, update)


def lr_multipliers(params, lr_mul: float):
  """Per-parameter learning-rate factor: 1 inside ``v_encoder``, ``lr_mul``
  for everything else (the heads), as the original's parameter groups 0 and
  1 in ``train_videoQA.py``."""
  def factor(path, _):
    return 1.0 if getattr(path[0], "key", str(path[0])) == "v_encoder" else float(lr_mul)
  return jax.tree_util.tree_map_with_path(factor, params)


def _scale_by_lr(lr_schedule, lr_mul: float):
  """u -> -lr * factor * u (``factor`` from ``lr_multipliers``)."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    lr = lr_schedule(state.count)
    factors = lr_multipliers(updates, lr_mul)
    updates = jax.tree.map(lambda u, f: -lr * f * u, updates, factors)
    return updates, optax.ScaleByScheduleState(count=state.count + 1)
  return optax.GradientTransformation(init, update)


def _decay_after_update(lr_schedule, weight_decay: float, mask_fn, lr_mul: float = 1.0):
  """updates u -> u - lr * factor * wd * (p + u): decay of the Adam-updated parameter."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params):
    lr = lr_schedule(state.count)
    mask = mask_fn(params)
    factors = lr_multipliers(params, lr_mul)
    updates = jax.tree.map(
        lambda u, p, m, f: u - lr * f * weight_decay * (p + u) if m else u,
        updates, params, mask, factors)
    return updates, optax.ScaleByScheduleState(count=state.count + 1)
  return optax.GradientTransformation(init, update)


def hero_adamw(base_lr: float, warmup_steps: int, total_steps: int, *, b1=0.9, b2=0.98,
               eps=1e-6, weight_decay=0.01, grad_clip=1.0, lr_mul=1.0):
  """The full update rule as one optax transformation. ``lr_mul`` multiplies
  the learning rate of every parameter outside ``v_encoder`` (video QA: 10)."""
  schedule = learning_rate(base_lr, warmup_steps, total_steps)
  parts = []
  if grad_clip:
    parts.append(optax.clip_by_global_norm(grad_clip))
  parts += [scale_by_original_adam(b1, b2, eps), _scale_by_lr(schedule, lr_mul)]
  if weight_decay:
    parts.append(_decay_after_update(schedule, weight_decay, decay_mask, lr_mul))
  return optax.chain(*parts), schedule
