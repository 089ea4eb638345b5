"""What the config says to train: the model config and the (dataset, objective) tasks.

HERO's MetaLoader puts every (target, task) pair in a pool with weight
``task ratio x target ratio`` and draws one per optimizer update. We draw it
from ``(seed, step)`` alone, so every host agrees without communication and a
resumed run draws the same sequence.
"""

from __future__ import annotations

import dataclasses
import difflib

import ml_collections
import numpy as np
from absl import logging
from ml_collections import config_dict

from hero_jax import layout
from hero_jax.model import config as model_config
from hero_jax.objectives import registry

PRESETS = {"tiny": model_config.tiny_config, "base": model_config.HeroConfig}


DATASET_FIELDS = ("name", "data_dir", "ratio", "videos")


def model_config_dict(preset: str, **fields) -> ml_collections.ConfigDict:
  """``config.model``: every ``HeroConfig`` field, from a preset with ``fields`` changed."""
  if preset not in PRESETS:
    raise ValueError(f"model preset: unknown {preset!r}; known: {sorted(PRESETS)}")
  values = dataclasses.asdict(PRESETS[preset](**fields))
  # A None default (mlm_vocab_size: all columns) stays settable from the command line.
  return ml_collections.ConfigDict(
      {k: config_dict.placeholder(int) if v is None else v for k, v in values.items()})


def objectives_config_dict(ratios: dict) -> ml_collections.ConfigDict:
  """``config.objectives``: every registered objective, ratio, ``packed_rows``
  (0: ``layout.packed_rows``; see ``objective_sizes``) + default settings."""
  import hero_jax.objectives  # noqa: F401  (registers the built-in objectives)
  out = {}
  for name in registry.names():
    key = config_key(name)
    settings = dataclasses.asdict(registry.get(name).settings())
    out[key] = {"ratio": float(ratios.get(key, 0.0)), "packed_rows": 0, **settings}
  unknown = sorted(set(ratios) - set(out))
  if unknown:
    raise ValueError(f"unknown objectives {unknown}; known: {sorted(out)}")
  return ml_collections.ConfigDict(out)


def hero_config(c) -> model_config.HeroConfig:
  return model_config.HeroConfig.from_dict(c.model.to_dict())


def _closest(name: str, known) -> str:
  close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
  return f"; closest: {', '.join(close)}" if close else f"; known: {', '.join(sorted(known))}"


def _check_fields(where: str, entry, expected) -> None:
  """``entry``'s keys are exactly ``expected`` (unknown ones named with the closest)."""
  keys, expected = set(entry), set(expected)
  unknown = sorted(keys - expected)
  if unknown:
    raise ValueError(f"config.{where}.{unknown[0]}: unknown field{_closest(unknown[0], expected)}")
  missing = sorted(expected - keys)
  if missing:
    raise ValueError(f"config.{where}: missing fields {missing} (build the config from "
                     "configs/common.py's base_config, which declares every field)")


def field_paths(c, prefix: str = "") -> list:
  """Every leaf field of a config as a dotted path (``model.hidden_dropout``)."""
  out = []
  for key, value in c.items():
    path = f"{prefix}{key}"
    out += field_paths(value, path + ".") if isinstance(value, ml_collections.ConfigDict) else [path]
  return out


def unknown_field_error(c, dotted: str) -> str | None:
  """Why ``dotted`` names no field of ``c`` (with the closest fields), or None if it does."""
  node, walked = c, []
  for name in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      return f"config.{'.'.join(walked)} is a value, not a group: config.{dotted} does not exist"
    if name not in node:
      here = ".".join(walked + [name])
      siblings = [".".join(walked + [k]) for k in node.keys()]
      close = difflib.get_close_matches(dotted, field_paths(c), n=3, cutoff=0.6)
      close += [s for s in difflib.get_close_matches(here, siblings, n=3, cutoff=0.5)
                if s not in close]
      named = ", ".join(f"config.{p}" for p in (close[:4] or siblings))
      return f"unknown config field config.{here}; {'closest' if close else 'fields here'}: {named}"
    node, walked = node[name], walked + [name]
  return None


