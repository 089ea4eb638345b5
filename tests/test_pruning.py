"""``model.prune_last_layer``: the last cross-modal layer computes only the
positions a loss reads (the frame slots the temporal transformer takes, MLM's
masked tokens, video QA's frame slots) and changes no result. Losses, metrics
and gradients equal the full layer's on unpacked and packed rows (the parity
tests compare the pruned default with the original's numbers)."""

import jax
import numpy as np
import pytest

from hero_jax.model import config as model_config
from hero_jax.model import layers as L
from hero_jax.model.hero import Hero
from hero_jax.objectives import registry
from tests import fixture_batches as fb
from tests import reference

# The fixture-model tests are slow: two compilations of the fixture model per case.


def loss_and_grads(name, batch, prune):
  objective = registry.get(name)
  model = Hero(reference.model_config().replace(prune_last_layer=prune))
  fn = lambda p: objective.loss(model, p, batch, objective.make_settings())  # noqa: E731
  return jax.jit(jax.value_and_grad(fn, has_aux=True))(reference.params())


# MLM reads its masked tokens' slots, here of packed rows; VSM (as MFM and
# FOM) the frame slots, here of unpacked rows. The parity tests check the
# pruned layer of every objective on unpacked rows, test_packing packed
# against unpacked.
@pytest.mark.slow
@pytest.mark.parametrize("name,packed", [("mlm", True), ("vsm", False)])
def test_pruned_last_layer_gives_the_full_losses_and_gradients(name, packed):
  batch = fb.build_batch(name, sizes=fb.packed_sizes() if packed else None)
  (loss, metrics), grads = loss_and_grads(name, batch, prune=True)
  (full_loss, full_metrics), full_grads = loss_and_grads(name, batch, prune=False)
  np.testing.assert_allclose(loss, full_loss, rtol=1e-5, atol=1e-6)
  for key, value in full_metrics.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
  flat, full = jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(full_grads)
  for (path, g), f in zip(flat, full):
    np.testing.assert_allclose(g, f, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_pruned_video_qa_gives_the_full_logits():
  batch = fb.videoqa_batch()
  params = reference.videoqa_params()

  def logits(prune):
    model = Hero(reference.model_config().replace(heads="videoqa", prune_last_layer=prune))
    return model.apply({"params": params}, batch, method=Hero.videoqa_logits)

  for ours, full, what in zip(logits(True), logits(False), ("answer", "start", "end")):
    np.testing.assert_allclose(ours, full, rtol=1e-5, atol=1e-5, err_msg=what)


@pytest.mark.parametrize("packed", [False, True])
def test_kept_positions_equal_the_full_stack_gradients_included(packed):
  """``BertEncoder(keep=...)`` against the full stack's output at the kept
  positions, in two groups of rows, with a position kept twice (padding
  slots of a loss may share one) and a padding position kept."""
  cfg = model_config.tiny_config(hidden_dropout=0.0, attention_dropout=0.0)
  encoder = L.BertEncoder(cfg, num_layers=2)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 6, cfg.hidden_size)).astype(np.float32)   # 2 groups of 2 rows of 6
  mask = np.ones((4, 6), np.int32)
  mask[1, 4:] = 0
  segments = np.array([[1, 1, 2, 2, 2, 0]] * 4, np.int32) if packed else None
  keep = np.array([[0, 7, 7, 10, 3], [2, 11, 5, 5, 6]], np.int32)   # into each group's 12 slots
  weights = rng.normal(size=keep.shape + (cfg.hidden_size,)).astype(np.float32)
  params = encoder.init(jax.random.key(0), x, mask, True, segments)["params"]

  def kept(p, x):
    out = encoder.apply({"params": p}, x, mask, True, segments, keep=keep)
    return (out * weights).sum(), out

  def full(p, x):
    out = L.take_kept(encoder.apply({"params": p}, x, mask, True, segments), keep)
    return (out * weights).sum(), out

  (value, out), grads = jax.value_and_grad(kept, argnums=(0, 1), has_aux=True)(params, x)
  (full_value, full_out), full_grads = jax.value_and_grad(full, argnums=(0, 1), has_aux=True)(
      params, x)
  np.testing.assert_allclose(out, full_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(value, full_value, rtol=1e-5)
  for g, f in zip(jax.tree.leaves(grads), jax.tree.leaves(full_grads)):
    np.testing.assert_allclose(g, f, rtol=1e-4, atol=1e-5)
