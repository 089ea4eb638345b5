"""Original HERO ``state_dict`` <-> hero_jax params (numpy; no torch).

Key rule (spec 6.2). A torch key is split on '.', and a numeric component is
merged into the one before it (``encoder.layer.3`` -> ``encoder/layer_3``,
``frame_transform.net.1`` -> ``frame_transform/net_1``). The leaf ``weight``
becomes whatever the Flax template holds at that module:

* ``kernel`` of a Dense: transposed, (out, in) -> (in, out);
* ``kernel`` of a Conv1d: (out, in, k) -> (k, in, out), ``transpose(2, 1, 0)``
  (both frameworks cross-correlate, so no flip);
* ``embedding`` (Embedding) or ``scale`` (LayerNorm): as is.

``bias`` stays ``bias`` (``lm_head.bias`` is a direct parameter of lm_head).

Entries of the original that are not parameters are dropped on the way in
and re-created on the way out: ``vocab_padded`` (ModelSaver's flag), the zero
``pad`` buffers, and the tied ``lm_head.decoder.weight`` (the same tensor as
the word embeddings; checked on the way in). ``tri_mask`` and
``loss_func.one_hot`` (TVC buffers) are dropped too.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np

# File I/O lives in ``files`` (torch imported lazily there); re-exported here
# so that ``mapping.load_state_dict(path)`` works too.
from hero_jax.convert.files import load_state_dict, save_state_dict  # noqa: F401
from hero_jax.model.config import padded_vocab_size

FlaxPath = tuple  # a Flax parameter path, e.g. ('v_encoder', 'mask_embedding', 'embedding')

# Torch containers indexed by number in HERO (ModuleList / Sequential). On the
# way back these are the only ``name_N`` components written ``name.N``:
# ``fom_output.linear_1`` is an attribute named ``linear_1``, not a list.
SEQUENCE_NAMES = ("layer", "net")

# Non-parameter entries of original checkpoints, matched on the whole key or
# on its last components.
_FLAG_KEYS = ("vocab_padded",)
_BUFFER_SUFFIXES = ("pad", "tri_mask", "loss_func.one_hot")
_TIED_SUFFIX = "lm_head.decoder.weight"
_WORD_EMB_SUFFIX = "embeddings.word_embeddings.weight"

# Modules whose ``pad`` buffer (8, hidden) the original state_dict holds.
PAD_BUFFER_MODULES = ("v_encoder", "v_encoder.f_encoder")
PAD_ROWS = 8

# Legacy (TF-BERT era) LayerNorm names that the original loader renames.
_LEGACY_LEAVES = {"gamma": "weight", "beta": "bias"}

_WEIGHT_LEAVES = ("kernel", "embedding", "scale")
_NUMBER = re.compile(r"^\d+$")
_SEQUENCE_ITEM = re.compile(r"^(%s)_(\d+)$" % "|".join(SEQUENCE_NAMES))


# ---------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------

def flatten(tree: Mapping, prefix: FlaxPath = ()) -> dict:
  """Nested dict -> {path tuple: leaf}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def unflatten(flat: Mapping) -> dict:
  out: dict = {}
  for path, leaf in flat.items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = leaf
  return out


def path_str(path: FlaxPath) -> str:
  return "/".join(path)


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------

def torch_module_path(key: str) -> tuple[FlaxPath, str]:
  """``'a.layer.3.dense.weight'`` -> ``(('a', 'layer_3', 'dense'), 'weight')``."""
  parts = key.split(".")
  merged: list[str] = []
  for part in parts[:-1]:
    if _NUMBER.match(part) and merged:
      merged[-1] = f"{merged[-1]}_{part}"
    else:
      merged.append(part)
  return tuple(merged), parts[-1]


def flax_path_to_torch_key(path: FlaxPath) -> str:
  """The original key of a Flax param path (inverse of ``torch_module_path``)."""
  module, leaf = path[:-1], path[-1]
  parts = []
  for name in module:
    m = _SEQUENCE_ITEM.match(name)
    parts.append(f"{m.group(1)}.{m.group(2)}" if m else name)
  parts.append("bias" if leaf == "bias" else "weight")
  return ".".join(parts)


def _resolve_leaf(module: FlaxPath, leaf: str, template_paths) -> FlaxPath | None:
  """The template path of torch leaf ``leaf`` (``weight``/``bias``) of ``module``."""
  if leaf == "bias":
    candidates = ("bias",)
  elif leaf == "weight":
    candidates = _WEIGHT_LEAVES
  else:
    return None
  for name in candidates:
    if module + (name,) in template_paths:
      return module + (name,)
  return None


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------

