"""The ablation tables: every row's stages are valid configs; the command runs a row, resumes, tabulates."""

import functools
import json
import threading
import time
from pathlib import Path

import pytest

from configs.ablation import recipe
from hero_jax import ablation
from hero_jax.train import tasks


def test_rows_plan_and_stage_configs():
  rows = ablation.load_rows("tasks")
  assert [row.label for _, row in rows] == [
      "TV | MLM", "TV | MLM + MNCE", "TV | MLM + MNCE + FOM", "TV | MLM + MNCE + FOM + VSM",
      "TV | MLM + MNCE + FOM + VSM + MFFR", "TV + HowTo100M | MLM + MNCE + FOM + VSM"]
  baselines = ablation.load_rows("baselines")
  assert [row.encoder for _, row in baselines] == ["f_trm", "h_trm", "hero", "h_trm", "hero"]
  stages = ablation.plan(ablation.load_rows("all"))
  folders = [s.folder for s in stages]
  assert len(folders) == len(set(folders))
  # HERO pre-trained on TV with the four tasks is one run, shared by both tables.
  assert folders.count("pretrain/hero-tv-fom1+mfm_nce2+mlm2+vsm2") == 1
  assert [s.task for s in stages[:7]] == ["pretrain"] * 7 and "pretrain" not in {
      s.task for s in stages[7:]}
  by_name = dict(ablation.load_rows("all"))
  for scale in ("tiny", "full"):
    for stage in stages:
      c = ablation.stage_config(stage, by_name[stage.row_name], scale, ablation.paths.workdir("/w"))
      assert c.model.encoder == by_name[stage.row_name].encoder
      if stage.task == "pretrain":
        ratios = {k: v for k, (v, _) in tasks.objective_settings(c).items()}
        assert {tasks.config_key(k) for k in ratios} == set(by_name[stage.row_name].pretrain)
      else:
        assert (c.init_from == f"/w/{stage.init_from}") == bool(stage.init_from)


def test_bad_rows_and_overrides_are_named():
  with pytest.raises(ValueError, match="unknown rows \\['nope'\\]"):
    ablation.load_rows("tasks", ["nope"])
  with pytest.raises(ValueError, match="Row.encoder: 'cnn'"):
    recipe.Row(table="tasks", label="x", order=9, pretrain=None, encoder="cnn")
  name, row = ablation.load_rows("tasks", ["tasks_mlm"])[0]
  stage = ablation.plan([(name, row)])[0]
  with pytest.raises(ValueError, match="--set train.num_stepz=3: unknown config field"):
    ablation.stage_config(stage, row, "tiny", ablation.paths.workdir("/w"),
                          overrides=("train.num_stepz=3",))
  with pytest.raises(SystemExit):
    ablation.main(["--table", "tasks", "--workdir", "/w", "--shard", "3/2"])


SMALL_ROW = '''
from configs.ablation import recipe

ROW = recipe.Row(table="tasks", label="TV | MLM", order=1, pretrain={"mlm": 2.0},
                 downstream=("tvqa",), paper={"TVQA acc": 71.25})


def get_config(arg="pretrain,full"):
  return recipe.stage_config(ROW, arg)
'''


@pytest.fixture
def compilation_cache_off_afterwards():
  """The command turns JAX's persistent cache on for its process; turn it off
  again so that the worker's later tests compile as before."""
  yield
  import jax
  from jax._src import compilation_cache
  jax.config.update("jax_compilation_cache_dir", None)
  compilation_cache.reset_cache()


@pytest.mark.slow
@pytest.mark.usefixtures("compilation_cache_off_afterwards")
def test_tiny_row_runs_resumes_and_writes_the_table(tmp_path, monkeypatch):
  """A row of your own (--rows_dir), four steps per stage: pre-training, then a
  video QA fine-tune starting from the pre-training run's shared weights, then
  the table; a second call trains nothing. (Every row's stage configs are
  checked above; the TVR evaluation path by tests/test_finetune_vcmr.py.)"""
  (tmp_path / "rows").mkdir()
  (tmp_path / "rows" / "small_mlm.py").write_text(SMALL_ROW)
  argv = ["--table", "tasks", "--rows", "small_mlm", "--rows_dir", str(tmp_path / "rows"),
          "--scale", "tiny", "--workdir", str(tmp_path / "w"), "--data_dir", str(tmp_path / "tfds"),
          "--set", "train.num_steps=4", "--set", "eval_batches=1",
          # few videos: a small data build
          "--set", "data.synthetic.train_videos=64", "--set", "data.synthetic.val_videos=16"]
  ablation.main(argv)
  assert any((tmp_path / "w" / "compilation_cache").iterdir())   # the stages' shared cache
  record = json.loads((tmp_path / "w" / "tasks_tiny.json").read_text())
  columns = record["rows"][0]["columns"]
  assert set(columns) == {"TVQA acc"}
  assert 0 <= columns["TVQA acc"]["measured"] <= 100 and columns["TVQA acc"]["paper"] == 71.25
  assert (tmp_path / "w/pretrain/hero-tv-mlm2/result.json").exists()
  markdown = (tmp_path / "w" / "tasks_tiny.md").read_text()
  assert "| small_mlm | TV | MLM |" in markdown and "(71.25)" in markdown

  def no_training(*args, **kwargs):
    raise AssertionError("a finished stage ran again")
  monkeypatch.setattr("hero_jax.train.loop.Trainer", no_training)
  ablation.main(argv)
  assert json.loads((tmp_path / "w" / "tasks_tiny.json").read_text()) == record

