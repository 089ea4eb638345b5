"""bfloat16 matmuls that accumulate in float32, with backward passes in the
same form (``HeroConfig.bf16_dots``).

XLA's CPU backend runs a bfloat16 dot on the CPU's matrix units (AMX, through
YNNPACK) only when the dot returns float32 and neither operand needs a
transpose on its contraction's side; any other bfloat16 dot it converts to
float32 and runs at float32 speed. JAX's autodiff of a bfloat16 ``Dense``
produces exactly those other dots: bfloat16 outputs, and for the weight
gradient x^T @ g, whose left operand is contracted on its first axis. These
functions compute the same products (float32 accumulation, rounded to the
inputs' dtype) with custom VJPs whose three dots each have the fast form:
``x @ w``, ``g @ w^T`` (both operands contracted on their last axis) and
``x^T @ g`` written as a contraction over a batch and a row axis, for which
XLA makes a row-major copy of x (a cheap pass) instead of falling back.

On the 2-core Sapphire Rapids dev machine this runs the base model's Dense
layers at 500-1000 GFLOP/s against 170-290 for float32, and a bfloat16
pre-training step 2.1x faster than a float32 one (the README's Speed
section, ``benchmarks/train_step.py --dtype bfloat16``). The results are the
float32-accumulated products, so they equal XLA's own bfloat16 dots up to
the rounding of partial sums (``tests/test_matmul.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

_f32 = jnp.float32
# The name of ``dense``'s products for ``jax.checkpoint`` policies
# (a custom VJP's dots are not visible to ``dots_with_no_batch_dims_saveable``).
SAVED_NAME = "f32_accumulated_dot"


def _einsum(spec: str, a, b):
  return jnp.einsum(spec, a, b, preferred_element_type=_f32)


def _rows(x):
  """[..., L, K] -> [B, L, K] (leading axes of 1 where x has fewer than 3)."""
  if x.ndim < 3:
    return x.reshape((1,) * (3 - x.ndim) + x.shape)
  return x.reshape((-1,) + x.shape[-2:])


def _outer(a, b):
  """sum over rows of a[..., i] b[..., j] -> [i, j], as a batched dot (see
  the module doc: the 2-D form of this product falls back to float32)."""
  return _einsum("bli,blj->ij", _rows(a), _rows(b))


# The weight's layout -> (forward spec, input-gradient spec): w [K, N] for a
# Dense kernel, or [N, K] for a tied decoder's embedding table.
_SPECS = {False: ("...k,kn->...n", "...n,kn->...k"), True: ("...k,nk->...n", "...n,nk->...k")}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _product(x, w, w_transposed: bool):
  return _einsum(_SPECS[w_transposed][0], x, w).astype(x.dtype)


def _product_fwd(x, w, w_transposed):
  return _product(x, w, w_transposed), (x, w)


def _product_bwd(w_transposed, residuals, grad):
  x, w = residuals
  grad = grad.astype(x.dtype)
  dx = _einsum(_SPECS[w_transposed][1], grad, w).astype(x.dtype)
  dw = _outer(grad, x) if w_transposed else _outer(x, grad)
  return dx, dw.astype(w.dtype)


_product.defvjp(_product_fwd, _product_bwd)


def matmul(x, w):
  """``x`` [..., K] @ ``w`` [K, N] -> [..., N] in ``x.dtype``, accumulated
  in float32."""
  return _product(x, w, False)


def matmul_transposed(x, e):
  """``x`` [..., K] @ ``e`` [V, K]^T -> [..., V] in ``x.dtype``, accumulated
  in float32 (a tied decoder: ``e`` is the embedding table)."""
  return _product(x, e, True)


def dense(x, kernel):
  """``nn.Dense``'s product, x @ kernel, in ``x.dtype`` through ``matmul``;
  the output is named ``SAVED_NAME`` for remat policies."""
  return checkpoint_name(matmul(x, kernel.astype(x.dtype)), SAVED_NAME)
