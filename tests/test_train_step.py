"""Optimizer as the original, task draws, mesh-independent steps, non-finite handling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hero_jax import layout
from hero_jax.data import build, pipeline, synthetic
from hero_jax.model import config as model_config
from hero_jax.model import params as params_lib
from hero_jax.model.hero import Hero
from hero_jax.objectives import registry
from hero_jax.train import optimizer, sharding, step as step_lib, tasks

OBJECTIVES = ("mlm", "mfm-nce", "mffr", "fom", "vsm")


def torch_style_adamw(params, grads_seq, lrs, *, b1=0.9, b2=0.98, eps=1e-6, wd=0.01, clip=1.0,
                      decay=None):
  """The original's update (optim/adamw.py) in numpy: clip, Adam, then p -= lr*wd*p."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v2 = {k: np.zeros_like(v) for k, v in p.items()}
  for t, (g, lr) in enumerate(zip(grads_seq, lrs), 1):
    norm = np.sqrt(sum(np.sum(x.astype(np.float64) ** 2) for x in g.values()))
    scale = min(1.0, clip / (norm + 1e-6))
    for k in p:
      gk = g[k] * scale
      m[k] = b1 * m[k] + (1 - b1) * gk
      v2[k] = b2 * v2[k] + (1 - b2) * gk * gk
      step_size = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
      p[k] = p[k] - step_size * m[k] / (np.sqrt(v2[k]) + eps)
      if decay[k]:
        p[k] = p[k] - lr * wd * p[k]
  return p


def test_adamw_matches_the_original_update():
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(size=(3, 4)).astype(np.float32),
            "bias": rng.normal(size=(4,)).astype(np.float32)}
  # Gradients near eps make the original's eps placement visible.
  grads_seq = [{"kernel": 3 * rng.normal(size=(3, 4)).astype(np.float32),
                "bias": 1e-6 * rng.normal(size=(4,)).astype(np.float32)} for _ in range(4)]
  tx, schedule = optimizer.hero_adamw(1e-2, warmup_steps=2, total_steps=10)
  state, p = tx.init(params), params
  for g in grads_seq:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  lrs = [float(schedule(i)) for i in range(4)]
  ref = torch_style_adamw(params, grads_seq, lrs, decay={"kernel": True, "bias": False})
  for k in params:
    np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)


def test_lr_mul_scales_the_heads_as_the_original_groups():
  """videoQA's groups 0/1 (outside v_encoder) take lr x lr_mul, decay included."""
  rng = np.random.default_rng(1)
  params = {"v_encoder": {"kernel": rng.normal(size=(3, 2)).astype(np.float32)},
            "qa_pool": {"kernel": rng.normal(size=(2, 1)).astype(np.float32)}}
  grads_seq = [jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
               for _ in range(3)]
  tx, schedule = optimizer.hero_adamw(1e-2, warmup_steps=1, total_steps=10, lr_mul=10.0,
                                      grad_clip=0.0)
  state, p = tx.init(params), params
  for g in grads_seq:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  lrs = [float(schedule(i)) for i in range(3)]
  for group, mul in (("v_encoder", 1.0), ("qa_pool", 10.0)):
    ref = torch_style_adamw({"kernel": params[group]["kernel"]},
                            [{"kernel": g[group]["kernel"]} for g in grads_seq],
                            [mul * lr for lr in lrs], decay={"kernel": True}, clip=1e9)
    np.testing.assert_allclose(p[group]["kernel"], ref["kernel"], rtol=1e-5, atol=1e-6)


def test_schedule_and_decay_mask_follow_the_original():
  schedule = optimizer.learning_rate(3e-5, warmup_steps=10000, total_steps=100000)
  # Update k is the original's global_step k + 1.
  assert float(schedule(0)) == pytest.approx(1e-8)  # 3e-9, clamped at 1e-8
  np.testing.assert_allclose(float(schedule(999)), 3e-5 * 1000 / 10000, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(9999)), 3e-5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(54999)), 3e-5 * 45000 / 90000, rtol=1e-6)
  assert float(schedule(100000)) == pytest.approx(1e-8)
  mask = optimizer.decay_mask(params_lib.abstract_params(model_config.tiny_config()))
  enc = mask["v_encoder"]
  assert not enc["f_encoder"]["img_embeddings"]["img_LayerNorm"]["scale"]
  assert not enc["f_encoder"]["encoder"]["layer_0"]["output"]["LayerNorm"]["scale"]
  assert not enc["f_encoder"]["encoder"]["layer_0"]["output"]["dense"]["bias"]
  assert enc["f_encoder"]["encoder"]["layer_0"]["output"]["dense"]["kernel"]
  assert enc["feat_regress"]["net_2"]["scale"]  # named net.2 in the original: decayed
  assert enc["mask_embedding"]["embedding"]