def swap_kernel_layout(array: np.ndarray, flax_leaf: str) -> np.ndarray:
  """torch <-> Flax layout of one leaf; the same call goes both ways.

  Dense kernels are transposed and Conv1d kernels reversed (out, in, k) <->
  (k, in, out); both are their own inverse. Everything else is as is.
  """
  if flax_leaf == "kernel" and array.ndim in (2, 3):
    return array.transpose(tuple(reversed(range(array.ndim))))
  return array


def expected_torch_shape(flax_shape: tuple, flax_leaf: str) -> tuple:
  if flax_leaf == "kernel" and len(flax_shape) in (2, 3):
    return tuple(reversed(flax_shape))
  return tuple(flax_shape)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class ConversionReport:
  """What a conversion did, by original key name.

  ``loaded``: keys copied into the params. ``missing``: template params the
  state dict lacks (original names). ``unexpected``: entries that match no
  param. ``dropped``: known non-parameter entries (flag, buffers, tied
  decoder). ``renamed``: (old, new) legacy renames. ``cast``: keys converted
  to float32 from another dtype. ``notes``: anything else worth printing.
  """
  loaded: list = dataclasses.field(default_factory=list)
  missing: list = dataclasses.field(default_factory=list)
  unexpected: list = dataclasses.field(default_factory=list)
  dropped: list = dataclasses.field(default_factory=list)
  renamed: list = dataclasses.field(default_factory=list)
  cast: list = dataclasses.field(default_factory=list)
  notes: list = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    return not self.missing and not self.unexpected

  def summary(self, max_names: int = 20) -> str:
    lines = [f"loaded {len(self.loaded)} tensors"]

    def names(title, items):
      if not items:
        return
      shown = [str(x) for x in items[:max_names]]
      more = f" ... (+{len(items) - max_names})" if len(items) > max_names else ""
      lines.append(f"{title} ({len(items)}): " + ", ".join(shown) + more)
    names("missing (kept from the template/init)", self.missing)
    names("unexpected (ignored)", self.unexpected)
    names("dropped non-parameters", self.dropped)
    names("renamed", [f"{a} -> {b}" for a, b in self.renamed])
    if self.cast:
      dtypes = sorted({d for _, d in self.cast})
      lines.append(f"cast to float32: {len(self.cast)} tensors (from {', '.join(dtypes)})")
    lines.extend(f"note: {n}" for n in self.notes)
    return "\n".join(lines)

  def __str__(self):
    return self.summary()


# ---------------------------------------------------------------------------
# state_dict -> params
# ---------------------------------------------------------------------------

def _is_array(x) -> bool:
  return isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype"))


def _matches_suffix(key: str, suffix: str) -> bool:
  return key == suffix or key.endswith("." + suffix)


def _is_known_non_param(key: str) -> bool:
  return key in _FLAG_KEYS or any(_matches_suffix(key, s) for s in _BUFFER_SUFFIXES)


def rename_legacy(key: str) -> str:
  head, _, leaf = key.rpartition(".")
  if leaf in _LEGACY_LEAVES:
    return f"{head}.{_LEGACY_LEAVES[leaf]}" if head else _LEGACY_LEAVES[leaf]
  return key


def _check_tied(sd: Mapping, key: str, report: ConversionReport) -> dict:
  """Drops a tied decoder weight after checking it equals the word embeddings.

  Returns {word embedding key: decoder array} when the embeddings themselves
  are absent, so the decoder (the same tensor) stands in for them.
  """
  emb_key = key[: -len(_TIED_SUFFIX)] + _WORD_EMB_SUFFIX
  if emb_key not in sd:
    report.notes.append(f"{emb_key} absent; taken from its tied copy {key}")
    return {emb_key: sd[key]}
  dec, emb = np.asarray(sd[key]), np.asarray(sd[emb_key])
  if dec.shape != emb.shape or not np.array_equal(dec, emb):
    raise ValueError(
        f"{key} must equal {emb_key} (HERO ties the LM decoder to the word "
        f"embeddings), but they differ (shapes {dec.shape} and {emb.shape})")
  report.dropped.append(key)
  return {}


def _normalise(state_dict: Mapping[str, Any], report: ConversionReport) -> dict:
  """Renames legacy leaves, drops non-parameters; returns the parameter entries."""
  sd = {}
  for key, value in state_dict.items():
    new = rename_legacy(key)
    if new != key:
      report.renamed.append((key, new))
    if new in sd:
      raise ValueError(f"state dict holds both {key!r} and an entry that renames to {new!r}")
    sd[new] = value
  out = {}
  for key, value in sd.items():
    if _is_known_non_param(key):
      report.dropped.append(key)
    elif _matches_suffix(key, _TIED_SUFFIX):
      out.update(_check_tied(sd, key, report))
    else:
      out[key] = value
  return out


