"""The MFM mask and the FOM reordering drawn in the step follow HERO's rules and build the
host path's fields."""

import jax
import numpy as np
import pytest

from hero_jax import layout
from hero_jax.objectives import fom, fom_device, host, mfm_device, registry

F = 8


def frame_masks(n: int, seed: int = 0) -> tuple:
  """(frames per video [n], frame_mask int32 [n, F]); the first three videos
  have 0, 1 and F frames."""
  frames = np.random.default_rng(seed).integers(0, F + 1, size=n)
  frames[:3] = (0, 1, F)
  return frames, (np.arange(F)[None, :] < frames[:, None]).astype(np.int32)


def test_the_device_mfm_mask_follows_heros_rule():
  frames, frame_mask = frame_masks(512)
  masks = np.stack([np.asarray(mfm_device.draw_mask(frame_mask, jax.random.key(i), 0.15))
                    for i in range(20)])
  assert not (masks & (1 - frame_mask)).any()                      # real frames only
  assert np.all(masks.any(-1) == (frames > 0))                     # at least one, if any frame
  assert 0.13 < masks[:, frames == F].mean() < 0.2                 # 0.15 + the forced share
  assert masks[:, frames == 1, 0].all()
  with pytest.raises(ValueError, match="mask_prob must be in"):
    registry.get("mffr-device").make_settings({"mask_prob": 1.5})


def host_fields(frames: int, source: np.ndarray, targets: np.ndarray) -> dict:
  """``fom.build_fom_example``'s fields for the choices a device draw made."""
  moved_to = np.flatnonzero(targets >= 0)
  selected = targets[moved_to]                   # the frame now at moved_to[j] came from there
  order = np.argsort(selected)
  choices = fom.FomChoices(selected=selected[order], new_positions=moved_to[order])
  video = layout.VideoExample("v", np.zeros((frames, 4), np.float32), [np.array([1])],
                              [np.arange(frames)])
  ctx = host.HostContext(sizes=layout.LayoutSizes(max_frames=F, max_rows=2, max_row_frames=F,
                                                  max_row_tokens=4))
  return fom.build_fom_example(video, choices, ctx)


def test_the_device_fom_reordering_builds_the_host_fields():
  frames, frame_mask = frame_masks(256, seed=1)
  swaps, pairs, chosen = 0, 0, []
  for i in range(10):
    out = jax.device_get(fom_device.draw(frame_mask, jax.random.key(i), 0.3))
    for v in range(len(frames)):
      source, targets = out["fom_source"][v], out["fom_targets"][v]
      want = host_fields(int(frames[v]), source, targets)
      np.testing.assert_array_equal(source, want["fom_source"])
      np.testing.assert_array_equal(targets, want["fom_targets"])
      labelled = targets >= 0
      assert not (labelled & (frame_mask[v] == 0)).any()
      chosen.append(labelled[:frames[v]])
      if labelled.sum() == 2:                    # a uniform permutation swaps 2 half the time
        pairs += 1
        swaps += int(np.any(source[labelled] != np.flatnonzero(labelled)))
  assert abs(np.concatenate(chosen).mean() - 0.3) < 0.03
  assert pairs > 100 and abs(swaps / pairs - 0.5) < 0.12
  with pytest.raises(ValueError, match="objectives.fom_device.mask_prob"):
    registry.get("fom-device").make_settings({"mask_prob": 0.0})


@pytest.mark.slow
# mffr-device draws as mfm-nce-device does; only the (parity-tested) loss differs.
@pytest.mark.parametrize("name", ["mfm-nce-device", "fom-device"])
def test_finite_gradients_and_repeatable_evaluation(name):
  from hero_jax.model.config import tiny_config
  from hero_jax.model.hero import Hero
  from hero_jax.model.params import init_params
  cfg = tiny_config(frame_feat_dim=16, cross_layers=1, fom_num_classes=F)
  rng = np.random.default_rng(0)
  ctx = host.HostContext(sizes=layout.LayoutSizes(max_frames=F, max_rows=4, max_row_frames=4,
                                                  max_row_tokens=6))
  objective = registry.get(name)
  videos = [layout.VideoExample(f"v{i}", rng.normal(size=(n, 16)).astype(np.float32),
                                [rng.integers(4, 40, size=4), rng.integers(4, 40, size=3)],
                                [np.arange(n // 2), np.arange(n // 2, n)])
            for i, n in enumerate(rng.integers(2, F + 1, size=8))]
  batch = layout.stack_examples([objective.make_example(v, None, ctx) for v in videos])
  model, settings, params = Hero(cfg), objective.make_settings(), init_params(cfg)

  @jax.jit
  def loss_and_grads(p, at):
    def loss(q):
      return objective.loss(model, q, batch, settings, step=at, rng=jax.random.key(at),
                            deterministic=False)[0]
    return jax.value_and_grad(loss)(p)
  value, grads = loss_and_grads(params, 0)
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(jax.device_get(grads)))

  def evaluate(at):
    return float(objective.loss(model, params, batch, settings, step=at)[1]["loss"][0])
  assert evaluate(3) == evaluate(3) and evaluate(3) != evaluate(4)
