"""Model configuration: every size of the HERO model in one frozen dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# The original pads the word-embedding table (and the tied MLM decoder and
# bias) to a multiple of 8 whenever it builds a model from weights
# (``CrossModalTrm.pad_vocab``), and its ``ModelSaver`` asserts it: every
# original checkpoint has a padded row count, while its JSON configs give the
# tokenizer's vocabulary (50265 in ``hero_pretrain.json``).
VOCAB_MULTIPLE = 8


HEADS = ("pretraining", "videoqa")
# The video encoder: HERO itself, or one of the paper's two baselines
# (``hero_jax.model.baselines``): H-TRM (text-only subtitle encoder, max-pooled
# onto the aligned frames, then the temporal transformer) and F-TRM (one flat
# transformer over the frames and all subtitle tokens of a video).
ENCODERS = ("hero", "h_trm", "f_trm")
# Rematerialisation of a transformer stack's layers (``jax.checkpoint`` policies):
# "none" keeps every activation for the backward pass, "full" keeps only each
# layer's input, "dots" keeps the matmul outputs (recomputes the rest).
REMAT = ("none", "full", "dots")
# How bfloat16 matmuls run (``hero_jax.model.matmul``): "f32_accumulate" through
# custom VJPs whose forward and backward dots all return float32 from row-major
# bfloat16 operands (the only bfloat16 dots XLA's CPU backend runs on the
# matrix units); "xla" as JAX differentiates them; "auto" is "f32_accumulate"
# on the CPU and "xla" elsewhere. Float32 models are unaffected.
BF16_DOTS = ("auto", "f32_accumulate", "xla")


def padded_vocab_size(vocab_size: int) -> int:
  """``vocab_size`` rounded up to a multiple of 8, as ``pad_vocab`` does."""
  return -(-int(vocab_size) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


@dataclasses.dataclass(frozen=True)
class HeroConfig:
  """Sizes and numerics of HERO. Defaults are the released base model.

  ``vocab_size`` is the (padded) row count of the word-embedding table;
  ``mlm_vocab_size`` is how many MLM logit columns are kept (HERO slices off
  the 7 pad rows, 50272 -> 50265, only when pre-training from RoBERTa).
  ``encoder_ln_eps`` is for the LayerNorms inside transformer blocks (1e-12 in
  HERO); ``ln_eps`` is for every other LayerNorm (1e-5).
  ``heads``: the heads on the encoder, as the original's model classes:
  ``"pretraining"`` (``HeroForPretraining``, also ``HeroForVcmr``: the VSM
  heads) or ``"videoqa"`` (``HeroForVideoQA``: the QA heads, no VSM heads).
  ``remat_cross`` / ``remat_temporal``: rematerialisation of the cross-modal /
  temporal layers (``REMAT``); memory for compute, results unchanged.
  ``scan_layers``: run each transformer stack as one ``jax.lax.scan`` over its
  layers (one layer compiled, not N); the parameters keep their per-layer
  names (``layer_0``...), so checkpoints are the same either way.
  ``prune_last_layer``: the last cross-modal layer computes only the
  positions a loss reads (the frame slots the temporal transformer takes, or
  MLM's masked tokens): the same outputs there, for about a sixth less of the
  stack's work; ``False`` computes every position (the full per-layer
  intermediates, ``cross_modal_output``).
  ``bf16_dots``: how bfloat16 matmuls are computed (``BF16_DOTS``).
  ``encoder``: the video encoder (``ENCODERS``): ``"hero"``, or the paper's
  baselines ``"h_trm"`` / ``"f_trm"`` (``hero_jax.model.baselines``; F-TRM's
  flat transformer has ``cross_layers + temporal_layers`` layers).
  """
  hidden_size: int = 768
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  cross_layers: int = 6
  temporal_layers: int = 3
  vocab_size: int = 50272
  mlm_vocab_size: int | None = None
  type_vocab_size: int = 2
  max_position_embeddings: int = 514
  frame_feat_dim: int = 4352
  max_frame_positions: int = 100
  fom_num_classes: int = 100
  vsm_conv_kernel: int = 5
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  encoder_ln_eps: float = 1e-12
  ln_eps: float = 1e-5
  initializer_range: float = 0.02
  dtype: str = "float32"
  heads: str = "pretraining"
  remat_cross: str = "none"
  remat_temporal: str = "none"
  encoder: str = "hero"
  scan_layers: bool = False
  prune_last_layer: bool = True
  bf16_dots: str = "auto"

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"hidden_size ({self.hidden_size}) must be divisible by "
          f"num_attention_heads ({self.num_attention_heads})")
    if self.dtype not in _DTYPES:
      raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
    if self.mlm_vocab_size is not None and not 0 < self.mlm_vocab_size <= self.vocab_size:
      raise ValueError(
          f"mlm_vocab_size ({self.mlm_vocab_size}) must be in (0, vocab_size={self.vocab_size}]")
    if self.type_vocab_size < 2:
      raise ValueError("type_vocab_size must be >= 2: HERO uses token-type row 1")
    if self.encoder not in ENCODERS:
      raise ValueError(f"model.encoder must be one of {ENCODERS}, got {self.encoder!r}")
    if self.heads not in HEADS:
      raise ValueError(f"heads must be one of {HEADS}, got {self.heads!r}")
    if self.bf16_dots not in BF16_DOTS:
      raise ValueError(f"model.bf16_dots must be one of {BF16_DOTS}, got {self.bf16_dots!r}")
    for field in ("remat_cross", "remat_temporal"):
      if getattr(self, field) not in REMAT:
        raise ValueError(f"{field} must be one of {REMAT}, got {getattr(self, field)!r}")
    if self.vsm_conv_kernel % 2 != 1:
      raise ValueError(f"vsm_conv_kernel must be odd, got {self.vsm_conv_kernel}")

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def f32_accumulated_dots(self) -> bool:
    """Whether matmuls go through ``hero_jax.model.matmul`` (bfloat16 only;
    ``"auto"`` asks JAX's default backend at trace time)."""
    if self.dtype != "bfloat16" or self.bf16_dots == "xla":
      return False
    return self.bf16_dots == "f32_accumulate" or jax.default_backend() == "cpu"

  @property
  def f_encoder_layers(self) -> int:
    """Layers of ``f_encoder``: ``cross_layers``; F-TRM's flat transformer
    (``encoder="f_trm"``) takes the temporal transformer's layers too."""
    return self.cross_layers + (self.temporal_layers if self.encoder == "f_trm" else 0)

  @property
  def mlm_columns(self) -> int:
    return self.mlm_vocab_size or self.vocab_size

  def replace(self, **kw) -> "HeroConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "HeroConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown model config keys {unknown}; known: {sorted(names)}")
    return cls(**dict(d))

  @classmethod
  def from_original(cls, model_config: Mapping[str, Any], **overrides) -> "HeroConfig":
    """The model the original builds from its JSON config (``f_config``/...).

    The vocabulary is padded as the original's ``pad_vocab`` pads it: the
    table gets ``padded_vocab_size(vocab_size)`` rows, and when that adds
    rows (e.g. 50265 -> 50272) the MLM logits keep the first ``vocab_size``
    columns (``mlm_vocab_size``), as the original slices off ``vocab_pad``.
    A vocabulary that is already a multiple of 8 (``hero_finetune.json``'s
    50272) is used as is, with every MLM column.
    """
    f, c = model_config["f_config"], model_config["c_config"]
    for key in ("hidden_size", "num_attention_heads", "intermediate_size"):
      if f[key] != c[key]:
        raise ValueError(f"f_config.{key}={f[key]} differs from c_config.{key}={c[key]}")
    kw = dict(
        hidden_size=f["hidden_size"],
        num_attention_heads=f["num_attention_heads"],
        intermediate_size=f["intermediate_size"],
        cross_layers=f["num_hidden_layers"],
        temporal_layers=c["num_hidden_layers"],
        vocab_size=padded_vocab_size(f["vocab_size"]),
        mlm_vocab_size=(f["vocab_size"] if f["vocab_size"] % VOCAB_MULTIPLE else None),
        max_position_embeddings=f["max_position_embeddings"],
        hidden_dropout=f["hidden_dropout_prob"],
        attention_dropout=f["attention_probs_dropout_prob"],
        initializer_range=f["initializer_range"],
    )
    kw.update(overrides)
    return cls(**kw)


def tiny_config(**overrides) -> HeroConfig:
  """A small config for tests and CPU smoke runs."""
  kw = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128,
            cross_layers=2, temporal_layers=1, vocab_size=320,
            frame_feat_dim=48, max_position_embeddings=514)
  kw.update(overrides)
  return HeroConfig(**kw)
