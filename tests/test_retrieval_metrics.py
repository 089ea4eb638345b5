"""Retrieval metrics, NMS and submission writers against the original HERO.

Fixtures (see their README): ``tvr_metrics.json`` (``eval_retrieval`` on
random submissions, TVR-style and DiDeMo-style), ``tvr_eval_predictions.json``
and ``task_tvr_eval.npz`` (one run of the original ``validate_full_vcmr``).
Every size and setting is read from them.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import math
import zipfile

import numpy as np
import pytest

from hero_jax.eval import nms
from hero_jax.eval import retrieval_metrics as rm
from hero_jax.eval import submission as sub_lib
from tests.fixture_batches import fixture_dir


@functools.lru_cache(maxsize=None)
def _load_json(name: str) -> str:
  return (fixture_dir() / name).read_text()


def metrics_fixture() -> dict:
  return json.loads(_load_json("tvr_metrics.json"))  # fresh copy: tests may not share state


def eval_fixture() -> dict:
  return json.loads(_load_json("tvr_eval_predictions.json"))


def assert_same(actual, expected, path="") -> None:
  """Equal values (NaN == NaN) and the same key order, recursively."""
  if isinstance(expected, dict):
    assert isinstance(actual, dict), path
    assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
    for k in expected:
      assert_same(actual[k], expected[k], f"{path}/{k}")
  elif isinstance(expected, float) and math.isnan(expected):
    assert isinstance(actual, float) and math.isnan(actual), path
  else:
    assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def call_kwargs(call: str) -> dict:
  """Keyword arguments of the fixture's ``eval_retrieval(...)`` call string."""
  node = ast.parse(call, mode="eval").body
  assert isinstance(node, ast.Call) and node.func.id == "eval_retrieval", call
  return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}


def nonzero_prefix(rows: list) -> list:
  n = 0
  while n < len(rows) and rows[n][3] != 0:
    n += 1
  return rows[:n]


# --- eval_retrieval parity ---


@pytest.mark.parametrize("case", ["tvr", "didemo_style"])
def test_eval_retrieval_matches_original(case):
  data = metrics_fixture()[case]
  before = copy.deepcopy(data["submission"])
  got = rm.eval_retrieval(data["submission"], data["ground_truth"], **call_kwargs(data["call"]))
  assert_same(got, data["metrics"])
  assert data["submission"] == before  # inputs untouched


def test_metrics_fixture_covers_the_edge_cases():
  """The parity test above only means something if the data has the edge cases."""
  tvr = metrics_fixture()["tvr"]
  sub, gt = tvr["submission"], tvr["ground_truth"]
  assert any(len(e["predictions"]) > rm.MAX_PRED_PER_QUERY for t in rm.TASK_TYPES for e in sub[t])
  gt_vidx = {g["desc_id"]: sub["video2idx"][g["vid_name"]] for g in gt}
  assert any(r[0] != gt_vidx[e["desc_id"]] for e in sub["SVMR"] for r in e["predictions"])
  assert {g["type"] for g in gt} == set(rm.DESC_TYPES)
  didemo = metrics_fixture()["didemo_style"]["ground_truth"]
  assert all(len(g["ts"]) >= rm.MIN_SPANS_FOR_MULTI_RULE for g in didemo)


