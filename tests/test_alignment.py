"""Subtitle -> frame alignment against the original ``prepro_sub.py`` outputs.

``alignment.json`` (fixture folder from ``HERO_REFERENCE_FIXTURES``) holds
videos run through the original script and loader; every video and every
stored field must match. Nothing here depends on how many videos or which
edge cases a particular fixture folder contains.
"""

import json
import math

import pytest

from hero_jax.data import alignment as al
from tests.fixture_batches import fixture_dir


def _fixture():
  path = fixture_dir() / "alignment.json"
  if not path.is_file():
    pytest.skip(f"{path} not found")
  return json.loads(path.read_text())


def _videos():
  return _fixture()["videos"]


def _align(video, frame_length):
  inp = video["input"]
  return al.align_subtitles(
      [tuple(s) for s in inp["subs"]], inp["vid2nframe"], frame_length,
      num_tokens=[len(t) for t in inp["input_ids"]] if inp["subs"] else None)


def _cut_cases():
  return sorted({k for v in _videos() for k in v if k.startswith("max_clip_len_")})


def test_every_video_matches_original():
  data = _fixture()
  frame_length = data["frame_length"]
  assert data["videos"], "alignment.json has no videos"
  cut_keys = _cut_cases()
  assert cut_keys, "alignment.json has no max_clip_len outputs"
  failures = []
  for video in data["videos"]:
    got = _align(video, frame_length)
    stored = got.to_original_json()
    for field, value in stored.items():
      if field not in video:
        continue
      if video[field] != value:
        failures.append(f"{video['vid_name']}.{field}: got {value}, want {video[field]}")
    # The pseudo-subtitle branch replaces the token lists by empty ones.
    if got.pseudo:
      assert video["input"]["input_ids"] == [[]] * len(got.unique_sub2frames), video["vid_name"]
    for key in cut_keys:
      max_clip_len = int(key[len("max_clip_len_"):])
      sub2frames, unmatched, n_frames = got.cut(max_clip_len)
      want = video[key]
      got_cut = {"sub2frames": [[s, list(f)] for s, f in sub2frames],
                 "unmatched_frames": list(unmatched), "n_frames": n_frames}
      for field in want:
        if want[field] != got_cut[field]:
          failures.append(f"{video['vid_name']}.{key}.{field}: got {got_cut[field]}, "
                          f"want {want[field]}")
  assert not failures, f"{len(failures)} mismatches:\n" + "\n".join(failures[:20])


def test_fixture_stats_are_consistent():
  """The edge-case counts the generator reports are reproduced (when present)."""
  data = _fixture()
  stats = data.get("stats", {})
  aligns = [_align(v, data["frame_length"]) for v in data["videos"]]
  if "frames_given_to_subtitle_0_without_overlap" in stats:
    count = 0
    for a in aligns:
      if a.pseudo:
        continue
      for frame, sub in a.frame2unique_sub.items():
        if sub == 0 and 0 not in a.frame2subs[frame]:
          count += 1
    # The generator may also count frames where subtitle 0 covers the frame
    # with IoU 0, so only a lower bound is checked.
    assert count <= stats["frames_given_to_subtitle_0_without_overlap"]
  if "last_subtitle_longer_than_16s_capped" in stats:
    assert sum(a.extra_long_subs for a in aligns) == stats["last_subtitle_longer_than_16s_capped"]
  if "videos_without_subtitles" in stats:
    assert sum(not v["input"]["subs"] for v in data["videos"]) == stats["videos_without_subtitles"]


# --- edge rules -------------------------------------------------------------


def test_basic_overlap_goes_to_max_iou():
  # frame 1 = [1.5, 3.0] s: sub 0 covers 1.5..2.1, sub 1 covers 2.1..4.5.
  a = al.align_subtitles([(0.0, 3.15), (3.15, 6.75)], 10)
  assert a.frame2subs[2] == (0, 1)
  assert a.frame2unique_sub[2] == 1
  assert a.unique_sub2frames == ((0, (0, 1)), (1, (2, 3, 4)))
  assert a.sub2frames == ((0, (0, 1, 2)), (1, (2, 3, 4)))
  assert a.unmatched_frames == (5, 6, 7, 8, 9)


