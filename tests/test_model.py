"""Model properties beyond parity: size, padding, gradients, bfloat16, learning."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hero_jax import layout
from hero_jax.model.config import HeroConfig
from hero_jax.model.hero import Hero
from hero_jax.model.params import abstract_params, count_params
from hero_jax.objectives import common, mfm, registry, vsm
from tests import fixture_batches as fb
from tests import reference

OBJECTIVES = ("mlm", "mfm-nce", "mffr", "fom", "vsm")


@pytest.mark.slow
def test_base_parameter_count_equals_original():
  params = abstract_params(HeroConfig())
  assert count_params(params) == 121_037_262   # HeroForPretraining, spec section 6
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def bigger(sizes: layout.LayoutSizes) -> layout.LayoutSizes:
  return dataclasses.replace(
      sizes, max_frames=sizes.max_frames + 7, max_rows=sizes.max_rows + 3,
      max_row_frames=sizes.max_row_frames + 2, max_row_tokens=sizes.max_row_tokens + 5,
      max_query_tokens=sizes.max_query_tokens + 4, max_predictions=sizes.max_predictions + 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", OBJECTIVES)
def test_extra_padding_leaves_losses_and_outputs_unchanged(name):
  small_sizes = fb.fixture_sizes()
  small = fb.build_batch(name)
  large = fb.build_batch(name, sizes=bigger(small_sizes))
  reference.assert_same_losses(name, small, large)
  model, params = Hero(reference.model_config()), reference.params()
  video_fields = lambda b: {k: b[k] for k in layout.VIDEO_FIELDS}
  encode = jax.jit(lambda b: model.apply({"params": params}, b))
  seq_small, seq_large = encode(video_fields(small)), encode(video_fields(large))
  real = small["frame_mask"].astype(bool)
  f = small_sizes.max_frames
  np.testing.assert_allclose(np.asarray(seq_large)[:, :f][real], np.asarray(seq_small)[real],
                             rtol=1e-5, atol=1e-5)


def two_video_batch(task, first, second):
  """A batch of two fixture videos (indices), same sizes."""
  examples = fb.build_examples(task)
  return layout.stack_examples([examples[first], examples[second]])


def _videos_by_length():
  lengths = [v.num_frames for v in fb.videos()]
  order = np.argsort(lengths)
  return int(order[0]), int(order[-1])


@pytest.mark.slow
def test_original_padding_behaviour_and_corrected_flags():
  """Video A's own results must not depend on how long the other video is
  (corrected flags); the original's defaults do depend on it."""
  short, long = _videos_by_length()
  model, params = Hero(reference.model_config()), reference.params()

  def st_logits(batch, settings):
    _, _, st, _ = model.apply({"params": params}, batch, settings.conv_sees_padding,
                              method=vsm.vsm_outputs)
    return np.asarray(st)[0]

  alone = two_video_batch("vsm", short, short)
  mixed = two_video_batch("vsm", short, long)
  original, corrected = vsm.VsmSettings(), vsm.VsmSettings(conv_sees_padding=False)
  np.testing.assert_allclose(st_logits(mixed, corrected), st_logits(alone, corrected), rtol=1e-5, atol=1e-5)
  assert not np.allclose(st_logits(mixed, original), st_logits(alone, original), rtol=1e-5, atol=1e-5)

  def nce_of_first(batch, settings):
    pred = model.apply({"params": params}, batch, method=mfm.mfm_predictions)
    logits = mfm.nce_logits(pred, batch["frames"], batch["mfm_mask"], batch["frame_mask"], settings)
    target = jnp.arange(logits.shape[1])[None]
    ce = common.cross_entropy(jnp.where(jnp.isfinite(logits), logits, -1e30), target)
    mask = batch["mfm_mask"].reshape(ce.shape).astype(bool)
    return np.asarray(ce)[0][mask[0]]

  alone = two_video_batch("mfm-nce", short, short)
  mixed = two_video_batch("mfm-nce", short, long)
  per_video = dict(group_videos=1)   # negatives from the video itself only
  original = mfm.MfmNceSettings(**per_video)
  corrected = mfm.MfmNceSettings(pad_negatives=False, **per_video)
  np.testing.assert_allclose(nce_of_first(mixed, corrected), nce_of_first(alone, corrected), rtol=1e-5)
  assert not np.allclose(nce_of_first(mixed, original), nce_of_first(alone, original), rtol=1e-5)


@pytest.mark.slow
def test_gelu_backward_is_the_exact_gelus_derivative():
  """layers.gelu keeps only its input for the backward pass; its gradient is
  autodiff's of the exact (erf) GELU, in float32 and bfloat16."""
  from hero_jax.model import layers
  x = jnp.linspace(-9.0, 9.0, 2001)
  exact = lambda v: jax.nn.gelu(v, approximate=False)  # noqa: E731
  np.testing.assert_array_equal(layers.gelu(x), exact(x))
  ours, ref = (jax.grad(lambda v, f=f: (f(v) * jnp.cos(v)).sum())(x) for f in (layers.gelu, exact))
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
  grad16 = jax.grad(lambda v: layers.gelu(v).astype(jnp.float32).sum())(x.astype(jnp.bfloat16))
  assert grad16.dtype == jnp.bfloat16
  np.testing.assert_allclose(grad16.astype(np.float32), jax.grad(lambda v: exact(v).sum())(x),
                             atol=2e-2)


