"""Packed cross-modal rows: the host packing is a bijection of the real slots,
and packed batches give the unpacked losses and outputs on the fixture model."""

import dataclasses

import jax
import numpy as np
import pytest

from hero_jax import layout, packing
from hero_jax.model.hero import Hero
from hero_jax.objectives import host, registry
from tests import fixture_batches as fb
from tests import reference

OBJECTIVES = ("mlm", "mfm-nce", "mffr", "fom", "vsm")


def random_rows(rng, rows=12, m=5, t=9):
  frames_n = rng.integers(0, m + 1, size=rows)
  text_n = rng.integers(1, t + 1, size=rows)
  text_n[rng.integers(rows):] = 0          # trailing padded rows
  frames_n[text_n == 0] = 0
  row_frame_mask = (np.arange(m) < frames_n[:, None]).astype(np.int32)
  row_txt_mask = (np.arange(t) < text_n[:, None]).astype(np.int32)
  return row_frame_mask, row_txt_mask


@pytest.mark.parametrize("seed", range(20))
def test_packing_moves_every_real_slot_once_and_back(seed):
  rng = np.random.default_rng(seed)
  group = 1 + seed % 3      # videos sharing the packed rows (layout.pack_videos)
  masks = [random_rows(rng) for _ in range(group)]
  rfm, rtm = (np.concatenate([m[i] for m in masks]) for i in (0, 1))   # the group's rows
  width = int(rng.integers(14, 40))
  rows = max(1, packing.rows_needed(rfm, rtm, width))   # no real row: none needed
  sizes = layout.LayoutSizes(max_rows=12, max_row_frames=5, max_row_tokens=9,
                             packed_rows=rows, packed_width=width)
  if group == 1:
    out = packing.pack_fields(rfm, rtm, sizes)
  else:
    out = packing.pack_group(rfm.sum(-1).reshape(group, 12), rtm.sum(-1).reshape(group, 12), sizes)
    out["unpack_src"] = out["unpack_src"].reshape(group * 12, -1)
  real = np.concatenate([rfm, rtm], axis=1).astype(bool)      # [g * R, M+T]
  src, seg = out["pack_src"][out["pack_seg"] > 0], out["pack_seg"][out["pack_seg"] > 0]
  # Every real slot is packed exactly once, and nothing else is.
  assert sorted(src) == sorted(np.flatnonzero(real))
  assert np.array_equal(seg - 1, src // real.shape[1])          # segment = its row
  # Unpacking finds each real slot where it was packed.
  flat_src = out["pack_src"].reshape(-1)
  assert np.array_equal(flat_src[out["unpack_src"][real]], np.flatnonzero(real))
  # A row's slots are contiguous, in the row's order (frames, then text).
  for r in np.unique(seg):
    p, w = np.nonzero(out["pack_seg"] == r)
    assert len(set(p)) == 1 and np.array_equal(w, np.arange(w[0], w[0] + len(w)))
    assert np.all(np.diff(out["pack_src"][p, w]) > 0)
  assert rows <= max(1, int(np.ceil(2 * real.sum() / width)))  # first fit: < half wasted


def test_spare_slots_stay_free_right_after_their_rows():
  """``spare_n`` keeps free slots (segment 0) right after a row's real slots,
  in its packed row: where ``vsm-device`` puts a drawn query's [CLS]."""
  rng = np.random.default_rng(0)
  rfm, rtm = random_rows(rng)
  spare = (rtm.sum(-1) > 0) & (rng.random(12) < 0.6)
  width = 24
  rows = packing.rows_for(packing.row_lengths(rfm, rtm) + spare, width)
  sizes = layout.LayoutSizes(max_rows=12, max_row_frames=5, max_row_tokens=9,
                             packed_rows=rows, packed_width=width)
  out = packing.pack_fields(rfm, rtm, sizes, row_spare=spare.astype(np.int32))
  plain = packing.pack_fields(rfm, rtm, dataclasses.replace(sizes, packed_rows=12))
  assert (out["pack_seg"] > 0).sum() == (plain["pack_seg"] > 0).sum()   # the same real slots
  seg = out["pack_seg"].reshape(-1)
  for r in np.flatnonzero(rtm.sum(-1)):
    last = out["unpack_src"][r, 5 + rtm[r].sum() - 1]   # the row's last text slot
    after = last + 1
    if spare[r]:
      assert after % width != 0 and seg[after] == 0 and out["pack_src"].reshape(-1)[after] == 0
  with pytest.raises(packing.RowsDoNotFit):
    packing.pack_fields(rfm, rtm, dataclasses.replace(sizes, packed_rows=rows - 1),
                        row_spare=spare.astype(np.int32))
  # A full row (5 frames, 9 tokens) and its spare slot are wider than packed rows of M + T = 14
  # slots: the advice is a wider packed row, not more of them.
  full_f, full_t = np.zeros((2, 9), np.int32), np.zeros((2, 9), np.int32)
  full_f[0, :5], full_t[0, :9] = 1, 1
  narrow = layout.LayoutSizes(max_rows=2, max_row_frames=5, max_row_tokens=9, packed_rows=4,
                              packed_width=14)
  packing.pack_fields(full_f[:, :5], full_t, narrow)   # fits without the spare slot
  with pytest.raises(packing.RowsDoNotFit) as e:
    packing.pack_fields(full_f[:, :5], full_t, narrow, row_spare=np.array([1, 0], np.int32))
  assert e.value.needed_width == 15
  assert packing.does_not_fit(e.value, spared=True).startswith(
      "row 0 has 15 slots, more than packed_width=14 (its rows and the slots kept for "
      "vsm-device's query [CLS]); raise packed_width to at least 15 in the layout sizes")


def test_an_overflowing_pack_group_is_rebalanced_and_counted():
  """A group that overflows its packed rows regroups the batch (one crowded
  video per group), reorders every field, and is counted; a batch that fits
  no grouping is an error naming the group's videos."""
  import collections
  sizes = layout.LayoutSizes(max_rows=4, max_row_frames=2, max_row_tokens=4, packed_rows=3,
                             packed_width=12, pack_videos=2)
  crowded, light = [[2, 4, 0]] * 4, [[2, 4, 0]] + [[0, 0, 0]] * 3   # 4 rows of 6 slots / one
  counts = np.array([crowded, crowded, light, light], np.int16)
  masks = {"row_frame_mask": (np.arange(2) < counts[..., :1]).astype(np.int32),
           "row_txt_mask": (np.arange(4) < counts[..., 1:2]).astype(np.int32)}
  assert np.array_equal(packing.row_counts(masks), counts)
  # As ordered, group 0 holds both crowded videos: 4 packed rows, one too many.
  fields, order = packing.pack_batch(counts, sizes, vids=list("abcd"))
  assert sorted(order) == [0, 1, 2, 3] and len({0, 1} & set(order[:2])) == 1
  stats = collections.Counter()
  batch = packing.pack_stacked({**masks, "frames": np.arange(4)}, sizes, stats=stats)
  assert stats["pack_groups_rebalanced"] == 1 and list(batch["frames"]) == list(order)
  for k in fields:
    np.testing.assert_array_equal(batch[k], fields[k])
  for group in range(2):   # every real slot of the regrouped batch unpacks to itself
    real = np.concatenate([batch["row_frame_mask"], batch["row_txt_mask"]], -1)[
        2 * group:2 * group + 2].astype(bool)
    flat = batch["pack_src"][group].reshape(-1)
    assert np.array_equal(flat[batch["unpack_src"][2 * group:2 * group + 2][real]],
                          np.flatnonzero(real))
  # Evaluation reads outputs by position: the regrouping is undone.
  regrouped, undo = packing.pack_keeping_order({**masks, "row_ids": masks["row_txt_mask"],
                                                "frames": np.arange(4)}, sizes)
  assert list(regrouped["frames"]) == list(order) and list(regrouped["frames"][undo]) == [0, 1, 2, 3]
  with pytest.raises(packing.RowsDoNotFit, match=r"pack group of videos \['[a-d]', '[a-d]'\]: the "
                                                 r"rows need 4 packed rows"):
    packing.pack_batch(np.array([crowded] * 4, np.int16), sizes, vids=list("abcd"))


def test_packing_errors_name_the_size_and_the_video():
  with pytest.raises(ValueError, match="packed_rows and packed_width are set together"):
    layout.LayoutSizes(packed_rows=4)
  with pytest.raises(ValueError, match=r"packed_width \(20\) must hold one whole row: at least"):
    layout.LayoutSizes(max_row_frames=5, max_row_tokens=20, packed_rows=4, packed_width=20)
  with pytest.raises(ValueError, match="LayoutSizes.packed_rows must be a non-negative integer"):
    layout.LayoutSizes(packed_rows=-1, packed_width=30)
  sizes = dataclasses.replace(fb.fixture_sizes(), packed_rows=1,
                              packed_width=fb.fixture_sizes().max_row_frames
                              + fb.fixture_sizes().max_row_tokens)
  video = max(fb.videos(), key=lambda v: len(v.sub_ids))
  ctx = dataclasses.replace(fb.host_context(), sizes=sizes)
  with pytest.raises(ValueError, match=rf"video '{video.vid}': the rows need \d+ packed rows .*"
                                       "more than packed_rows=1; raise packed_rows"):
    host.repr_example(video, ctx)


def test_fixture_batches_pack_tighter():
  unpacked = packing.slot_counts(fb.build_batch("vsm"))
  packed = packing.slot_counts(fb.build_batch("vsm", sizes=fb.packed_sizes()))
  assert packed["useful"] == unpacked["useful"]
  assert packed["executed"] < unpacked["executed"]


def group_sizes(group: int) -> layout.LayoutSizes:
  """The fixture sizes, packed in groups of ``group`` videos as tightly as they allow."""
  sizes = fb.packed_sizes()
  if group == 1:
    return sizes
  # VSM's batch counts its queries too.
  rows = packing.packed_rows_for([fb.build_batch("repr"), fb.build_batch("vsm")],
                                 sizes.packed_width, group)
  assert rows < group * sizes.packed_rows   # the group shares rows: fewer than alone
  return dataclasses.replace(sizes, packed_rows=rows, pack_videos=group)


def packed_batch(name: str, group: int) -> dict:
  """The fixture batch of ``name`` with rows packed in groups of ``group`` videos."""
  sizes = group_sizes(group)
  return packing.pack_stacked(fb.build_batch(name, sizes=sizes), sizes)


@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("name", OBJECTIVES)
def test_packed_rows_give_the_unpacked_losses_and_outputs(name, group):
  plain, packed = fb.build_batch(name), packed_batch(name, group)
  queries = {"query_unpack_src"} if name == "vsm" else set()   # VSM packs its queries too
  assert set(packed) == set(plain) | set(layout.PACK_FIELDS) | queries
  videos = len(plain["frames"])
  assert packed["pack_src"].shape[0] == videos // group
  assert packed["unpack_src"].shape[0] == videos
  reference.assert_same_losses(name, plain, packed)
  if name == "mlm":   # the encoder's outputs too, every real frame and row slot
    # The full last layer (prune_last_layer=False): every slot's output.
    model = Hero(reference.model_config().replace(prune_last_layer=False))
    params = reference.params()
    encode = jax.jit(lambda b: model.apply({"params": params}, b, mutable=["intermediates"]))
    inputs = lambda b: {k: b[k] for k in layout.VIDEO_FIELDS + layout.PACK_FIELDS if k in b}  # noqa: E731
    (seq_plain, inter_plain), (seq_packed, inter_packed) = encode(inputs(plain)), encode(inputs(packed))
    real = plain["frame_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(seq_packed)[real], np.asarray(seq_plain)[real],
                               rtol=1e-5, atol=1e-5)
    rows = lambda inter: np.asarray(  # noqa: E731
        inter["intermediates"]["v_encoder"]["cross_modal_output"][0])
    slots = np.concatenate([plain["row_frame_mask"], plain["row_txt_mask"]], -1).astype(bool)
    np.testing.assert_allclose(rows(inter_packed)[slots], rows(inter_plain)[slots],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("group", [1, 3])
def test_vsm_queries_packed_with_the_rows_give_the_unpacked_gradients(group, prune):
  """``vsm`` with packed rows runs its queries as text-only rows of the same
  packed rows (one encoder pass): the loss, the metrics and every parameter's
  gradient are the unpacked ones, with the last layer pruned or not; with
  ``host.pack_queries=False`` the queries stay beside the rows."""
  from hero_jax.objectives import vsm
  sizes = group_sizes(group)
  plain, packed = fb.build_batch("vsm"), packed_batch("vsm", group)
  ctx = dataclasses.replace(fb.host_context(), sizes=sizes, pack_queries=False)
  beside = packing.pack_stacked(layout.stack_examples(
      [vsm.build_vsm_example(v, c, ctx) for v, c in zip(fb.videos(), fb.task_choices("vsm"))]),
      sizes)
  assert "query_unpack_src" in packed and "query_unpack_src" not in beside
  # Too few packed rows: per video (the example) or per group (the batch), the error names
  # the queries and the switch.
  tight = dataclasses.replace(sizes, packed_rows=1)
  with pytest.raises(ValueError, match=r"\(its rows and VSM queries\); raise packed_rows .*"
                                       r"host.pack_queries=False"):
    packing.pack_stacked(fb.build_batch("vsm", sizes=tight), tight)
  # Every real query token sits in a packed slot of its own segment.
  q_src = packed["query_unpack_src"].reshape(len(packed["pack_src"]), -1)
  real = packed["query_mask"].reshape(q_src.shape).astype(bool)
  seg = packed["pack_seg"].reshape(q_src.shape[0], -1)
  for g in range(q_src.shape[0]):
    assert len(set(q_src[g][real[g]])) == real[g].sum()
    assert np.all(seg[g][q_src[g][real[g]]] > group * sizes.max_rows)
  model = Hero(reference.model_config().replace(prune_last_layer=prune))
  objective = registry.get("vsm")
  settings = objective.make_settings()

  def loss_and_grads(batch):
    fn = lambda p: objective.loss(model, p, batch, settings)  # noqa: E731
    return jax.jit(jax.value_and_grad(fn, has_aux=True))(reference.params())
  (loss_a, metrics_a), grads_a = loss_and_grads(plain)
  for batch in (packed, beside):
    (loss_b, metrics_b), grads_b = loss_and_grads(batch)
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    for key in metrics_a:
      np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-5, atol=1e-5,
                                 err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6),
                 grads_a, grads_b)


