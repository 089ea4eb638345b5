"""Full VCMR evaluation against the original's ``validate_full_vcmr`` fixtures.

``task_tvr_eval.npz`` holds the frame bank, scores and start/end logits of
the original on the fixture corpus; ``tvr_eval_predictions.json`` its
prediction lists (without and with NMS) and metrics. Everything (settings,
corpus, queries) is read from the fixture folder.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest

from hero_jax.eval import vcmr as vcmr_eval
from hero_jax.model.hero import Hero
from hero_jax.objectives import vsm
from tests import fixture_batches as fb
from tests import reference

TOL = dict(rtol=1e-5, atol=1e-5)


@functools.lru_cache(maxsize=None)
def expected() -> dict:
  return json.loads((fb.fixture_dir() / "tvr_eval_predictions.json").read_text())


def eval_settings() -> vcmr_eval.VcmrEvalSettings:
  s = expected()["settings"]
  return vcmr_eval.VcmrEvalSettings(
      q2c_alpha=s["q2c_alpha"], max_vcmr_video=s["max_vcmr_video"], min_pred_l=s["min_pred_l"],
      max_pred_l=s["max_pred_l"], max_before_nms=s["max_before_nms"],
      max_after_nms=s["max_after_nms"], nms_thd=s["nms_thd"],
      video_batch=s["vcmr_eval_video_batch_size"], query_batch=s["vcmr_eval_q_batch_size"],
      use_desc_type=s["eval_with_query_type"])


def model_and_params():
  return Hero(reference.model_config()), reference.vcmr_params()


@functools.lru_cache(maxsize=None)
def bank() -> vcmr_eval.FrameBank:
  video2idx = expected()["video2idx"]
  videos = [fb.video_by_name(v) for v in video2idx]
  return vcmr_eval.encode_bank(*model_and_params(), videos, fb.host_context(), eval_settings(),
                               video2idx)


def eval_queries() -> list:
  by_id = {r["desc_id"]: r for r in fb.inputs_raw()["tvr_eval_queries"]}
  return [fb.moment_query(by_id[q]) for q in expected()["query_order"]]


@functools.lru_cache(maxsize=None)
def result() -> vcmr_eval.VcmrResult:
  ids = fb.special_ids()
  return vcmr_eval.evaluate(*model_and_params(), bank(), eval_queries(), ids.pad, ids.cls,
                            eval_settings())


def test_bank_in_sorted_order_zero_past_each_batch():
  z = fb.load_npz("tvr_eval")
  b = bank()
  assert b.vids == expected()["eval_video_order"]
  f = z["out.frame_bank"].shape[1]
  np.testing.assert_array_equal(b.mask[:, :f], z["out.frame_bank_mask"])
  assert not b.mask[:, f:].any()
  np.testing.assert_allclose(b.frames[:, :f], z["out.frame_bank"], **TOL)
  np.testing.assert_array_equal(b.frames[:, f:], 0.0)


def test_the_bank_packs_groups_of_videos_and_keeps_its_order():
  """With pack groups (``layout.pack_videos=2``) the bank is the unpacked one,
  in the same order (the regrouping order is undone: tests/test_packing.py)."""
  video2idx = expected()["video2idx"]
  videos = [fb.video_by_name(v) for v in video2idx]
  sizes = fb.packed_sizes()
  grouped = dataclasses.replace(sizes, packed_rows=2 * sizes.packed_rows, pack_videos=2)
  settings = dataclasses.replace(eval_settings(), video_batch=4)
  ctx = fb.host_context()
  packed = vcmr_eval.encode_bank(*model_and_params(), videos,
                                 dataclasses.replace(ctx, sizes=grouped), settings, video2idx)
  plain = vcmr_eval.encode_bank(*model_and_params(), videos, ctx, settings, video2idx)
  assert packed.vids == plain.vids
  np.testing.assert_array_equal(packed.mask, plain.mask)
  np.testing.assert_allclose(packed.frames, plain.frames, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_query_inputs_and_all_pair_outputs():
  z = fb.load_npz("tvr_eval")
  ids = fb.special_ids()
  queries = eval_queries()
  batches = sorted({k.split(".")[0] for k in z if k.startswith("batch")})
  theirs = [row for name in batches for row in z[f"{name}.query_input_ids"]]
  assert len(theirs) == len(queries)
  for q, row in zip(queries, theirs):
    np.testing.assert_array_equal(np.concatenate([[ids.cls], q.token_ids]), row[row != ids.pad])
  model, params = model_and_params()
  b = bank()
  length = max(len(q.token_ids) for q in queries) + 1
  tok = np.full((len(queries), length), ids.pad, np.int32)
  msk = np.zeros_like(tok)
  for i, q in enumerate(queries):
    tok[i, 0], tok[i, 1:1 + len(q.token_ids)], msk[i, :1 + len(q.token_ids)] = ids.cls, q.token_ids, 1
  f = z["out.st_logits"].shape[-1]

  def outputs(m):
    q = m.encode_query(tok, msk)
    st, ed = m.st_ed_logits(q[:, None], b.frames[None, :, :f], b.mask[None, :, :f],
                            np.ones_like(b.mask[None, :, :f]))
    return vsm.query_video_scores(q, b.frames, b.mask), st, ed
  scores, st, ed = model.apply({"params": params}, method=outputs)
  np.testing.assert_allclose(scores, z["out.q2video_scores"], **TOL)
  np.testing.assert_allclose(st, z["out.st_logits"], **TOL)
  np.testing.assert_allclose(ed, z["out.ed_logits"], **TOL)
  import jax
  np.testing.assert_allclose(jax.nn.softmax(st, -1), z["out.st_probs"], **TOL)
  np.testing.assert_allclose(jax.nn.softmax(ed, -1), z["out.ed_probs"], **TOL)


def check_lists(ours: dict, theirs: dict, nonzero: dict, same_length: bool = True):
  """Same queries; per list, the non-zero-score prefix equal (score order
  among exact zeros is implementation defined, and so, after NMS, which
  zero-score spans survive)."""
  assert ours["video2idx"] == theirs["video2idx"]
  for task in vcmr_eval.TASKS:
    assert [e["desc_id"] for e in ours[task]] == [e["desc_id"] for e in theirs[task]], task
    for i, (a, b) in enumerate(zip(ours[task], theirs[task])):
      pa, pb = a["predictions"], b["predictions"]
      assert len(pa) == len(pb) or not same_length, (task, i)
      n = sum(row[3] != 0 for row in pb)
      assert n <= nonzero[task][i]
      assert sum(row[3] != 0 for row in pa) == n, (task, i)
      for ra, rb in zip(pa[:n], pb[:n]):
        assert ra[:3] == rb[:3], (task, i, ra, rb)
        np.testing.assert_allclose(ra[3], rb[3], rtol=1e-5, err_msg=f"{task} query {i}")


def test_predictions_without_nms_equal_the_original():
  check_lists(result().submission_no_nms, expected()["submission_no_nms"],
              expected()["nonzero_scores_per_query"])


def test_predictions_after_nms_equal_the_original():
  name = f"submission_nms_{expected()['settings']['nms_thd']}"
  check_lists(result().submission, expected()[name], expected()["nonzero_scores_per_query"],
              same_length=False)


@pytest.mark.parametrize("run", ["no_nms", "nms"])
def test_metrics_equal_the_original(run):
  want = expected()["metrics"]["no_nms" if run == "no_nms" else f"nms_{expected()['settings']['nms_thd']}"]
  got = result().metrics[run]
  assert got == want


# --- bad input ---


def test_empty_corpus_and_unknown_ground_truth_are_errors():
  b = bank()
  with pytest.raises(ValueError, match="corpus is empty"):
    vcmr_eval.encode_bank(*model_and_params(), [], fb.host_context(), eval_settings(), {})
  with pytest.raises(ValueError, match="corpus is empty"):
    vcmr_eval.FrameBank(vids=[], video2idx={}, frames=np.zeros((0, 1, 1)), mask=np.zeros((0, 1)),
                        frame_length=1.5)
  ids = fb.special_ids()
  with pytest.raises(ValueError, match="not_a_video"):
    vcmr_eval.rank(*model_and_params(), b, [np.array([ids.cls, 5])], ids.pad, eval_settings(),
                   gt_vids=["not_a_video"])
  with pytest.raises(ValueError, match="no queries"):
    vcmr_eval.rank(*model_and_params(), b, [], ids.pad, eval_settings())


def test_split_corpus_rules():
  from hero_jax.eval import run as eval_run
  queries = eval_queries()
  vids, index = eval_run.corpus_for(queries, None, ["zzz"] + list(expected()["video2idx"]))
  assert vids == sorted({q.vid for q in queries})
  assert index == {v: i for i, v in enumerate(sorted(vids))}   # "zzz" sorts last
  given = {"a": 7, "b": 3}
  assert eval_run.corpus_for(queries, given, []) == (["a", "b"], given)
  with pytest.raises(ValueError, match="in no split"):
    eval_run.corpus_for(queries, None, ["other"])


def test_bank_file_round_trip_and_errors(tmp_path):
  b = bank()
  b.save(tmp_path / "b.npz")
  back = vcmr_eval.FrameBank.load(tmp_path / "b.npz")
  assert back.vids == b.vids and back.video2idx == b.video2idx
  np.testing.assert_array_equal(back.frames, b.frames)
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    vcmr_eval.FrameBank.load(tmp_path / "nope.npz")
  np.savez(tmp_path / "other.npz", x=np.zeros(3))
  with pytest.raises(ValueError, match="not a frame bank"):
    vcmr_eval.FrameBank.load(tmp_path / "other.npz")


def test_moment_after_the_video_end_is_clamped_and_counted():
  import collections
  from hero_jax import layout
  from hero_jax.objectives import vcmr
  item = fb.tvr_train_examples()[0]
  n = item.video.num_frames
  late = layout.QueryExample(item.video, dataclasses.replace(item.query, ts=(1.5 * n + 3, 1.5 * n + 9)))
  sizes = dataclasses.replace(fb.fixture_sizes(), queries=1, max_query_tokens=64)
  stats = collections.Counter()
  ex = vcmr.build_vcmr_example(late, fb.host_context(sizes), stats)
  assert ex["query_st_ed"].tolist() == [[n - 1, n - 1]]
  assert stats["moment_starts_after_video_end"] == 1
  nan = layout.QueryExample(item.video, dataclasses.replace(item.query, ts=(float("nan"),) * 2))
  assert vcmr.build_vcmr_example(nan, fb.host_context(sizes))["query_st_ed"].tolist() == [[-1, -1]]
  long = layout.QueryExample(item.video, dataclasses.replace(item.query, token_ids=np.arange(61) + 5))
  from hero_jax.objectives import registry
  with pytest.raises(registry.SkipExample, match="query_longer_than_max_txt_len"):
    vcmr.make_vcmr_example(long, np.random.default_rng(0), fb.host_context(sizes))


@pytest.mark.slow
def test_checkpoint_that_does_not_fit_the_model_is_named(tmp_path):
  from hero_jax.convert import files, mapping
  from hero_jax.train import init_from
  sd = mapping.params_to_state_dict(reference.vcmr_params())
  path = files.save_state_dict(sd, tmp_path / "vcmr.npz")
  small = reference.model_config().replace(intermediate_size=32)
  with pytest.raises(ValueError, match="intermediate.dense"):
    init_from.load(str(path), small)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_fine_tuned_vcmr_checkpoint_converts_both_ways(tmp_path, suffix):
  """``weights_vcmr.npz`` (HeroForVcmr's fine-tuned heads on the encoder):
  original -> hero_jax -> original is exact, and the heads land where the
  parity tests use them."""
  from hero_jax.convert import checkpoint, files, mapping
  from hero_jax.convert.__main__ import main as convert
  sd = reference.vcmr_state_dict()
  src = files.save_state_dict(sd, tmp_path / f"vcmr{suffix}")
  config = tmp_path / "hero_finetune.json"
  config.write_text(json.dumps(fb.fixture_config()["model_config_finetune"]))
  ck, back = tmp_path / "ck", tmp_path / f"back{suffix}"
  assert convert(["from-hero", "--src", str(src), "--model-config", str(config), "--out", str(ck),
                  "--frame-feat-dim", str(fb.fixture_config()["vfeat_dim"])]) == 0
  params, _ = checkpoint.load_hero_checkpoint(ck)
  flat, want = mapping.flatten(params), mapping.flatten(reference.vcmr_params())
  for path in want:
    np.testing.assert_array_equal(flat[path], want[path], err_msg=mapping.path_str(path))
  heads = files.load_state_dict(fb.fixture_dir() / "weights_vcmr.npz")
  np.testing.assert_array_equal(np.asarray(params["video_query_linear"]["kernel"]),
                                heads["video_query_linear.weight"].T)
  assert convert(["to-hero", "--src", str(ck), "--out", str(back)]) == 0
  out = files.load_state_dict(back)
  if suffix == ".pt":
    assert out.pop("vocab_padded") is True
  assert sorted(out) == sorted(sd)
  for key in sd:
    np.testing.assert_array_equal(out[key], sd[key], err_msg=key)
