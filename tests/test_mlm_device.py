"""``mlm-device``: the MLM corruption drawn in the step is a valid HERO corruption, with the
host draw's distribution, overflow counted, and the objective trains and evaluates."""

import jax
import numpy as np
import optax
import pytest

from hero_jax import layout
from hero_jax.model.config import tiny_config
from hero_jax.model.hero import Hero
from hero_jax.model.params import init_params
from hero_jax.objectives import host, mlm, mlm_device, registry

MASK, LO, HI = 124, 4, 20   # a small vocabulary: the unigram distribution is learnable
SIZES = layout.LayoutSizes(max_frames=12, max_rows=6, max_row_frames=3, max_row_tokens=10,
                           max_predictions=24)
CTX = host.HostContext(sizes=SIZES, ids=host.SpecialIds(mask=MASK, v_range=(LO, HI)),
                       max_txt_len=9)


def videos(n: int, seed: int = 0) -> list:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    frames = int(rng.integers(4, 13))
    rows = int(rng.integers(1, 7))
    sub_ids = [rng.integers(LO, HI, size=int(rng.integers(0 if r else 1, 12))) for r in range(rows)]
    sub_frames = [np.array([min(r, frames - 1)]) for r in range(rows)]
    out.append(layout.VideoExample(f"v{i}", rng.normal(size=(frames, 48)).astype(np.float32),
                                   sub_ids, sub_frames))
  return out


def batch_of(vids) -> dict:
  return layout.stack_examples([mlm_device.make_mlm_rows_example(v, None, CTX) for v in vids])


def test_the_draw_is_a_valid_corruption():
  batch = batch_of(videos(32))
  out = jax.device_get(mlm_device.draw(batch, jax.random.key(0), mlm_device.MlmDeviceSettings(
      max_predictions=SIZES.max_predictions)))
  ids, txt, t = batch["row_ids"], batch["row_txt_mask"], SIZES.max_row_tokens
  for v in range(len(ids)):
    k = int(out["mlm_weights"][v].sum())
    positions = out["mlm_positions"][v, :k]
    assert np.all(np.diff(positions) > 0)                        # row-major, as the host places them
    assert np.all(positions % t >= 1) and np.all(txt[v].reshape(-1)[positions] == 1)
    np.testing.assert_array_equal(out["mlm_labels"][v, :k], ids[v].reshape(-1)[positions])
    assert not out["mlm_weights"][v, k:].any() and out["mlm_overflow"][v] == 0
    chosen = np.zeros(ids[v].size, bool)
    chosen[positions] = True
    corrupted, original = out["row_ids"][v].reshape(-1), ids[v].reshape(-1)
    np.testing.assert_array_equal(corrupted[~chosen], original[~chosen])   # [CLS], PAD, kept
    at = corrupted[chosen]
    assert np.all((at == MASK) | ((at >= LO) & (at < HI)))
    rows_with_tokens = txt[v, :, 1:].any(-1)
    assert np.all(chosen.reshape(ids[v].shape).any(-1) == rows_with_tokens)  # at least one per row


def shares(chosen, inputs, original) -> np.ndarray:
  """(chosen, MASK, random, kept) shares of the real tokens / of the chosen ones."""
  n = chosen.sum()
  masked = (inputs == MASK) & chosen
  kept = (inputs == original) & chosen & ~masked
  return np.array([n / chosen.size, masked.sum() / n, (n - masked.sum() - kept.sum()) / n,
                   kept.sum() / n])


def test_the_draw_has_the_host_draws_distribution():
  vids = videos(64, seed=1)
  batch = batch_of(vids)
  settings = mlm_device.MlmDeviceSettings(max_predictions=SIZES.max_predictions)
  real = (batch["row_txt_mask"] == 1) & (np.arange(SIZES.max_row_tokens) >= 1)
  draw = jax.jit(lambda key: mlm_device.draw(batch, key, settings)["row_ids"])
  dev = [np.asarray(draw(jax.random.key(i))) for i in range(60)]
  original = np.concatenate([batch["row_ids"][real]] * len(dev))
  dev_inputs = np.concatenate([d[real] for d in dev])
  # Random ids may equal the original (1 in 16 here): chosen = differs or drawn as MASK /
  # random; compare the observable shares instead, the same way for both draws.
  host_in, host_orig = [], []
  for seed in range(60):
    rng = np.random.default_rng(seed)
    for v in vids:
      c = mlm.draw_mlm_choices(v, rng, CTX)
      host_in.append(np.concatenate(c.inputs))
      host_orig.append(np.concatenate(mlm._truncated_ids(v, CTX)))
  host_in, host_orig = np.concatenate(host_in), np.concatenate(host_orig)

  def observed(inputs, orig):
    changed = inputs != orig
    return np.array([np.mean(inputs == MASK), np.mean(changed & (inputs != MASK))])
  np.testing.assert_allclose(observed(dev_inputs, original), observed(host_in, host_orig),
                             atol=0.006)


def test_predictions_past_k_are_dropped_and_counted():
  batch = batch_of(videos(8, seed=2))
  out = mlm_device.draw(batch, jax.random.key(1), mlm_device.MlmDeviceSettings(
      mask_prob=1.0, max_predictions=3))
  tokens = ((batch["row_txt_mask"] == 1) & (np.arange(SIZES.max_row_tokens) >= 1)).sum((1, 2))
  np.testing.assert_array_equal(np.asarray(out["mlm_weights"]).sum(-1), np.minimum(tokens, 3))
  np.testing.assert_array_equal(np.asarray(out["mlm_overflow"]), np.maximum(tokens - 3, 0))


def test_videos_without_text_are_skipped_and_settings_checked():
  empty = layout.VideoExample("empty", np.zeros((2, 48), np.float32), [np.array([], int)],
                              [np.array([0])])
  with pytest.raises(registry.SkipExample, match="mlm_no_tokens"):
    mlm_device.make_mlm_rows_example(empty, None, CTX)
  with pytest.raises(ValueError, match="objectives.mlm_device.mask_prob"):
    registry.get("mlm-device").make_settings({"mask_prob": 0.0})


@pytest.mark.slow
def test_the_objective_trains_and_evaluates_deterministically():
  cfg = tiny_config(vocab_size=128, mlm_vocab_size=125, cross_layers=1, temporal_layers=1)
  model, objective = Hero(cfg), registry.get("mlm-device")
  settings = objective.make_settings({"max_predictions": SIZES.max_predictions})
  batch = batch_of(videos(16, seed=3))
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, i):
    def loss_fn(p):
      return objective.loss(model, p, batch, settings, step=i,
                            rng=jax.random.fold_in(jax.random.key(0), i), deterministic=False)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = init_params(cfg)
  opt_state = tx.init(params)
  losses = []
  for i in range(40):
    params, opt_state, loss = step(params, opt_state, i)
    losses.append(float(loss))
  # A fresh corruption each step: the unigram of 16 ids is what can be learnt (ln 16 = 2.8).
  assert np.mean(losses[-5:]) < 0.75 * losses[0], losses

  # Jitted: an eager model call dispatches (and compiles) op by op.
  evaluate = jax.jit(lambda at: objective.loss(model, params, batch, settings, step=at)[1]["loss"])
  first, again, other = (tuple(map(float, evaluate(at))) for at in (3, 3, 4))
  assert first == again and first != other
