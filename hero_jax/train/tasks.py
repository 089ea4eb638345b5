"""What the config says to train: the model config and the (dataset, objective) tasks.

HERO's MetaLoader puts every (target, task) pair in a pool with weight
``task ratio x target ratio`` and draws one per optimizer update. We draw it
from ``(seed, step)`` alone, so every host agrees without communication and a
resumed run draws the same sequence.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from hero_jax import layout
from hero_jax.model import config as model_config
from hero_jax.objectives import registry

PRESETS = {"tiny": model_config.tiny_config, "base": model_config.HeroConfig}


def hero_config(c) -> model_config.HeroConfig:
  preset = c.model.preset
  if preset not in PRESETS:
    raise ValueError(f"config.model.preset: unknown {preset!r}; known: {sorted(PRESETS)}")
  overrides = dict(c.model.overrides)
  overrides.setdefault("dtype", c.compute_dtype)
  return PRESETS[preset](**overrides)


def layout_sizes(c) -> layout.LayoutSizes:
  return layout.LayoutSizes(**dict(c.layout))


def objective_name(config_key: str) -> str:
  """Config keys write '-' as '_' (``mfm_nce`` is the objective ``mfm-nce``)."""
  return config_key.replace("_", "-")


def objective_settings(c) -> dict:
  """{objective: (ratio, settings)} with settings checked against the objective."""
  import hero_jax.objectives  # noqa: F401  (registers the built-in objectives)
  out = {}
  for key, entry in c.objectives.items():
    entry = dict(entry)
    ratio = float(entry.pop("ratio", 0.0))
    if ratio < 0:
      raise ValueError(f"config.objectives.{key}.ratio must be >= 0, got {ratio}")
    if ratio == 0:
      continue
    objective = registry.get(objective_name(key))
    out[objective.name] = (ratio, objective.make_settings(entry))
  if not out:
    raise ValueError("config.objectives: no objective has a ratio > 0")
  return out


@dataclasses.dataclass(frozen=True)
class Task:
  dataset: str  # key of config.data.datasets
  objective: str
  weight: float


def tasks(c) -> list:
  ratios = {name: r for name, (r, _) in objective_settings(c).items()}
  out = []
  for key, ds in c.data.datasets.items():
    for name, r in ratios.items():
      out.append(Task(key, name, r * float(ds.get("ratio", 1.0))))
  return out


def draw_task(task_list: list, seed: int, step: int) -> Task:
  """The task of optimizer update ``step`` (a pure function of seed and step)."""
  weights = np.array([t.weight for t in task_list], np.float64)
  rng = np.random.default_rng([int(seed), int(step), 0x7A5C])
  return task_list[int(rng.choice(len(task_list), p=weights / weights.sum()))]


def dataset_path(entry) -> str:
  return os.path.join(os.path.expanduser(entry["data_dir"]), entry["name"])