def test_iou_boundaries_are_inclusive_and_float32():
  # IoU exactly 0.5 / 0.7 counts (>=); hull denominator: [0, 7] vs [3, 10] is 4/10.
  video2idx = {"a": 0, "b": 1}
  gt = [{"desc_id": 1, "vid_name": "a", "ts": [0.0, 7.0], "type": "v"}]
  def r1(rows, task="VCMR"):
    got = rm.eval_retrieval({"video2idx": video2idx, task: [{"desc_id": 1, "predictions": rows}]},
                            gt, use_desc_type=False)
    return got[task]["0.5-r1"], got[task]["0.7-r1"]
  assert r1([[0, 0.0, 10.0, 1]]) == (100.0, 100.0)   # 7/10
  assert r1([[0, 0.0, 14.0, 1]]) == (100.0, 0.0)     # 7/14
  assert r1([[0, 3.0, 10.0, 1]]) == (0.0, 0.0)       # 4/10
  assert r1([[1, 0.0, 7.0, 1]]) == (0.0, 0.0)        # right span, wrong video
  # SVMR drops the foreign row first, VCMR does not.
  assert r1([[1, 0.0, 7.0, 1], [0, 0.0, 7.0, 1]], "SVMR") == (100.0, 100.0)
  assert r1([[1, 0.0, 7.0, 1], [0, 0.0, 7.0, 1]], "VCMR") == (0.0, 0.0)
  # Spans go through float32 like the original: 6.9999999 becomes 7.0, IoU 0.7.
  gt[0]["ts"] = [0.0, 6.9999999]
  assert r1([[0, 0.0, 10.0, 1]]) == (100.0, 100.0)


def test_only_the_first_100_predictions_count():
  n = rm.MAX_PRED_PER_QUERY
  gt = [{"desc_id": 1, "vid_name": "a", "ts": [0.0, 5.0]}]
  miss = [[1, 0.0, 5.0, 0.0]] * n
  for task in rm.TASK_TYPES:
    sub = {"video2idx": {"a": 0, "b": 1},
           task: [{"desc_id": 1, "predictions": miss + [[0, 0.0, 5.0, 0.0]]}]}
    assert set(rm.eval_retrieval(sub, gt, use_desc_type=False)[task].values()) == {0.0}
    sub[task][0]["predictions"] = miss[1:] + [[0, 0.0, 5.0, 0.0]]
    got = rm.eval_retrieval(sub, gt, use_desc_type=False)[task]
    assert {k: v for k, v in got.items() if k.endswith(f"r{n}")} == {
        k: 100.0 for k in got if k.endswith(f"r{n}")}


def test_multi_span_rule_needs_two_spans():
  spans = [[0.0, 10.0], [0.0, 10.0], [20.0, 30.0], [40.0, 50.0]]
  gt = [{"desc_id": 7, "vid_name": "a", "ts": spans}]
  def r1(st, ed):
    sub = {"video2idx": {"a": 3}, "VCMR": [{"desc_id": 7, "predictions": [[3, st, ed, 0.5]]}]}
    return rm.eval_retrieval(sub, gt, use_desc_type=False)["VCMR"]["0.7-r1"]
  assert r1(0.0, 10.0) == 100.0    # two identical spans matched
  assert r1(20.0, 30.0) == 0.0     # one span only


def test_match_number_false_evaluates_the_common_queries():
  data = metrics_fixture()["tvr"]
  sub, gt = data["submission"], data["ground_truth"]
  dropped = gt[0]["desc_id"]
  partial = {k: (v if k == "video2idx" else [e for e in v if e["desc_id"] != dropped])
             for k, v in sub.items()}
  got = rm.eval_retrieval(partial, gt, match_number=False)
  want = rm.eval_retrieval(partial, [g for g in gt if g["desc_id"] != dropped])
  assert_same(got, want)


def test_rounding_follows_numpy():
  assert rm.rounded_percentage(1 / 3) == 33.33
  assert rm.rounded_percentage(2 / 3) == 66.67
  assert math.isnan(rm.rounded_percentage(float("nan")))


# --- NMS, val_log ---


def _nms_settings() -> dict:
  s = eval_fixture()["settings"]
  return dict(nms_thd=s["nms_thd"], max_before_nms=s["max_before_nms"],
              max_after_nms=s["max_after_nms"])