def _to_float32(key: str, value, report: ConversionReport) -> np.ndarray:
  array = np.asarray(value)
  if array.dtype != np.float32:
    report.cast.append((key, str(array.dtype)))
    array = array.astype(np.float32)
  return array


def state_dict_to_params(state_dict: Mapping[str, Any], template: Mapping, *,
                         strict: bool = True) -> tuple[dict, ConversionReport]:
  """Original HERO ``state_dict`` (numpy arrays) -> hero_jax params.

  ``template``: the params tree that fixes the structure and shapes, e.g.
  ``abstract_params(cfg)`` or ``init_params(cfg, seed)``. Every entry is cast
  to float32 (apex O2 checkpoints are fp16).

  ``strict=True``: any missing or unexpected key raises ``ValueError`` (the
  report is in the message). ``strict=False``: missing params keep the
  template's value, so the template must then hold arrays (pass
  ``init_params``); unexpected entries are ignored. Both are listed in the
  returned report. A shape mismatch always raises, naming the key.
  """
  report = ConversionReport()
  flat_template = flatten(template)
  sd = _normalise(state_dict, report)
  params = {}
  for key, value in sd.items():
    module, leaf = torch_module_path(key)
    path = _resolve_leaf(module, leaf, flat_template)
    if path is None or not _is_array(value):
      report.unexpected.append(key)
      continue
    array = _to_float32(key, value, report)
    expected = tuple(flat_template[path].shape)
    converted = swap_kernel_layout(array, path[-1])
    if converted.shape != expected:
      raise ValueError(
          f"shape mismatch for {key!r}: got {tuple(array.shape)}, expected "
          f"{expected_torch_shape(expected, path[-1])} (Flax param {path_str(path)} {expected})")
    params[path] = np.ascontiguousarray(converted)
    report.loaded.append(key)
  report.missing = [flax_path_to_torch_key(p) for p in flat_template if p not in params]
  if any(k.startswith("roberta.") for k in report.unexpected):
    report.notes.append("keys start with 'roberta.': a RoBERTa checkpoint? use "
                        "hero_jax.convert.roberta (from-roberta) for those")
  if strict and not report.ok:
    raise ValueError("state dict does not match the model (strict=True):\n" + report.summary())
  _fill_missing(params, flat_template)
  return unflatten({p: params[p] for p in flat_template}), report


def _fill_missing(params: dict, flat_template: Mapping) -> None:
  for path, leaf in flat_template.items():
    if path in params:
      continue
    if not hasattr(leaf, "__array__"):
      raise ValueError(
          f"{flax_path_to_torch_key(path)} is missing and the template holds no "
          f"value for it ({type(leaf).__name__}); pass init_params(cfg, seed) as the "
          "template to keep freshly initialised values for missing keys")
    params[path] = np.asarray(leaf, dtype=np.float32)


# ---------------------------------------------------------------------------
# params -> state_dict
# ---------------------------------------------------------------------------

def params_to_state_dict(params: Mapping) -> dict[str, np.ndarray]:
  """hero_jax params -> the original ``state_dict`` (float32 numpy arrays).

  Adds what the original holds beyond the parameters: the tied
  ``lm_head.decoder.weight`` (a copy of the word embeddings) and the zero
  ``pad`` buffers (8, hidden) of ``v_encoder`` and ``v_encoder.f_encoder``.
  """
  out = {}
  for path, leaf in flatten(params).items():
    array = np.asarray(leaf, dtype=np.float32)
    out[flax_path_to_torch_key(path)] = np.ascontiguousarray(swap_kernel_layout(array, path[-1]))
  for key in list(out):
    if _matches_suffix(key, "lm_head.bias"):
      emb_key = key[: -len("lm_head.bias")] + _WORD_EMB_SUFFIX
      if emb_key in out:
        out[key[: -len("bias")] + "decoder.weight"] = out[emb_key].copy()
  emb_key = "v_encoder.f_encoder." + _WORD_EMB_SUFFIX
  for module in PAD_BUFFER_MODULES:
    if emb_key in out:
      out[f"{module}.pad"] = np.zeros((PAD_ROWS, out[emb_key].shape[1]), np.float32)
  return out


def pad_rows(array: np.ndarray, rows: int, key: str) -> np.ndarray:
  """``array`` with zero rows appended up to ``rows`` (``pad_tensor_to_mul``)."""
  if array.shape[0] > rows:
    raise ValueError(f"{key} has {array.shape[0]} rows, more than the vocab_size {rows}")
  pad = np.zeros((rows - array.shape[0],) + array.shape[1:], array.dtype)
  return np.concatenate([array, pad])


