"""Raw-layout builds (features you extracted + JSONL) and bad input."""

import json
import os
import shutil

import numpy as np
import pytest

from hero_jax.data import alignment, build, pipeline, raw, records
from hero_jax.data.report import BrokenDataError
from hero_jax.data.tokenizers import WordTokenizer, tokenize
from tests import fixture_batches as fb

WORDS = ["hello", "there", "what", "are", "you", "doing", "why", "go", "home", "now"]
RESNET, SLOWFAST = 6, 10
DIM = RESNET + SLOWFAST


def _subs(rng, n_frames, n_subs):
  t, out = 0.3, []
  for _ in range(n_subs):
    length = float(rng.uniform(0.5, 3.0))
    words = rng.choice(WORDS, size=int(rng.integers(1, 5)))
    out.append({"text": " ".join(words), "start": round(t, 3), "end": round(t + length, 3)})
    t += length + float(rng.uniform(-0.3, 1.0))
    t = max(t, out[-1]["start"])
  return out


def make_raw(root, n_videos=4, seed=0, with_queries=True):
  """A raw-layout folder; returns {vid: (frames float32, subtitle dicts)}."""
  rng = np.random.default_rng(seed)
  os.makedirs(root / "features")
  (root / "words.txt").write_text("\n".join(WORDS))
  videos = {}
  with open(root / "subtitles.jsonl", "w") as f:
    for i in range(n_videos):
      vid = f"show_s01e0{i}_clip_{i:02d}"
      n = int(rng.integers(6, 14))
      resnet = rng.normal(size=(n + (i == 0), RESNET)).astype(np.float16)  # one extra frame
      slowfast = rng.normal(size=(n, SLOWFAST)).astype(np.float16)
      np.savez(root / "features" / f"{vid}.npz", resnet=resnet, slowfast=slowfast)
      subs = _subs(rng, n, int(rng.integers(2, 6)))
      f.write(json.dumps({"vid_name": vid, "sub": subs}) + "\n")
      videos[vid] = (np.concatenate([resnet[:n], slowfast], 1).astype(np.float32), subs)
  if with_queries:
    vids = sorted(videos)
    with open(root / "tvr_train.jsonl", "w") as f:
      for k, vid in enumerate(vids):
        f.write(json.dumps({"desc_id": 100 + k, "desc": "WHAT ARE YOU DOING", "vid_name": vid,
                            "ts": [0.5, 3.0], "duration": 10.0, "type": "v"}) + "\n")
    with open(root / "tvqa_train.jsonl", "w") as f:
      for k, vid in enumerate(vids):
        rec = {"qid": 200 + k, "q": "why go home", "vid_name": vid, "answer_idx": k % 5,
               "ts": "1.00-4.50", **{f"a{j}": " ".join(WORDS[j:j + 2]) for j in range(5)}}
        f.write(json.dumps(rec) + "\n")
  return videos


def build_raw(root, config, data_dir, **kw):
  kw.setdefault("feature_dim", DIM)
  return build.build(f"hero_tv/{config}", str(data_dir), manual_dir=str(root),
                     tokenizer=f"words:{root / 'words.txt'}", **kw)


def test_raw_build_aligns_and_tokenizes_like_the_original(tmp_path):
  videos = make_raw(tmp_path / "raw")
  b = build_raw(tmp_path / "raw", "videos", tmp_path / "tfds")
  tok = WordTokenizer(WORDS)
  ds = pipeline.VideoSource(b.data_dir, "train", max_clip_len=None)
  assert sorted(ds.video_ids) == sorted(videos)
  for i, vid in enumerate(ds.video_ids):
    frames, subs = videos[vid]
    ex = ds[i]
    np.testing.assert_array_equal(ex["frames"].astype(np.float32), frames)
    al = alignment.align_subtitles([(s["start"], s["end"]) for s in subs], len(frames))
    video = ds.video(i)
    assert [tuple(f) for f in video.sub_frames] == [f for _, f in al.unique_sub2frames]
    assert [list(t) for t in video.sub_ids] == [
        tokenize(tok, s["text"], unescape_html=True) for s in subs]


