"""Transformer building blocks with HERO's numerics and logical axis names.

The blocks follow the HF BERT/RoBERTa layout that HERO uses: post-LN, separate
q/k/v projections, an additive -10000 attention mask (not -inf), exact (erf)
GELU. Submodule names mirror the original PyTorch names (``attention.self.
query``, ``output.LayerNorm``...) with ``name.N`` written ``name_N``, so that
checkpoint conversion is a mechanical rename (see ``hero_jax.convert``).

Parameter axis names: ``vocab``, ``embed`` (hidden), ``mlp`` (intermediate),
``joined_kv`` (heads x head dim), ``frame_feat`` (raw frame features),
``pos``/``type`` (position and type tables), ``classes``. Activation names:
``batch``, ``length``, ``embed``. The rules mapping them to mesh axes live in
the config.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hero_jax.model import matmul
from hero_jax.model.config import HeroConfig

ATTENTION_MASK_VALUE = -10000.0   # additive, as HERO (not -inf)
MASK_LOGITS_VALUE = -1e4          # replacing, HERO's ``mask_logits``

_f32 = jnp.float32


def normal_init(std: float, axes: tuple) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def torch_linear_init(fan_in: int, axes: tuple) -> Callable:
  """PyTorch's default Linear/Conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  HERO keeps PyTorch defaults for the VSM heads and the query encoder.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=_f32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return nn.with_logical_partitioning(init, axes)


def zeros_init(axes: tuple) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones_init(axes: tuple) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def dense(cfg: HeroConfig, features: int, axes: tuple, name: str, *,
          use_bias: bool = True, torch_default_init: int | None = None) -> nn.Dense:
  """A Dense layer with HERO's init. ``torch_default_init``: fan_in for the
  PyTorch-default init of the modules outside ``v_encoder``."""
  if torch_default_init is None:
    kernel_init = normal_init(cfg.initializer_range, axes)
    bias_init = zeros_init((axes[-1],))
  else:
    kernel_init = torch_linear_init(torch_default_init, axes)
    bias_init = torch_linear_init(torch_default_init, (axes[-1],))
  if cfg.f32_accumulated_dots:
    return F32AccumulatedDense(features, use_bias, cfg.compute_dtype, kernel_init, bias_init,
                               name=name)
  return nn.Dense(features, use_bias=use_bias, dtype=cfg.compute_dtype,
                  param_dtype=_f32, kernel_init=kernel_init, bias_init=bias_init,
                  name=name)


class F32AccumulatedDense(nn.Module):
  """``nn.Dense``'s parameters (names, shapes, init, float32) computed by
  ``matmul.dense`` (``HeroConfig.bf16_dots``)."""
  features: int
  use_bias: bool
  dtype: jnp.dtype
  kernel_init: Callable
  bias_init: Callable

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), _f32)
    bias = self.param("bias", self.bias_init, (self.features,), _f32) if self.use_bias else None
    y = matmul.dense(x.astype(self.dtype), kernel)
    return y if bias is None else add_bias(y, bias.astype(y.dtype))


def layer_norm(cfg: HeroConfig, eps: float, axis: str, name: str = "LayerNorm") -> nn.LayerNorm:
  # Two-pass variance, as torch.nn.LayerNorm: the fast E[x^2]-E[x]^2 form
  # loses float32 precision against HERO's 1e-12 epsilon.
  return nn.LayerNorm(epsilon=eps, dtype=cfg.compute_dtype, param_dtype=_f32,
                      use_fast_variance=False, scale_init=ones_init((axis,)),
                      bias_init=zeros_init((axis,)), name=name)


def embed(cfg: HeroConfig, num: int, features: int, axes: tuple, name: str,
          std: float | None = None) -> nn.Embed:
  return nn.Embed(num, features, dtype=cfg.compute_dtype, param_dtype=_f32,
                  embedding_init=normal_init(cfg.initializer_range if std is None else std, axes),
                  name=name)


def tied_decoder(cfg: HeroConfig, table: nn.Embed) -> Callable:
  """x [..., H] -> logits [..., vocab] against the rows of the embedding
  ``table`` (``Embed.attend``, or ``matmul.matmul_transposed`` with
  ``cfg.f32_accumulated_dots``)."""
  if not cfg.f32_accumulated_dots:
    return table.attend
  return lambda x: matmul.matmul_transposed(x.astype(cfg.compute_dtype),
                                            table.embedding.astype(cfg.compute_dtype))


