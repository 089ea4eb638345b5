"""The paper's baseline encoders (``model.encoder`` = h_trm | f_trm) beside HERO.

Every objective and both downstream heads run on all three encoders, with
finite gradients that reach the encoder's first layer and the path frames take
in; the baselines learn; they share HERO's parameter names where they share
its modules, so HERO checkpoints load into them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hero_jax.convert import mapping
from hero_jax.model.config import ENCODERS, HeroConfig, tiny_config
from hero_jax.model.hero import Hero
from hero_jax.model.params import abstract_params, count_params, init_params
from hero_jax.objectives import registry
from hero_jax.train import init_from
from tests import fixture_batches as fb
from tests import reference

OBJECTIVES = ("mlm", "mfm-nce", "mffr", "fom", "vsm", "vcmr", "videoqa")
PRETRAINING = ("mlm", "mfm-nce", "mffr", "fom", "vsm")


def batch_for(name: str, videos: int = 2) -> dict:
  """A small batch of the fixture videos (two keep F-TRM's 851-slot rows cheap)."""
  if name == "vcmr":
    batch = fb.tvr_train_batch()
  elif name == "videoqa":
    batch = fb.videoqa_batch()
  else:
    batch = fb.build_batch(name)
  return {k: v[:videos] for k, v in batch.items()}


def config(encoder: str, name: str, **kw) -> HeroConfig:
  # The fixture's model is tiny_config's (vocab 320, 48-d frames).
  heads = registry.get(name).heads or "pretraining"
  return tiny_config(encoder=encoder, heads=heads, **kw)


def grad_of(grads, path: str):
  node = grads
  for key in path.split("/"):
    node = node[key]
  return node


# Where frames enter each encoder (what MFM, FOM, VSM, VCMR and QA must train).
FRAME_PATHS = {
    "hero": ("v_encoder/f_encoder/img_embeddings/img_linear/kernel",
             "v_encoder/frame_transform/net_1/kernel", "v_encoder/c_encoder/encoder/layer_0/output/dense/kernel"),
    "h_trm": ("v_encoder/frame_transform/net_1/kernel",
              "v_encoder/c_encoder/encoder/layer_0/output/dense/kernel"),
    "f_trm": ("v_encoder/f_encoder/img_embeddings/img_linear/kernel",
              "v_encoder/f_encoder/encoder/layer_2/output/dense/kernel"),
}
HEAD_PATHS = {
    "mlm": "v_encoder/f_encoder/lm_head/dense/kernel",
    "mfm-nce": "v_encoder/feat_regress/net_3/kernel",
    "mffr": "v_encoder/feat_regress/net_3/kernel",
    "fom": "v_encoder/fom_output/linear_2/kernel",
    "vsm": "q_feat_attn/modular_vector_mapping/kernel",
    "vcmr": "video_st_predictor/kernel",
    "videoqa": "qa_pred_head/linear_2/kernel",
}
FIRST_LAYER = "v_encoder/f_encoder/encoder/layer_0/attention/self/query/kernel"


# The edit loop (-m "not slow") keeps the baselines' own video-QA passes.
FAST = {("h_trm", "videoqa"), ("f_trm", "videoqa")}


# HERO's own passes are tests/test_model.py's (pre-training) and the fine-tuning
# tests'; MFFR reads the encoder exactly as MFM-NCE does (only the loss differs).
@pytest.mark.parametrize("encoder,name", [
    pytest.param(e, n, marks=() if (e, n) in FAST else pytest.mark.slow, id=f"{e}-{n}")
    for e in ("h_trm", "f_trm") for n in OBJECTIVES if n != "mffr"])
def test_every_objective_runs_forward_and_backward(encoder, name):
  cfg = config(encoder, name, hidden_dropout=0.1, attention_dropout=0.1)
  batch, objective = batch_for(name), registry.get(name)
  # VSM / VCMR: the local (start/end) branch on, so that its heads train too.
  settings = objective.make_settings({"drop_svmr_prob": 0.0} if name in ("vsm", "vcmr") else {})

  def loss_fn(p):
    return objective.loss(Hero(cfg), p, batch, settings, step=0, rng=jax.random.key(1),
                          deterministic=False)[0]
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(init_params(cfg))
  assert np.isfinite(float(loss)), float(loss)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  reached = [FIRST_LAYER, HEAD_PATHS[name]]
  if name == "mlm":
    # MLM trains the text side: HERO's cross-modal rows and F-TRM's flat
    # sequence hold frames, H-TRM's subtitle encoder never sees them.
    if encoder == "h_trm":
      assert not np.any(grad_of(grads, "v_encoder/frame_transform/net_1/kernel"))
    else:
      reached.append("v_encoder/f_encoder/img_embeddings/img_linear/kernel")
  else:
    reached += FRAME_PATHS[encoder]
  for path in reached:
    assert np.any(grad_of(grads, path)), f"{encoder} {name}: no gradient reaches {path}"


# The released mix's objectives (MFFR reads the same masked-frame predictions
# as MFM-NCE; its forward and backward pass is tested above).
LEARNING = ("mlm", "mfm-nce", "fom", "vsm")


def train_losses(encoder: str, steps: int) -> dict:
  """Per-objective losses of ``steps`` Adam steps on the sum of the
  pre-training losses of one fixed batch (dropout on)."""
  cfg = tiny_config(encoder=encoder, hidden_dropout=0.1, attention_dropout=0.1)
  model = Hero(cfg)
  batches = {name: batch_for(name) for name in LEARNING}
  objectives = {name: registry.get(name) for name in LEARNING}
  settings = {name: objectives[name].make_settings() for name in LEARNING}
  tx = optax.adam(1e-3)
  params = init_params(cfg)
  opt_state = tx.init(params)

  @jax.jit
  def step(p, s, rng):
    def loss_fn(q):
      losses = {name: objectives[name].loss(model, q, batches[name], settings[name], step=0,
                                            rng=jax.random.fold_in(rng, i), deterministic=False)[0]
                for i, name in enumerate(LEARNING)}
      return sum(losses.values()), losses
    (_, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, losses
  history = {name: [] for name in LEARNING}
  for i in range(steps):
    params, opt_state, losses = step(params, opt_state, jax.random.key(i))
    for name, value in losses.items():
      history[name].append(float(value))
  return history


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["h_trm", "f_trm"])
def test_baselines_learn_every_pretraining_objective(encoder):
  """20 steps take every loss down (mean of the last 3 steps over the first
  3: MLM ~0.66, FOM ~0.14, MFM-NCE and VSM < 0.04)."""
  history = train_losses(encoder, steps=20)
  ratio = {}
  for name, losses in history.items():
    assert np.all(np.isfinite(losses)), (name, losses)
    ratio[name] = np.mean(losses[-3:]) / np.mean(losses[:3])
  assert max(ratio.values()) < 0.75, (encoder, ratio)


def flat_params(cfg: HeroConfig) -> dict:
  return {mapping.path_str(k): v.shape for k, v in mapping.flatten(abstract_params(cfg)).items()}


def module_of(path: str) -> str:
  """'v_encoder/c_encoder/...' -> 'v_encoder/c_encoder'; one level deeper in f_encoder."""
  parts = path.split("/")
  return "/".join(parts[:3] if parts[1] == "f_encoder" else parts[:2])


@pytest.mark.parametrize("heads", ["pretraining", "videoqa"])
def test_baselines_share_hero_parameter_names(heads):
  """Shared modules keep HERO's names and shapes; only the modules the
  baseline lacks (or F-TRM's extra layers) differ."""
  hero = flat_params(tiny_config(heads=heads))
  for encoder in ("h_trm", "f_trm"):
    ours = flat_params(tiny_config(encoder=encoder, heads=heads))
    for path in set(ours) & set(hero):
      assert ours[path] == hero[path], path
    only_ours = {p.split("/")[3] for p in set(ours) - set(hero)}
    only_hero = {module_of(p) for p in set(hero) - set(ours)}
    if encoder == "h_trm":
      assert only_ours == set() and only_hero == {"v_encoder/f_encoder/img_embeddings"}
    else:
      # F-TRM: the flat transformer has cross_layers + temporal_layers = 2 + 1 layers.
      assert only_ours == {"layer_2"}
      assert only_hero == {"v_encoder/frame_transform", "v_encoder/c_encoder", "v_encoder/mask_embedding"}


@pytest.mark.slow
def test_base_parameter_counts_are_comparable():
  counts = {e: count_params(abstract_params(HeroConfig(encoder=e))) for e in ENCODERS}
  assert counts == {"hero": 121_037_262, "h_trm": 117_598_414, "f_trm": 116_689_870}


def test_encoder_field_is_validated():
  with pytest.raises(ValueError, match=r"model.encoder must be one of \('hero', 'h_trm', 'f_trm'\)"):
    HeroConfig(encoder="flat")
  assert HeroConfig().encoder == "hero"
  assert HeroConfig(encoder="f_trm").f_encoder_layers == 9
  assert HeroConfig(encoder="h_trm").f_encoder_layers == 6


@pytest.mark.parametrize("encoder", ["h_trm", "f_trm"])
def test_baselines_refuse_packed_rows(encoder):
  cfg = tiny_config(encoder=encoder)
  batch = dict(batch_for("mlm"), pack_src=np.zeros((2, 1, 1), np.int32))
  with pytest.raises(ValueError, match=rf"model.encoder='{encoder}' does not take packed"):
    jax.eval_shape(lambda p: Hero(cfg).apply({"params": p}, batch), abstract_params(cfg))


@pytest.mark.parametrize("encoder", ["h_trm", "f_trm"])
def test_an_original_hero_checkpoint_loads_into_the_baselines(encoder):
  """init_from's 'original' path: every parameter the baseline shares with
  HERO comes from the checkpoint; only F-TRM's extra layer keeps the init."""
  cfg = tiny_config(encoder=encoder)
  params = init_from.load(str(fb.fixture_dir() / "weights.npz"), cfg, fmt="original")
  hero = mapping.flatten(reference.params())
  fresh = set()
  for key, value in mapping.flatten(params).items():
    if key in hero:
      np.testing.assert_array_equal(value, hero[key], err_msg=mapping.path_str(key))
    else:
      fresh.add(module_of(mapping.path_str(key)) + "/" + key[3])
  assert fresh == (set() if encoder == "h_trm" else {"v_encoder/f_encoder/encoder/layer_2"})


@pytest.mark.parametrize("encoder", ["h_trm", "f_trm"])
def test_the_baselines_start_from_roberta(encoder):
  """HERO's pre-training start: F-TRM's flat transformer takes RoBERTa
  layers for all its cross_layers + temporal_layers layers (HERO's
  skip-layer rule), H-TRM's subtitle encoder the same layers as HERO's."""
  from hero_jax.convert import roberta
  from tests.test_convert import N_SRC_LAYERS, roberta_cfg, synthetic_roberta
  cfg = roberta_cfg().replace(encoder=encoder)
  src = synthetic_roberta(cfg)
  params, report = roberta.from_roberta(src, cfg, seed=0)
  layers = cfg.f_encoder_layers
  assert report.layer_map == roberta.select_layers(N_SRC_LAYERS, layers)
  assert len(report.layer_map) == (3 if encoder == "f_trm" else 2)
  encoder_params = params["v_encoder"]["f_encoder"]["encoder"]
  assert sorted(encoder_params) == [f"layer_{i}" for i in range(layers)]
  for s, d in report.layer_map.items():
    np.testing.assert_array_equal(encoder_params[f"layer_{d}"]["attention"]["self"]["query"]["kernel"],
                                  src[f"roberta.encoder.layer.{s}.attention.self.query.weight"].T)