def test_nms_matches_original_on_nonzero_prefix():
  data = eval_fixture()
  cut = rm.get_submission_top_n(data["submission_no_nms"], data["settings"]["max_after_nms"])
  before = copy.deepcopy(cut)
  want = data[f"submission_nms_{data['settings']['nms_thd']}"]
  got = {"VCMR": nms.post_processing_vcmr_nms(cut["VCMR"], **_nms_settings()),
         "SVMR": nms.post_processing_svmr_nms(cut["SVMR"], **_nms_settings())}
  assert cut == before
  for task in ("VCMR", "SVMR"):
    assert [e["desc_id"] for e in got[task]] == [e["desc_id"] for e in want[task]]
    for g, w in zip(got[task], want[task]):
      expected = nonzero_prefix(w["predictions"])
      assert expected, f"{task} {w['desc_id']}: no non-zero prediction to compare"
      assert g["predictions"][:len(expected)] == expected, f"{task} desc_id {w['desc_id']}"
      assert len(g["predictions"]) == len(w["predictions"])


def test_nms_suppression_and_caps():
  rows = [[0, 0.0, 10.0, 0.9], [0, 1.0, 10.0, 0.8], [1, 0.0, 10.0, 0.7], [0, 20.0, 30.0, 0.6]]
  out = nms.filter_vcmr_by_nms(rows, nms_thd=0.5)
  assert out == [rows[0], rows[2], rows[3]]  # 9/10 > 0.5 suppressed, other video kept
  assert nms.filter_vcmr_by_nms(rows, nms_thd=0.95) == rows  # 0.9 <= 0.95 is kept
  assert nms.filter_vcmr_by_nms(rows, nms_thd=0.5, max_after_nms=2) == [rows[0], rows[2]]
  # The per-video cap of the original's inner NMS applies even when more are asked.
  many = [[0, float(i), float(i) + 0.5, 1.0 - i * 1e-4] for i in range(nms.PER_VIDEO_NMS_CAP + 20)]
  assert len(nms.filter_vcmr_by_nms(many, 0.5, max_after_nms=10 ** 6)) == nms.PER_VIDEO_NMS_CAP
  # SVMR relabels every row with the first row's video (original quirk).
  svmr = nms.post_processing_svmr_nms([{"desc_id": 1, "predictions": [[5, 0.0, 1.0, 0.2],
                                                                     [6, 3.0, 4.0, 0.9]]}])
  assert svmr[0]["predictions"] == [[5, 3.0, 4.0, 0.9], [5, 0.0, 1.0, 0.2]]


@pytest.mark.parametrize("which", ["no_nms", "nms"])
def test_metrics_of_both_runs(which):
  data = eval_fixture()
  name = "no_nms" if which == "no_nms" else f"nms_{data['settings']['nms_thd']}"
  got = rm.eval_retrieval(data[f"submission_{name}"], data["ground_truth"],
                          use_desc_type=data["settings"]["eval_with_query_type"])
  assert_same(got, data["metrics"][name])


@pytest.mark.parametrize("with_nms", [False, True])
def test_val_log_matches_original(with_nms):
  data = eval_fixture()
  thd = data["settings"]["nms_thd"]
  metrics = data["metrics"]
  if with_nms:
    got = rm.vcmr_val_log("val", metrics["no_nms"], metrics[f"nms_{thd}"], thd)
    want = data[f"val_log_run_with_nms_{thd}"]
  else:
    got = rm.vcmr_val_log("val", metrics["no_nms"])
    want = data["val_log_run_without_nms"]
  assert list(got) == list(want)
  for k, v in want.items():
    assert got[k] == pytest.approx(v, abs=1e-9), k


# --- span decoding (mask + top-n triples) against the original's SVMR lists ---


def test_svmr_decoding_matches_original():
  data = eval_fixture()
  s = data["settings"]
  with np.load(fixture_dir() / "task_tvr_eval.npz") as z:
    st_probs, ed_probs = z["out.st_probs"], z["out.ed_probs"]
  col = {v: i for i, v in enumerate(data["eval_video_order"])}
  gt = {g["desc_id"]: g for g in data["ground_truth"]}
  rows = [data["query_order"].index(e["desc_id"]) for e in data["submission_no_nms"]["SVMR"]]
  cols = [col[gt[e["desc_id"]]["vid_name"]] for e in data["submission_no_nms"]["SVMR"]]
  product = np.einsum("bm,bn->bmn", st_probs[rows, cols], ed_probs[rows, cols])
  product *= nms.generate_min_max_length_mask(product.shape, s["min_pred_l"], s["max_pred_l"])
  triples = nms.find_max_triples_from_upper_triangle_product(product, top_n=s["max_before_nms"])
  for entry, t in zip(data["submission_no_nms"]["SVMR"], triples):
    vidx = data["video2idx"][gt[entry["desc_id"]]["vid_name"]]
    t = t.copy()
    t[:, 1] += 1  # the original's end index is inclusive
    t[:, :2] *= s["vfeat_interval"]
    ours = [[vidx] + r for r in t[:s["max_after_nms"]].tolist()]
    want = nonzero_prefix(entry["predictions"])
    assert ours[:len(want)] == want, entry["desc_id"]
    assert len(ours) == len(entry["predictions"])


