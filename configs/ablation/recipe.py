"""What an ablation row is, and the configs of its stages.

A row (``Row``) names its table, the paper's label and numbers, the encoder,
the pre-training tasks and data (or none), and the downstream tasks it is
scored on. Each row file in this folder holds one ``ROW = Row(...)`` and a
``get_config`` that turns it into the runnable config of one stage, so every
stage also runs alone:

  python -m hero_jax.main --config configs/ablation/tasks_mlm.py:pretrain,tiny --workdir W
  python -m hero_jax.main --config configs/ablation/tasks_mlm.py:tvr,tiny --workdir W2 \\
      --config.init_from=W

Scales: ``full`` is the paper's recipe (configs/pretrain_tv*.py and the four
fine-tuning configs, base model); ``tiny`` is the same row on the synthetic
set with the tiny model, for CPU minutes. The tiny scale has one synthetic
corpus of short videos (8-16 frames, built into ``TINY_DATA_DIR``): How2R /
How2QA are TVR / TVQA on it with another seed, and HowTo100M is a second
copy of it (the data-mix path runs; it says nothing about HowTo100M).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from configs import common

TABLES = ("tasks", "baselines")
DOWNSTREAM = ("tvr", "tvqa", "how2r", "how2qa")
ENCODERS = ("hero", "h_trm", "f_trm")
DATA = ("tv", "howto100m")
# The table's columns: (column, downstream task, metric key suffix).
COLUMNS = (
    ("TVR R@1", "tvr", "0.7-r1"), ("TVR R@10", "tvr", "0.7-r10"),
    ("TVR R@100", "tvr", "0.7-r100"), ("TVQA acc", "tvqa", "acc"),
    ("How2R R@1", "how2r", "0.7-r1"), ("How2R R@10", "how2r", "0.7-r10"),
    ("How2R R@100", "how2r", "0.7-r100"), ("How2QA acc", "how2qa", "acc"),
)
# Optimizer steps of the tiny stages (CPU minutes each).
TINY_STEPS = {"pretrain": 300, "tvr": 200, "how2r": 200, "tvqa": 200, "how2qa": 200}
# The tiny scale's synthetic videos: shorter than the tiny configs' 12-30
# frames (shorter steps), so they are built into a folder of their own.
TINY_DATA_DIR = "/tmp/hero_tfds_ablation"
TINY_VIDEOS = {"min_frames": 8, "max_frames": 16}
TINY_LAYOUT = {"max_frames": 16, "max_rows": 16}


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of an ablation table.

  ``pretrain``: objective config keys and their ratios (``{"mlm": 2.0}``), or
  None for a row without pre-training; ``data``: the pre-training datasets
  (``tv``, ``howto100m``); ``paper``: the paper's numbers by column (a
  column the paper has no number for is left out).
  """
  table: str
  label: str
  order: int
  pretrain: Optional[dict]
  encoder: str = "hero"
  data: tuple = ("tv",)
  downstream: tuple = DOWNSTREAM
  paper: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.table not in TABLES:
      raise ValueError(f"Row.table: {self.table!r} is not one of {TABLES}")
    if self.encoder not in ENCODERS:
      raise ValueError(f"Row.encoder: {self.encoder!r} is not one of {ENCODERS}")
    for name in self.data:
      if name not in DATA:
        raise ValueError(f"Row.data: {name!r} is not one of {DATA}")
    for task in self.downstream:
      if task not in DOWNSTREAM:
        raise ValueError(f"Row.downstream: {task!r} is not one of {DOWNSTREAM}")
    known = {c for c, _, _ in COLUMNS}
    unknown = sorted(set(self.paper) - known)
    if unknown:
      raise ValueError(f"Row.paper: unknown columns {unknown}; columns: {sorted(known)}")

  @property
  def pretrain_key(self) -> Optional[str]:
    """Names the pre-training run; rows with the same recipe share it."""
    if self.pretrain is None:
      return None
    tasks = "+".join(f"{k}{v:g}" for k, v in sorted(self.pretrain.items()))
    return f"{self.encoder}-{'+'.join(self.data)}-{tasks}"

  @property
  def finetune_key(self) -> str:
    """Names the fine-tuning runs (rows with the same start share them)."""
    return self.pretrain_key or f"{self.encoder}-none"


def stage_config(row: Row, arg: str = "pretrain,full"):
  """The config of one stage: ``"<stage>,<scale>"``, stage ``pretrain`` or a
  downstream task, scale ``full`` or ``tiny``."""
  stage, _, scale = arg.partition(",")
  scale = scale or "full"
  if scale not in ("full", "tiny"):
    raise ValueError(f"ablation config {arg!r}: scale must be 'full' or 'tiny', got {scale!r}")
  if stage == "pretrain":
    if row.pretrain is None:
      raise ValueError(f"row {row.label!r} has no pre-training stage")
    c = _pretrain(row, scale)
  elif stage in row.downstream:
    c = _finetune(stage, scale)
  else:
    raise ValueError(f"ablation config {arg!r}: stage must be 'pretrain' or one of "
                     f"{row.downstream}, got {stage!r}")
  c.model.encoder = row.encoder
  if scale == "tiny":
    c.data.synthetic.update(TINY_VIDEOS)
    c.layout.update(TINY_LAYOUT)
    for entry in c.data.datasets.values():
      entry.data_dir = TINY_DATA_DIR + entry.data_dir.removeprefix("/tmp/hero_tfds")
  return c


def _pretrain(row: Row, scale: str):
  from configs import pretrain_tiny, pretrain_tv, pretrain_tv_howto100m
  if scale == "full":
    c = (pretrain_tv_howto100m if "howto100m" in row.data else pretrain_tv).get_config()
    c.data.datasets = {k: v for k, v in c.data.datasets.items() if k in row.data}
  else:
    c = pretrain_tiny.get_config()
    tfds = c.data.datasets.synthetic.data_dir
    # One synthetic corpus: the second dataset is a copy of it, in its own folder.
    c.data.datasets = {k: common.dataset("hero_synthetic/videos",
                                         tfds if k == "tv" else f"{tfds}_{k}")
                       for k in row.data}
    c.train.num_steps = TINY_STEPS["pretrain"]
    c.eval_every = c.checkpoint_every = TINY_STEPS["pretrain"]
    c.objectives.vsm.hard_negative_start_step = TINY_STEPS["pretrain"] // 2
  common.use_objectives(c, **row.pretrain)
  return c


def _finetune(task: str, scale: str):
  from configs import (finetune_how2qa, finetune_how2r, finetune_tvqa, finetune_tvr,
                       finetune_tvr_tiny, finetune_videoqa_tiny)
  if scale == "full":
    return {"tvr": finetune_tvr, "how2r": finetune_how2r, "tvqa": finetune_tvqa,
            "how2qa": finetune_how2qa}[task].get_config()
  c = (finetune_tvr_tiny if task in ("tvr", "how2r") else finetune_videoqa_tiny).get_config()
  if task.startswith("how2"):
    c.seed = 1   # the stand-in: the same synthetic queries, another draw
  c.train.num_steps = TINY_STEPS[task]
  c.eval_every = c.checkpoint_every = TINY_STEPS[task]
  if "vcmr" in c.objectives and c.objectives.vcmr.ratio:
    c.objectives.vcmr.hard_negative_start_step = TINY_STEPS[task] // 2
  return c
