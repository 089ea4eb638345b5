"""The tiny pre-training run learns every objective, compiles each step once, writes its outputs."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hero_jax.train import loop, tasks

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains a tiny model for minutes
STEPS = 280


def tiny_config(tmp_path, **train):
  spec = importlib.util.spec_from_file_location("pretrain_tiny", REPO / "configs/pretrain_tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.data.datasets.synthetic.data_dir = str(tmp_path / "tfds")
  # Few videos, evaluated on the training split: "learns" here means the
  # losses fall on data it has seen (the README gives held-out numbers of
  # the full 1000-step run).
  c.data.synthetic.train_videos = 64
  c.data.synthetic.val_videos = 16
  c.data.val_split = "train"
  c.train.update(train)
  c.log_every, c.eval_every, c.checkpoint_every = 40, 0, STEPS
  c.mesh.num_devices = 1   # the 8 virtual test devices would slow a tiny model down
  c.lock()
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("tiny")
  trainer = loop.Trainer(tiny_config(tmp, num_steps=STEPS), str(tmp / "work"))
  before = trainer.evaluate(0)
  last = trainer.train()
  after = trainer.evaluate(STEPS)
  return trainer, before, after, last, tmp / "work"


@pytest.mark.parametrize("objective,metric,factor", [
    ("mlm", "loss", 0.9), ("mfm-nce", "loss", 0.8), ("fom", "loss", 0.5),
    ("vsm", "loss_st_ed", 0.95), ("vsm", "loss_neg_q", 0.9)])
def test_tiny_run_learns(run, objective, metric, factor):
  _, before, after, _, _ = run
  key = f"val/synthetic/{objective}/{metric}"
  assert after[key] < factor * before[key], (key, before[key], after[key])


def test_each_objective_compiles_once(run):
  """The task mix trained 240 steps and evaluated twice: one compilation per
  objective for training and one for evaluation."""
  trainer = run[0]
  assert set(trainer.steps) == set(trainer.eval_steps) == {"mlm", "mfm-nce", "fom", "vsm"}
  for name in trainer.steps:
    assert trainer.steps[name].jitted._cache_size() == 1, name
    assert trainer.eval_steps[name].jitted._cache_size() == 1, name


def test_outputs_metrics_and_checkpoint(run):
  trainer, _, _, last, workdir = run
  assert trainer.checkpoints.latest_step() == STEPS
  events = EventAccumulator(str(workdir / "tb"))
  events.Reload()
  tags = set(events.Tags()["scalars"])
  assert {"train/mlm/loss", "train/learning_rate", "train/grad_norm", "perf/videos_per_s",
          "val/synthetic/fom/acc"} <= tags
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == STEPS // 40 + 2  # log lines + two evaluations
  assert np.isfinite(last["train/param_norm"])


def test_task_mix_follows_the_ratios(tmp_path):
  c = tiny_config(tmp_path)
  task_list = tasks.tasks(c)
  draws = [tasks.draw_task(task_list, c.seed, s).objective for s in range(7000)]
  for name, ratio in {"mlm": 2, "mfm-nce": 2, "fom": 1, "vsm": 2}.items():
    assert abs(draws.count(name) / 7000 - ratio / 7) < 0.02


def test_non_finite_stops_naming_objective_and_step(run):
  trainer = run[0]
  task = tasks.Task("synthetic", "fom", 1.0)
  bad = {"finite": np.bool_(False), "grad_norm": 0.0, "param_norm": 0.0}
  with pytest.raises(loop.NonFiniteError, match="step 17, objective 'fom'"):
    trainer._log([(17, task, bad)], {}, 17, 0.0, 0)


def test_bad_config_values_fail_loudly(tmp_path):
  c = tiny_config(tmp_path)
  with pytest.raises(AttributeError):
    c.train.num_stepz = 3  # locked: a typo is an error
  c.unlock()
  c.objectives.mlm.ratioo = 1.0
  with pytest.raises(ValueError, match="unknown settings"):
    tasks.objective_settings(c)