@pytest.mark.parametrize("prune", [True, False])
def test_group_predictions_give_the_mlm_loss_and_count_what_does_not_fit(prune):
  """``objectives.mlm.group_predictions``: each pack group's predictions
  gathered into a budget give the per-video slots' loss, metrics and
  gradients; a budget too small is counted in ``group_overflow``."""
  from hero_jax.objectives import registry
  objective = registry.get("mlm")
  plain, packed = fb.build_batch("mlm"), packed_batch("mlm", 3)   # 6 videos, 2 groups
  per_group = packed["mlm_weights"].reshape(2, -1).sum(-1).astype(int)
  model = Hero(reference.model_config().replace(prune_last_layer=prune))
  params = reference.params()

  def run(batch, budget):
    settings = objective.make_settings({"group_predictions": budget})
    return jax.jit(jax.value_and_grad(lambda p: objective.loss(model, p, batch, settings),
                                      has_aux=True))(params)
  (want, want_metrics), want_grads = run(plain, 0)
  (got, metrics), grads = run(packed, int(per_group.max()))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for key in ("loss", "acc"):
    np.testing.assert_allclose(metrics[key], want_metrics[key], rtol=1e-5, atol=1e-5)
  assert float(metrics["group_overflow"][0]) == 0 and float(metrics["group_overflow"][1]) == 6
  if prune:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
                 grads, want_grads)
  small = int(per_group.min()) - 1
  (_, metrics), _ = run(packed, small)
  assert float(metrics["group_overflow"][0]) == float(np.sum(per_group - small))
  assert float(metrics["loss"][1]) == 2 * small   # the kept predictions only