def test_exact_duplicates_first_wins():
  a = al.align_subtitles([(1.5, 4.5), (1.5, 4.5)], 5)
  assert a.unique_sub2frames == ((0, (1, 2)), (1, ()))
  assert a.frame2subs[1] == (0, 1)


def test_zero_length_subtitle_goes_to_subtitle_0():
  # Sub 1 is zero length inside frame 3 and alone there: IoU 0 -> subtitle 0.
  a = al.align_subtitles([(0.0, 1.5), (5.0, 5.0)], 6)
  assert a.sub2frames[1] == (1, (3,))
  assert a.frame2subs[3] == (1,)
  assert a.frame2unique_sub[3] == 0
  assert a.unique_sub2frames == ((0, (0, 3)), (1, ()))
  # On a frame boundary it covers nothing.
  b = al.align_subtitles([(0.0, 1.5), (4.5, 4.5)], 6)
  assert b.sub2frames[1] == (1, ())
  assert 3 in b.unmatched_frames


def test_subtitle_after_video_end_is_skipped():
  a = al.align_subtitles([(0.0, 3.0), (6.0, 7.0)], 4, num_tokens=[2, 9])
  assert a.sub2frames == ((0, (0, 1)), (1, ()))
  assert a.unique_sub2frames == ((0, (0, 1)), (1, ()))
  assert a.max_matched_sub_len == 9  # its tokens count, its frames do not
  assert a.unmatched_frames == (2, 3)


def test_long_last_subtitle_keeps_11_frames():
  a = al.align_subtitles([(0.0, 1.5), (1.5, 30.0)], 40)
  assert a.extra_long_subs == 1
  assert a.sub2frames[1] == (1, tuple(range(1, 12)))
  # Not the last one: no cap.
  b = al.align_subtitles([(0.0, 30.0), (30.0, 31.0)], 40)
  assert b.extra_long_subs == 0
  assert b.sub2frames[0] == (0, tuple(range(20)))
  # The duration is measured after clipping the end to the video end.
  c = al.align_subtitles([(0.0, 30.0)], 10)
  assert c.extra_long_subs == 0 and len(c.sub2frames[0][1]) == 20


def test_pseudo_subtitles_and_zero_frames():
  assert al.pseudo_subtitles(12) == ((0, (0, 1, 2, 3, 4)), (1, (5, 6, 7, 8, 9)), (2, (10, 11)))
  assert al.pseudo_subtitles(0) == ()
  a = al.align_subtitles([], 7)
  assert a.pseudo and a.frame2subs is None and a.unmatched_frames == ()
  assert a.max_matched_sub_len == 5
  # vid2nframe 0: int(int(7.9) / 1.5) = 4 frames.
  b = al.align_subtitles([(0.5, 7.9)], 0)
  assert b.num_frames == 4 and not b.pseudo
  assert al.num_frames_from_subtitles([(0.5, 7.9)]) == 4
  c = al.align_subtitles([(0.2, 1.9)], 0)  # int(1) / 1.5 -> 0 frames
  assert c.pseudo and c.num_frames == 0 and c.unique_sub2frames == ()


def test_cut_keeps_prefix():
  pairs = ((0, (0, 1)), (1, ()), (2, (2, 3, 4)), (3, (5,)), (4, ()))
  assert al.cut_to_max_clip_len(pairs, (6, 7), 8, 4) == (
      ((0, (0, 1)), (1, ()), (2, (2, 3))), (), 4)
  # A subtitle that loses all its frames is dropped, and so is the rest.
  assert al.cut_to_max_clip_len(pairs, (6, 7), 8, 2) == (((0, (0, 1)), (1, ())), (), 2)
  assert al.cut_to_max_clip_len(pairs, (6, 7), 8, 100) == (pairs, (6, 7), 8)
  assert al.cut_to_max_clip_len(pairs, (6, 7), 8, None) == (pairs, (6, 7), 8)
  assert al.cut_to_max_clip_len(pairs, (6, 7), 8, -1) == (pairs, (), -1)


