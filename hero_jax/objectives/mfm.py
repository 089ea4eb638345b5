"""MFM: masked frame modelling, shared by ``mfm-nce`` and ``mffr`` (spec 2.2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import jax.numpy as jnp

from hero_jax import layout
from hero_jax.objectives import common
from hero_jax.objectives import host
from hero_jax.objectives import registry

# --- host side (numpy) ---

FIELDS = layout.VIDEO_FIELDS + ("mfm_mask",)


@dataclasses.dataclass(frozen=True)
class MfmChoices:
  """``mask``: bool [n_frames], the masked frames of the video (>= 1)."""
  mask: np.ndarray


def draw_mfm_choices(video: layout.VideoExample, rng: np.random.Generator,
                     ctx: host.HostContext) -> MfmChoices:
  """Each real frame masked with prob mask_prob; if none, one uniform frame.

  A video without frames cannot give a target (the original would crash).
  """
  n = video.num_frames
  if n == 0:
    raise registry.SkipExample("mfm_no_frames", f"video {video.vid!r} has no frame")
  mask = rng.random(n) < ctx.mask_prob
  if not mask.any():
    mask[rng.integers(n)] = True
  return MfmChoices(mask=mask)


def build_mfm_example(video: layout.VideoExample, choices: MfmChoices,
                      ctx: host.HostContext, stats=None) -> dict:
  """The 'repr' fields plus ``mfm_mask``; frames are left unmasked.

  The model zeroes the masked frames at both levels, and the targets are
  ``frames`` at masked positions, so the host keeps one copy of the features.
  """
  mask = np.asarray(choices.mask, bool)
  if mask.shape != (video.num_frames,):
    raise ValueError(
        f"video {video.vid!r}: MFM mask has shape {mask.shape}, expected ({video.num_frames},)")
  out = host.repr_example(video, ctx, stats)
  out["mfm_mask"] = np.zeros((ctx.sizes.max_frames,), np.int32)
  out["mfm_mask"][:mask.size] = mask
  return out


def make_mfm_example(video: layout.VideoExample, rng: np.random.Generator,
                     ctx: host.HostContext, stats=None) -> dict:
  return build_mfm_example(video, draw_mfm_choices(video, rng, ctx), ctx, stats)


# --- device side (jax) ---


@dataclasses.dataclass(frozen=True)
class MfmNceSettings:
  """``pad_negatives``: as the original, padded frame positions up to the
  longest video of the batch are negatives too (their temporal outputs are
  not zero). False: only real unmasked frames are negatives.
  ``temperature``: HERO's ``nce_temp`` (1.0).
  ``group_videos``: negatives come from groups of this many consecutive
  videos (HERO: the per-GPU batch); 0 = the whole global batch. Grouping is
  by position in the batch, so it does not depend on the mesh.
  """
  pad_negatives: bool = True
  temperature: float = 1.0
  group_videos: int = 0


@dataclasses.dataclass(frozen=True)
class MffrSettings:
  """MFFR has no device-side options."""


def mfm_predictions(model, batch, deterministic=True):
  """``feat_regress`` at every timeline position [V, F, D] (a model method)."""
  seq = model(batch, mfm_mask=batch["mfm_mask"], deterministic=deterministic)
  return model.feat_regress(seq)


def _groups(x, group_videos):
  v = x.shape[0]
  g = group_videos or v
  if v % g:
    raise ValueError(f"mfm-nce group_videos={g} does not divide the batch of {v} videos")
  return x.reshape((v // g, g * x.shape[1]) + x.shape[2:])


def nce_logits(pred, targets, mfm_mask, frame_mask, settings: MfmNceSettings):
  """Logits [G, N, 2N] (N = positions per group): ``[pred . targets ; pred .
  pred]`` with invalid columns at -inf, and the index of each row's target."""
  masked = mfm_mask.astype(bool)
  valid = common.below_longest_video(frame_mask) if settings.pad_negatives else frame_mask.astype(bool)
  negative = (~masked) & valid
  p = _groups(pred.astype(jnp.float32), settings.group_videos)
  t = _groups(targets.astype(jnp.float32), settings.group_videos)
  pos = jnp.einsum("gnd,gmd->gnm", p, t)
  neg = jnp.einsum("gnd,gmd->gnm", p, p)
  pos = jnp.where(_groups(masked, settings.group_videos)[:, None, :], pos, -jnp.inf)
  neg = jnp.where(_groups(negative, settings.group_videos)[:, None, :], neg, -jnp.inf)
  return jnp.concatenate([pos, neg], axis=-1) / settings.temperature


def mfm_nce_loss(model, params, batch, settings=MfmNceSettings(), *, step=0, rng=None,
                 deterministic=True):
  """Contrastive MFM: each masked frame's prediction must pick its own
  feature among all masked frames' features and all negatives."""
  del step
  pred = common.apply(model, params, mfm_predictions, batch, rng=rng, deterministic=deterministic)
  frames, mask = batch["frames"], batch["mfm_mask"]
  logits = nce_logits(pred, frames, mask, batch["frame_mask"], settings)
  n = logits.shape[1]
  target = jnp.broadcast_to(jnp.arange(n), logits.shape[:2])
  weights = mask.reshape(logits.shape[:2]).astype(jnp.float32)
  ce = common.cross_entropy(jnp.where(weights[..., None] > 0, logits, 0.0), target)
  metrics = {
      "loss": common.metric(ce, weights),
      "acc": common.metric(common.accuracy(logits, target), weights),
      **_regression_metrics(pred, frames, mask),
  }
  return common.masked_mean(ce, weights), metrics


def _l2_distance(pred, targets):
  return jnp.sqrt(jnp.sum(jnp.square(pred - targets.astype(jnp.float32)), axis=-1))


def _regression_metrics(pred, targets, mask):
  targets = targets.astype(jnp.float32)
  cos = jnp.sum(pred * targets, -1) / (
      jnp.maximum(jnp.linalg.norm(pred, axis=-1), 1e-8) * jnp.maximum(jnp.linalg.norm(targets, axis=-1), 1e-8))
  return {"l2": common.metric(_l2_distance(pred, targets), mask),
          "cosine": common.metric(cos, mask)}


def mffr_loss(model, params, batch, settings=None, *, step=0, rng=None, deterministic=True):
  """Regression MFM: mean over masked frames of the L2 distance to the
  original feature (HERO's per-frame sqrt of the summed squared error)."""
  del settings, step
  pred = common.apply(model, params, mfm_predictions, batch, rng=rng, deterministic=deterministic)
  dist = _l2_distance(pred, batch["frames"])
  mask = batch["mfm_mask"]
  metrics = {"loss": common.metric(dist, mask), **_regression_metrics(pred, batch["frames"], mask)}
  return common.masked_mean(dist, mask), metrics


MFM_NCE = registry.register(registry.Objective(
    name="mfm-nce", fields=FIELDS, make_example=make_mfm_example, loss=mfm_nce_loss,
    settings=MfmNceSettings))
MFFR = registry.register(registry.Objective(
    name="mffr", fields=FIELDS, make_example=make_mfm_example, loss=mffr_loss,
    settings=MffrSettings))