def test_fit_report_matches_the_transforms_and_the_command_prints_it(tmp_path, capsys):
  from hero_jax.data import build, synthetic
  spec = synthetic.SyntheticSpec(train_videos=12, val_videos=2, feature_dim=8, max_frames=20)
  data_dir = build.build("hero_synthetic/videos", str(tmp_path), spec=spec).data_dir
  from hero_jax.data import pipeline
  videos = [pipeline.VideoSource(data_dir, "train").video(i) for i in range(12)]
  sizes = dataclasses.replace(fb.fixture_sizes(), max_frames=20, max_rows=32, max_row_frames=20,
                              max_row_tokens=61, max_query_tokens=61)
  ctx = dataclasses.replace(fb.host_context(), sizes=sizes)
  assert ctx.max_txt_len == 60 and sizes.queries == 5   # the report's defaults
  rows = layout.stack_examples([host.repr_example(v, ctx) for v in videos])
  width = 96
  need = [packing.rows_needed(f, t, width)
          for f, t in zip(rows["row_frame_mask"], rows["row_txt_mask"])]
  (report,) = packing.fit_report(videos, [width])
  assert report["packed_rows"] == max(need) and report["p50"] == np.median(need)
  # VSM: the rows without the queries' text and the queries, as vsm draws and lays them out
  # (the report's draws: default_rng(seed + 2), one per video).
  rng = np.random.default_rng(2)
  vsm_ex = []
  for v in videos:
    try:
      vsm_ex.append(registry.get("vsm").make_example(v, rng, ctx))
    except registry.SkipExample:   # no matched subtitle: vsm skips it, and so does the report
      pass
  assert all("query_unpack_src" not in ex for ex in vsm_ex)   # unpacked sizes: nothing packed
  vsm_need = [packing.rows_needed(ex["row_frame_mask"], ex["row_txt_mask"], width,
                                  ex["query_mask"]) for ex in vsm_ex]
  assert report["vsm_packed_rows"] == max(vsm_need) >= 1
  # vsm-device: its rows whole and a slot kept after each matched one, as its transform packs.
  packed_ctx = dataclasses.replace(ctx, sizes=dataclasses.replace(sizes, packed_rows=32,
                                                                   packed_width=width))
  device_ex = []
  for v in videos:
    try:
      device_ex.append(registry.get("vsm-device").make_example(v, None, packed_ctx))
    except registry.SkipExample:
      pass
  device_need = [packing.rows_for(packing.row_lengths(ex["row_frame_mask"], ex["row_txt_mask"])
                                  + ex["row_spare"], width) for ex in device_ex]
  assert report["vsm_device_packed_rows"] == max(device_need) >= max(need)
  # A width that holds the longest row but not with its free slot: '-' for vsm-device only.
  assert packing._rows_or_none([np.array([6, 3])], 6) == 2   # 6 + 3 slots in rows of 6
  assert packing._rows_or_none([np.array([7, 3])], 6) is None
  assert max(device_need) == max(int(ex["pack_seg"].any(-1).sum()) for ex in device_ex)
  assert report["packed_real_share"] > report["unpacked_real_share"]
  packing.main(["--data_dir", str(tmp_path), "--dataset", "hero_synthetic/videos",
                "--widths", str(width)])
  out = capsys.readouterr().out
  assert "hero_synthetic/videos train: 12 videos; packed rows per video" in out
  assert out.splitlines()[-2].split()[:2] == [str(width), str(max(need))]
  assert out.splitlines()[-2].split()[-2:] == [str(max(vsm_need)), str(max(device_need))]
  assert out.splitlines()[-1].endswith(
      f"layout.max_predictions={packing.prediction_report(videos)['max']}")
  # Groups of 3 as shuffled batches draw them: never more rows than 3 videos alone, and a
  # larger real share than the videos packed alone.
  (grouped,) = packing.fit_report(videos, [width], pack_videos=3)
  assert grouped["packed_rows"] <= 3 * max(need)
  assert grouped["packed_real_share"] >= report["packed_real_share"]
  packing.main(["--data_dir", str(tmp_path), "--dataset", "hero_synthetic/videos",
                "--widths", str(width), "--pack_videos", "3"])
  out = capsys.readouterr().out
  assert "packed rows per group of 3 videos" in out
  assert out.splitlines()[-2].split()[:2] == [str(width), str(grouped["packed_rows"])]
  budget = packing.prediction_report(videos, pack_videos=3)["max"]
  assert out.splitlines()[-1].endswith(f"objectives.mlm.group_predictions={budget}")