@jax.custom_vjp
def gelu(x):
  """Exact (erf) GELU whose backward pass keeps only its input.

  Autodiff of ``jax.nn.gelu`` keeps three more tensors of the input's size
  for the backward pass (the erfc's exponential and selects, and
  Phi(x)): in the feed-forward blocks, [rows, slots, 3072] each, which made
  XLA's temporaries 0.5 GB larger on the base model (an MLM step). The
  derivative Phi(x) + x phi(x) is recomputed from x instead, as torch's GELU
  does. (A custom VJP is reverse-mode only: ``jax.jvp`` through the model
  raises; ``jax.grad`` and ``jax.vjp`` are unaffected.)"""
  return jax.nn.gelu(x, approximate=False)


def _gelu_forward(x):
  return gelu(x), x


def _gelu_backward(x, grad):
  # The barrier keeps XLA from sharing the forward pass's erfc (and so
  # keeping its temporaries alive until the backward pass).
  x, grad = jax.lax.optimization_barrier((x, grad))
  cdf = 0.5 * jax.lax.erfc(-x * (1 / math.sqrt(2)))
  pdf = jnp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
  return (grad * (cdf + x * pdf),)


gelu.defvjp(_gelu_forward, _gelu_backward)


@jax.custom_vjp
def add_bias(x, bias):
  """``x`` [..., N] + ``bias`` [N] (same dtype), whose bias gradient XLA's
  CPU backend computes fast; the same sum up to float summation order.

  float32: a vector-matrix product (ones @ grad) instead of a reduction. For
  the MLM logits ([predictions, 50272]) the reduction ran at a fraction of a
  dot's speed: the head's forward and backward took 0.53-0.56 s against
  0.44-0.45 s with the product (416 predictions, base size, 2-core CPU).
  bfloat16 (``F32AccumulatedDense``): summed in float32. Left to autodiff, the
  bfloat16 sum went through a float32 copy and a windowed tree reduction: 7 ms
  per [26, 96, 768] gradient in the base model's step, against 0.6-1.9 ms."""
  return x + bias


def _add_bias_forward(x, bias):
  return x + bias, None


def _add_bias_backward(_, grad):
  rows = grad.reshape(-1, grad.shape[-1])
  if grad.dtype == _f32:
    return grad, jnp.ones((rows.shape[0],), grad.dtype) @ rows
  return grad, jnp.sum(rows, axis=0, dtype=_f32).astype(grad.dtype)


add_bias.defvjp(_add_bias_forward, _add_bias_backward)


def attention_bias(mask: jax.Array) -> jax.Array:
  """[..., L] 0/1 key mask -> additive bias [..., 1, 1, L] (float32)."""
  return ((1.0 - mask.astype(_f32)) * ATTENTION_MASK_VALUE)[..., None, None, :]


def segment_bias(segments: jax.Array) -> jax.Array:
  """[..., L] segment ids (0: empty) -> additive bias [..., 1, L, L] (float32):
  a position sees the keys of its own segment, exactly as ``attention_bias``
  of that segment alone (0 or -10000)."""
  same = (segments[..., :, None] == segments[..., None, :]) & (segments[..., None, :] > 0)
  return jnp.where(same, 0.0, ATTENTION_MASK_VALUE).astype(_f32)[..., None, :, :]


def mask_logits(x: jax.Array, mask: jax.Array) -> jax.Array:
  """HERO's ``mask_logits``: masked positions become exactly -1e4."""
  mask = mask.astype(x.dtype)
  return x * mask + (1.0 - mask) * MASK_LOGITS_VALUE


def constrain(x, axes):
  return nn.with_logical_constraint(x, axes)


