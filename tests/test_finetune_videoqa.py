"""Video QA fine-tuning end to end on the synthetic questions: it learns (held-out
accuracy well above chance), evaluation writes ``{qid: answer_idx}``
predictions, evaluation refuses a checkpoint without QA heads, and the answer
tool answers a question about a video."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from hero_jax import answer
from hero_jax.convert import files, mapping
from hero_jax.model.config import tiny_config
from hero_jax.model.params import init_params
from hero_jax.objectives import registry, videoqa
from hero_jax.train import init_from, loop
from tests import fixture_batches as fb

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains a tiny model for minutes
STEPS = 480
VAL_VIDEOS = 32   # 2 questions each
MAX_FRAMES = 12


def overrides(tmp_path) -> dict:
  """The tiny config on shorter videos (8-12 frames, so at most 12 subtitles: every
  synthetic subtitle has its own frames) and batches of 8 questions: a fraction of
  the recipe's step on CI's two cores (held-out accuracy 0.40 at 480 steps)."""
  return {"data.datasets.qa.data_dir": str(tmp_path / "tfds"), "data.synthetic.train_videos": 512,
          "train.batch_videos": 8,
          "data.synthetic.val_videos": VAL_VIDEOS, "data.synthetic.min_frames": 8,
          "data.synthetic.max_frames": MAX_FRAMES, "layout.max_frames": MAX_FRAMES,
          "layout.max_rows": MAX_FRAMES, "train.num_steps": STEPS, "log_every": 40,
          "eval_every": STEPS, "checkpoint_every": STEPS}


def tiny_config_for(tmp_path, **extra):
  spec = importlib.util.spec_from_file_location("ftqa", REPO / "configs/finetune_videoqa_tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  for key, value in {**overrides(tmp_path), **extra}.items():
    *parents, leaf = key.split(".")
    node = c
    for name in parents:
      node = node[name]
    node[leaf] = value
  c.lock()
  return c


def main_run(tmp_path, workdir, *flags):
  """``python -m hero_jax.main`` with the test's overrides, on one CPU device (as a
  user runs it; the 8 virtual devices of the other tests would slow it down)."""
  argv = [sys.executable, "-m", "hero_jax.main", "--config", "configs/finetune_videoqa_tiny.py",
          "--workdir", str(workdir)] + [f"--config.{k}={v}" for k, v in overrides(tmp_path).items()]
  # One XLA thread, as conftest.py sets for the test processes: two test
  # processes share CI's two cores.
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1 "
         "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
  done = subprocess.run(argv + list(flags), cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=1500)
  assert done.returncode == 0, done.stderr[-3000:]


def eval_metrics(workdir, step) -> dict:
  return json.loads((workdir / f"results/qa/val/step_{step}/metrics.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("ftqa")
  main_run(tmp, tmp / "work")
  return eval_metrics(tmp / "work", STEPS), tmp


def test_fine_tuning_learns_held_out_answers(run):
  # Chance is 0.2: the synthetic answer index is uniform, so no constant guess
  # beats it; 0.32 is 2.4 standard deviations of chance on 63 questions.
  after, tmp = run
  assert after["acc"] > 0.32, after
  preds = json.loads((tmp / f"work/results/qa/val/step_{STEPS}/predictions.json").read_text())
  # Every question of the split (a synthetic moment too short for a question is skipped at build).
  assert len(preds) == after["questions"] > 1.9 * VAL_VIDEOS
  assert set(preds.values()) <= set(range(5))
  lines = [json.loads(x) for x in (tmp / "work/metrics.jsonl").read_text().splitlines()]
  losses = [x["train/videoqa/loss"] for x in lines if "train/videoqa/loss" in x]
  assert np.mean(losses[-3:]) < 0.85 * losses[0]


def test_answer_tool(run, capsys):
  _, tmp = run
  from hero_jax.data import pipeline
  join = pipeline.QueryJoin(pipeline.QuerySource(
      pipeline.dataset_dir(str(tmp / "tfds"), "hero_synthetic/qa"), "val"),
      pipeline.VideoCorpus(pipeline.dataset_dir(str(tmp / "tfds"), "hero_synthetic/videos")))
  q = join.queries.query(0)
  args = ["--checkpoint", str(tmp / "work"), "--videos", f"tfds:{tmp / 'tfds'}/hero_synthetic/videos:val",
          "--vid", q.vid, "--question", q.question, "--json"]
  for a in q.answers:
    args += ["--answer", a]
  assert answer.main(args) == 0
  out = json.loads(capsys.readouterr().out)
  assert len(out["probabilities"]) == 5 and abs(sum(out["probabilities"]) - 1) < 1e-5
  assert 0 <= out["start"] < out["end"] <= 1.5 * MAX_FRAMES
  assert answer.main(args[:-2] + ["--vid", "no_such_video"]) == 2


def test_eval_refuses_a_checkpoint_without_qa_heads(tmp_path):
  cfg = tiny_config(vocab_size=128, frame_feat_dim=48)
  pretraining = jax.device_get(init_params(cfg, 0))
  path = files.save_state_dict(mapping.params_to_state_dict(pretraining), tmp_path / "hero.npz")
  qa_cfg = cfg.replace(heads="videoqa")
  init_from.load(str(path), qa_cfg)   # fine-tuning: the QA heads start fresh
  with pytest.raises(ValueError, match="qa_pool"):
    init_from.load(str(path), qa_cfg, heads_required=True)


def test_bad_questions_are_named():
  item = fb.videoqa_examples()[0]
  ctx = fb.host_context(fb.videoqa_sizes())
  import dataclasses
  from hero_jax import layout
  few = dataclasses.replace(item.query, answer_ids=item.query.answer_ids[:2])
  with pytest.raises(ValueError, match=f"{item.query.qid}.*2 answers"):
    videoqa.build_videoqa_example(layout.QueryExample(item.video, few), ctx)
  bad = dataclasses.replace(item.query, answer_idx=7)
  with pytest.raises(ValueError, match="answer_idx 7"):
    videoqa.build_videoqa_example(layout.QueryExample(item.video, bad), ctx)
  long = dataclasses.replace(item.query, question_ids=np.arange(200) + 5)
  with pytest.raises(registry.SkipExample, match="question_longer_than_max_txt_len"):
    videoqa.make_videoqa_example(layout.QueryExample(item.video, long), None, ctx)
  none = dataclasses.replace(item.query, ts=(float("nan"), float("nan")))
  ex = videoqa.build_videoqa_example(layout.QueryExample(item.video, none), ctx)
  assert ex["qa_st_ed"].tolist() == [-1, -1]


def test_all_ignored_spans_give_a_finite_loss():
  """The original's mean over no start/end target is NaN; ours is 0."""
  from hero_jax.model.hero import Hero
  from tests import reference
  batch = dict(fb.videoqa_batch())
  batch["qa_st_ed"] = np.full_like(batch["qa_st_ed"], -1)
  cfg = reference.model_config().replace(heads="videoqa")
  total, metrics = videoqa.videoqa_loss(Hero(cfg), reference.videoqa_params(), batch)
  assert np.isfinite(float(total))
  assert float(metrics["loss_st"][1]) == 0.0


def test_eval_only_from_an_original_checkpoint_writes_predictions(run):
  after, tmp = run
  trained = init_from.load(str(tmp / "work"), tiny_qa_model_config(tmp))
  pt = files.save_state_dict(mapping.params_to_state_dict(trained), tmp / "videoqa.pt")
  work = tmp / "eval_only"
  out = loop.evaluate_only(tiny_config_for(tmp, mode="eval", init_from=str(pt),
                                           **{"mesh.num_devices": 1}), str(work))
  assert out["val/qa/val/acc"] == pytest.approx(after["acc"])
  preds = json.loads((work / "results/qa/val/step_0/predictions.json").read_text())
  assert len(preds) == out["val/qa/val/questions"]


def tiny_qa_model_config(tmp):
  from hero_jax.train import tasks
  return tasks.hero_config(tiny_config_for(tmp))