def test_prediction_report_counts_what_mlm_draws():
  """MLM predictions per video or group: exact at mask_prob 0 (one forced
  token per non-empty row) and 1 (every token), and at 0.15 the median of
  MLM's own host draws."""
  from hero_jax.objectives import mlm
  rng = np.random.default_rng(0)
  videos = [layout.VideoExample(f"v{i}", np.zeros((6, 4), np.float32),
                                [np.arange(5, 5 + int(n)) for n in rng.integers(0, 30, size=6)],
                                [np.arange(j, j + 1) for j in range(6)]) for i in range(8)]
  tokens = [[min(len(ids), 60) for ids in v.sub_ids] for v in videos]
  nonempty = max(sum(n > 0 for n in t) for t in tokens)
  assert packing.prediction_report(videos, mask_prob=0.0)["max"] == nonempty
  assert packing.prediction_report(videos, mask_prob=1.0)["max"] == max(map(sum, tokens))
  grouped = packing.prediction_report(videos, pack_videos=4, mask_prob=1.0)
  assert grouped["max"] <= sum(sorted(map(sum, tokens))[-4:])
  ctx = dataclasses.replace(fb.host_context(), mask_prob=0.15)
  drawn = [sum(int(c.sum()) for c in mlm.draw_mlm_choices(videos[0], rng, ctx).chosen)
           for _ in range(400)]
  one = packing.prediction_report(videos[:1], draws=400)
  assert abs(one["p50"] - np.median(drawn)) <= 1