def test_raw_queries_are_tokenized_with_normalisation(tmp_path):
  make_raw(tmp_path / "raw")
  tvr = build_raw(tmp_path / "raw", "tvr", tmp_path / "tfds")
  q = pipeline.BuiltDataset(tvr.data_dir, "train")[0]
  tok = WordTokenizer(WORDS)
  assert list(q["token_ids"]) == tok.encode("what are you doing")  # all caps -> lower
  tvqa = build_raw(tmp_path / "raw", "tvqa", tmp_path / "tfds")
  q = pipeline.BuiltDataset(tvqa.data_dir, "train")[1]
  assert int(q["answer_idx"]) == 1
  np.testing.assert_allclose(q["ts"], [1.0, 4.5])
  assert [list(a) for a in records.decode_qa_answers(q)][2] == tok.encode("what are")


def test_howto100m_cuts_whole_videos_into_clips(tmp_path):
  root = tmp_path / "raw"
  os.makedirs(root / "features")
  (root / "words.txt").write_text("\n".join(WORDS))
  frames = np.arange(70 * DIM, dtype=np.float32).reshape(70, DIM) / 1000
  np.savez(root / "features" / "vidA.npz", features=frames.astype(np.float16))
  caps = {"vidA": {"start": [1.0, 61.0, 125.0], "end": [5.0, 64.0, 130.0],
                   "text": ["hello there", "go home", "why now"]}}
  (root / "captions.json").write_text(json.dumps(caps))
  b = build.build("hero_howto100m/videos", str(tmp_path / "tfds"), manual_dir=str(root),
                  tokenizer=f"words:{root / 'words.txt'}", feature_dim=DIM)
  ds = pipeline.VideoSource(b.data_dir, "train", max_clip_len=None)
  # 2 s frames, 60 s clips = 30 frames: clips of 30, 30 and 10 frames.
  assert ds.video_ids == ["vidA.0", "vidA.1", "vidA.2"]
  assert [ds[i]["frames"].shape[0] for i in range(3)] == [30, 30, 10]
  np.testing.assert_array_equal(ds[1]["frames"], frames[30:60].astype(np.float16))
  clip1 = ds.video(1)
  assert [list(t) for t in clip1.sub_ids] == [WordTokenizer(WORDS).encode("go home")]
  assert [list(f) for f in clip1.sub_frames] == [[0, 1]]  # 1-4 s of the clip, 2 s frames


def test_build_refuses_a_wrong_feature_dim(tmp_path):
  make_raw(tmp_path / "raw")
  with pytest.raises(ValueError, match=r"show_s01e00_clip_00\.npz.*dim 16, expected feature_dim=32"):
    build_raw(tmp_path / "raw", "videos", tmp_path / "tfds", feature_dim=32)
  assert not os.path.exists(tmp_path / "tfds" / "hero_tv" / "videos" / "1.0.0")


def test_missing_manual_dir_files_name_the_path(tmp_path):
  make_raw(tmp_path / "raw")
  os.remove(tmp_path / "raw" / "subtitles.jsonl")
  with pytest.raises(FileNotFoundError, match="subtitles.jsonl"):
    build_raw(tmp_path / "raw", "videos", tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match="neither txt_db"):
    build.build("hero_tv/videos", str(tmp_path / "tfds"), manual_dir=str(tmp_path))
  release = tmp_path / "release"
  shutil.copytree(fb.fixture_dir() / "release_format", release)
  os.remove(release / "video_db/tv/id2nframe.json")
  with pytest.raises(FileNotFoundError, match="id2nframe.json"):
    build.build("hero_tv/videos", str(tmp_path / "tfds2"), manual_dir=str(release))


def test_corrupt_lmdb_names_the_file(tmp_path):
  release = tmp_path / "release"
  shutil.copytree(fb.fixture_dir() / "release_format", release)
  db = release / "txt_db/tv_subtitles.db/data.mdb"
  os.chmod(db, 0o644)
  db.write_bytes(b"this is not an lmdb file" * 100)
  with pytest.raises(ValueError, match="tv_subtitles.db/data.mdb"):
    build.build("hero_tv/videos", str(tmp_path / "tfds"), manual_dir=str(release))


