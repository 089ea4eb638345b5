"""bfloat16 matmuls accumulated in float32 (``hero_jax.model.matmul``) and
the model's ``bf16_dots`` setting."""

from __future__ import annotations

import contextlib
import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hero_jax.model import layers, matmul
from hero_jax.model.config import HeroConfig
from hero_jax.model.hero import Hero
from hero_jax.objectives import registry
from tests import fixture_batches as fb
from tests import reference

BF16 = jnp.bfloat16


def rounded(rng, shape, scale=1.0):
  """bfloat16 values (and the same values in float32, exactly)."""
  x = jnp.asarray(rng.normal(size=shape) * scale, BF16)
  return x, x.astype(jnp.float32)


def close_in_bf16(ours, ref):
  """Within bfloat16's rounding of results of ``ref``'s size."""
  ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
  np.testing.assert_allclose(ours, ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())


@pytest.mark.parametrize("x_shape", [(5, 8), (3, 5, 8), (2, 3, 5, 8)])
def test_matmul_and_its_gradients_are_float32_products_of_the_bf16_inputs(x_shape):
  rng = np.random.default_rng(0)
  x, x32 = rounded(rng, x_shape)
  w, w32 = rounded(rng, (8, 6), 0.3)
  weight = jnp.asarray(rng.normal(size=x_shape[:-1] + (6,)), jnp.float32)
  out = matmul.matmul(x, w)
  assert out.dtype == BF16 and out.shape == x_shape[:-1] + (6,)
  close_in_bf16(out, x32 @ w32)

  def loss(f, a, b):
    return (f(a, b).astype(jnp.float32) * weight).sum()
  dx, dw = jax.grad(lambda a, b: loss(matmul.matmul, a, b), argnums=(0, 1))(x, w)
  rx, rw = jax.grad(lambda a, b: loss(jnp.matmul, a, b), argnums=(0, 1))(x32, w32)
  assert dx.dtype == BF16 and dw.dtype == BF16
  close_in_bf16(dx, rx)
  close_in_bf16(dw, rw)


def test_matmul_transposed_is_the_tied_decoder_and_its_gradients():
  rng = np.random.default_rng(1)
  x, x32 = rounded(rng, (4, 7, 8))
  e, e32 = rounded(rng, (11, 8), 0.3)
  weight = jnp.asarray(rng.normal(size=(4, 7, 11)), jnp.float32)
  close_in_bf16(matmul.matmul_transposed(x, e), x32 @ e32.T)
  ours = jax.grad(lambda a, b: (matmul.matmul_transposed(a, b).astype(jnp.float32)
                                * weight).sum(), argnums=(0, 1))(x, e)
  ref = jax.grad(lambda a, b: ((a @ b.T) * weight).sum(), argnums=(0, 1))(x32, e32)
  for a, b in zip(ours, ref):
    close_in_bf16(a, b)


def test_f32_accumulated_dense_has_denses_parameters_and_result():
  """layers.F32AccumulatedDense (bf16_dots) keeps nn.Dense's parameter tree
  and computes its product; its bias gradient is the gradient's row sum."""
  cfg = HeroConfig(dtype="bfloat16", bf16_dots="f32_accumulate")
  x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 8)), BF16)
  ours = layers.dense(cfg, 6, ("embed", "mlp"), "dense")
  ref = layers.dense(cfg.replace(bf16_dots="xla"), 6, ("embed", "mlp"), "dense")
  assert isinstance(ours, layers.F32AccumulatedDense) and not isinstance(ref, layers.F32AccumulatedDense)
  params = nn.unbox(ref.init(jax.random.key(0), x))
  assert (jax.tree.map(jnp.shape, nn.unbox(ours.init(jax.random.key(0), x)))
          == jax.tree.map(jnp.shape, params))
  close_in_bf16(ours.apply(params, x), ref.apply(params, x))
  weight = jnp.asarray(np.random.default_rng(3).normal(size=(3, 5, 6)), jnp.float32)
  grads = [jax.grad(lambda p, m=m: (m.apply(p, x).astype(jnp.float32) * weight).sum())(params)
           for m in (ours, ref)]
  jax.tree.map(close_in_bf16, *grads)
  np.testing.assert_allclose(grads[0]["params"]["bias"], weight.sum((0, 1)), rtol=1e-2)


