"""Parity with the ORIGINAL PyTorch HERO on its recorded fixtures.

Weights come through the converter (``weights.npz`` and ``weights.pt``); every
batch is rebuilt by our host transforms from the raw inputs and the
original's recorded random choices; outputs are compared at valid positions
(everything for temporal arrays, whose padding the original's losses see).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hero_jax.model.hero import Hero
from hero_jax.objectives import common, fom, mfm, mlm, vsm
from tests import fixture_batches as fb
from tests import reference

TOL = dict(rtol=1e-5, atol=1e-5)


def close(ours, theirs, what):
  np.testing.assert_allclose(np.asarray(ours, np.float64), np.asarray(theirs, np.float64),
                             err_msg=what, **TOL)


@functools.lru_cache(maxsize=None)
def run(task, method, *args, params_from="npz", **kwargs):
  """(output, intermediates) of ``method`` on the task's rebuilt batch."""
  batch = fb.build_batch(task)
  model = Hero(reference.model_config())
  out, state = model.apply({"params": reference.params(params_from)}, batch, *args, method=method,
                           mutable=["intermediates"], **kwargs)
  return batch, out, state["intermediates"]


def check_packed_rows(batch, rows_ours, z, key, what):
  """Our cross-modal rows [V, R, M+T, H] against the fixture's packed rows."""
  index = fb.packed_index(batch, z["out.f_row_len"])
  close(fb.gather_packed(np.asarray(rows_ours), index), z[key][index.real], what)


def check_last_layer(batch, inter, z, slots=None):
  """The cross-modal stack's last layer against the fixture's ``f_sequence`` at
  the slots it kept (``prune_last_layer``): every frame slot by default, or
  ``slots`` [V, N] (MLM's) of each video's flattened rows."""
  v, r, m = batch["row_frame_mask"].shape
  width = m + batch["row_txt_mask"].shape[2]
  if slots is None:
    slots = np.broadcast_to((np.arange(r)[:, None] * width + np.arange(m)).reshape(1, -1), (v, r * m))
  # The video's layers come first (queries, encoded after, add theirs).
  last = reference.model_config().cross_layers - 1
  kept = np.asarray(inter["v_encoder"]["f_encoder"]["encoder"]["hidden_states"][last])
  assert kept.shape[:2] == slots.shape, (kept.shape, slots.shape)
  index = fb.packed_index(batch, z["out.f_row_len"])
  theirs = fb.unpack_rows(z["out.f_sequence_packed"], index, batch).reshape(v, r * width, -1)
  theirs = np.take_along_axis(theirs, np.asarray(slots)[..., None], axis=1)
  real = ~np.isnan(theirs[..., 0])   # the slots the fixture holds (not our padding)
  assert real.sum() > 0
  close(kept[real], theirs[real], "f_sequence at the kept slots")


def temporal_layers(inter):
  c = inter["v_encoder"]["c_encoder"]
  return [c["embedding"][0]] + list(c["encoder"]["hidden_states"])


@pytest.mark.parametrize("params_from", ["npz", "pt"])
def test_repr(params_from):
  z = fb.load_npz("repr")
  batch, seq, inter = run("repr", Hero.__call__, params_from=params_from)
  f = inter["v_encoder"]["f_encoder"]
  # Every position of every layer but the last, which computes the frame slots only.
  cross_layers = [f["embedding"][0]] + list(f["encoder"]["hidden_states"])[:-1]
  packed_layers = list(z["out.f_hidden_states_packed"])
  assert len(cross_layers) == len(packed_layers)
  index = fb.packed_index(batch, z["out.f_row_len"])
  rows = batch["row_ids"].shape[:2]
  for i, (ours, theirs) in enumerate(zip(cross_layers, packed_layers)):
    ours = np.asarray(ours).reshape(rows + ours.shape[-2:])   # layers see [V * R, L, H]
    close(fb.gather_packed(ours, index), theirs[index.real], f"cross-modal layer {i}")
  check_last_layer(batch, inter, z)
  v = inter["v_encoder"]
  close(v["frame_transform_output"][0], z["out.frame_transform"], "frame_transform")
  close(v["matched_frames"][0], z["out.matched_v_feats"], "matched frames")
  close(v["temporal_input"][0], z["out.c_input"], "temporal input")
  theirs = list(z["out.c_hidden_states"]) + [z["out.c_sequence"]]
  for i, (ours, t) in enumerate(zip(temporal_layers(inter), theirs)):
    close(ours, t, f"temporal layer {i}")
  close(seq, z["out.c_sequence"], "c_sequence")