def test_add_bias_gradient_is_the_sum_over_rows():
  """layers.add_bias (the MLM logits' bias) gives x + b and autodiff's
  gradients, its bias gradient computed as a product with ones."""
  from hero_jax.model import layers
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5, 7)), jnp.float32)
  b, weight = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((7,), (3, 5, 7)))
  np.testing.assert_array_equal(layers.add_bias(x, b), x + b)
  ours, ref = (jax.grad(lambda x, b, f=f: (jnp.sin(f(x, b)) * weight).sum(), argnums=(0, 1))(x, b)
               for f in (layers.add_bias, lambda x, b: x + b))
  np.testing.assert_array_equal(ours[0], ref[0])
  np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6, atol=1e-6)


def test_bfloat16_forward_is_close_to_float32():
  batch = fb.build_batch("repr")
  cfg = reference.model_config()
  params = reference.params()
  f32 = np.asarray(Hero(cfg).apply({"params": params}, batch))
  bf16 = np.asarray(Hero(cfg.replace(dtype="bfloat16")).apply({"params": params}, batch), np.float32)
  real = batch["frame_mask"].astype(bool)
  err = np.abs(bf16[real] - f32[real])
  assert err.mean() < 0.05 * np.abs(f32[real]).mean(), err.mean()
  assert np.corrcoef(bf16[real].ravel(), f32[real].ravel())[0, 1] > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("name", OBJECTIVES)
def test_each_objective_has_finite_gradients_and_learns(name):
  """Gradients are finite and reach the cross-modal encoder; a few Adam
  steps (with dropout) on one batch lower the objective's loss."""
  batch = fb.build_batch(name)
  cfg = reference.model_config().replace(hidden_dropout=0.1, attention_dropout=0.1)
  model, params = Hero(cfg), reference.params()
  objective = registry.get(name)
  settings = objective.make_settings()
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(p, s, rng):
    def loss_fn(q):
      return objective.loss(model, q, batch, settings, step=0, rng=rng, deterministic=False)[0]
    loss, grads = jax.value_and_grad(loss_fn)(p)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    f_query = grads["v_encoder"]["f_encoder"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss, finite, jnp.abs(f_query).sum()
  losses = []
  for i in range(10):
    params, opt_state, loss, finite, reach = step(params, opt_state, jax.random.key(i))
    assert bool(finite) and float(reach) > 0, (i, float(reach))
    losses.append(float(loss))
  assert np.mean(losses[-3:]) < 0.95 * np.mean(losses[:3]), losses


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="divisible"):
    HeroConfig(hidden_size=10, num_attention_heads=3)
  with pytest.raises(ValueError, match="unknown model config keys"):
    HeroConfig.from_dict({"hidden": 3})
  with pytest.raises(ValueError, match="dtype"):
    HeroConfig(dtype="float16")


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_rematerialised_layers_give_the_same_loss_and_gradients(remat):
  """remat_cross / remat_temporal trade memory for compute; with dropout on, the
  recomputed layers draw the same masks, so nothing changes."""
  cfg = reference.model_config().replace(hidden_dropout=0.1, attention_dropout=0.1)
  batch, objective = fb.build_batch("mlm"), registry.get("mlm")

  def loss_and_grads(c):
    loss_fn = lambda p: objective.loss(  # noqa: E731
        Hero(c), p, batch, objective.make_settings(), rng=jax.random.key(0),
        deterministic=False)[0]
    remats = str(jax.make_jaxpr(loss_fn)(reference.params())).count("remat")
    return jax.jit(jax.value_and_grad(loss_fn))(reference.params()), remats
  (loss, grads), none = loss_and_grads(cfg)
  (loss_r, grads_r), some = loss_and_grads(cfg.replace(remat_cross=remat, remat_temporal=remat))
  assert none == 0 and some > 0
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_r, grads)
  with pytest.raises(ValueError, match="remat_cross must be one of"):
    cfg.replace(remat_cross="some")


@pytest.mark.parametrize("remat", ["dots"])   # the scanned body with a remat policy inside
def test_scanned_layers_give_the_same_loss_and_gradients(remat):
  """scan_layers runs each stack as one lax.scan over the same per-layer
  parameters: deterministic losses and gradients equal the loop's, one layer
  body is traced per stack instead of one per layer, and dropout still works.
  (Remat alone against the loop: the test above.)"""
  cfg = reference.model_config().replace(remat_cross=remat, remat_temporal=remat)
  batch, objective = fb.build_batch("vsm"), registry.get("vsm")

  def loss_fn(c, deterministic, rng=None):
    return lambda p: objective.loss(Hero(c), p, batch, objective.make_settings(), rng=rng,
                                    deterministic=deterministic)[0]
  params = reference.params()
  loss, grads = jax.jit(jax.value_and_grad(loss_fn(cfg, True)))(params)
  scanned = cfg.replace(scan_layers=True)
  loss_s, grads_s = jax.jit(jax.value_and_grad(loss_fn(scanned, True)))(params)
  np.testing.assert_allclose(loss_s, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_s, grads)
  scans = lambda c: str(jax.make_jaxpr(loss_fn(c, True))(params)).count("scan[")  # noqa: E731
  assert scans(scanned) - scans(cfg) == 3  # the cross-modal stack on rows and queries, temporal
  dropped = loss_fn(scanned.replace(hidden_dropout=0.1), False, jax.random.key(0))(params)
  assert np.isfinite(dropped) and dropped != loss_s
  # The parameter tree does not depend on scanning.
  assert jax.tree.structure(abstract_params(scanned)) == jax.tree.structure(params)
