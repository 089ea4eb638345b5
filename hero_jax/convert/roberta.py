"""HF RoBERTa checkpoint -> hero_jax params, as HERO starts pre-training (spec 6.3).

What the original does (``load_partial_checkpoint`` + ``CrossModalTrm.
from_pretrained`` + ``pad_vocab`` + ``init_type_embedding``), and so this:

* Layers: with ``skip_layers`` (``skip_layer_loading``, on in pre-training)
  and n target layers, ``gap = 12 // n`` and source layers ``gap-1, 2*gap-1,
  ...`` become target layers ``0, 1, ...`` (6 layers: 1, 3, 5, 7, 9, 11). The
  original hard-codes 12 source layers; here the source layer count N is read
  from the keys (``gap = N // n``), which is the same rule for 12-layer
  sources. Without ``skip_layers``, source layers ``0..n-1``.
* ``roberta.embeddings.*`` -> ``v_encoder.f_encoder.embeddings.*``,
  ``roberta.pooler.*`` -> ``v_encoder.f_encoder.pooler.*``.
* Word embeddings are zero-padded to ``cfg.vocab_size`` rows (a multiple of
  8: 50265 -> 50272); ``cfg.mlm_vocab_size`` keeps the MLM logits at the
  source vocabulary, as the original's ``vocab_pad`` slice.
* ``token_type_embeddings``: rows 0 and 1 both become RoBERTa's row 0.
* Row 0 of ``v_encoder.mask_embedding`` is zeroed (not the one inside
  ``img_embeddings``).
* HF's ``lm_head.*`` keys are not under ``roberta.``, so the original never
  loads them: its LM head keeps PyTorch's default init (the head is built
  after ``init_weights`` runs), i.e. dense U(+-1/sqrt(H)), LayerNorm 1/0,
  bias 0. ``load_lm_head=True`` loads them instead (dense, layer_norm, the
  zero-padded bias; the decoder is tied).
* Everything else (temporal transformer, frame embeddings, heads) is a fresh
  init, ``init_params(cfg, seed)``.

The baselines (``model.encoder``) start the same way: H-TRM's subtitle
encoder is ``f_encoder``; F-TRM's flat transformer is ``f_encoder`` with
``cross_layers + temporal_layers`` target layers (9: source layers 0..8), and
it has no clip-level mask vector to zero.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

from hero_jax.convert import files
from hero_jax.convert import mapping
from hero_jax.model.config import HeroConfig, VOCAB_MULTIPLE, padded_vocab_size

F = "v_encoder.f_encoder."
_LAYER = re.compile(r"^roberta\.encoder\.layer\.(\d+)\.(.+)$")
_BARE_PREFIXES = ("embeddings.", "encoder.", "pooler.")   # a RobertaModel saved without 'roberta.'
_BUFFERS = ("position_ids",)                               # HF non-parameter buffers
_LM_HEAD = {
    "lm_head.dense.weight": F + "lm_head.dense.weight",
    "lm_head.dense.bias": F + "lm_head.dense.bias",
    "lm_head.layer_norm.weight": F + "lm_head.LayerNorm.weight",
    "lm_head.layer_norm.bias": F + "lm_head.LayerNorm.bias",
    "lm_head.bias": F + "lm_head.bias",
}
_TYPE_KEY = "roberta.embeddings.token_type_embeddings.weight"
_WORD_KEY = "roberta.embeddings.word_embeddings.weight"


@dataclasses.dataclass
class RobertaReport:
  """``loaded``: (source key, HERO key) pairs. ``skipped``: source keys not
  used, with the reason. ``initialised``: HERO keys left at the fresh init."""
  loaded: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)
  initialised: list = dataclasses.field(default_factory=list)
  layer_map: dict = dataclasses.field(default_factory=dict)
  notes: list = dataclasses.field(default_factory=list)

  def summary(self, max_names: int = 20) -> str:
    lines = [f"loaded {len(self.loaded)} tensors from RoBERTa",
             "layers (source -> HERO): " + ", ".join(f"{s}->{d}" for s, d in self.layer_map.items())]
    if self.skipped:
      shown = [f"{k} ({why})" for k, why in self.skipped[:max_names]]
      more = f" ... (+{len(self.skipped) - max_names})" if len(self.skipped) > max_names else ""
      lines.append(f"skipped ({len(self.skipped)}): " + ", ".join(shown) + more)
    lines.append(f"fresh init: {len(self.initialised)} HERO tensors")
    lines.extend(f"note: {n}" for n in self.notes)
    return "\n".join(lines)

  def __str__(self):
    return self.summary()


def load_roberta_state_dict(path) -> dict[str, Any]:
  """A RoBERTa checkpoint file (``.bin`` via torch, or ``.safetensors``) as numpy."""
  return files.load_state_dict(path)


def select_layers(num_source: int, num_target: int, skip_layers: bool = True) -> dict[int, int]:
  """{source layer: target layer}, HERO's ``skip_layer_loading`` rule."""
  if num_target > num_source:
    raise ValueError(f"cannot fill {num_target} HERO layers from {num_source} RoBERTa layers")
  if not skip_layers:
    return {i: i for i in range(num_target)}
  gap = num_source // num_target
  return {gap * (i + 1) - 1: i for i in range(num_target)}


