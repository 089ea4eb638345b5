"""TVR-style fine-tuning end to end on the synthetic set: it learns (held-out
retrieval well above chance), evaluation-only runs from an original-format
checkpoint write a valid submission, and the search tool answers queries
from a saved bank."""

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from hero_jax import search
from hero_jax.convert import files, mapping
from hero_jax.eval import vcmr as vcmr_lib
from hero_jax.train import loop

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains a tiny model for minutes
STEPS = 200
VAL_VIDEOS = 64


def tiny_config(tmp_path, **overrides):
  spec = importlib.util.spec_from_file_location("ft", REPO / "configs/finetune_tvr_tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.data.datasets.tvr.data_dir = str(tmp_path / "tfds")
  c.data.synthetic.update({"train_videos": 512, "val_videos": VAL_VIDEOS})
  c.train.num_steps = STEPS
  c.log_every, c.eval_every, c.checkpoint_every = 40, 0, STEPS
  c.mesh.num_devices = 1   # the 8 virtual test devices would slow a tiny model down
  for key, value in overrides.items():
    c[key] = value
  c.lock()
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("ft")
  trainer = loop.Trainer(tiny_config(tmp), str(tmp / "work"))
  before = trainer.evaluate(0)
  trainer.train()
  after = trainer.evaluate(STEPS)
  return trainer, before, after, tmp


def test_fine_tuning_learns_held_out_retrieval(run):
  _, before, after, _ = run
  chance = 100.0 * 10 / VAL_VIDEOS   # VR R@10: the right video among the top 10 of 64
  key = "val/tvr/val/VR/r10"
  assert after[key] > 2 * chance and after[key] > before[key] + 10, (before[key], after[key])
  assert after["val/tvr/vcmr/loss"] < before["val/tvr/vcmr/loss"]
  assert after["val/tvr/val/VCMR/0.5-r100"] > before["val/tvr/val/VCMR/0.5-r100"]


def check_submission(path: Path, num_queries: int, top: int):
  sub = json.loads(path.read_text())
  assert set(sub) == {"video2idx", "VCMR", "SVMR", "VR"}
  assert len(sub["video2idx"]) == VAL_VIDEOS
  known = set(sub["video2idx"].values())
  for task in ("VCMR", "SVMR", "VR"):
    assert len(sub[task]) == num_queries
    for entry in sub[task]:
      assert set(entry) == {"desc_id", "desc", "predictions"}
      assert 0 < len(entry["predictions"]) <= top
      for vidx, st, ed, score in entry["predictions"]:
        # Zero-score rows (spans outside the length mask) may be anything, as the original's.
        assert vidx in known and np.isfinite(score)
        assert (st, ed) == (0, 0) if task == "VR" else (st < ed or score == 0)
  return sub


def test_eval_only_from_an_original_checkpoint_writes_the_submission(run):
  trainer, _, after, tmp = run
  # The trained weights as the original would save them (HeroForVcmr .pt).
  params = jax.device_get(trainer.state.params)
  pt = files.save_state_dict(mapping.params_to_state_dict(params), tmp / "vcmr.pt")
  work = tmp / "eval_only"
  out = loop.evaluate_only(tiny_config(tmp, mode="eval", init_from=str(pt)), str(work))
  assert out["val/tvr/val/VR/r10"] == pytest.approx(after["val/tvr/val/VR/r10"], abs=1e-6)
  results = work / "results/tvr/val/step_0"
  sub = check_submission(results / "predictions.json", 2 * VAL_VIDEOS, 100)
  check_submission(results / "predictions_no_nms.json", 2 * VAL_VIDEOS, 100)
  metrics = json.loads((results / "metrics.json").read_text())
  assert metrics["log"]["VR/r10"] == pytest.approx(out["val/tvr/val/VR/r10"])
  assert "VCMR_nms_0.5/0.7-r1" in metrics["log"] and sub["VR"][0]["predictions"][0][1:3] == [0, 0]


def test_search_answers_from_a_saved_bank(run, monkeypatch, capsys):
  trainer, _, _, tmp = run
  work, bank = tmp / "work", tmp / "val.bank.npz"
  videos = f"tfds:{tmp / 'tfds'}/hero_synthetic/videos:val"
  assert search.main(["--checkpoint", str(work), "--bank", str(bank), "--videos", videos]) == 0, \
      capsys.readouterr().err[-2000:]
  saved = vcmr_lib.FrameBank.load(bank)
  assert len(saved.vids) == VAL_VIDEOS and saved.meta["tokenizer"].startswith("synthetic:")
  capsys.readouterr()

  def no_encoding(*a, **k):
    raise AssertionError("a query re-encoded the bank")
  monkeypatch.setattr(vcmr_lib, "encode_bank", no_encoding)
  assert search.main(["--checkpoint", str(work), "--bank", str(bank), "--query", "w3 w17 w40",
                      "--top", "5", "--json", "--min-pred-l", "1", "--max-pred-l", "8"]) == 0
  lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
  assert [x["rank"] for x in lines] == [1, 2, 3, 4, 5]
  assert all(x["vid"] in saved.vids and x["end"] > x["start"] >= 0 for x in lines)
  assert [x["score"] for x in lines] == sorted((x["score"] for x in lines), reverse=True)
  assert search.main(["--checkpoint", str(work), "--bank", str(tmp / "nope.npz"), "--query", "w3"]) == 2


@pytest.mark.parametrize("kind", ["tvr", "how2r"])
def test_leaderboard_upload(run, tmp_path, kind):
  import zipfile
  from hero_jax.eval import run as eval_run
  _, _, _, tmp = run
  val = json.loads((tmp / f"work/results/tvr/val/step_{STEPS}/predictions.json").read_text())
  test = {k: v for k, v in val.items() if k != "SVMR"}   # no ground-truth video on a test split
  ctx = eval_run.EvalContext(model=None, params=None, sizes=None, objective_settings=None,
                             eval_config={"submission": kind}, workdir=str(tmp_path))
  eval_run.write_vcmr_upload(ctx, "tvr", 7, {"val": val, "test_public": test})
  name = {"tvr": "tvr_codalab_step_7.zip", "how2r": "how2r_value_step_7.zip"}[kind]
  with zipfile.ZipFile(tmp_path / "results/tvr" / name) as z:
    names = sorted(z.namelist())
    if kind == "tvr":
      assert names == ["tvr_test_public_submission.json", "tvr_val_submission.json"]
      assert json.loads(z.read("tvr_val_submission.json"))["VCMR"] == val["VCMR"]
    else:
      assert names == ["how2r/how2r_test_public_predictions.json", "how2r/how2r_val_predictions.json"]
      vr = json.loads(z.read("how2r/how2r_val_predictions.json"))["VR"][0]["predictions"]
      assert vr == [row[0] for row in val["VR"][0]["predictions"]]
