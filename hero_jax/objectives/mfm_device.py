"""``mfm-nce-device`` / ``mffr-device``: MFM with its frame mask drawn in the step.

The host sends each video's ``repr`` rows and frames as read (no random
choice), and the step draws HERO's MFM mask for the whole batch: each real
frame masked with probability ``mask_prob``; a video with none masked gets
one uniform real frame masked. The same distribution as ``mfm-nce`` /
``mffr`` (the host draw, the parity path), from another random stream. With
no host draw their examples are the same every epoch, so the device example
bank (``hero_jax.data.example_bank``) can hold them. Evaluation (no rng)
draws from a key of the step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hero_jax import layout
from hero_jax.objectives import common, host, mfm, registry


def make_frames_example(video: layout.VideoExample, rng, ctx: host.HostContext,
                        stats=None) -> dict:
  """The ``repr`` fields of the video (``rng`` unused: the device draws)."""
  del rng
  if video.num_frames == 0:
    raise registry.SkipExample("mfm_no_frames", f"video {video.vid!r} has no frame")
  return host.repr_example(video, ctx, stats)


@dataclasses.dataclass(frozen=True)
class MfmNceDeviceSettings(mfm.MfmNceSettings):
  """``mfm-nce``'s settings and ``mask_prob`` (HERO's 0.15)."""
  mask_prob: float = 0.15

  def __post_init__(self):
    common.check_mask_prob(self.mask_prob, "mfm_nce_device")


@dataclasses.dataclass(frozen=True)
class MffrDeviceSettings:
  mask_prob: float = 0.15

  def __post_init__(self):
    common.check_mask_prob(self.mask_prob, "mffr_device")


def draw_mask(frame_mask, key, mask_prob: float):
  """``mfm_mask`` int32 [V, F] of HERO's rule (real frames are a prefix of
  each row of ``frame_mask``); a video without frames gets no mask."""
  v, f = frame_mask.shape
  key_u, key_pick = jax.random.split(key)
  real = frame_mask > 0
  picked = real & (jax.random.uniform(key_u, (v, f)) < mask_prob)
  frames = jnp.sum(real, axis=-1)
  pick = jax.random.randint(key_pick, (v,), 0, jnp.maximum(frames, 1))
  forced = (~jnp.any(picked, axis=-1, keepdims=True)) & real & (
      jnp.arange(f)[None, :] == pick[:, None])
  return (picked | forced).astype(jnp.int32)


def _with_device_mask(loss):
  def device_loss(model, params, batch, settings, *, step=0, rng=None, deterministic=True):
    rng, key = common.device_draw_key(rng, step)
    batch = {**batch, "mfm_mask": draw_mask(batch["frame_mask"], key, settings.mask_prob)}
    return loss(model, params, batch, settings, step=step, rng=rng, deterministic=deterministic)
  device_loss.__doc__ = f"``{loss.__name__}`` with the MFM mask drawn in the step."
  return device_loss


mfm_nce_device_loss = _with_device_mask(mfm.mfm_nce_loss)
mffr_device_loss = _with_device_mask(mfm.mffr_loss)

MFM_NCE_DEVICE = registry.register(registry.Objective(
    name="mfm-nce-device", fields=layout.VIDEO_FIELDS, make_example=make_frames_example,
    loss=mfm_nce_device_loss, settings=MfmNceDeviceSettings, host_draws=False))
MFFR_DEVICE = registry.register(registry.Objective(
    name="mffr-device", fields=layout.VIDEO_FIELDS, make_example=make_frames_example,
    loss=mffr_device_loss, settings=MffrDeviceSettings, host_draws=False))