def test_mlm():
  z = fb.load_npz("mlm")
  batch, logits, inter = run("mlm", mlm.mlm_logits)
  f = inter["v_encoder"]["f_encoder"]
  check_packed_rows(batch, f["embedding"][0], z, "out.f_embedding_packed", "embedding")
  m, t = batch["row_frame_mask"].shape[-1], batch["row_txt_mask"].shape[-1]
  positions = batch["mlm_positions"]
  check_last_layer(batch, inter, z, slots=positions // t * (m + t) + m + positions % t)
  w = batch["mlm_weights"].astype(bool)
  close(np.asarray(logits)[w], z["out.mlm_logits"], "mlm logits")
  np.testing.assert_array_equal(batch["mlm_labels"][w], z["batch.txt_labels"])
  ce = common.cross_entropy(logits, batch["mlm_labels"])
  close(np.asarray(ce)[w], z["loss.mlm_per_token"], "per-token CE")
  loss, metrics = mlm.mlm_loss(Hero(reference.model_config()), reference.params(), batch)
  close(loss, z["loss.mlm_train"], "train loss")
  close(ratio(metrics["loss"]), z["val.loss"], "val loss")
  close(ratio(metrics["acc"]), z["val.acc"], "val acc")


def ratio(pair):
  return float(pair[0]) / float(pair[1])


def clip_input(batch):
  """HERO's ``c_v_feats + v_encoder.mask_embedding[mask]`` (masked frames zeroed)."""
  table = reference.params()["v_encoder"]["mask_embedding"]["embedding"]
  mask = batch["mfm_mask"]
  return np.where(mask[..., None] > 0, 0, batch["frames"]) + np.asarray(table)[mask]


@pytest.mark.parametrize("task", ["mfm-nce", "mffr"])
def test_mfm(task):
  z = fb.load_npz(task)
  batch, pred, inter = run(task, mfm.mfm_predictions)
  mask = batch["mfm_mask"].astype(bool)
  np.testing.assert_array_equal(mask, z["batch.c_v_masks"])
  check_last_layer(batch, inter, z)
  close(clip_input(batch), z["out.c_v_feats_masked"], "masked clip features")
  close(inter["v_encoder"]["temporal_input"][0], z["out.c_input"], "temporal input")
  close(temporal_layers(inter)[-1], z["out.c_sequence"], "c_sequence")
  pred = np.asarray(pred)
  model, params = Hero(reference.model_config()), reference.params()
  if task == "mffr":
    close(pred[mask], z["out.mffr_pred"], "mffr predictions")
    close(np.square(pred[mask] - batch["frames"][mask]), z["loss.mffr_elementwise"], "elementwise")
    loss, metrics = mfm.mffr_loss(model, params, batch)
    close(loss, z["loss.mffr_train"], "train loss")
    close(ratio(metrics["loss"]), z["val.loss"], "val loss")
    close(ratio(metrics["cosine"]), z["val.cosine"], "val cosine")
    return
  close(pred[mask], z["out.mfm_pred"], "mfm predictions")
  negatives = (~mask) & np.asarray(common.below_longest_video(batch["frame_mask"]))
  close(pred[negatives], z["out.mfm_neg_pred"], "negative predictions")
  logits = np.asarray(mfm.nce_logits(pred, batch["frames"], batch["mfm_mask"], batch["frame_mask"],
                                     mfm.MfmNceSettings()))[0]
  columns = np.concatenate([mask.reshape(-1), negatives.reshape(-1)])
  close(logits[mask.reshape(-1)][:, columns], z["out.nce_logits"], "nce logits")
  loss, metrics = mfm.mfm_nce_loss(model, params, batch)
  close(loss, z["loss.nce_train"], "train loss")
  for key in ("loss", "acc", "l2", "cosine"):
    close(ratio(metrics[key]), z[f"val.{key}"], f"val {key}")


def test_fom():
  z = fb.load_npz("fom")
  batch, logits, inter = run("fom", fom.fom_logits)
  check_last_layer(batch, inter, z)
  v = inter["v_encoder"]
  close(v["frame_transform_output"][0], z["out.frame_transform"], "frame_transform")
  close(v["temporal_input"][0], z["out.c_input_shuffled"], "shuffled temporal input")
  close(temporal_layers(inter)[-1], z["out.c_sequence"], "c_sequence")
  close(np.asarray(logits).reshape(-1, logits.shape[-1]), z["out.fom_logits"], "fom logits")
  loss, metrics = fom.fom_loss(Hero(reference.model_config()), reference.params(), batch)
  close(loss, z["loss.fom_train"], "train loss")
  close(ratio(metrics["loss"]), z["val.loss"], "val loss")
  close(ratio(metrics["acc"]), z["val.acc"], "val acc")


def test_vsm_outputs():
  z = fb.load_npz("vsm")
  batch, (seq, queries, st, ed), inter = run("vsm", vsm.vsm_outputs)
  check_last_layer(batch, inter, z)
  close(seq, z["out.c_sequence"], "c_sequence")
  q_flat = np.asarray(queries).reshape(-1, queries.shape[-1])
  close(q_flat, z["out.modular_query"], "modular query")
  tokens = np.asarray(inter["query_tokens"][0])
  lengths = z["out.q_row_len"]
  packed = np.concatenate([tokens[i, :n] for i, n in enumerate(lengths)])
  close(packed, z["out.q_token_packed"], "query tokens")
  close(np.asarray(inter["video_query_linear_output"][0]).reshape(q_flat.shape),
        z["out.video_query_linear"], "video_query_linear")
  scores = vsm.query_video_scores(q_flat, seq, batch["frame_mask"])
  close(scores, z["out.q2video_scores"], "query-video scores")
  # Every query against every video (the original's "cross" mode).
  fm = batch["frame_mask"]

  def all_pairs(m, q, frames):
    return m.st_ed_logits(q[:, None], frames[None], fm[None], common.below_longest_video(fm)[None])
  st_all, ed_all = Hero(reference.model_config()).apply(
      {"params": reference.params()}, q_flat, seq, method=all_pairs)
  close(st_all, z["out.st_logits"], "start logits")
  close(ed_all, z["out.ed_logits"], "end logits")
  own = np.asarray(z["batch.q_vidx"])
  close(np.asarray(st).reshape(len(own), -1), z["out.st_logits"][np.arange(len(own)), own], "own start")


def check_vsm_losses(z, batch, params, hard):
  """Our VSM loss terms (train and eval reductions) against ``loss.*`` of ``z``."""
  settings = reference.vsm_settings()
  step = settings.hard_negative_start_step if hard == "on" else 0
  model = Hero(reference.model_config())
  total, metrics = vsm.vsm_loss(model, params, batch, settings, step=step,
                                rng=jax.random.key(0), deterministic=True)
  prefix = f"loss.train_hardneg_{hard}"
  n = float(metrics["loss_st_ed"][1])
  close(total, z[f"{prefix}.total"], "train total")
  close(settings.lw_st_ed * float(metrics["loss_st_ed"][0]) / n, z[f"{prefix}.st_ed"], "train st_ed")
  close(settings.lw_neg_ctx * float(metrics["loss_neg_ctx"][0]) / n, z[f"{prefix}.neg_ctx"], "neg_ctx")
  close(settings.lw_neg_q * float(metrics["loss_neg_q"][0]) / n, z[f"{prefix}.neg_q"], "neg_q")
  # Evaluation reductions: summed start/end CE and per-query ranking losses.
  prefix = f"loss.eval_hardneg_{hard}"
  close(settings.lw_st_ed * float(metrics["loss_st_ed"][0]), z[f"{prefix}.st_ed"], "eval st_ed")
  seq, queries, _, _ = model.apply({"params": params}, batch, method=vsm.vsm_outputs)
  scores = vsm.query_video_scores(np.asarray(queries).reshape(-1, queries.shape[-1]), seq,
                                  batch["frame_mask"])
  l_ctx, l_q = vsm.ranking_losses(scores, batch["query_ids"].shape[1], hard == "on", settings)
  close(settings.lw_neg_ctx * np.asarray(l_ctx), z[f"{prefix}.neg_ctx"], "eval neg_ctx per query")
  close(settings.lw_neg_q * np.asarray(l_q), z[f"{prefix}.neg_q"], "eval neg_q per query")
  return total, metrics, n


@pytest.mark.slow
@pytest.mark.parametrize("hard", ["off", "on"])
def test_vsm_losses(hard):
  z = fb.load_npz("vsm")
  batch = fb.build_batch("vsm")
  total, metrics, n = check_vsm_losses(z, batch, reference.params(), hard)
  if hard == "off":
    close(float(metrics["loss_st_ed"][0]) / n, z["val.loss_st_ed"], "val st_ed")
    close(float(metrics["loss_neg_ctx"][0]) / n, z["val.loss_neg_ctx"], "val neg_ctx")
    close(float(metrics["loss_neg_q"][0]) / n, z["val.loss_neg_q"], "val neg_q")
    close(total, z["val.loss_overall"], "val overall")


def test_vsm_local_branch_follows_drop_svmr_prob():
  """The local start/end loss is on in a share 1 - drop_svmr_prob of steps."""
  batch = fb.build_batch("vsm")
  model, params = Hero(reference.model_config()), reference.params()

  def loss_with(prob, rng):
    settings = dataclasses.replace(reference.vsm_settings(), drop_svmr_prob=prob)
    return vsm.vsm_loss(model, params, batch, settings, rng=rng)

  on_total, on = loss_with(0.0, jax.random.key(1))
  off_total, off = loss_with(1.0, jax.random.key(1))
  assert float(on["local_branch"][0]) == 1.0 and float(off["local_branch"][0]) == 0.0
  st_ed = float(on["loss_st_ed"][0]) / float(on["loss_st_ed"][1])
  close(float(on_total) - float(off_total), reference.vsm_settings().lw_st_ed * st_ed, "local term")
  # Without an rng (evaluation) the local branch is always on.
  assert float(loss_with(0.8, None)[1]["local_branch"][0]) == 1.0
  settings = vsm.VsmSettings()   # drop_svmr_prob 0.8
  keys = jax.random.split(jax.random.key(0), 2000)
  share = float(jnp.mean(jax.vmap(lambda k: vsm.local_branch_on(k, settings))(keys)))
  assert abs(share - 0.2) < 0.03, share


# --- TVR fine-tuning (HeroForVcmr) ---


def test_vcmr_batch_targets():
  z = fb.load_npz("tvr_train")
  batch = fb.tvr_train_batch()
  np.testing.assert_array_equal(batch["query_st_ed"][:, 0], z["batch.targets"])
  ids, mask = batch["query_ids"][:, 0], batch["query_mask"][:, 0]
  np.testing.assert_array_equal(np.where(mask > 0, ids, fb.special_ids().pad), z["batch.query_input_ids"])
  np.testing.assert_array_equal(mask, z["batch.query_attn_masks"])


def test_vcmr_outputs():
  """Paired start/end (one query per video), scores and every intermediate."""
  z = fb.load_npz("tvr_train")
  batch = fb.tvr_train_batch()
  model, params = Hero(reference.model_config()), reference.vcmr_params()
  (seq, queries, st, ed), state = model.apply({"params": params}, batch, method=vsm.vsm_outputs,
                                              mutable=["intermediates"])
  inter = state["intermediates"]
  check_last_layer(batch, inter, z)
  close(seq, z["out.c_sequence"], "c_sequence")
  tokens = np.asarray(inter["query_tokens"][0])
  packed = np.concatenate([tokens[i, :n] for i, n in enumerate(z["out.q_row_len"])])
  close(packed, z["out.q_token_packed"], "query tokens")
  q = np.asarray(queries)[:, 0]
  close(q, z["out.modular_query"], "modular query")
  close(np.asarray(inter["video_query_linear_output"][0])[:, 0], z["out.video_query_linear"],
        "video_query_linear")
  close(np.asarray(st)[:, 0], z["out.st_logits"], "paired start logits")
  close(np.asarray(ed)[:, 0], z["out.ed_logits"], "paired end logits")
  close(vsm.query_video_scores(q, seq, batch["frame_mask"]), z["out.q2video_scores"], "scores")


@pytest.mark.slow
@pytest.mark.parametrize("hard", ["off", "on"])
def test_vcmr_losses(hard):
  check_vsm_losses(fb.load_npz("tvr_train"), fb.tvr_train_batch(), reference.vcmr_params(), hard)


@pytest.mark.slow
def test_vcmr_ranking_groups_and_scale():
  """Negatives from groups of videos = the loss of each group on its own;
  the ranking scale multiplies only the ranking terms."""
  batch = fb.tvr_train_batch()
  model, params = Hero(reference.model_config()), reference.vcmr_params()
  base = reference.vsm_settings()
  n = batch["frames"].shape[0]
  g = next(d for d in range(n // 2, 0, -1) if n % d == 0)   # a proper divisor
  grouped = dataclasses.replace(base, group_videos=g, ranking_loss_scale=0.25)
  total, m = vsm.vsm_loss(model, params, batch, grouped)
  parts = [vsm.vsm_loss(model, params, {k: v[i * g:(i + 1) * g] for k, v in batch.items()}, base)[1]
           for i in range(n // g)]
  for key in ("loss_neg_ctx", "loss_neg_q"):
    close(float(m[key][0]), sum(float(p[key][0]) for p in parts), key)
  st_ed = float(m["loss_st_ed"][0]) / n
  ranking = (base.lw_neg_ctx * float(m["loss_neg_ctx"][0]) + base.lw_neg_q * float(m["loss_neg_q"][0])) / n
  close(float(total), base.lw_st_ed * st_ed + 0.25 * ranking, "scaled total")


# --- TVQA (HeroForVideoQA) ---


def test_videoqa_batch_targets():
  z = fb.load_npz("videoqa")
  batch = fb.videoqa_batch()
  np.testing.assert_array_equal(batch["qa_target"], z["batch.targets"][:, 0])
  np.testing.assert_array_equal(batch["qa_st_ed"], z["batch.ts_targets"])
  ids = np.where(batch["qa_mask"] > 0, batch["qa_ids"], fb.special_ids().pad)
  ids = ids.reshape(-1, ids.shape[-1])
  np.testing.assert_array_equal(ids, z["batch.qa_input_ids"])


@pytest.mark.slow
def test_videoqa_outputs_and_losses():
  from hero_jax.objectives import videoqa
  z = fb.load_npz("videoqa")
  batch = fb.videoqa_batch()
  cfg = reference.model_config().replace(heads="videoqa")
  model, params = Hero(cfg), reference.videoqa_params()
  (logits, st, ed), state = model.apply({"params": params}, batch, method=Hero.videoqa_logits,
                                        mutable=["intermediates"])
  inter = state["intermediates"]
  v = inter["v_encoder"]
  close(np.asarray(v["matched_frames"][0]), z["out.matched_v_feats"], "matched frames")
  close(v["c_encoder"]["embedding"][0], z["out.c_frame_embeddings"], "temporal frame embeddings")
  close(v["qa_embeddings"][0], z["out.qa_embeddings"], "QA embeddings")
  close(v["fused_video_qa"][0], z["out.c_fused_video_qa"], "temporal transformer over [frames; QA]")
  close(inter["qa_pool_scores"][0], z["out.qa_pool_scores"], "qa_pool scores")
  close(inter["st_ed_pool_scores"][0], z["out.st_ed_pool_scores"], "st_ed_pool scores")
  close(inter["st_ed_raw"][0], z["out.st_ed_raw"], "st_ed head")
  close(st, z["out.st_logits"], "start logits")
  close(ed, z["out.ed_logits"], "end logits")
  close(logits, z["out.qa_logits"], "answer logits")
  total, metrics = videoqa.videoqa_loss(model, params, batch, videoqa.VideoQaSettings(
      lw_st_ed=fb.fixture_config()["tvqa"]["lw_st_ed"]))
  close(ratio(metrics["loss_qa"]), z["loss.qa"], "qa loss")
  temporal = (ratio(metrics["loss_st"]) + ratio(metrics["loss_ed"])) / 2
  close(temporal, z["loss.temporal"], "temporal loss")
  close(total, z["loss.total_train"], "total")


def test_videoqa_answer_copies_share_exactly():
  """Computing the frame embeddings and frame_transform once per question
  equals running every answer copy as its own video (the original's way)."""
  batch = fb.videoqa_batch()
  cfg = reference.model_config().replace(heads="videoqa")
  model, params = Hero(cfg), reference.videoqa_params()
  q, a = batch["qa_ids"].shape[:2]
  shared = model.apply({"params": params}, batch, method=lambda m, b: m.v_encoder.video_qa(b))
  # Each copy alone: a "question" with one answer and its own copy of the video.
  rep = lambda x: np.repeat(x, a, axis=0)  # noqa: E731
  single = {"frames": rep(batch["frames"]), "frame_mask": rep(batch["frame_mask"]),
            "row_frame_idx": rep(batch["row_frame_idx"]), "row_frame_mask": rep(batch["row_frame_mask"]),
            "qa_row_ids": batch["qa_row_ids"].reshape((q * a, 1) + batch["qa_row_ids"].shape[2:]),
            "qa_row_txt_mask": batch["qa_row_txt_mask"].reshape((q * a, 1) + batch["qa_row_ids"].shape[2:]),
            "qa_ids": batch["qa_ids"].reshape(q * a, 1, -1), "qa_mask": batch["qa_mask"].reshape(q * a, 1, -1)}
  alone = model.apply({"params": params}, single, method=lambda m, b: m.v_encoder.video_qa(b))
  # Equal up to float32 rounding (other batch shapes, other matmul blocking).
  np.testing.assert_allclose(np.asarray(shared).reshape(alone.shape), np.asarray(alone),
                             rtol=1e-6, atol=2e-6)
