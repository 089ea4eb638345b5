"""The MFM mask and the FOM reordering drawn in the step follow HERO's rules and build the
host path's fields."""

import dataclasses
import jax
import numpy as np
import pytest

from hero_jax import layout
from hero_jax.objectives import fom, fom_device, host, mfm_device, registry, vsm, vsm_device

F = 8


def frame_masks(n: int, seed: int = 0) -> tuple:
  """(frames per video [n], frame_mask int32 [n, F]); the first three videos
  have 0, 1 and F frames."""
  frames = np.random.default_rng(seed).integers(0, F + 1, size=n)
  frames[:3] = (0, 1, F)
  return frames, (np.arange(F)[None, :] < frames[:, None]).astype(np.int32)


def test_the_device_mfm_mask_follows_heros_rule():
  frames, frame_mask = frame_masks(512)
  masks = np.stack([np.asarray(mfm_device.draw_mask(frame_mask, jax.random.key(i), 0.15))
                    for i in range(20)])
  assert not (masks & (1 - frame_mask)).any()                      # real frames only
  assert np.all(masks.any(-1) == (frames > 0))                     # at least one, if any frame
  assert 0.13 < masks[:, frames == F].mean() < 0.2                 # 0.15 + the forced share
  assert masks[:, frames == 1, 0].all()
  with pytest.raises(ValueError, match="objectives.mffr_device.mask_prob must be in"):
    registry.get("mffr-device").make_settings({"mask_prob": 1.5})


def host_fields(frames: int, source: np.ndarray, targets: np.ndarray) -> dict:
  """``fom.build_fom_example``'s fields for the choices a device draw made."""
  moved_to = np.flatnonzero(targets >= 0)
  selected = targets[moved_to]                   # the frame now at moved_to[j] came from there
  order = np.argsort(selected)
  choices = fom.FomChoices(selected=selected[order], new_positions=moved_to[order])
  video = layout.VideoExample("v", np.zeros((frames, 4), np.float32), [np.array([1])],
                              [np.arange(frames)])
  ctx = host.HostContext(sizes=layout.LayoutSizes(max_frames=F, max_rows=2, max_row_frames=F,
                                                  max_row_tokens=4))
  return fom.build_fom_example(video, choices, ctx)


def test_the_device_fom_reordering_builds_the_host_fields():
  frames, frame_mask = frame_masks(256, seed=1)
  swaps, pairs, chosen = 0, 0, []
  for i in range(10):
    out = jax.device_get(fom_device.draw(frame_mask, jax.random.key(i), 0.3))
    for v in range(len(frames)):
      source, targets = out["fom_source"][v], out["fom_targets"][v]
      want = host_fields(int(frames[v]), source, targets)
      np.testing.assert_array_equal(source, want["fom_source"])
      np.testing.assert_array_equal(targets, want["fom_targets"])
      labelled = targets >= 0
      assert not (labelled & (frame_mask[v] == 0)).any()
      chosen.append(labelled[:frames[v]])
      if labelled.sum() == 2:                    # a uniform permutation swaps 2 half the time
        pairs += 1
        swaps += int(np.any(source[labelled] != np.flatnonzero(labelled)))
  assert abs(np.concatenate(chosen).mean() - 0.3) < 0.03
  assert pairs > 100 and abs(swaps / pairs - 0.5) < 0.12
  with pytest.raises(ValueError, match="objectives.fom_device.mask_prob"):
    registry.get("fom-device").make_settings({"mask_prob": 0.0})


