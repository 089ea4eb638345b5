"""Host transforms: parity with the original HERO's batches, and draw rules."""

import collections

import numpy as np
import pytest

from hero_jax import layout
from hero_jax.objectives import fom
from hero_jax.objectives import host
from hero_jax.objectives import mfm
from hero_jax.objectives import mlm
from hero_jax.objectives import registry
from hero_jax.objectives import vsm

try:
  from tests import fixture_batches as fb
except ImportError:  # tests/ on sys.path instead of the repo root
  import fixture_batches as fb


# --- (a) parity with the fixture, given the recorded choices ---

def _check_rows(batch, z, ids_key, feats_key, attn_key, frame_keep=None):
  """Our rows against the original's flattened cross-modal rows."""
  ids, feats, attn = z[ids_key], z[feats_key], z[attn_key]
  rows = fb.fixture_rows(fb.num_rows(batch))
  assert len(rows) == ids.shape[0] == feats.shape[0]
  if "batch.num_subs" in z:  # the MLM batch has none
    np.testing.assert_array_equal(fb.num_rows(batch), z["batch.num_subs"])
  pad = fb.special_ids().pad
  for j, (v, r) in enumerate(rows):
    t = int(batch["row_txt_mask"][v, r].sum())
    n = int(batch["row_frame_mask"][v, r].sum())
    np.testing.assert_array_equal(batch["row_ids"][v, r, :t], ids[j, :t])
    assert (ids[j, t:] == pad).all()
    assert (batch["row_ids"][v, r, t:] == pad).all()
    idx = batch["row_frame_idx"][v, r, :n]
    expect = batch["frames"][v, idx]
    if frame_keep is not None:
      expect = expect * frame_keep[v, idx][:, None]
    np.testing.assert_array_equal(feats[j, :n], expect)
    assert not feats[j, n:].any()
    expect_attn = np.zeros(attn.shape[1], np.int64)
    expect_attn[:max(n, 1) + t] = 1
    expect_attn[0] = 1 if n else 0  # placeholder frame of a frameless subtitle
    np.testing.assert_array_equal(attn[j], expect_attn)


def _check_clip(batch, z, frame_keep=None):
  """Clip-level frames and mask (the fixture is padded to the batch max)."""
  c_feats, c_mask = z["batch.c_v_feats"], z["batch.c_attn_masks"]
  f = c_feats.shape[1]
  assert not batch["frame_mask"][:, f:].any()
  np.testing.assert_array_equal(batch["frame_mask"][:, :f], c_mask)
  expect = batch["frames"][:, :f]
  if frame_keep is not None:
    expect = expect * frame_keep[:, :f, None]
  np.testing.assert_array_equal(expect, c_feats)


def test_fixture_sizes_fit_exactly():
  s = fb.fixture_sizes()
  assert s.max_frames == fb.data_config()["max_clip_len"]
  assert s.max_rows == fb.load_npz("repr")["batch.num_subs"].max()
  assert s.max_row_frames == fb.load_npz("repr")["batch.f_v_feats"].shape[1]
  assert s.max_row_tokens == fb.load_npz("repr")["batch.f_sub_input_ids"].shape[1]
  assert s.max_query_tokens == fb.load_npz("vsm")["batch.query_input_ids"].shape[1]
  assert s.queries * len(fb.videos()) == fb.load_npz("vsm")["batch.query_input_ids"].shape[0]


@pytest.mark.parametrize("task", ["repr", "mfm-nce", "mffr", "fom"])
def test_repr_rows_match(task):
  stats = collections.Counter()
  batch = fb.build_batch(task, stats)
  z = fb.load_npz(task)
  keep = None
  if task.startswith("mf"):
    keep = 1 - batch["mfm_mask"]  # the original zeroes masked frames on the host
  _check_rows(batch, z, "batch.f_sub_input_ids", "batch.f_v_feats", "batch.f_attn_masks", keep)
  _check_clip(batch, z, keep)
  assert stats["row_tokens_truncated"] == 0
  for v, video in enumerate(fb.videos()):  # [SEP] + untruncated ids
    for r, ids in enumerate(video.sub_ids):
      np.testing.assert_array_equal(batch["row_ids"][v, r, :1 + len(ids)],
                                    np.concatenate([[fb.special_ids().sep], ids]))


