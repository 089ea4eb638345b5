"""Reading and writing flat state dicts: ``.pt``/``.bin`` (torch), ``.npz``, ``.safetensors``.

torch is imported only inside the functions that need it, so converting
``.npz`` files works without it. Files are read and written through
``etils.epath`` (whole files, no seeks), so they may be in a ``gs://`` bucket.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np
from etils import epath

from hero_jax import paths

Path = epath.Path

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NPZ_SUFFIXES = (".npz",)
SAFETENSORS_SUFFIXES = (".safetensors",)
KNOWN_SUFFIXES = TORCH_SUFFIXES + NPZ_SUFFIXES + SAFETENSORS_SUFFIXES

# HERO's TrainingRestorer file (restore.pt) nests the model under this key.
_NESTED_MODEL_KEY = "model_state_dict"


OUTPUT_SUFFIXES = (".pt", ".pth") + NPZ_SUFFIXES


def _suffix(path: Path, known) -> str:
  suffix = path.suffix.lower()
  if suffix not in known:
    raise ValueError(f"{path}: unknown file extension {suffix!r}; expected one of {', '.join(known)}")
  return suffix


def _tensor_to_numpy(value):
  import torch  # noqa: PLC0415 (lazy: torch is only needed for torch files)
  if not torch.is_tensor(value):
    return value
  value = value.detach().cpu()
  if value.dtype == torch.bfloat16:   # numpy has no bfloat16
    value = value.float()
  return value.numpy()


def _load_torch(path: Path) -> dict:
  import torch  # noqa: PLC0415
  obj = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
  if _NESTED_MODEL_KEY in obj and isinstance(obj[_NESTED_MODEL_KEY], Mapping):
    obj = obj[_NESTED_MODEL_KEY]
  return {str(k): _tensor_to_numpy(v) for k, v in obj.items()}


def _load_safetensors(path: Path) -> dict:
  from safetensors import numpy as st_numpy  # noqa: PLC0415
  try:
    return dict(st_numpy.load(path.read_bytes()))
  except (TypeError, ValueError):
    # bfloat16 has no numpy dtype: go through torch for those files.
    from safetensors import torch as st_torch  # noqa: PLC0415
    return {k: _tensor_to_numpy(v) for k, v in st_torch.load(path.read_bytes()).items()}


def load_state_dict(path) -> dict[str, Any]:
  """A flat ``{key: numpy array}`` dict from a checkpoint file.

  ``.pt``/``.pth``/``.bin``/``.ckpt``: ``torch.load(weights_only=True)``
  (a ``restore.pt`` is unwrapped to its ``model_state_dict``); ``.npz``;
  ``.safetensors``. Non-tensor entries (e.g. ``vocab_padded``) are kept as
  they are; the converters drop the known ones.
  """
  path = paths.resolve(path)
  suffix = _suffix(path, KNOWN_SUFFIXES)
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint file not found: {path}")
  if suffix in NPZ_SUFFIXES:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  if suffix in SAFETENSORS_SUFFIXES:
    return _load_safetensors(path)
  return _load_torch(path)


def check_output_path(path) -> str:
  """The suffix of an output file for ``save_state_dict``; raises if unknown."""
  return _suffix(Path(path), OUTPUT_SUFFIXES)


def save_state_dict(state_dict: Mapping[str, np.ndarray], path) -> Path:
  """Writes an original-format state dict to ``.pt`` or ``.npz``.

  ``.pt`` is what HERO's ``ModelSaver`` writes: ``torch.save`` of a flat dict
  of CPU tensors plus ``vocab_padded: True``. The tied LM decoder shares the
  word-embedding tensor, as in a saved ``state_dict``.
  """
  path = paths.resolve(path)
  suffix = check_output_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  if suffix in NPZ_SUFFIXES:
    np.savez(buffer, **{k: np.asarray(v) for k, v in state_dict.items()})
    path.write_bytes(buffer.getvalue())
    return path
  import torch  # noqa: PLC0415
  # np.array copies: arrays from jax are read-only, which torch warns about.
  tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in state_dict.items()}
  for key in tensors:
    if key.endswith("lm_head.decoder.weight"):
      emb = key[: -len("lm_head.decoder.weight")] + "embeddings.word_embeddings.weight"
      if emb in tensors and torch.equal(tensors[emb], tensors[key]):
        tensors[key] = tensors[emb]
  tensors["vocab_padded"] = True
  torch.save(tensors, buffer)
  path.write_bytes(buffer.getvalue())
  return path
