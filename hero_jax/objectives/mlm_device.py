"""``mlm-device``: MLM with the corruption drawn on the device (issue 13's input path).

The host sends each video's rows as read, ``[CLS]`` + subtitle ids cut to
``max_txt_len`` (no random choice, nothing per token), and the step draws
HERO's ``random_word`` corruption from its rng, for the whole batch at once:

* a uniform u per real text token: chosen if u < ``mask_prob``; then
  u / mask_prob < 0.8 gives MASK, < 0.9 a uniform id of ``v_range``, else the
  token stays;
* a row with tokens but none chosen gets its first token chosen and masked;
* the chosen tokens fill the K prediction slots in row-major order (a cumsum
  scatter), as ``mlm.build_mlm_example`` places them.

The same distribution as ``mlm`` (the host draw, which the parity tests feed
with the original's recorded choices), from another random stream. One
difference: more than K chosen tokens cannot skip a video on the device, so
the first K are predicted and the rest counted in the ``overflow`` metric
(the host path skips such a video and counts it).

The dataset's special ids travel with each video (``mlm_draw`` int32 [3]:
MASK id and the ``v_range`` bounds) so that the compiled step needs nothing
from the data's metadata. Evaluation (no rng) draws from a key of the step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hero_jax import layout
from hero_jax.objectives import common, host, mlm, registry

FIELDS = layout.VIDEO_FIELDS + ("mlm_draw",)

# --- host side (numpy) ---


def make_mlm_rows_example(video: layout.VideoExample, rng, ctx: host.HostContext,
                          stats=None) -> dict:
  """The video's rows, ``[CLS]`` + ids cut to ``max_txt_len``, uncorrupted
  (``rng`` is unused: every random choice is the device's)."""
  del rng
  rows = mlm._truncated_ids(video, ctx)
  if not any(r.size for r in rows):
    raise registry.SkipExample("mlm_no_tokens", f"video {video.vid!r} has no subtitle token")
  host.count(stats, "mlm_empty_rows", sum(1 for r in rows if not r.size))
  cls = np.array([ctx.ids.cls], np.int64)
  out = host.build_video_fields(video, ctx, [np.concatenate([cls, r]) for r in rows], stats)
  lo, hi = ctx.ids.v_range
  out["mlm_draw"] = np.array([ctx.ids.mask, lo, hi], np.int32)
  return out


# --- device side (jax) ---


@dataclasses.dataclass(frozen=True)
class MlmDeviceSettings(mlm.MlmSettings):
  """``mlm``'s settings (``group_predictions``), ``mask_prob``: HERO's 0.15;
  ``max_predictions``: K, the prediction slots per video (the host path's
  ``layout.max_predictions``)."""
  mask_prob: float = 0.15
  max_predictions: int = 160

  def __post_init__(self):
    super().__post_init__()
    common.check_mask_prob(self.mask_prob, "mlm_device")
    if self.max_predictions <= 0:
      raise ValueError("objectives.mlm_device.max_predictions must be positive, got "
                       f"{self.max_predictions}")


def draw(batch: dict, key, settings: MlmDeviceSettings) -> dict:
  """The batch with corrupted ``row_ids`` and ``mlm_positions`` / ``mlm_labels``
  / ``mlm_weights`` [V, K], plus ``mlm_overflow`` [V] (chosen tokens past K)."""
  ids, txt = batch["row_ids"], batch["row_txt_mask"]
  v, r, t = ids.shape
  special = batch["mlm_draw"]
  mask_id, lo, hi = (special[:, i][:, None, None] for i in range(3))
  key_u, key_ids = jax.random.split(key)
  u = jax.random.uniform(key_u, ids.shape)
  slot = jnp.arange(t)[None, None, :]
  real = (txt > 0) & (slot >= 1)                      # t = 0 is [CLS]
  picked = real & (u < settings.mask_prob)
  scaled = u / settings.mask_prob
  # The first token of a row with tokens but no pick (HERO's at-least-one rule).
  forced = real & (slot == 1) & ~jnp.any(picked, axis=-1, keepdims=True)
  to_mask = (picked & (scaled < 0.8)) | forced
  to_random = picked & (scaled >= 0.8) & (scaled < 0.9)
  random_ids = jax.random.randint(key_ids, ids.shape, lo, hi)
  corrupted = jnp.where(to_mask, mask_id, jnp.where(to_random, random_ids, ids))
  chosen = (picked | forced).reshape(v, r * t)
  k = settings.max_predictions
  place = jnp.where(chosen, jnp.cumsum(chosen, axis=-1) - 1, k)   # k: dropped by the scatter
  rows = jnp.arange(v)[:, None]
  flat = jnp.broadcast_to(jnp.arange(r * t, dtype=jnp.int32), (v, r * t))
  positions = jnp.zeros((v, k), jnp.int32).at[rows, place].set(flat, mode="drop")
  labels = jnp.zeros((v, k), jnp.int32).at[rows, place].set(ids.reshape(v, r * t), mode="drop")
  weights = jnp.zeros((v, k), jnp.float32).at[rows, place].set(1.0, mode="drop")
  overflow = jnp.maximum(jnp.sum(chosen, axis=-1) - k, 0)
  return {**batch, "row_ids": corrupted, "mlm_positions": positions, "mlm_labels": labels,
          "mlm_weights": weights, "mlm_overflow": overflow}


def mlm_device_loss(model, params, batch, settings=MlmDeviceSettings(), *, step=0, rng=None,
                    deterministic=True):
  """``mlm.mlm_loss`` on the batch corrupted here; ``overflow``: (chosen
  tokens past K, videos)."""
  rng, draw_key = common.device_draw_key(rng, step)
  drawn = draw(batch, draw_key, settings)
  loss, metrics = mlm.mlm_loss(model, params, drawn, settings, step=step, rng=rng,
                               deterministic=deterministic)
  overflow = drawn["mlm_overflow"]
  metrics["overflow"] = (jnp.sum(overflow).astype(jnp.float32),
                         jnp.asarray(overflow.shape[0], jnp.float32))
  return loss, metrics


OBJECTIVE = registry.register(registry.Objective(
    name="mlm-device", fields=FIELDS, make_example=make_mlm_rows_example, loss=mlm_device_loss,
    settings=MlmDeviceSettings, host_draws=False))