_VOCAB_ROW_SUFFIXES = (_WORD_EMB_SUFFIX, _TIED_SUFFIX, "lm_head.bias")


def pad_vocab(state_dict: Mapping[str, np.ndarray]) -> tuple[dict, int]:
  """(state dict with a vocabulary padded to a multiple of 8, rows added).

  Every checkpoint the original writes has a padded table (``ModelSaver``
  asserts it, and sets ``vocab_padded``), and the original loads one only
  into a model of that row count. A hero_jax model whose ``vocab_size`` is
  not a multiple of 8 is padded here with zero rows in the word embeddings,
  the tied decoder and ``lm_head.bias``, as ``pad_vocab`` would.
  """
  out = dict(state_dict)
  word = [k for k in out if _matches_suffix(k, _WORD_EMB_SUFFIX)]
  if not word:
    return out, 0
  rows = out[word[0]].shape[0]
  target = padded_vocab_size(rows)
  for key in out:
    if any(_matches_suffix(key, s) for s in _VOCAB_ROW_SUFFIXES):
      out[key] = pad_rows(np.asarray(out[key]), target, key)
  return out, target - rows


# ---------------------------------------------------------------------------
# Sizes from shapes
# ---------------------------------------------------------------------------

def _layer_count(keys, prefix: str) -> int | None:
  ids = set()
  for k in keys:
    if k.startswith(prefix):
      head = k[len(prefix):].split(".", 1)[0]
      if head.isdigit():
        ids.add(int(head))
  return max(ids) + 1 if ids else None


def infer_config_kwargs(state_dict: Mapping[str, Any]) -> dict:
  """``HeroConfig`` fields readable from an original state dict's shapes.

  Not readable: ``num_attention_heads`` (q/k/v are H x H whatever the head
  count), dropouts, ``mlm_vocab_size``. Keys absent from the dict are skipped.
  """
  sd = {rename_legacy(k): v for k, v in state_dict.items() if _is_array(v)}
  shape = lambda k: tuple(sd[k].shape) if k in sd else None  # noqa: E731
  f = "v_encoder.f_encoder."
  kw = {}

  def put(name, value):
    if value is not None:
      kw[name] = value
  word = shape(f + _WORD_EMB_SUFFIX) or shape(f + _TIED_SUFFIX)
  if word:
    put("vocab_size", word[0])
    put("hidden_size", word[1])
  pos = shape(f + "embeddings.position_embeddings.weight")
  put("max_position_embeddings", pos and pos[0])
  types = shape(f + "embeddings.token_type_embeddings.weight")
  put("type_vocab_size", types and types[0])
  inter = shape(f + "encoder.layer.0.intermediate.dense.weight")
  put("intermediate_size", inter and inter[0])
  img = shape(f + "img_embeddings.img_linear.weight") or shape("v_encoder.frame_transform.net.1.weight")
  put("frame_feat_dim", img and img[1])
  frame_pos = shape(f + "img_embeddings.position_embeddings.weight")
  put("max_frame_positions", frame_pos and frame_pos[0])
  fom = shape("v_encoder.fom_output.linear_2.weight")
  put("fom_num_classes", fom and fom[0])
  conv = shape("video_st_predictor.weight")
  put("vsm_conv_kernel", conv and conv[-1])
  # HeroForVideoQA has QA heads and no VSM heads; the other models the VSM heads.
  put("heads", "videoqa" if "qa_pool.weight" in sd else None)
  put("cross_layers", _layer_count(sd, f + "encoder.layer."))
  put("temporal_layers", _layer_count(sd, "v_encoder.c_encoder.encoder.layer."))
  encoder = infer_encoder(sd)
  if encoder not in (None, "hero"):
    kw["encoder"] = encoder
  if encoder == "f_trm" and "cross_layers" in kw:
    # One flat stack of cross_layers + temporal_layers layers: the split is not
    # in the names, and the model depends only on the sum.
    kw["temporal_layers"] = 0
  return kw


def infer_encoder(state_dict: Mapping[str, Any]) -> str | None:
  """The video encoder (``HeroConfig.encoder``) of a state dict in the original's
  names: HERO has the temporal transformer (``v_encoder.c_encoder``) and the
  cross-modal frame embedding (``f_encoder.img_embeddings``); H-TRM only the
  first, F-TRM only the second (``hero_jax.model.baselines``); None: neither."""
  keys = [rename_legacy(k) for k in state_dict]
  temporal = any(k.startswith("v_encoder.c_encoder.") for k in keys)
  frames = any(k.startswith("v_encoder.f_encoder.img_embeddings.") for k in keys)
  if temporal and frames:
    return "hero"
  if temporal:
    return "h_trm"
  return "f_trm" if frames else None