@pytest.mark.slow
def test_a_run_packs_groups_of_videos_on_both_paths(tmp_path):
  """Training with ``layout.pack_videos=2``: ``vsm`` host-fed, ``mlm-device``
  from the example bank (its predictions pooled per group,
  ``group_predictions``) and ``vsm-device`` from the example bank with packed
  rows of its own (``objectives.vsm_device.packed_rows``: its queries run in
  them) all get their batches' pack groups, train, evaluate, and compile
  once; a batch shard that a group would span is refused at start."""
  import numpy as np
  from configs import common, pretrain_tiny
  from hero_jax.train import loop
  c = pretrain_tiny.get_config()
  c.data.datasets.synthetic.data_dir = str(tmp_path / "tfds")
  c.data.synthetic.train_videos, c.data.synthetic.val_videos = 32, 8
  c.data.frame_bank, c.data.example_bank = "sharded", "sharded"
  common.use_objectives(c, vsm=1.0, mlm_device=1.0, vsm_device=1.0)
  c.objectives.mlm_device.group_predictions = 2 * c.objectives.mlm_device.max_predictions - 8
  c.objectives.vsm_device.queries_per_video = c.layout.queries
  row = c.layout.max_row_frames + c.layout.max_row_tokens
  c.layout.packed_rows, c.layout.packed_width, c.layout.pack_videos = c.layout.max_rows, 2 * row, 2
  c.objectives.vsm_device.packed_rows = c.layout.max_rows + 3
  c.train.num_steps, c.train.batch_videos = 4, 8
  c.log_every, c.eval_every, c.checkpoint_every = 4, 4, 4
  c.mesh.num_devices = 2
  trainer = loop.Trainer(c, str(tmp_path / "run"))
  last = trainer.train()
  for task in ("vsm", "mlm-device", "vsm-device"):
    assert np.isfinite(last[f"train/{task}/loss"])
    assert np.isfinite(last[f"val/synthetic/{task}/loss"])
    assert trainer.steps[task].jitted._cache_size() == 1
    # A new pipeline of the task (the run closed its own): 8 videos in 4 groups.
    it = trainer._pipeline(next(t for t in trainer.tasks if t.objective == task))
    batch = next(it)
    it.close()
    assert batch["pack_src"].shape[0] == 4 and batch["unpack_src"].shape[0] == 8
    rows = c.layout.max_rows + (3 if task == "vsm-device" else 0)
    assert batch["pack_src"].shape[1] == rows
  assert "row_spare" in trainer.example_banks["vsm-device"]   # its queries' [CLS] slots
  assert last["train/mlm-device/group_overflow"] == 0   # 2 K - 8 slots hold every group's
  c.mesh.num_devices, c.train.batch_videos = 2, 6    # 3 videos per shard: a group would span two
  with pytest.raises(ValueError, match=r"layout.pack_videos=2 must divide each batch shard's "
                                       r"videos: .* gives 3"):
    loop.Trainer(c, str(tmp_path / "run2"))