class BertSelfAttention(nn.Module):
  """q/k/v projections and scaled dot-product attention (``attention.self``)."""
  cfg: HeroConfig
  torch_default_init: bool = False

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, keep=None):
    """``x`` [..., L, H]; ``bias`` broadcasts to [..., heads, L, L].

    With ``keep`` int [G, N] (``BertEncoder``), only the kept positions are
    queries: the output is theirs, [G, N, H]."""
    cfg = self.cfg
    h, nh = cfg.hidden_size, cfg.num_attention_heads
    hd = h // nh
    init = h if self.torch_default_init else None

    def heads(name, y):
      y = dense(cfg, h, ("embed", "joined_kv"), name, torch_default_init=init)(y)
      return y.reshape(y.shape[:-1] + (nh, hd))

    k, v = heads("key", x), heads("value", x)
    if keep is None:
      q = heads("query", x)
    else:   # project the kept positions only, then put them back in their rows
      q = place_kept(heads("query", take_kept(x, keep)), keep, x.shape[:-1])
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=_f32)
    scores = scores / math.sqrt(hd) + bias
    probs = jax.nn.softmax(scores, axis=-1)
    probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
    ctx = jnp.einsum("...hqk,...khd->...qhd", probs.astype(v.dtype), v)
    ctx = ctx.reshape(ctx.shape[:-2] + (h,))
    return ctx if keep is None else take_kept(ctx, keep)


def take_kept(x, keep):
  """Rows ``x`` [B, L, ...] -> the kept positions [G, N, ...] (``keep`` int
  [G, N] into each group's flattened [(B / G) * L] positions)."""
  g = keep.shape[0]
  flat = x.reshape((g, -1) + x.shape[2:])
  return jnp.take_along_axis(flat, keep.reshape(keep.shape + (1,) * (x.ndim - 2)), axis=1)


def place_kept(values, keep, rows_shape):
  """Kept positions' ``values`` [G, N, ...] -> rows [B, L, ...] (zeros where
  nothing is kept).

  A gather through the inverse of ``keep``, not a scatter: a position kept
  twice (padding slots may share one) is filled from one of its copies, so
  its gradient is counted once."""
  g, n = keep.shape
  slots = math.prod(rows_shape) // g
  owner = jnp.full((g, slots), n, jnp.int32).at[jnp.arange(g)[:, None], keep].set(
      jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), keep.shape))
  padded = jnp.concatenate([values, jnp.zeros_like(values[:, :1])], axis=1)
  placed = jnp.take_along_axis(padded, owner.reshape(owner.shape + (1,) * (values.ndim - 2)),
                               axis=1)
  return placed.reshape(tuple(rows_shape) + values.shape[2:])


class AddNorm(nn.Module):
  """dense -> dropout -> residual -> LayerNorm (``attention.output``/``output``)."""
  cfg: HeroConfig
  in_axis: str
  torch_default_init: int | None = None

  @nn.compact
  def __call__(self, x, residual, deterministic: bool):
    cfg = self.cfg
    y = dense(cfg, cfg.hidden_size, (self.in_axis, "embed"), "dense",
              torch_default_init=self.torch_default_init)(x)
    y = nn.Dropout(cfg.hidden_dropout)(y, deterministic=deterministic)
    return layer_norm(cfg, cfg.encoder_ln_eps, "embed")(y + residual)


class BertAttention(nn.Module):
  """Self-attention block: ``self`` + ``output`` (dense, dropout, add, LN)."""
  cfg: HeroConfig
  torch_default_init: bool = False

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, keep=None):
    ctx = BertSelfAttention(self.cfg, self.torch_default_init, name="self")(
        x, bias, deterministic, keep)
    fan_in = self.cfg.hidden_size if self.torch_default_init else None
    residual = x if keep is None else take_kept(x, keep)
    return AddNorm(self.cfg, "joined_kv", fan_in, name="output")(ctx, residual, deterministic)


class BertLayer(nn.Module):
  """One post-LN layer. With ``keep`` int [G, N] (``BertEncoder``), outputs
  only the kept positions [G, N, H]: equal to those positions of the full
  layer's output, for a fraction of its work (their queries, attention output
  and feed-forward; keys and values are every position's)."""
  cfg: HeroConfig

  @nn.compact
  def __call__(self, x, bias, deterministic: bool, keep=None):
    cfg = self.cfg
    x = BertAttention(cfg, name="attention")(x, bias, deterministic, keep)
    hidden = Intermediate(cfg, name="intermediate")(x)
    return AddNorm(cfg, "mlp", name="output")(hidden, x, deterministic)