def test_task_draws_are_a_function_of_seed_and_step():
  task_list = [tasks.Task("tv", "mlm", 2.0), tasks.Task("tv", "fom", 1.0), tasks.Task("ht", "vsm", 1.0)]
  draws = [tasks.draw_task(task_list, 7, s) for s in range(4000)]
  assert draws == [tasks.draw_task(task_list, 7, s) for s in range(4000)]
  share = np.mean([d.objective == "mlm" for d in draws])
  assert abs(share - 0.5) < 0.03
  assert draws != [tasks.draw_task(task_list, 8, s) for s in range(4000)]


# One layer per stack keeps the compiles of the mesh test affordable on CPU.
CFG = model_config.tiny_config(frame_feat_dim=16, vocab_size=128, mlm_vocab_size=125,
                               cross_layers=1, temporal_layers=1, hidden_dropout=0.0,
                               attention_dropout=0.0)
SIZES = layout.LayoutSizes(max_frames=20, max_rows=16, max_row_frames=4, max_row_tokens=9,
                           queries=2, max_query_tokens=9, max_predictions=24)


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
  spec = synthetic.SyntheticSpec(train_videos=16, val_videos=2, feature_dim=16, max_frames=20)
  b = build.build("hero_synthetic/videos", str(tmp_path_factory.mktemp("tfds")), spec=spec)
  videos = pipeline.VideoSource(b.data_dir, "train", max_clip_len=20)
  ctx = pipeline.host_context(videos, SIZES, queries_per_video=2)
  out = {}
  for name in OBJECTIVES:
    it = pipeline.make_pipeline(videos, name, ctx, pipeline.PipelineOptions(batch_videos=8),
                                process_index=0, process_count=1)
    out[name] = {k: v[None] for k, v in next(it).items()}  # one micro-step
  return out


MESHES = ({"data": 1}, {"data": 8}, {"data": 4, "fsdp": 2}, {"data": 2, "model": 4})


@pytest.fixture(scope="module")
def states():
  """A fresh state per mesh (the train step donates its input: steps get copies)."""
  tx, _ = optimizer.hero_adamw(1e-3, 2, 10)
  out = {}
  for shape in MESHES:
    devices = jax.devices()[:1] if shape == {"data": 1} else jax.devices()
    mesh = sharding.make_mesh(shape, devices)
    out[str(shape)] = (mesh, step_lib.create_state(CFG, tx, mesh, sharding.DEFAULT_RULES, 0))
  return tx, out


def one_step(objective, batch, mesh, state, tx, overrides=None):
  rules = sharding.DEFAULT_RULES
  if overrides is None:
    overrides = {"hard_negative_start_step": 0, "hard_pool_size": 3} if objective == "vsm" else {}
  settings = registry.get(objective).make_settings(overrides)
  run = step_lib.make_train_step(Hero(CFG), registry.get(objective), settings, tx, mesh, rules,
                                 step_lib.state_shardings(state), accum_steps=1)
  arrays = pipeline.make_global_batch(batch, sharding.batch_sharding(mesh, leading_axes=1))
  new_state, out = run(jax.tree.map(jnp.copy, state), arrays, jax.random.key(3))
  return jax.device_get((new_state.params, out))