def test_shards_start_together_and_fine_tunes_wait_for_their_pre_training(tmp_path, monkeypatch):
  """Two shards started at once: a fine-tune whose pre-training the other
  shard runs waits for its result.json; every stage runs once."""
  ran = []

  def fake_stage(stage, config, workdir):
    if stage.init_from:
      assert (workdir / stage.init_from / "result.json").exists(), stage
    time.sleep(0.05)
    (workdir / stage.folder).mkdir(parents=True, exist_ok=True)
    ablation.write_result(workdir / stage.folder / "result.json", {"metrics": {}})
    ran.append(stage.folder)
    return {}
  monkeypatch.setattr(ablation, "run_stage", fake_stage)
  monkeypatch.setattr(ablation, "_wait_for", functools.partial(ablation._wait_for, poll_s=0.01))
  kw = dict(row_names=["tasks_mlm", "tasks_mlm_mnce"])
  second = threading.Thread(target=ablation.run, args=("tasks", "tiny", str(tmp_path)),
                            kwargs={**kw, "shard": (1, 2)})
  second.start()   # its first fine-tune needs the pre-training of shard 0, not started yet
  time.sleep(0.2)
  ablation.run("tasks", "tiny", str(tmp_path), **kw, shard=(0, 2))
  second.join(timeout=30)
  stages = ablation.plan(ablation.load_rows("tasks", kw["row_names"]))
  assert sorted(ran) == sorted(s.folder for s in stages) and len(stages) == 10


ROW_FILE = '''
from configs.ablation import recipe

ROW = recipe.Row(table="tasks", label="TV | MLM + FRAME-MEAN", order=7,
                 pretrain={"mlm": 2.0, "frame_mean": 1.0})


def get_config(arg="pretrain,full"):
  return recipe.stage_config(ROW, arg)
'''


def test_a_row_for_a_new_objective_is_one_entry(tmp_path):
  """The README's walk-through: register an objective, write one row file."""
  import hero_jax.objectives as objectives
  from tests import test_registry as toy
  objectives.register(objectives.Objective(
      name="frame-mean", fields=toy.layout.VIDEO_FIELDS + ("frame_mean",),
      make_example=toy.make_frame_mean_example, loss=toy.frame_mean_loss,
      settings=toy.FrameMeanSettings))
  try:
    (tmp_path / "tasks_mlm_frame_mean.py").write_text(ROW_FILE)
    rows = ablation.load_rows("tasks", rows_dirs=(str(tmp_path),))
    name, row = rows[-1]
    assert name == "tasks_mlm_frame_mean" and len(rows) == 7
    stage = ablation.plan([(name, row)])[0]
    c = ablation.stage_config(stage, row, "tiny", ablation.paths.workdir("/w"))
    assert {k: v for k, (v, _) in tasks.objective_settings(c).items()} == {
        "mlm": 2.0, "frame-mean": 1.0}
  finally:
    objectives.registry.unregister("frame-mean")
  with pytest.raises(ValueError, match="no row files"):
    ablation.load_rows("tasks", rows_dirs=(str(tmp_path / "empty"),))


def test_a_stage_config_runs_alone_with_its_argument():
  """``--config configs/ablation/<row>.py:<stage>,<scale>``: a misspelt override
  is reported against that stage's config."""
  from hero_jax import main
  row_file = Path(__file__).resolve().parents[1] / "configs/ablation/tasks_mlm.py"
  error = main._override_error(["prog", "--config", f"{row_file}:tvqa,tiny",
                                "--config.train.num_stepz=3"])
  assert error.startswith("unknown config field config.train.num_stepz; closest: "
                          "config.train.num_steps")