@pytest.mark.parametrize("subs, field", [
    ([(math.nan, 1.0)], "subtitles[0].start"),
    ([(0.0, 1.0), (0.5, math.inf)], "subtitles[1].end"),
    ([(2.0, 3.0), (1.0, 4.0)], "subtitles[1].start"),
    ([(0.0,)], "subtitles[0]"),
])
def test_invalid_subtitles(subs, field):
  with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
    al.align_subtitles(subs, 10)


def test_invalid_arguments():
  with pytest.raises(ValueError, match="num_frames"):
    al.align_subtitles([(0.0, 1.0)], -1)
  with pytest.raises(TypeError, match="num_frames"):
    al.align_subtitles([(0.0, 1.0)], 2.0)
  with pytest.raises(ValueError, match="frame_length"):
    al.align_subtitles([(0.0, 1.0)], 2, frame_length=0.0)
  with pytest.raises(ValueError, match="num_tokens"):
    al.align_subtitles([(0.0, 1.0)], 2, num_tokens=[1, 2])
  with pytest.raises(ValueError, match="max_clip_len"):
    al.cut_to_max_clip_len((), (), 3, -2)


def test_reversed_subtitle_behaves_like_original():
  # end < start is not rejected by the original: floor(2.13) = 2 < ceil(2.07)
  # = 3, so frame 2 is covered with IoU 0 (like a zero-length subtitle).
  a = al.align_subtitles([(0.0, 1.5), (3.2, 3.1)], 4)
  assert a.sub2frames[1] == (1, (2,))
  assert a.frame2unique_sub[2] == 0


@pytest.mark.parametrize("max_clip_len", [None, -1, 0, 5, 9, 100])
def test_decoding_a_record_takes_the_cut_path_only_when_it_cuts(monkeypatch, max_clip_len):
  """``records.decode_video`` skips ``cut_to_max_clip_len`` when nothing would
  be cut; its videos equal the cut path's on random records (sorted and
  unsorted rows, empty rows, frames past the cut and past the features)."""
  import numpy as np
  from hero_jax.data import records
  rng = np.random.default_rng(0)
  examples = []
  for i in range(60):
    n_frames = int(rng.integers(1, 12))
    rows = [np.sort(rng.choice(12, size=int(rng.integers(0, 4)), replace=False))
            for _ in range(int(rng.integers(1, 6)))]
    if i % 3 == 0:
      rows = [r[::-1] for r in rows]   # unsorted rows: the cut sorts them
    rec = records.VideoRecord(
        vid=f"v{i}", frames=rng.normal(size=(n_frames, 2)), num_frames=12,
        sub_times=np.zeros((len(rows), 2)), sub_texts=[""] * len(rows),
        row_ids=[rng.integers(5, 50, size=int(rng.integers(0, 5))) for _ in rows],
        row_frames=rows, unmatched_frames=np.zeros((0,), np.int32))
    examples.append(records.encode_video(rec))
  took_fast_path = []
  check = records._nothing_to_cut
  monkeypatch.setattr(records, "_nothing_to_cut",
                      lambda *args: took_fast_path.append(check(*args)) or took_fast_path[-1])
  fast = [records.decode_video(ex, max_clip_len) for ex in examples]
  assert 0 < sum(took_fast_path) < len(examples) or max_clip_len in (-1, 0)
  monkeypatch.setattr(records, "_nothing_to_cut", lambda *args: False)
  slow = [records.decode_video(ex, max_clip_len) for ex in examples]
  for a, b in zip(fast, slow):
    np.testing.assert_array_equal(a.frames, b.frames)
    assert len(a.sub_ids) == len(b.sub_ids) and len(a.sub_frames) == len(b.sub_frames)
    for x, y in zip(a.sub_ids + a.sub_frames, b.sub_ids + b.sub_frames):
      assert x.dtype == y.dtype == np.int64
      np.testing.assert_array_equal(x, y)