@pytest.mark.slow
# mffr-device draws as mfm-nce-device does; only the (parity-tested) loss differs.
@pytest.mark.parametrize("name", ["mfm-nce-device", "fom-device"])
def test_finite_gradients_and_repeatable_evaluation(name):
  from hero_jax.model.config import tiny_config
  from hero_jax.model.hero import Hero
  from hero_jax.model.params import init_params
  cfg = tiny_config(frame_feat_dim=16, cross_layers=1, fom_num_classes=F)
  rng = np.random.default_rng(0)
  ctx = host.HostContext(sizes=layout.LayoutSizes(max_frames=F, max_rows=4, max_row_frames=4,
                                                  max_row_tokens=6))
  objective = registry.get(name)
  videos = [layout.VideoExample(f"v{i}", rng.normal(size=(n, 16)).astype(np.float32),
                                [rng.integers(4, 40, size=4), rng.integers(4, 40, size=3)],
                                [np.arange(n // 2), np.arange(n // 2, n)])
            for i, n in enumerate(rng.integers(2, F + 1, size=8))]
  batch = layout.stack_examples([objective.make_example(v, None, ctx) for v in videos])
  model, settings, params = Hero(cfg), objective.make_settings(), init_params(cfg)

  @jax.jit
  def loss_and_grads(p, at):
    def loss(q):
      return objective.loss(model, q, batch, settings, step=at, rng=jax.random.key(at),
                            deterministic=False)[0]
    return jax.value_and_grad(loss)(p)
  value, grads = loss_and_grads(params, 0)
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(jax.device_get(grads)))

  # Jitted: an eager model call dispatches (and compiles) op by op.
  evaluate = jax.jit(lambda at: objective.loss(model, params, batch, settings, step=at)[1]["loss"][0])
  first, again, other = (float(evaluate(at)) for at in (3, 3, 4))
  assert first == again and first != other


VSM_SIZES = layout.LayoutSizes(max_frames=F, max_rows=6, max_row_frames=3, max_row_tokens=6,
                               queries=3, max_query_tokens=5, packed_rows=3, packed_width=24)
VSM_CTX = host.HostContext(sizes=VSM_SIZES, queries_per_video=3, max_txt_len=4)


def vsm_videos(n: int, seed: int) -> list:
  """Videos of 1-6 subtitles of 0-6 words over 0-2 frames each (some unmatched)."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    frames = int(rng.integers(2, F + 1))
    subs = int(rng.integers(1, 7))
    sub_frames = [np.sort(rng.choice(frames, size=int(rng.integers(0, 3)), replace=False))
                  for _ in range(subs)]
    sub_frames[int(rng.integers(subs))] = np.array([int(rng.integers(frames))])  # one matched
    out.append(layout.VideoExample(
        f"v{i}", rng.normal(size=(frames, 16)).astype(np.float32),
        [rng.integers(4, 40, size=int(rng.integers(0, 7))) for _ in range(subs)], sub_frames))
  return out


def test_the_device_vsm_draw_builds_the_host_fields():
  videos = vsm_videos(64, seed=2)
  batch = layout.stack_examples([vsm_device.make_vsm_rows_example(v, None, VSM_CTX)
                                 for v in videos])
  picked = {(v, s): 0 for v, video in enumerate(videos) for s in vsm.matched_subtitles(video)}
  draws = 40
  for i in range(draws):
    subs = np.asarray(vsm_device.draw_subtitles(batch["vsm_matched"], jax.random.key(i), 3))
    out = jax.device_get(vsm_device.draw(batch, jax.random.key(i), 3))
    for v, video in enumerate(videos):
      matched = vsm.matched_subtitles(video)
      sampled = np.unique(subs[v])
      assert len(sampled) == min(3, len(matched)) and set(sampled) <= set(matched)
      for s in sampled:
        picked[v, s] += 1
      want = vsm.build_vsm_example(video, vsm.VsmChoices(sampled=sampled), VSM_CTX)
      for key in ("query_ids", "query_mask", "query_st_ed", "row_ids", "row_txt_mask"):
        np.testing.assert_array_equal(out[key][v], want[key], err_msg=key)
  # Each matched subtitle is drawn with probability min(Q, m) / m.
  share = np.array([n / draws for n in picked.values()])
  expected = np.array([min(3, len(vsm.matched_subtitles(videos[v]))) /
                       len(vsm.matched_subtitles(videos[v])) for v, _ in picked])
  assert abs(np.mean(share - expected)) < 0.03 and np.all(np.abs(share - expected) < 0.35)
  with pytest.raises(ValueError, match="need at least as many rows"):
    vsm_device.draw_subtitles(batch["vsm_matched"][:, :2], jax.random.key(0), 3)
  from hero_jax.train import tasks
  settings = {"vsm-device": registry.get("vsm-device").make_settings({"queries_per_video": 5})}
  with pytest.raises(ValueError, match=r"vsm_device.queries_per_video \(5\) must equal "
                     r"config.layout.queries \(3\)"):
    tasks.check_settings_fit_layout(settings, VSM_SIZES)
  with pytest.raises(registry.SkipExample, match="vsm_no_matched_subtitle"):
    vsm_device.make_vsm_rows_example(layout.VideoExample(
        "none", np.zeros((2, 16), np.float32), [np.array([5])], [np.array([], int)]), None, VSM_CTX)


@pytest.mark.parametrize("group,prune", [(1, True), (4, False), (4, True)])
def test_the_device_vsm_draw_gives_the_host_paths_losses_on_packed_rows(group, prune):
  """Text taken out of packed rows (their slots leave the segment) gives the
  losses of the host path's shorter rows, packed anew; also with the rows of
  ``group`` videos packed together (``layout.pack_videos``). The drawn
  queries run in the packed rows, in their rows' text slots and the free slot
  kept after each matched row (``row_spare``): the host path's loss, metrics
  and gradients, with the last layer pruned or not; with
  ``host.pack_queries=False`` they run beside the rows, and give them too."""
  from hero_jax import packing
  from hero_jax.model.config import tiny_config
  from hero_jax.model.hero import Hero
  from hero_jax.model.params import init_params
  cfg = tiny_config(frame_feat_dim=16, cross_layers=2, heads="pretraining").replace(
      prune_last_layer=prune)
  videos = vsm_videos(8, seed=3)
  ctx = VSM_CTX
  if group > 1:
    ctx = dataclasses.replace(VSM_CTX, sizes=dataclasses.replace(
        VSM_SIZES, packed_rows=3 * group, pack_videos=group))

  def drawn_batch(ctx):
    batch = packing.pack_stacked(layout.stack_examples(
        [vsm_device.make_vsm_rows_example(v, None, ctx) for v in videos]), ctx.sizes)
    assert batch["pack_src"].shape[0] == len(videos) // group
    return jax.device_get(vsm_device.draw(batch, jax.random.key(7), 3)), batch
  drawn, batch = drawn_batch(ctx)
  beside, _ = drawn_batch(dataclasses.replace(ctx, pack_queries=False))
  # Too few packed rows for the rows and their spare slots: the error names the fixes.
  tight = dataclasses.replace(ctx, sizes=dataclasses.replace(ctx.sizes, packed_rows=1))
  longer = dataclasses.replace(ctx, sizes=dataclasses.replace(ctx.sizes, max_row_tokens=4))
  with pytest.raises(ValueError, match=r"layout.max_query_tokens \(5\) must not exceed "
                                       r"layout.max_row_tokens \(4\), or set host.pack_queries"):
    vsm_device.make_vsm_rows_example(videos[0], None, longer)
  with pytest.raises(ValueError, match=r"slots kept for vsm-device's query \[CLS\]\); raise "
                     r"packed_rows .*objectives.vsm_device.packed_rows.*host.pack_queries"):
    drawn_batch(tight)
  assert "query_unpack_src" in drawn and "query_unpack_src" not in beside
  np.testing.assert_array_equal(batch["row_spare"], batch["vsm_matched"])
  # Every real query token of a first draw is in its own segment, after the rows'.
  q_src = drawn["query_unpack_src"].reshape(len(drawn["pack_src"]), -1)
  real = drawn["query_mask"].reshape(q_src.shape).astype(bool)
  seg = drawn["pack_seg"].reshape(q_src.shape[0], -1)
  subs = np.asarray(vsm_device.draw_subtitles(batch["vsm_matched"], jax.random.key(7), 3))
  first = np.concatenate([np.ones((len(videos), 1), bool), subs[:, 1:] != subs[:, :-1]], 1)
  rows_slots = group * VSM_SIZES.max_rows * (VSM_SIZES.max_row_frames + VSM_SIZES.max_row_tokens)
  for g in range(q_src.shape[0]):
    assert np.all(seg[g][q_src[g][real[g]]] > group * VSM_SIZES.max_rows)
    # The packed rows read each drawn subtitle's query once, from its first draw.
    src = drawn["pack_src"][g].reshape(-1)
    read = (src[(seg[g] > 0) & (src >= rows_slots)] - rows_slots) // VSM_SIZES.max_query_tokens
    assert np.all(first[g * group:(g + 1) * group].reshape(-1)[read])
  host_batch = packing.pack_stacked(layout.stack_examples([vsm.build_vsm_example(
      video, vsm.VsmChoices(sampled=np.unique(np.asarray(vsm_device.draw_subtitles(
          batch["vsm_matched"], jax.random.key(7), 3))[v])), ctx)
      for v, video in enumerate(videos)]), ctx.sizes)
  assert not np.array_equal(drawn["pack_src"], host_batch["pack_src"]) or not np.array_equal(
      drawn["pack_seg"], host_batch["pack_seg"])   # really packed differently
  settings = vsm.VsmSettings(drop_svmr_prob=0.0)
  params = init_params(cfg)
  loss_and_grads = jax.jit(jax.value_and_grad(
      lambda p, b: vsm.vsm_loss(Hero(cfg), p, b, settings), has_aux=True))
  (want_loss, want), want_grads = loss_and_grads(params, host_batch)
  for got_batch in (drawn, beside):
    (got_loss, got), got_grads = loss_and_grads(params, got_batch)
    np.testing.assert_allclose(got_loss, want_loss, rtol=2e-5, atol=1e-6)
    for name in want:
      np.testing.assert_allclose(got[name][0], want[name][0], rtol=2e-5, atol=1e-6,
                                 err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6),
                 want_grads, got_grads)