def _normalise(sd: Mapping[str, Any], report: RobertaReport) -> dict:
  """Legacy gamma/beta names, HF buffers, and a missing ``roberta.`` prefix."""
  out = {}
  for key, value in sd.items():
    new = mapping.rename_legacy(key)
    if key.rsplit(".", 1)[-1] in _BUFFERS or not hasattr(value, "shape"):
      report.skipped.append((key, "buffer / not a tensor"))
      continue
    out[new] = value
  if not any(k.startswith("roberta.") for k in out) and any(k.startswith(_BARE_PREFIXES) for k in out):
    report.notes.append("no 'roberta.' prefix (a bare RobertaModel); treated as if prefixed")
    out = {("roberta." + k if k.startswith(_BARE_PREFIXES) else k): v for k, v in out.items()}
  return out


def _num_source_layers(sd: Mapping) -> int:
  ids = [int(m.group(1)) for m in map(_LAYER.match, sd) if m]
  if not ids:
    raise ValueError("no 'roberta.encoder.layer.N.*' keys: is this a RoBERTa checkpoint?")
  return max(ids) + 1


def roberta_config(state_dict: Mapping[str, Any], base: HeroConfig | None = None,
                   **overrides) -> HeroConfig:
  """A HeroConfig for pre-training from this RoBERTa: text sizes from the
  shapes (vocab padded to a multiple of 8, MLM logits kept at the source
  vocab), the rest from ``base`` (default: the released sizes), then
  ``overrides``."""
  sd = _normalise(state_dict, RobertaReport())

  def shape(key):
    if key not in sd:
      raise ValueError(f"{key} not found: cannot read the model sizes from this checkpoint")
    return tuple(int(n) for n in sd[key].shape)
  vocab, hidden = shape(_WORD_KEY)
  kw = dict(hidden_size=hidden, vocab_size=padded_vocab_size(vocab),
            mlm_vocab_size=vocab if vocab % VOCAB_MULTIPLE else None,
            intermediate_size=shape("roberta.encoder.layer.0.intermediate.dense.weight")[0],
            max_position_embeddings=shape("roberta.embeddings.position_embeddings.weight")[0])
  kw.update(overrides)
  return (base or HeroConfig()).replace(**kw)


def _map_key(key: str, layer_map: Mapping[int, int], load_lm_head: bool) -> tuple[str | None, str]:
  """(HERO key or None, reason when None) for one source key."""
  m = _LAYER.match(key)
  if m:
    src = int(m.group(1))
    if src not in layer_map:
      return None, "layer not selected"
    return f"{F}encoder.layer.{layer_map[src]}.{m.group(2)}", ""
  for prefix in ("roberta.embeddings.", "roberta.pooler."):
    if key.startswith(prefix):
      return F + key[len("roberta."):], ""
  if key.startswith("lm_head."):
    if not load_lm_head:
      return None, "lm_head not loaded (as the original; load_lm_head=True to load)"
    if key in _LM_HEAD:
      return _LM_HEAD[key], ""
    return None, "tied to the word embeddings / duplicate of lm_head.bias"
  return None, "not part of HERO"


