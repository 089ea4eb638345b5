"""Checkpoint conversion between original HERO / HF RoBERTa and hero_jax.

* ``mapping``: original ``state_dict`` <-> params (pure numpy).
* ``roberta``: HF RoBERTa -> params, as HERO's pre-training start.
* ``checkpoint``: hero_jax checkpoint directories (orbax: params + config).
* ``files``: reading/writing ``.pt``/``.bin``/``.npz``/``.safetensors``.
* ``python -m hero_jax.convert``: the CLI (see ``__main__``).

The names below are imported lazily, so ``import hero_jax.convert`` stays
cheap (no torch, no orbax until used).
"""

import importlib

_EXPORTS = {
    "state_dict_to_params": "mapping",
    "params_to_state_dict": "mapping",
    "ConversionReport": "mapping",
    "from_roberta": "roberta",
    "load_roberta_state_dict": "roberta",
    "save_hero_checkpoint": "checkpoint",
    "load_hero_checkpoint": "checkpoint",
    "load_hero_config": "checkpoint",
    "load_state_dict": "files",
    "save_state_dict": "files",
}

__all__ = tuple(sorted(_EXPORTS))


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