def check_config(c) -> None:
  """The sections whose fields come from code match it: ``model`` has every
  ``HeroConfig`` field, ``objectives`` every registered objective with its
  settings, each dataset entry its four fields. A recipe that replaced one of
  these sections with a partial or misspelt dict fails here, at start."""
  import hero_jax.objectives  # noqa: F401
  _check_fields("model", c.model, [f.name for f in dataclasses.fields(model_config.HeroConfig)])
  known = {config_key(n): n for n in registry.names()}
  _check_fields("objectives", c.objectives, known)
  for key, entry in c.objectives.items():
    settings = [f.name for f in dataclasses.fields(registry.get(known[key]).settings)]
    _check_fields(f"objectives.{key}", entry, ["ratio", "packed_rows", *settings])
  for key, entry in c.data.datasets.items():
    _check_fields(f"data.datasets.{key}", entry, DATASET_FIELDS)
  from hero_jax.data import synthetic
  from hero_jax.eval import vcmr
  _check_fields("layout", c.layout, _names(layout.LayoutSizes))
  _check_fields("data.synthetic", c.data.synthetic, _names(synthetic.SyntheticSpec))
  # conv_sees_padding comes from the objective's settings, not from eval.vcmr.
  _check_fields("eval.vcmr", c.eval.vcmr, _names(vcmr.VcmrEvalSettings) - {"conv_sees_padding"})


def _names(dataclass) -> set:
  return {f.name for f in dataclasses.fields(dataclass)}


def layout_sizes(c) -> layout.LayoutSizes:
  return layout.LayoutSizes(**dict(c.layout))


def objective_name(key: str) -> str:
  """Config keys write '-' as '_' (``mfm_nce`` is the objective ``mfm-nce``)."""
  return key.replace("_", "-")


def config_key(objective: str) -> str:
  return objective.replace("-", "_")


OBJECTIVE_DRAWS = ("host", "device")


def drawn_objectives(c) -> dict:
  """``config.objectives`` as trained: with ``config.objective_draws='device'``
  every objective that has a device-drawn twin (``mlm`` -> ``mlm_device``...)
  hands it its ratio and the settings both have (so an override of
  ``objectives.vsm.hard_pool_size`` reaches ``vsm-device``; a twin value it
  replaces is logged); the twin keeps the settings only it has
  (``queries_per_video``, ``max_predictions``, ``mask_prob``). Objectives
  without a twin (the downstream ones) are trained as they are."""
  draws = c.get("objective_draws", "host")
  if draws not in OBJECTIVE_DRAWS:
    raise ValueError(f"config.objective_draws: {draws!r} is not one of {OBJECTIVE_DRAWS}")
  entries = {key: dict(entry) for key, entry in c.objectives.items()}
  if draws == "device":
    for key, entry in entries.items():
      twin = entries.get(key + "_device")
      if twin is None or entry.get("ratio", 0.0) <= 0:
        continue
      if twin.get("ratio", 0.0):
        raise ValueError(f"config.objectives.{key} and {key}_device both have a ratio: with "
                         f"objective_draws='device' give {key} the ratio (it moves to {key}_device)")
      for name, value in entry.items():
        # packed_rows stays each form's own: vsm-device packs its rows otherwise.
        if name not in ("ratio", "packed_rows") and name in twin and twin[name] != value:
          logging.warning("objective_draws=device: objectives.%s_device.%s=%r replaced by "
                          "objectives.%s.%s=%r", key, name, twin[name], key, name, value)
          twin[name] = value
      twin["ratio"], entry["ratio"] = entry["ratio"], 0.0
  return entries


