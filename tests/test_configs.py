"""Every shipped config loads, locks, and resolves to a model, tasks and optimizer settings."""

import importlib.util
from pathlib import Path

import pytest

from hero_jax.model.config import HeroConfig
from hero_jax.train import sharding, tasks

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("pretrain_*.py"))
FINETUNE = sorted(p.name for p in (REPO / "configs").glob("finetune_*.py"))


def load(name):
  spec = importlib.util.spec_from_file_location(name[:-3], REPO / "configs" / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert "python -m hero_jax.main --config configs/" + name in module.__doc__  # usage line
  return module.get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_resolves(name):
  c = load(name)
  c.lock()
  cfg = tasks.hero_config(c)
  assert isinstance(cfg, HeroConfig)
  task_list = tasks.tasks(c)
  assert {t.objective for t in task_list} == {"mlm", "mfm-nce", "fom", "vsm"}
  assert sharding.rules_from_config(c.mesh.rules)
  assert c.train.batch_videos > 0


def test_the_tv_recipe_is_the_original():
  c = load("pretrain_tv.py")
  assert c.train.batch_videos * c.train.accum_steps == 1024
  assert (c.train.learning_rate, c.train.warmup_steps, c.train.num_steps) == (3e-5, 10000, 100000)
  assert (c.train.b1, c.train.b2, c.train.eps, c.train.weight_decay, c.train.grad_clip) == (
      0.9, 0.98, 1e-6, 0.01, 1.0)
  ratios = {t.objective: t.weight for t in tasks.tasks(c)}
  assert ratios == {"mlm": 2.0, "mfm-nce": 2.0, "fom": 1.0, "vsm": 2.0}
  settings = dict(tasks.objective_settings(c))
  vsm = settings["vsm"][1]
  assert (vsm.hard_negative_start_step, vsm.hard_pool_size, vsm.hard_neg_weight) == (20000, 20, 10)
  assert tasks.hero_config(c).hidden_size == 768


def test_unknown_preset_is_an_error():
  c = load("pretrain_tiny.py")
  c.model.preset = "huge"
  with pytest.raises(ValueError, match="unknown 'huge'"):
    tasks.hero_config(c)


@pytest.mark.parametrize("name", FINETUNE)
def test_finetune_config_resolves(name):
  from hero_jax.eval import vcmr
  from hero_jax.objectives import registry
  c = load(name)
  c.lock()
  cfg = tasks.hero_config(c)
  objectives = {t.objective for t in tasks.tasks(c)}
  assert objectives in ({"vcmr"}, {"videoqa"})
  assert all(registry.get(o).heads == cfg.heads for o in objectives)
  assert all("videos" in d for d in c.data.datasets.values())
  assert c.layout.queries == 1
  vcmr.VcmrEvalSettings(**c.eval.vcmr)


def test_the_tvqa_and_how2qa_recipes_are_the_original():
  c = load("finetune_tvqa.py")
  assert (c.train.batch_videos, c.train.accum_steps) == (32, 2)   # 8 GPUs x 4 x 2
  assert (c.train.learning_rate, c.train.lr_mul, c.train.warmup_steps, c.train.num_steps) == (
      5e-5, 10.0, 1000, 10000)
  assert dict(tasks.objective_settings(c))["videoqa"][1].lw_st_ed == 0.4
  assert (c.host.max_txt_len, c.layout.answers, tasks.hero_config(c).heads) == (120, 5, "videoqa")
  h = load("finetune_how2qa.py")
  assert (h.layout.answers, h.train.num_steps, h.train.warmup_steps, h.train.lr_mul) == (4, 2000, 200, 10.0)


def test_the_tvr_recipe_is_the_original():
  c = load("finetune_tvr.py")
  assert (c.train.batch_videos, c.train.accum_steps) == (256, 2)   # 8 GPUs x 32 x 2
  assert (c.train.learning_rate, c.train.warmup_steps, c.train.num_steps) == (1e-4, 500, 5000)
  s = dict(tasks.objective_settings(c))["vcmr"][1]
  assert (s.hard_negative_start_step, s.hard_pool_size, s.hard_neg_weight) == (2000, 20, 10)
  assert (s.lw_neg_ctx, s.lw_neg_q, s.lw_st_ed, s.drop_svmr_prob) == (8, 8, 0.01, 0.8)
  assert (s.group_videos, s.ranking_loss_scale) == (256, 1 / 8)
  e = c.eval.vcmr
  assert (e.min_pred_l, e.max_pred_l, e.nms_thd, e.q2c_alpha, e.max_vcmr_video) == (2, 16, 0.5, 20, 100)
  assert (c.data.max_clip_len, c.host.max_txt_len) == (100, 60)


def test_how2r_hard_negatives_never_switch_on_as_value():
  c = load("finetune_how2r.py")
  s = dict(tasks.objective_settings(c))["vcmr"][1]
  assert s.hard_negative_start_step > c.train.num_steps == 3000
  assert (c.eval.vcmr.min_pred_l, c.eval.vcmr.max_pred_l, c.eval.vcmr.nms_thd) == (3, 20, -1.0)
  assert s.drop_svmr_prob == 0.9 and c.train.warmup_steps == 300