def _rename(sd: Mapping[str, Any], cfg: HeroConfig, skip_layers: bool, load_lm_head: bool,
            report: RobertaReport) -> dict[str, np.ndarray]:
  report.layer_map = select_layers(_num_source_layers(sd), cfg.f_encoder_layers, skip_layers)
  out = {}
  for key, value in sd.items():
    if key == _TYPE_KEY:
      continue   # expanded to two rows on the params (_init_type_embedding)
    hero_key, why = _map_key(key, report.layer_map, load_lm_head)
    if hero_key is None:
      report.skipped.append((key, why))
      continue
    array = np.asarray(value, np.float32)
    if hero_key.endswith(("word_embeddings.weight", "lm_head.bias")):
      array = mapping.pad_rows(array, cfg.vocab_size, key)
    out[hero_key] = array
    report.loaded.append((key, hero_key))
  return out


def roberta_to_hero_state_dict(state_dict: Mapping[str, Any], cfg: HeroConfig, *,
                               skip_layers: bool = True, load_lm_head: bool = False
                               ) -> tuple[dict[str, np.ndarray], RobertaReport]:
  """The RoBERTa tensors renamed to HERO keys (original layout), vocab padded.

  The type table is left out: it is expanded on the params (two rows).
  """
  report = RobertaReport()
  sd = _normalise(state_dict, report)
  return _rename(sd, cfg, skip_layers, load_lm_head, report), report


def _torch_default_lm_head(params: dict, cfg: HeroConfig, seed: int) -> None:
  """PyTorch's default Linear init for lm_head.dense, as the original leaves it."""
  rng = np.random.default_rng(seed)
  bound = 1.0 / np.sqrt(cfg.hidden_size)
  dense = params["v_encoder"]["f_encoder"]["lm_head"]["dense"]
  dense["kernel"] = rng.uniform(-bound, bound, dense["kernel"].shape).astype(np.float32)
  dense["bias"] = rng.uniform(-bound, bound, dense["bias"].shape).astype(np.float32)


def _init_type_embedding(params: dict, sd: Mapping, report: RobertaReport) -> None:
  if _TYPE_KEY not in sd:
    report.notes.append(f"{_TYPE_KEY} absent: token types keep the fresh init")
    return
  table = params["v_encoder"]["f_encoder"]["embeddings"]["token_type_embeddings"]
  emb = np.array(table["embedding"])
  emb[:2] = np.asarray(sd[_TYPE_KEY], np.float32)[0]
  table["embedding"] = emb
  report.loaded.append((_TYPE_KEY, F + "embeddings.token_type_embeddings.weight"))
  report.notes.append("token_type_embeddings: rows 0 and 1 are both RoBERTa's row 0")


def _zero_mask_embedding_row0(params: dict) -> None:
  if "mask_embedding" not in params["v_encoder"]:
    return   # F-TRM (model.encoder="f_trm") has no clip-level mask vector
  table = params["v_encoder"]["mask_embedding"]
  emb = np.array(table["embedding"])
  emb[0] = 0.0
  table["embedding"] = emb


def from_roberta(state_dict: Mapping[str, Any], cfg: HeroConfig, *, seed: int = 0,
                 skip_layers: bool = True, load_lm_head: bool = False,
                 base_params: Mapping | None = None) -> tuple[dict, RobertaReport]:
  """HERO params initialised from RoBERTa as the original pre-training start.

  ``base_params``: the fresh init to fill in (default ``init_params(cfg,
  seed)``); pass it to reuse one init. Returns numpy params and a report.
  """
  report = RobertaReport()
  sd = _normalise(state_dict, report)
  hero_sd = _rename(sd, cfg, skip_layers, load_lm_head, report)
  if base_params is None:
    from hero_jax.model.params import init_params  # noqa: PLC0415 (jax only when needed)
    base_params = init_params(cfg, seed)
  params, conv = mapping.state_dict_to_params(hero_sd, base_params, strict=False)
  if conv.unexpected:
    raise ValueError(f"RoBERTa tensors mapped to keys HERO does not have: {conv.unexpected}")
  if not load_lm_head:
    _torch_default_lm_head(params, cfg, seed)
    report.notes.append("lm_head.dense: PyTorch default init (as the original)")
  _init_type_embedding(params, sd, report)
  _zero_mask_embedding_row0(params)
  type_key = F + "embeddings.token_type_embeddings.weight"
  report.initialised = [k for k in conv.missing if k != type_key or _TYPE_KEY not in sd]
  return params, report
