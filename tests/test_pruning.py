"""``model.prune_last_layer``: the last cross-modal layer computes only the
positions a loss reads (the frame slots the temporal transformer takes, MLM's
masked tokens, video QA's frame slots) and changes no result. Losses, metrics
and gradients equal the full layer's on unpacked and packed rows (the parity
tests compare the pruned default with the original's numbers)."""

import jax
import numpy as np
import pytest

from hero_jax.model.hero import Hero
from hero_jax.objectives import registry
from tests import fixture_batches as fb
from tests import reference

pytestmark = pytest.mark.slow   # two compilations of the fixture model per case


def loss_and_grads(name, batch, prune):
  objective = registry.get(name)
  model = Hero(reference.model_config().replace(prune_last_layer=prune))
  fn = lambda p: objective.loss(model, p, batch, objective.make_settings())  # noqa: E731
  return jax.jit(jax.value_and_grad(fn, has_aux=True))(reference.params())


# MLM reads its masked tokens' slots, here of packed rows; VSM (as MFM and
# FOM) the frame slots, here of unpacked rows. The parity tests check the
# pruned layer of every objective on unpacked rows, test_packing packed
# against unpacked.
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


def test_pruned_video_qa_gives_the_full_logits():
  batch = fb.videoqa_batch()
  params = reference.videoqa_params()

  def logits(prune):
    model = Hero(reference.model_config().replace(heads="videoqa", prune_last_layer=prune))
    return model.apply({"params": params}, batch, method=Hero.videoqa_logits)

  for ours, full, what in zip(logits(True), logits(False), ("answer", "start", "end")):
    np.testing.assert_allclose(ours, full, rtol=1e-5, atol=1e-5, err_msg=what)
