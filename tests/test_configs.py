"""Every shipped config loads, locks, and resolves to a model, tasks and optimizer settings."""

import importlib.util
from pathlib import Path

import pytest

from hero_jax.model.config import HeroConfig
from configs import common
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


def test_device_draws_move_each_ratio_to_the_twin():
  """objective_draws='device': the mix trains the device-drawn twins with the
  host forms' ratios and shared settings; the twins keep the settings only
  they have."""
  c = load("pretrain_tiny.py")
  c.objective_draws = "device"
  c.objectives.mffr.ratio = 0.5
  settings = tasks.objective_settings(c)
  assert {name: r for name, (r, _) in settings.items()} == {
      "mlm-device": 2.0, "mfm-nce-device": 2.0, "fom-device": 1.0, "vsm-device": 2.0,
      "mffr-device": 0.5}
  assert settings["vsm-device"][1].queries_per_video == c.objectives.vsm_device.queries_per_video
  c.objectives.vsm.hard_pool_size = 3   # a setting both forms have: the host form's is used
  assert tasks.objective_settings(c)["vsm-device"][1].hard_pool_size == 3
  c.objectives.mlm_device.ratio = 1.0
  with pytest.raises(ValueError, match="mlm and mlm_device both have a ratio"):
    tasks.objective_settings(c)
  c.objective_draws = "devices"
  with pytest.raises(ValueError, match="config.objective_draws: 'devices' is not one of"):
    tasks.objective_settings(c)


def test_unknown_preset_is_an_error():
  with pytest.raises(ValueError, match="unknown 'huge'"):
    common.model_config("huge")


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
  assert all(d.videos for d in c.data.datasets.values())
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


ALL = sorted(p.name for p in (REPO / "configs").glob("*.py") if p.name != "common.py"
             and p.name != "__init__.py")


def parse(name, *overrides):
  """The config as ``main`` loads it: the file, locked, then ``--config.*`` overrides."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  argv = ["main", f"--config={REPO / 'configs' / name}", *overrides]
  # config_flags finds the overrides in sys_argv (sys.argv by default).
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv.config


@pytest.mark.parametrize("name", ALL)
def test_every_field_is_declared_and_overridable(name):
  import dataclasses
  c = parse(name, "--config.objectives.vsm.margin=0.2", "--config.model.hidden_dropout=0.0",
            "--config.model.mlm_vocab_size=100", "--config.objectives.mfm_nce.temperature=0.5",
            "--config.mesh.shape.fsdp=2", "--config.eval.vcmr.nms_thd=0.3")
  tasks.check_config(c)
  assert c.objectives.vsm.margin == 0.2 and c.model.hidden_dropout == 0.0
  cfg = tasks.hero_config(c)
  assert (cfg.hidden_dropout, cfg.mlm_vocab_size) == (0.0, 100)
  # Every HeroConfig field and every objective setting is there, nothing more.
  assert set(c.model) == {f.name for f in dataclasses.fields(HeroConfig)}
  from hero_jax.objectives import registry
  for objective in registry.names():
    key = tasks.config_key(objective)
    fields = {f.name for f in dataclasses.fields(registry.get(objective).settings)}
    assert set(c.objectives[key]) == {"ratio", "packed_rows"} | fields, objective
  assert not hasattr(c, "compute_dtype")   # one dtype: model.dtype


def test_an_objective_can_have_its_own_packed_rows():
  """``objectives.<key>.packed_rows`` sizes that objective's packed rows (its
  own compiled step); a device twin keeps its own value under
  ``objective_draws=device``; 0 is the layout's."""
  packed = ("--config.layout.packed_rows=6", "--config.layout.packed_width=32",
            "--config.objective_draws=device")
  c = parse("pretrain_tiny.py", *packed, "--config.objectives.vsm_device.packed_rows=8")
  settings = tasks.objective_settings(c)
  sizes = tasks.objective_sizes(c, tasks.layout_sizes(c), settings)
  assert sizes["vsm-device"].packed_rows == 8
  assert {s.packed_rows for name, s in sizes.items() if name != "vsm-device"} == {6}
  assert not hasattr(settings["vsm-device"][1], "packed_rows")   # (ratio, settings)
  bad = parse("pretrain_tiny.py", *packed, "--config.objectives.vsm_device.packed_rows=-1")
  with pytest.raises(ValueError, match="objectives.vsm_device.packed_rows must be >= 0"):
    tasks.objective_sizes(bad, tasks.layout_sizes(bad), tasks.objective_settings(bad))
  unpacked = parse("pretrain_tiny.py", "--config.layout.packed_rows=0",
                   "--config.layout.packed_width=0", "--config.objectives.mlm.packed_rows=4")
  with pytest.raises(ValueError, match=r"objectives.mlm.packed_rows=4 needs packed rows"):
    tasks.objective_sizes(unpacked, tasks.layout_sizes(unpacked),
                          tasks.objective_settings(unpacked))


def test_misspelt_override_names_the_closest_fields(tmp_path):
  import subprocess
  import sys
  done = subprocess.run(
      [sys.executable, "-m", "hero_jax.main", "--config", "configs/pretrain_tiny.py",
       "--workdir", str(tmp_path), "--config.objectives.vsm.margni=0.2"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert "config.objectives.vsm.margni" in done.stderr and "objectives.vsm.margin" in done.stderr
  assert "Traceback" not in done.stderr, done.stderr[-2000:]
  from ml_collections import config_dict
  c = parse("pretrain_tiny.py")
  assert "model.hidden_dropout" in tasks.unknown_field_error(c, "model.hiden_dropout")
  assert tasks.unknown_field_error(c, "model.hidden_dropout") is None
  assert "is a value" in tasks.unknown_field_error(c, "seed.x")
  assert isinstance(c, config_dict.ConfigDict)


def test_a_recipe_cannot_add_or_drop_fields():
  c = common.base_config()
  with pytest.raises(AttributeError, match="learning_rate"):
    c.train.learnig_rate = 1.0   # locked: a typo in a recipe fails where it is written
  c = common.base_config()
  c.objectives = {"vsm": {"ratio": 1.0, "margn": 0.2}}   # a section replaced by a partial dict
  with pytest.raises(ValueError, match="objectives"):
    tasks.check_config(c)
  c = common.base_config()
  c.model = {"hidden_size": 64}
  with pytest.raises(ValueError, match="config.model: missing fields"):
    tasks.check_config(c)
  c = common.base_config()
  c.data.datasets = {"tv": {"name": "hero_tv/videos", "data_dir": "/d", "ratio": 1.0,
                            "video": "x"}}
  with pytest.raises(ValueError, match=r"data.datasets.tv.video: unknown field; closest: videos"):
    tasks.check_config(c)