def test_bad_records_are_counted_not_dropped_silently(tmp_path):
  root = tmp_path / "raw"
  videos = make_raw(root, n_videos=6)
  vids = sorted(videos)
  # NaN features -> skipped; end before start and a subtitle past the end ->
  # kept as the original does, noted; no subtitles -> pseudo-subtitles;
  # a long video -> noted (cut at load time); an unknown video in a query.
  feats = np.load(root / "features" / f"{vids[1]}.npz")
  resnet = feats["resnet"].copy()
  resnet[2, 0] = np.nan
  np.savez(root / "features" / f"{vids[1]}.npz", resnet=resnet, slowfast=feats["slowfast"])
  lines = [json.loads(x) for x in (root / "subtitles.jsonl").read_text().splitlines()]
  by_vid = {x["vid_name"]: x for x in lines}
  by_vid[vids[2]]["sub"][0]["end"] = by_vid[vids[2]]["sub"][0]["start"] - 0.5
  by_vid[vids[3]]["sub"].append({"text": "go", "start": 500.0, "end": 501.0})
  by_vid[vids[4]]["sub"] = []
  (root / "subtitles.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
  with open(root / "tvr_train.jsonl", "a") as f:
    f.write(json.dumps({"desc_id": 999, "desc": "go home", "vid_name": "no_such_video",
                        "ts": [0, 1], "duration": 3}) + "\n")
  b = build_raw(root, "videos", tmp_path / "tfds", max_clip_len=10)
  report = build.read_report(b.data_dir)["train"]
  assert report["skipped"] == {"non_finite_features": 1}
  assert report["first_ids"]["non_finite_features"] == [vids[1]]
  assert report["notes"]["subtitle_end_before_start"] == 1
  assert report["notes"]["subtitle_after_video_end"] == 1
  assert report["videos"] == 5 and report["videos_with_subtitles"] == 4
  assert report["notes"]["longer_than_max_clip_len"] == sum(
      len(videos[v][0]) > 10 for v in vids if v != vids[1])
  ds = pipeline.VideoSource(b.data_dir, "train", max_clip_len=10)
  pseudo = ds.video(ds.index[vids[4]])
  assert all(len(t) == 0 for t in pseudo.sub_ids)  # 5-frame pseudo-subtitles
  assert [list(f) for f in pseudo.sub_frames][0] == [0, 1, 2, 3, 4]
  assert max(ds.video(i).num_frames for i in range(len(ds))) <= 10
  tvr = build_raw(root, "tvr", tmp_path / "tfds")
  assert build.read_report(tvr.data_dir)["train"]["skipped"] == {"query_unknown_video": 1}


def test_unsorted_subtitles_name_file_and_video(tmp_path):
  root = tmp_path / "raw"
  videos = make_raw(root, n_videos=2, with_queries=False)
  vid = sorted(videos)[0]
  lines = [json.loads(x) for x in (root / "subtitles.jsonl").read_text().splitlines()]
  for x in lines:
    if x["vid_name"] == vid:
      x["sub"] = list(reversed(x["sub"]))
      x["sub"][0]["start"] = 99.0
      x["sub"][-1]["start"] = 0.0
    x["sub"][0]["end"] = x["sub"][0]["end"]
  (root / "subtitles.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
  with pytest.raises(ValueError, match=rf"subtitles.jsonl: video '{vid}'.*sorted by start"):
    build_raw(root, "videos", tmp_path / "tfds")
  lines[0]["sub"][0]["start"] = "soon"
  (root / "subtitles.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
  with pytest.raises(ValueError, match="subtitle 0 field 'start'"):
    build_raw(root, "videos", tmp_path / "tfds")


def test_no_video_with_a_subtitle_refuses_the_build(tmp_path):
  root = tmp_path / "raw"
  make_raw(root, n_videos=2, with_queries=False)
  lines = [json.loads(x) for x in (root / "subtitles.jsonl").read_text().splitlines()]
  (root / "subtitles.jsonl").write_text("\n".join(
      json.dumps({"vid_name": "other_" + x["vid_name"], "sub": x["sub"]}) for x in lines))
  with pytest.raises(BrokenDataError, match="none of the 2 videos has a subtitle"):
    build_raw(root, "videos", tmp_path / "tfds")
  assert not os.path.exists(tmp_path / "tfds" / "hero_tv" / "videos" / "1.0.0")


def test_raw_needs_a_tokenizer(tmp_path):
  make_raw(tmp_path / "raw", n_videos=1, with_queries=False)
  with pytest.raises(ValueError, match="pass a tokenizer"):
    build.build("hero_tv/videos", str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw"),
                feature_dim=DIM)


def test_features_npz_without_known_arrays(tmp_path):
  np.savez(tmp_path / "x.npz", feats=np.zeros((2, 3)))
  with pytest.raises(ValueError, match=r"x\.npz: expected array 'features'"):
    raw.load_features(str(tmp_path / "x.npz"))
  (tmp_path / "y.npz").write_bytes(b"garbage")
  with pytest.raises(ValueError, match=r"y\.npz"):
    raw.load_features(str(tmp_path / "y.npz"))


def test_howto100m_on_apache_beam_equals_the_in_process_build(tmp_path):
  pytest.importorskip("apache_beam")
  root = tmp_path / "raw"
  os.makedirs(root / "features")
  (root / "words.txt").write_text("\n".join(WORDS))
  rng = np.random.default_rng(0)
  caps = {}
  for k, n in enumerate([70, 31, 12, 40]):
    np.savez(root / "features" / f"vid{k}.npz", features=rng.normal(size=(n, DIM)).astype(np.float16))
    starts = np.sort(rng.uniform(0, 2 * n, size=6)).round(2)
    caps[f"vid{k}"] = {"start": starts.tolist(), "end": (starts + 3).tolist(),
                       "text": [" ".join(rng.choice(WORDS, size=3)) for _ in starts]}
  bad = np.load(root / "features" / "vid3.npz")["features"].copy()
  bad[0, 0] = np.nan
  np.savez(root / "features" / "vid3.npz", features=bad)
  (root / "captions.json").write_text(json.dumps(caps))
  kw = dict(manual_dir=str(root), tokenizer=f"words:{root / 'words.txt'}", feature_dim=DIM)
  local = build.build("hero_howto100m/videos", str(tmp_path / "local"), **kw)
  beam = build.build("hero_howto100m/videos", str(tmp_path / "beam"), beam=True,
                     beam_flags=["--runner=DirectRunner"], **kw)
  a = pipeline.VideoSource(local.data_dir, "train", max_clip_len=None)
  b = pipeline.VideoSource(beam.data_dir, "train", max_clip_len=None)  # checks ids vs records
  assert sorted(a.video_ids) == sorted(b.video_ids)
  for vid in a.video_ids:
    ra, rb = a[a.index[vid]], b[b.index[vid]]
    for key in ra:
      np.testing.assert_array_equal(ra[key], rb[key], err_msg=f"{vid} {key}")
  report = build.read_report(beam.data_dir)
  assert report["all_splits"]["skipped"] == {"non_finite_features": 1}
  assert report["train"]["videos"] == len(a)


def test_a_split_larger_than_the_shufflers_memory_builds_without_tensorflow(tmp_path,
                                                                          monkeypatch):
  """TFDS spills a split over 1 GB to bucket files through tf.io.gfile; without
  TensorFlow (as here) build.spill_without_tensorflow gives it epath's. With
  the memory limit at 64 KB the synthetic set spills, and its records are the
  in-memory build's, in the same order."""
  from tensorflow_datasets.core import shuffle
  from hero_jax.data import synthetic
  spec = synthetic.SyntheticSpec(train_videos=24, val_videos=2, feature_dim=64)
  in_memory = build.build("hero_synthetic/videos", str(tmp_path / "memory"), spec=spec).data_dir
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 64 << 10)
  spilled = build.build("hero_synthetic/videos", str(tmp_path / "spilled"), spec=spec).data_dir
  for split in ("train", "val"):
    a, b = (pipeline.VideoSource(d, split).source for d in (in_memory, spilled))
    assert len(a) == len(b) > 0
    for i in range(len(a)):
      assert set(a[i]) == set(b[i])
      for key in a[i]:
        np.testing.assert_array_equal(a[i][key], b[i][key], err_msg=f"{split} {i} {key}")