def test_length_mask_and_triples():
  mask = nms.generate_min_max_length_mask((2, 3, 4, 4), min_l=1, max_l=3)
  assert mask.shape == (1, 1, 4, 4) and mask.dtype == np.float32
  np.testing.assert_array_equal(mask[0, 0], [[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
  m = nms.generate_min_max_length_mask((5, 5), 2, 4)
  assert all(m[i, j] == (2 <= j - i < 4) for i in range(5) for j in range(5))
  scores = np.array([[[0.1, 0.5], [0.3, 0.2]]], np.float32)
  (t,) = nms.find_max_triples_from_upper_triangle_product(scores, top_n=3)
  np.testing.assert_array_equal(t, [[0, 1, 0.5], [1, 0, np.float32(0.3)], [1, 1, np.float32(0.2)]])
  (t,) = nms.find_max_triples_from_upper_triangle_product(scores, top_n=4, prob_thd=0.25)
  assert t[:, :2].tolist() == [[0, 1], [1, 0]]


# --- writers ---


def _small_submission() -> dict:
  return {"video2idx": {"va": 10, "vb": 11},
          "VCMR": [sub_lib.query_entry(1, [[10, 0.0, 3.0, 0.9], [11, 1.5, 4.5, 0.5]])],
          "SVMR": [sub_lib.query_entry(1, [[10, 0.0, 3.0, 0.4]])],
          "VR": [sub_lib.query_entry(1, [[11, 0, 0, 2.0], [10, 0, 0, 1.0]])]}


def test_result_json_round_trip(tmp_path):
  data = metrics_fixture()["tvr"]["submission"]
  path = tmp_path / "results.json"
  sub_lib.write_result_json(path, data)
  assert sub_lib.read_result_json(path) == data


def test_tvr_codalab_zip(tmp_path):
  data = metrics_fixture()["tvr"]["submission"]
  path = tmp_path / "tvr.zip"
  sub_lib.write_tvr_codalab_zip(path, data, data)
  with zipfile.ZipFile(path) as zf:
    assert sorted(zf.namelist()) == ["tvr_test_public_submission.json", "tvr_val_submission.json"]
    val = json.loads(zf.read("tvr_val_submission.json"))
    test = json.loads(zf.read("tvr_test_public_submission.json"))
  assert list(val) == ["video2idx", "VCMR", "SVMR", "VR"]
  assert list(test) == ["video2idx", "VCMR", "VR"]
  assert val == rm.get_submission_top_n(data, rm.MAX_PRED_PER_QUERY)
  assert all(len(e["predictions"]) <= rm.MAX_PRED_PER_QUERY for t in rm.TASK_TYPES for e in val[t])
  no_svmr = {k: v for k, v in data.items() if k != "SVMR"}
  with pytest.raises(ValueError, match="SVMR"):
    sub_lib.write_tvr_codalab_zip(tmp_path / "bad.zip", no_svmr, data)


def test_value_how2r_format(tmp_path):
  small = _small_submission()
  assert sub_lib.to_value_format(small) == {
      "VCMR": [{"desc_id": 1, "predictions": [[10, 0.0, 3.0], [11, 1.5, 4.5]]}],
      "SVMR": [{"desc_id": 1, "predictions": [[10, 0.0, 3.0]]}],
      "VR": [{"desc_id": 1, "predictions": [11, 10]}]}
  path = tmp_path / "value.zip"
  sub_lib.write_value_how2r_zip(path, val_submission=small, test_public_submission=small)
  with zipfile.ZipFile(path) as zf:
    assert sorted(zf.namelist()) == ["how2r/how2r_test_public_predictions.json",
                                     "how2r/how2r_val_predictions.json"]
    assert json.loads(zf.read("how2r/how2r_val_predictions.json")) == sub_lib.to_value_format(small)
  with pytest.raises(ValueError, match="already holds"):
    sub_lib.write_value_how2r_zip(path, val_submission=small, mode="a")


def test_value_format_scores_like_the_original():
  """Dropping scores / video2idx loses nothing the metrics read (VALUE's scorer path)."""
  for case in ("tvr", "didemo_style"):
    data = metrics_fixture()[case]
    kwargs = call_kwargs(data["call"])
    value = sub_lib.to_value_format(data["submission"])
    back = sub_lib.from_value_format(json.loads(json.dumps(value)), data["submission"]["video2idx"])
    assert_same(rm.eval_retrieval(back, data["ground_truth"], **kwargs), data["metrics"])


# --- bad input ---


def _tvr_case():
  data = metrics_fixture()["tvr"]
  return data["submission"], data["ground_truth"]


def test_unknown_and_missing_desc_ids_are_named():
  sub, gt = _tvr_case()
  missing_id = sub["VR"].pop()["desc_id"]
  with pytest.raises(ValueError, match=rf"VR.*missing.*{missing_id}"):
    rm.eval_retrieval(sub, gt)
  sub, gt = _tvr_case()
  stranger = max(g["desc_id"] for g in gt) + 1
  sub["VCMR"].append({"desc_id": stranger, "predictions": [[0, 0.0, 1.0, 0.0]]})
  with pytest.raises(ValueError, match=rf"unknown desc_ids: {stranger}"):
    rm.eval_retrieval(sub, gt)


@pytest.mark.parametrize("breakage, message", [
    ("video", "not in the submission's video2idx"),
    ("row", "prediction 1 must be"),
    ("empty", "no predictions"),
    ("ts", "'ts' must be"),
    ("type", "query type"),
    ("duplicate", "more than once"),
])
def test_bad_input_raises(breakage, message):
  sub, gt = _tvr_case()
  first = gt[0]["desc_id"]
  entry = next(e for e in sub["VCMR"] if e["desc_id"] == first)
  if breakage == "video":
    del sub["video2idx"][gt[0]["vid_name"]]
  elif breakage == "row":
    entry["predictions"][1] = ["x", 0.0]
  elif breakage == "empty":
    entry["predictions"] = []
  elif breakage == "ts":
    gt[0]["ts"] = [gt[0]["ts"], gt[0]["ts"]]  # 2 nested spans: not a rule the original has
  elif breakage == "type":
    gt[0]["type"] = "x"
  elif breakage == "duplicate":
    sub["VCMR"].append(copy.deepcopy(entry))
  with pytest.raises(ValueError, match=message) as info:
    rm.eval_retrieval(sub, gt)
  if breakage != "video":
    assert repr(first) in str(info.value) or str(first) in str(info.value)


def test_bad_nms_and_writer_input_raises(tmp_path):
  with pytest.raises(ValueError, match="desc_id=3.*prediction 0"):
    nms.post_processing_vcmr_nms([{"desc_id": 3, "predictions": [[0, 1.0, 2.0]]}])
  with pytest.raises(ValueError, match="desc_id=4.*empty"):
    nms.post_processing_svmr_nms([{"desc_id": 4, "predictions": []}])
  small = _small_submission()
  small["VR"][0]["predictions"].append([99, 0, 0, 0.1])
  with pytest.raises(ValueError, match="video index 99"):
    sub_lib.write_result_json(tmp_path / "x.json", small)
  with pytest.raises(ValueError, match="prediction 0 must be a video index"):
    sub_lib.from_value_format({"VR": [{"desc_id": 1, "predictions": [[1, 2]]}]}, {"a": 1})