def test_bf16_dots_setting():
  assert not HeroConfig().f32_accumulated_dots   # float32: never
  assert not HeroConfig(dtype="bfloat16", bf16_dots="xla").f32_accumulated_dots
  assert HeroConfig(dtype="bfloat16", bf16_dots="f32_accumulate").f32_accumulated_dots
  assert (HeroConfig(dtype="bfloat16").f32_accumulated_dots
          == (jax.default_backend() == "cpu"))
  with pytest.raises(ValueError, match="bf16_dots"):
    HeroConfig(dtype="bfloat16", bf16_dots="fast")


@pytest.mark.parametrize("task", ["mlm", "vsm"])
def test_model_with_f32_accumulated_dots_matches_xlas_bf16_dots(task):
  """The same bfloat16 model with both settings: losses and gradients agree
  to bfloat16 precision (they differ only in where partial sums round)."""
  batch = fb.build_batch(task)
  params = reference.params()
  objective = registry.get(task)
  settings = objective.make_settings({})

  def loss_and_grads(bf16_dots):
    model = Hero(reference.model_config().replace(dtype="bfloat16", bf16_dots=bf16_dots))

    def loss(p):
      return objective.loss(model, p, batch, settings, rng=jax.random.key(0),
                            deterministic=True)[0]
    return jax.jit(jax.value_and_grad(loss))(params)
  (ours, ours_grads), (ref, ref_grads) = (loss_and_grads(s) for s in ("f32_accumulate", "xla"))
  np.testing.assert_allclose(ours, ref, rtol=2e-2)
  flat_ours, flat_ref = (np.concatenate([np.ravel(g) for g in jax.tree.leaves(t)])
                         for t in (ours_grads, ref_grads))
  assert np.corrcoef(flat_ours, flat_ref)[0, 1] > 0.99
  assert np.linalg.norm(flat_ours - flat_ref) < 0.1 * np.linalg.norm(flat_ref)


def test_remat_dots_keeps_the_f32_accumulated_dots_outputs():
  """remat "dots" saves matmul's outputs (by name: the policy cannot see
  into a custom VJP) and so keeps more than "full"; losses and gradients
  stay within bfloat16's differences of fusion (as with XLA's own dots)."""
  cfg = reference.model_config().replace(dtype="bfloat16", bf16_dots="f32_accumulate")
  batch, objective = fb.build_batch("mlm"), registry.get("mlm")

  def loss_fn(c):
    return lambda p: objective.loss(Hero(c), p, batch, objective.make_settings(),
                                    rng=jax.random.key(0), deterministic=True)[0]
  params = reference.params()

  def residuals(remat):   # print_saved_residuals writes one line per residual
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      jax.ad_checkpoint.print_saved_residuals(
          loss_fn(cfg.replace(remat_cross=remat, remat_temporal=remat)), params)
    return len(out.getvalue().splitlines())
  saved = {remat: residuals(remat) for remat in ("none", "full", "dots")}
  assert saved["full"] < saved["dots"] < saved["none"], saved
  loss, grads = jax.jit(jax.value_and_grad(loss_fn(cfg)))(params)
  loss_r, grads_r = jax.jit(jax.value_and_grad(loss_fn(cfg.replace(remat_cross="dots"))))(params)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-4)
  flat, flat_r = (np.concatenate([np.ravel(g) for g in jax.tree.leaves(t)]) for t in (grads, grads_r))
  assert np.linalg.norm(flat_r - flat) < 0.02 * np.linalg.norm(flat)