def objective_settings(c) -> dict:
  """{objective: (ratio, settings)} with settings checked against the objective."""
  import hero_jax.objectives  # noqa: F401  (registers the built-in objectives)
  out = {}
  for key, entry in drawn_objectives(c).items():
    entry = dict(entry)
    ratio = float(entry.pop("ratio", 0.0))
    entry.pop("packed_rows", None)   # a layout size: objective_sizes
    if ratio < 0:
      raise ValueError(f"config.objectives.{key}.ratio must be >= 0, got {ratio}")
    if ratio == 0:
      continue
    objective = registry.get(objective_name(key))
    out[objective.name] = (ratio, objective.make_settings(entry))
  if not out:
    raise ValueError("config.objectives: no objective has a ratio > 0")
  return out


def objective_sizes(c, sizes: layout.LayoutSizes, objectives) -> dict:
  """{objective: its layout sizes}: ``layout``'s, with
  ``objectives.<key>.packed_rows`` (when > 0) as that objective's packed rows.
  Each objective compiles its own step, so an objective that needs more
  packed rows than the others (``vsm-device`` keeps a slot after each matched
  row) can have them without the others running the extra rows."""
  entries = drawn_objectives(c)
  out = {}
  for name in objectives:
    key = config_key(name)
    rows = int(entries.get(key, {}).get("packed_rows", 0) or 0)
    if rows < 0:
      raise ValueError(f"config.objectives.{key}.packed_rows must be >= 0, got {rows}")
    if rows and not sizes.packed:
      raise ValueError(f"config.objectives.{key}.packed_rows={rows} needs packed rows: set "
                       "config.layout.packed_rows and config.layout.packed_width")
    out[name] = dataclasses.replace(sizes, packed_rows=rows) if rows else sizes
  return out


def check_settings_fit_layout(settings: dict, sizes) -> None:
  """Settings that repeat a layout size must equal it (``vsm-device``'s
  queries per video: the host's VSM takes Q from ``layout.queries``), and
  MLM's ``group_predictions`` needs pack groups."""
  for name, s in settings.items():
    q = getattr(s, "queries_per_video", None)
    if q is not None and q != sizes.queries:
      raise ValueError(f"config.objectives.{config_key(name)}.queries_per_video ({q}) must equal "
                       f"config.layout.queries ({sizes.queries})")
    budget = getattr(s, "group_predictions", 0)
    if budget and not sizes.packs_batches:
      raise ValueError(f"config.objectives.{config_key(name)}.group_predictions ({budget}) "
                       "pools the predictions of pack groups: it needs packed rows and "
                       "config.layout.pack_videos > 1")


@dataclasses.dataclass(frozen=True)
class Task:
  dataset: str  # key of config.data.datasets
  objective: str
  weight: float


def tasks(c, settings: dict | None = None) -> list:
  """(dataset, objective) tasks with their weights; ``settings``: the result
  of ``objective_settings(c)`` when the caller already has it."""
  settings = objective_settings(c) if settings is None else settings
  ratios = {name: r for name, (r, _) in settings.items()}
  out = []
  for key, ds in c.data.datasets.items():
    for name, r in ratios.items():
      out.append(Task(key, name, r * float(ds.get("ratio", 1.0))))
  return out


def check_heads(task_list: list, cfg: model_config.HeroConfig) -> None:
  """Every objective finds the heads its loss needs on the model."""
  for task in task_list:
    needs = registry.get(task.objective).heads
    if needs is not None and needs != cfg.heads:
      raise ValueError(f"objective {task.objective!r} needs the model's {needs!r} heads, "
                       f"config.model has heads={cfg.heads!r}: set --config.model.heads={needs}")


def draw_task(task_list: list, seed: int, step: int) -> Task:
  """The task of optimizer update ``step`` (a pure function of seed and step)."""
  weights = np.array([t.weight for t in task_list], np.float64)
  rng = np.random.default_rng([int(seed), int(step), 0x7A5C])
  return task_list[int(rng.choice(len(task_list), p=weights / weights.sum()))]