class Intermediate(nn.Module):
  cfg: HeroConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    return gelu(dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "dense")(x))


class BertEncoder(nn.Module):
  """A stack of ``num_layers`` post-LN transformer layers (``layer_0``...).

  Sows each layer's output under ``intermediates/hidden_states`` so that tests
  and users can read every layer (``mutable=["intermediates"]``).

  With ``cfg.scan_layers`` the layers run as one ``jax.lax.scan`` over their
  parameters stacked on the fly (XLA compiles one layer instead of N): the
  parameter tree stays ``layer_0``..., so checkpoints, converters and the
  sharding rules do not change. Outputs equal the loop's; dropout draws one
  key per layer from the stack's key instead of one per layer name, and the
  per-layer hidden states are not sown. Initialisation always runs the loop.
  """
  cfg: HeroConfig
  num_layers: int
  remat: str = "none"   # HeroConfig.REMAT

  @nn.compact
  def __call__(self, x, mask, deterministic: bool, segments=None, keep=None):
    """``mask``: [..., L] 0/1 key mask; or, for packed rows, ``segments``
    [..., L] instead (``segment_bias``).

    ``keep``: the positions whose output is read, int [G, N] into the
    flattened [G, (B / G) * L] positions of ``x`` [B, L, H] (G groups of rows,
    e.g. videos). The last layer then computes only them (``BertLayer``)
    and the stack returns [G, N, H]: those positions' outputs, for a fraction
    of the last layer's work. A kept position of a padding slot gets a finite
    value of no meaning.
    """
    bias = attention_bias(mask) if segments is None else segment_bias(segments)
    layer = BertLayer
    if self.remat != "none":
      layer = nn.remat(BertLayer, policy=self._remat_policy(), static_argnums=(3,))  # deterministic
    full = self.num_layers - (keep is not None)
    if self.cfg.scan_layers and not self.is_initializing():
      if full:
        x = self._scan(x, bias, deterministic, full)
    else:
      for i in range(full):
        x = layer(self.cfg, name=f"layer_{i}")(x, bias, deterministic)
        x = constrain(x, _hidden_names(x))
        self.sow("intermediates", "hidden_states", x)
    if keep is None:
      return x
    # The last layer as a submodule in both modes: under scan it binds to the
    # same ``layer_{N-1}`` parameters that _scan reads.
    out = layer(self.cfg, name=f"layer_{self.num_layers - 1}")(x, bias, deterministic, keep)
    out = constrain(out, _hidden_names(out))
    self.sow("intermediates", "hidden_states", out)
    return out

  def _remat_policy(self):
    policies = jax.checkpoint_policies
    if self.remat != "dots":
      return policies.nothing_saveable
    # matmul's custom VJPs hide their dots from the policy: their outputs are
    # saved by name instead.
    return policies.save_from_both_policies(
        policies.dots_with_no_batch_dims_saveable,
        policies.save_only_these_names(matmul.SAVED_NAME))

  def _scan(self, x, bias, deterministic: bool, num_layers: int):
    """Layers 0..num_layers-1 as one scan."""
    params = nn.unbox(self.variables["params"])
    stacked = jax.tree.map(lambda *p: jnp.stack(p),
                           *[params[f"layer_{i}"] for i in range(num_layers)])
    keys = None if deterministic else jax.random.split(self.make_rng("dropout"), num_layers)

    def body(h, layer):
      p, key = layer
      h = BertLayer(self.cfg).apply({"params": p}, h, bias, deterministic,
                                    rngs=None if key is None else {"dropout": key})
      return constrain(h, _hidden_names(h)), None
    if self.remat != "none":
      body = jax.checkpoint(body, policy=self._remat_policy())
    x, _ = jax.lax.scan(body, x, (stacked, keys))
    return x


def _hidden_names(x) -> tuple:
  return ("batch",) * (x.ndim - 2) + ("length", "embed")


class Pooler(nn.Module):
  """dense + tanh on position 0. No HERO loss uses it; kept for checkpoints."""
  cfg: HeroConfig

  @nn.compact
  def __call__(self, x):
    return jnp.tanh(dense(self.cfg, self.cfg.hidden_size, ("embed", "embed_out"), "dense")(x[..., 0, :]))
