"""FOM: frame order modelling on the Temporal Transformer (spec 2.3)."""

from __future__ import annotations

import dataclasses

import numpy as np

from hero_jax import layout
from hero_jax.objectives import common
from hero_jax.objectives import host
from hero_jax.objectives import registry

# --- host side (numpy) ---

FIELDS = layout.VIDEO_FIELDS + ("fom_source", "fom_targets")


@dataclasses.dataclass(frozen=True)
class FomChoices:
  """The reordering of one video, as HERO's ``random_reorder`` draws it.

  ``selected``: int [k], the selected frame positions, increasing.
  ``new_positions``: int [k], a permutation of ``selected``: the frame that
  started at ``selected[i]`` moves to ``new_positions[i]`` (HERO's
  ``orders[selected[i]]``). A selected frame may stay in place and still has
  a label, so the pair is needed: ``orders`` alone cannot tell.
  """
  selected: np.ndarray
  new_positions: np.ndarray


def draw_fom_choices(video: layout.VideoExample, rng: np.random.Generator,
                     ctx: host.HostContext) -> FomChoices:
  """Each real frame selected with prob mask_prob (no at-least-one rule, as
  the original), then the selected positions shuffled among themselves."""
  selected = np.flatnonzero(rng.random(video.num_frames) < ctx.mask_prob)
  return FomChoices(selected=selected, new_positions=rng.permutation(selected))


def fom_orders(video: layout.VideoExample, choices: FomChoices, size: int) -> np.ndarray:
  """HERO's ``orders`` over ``size`` slots: new position of the frame at i."""
  sel = np.asarray(choices.selected, np.int64)
  new = np.asarray(choices.new_positions, np.int64)
  n = video.num_frames
  if (sel.ndim != 1 or new.shape != sel.shape or np.unique(sel).size != sel.size
      or not np.array_equal(np.sort(sel), np.sort(new))
      or (sel.size and (sel.min() < 0 or sel.max() >= n))):
    raise ValueError(
        f"video {video.vid!r}: FOM choices must be distinct frame positions < {n} and a "
        f"permutation of them, got selected={sel.tolist()} new_positions={new.tolist()}")
  orders = np.arange(size, dtype=np.int64)
  orders[sel] = new
  return orders


def build_fom_example(video: layout.VideoExample, choices: FomChoices,
                      ctx: host.HostContext, stats=None) -> dict:
  """The 'repr' fields plus ``fom_source`` and ``fom_targets``.

  HERO scatters ``shuffled[orders[i]] = fused[i]``; we store the inverse
  (``fom_source[orders[i]] = i``) so the device gathers instead. Labels:
  ``fom_targets[orders[i]] = i`` for selected i, -1 elsewhere and at padding.
  """
  out = host.repr_example(video, ctx, stats)  # checks the frame count first
  size = ctx.sizes.max_frames
  orders = fom_orders(video, choices, size)
  source = np.empty((size,), np.int32)
  source[orders] = np.arange(size)
  targets = np.full((size,), -1, np.int32)
  sel = np.asarray(choices.selected, np.int64)
  targets[orders[sel]] = sel
  out["fom_source"] = source
  out["fom_targets"] = targets
  return out


def make_fom_example(video: layout.VideoExample, rng: np.random.Generator,
                     ctx: host.HostContext, stats=None) -> dict:
  return build_fom_example(video, draw_fom_choices(video, rng, ctx), ctx, stats)


# --- device side (jax) ---


@dataclasses.dataclass(frozen=True)
class FomSettings:
  """FOM has no device-side options."""


def fom_logits(model, batch, deterministic=True):
  """Order logits [V, F, fom_num_classes] of the shuffled timeline."""
  seq = model(batch, fom_source=batch["fom_source"], deterministic=deterministic)
  return model.fom_logits(seq)


def fom_loss(model, params, batch, settings=None, *, step=0, rng=None, deterministic=True):
  """Cross-entropy of each moved frame's original index, mean over labels."""
  del settings, step
  logits = common.apply(model, params, fom_logits, batch, rng=rng, deterministic=deterministic)
  targets = batch["fom_targets"]
  weights = targets >= 0
  ce = common.cross_entropy(logits, targets)
  metrics = {"loss": common.metric(ce, weights),
             "acc": common.metric(common.accuracy(logits, targets), weights)}
  return common.masked_mean(ce, weights), metrics


OBJECTIVE = registry.register(registry.Objective(
    name="fom", fields=FIELDS, make_example=make_fom_example, loss=fom_loss,
    settings=FomSettings))
