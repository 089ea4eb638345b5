"""A new objective is one module plus a config entry: prove it through the
public API with a toy objective."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hero_jax.objectives as objectives
from hero_jax import layout
from hero_jax.model.hero import Hero
from hero_jax.objectives import common, host
from tests import fixture_batches as fb
from tests import reference


# --- what a user's module would hold ---------------------------------------

@dataclasses.dataclass(frozen=True)
class FrameMeanSettings:
  weight: float = 1.0


def make_frame_mean_example(video, rng, ctx, stats=None):
  """Host side: the repr input plus a per-frame target (its mean feature)."""
  del rng
  example = host.repr_example(video, ctx, stats)
  target = np.zeros(ctx.sizes.max_frames, np.float32)
  target[:video.num_frames] = video.frames.mean(axis=1)
  example["frame_mean"] = target
  return example


def frame_mean_loss(model, params, batch, settings, *, step=0, rng=None, deterministic=True):
  """Device side: regress each frame's mean feature from the temporal output."""
  del step

  def predict(m, b):
    return m.feat_regress(m(b, deterministic=deterministic)).mean(axis=-1)
  pred = common.apply(model, params, predict, batch, rng=rng, deterministic=deterministic)
  err = jnp.square(pred - batch["frame_mean"])
  mask = batch["frame_mask"]
  return settings.weight * common.masked_mean(err, mask), {"loss": common.metric(err, mask)}


@pytest.fixture
def toy():
  objective = objectives.register(objectives.Objective(
      name="frame-mean", fields=layout.VIDEO_FIELDS + ("frame_mean",),
      make_example=make_frame_mean_example, loss=frame_mean_loss, settings=FrameMeanSettings))
  yield objective
  objectives.registry.unregister("frame-mean")


@pytest.mark.slow
def test_toy_objective_through_the_public_api(toy):
  assert "frame-mean" in objectives.names()
  objective = objectives.get("frame-mean")
  assert objective is toy
  settings = objective.make_settings({"weight": 2.0})   # as from config.objectives["frame-mean"]
  ctx = fb.host_context()
  rng = np.random.default_rng(0)
  batch = layout.stack_examples([objective.make_example(v, rng, ctx) for v in fb.videos()])
  model, params = Hero(reference.model_config()), reference.params()
  loss, metrics = objective.loss(model, params, batch, settings)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(float(loss), 2.0 * float(metrics["loss"][0] / metrics["loss"][1]), rtol=1e-6)
  grads = jax.grad(lambda p: objective.loss(model, p, batch, settings)[0])(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_registry_errors(toy):
  with pytest.raises(ValueError, match="already registered"):
    objectives.register(dataclasses.replace(toy))
  with pytest.raises(ValueError, match="unknown settings"):
    toy.make_settings({"wieght": 1.0})
  with pytest.raises(KeyError, match="unknown objective 'nope'"):
    objectives.get("nope")


def test_builtin_objectives_are_registered():
  assert {"mlm", "mfm-nce", "mffr", "fom", "vsm"} <= set(objectives.names())


def test_a_registered_objective_gets_a_config_entry(toy):
  """Registered before the config is built (its module imported by the config file),
  the objective is declared with every setting: ratio 0 until a recipe sets it."""
  del toy
  from configs import common
  from hero_jax.train import tasks
  c = common.base_config()
  assert dict(c.objectives.frame_mean) == {"ratio": 0.0, "packed_rows": 0, "weight": 1.0}
  c.objectives.frame_mean.update({"ratio": 1.0, "weight": 2.0})
  tasks.check_config(c)
  ratio, settings = tasks.objective_settings(c)["frame-mean"]
  assert (ratio, settings.weight) == (1.0, 2.0)