def check_meshes(objective, batch, states, meshes, overrides=None):
  tx, by_mesh = states
  ref_params, ref_out = one_step(objective, batch, *by_mesh[str(meshes[0])], tx, overrides)
  assert ref_out["finite"]
  for shape in meshes[1:]:
    params, out = one_step(objective, batch, *by_mesh[str(shape)], tx, overrides)
    for name, (total, count) in ref_out["metrics"].items():
      np.testing.assert_allclose(out["metrics"][name][0], total, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{shape} {name}")
      np.testing.assert_allclose(out["metrics"][name][1], count, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 params, ref_params)


# Each objective against one sharded mesh (each mesh taken by at least one
# objective): every objective on every mesh cost 20 compiles, and the model
# code the meshes shard is the same for all objectives. Negatives across the
# batch on 8 data shards: MFM-NCE here, VSM's ranking in the VCMR test below.
# MFFR shares MFM-NCE's batch and model path (only the loss differs).
MESHES_OF = {"mlm": [MESHES[2]], "mfm-nce": [MESHES[1]],
             "fom": [MESHES[2]], "vsm": [MESHES[3]]}


@pytest.mark.slow
@pytest.mark.parametrize("objective", sorted(MESHES_OF))
def test_meshes_give_the_same_losses_and_updates(batches, states, objective):
  assert len(jax.devices()) == 8
  check_meshes(objective, batches[objective], states, [MESHES[0]] + MESHES_OF[objective])


@pytest.mark.slow
def test_vcmr_negative_groups_do_not_depend_on_the_mesh(tmp_path, states):
  """TVR fine-tuning: one query per example, negatives from groups of 4
  examples, ranking scaled, hard negatives on: the same on 1 and 8 devices."""
  spec = synthetic.SyntheticSpec(train_videos=16, val_videos=2, feature_dim=16, max_frames=20)
  videos = build.build("hero_synthetic/videos", str(tmp_path), spec=spec).data_dir
  tvr = build.build("hero_synthetic/tvr", str(tmp_path), spec=spec).data_dir
  join = pipeline.QueryJoin(pipeline.QuerySource(tvr, "train"),
                            pipeline.VideoCorpus(videos, max_clip_len=20))
  sizes = layout.LayoutSizes(**{**SIZES.__dict__, "queries": 1})
  ctx = pipeline.host_context(join, sizes, queries_per_video=1)
  it = pipeline.make_pipeline(join, "vcmr", ctx, pipeline.PipelineOptions(batch_videos=8),
                              process_index=0, process_count=1)
  batch = {k: v[None] for k, v in next(it).items()}
  check_meshes("vcmr", batch, states, MESHES[:2], {
      "group_videos": 4, "ranking_loss_scale": 0.125, "hard_negative_start_step": 0,
      "hard_pool_size": 2, "drop_svmr_prob": 0.0})


def test_fsdp_and_tensor_rules_shard_the_parameters():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
  specs = sharding.param_shardings(params_lib.boxed_abstract_variables(CFG), mesh,
                                   sharding.DEFAULT_RULES)
  layer = specs["v_encoder"]["f_encoder"]["encoder"]["layer_0"]
  assert tuple(layer["intermediate"]["dense"]["kernel"].spec) == ("fsdp", "model")
  assert tuple(layer["output"]["dense"]["kernel"].spec) == ("model", "fsdp")


@pytest.mark.slow
def test_non_finite_gradients_skip_the_update(batches):
  batch = dict(batches["mffr"])
  batch["frames"] = batch["frames"].copy()
  batch["frames"][0, 0, 0, 0] = np.nan
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  tx, _ = optimizer.hero_adamw(1e-3, 2, 10)
  state = step_lib.create_state(CFG, tx, mesh, sharding.DEFAULT_RULES, seed=0)
  before = jax.device_get(state.params)
  run = step_lib.make_train_step(Hero(CFG), registry.get("mffr"), None, tx, mesh,
                                 sharding.DEFAULT_RULES, step_lib.state_shardings(state), 1)
  new_state, out = run(state, pipeline.make_global_batch(
      batch, sharding.batch_sharding(mesh, leading_axes=1)), jax.random.key(0))
  assert not bool(out["finite"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(new_state.params), before)


def test_mesh_shape_errors():
  with pytest.raises(ValueError, match="needs 16 devices, there are 8"):
    sharding.make_mesh({"data": 16})
  with pytest.raises(ValueError, match="unknown axes"):
    sharding.make_mesh({"batch": 8})
  assert dict(sharding.make_mesh({"data": -1, "model": 2}).shape) == {"data": 4, "fsdp": 1,
                                                                       "model": 2}
  assert sharding.mesh_devices(0) == jax.devices()
  assert sharding.mesh_devices(1) == jax.devices()[:1]
  with pytest.raises(ValueError, match=r"config.mesh.num_devices=9 must be 0 \(all\) or 1..8"):
    sharding.mesh_devices(9)


@pytest.mark.slow
def test_accumulated_micro_batches_sum_their_gradients(batches):
  """accum_steps=2 == the optimizer applied to grad(micro 1) + grad(micro 2)."""
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  tx, _ = optimizer.hero_adamw(1e-3, 2, 10)
  state = step_lib.create_state(CFG, tx, mesh, rules, seed=0)
  fom = registry.get("fom")
  micro = {k: v[0] for k, v in batches["fom"].items()}
  noise = np.random.default_rng(0).normal(size=micro["frames"].shape).astype(np.float32)
  second = dict(micro, frames=micro["frames"] + 0.5 * noise)
  both = {k: np.stack([micro[k], second[k]]) for k in micro}
  params = jax.device_get(state.params)
  run = step_lib.make_train_step(Hero(CFG), fom, None, tx, mesh, rules,
                                 step_lib.state_shardings(state), accum_steps=2)
  new_state, out = run(jax.tree.map(jnp.copy, state), pipeline.make_global_batch(
      both, sharding.batch_sharding(mesh, leading_axes=1)), jax.random.key(5))
  rngs = jax.random.split(jax.random.key(5), 2)
  grads, totals = None, 0.0
  loss_and_grad = jax.jit(jax.value_and_grad(
      lambda p, b, r: fom.loss(Hero(CFG), p, b, None, step=0, rng=r, deterministic=False),
      has_aux=True))
  for b, r in zip((micro, second), rngs):
    (_, metrics), g = loss_and_grad(params, b, r)
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    totals += float(metrics["loss"][0])
  updates, _ = tx.update(grads, tx.init(params), params)
  expected = optax.apply_updates(params, updates)
  np.testing.assert_allclose(float(out["metrics"]["loss"][0]), totals, rtol=1e-5)
  # Summed, not averaged: the norm tells (Adam's update hardly depends on the scale).
  np.testing.assert_allclose(float(out["grad_norm"]), float(optax.tree.norm(grads)), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               jax.device_get(new_state.params), expected)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_state(batches):
  cfg = CFG.replace(dtype="bfloat16")
  mesh = sharding.make_mesh({"data": 8})
  tx, _ = optimizer.hero_adamw(1e-3, 2, 10)
  state = step_lib.create_state(cfg, tx, mesh, sharding.DEFAULT_RULES, seed=0)
  run = step_lib.make_train_step(Hero(cfg), registry.get("mlm"), None, tx, mesh,
                                 sharding.DEFAULT_RULES, step_lib.state_shardings(state), 1)
  new_state, out = run(state, pipeline.make_global_batch(
      batches["mlm"], sharding.batch_sharding(mesh, leading_axes=1)), jax.random.key(0))
  assert bool(out["finite"])
  dtypes = {x.dtype for x in jax.tree.leaves((new_state.params, new_state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype("float32")}


@pytest.mark.slow
def test_f32_accumulated_bfloat16_step_shards_like_xlas(batches):
  """model.bf16_dots="f32_accumulate" (matmul's custom VJPs) on an FSDP x
  tensor mesh: the step's loss and gradient norm are those of XLA's own
  bfloat16 dots on one device, within bfloat16's rounding."""
  tx, _ = optimizer.hero_adamw(1e-3, 2, 10)
  results = []
  for shape, dots in (({"data": 1}, "xla"), ({"data": 2, "fsdp": 2, "model": 2}, "f32_accumulate")):
    cfg = CFG.replace(dtype="bfloat16", bf16_dots=dots)
    mesh = sharding.make_mesh(shape, jax.devices()[:1] if shape == {"data": 1} else jax.devices())
    state = step_lib.create_state(cfg, tx, mesh, sharding.DEFAULT_RULES, seed=0)
    run = step_lib.make_train_step(Hero(cfg), registry.get("mlm"), None, tx, mesh,
                                   sharding.DEFAULT_RULES, step_lib.state_shardings(state), 1)
    _, out = run(state, pipeline.make_global_batch(
        batches["mlm"], sharding.batch_sharding(mesh, leading_axes=1)), jax.random.key(0))
    results.append(jax.device_get((out["metrics"]["loss"], out["grad_norm"])))
  (loss, grad_norm), (ref_loss, ref_grad_norm) = results[1], results[0]
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-2)
  np.testing.assert_allclose(grad_norm, ref_grad_norm, rtol=2e-2)


@pytest.mark.slow
def test_checkpoint_restores_onto_another_mesh(tmp_path):
  from hero_jax.train import checkpointing
  tx, _ = optimizer.hero_adamw(1e-3, 2, 10)
  saved_mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  state = step_lib.create_state(CFG, tx, saved_mesh, sharding.DEFAULT_RULES, seed=1)
  mngr = checkpointing.manager(str(tmp_path), keep=2)
  checkpointing.save(mngr, 3, state, {"0:mlm": {"batches": 3}}, {"seed": 1})
  mngr.wait_until_finished()
  other_mesh = sharding.make_mesh({"data": 2, "model": 4})
  like = step_lib.create_state(CFG, tx, other_mesh, sharding.DEFAULT_RULES, seed=2)
  restored, data_state, step = checkpointing.restore(checkpointing.manager(str(tmp_path), 2), like)
  assert step == 3 and data_state == {"0:mlm": {"batches": 3}}
  kernel = restored.params["v_encoder"]["f_encoder"]["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
  assert kernel.sharding.mesh.shape["model"] == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))


@pytest.mark.slow
def test_training_starts_from_a_converted_hero_checkpoint(tmp_path):
  import ml_collections
  from hero_jax.convert.checkpoint import save_hero_checkpoint
  from hero_jax.train import loop
  params = params_lib.init_params(CFG, seed=4)
  save_hero_checkpoint(tmp_path / "hero", params, CFG)
  config = ml_collections.ConfigDict({"seed": 0, "init_from": str(tmp_path / "hero"),
                                      "init_format": "auto"})
  loaded = loop.init_params(config, CFG.replace(dtype="bfloat16"))
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(params))
  with pytest.raises(ValueError, match="does not fit config.model"):
    loop.init_params(config, CFG.replace(hidden_size=32))
  config.init_format = "onnx"
  with pytest.raises(ValueError, match="init_format must be one of"):
    loop.init_params(config, CFG)


def test_offloaded_optimizer_state_stays_on_the_host_and_changes_nothing(batches, tmp_path):
  """train.offload_opt_state: the Adam moments live in pinned host memory between
  steps (and through a checkpoint), and the steps are the same."""
  from hero_jax.train import checkpointing
  mesh = sharding.make_mesh({"data": 2}, jax.devices()[:2])
  tx, _ = optimizer.hero_adamw(1e-3, 2, 10)
  batch = pipeline.make_global_batch(batches["mlm"], sharding.batch_sharding(mesh, leading_axes=1))

  def two_steps(offload):
    state = step_lib.create_state(CFG, tx, mesh, sharding.DEFAULT_RULES, seed=0,
                                  offload_opt_state=offload)
    run = step_lib.make_train_step(Hero(CFG), registry.get("mlm"), None, tx, mesh,
                                   sharding.DEFAULT_RULES, step_lib.state_shardings(state), 1)
    for i in range(2):
      state, _ = run(state, batch, jax.random.key(i))
    return state
  state, offloaded = two_steps(False), two_steps(True)
  kinds = lambda tree: {x.sharding.memory_kind for x in jax.tree.leaves(tree)}  # noqa: E731
  assert kinds(offloaded.opt_state) == {"pinned_host"}
  assert kinds(offloaded.params) == kinds(state.params) != {"pinned_host"}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(offloaded), jax.device_get(state))
  mngr = checkpointing.manager(str(tmp_path), keep=1)
  checkpointing.save(mngr, 2, offloaded, {}, {})
  mngr.wait_until_finished()
  restored, _, _ = checkpointing.restore(mngr, offloaded)
  assert kinds(restored.opt_state) == {"pinned_host"}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))


def test_adamw_state_keeps_the_chain_layout_and_takes_a_given_norm():
  """The fused update keeps the state layout of the optax chain it replaced
  (clip, Adam, lr, decay), so checkpoints restore; a norm handed in by the
  step gives the update computed without it."""
  params = {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros((4,))}
  grads = {"kernel": jnp.full((3, 4), 2.0), "bias": jnp.full((4,), -1.0)}
  tx, _ = optimizer.hero_adamw(1e-2, warmup_steps=2, total_steps=10)
  state = tx.init(params)
  assert [type(s).__name__ for s in state] == [
      "EmptyState", "_AdamState", "ScaleByScheduleState", "ScaleByScheduleState"]
  no_decay, _ = optimizer.hero_adamw(1e-2, 2, 10, weight_decay=0.0, grad_clip=0.0)
  assert [type(s).__name__ for s in no_decay.init(params)] == ["_AdamState", "ScaleByScheduleState"]
  computed, _ = tx.update(grads, state, params)
  given, _ = tx.update(grads, state, params, grad_norm=optax.tree.norm(grads))
  for a, b in zip(jax.tree.leaves(computed), jax.tree.leaves(given)):
    np.testing.assert_array_equal(a, b)