def test_repr_row_lengths_match_packed_outputs():
  batch = fb.build_batch("repr")
  z = fb.load_npz("repr")
  index = fb.packed_index(batch, z["out.f_row_len"])
  assert index.v.size == z["out.f_sequence_packed"].shape[0]
  assert (~index.real).sum() == sum(np.size(fr) == 0 for v in fb.videos() for fr in v.sub_frames)
  ours = fb.unpack_rows(z["out.f_sequence_packed"], index, batch)
  np.testing.assert_array_equal(fb.gather_packed(ours, index), z["out.f_sequence_packed"][index.real])


def test_mlm_matches_fixture():
  batch = fb.build_batch("mlm")
  z = fb.load_npz("mlm")
  ids = fb.special_ids()
  _check_rows(batch, z, "batch.input_ids", "batch.v_feat", "batch.attn_masks")
  rows = fb.fixture_rows(fb.num_rows(batch))
  np.testing.assert_array_equal(rows, np.stack(
      [z["choice.mlm_row_video"], z["choice.mlm_row_sub_idx"]], 1))
  # Our text before corruption is the original's.
  for j, (v, r) in enumerate(rows):
    orig = fb.videos()[v].sub_ids[r][:fb.data_config()["max_txt_len"]]
    np.testing.assert_array_equal(z["choice.mlm_orig_input_ids"][j, :1 + len(orig)],
                                  np.concatenate([[ids.cls], orig]))
  # Predictions: same (row, position), same labels, same order.
  t_slots = batch["row_ids"].shape[2]
  real = batch["mlm_weights"] > 0
  pos = batch["mlm_positions"][real]
  v_of = np.nonzero(real)[0]
  ours = np.stack([v_of, pos // t_slots, pos % t_slots], 1)
  fixture_pos = z["choice.mlm_masked_positions"]
  expect = np.concatenate([rows[fixture_pos[:, 0]], fixture_pos[:, 1:]], 1)
  np.testing.assert_array_equal(ours, expect)
  np.testing.assert_array_equal(batch["mlm_labels"][real], z["batch.txt_labels"])
  np.testing.assert_array_equal(batch["mlm_labels"][real], z["choice.mlm_masked_labels"])
  flat_ids = batch["row_ids"].reshape(len(batch["row_ids"]), -1)
  np.testing.assert_array_equal(np.take_along_axis(flat_ids, batch["mlm_positions"], 1)[real],
                                z["choice.mlm_masked_input_ids"])
  assert (batch["mlm_labels"][~real] == 0).all() and (batch["mlm_positions"][~real] == 0).all()
  # The original's txt_mask_tgt marks the same text slots in its compact layout.
  for j, (v, r) in enumerate(rows):
    n = max(int(batch["row_frame_mask"][v, r].sum()), 1)
    slots = np.flatnonzero(z["batch.txt_mask_tgt"][j]) - n
    mine = pos[(v_of == v) & (pos // t_slots == r)] % t_slots
    np.testing.assert_array_equal(slots, mine)
  fb.packed_index(batch, z["out.f_row_len"])  # row lengths agree


@pytest.mark.parametrize("task", ["mfm-nce", "mffr"])
def test_mfm_matches_fixture(task):
  batch = fb.build_batch(task)
  z = fb.load_npz(task)
  f = z["batch.c_v_masks"].shape[1]
  np.testing.assert_array_equal(batch["mfm_mask"][:, :f], z["batch.c_v_masks"])
  assert not batch["mfm_mask"][:, f:].any()
  assert (batch["mfm_mask"].sum(1) >= 1).all()
  mask = batch["mfm_mask"].astype(bool)
  np.testing.assert_array_equal(batch["frames"][mask], z["batch.feat_targets"])
  # Frame-level mask = clip mask through the rows; placeholder frames False.
  rows = fb.fixture_rows(fb.num_rows(batch))
  for j, (v, r) in enumerate(rows):
    n = int(batch["row_frame_mask"][v, r].sum())
    np.testing.assert_array_equal(
        z["batch.f_v_masks"][j, :n], mask[v, batch["row_frame_idx"][v, r, :n]])
    assert not z["batch.f_v_masks"][j, n:].any()
  assert (batch["frames"][mask] != 0).any()  # frames are not zeroed on our host


def test_fom_matches_fixture():
  batch = fb.build_batch("fom")
  z = fb.load_npz("fom")
  orders, targets = z["choice.fom_orders"], z["choice.fom_targets"]
  np.testing.assert_array_equal(orders, z["batch.shuffled_orders"])
  f = orders.shape[1]
  np.testing.assert_array_equal(batch["fom_targets"][:, :f], targets)
  assert (batch["fom_targets"][:, f:] == -1).all()
  for v in range(len(orders)):  # source is the inverse permutation of orders
    np.testing.assert_array_equal(batch["fom_source"][v, orders[v]], np.arange(f))
  size = batch["fom_source"].shape[1]
  np.testing.assert_array_equal(batch["fom_source"][:, f:], np.broadcast_to(np.arange(f, size),
                                                                           (len(orders), size - f)))


def test_vsm_matches_fixture():
  batch = fb.build_batch("vsm")
  z = fb.load_npz("vsm")
  ctx = fb.host_context()
  q = ctx.queries_per_video
  n_v = len(fb.videos())
  _check_rows(batch, z, "batch.f_sub_input_ids", "batch.f_v_feats", "batch.f_attn_masks")
  _check_clip(batch, z)
  np.testing.assert_array_equal(batch["query_ids"].reshape(n_v * q, -1), z["batch.query_input_ids"])
  np.testing.assert_array_equal(batch["query_mask"].reshape(n_v * q, -1), z["batch.query_attn_masks"])
  np.testing.assert_array_equal(batch["query_st_ed"].reshape(n_v * q, 2), z["batch.targets"])
  np.testing.assert_array_equal(np.repeat(np.arange(n_v), q), z["batch.q_vidx"])
  subs = np.stack([vsm.query_subtitles(v, c, ctx) for v, c in zip(fb.videos(), fb.vsm_choices())])
  np.testing.assert_array_equal(subs.reshape(-1), z["choice.vsm_query_sub_idx"])
  max_txt_len = ctx.max_txt_len
  for v, video in enumerate(fb.videos()):
    for r, ids in enumerate(video.sub_ids):
      t = batch["row_txt_mask"][v, r].sum()
      assert t == (1 if r in subs[v] else 1 + min(len(ids), max_txt_len))
  fb.packed_index(batch, z["out.f_row_len"])


# --- (b) draw rules on synthetic videos ---

def _video(n_frames=20, sub_lens=(5, 0, 7), sub_frames=None, vid="synthetic", seed=0, dim=4):
  rng = np.random.default_rng(seed)
  if sub_frames is None:
    cuts = np.linspace(0, n_frames, len(sub_lens) + 1).astype(int)
    sub_frames = [np.arange(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
  return layout.VideoExample(
      vid=vid, frames=rng.normal(size=(n_frames, dim)).astype(np.float32),
      sub_ids=[rng.integers(10, 200, size=k) for k in sub_lens],
      sub_frames=[np.asarray(f, np.int64) for f in sub_frames])


def _ctx(**kw):
  sizes = dict(max_frames=32, max_rows=8, max_row_frames=16, max_row_tokens=12, queries=5,
               max_query_tokens=12, max_predictions=40)
  sizes.update({k: kw.pop(k) for k in list(kw) if k in sizes})
  kw.setdefault("ids", host.SpecialIds(mask=250, v_range=(4, 249)))
  return host.HostContext(sizes=layout.LayoutSizes(**sizes), **kw)


def test_mlm_draw_rates():
  ctx = _ctx(max_rows=20, max_row_tokens=1001, max_predictions=4000, max_txt_len=1000)
  video = _video(n_frames=20, sub_lens=[1000] * 20)
  choices = mlm.draw_mlm_choices(video, np.random.default_rng(0), ctx)
  chosen = np.concatenate(choices.chosen)
  inputs = np.concatenate(choices.inputs)
  orig = np.concatenate(video.sub_ids)
  assert abs(chosen.mean() - 0.15) < 0.01
  assert (inputs[~chosen] == orig[~chosen]).all()
  c_in, c_orig = inputs[chosen], orig[chosen]
  masked = c_in == ctx.ids.mask
  randomised = ~masked & (c_in != c_orig)
  assert abs(masked.mean() - 0.8) < 0.03
  assert abs(randomised.mean() - 0.1) < 0.02
  assert abs((c_in == c_orig).mean() - 0.1) < 0.02
  lo, hi = ctx.ids.v_range
  assert ((c_in[randomised] >= lo) & (c_in[randomised] < hi)).all()
  ex = mlm.build_mlm_example(video, choices, ctx)
  assert ex["mlm_weights"].sum() == chosen.sum()


def test_mlm_at_least_one_and_layout():
  ctx = _ctx(mask_prob=0.0)
  video = _video(sub_lens=(5, 0, 7))
  stats = collections.Counter()
  ex = mlm.make_mlm_example(video, np.random.default_rng(0), ctx, stats)
  t = ctx.sizes.max_row_tokens
  k = int(ex["mlm_weights"].sum())
  assert k == 2  # forced first token of both non-empty rows, none for the empty one
  np.testing.assert_array_equal(ex["mlm_positions"][:k], [0 * t + 1, 2 * t + 1])
  np.testing.assert_array_equal(ex["mlm_labels"][:k], [video.sub_ids[0][0], video.sub_ids[2][0]])
  assert ex["row_ids"][0, 0] == ctx.ids.cls and ex["row_ids"][0, 1] == ctx.ids.mask
  np.testing.assert_array_equal(ex["row_ids"][0, 2:6], video.sub_ids[0][1:])
  np.testing.assert_array_equal(ex["row_ids"][1, :2], [ctx.ids.cls, ctx.ids.pad])
  assert stats["mlm_empty_rows"] == 1
  with pytest.raises(registry.SkipExample) as err:
    mlm.make_mlm_example(_video(sub_lens=(0, 0), vid="mute"), np.random.default_rng(0), ctx)
  assert err.value.reason == "mlm_no_tokens" and "mute" in str(err.value)


def test_mlm_truncation_and_too_many_predictions():
  ctx = _ctx(max_txt_len=6, mask_prob=1.0, max_predictions=10)
  video = _video(sub_lens=(9, 3), vid="wordy")
  ex = mlm.make_mlm_example(video, np.random.default_rng(0), ctx)
  assert ex["mlm_weights"].sum() == 6 + 3  # truncated to max_txt_len, [CLS] not predicted
  assert ex["row_txt_mask"][0].sum() == 7
  with pytest.raises(registry.SkipExample) as err:
    mlm.make_mlm_example(video, np.random.default_rng(0), _ctx(max_txt_len=6, mask_prob=1.0,
                                                               max_predictions=8))
  assert "wordy" in str(err.value) and "max_predictions=8" in str(err.value)


def test_mfm_draw_rules():
  video = _video(n_frames=20)
  ctx0 = _ctx(mask_prob=0.0)
  picks = [np.flatnonzero(mfm.draw_mfm_choices(video, np.random.default_rng(s), ctx0).mask)
           for s in range(200)]
  assert all(p.size == 1 for p in picks)
  assert len(set(int(p[0]) for p in picks)) > 10  # the forced frame is uniform, not fixed
  ctx = _ctx()
  big = _video(n_frames=30, sub_lens=(3,))
  rates = [mfm.draw_mfm_choices(big, np.random.default_rng(s), ctx).mask.mean() for s in range(300)]
  assert abs(np.mean(rates) - 0.15) < 0.02
  ex = mfm.make_mfm_example(video, np.random.default_rng(1), ctx)
  assert ex["mfm_mask"][:20].sum() >= 1 and not ex["mfm_mask"][20:].any()
  np.testing.assert_array_equal(ex["frames"][:20], video.frames)  # not zeroed on the host
  with pytest.raises(registry.SkipExample) as err:
    mfm.make_mfm_example(_video(n_frames=0, sub_lens=(2,), vid="dark"), np.random.default_rng(0), ctx)
  assert err.value.reason == "mfm_no_frames" and "dark" in str(err.value)


def test_fom_draw_rules():
  ctx = _ctx(mask_prob=0.5)
  video = _video(n_frames=30)
  for seed in range(20):
    choices = fom.draw_fom_choices(video, np.random.default_rng(seed), ctx)
    ex = fom.build_fom_example(video, choices, ctx)
    src, tgt = ex["fom_source"], ex["fom_targets"]
    np.testing.assert_array_equal(np.sort(src), np.arange(32))
    np.testing.assert_array_equal(src[30:], [30, 31])
    assert (tgt[30:] == -1).all()
    labelled = tgt >= 0
    np.testing.assert_array_equal(np.sort(np.flatnonzero(labelled)), np.sort(choices.selected))
    np.testing.assert_array_equal(tgt[labelled], src[labelled])  # label = frame now there
    np.testing.assert_array_equal(src[~labelled], np.flatnonzero(~labelled))  # others stay
  with pytest.raises(ValueError, match="synthetic"):
    fom.build_fom_example(video, fom.FomChoices(np.array([1, 2]), np.array([2, 3])), ctx)


def test_vsm_draw_rules():
  ctx = _ctx()
  video = _video(n_frames=12, sub_lens=(4, 5, 6, 2),
                 sub_frames=[[0, 1], [], [5, 6, 7], [11]])
  for seed in range(10):
    ch = vsm.draw_vsm_choices(video, np.random.default_rng(seed), ctx)
    assert sorted(ch.sampled.tolist()) == [0, 2, 3]
    ex = vsm.build_vsm_example(video, ch, ctx)
    np.testing.assert_array_equal(ex["query_st_ed"], [[0, 1], [5, 7], [11, 11], [11, 11], [11, 11]])
    np.testing.assert_array_equal(ex["query_ids"][4], ex["query_ids"][2])
    np.testing.assert_array_equal(ex["query_ids"][1, :7],
                                  np.concatenate([[ctx.ids.cls], video.sub_ids[2]]))
    np.testing.assert_array_equal(ex["row_txt_mask"].sum(1)[:4], [1, 6, 1, 1])
    np.testing.assert_array_equal(ex["row_frame_mask"].sum(1)[:4], [2, 0, 3, 1])
  many = _video(n_frames=30, sub_lens=[3] * 8)
  draws = [tuple(vsm.draw_vsm_choices(many, np.random.default_rng(s), ctx).sampled) for s in range(50)]
  assert all(len(set(d)) == 5 for d in draws) and len(set(draws)) > 10
  st = vsm.query_st_ed(_video(n_frames=12, sub_frames=[[4]], sub_lens=(2,)), 0)
  assert st == (4, 5)  # a single-frame query still spans two frames
  with pytest.raises(registry.SkipExample) as err:
    vsm.make_vsm_example(_video(sub_lens=(2, 2), sub_frames=[[], []], vid="blind"),
                         np.random.default_rng(0), ctx)
  assert err.value.reason == "vsm_no_matched_subtitle" and "blind" in str(err.value)


# --- (c) determinism ---

@pytest.mark.parametrize("make", [mlm.make_mlm_example, mfm.make_mfm_example,
                                  fom.make_fom_example, vsm.make_vsm_example])
def test_same_seed_same_example(make):
  ctx = _ctx(mask_prob=0.3)
  video = _video(n_frames=30, sub_lens=(5, 0, 7, 9, 3, 4, 6))
  a = make(video, np.random.default_rng(7), ctx)
  b = make(video, np.random.default_rng(7), ctx)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  others = [make(video, np.random.default_rng(s), ctx) for s in range(8, 12)]
  assert any(any(not np.array_equal(a[k], o[k]) for k in a) for o in others)
  shapes = layout.field_shapes(ctx.sizes, video.frames.shape[1], a.keys())
  for k, (shape, dtype) in shapes.items():
    assert a[k].shape == shape and a[k].dtype == dtype, k


# --- (d) overflow errors ---

@pytest.mark.parametrize("sizes,video_kw,words", [
    (dict(max_frames=16), dict(n_frames=20), ["number of frames", "max_frames=16"]),
    (dict(max_rows=2), dict(sub_lens=(1, 2, 3)), ["subtitle rows", "max_rows=2"]),
    (dict(max_row_frames=4), dict(n_frames=20, sub_lens=(1, 2)), ["subtitle 0", "max_row_frames=4"]),
])
def test_overflow_errors_name_video_and_field(sizes, video_kw, words):
  ctx = _ctx(**sizes)
  video = _video(vid="too_big", **video_kw)
  with pytest.raises(ValueError) as err:
    host.repr_example(video, ctx)
  for w in ["'too_big'"] + words:
    assert w in str(err.value)


def test_text_truncation_is_counted():
  ctx = _ctx(max_row_tokens=4)
  stats = collections.Counter()
  ex = host.repr_example(_video(sub_lens=(6, 3, 2)), ctx, stats)
  assert stats["row_tokens_truncated"] == (7 - 4)
  np.testing.assert_array_equal(ex["row_txt_mask"].sum(1)[:3], [4, 4, 3])
  stats = collections.Counter()
  ex = vsm.build_vsm_example(_video(sub_lens=(20, 3)), vsm.VsmChoices(np.array([0])),
                             _ctx(max_query_tokens=8, max_txt_len=10), stats)
  assert stats["query_tokens_truncated"] == 5 * (11 - 8)  # the query is repeated Q times
  assert ex["query_mask"].sum() == 5 * 8


def test_context_checks():
  with pytest.raises(ValueError, match="queries"):
    host.HostContext(sizes=layout.LayoutSizes(queries=1))
  assert host.SpecialIds().mask == 50264
