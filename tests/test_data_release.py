"""Builds hero_tv from the fixtures' release_format/ and compares with the LMDBs.

Expected values are read from the release folder itself (independently of
the reader under test: plain lmdb + msgpack here), so the test holds for any
fixture folder made the same way (``HERO_REFERENCE_FIXTURES``).
"""

import json
import os
import shutil

import lmdb
import lz4.frame
import msgpack
import msgpack_numpy
import numpy as np
import pytest

from hero_jax.data import alignment, build, pipeline, records
from tests import fixture_batches as fb


def release_dir():
  return fb.fixture_dir() / "release_format"


def _lmdb_items(path):
  env = lmdb.open(str(path), readonly=True, lock=False, create=False)
  with env.begin() as txn:
    items = [(k.decode(), v) for k, v in txn.cursor()]
  env.close()
  return items


def text_records(db: str) -> dict:
  return {k: msgpack.loads(lz4.frame.decompress(v), raw=False)
          for k, v in _lmdb_items(release_dir() / "txt_db" / db)}


def video_features() -> dict:
  return {k: msgpack.loads(v, object_hook=msgpack_numpy.decode, raw=False)["features"]
          for k, v in _lmdb_items(release_dir() / "video_db" / "tv" / "resnet_slowfast_1.5")}


def splits() -> dict:
  out = {}
  for split in ("train", "val"):
    path = release_dir() / "txt_db" / "pretrain_splits" / f"tv_{split}.json"
    out[split] = json.loads(path.read_text())
  return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  out = {}
  for config in ("videos", "tvr", "tvqa"):
    b = build.build(f"hero_tv/{config}", str(data_dir), manual_dir=str(release_dir()))
    out[config] = b.data_dir
  return out


def test_videos_equal_the_release_lmdbs(built):
  feats = video_features()
  subs = text_records("tv_subtitles.db")
  for split, vids in splits().items():
    ds = pipeline.VideoSource(built["videos"], split, max_clip_len=None)
    assert ds.video_ids == vids
    for i, vid in enumerate(vids):
      ex = ds[i]
      assert records.text(ex["vid"]) == vid
      n = json.loads((release_dir() / "video_db/tv/id2nframe.json").read_text())[vid]
      # The released features come from fp16 files: float16 storage is exact.
      np.testing.assert_array_equal(ex["frames"].astype(np.float32), feats[vid][:n])
      rec = subs[vid]
      video = ds.video(i)
      assert [list(f) for f in video.sub_frames] == [list(f) for _, f in rec["unique_sub2frames"]]
      assert [list(t) for t in video.sub_ids] == rec["input_ids"]
      assert records.sub_texts(ex) == [s["text"] for s in rec["sub"]]
      np.testing.assert_allclose(ex["sub_times"], [[s["start"], s["end"]] for s in rec["sub"]],
                                 rtol=1e-6)
      assert int(ex["num_frames"]) == rec["duration"]


def test_max_clip_len_cut_matches_the_original_loader(built):
  cut = fb.data_config()["max_clip_len"]
  subs = text_records("tv_subtitles.db")
  ds = pipeline.VideoSource(built["videos"], "train", max_clip_len=cut)
  for i, vid in enumerate(ds.video_ids):
    rec = subs[vid]
    kept, _, _ = alignment.cut_to_max_clip_len(
        [(s, tuple(f)) for s, f in rec["unique_sub2frames"]], rec["unmatched_frames"],
        rec["duration"], cut)
    video = ds.video(i)
    assert [tuple(f) for f in video.sub_frames] == [f for _, f in kept]
    assert video.num_frames == min(rec["duration"], cut)


def test_metadata_and_report(built):
  ds = pipeline.VideoSource(built["videos"], "train")
  meta = json.loads((release_dir() / "txt_db/tv_subtitles.db/meta.json").read_text())
  ids = ds.special_ids
  assert (ids.cls, ids.sep, ids.pad, ids.unk, ids.mask) == (
      meta["CLS"], meta["SEP"], meta["PAD"], meta["UNK"], meta["MASK"])
  assert list(ids.v_range) == meta["v_range"]
  report = build.read_report(built["videos"])
  n_subs = sum(len(text_records("tv_subtitles.db")[v]["sub"]) for v in splits()["train"])
  assert report["train"]["videos"] == len(splits()["train"])
  assert report["train"]["subtitles"] == n_subs
  assert report["train"]["skipped_total"] == 0
  # Our alignment of the subtitle times equals the released one.
  assert "alignment_differs_from_release" not in report["train"]["notes"]


def test_queries_hold_video_ids_and_join(built):
  tvr = text_records("tvr_train.db")
  queries = pipeline.QuerySource(built["tvr"], "train")
  videos = pipeline.VideoSource(built["videos"], "train")
  assert len(queries) == len(tvr)
  joined = pipeline.QueryJoin(queries, videos)
  # Queries may name videos of any split: the corpus of all splits finds them all.
  corpus = pipeline.QueryJoin(queries, pipeline.VideoCorpus(built["videos"]))
  in_train = 0
  for i in range(len(queries)):
    q = queries[i]
    qid = records.text(q["qid"])
    assert list(q["token_ids"]) == tvr[qid]["input_ids"]
    np.testing.assert_allclose(q["ts"], tvr[qid]["target"], rtol=1e-6)
    assert "frames" not in q  # no copy of the features
    assert corpus.example(i).video.vid == tvr[qid]["vid"]
    if records.text(q["vid"]) in videos.index:
      assert joined.example(i).video.vid == tvr[qid]["vid"]
      in_train += 1
    else:  # a query about a val video: clear error naming it
      assert joined[i][1] is None
      with pytest.raises(KeyError, match=qid):
        joined.example(i)
  assert in_train > 0
  # The data's global video index (vid2dur_idx.json) is kept for the split's corpus.
  index = json.loads((release_dir() / "txt_db/tv_subtitles.db/vid2dur_idx.json").read_text())
  assert queries.video_index == {vid: v[1] for vid, v in index["train"].items()}


def test_tvqa_questions(built):
  tvqa = text_records("tvqa_train.db")
  ds = pipeline.BuiltDataset(built["tvqa"], "train")
  assert len(ds) == len(tvqa)
  for i in range(len(ds)):
    q = ds[i]
    ref = tvqa[records.text(q["qid"])]
    assert list(q["question_ids"]) == ref["input_ids"][0]
    assert [list(a) for a in records.decode_qa_answers(q)] == ref["input_ids"][1:]
    assert int(q["answer_idx"]) == ref["target"]
    st, ed = (float(x) for x in ref["ts"].split("-"))
    np.testing.assert_allclose(q["ts"], [st, ed], rtol=1e-6)


def test_compressed_lmdb_gives_the_same_features(tmp_path, built):
  manual = tmp_path / "release"
  shutil.copytree(release_dir(), manual)
  shutil.rmtree(manual / "video_db/tv/resnet_slowfast_1.5")
  b = build.build("hero_tv/videos", str(tmp_path / "tfds"), manual_dir=str(manual))
  plain = pipeline.VideoSource(built["videos"], "train")
  comp = pipeline.VideoSource(b.data_dir, "train")
  for i in range(len(plain)):
    np.testing.assert_array_equal(comp[i]["frames"], plain[i]["frames"])


def test_alignment_past_the_features_is_noted_and_dropped_at_load(tmp_path):
  # Fewer feature frames than the subtitle DB's frame count: the original's
  # dataset drops the subtitle frames the features do not have.
  manual = tmp_path / "release"
  shutil.copytree(release_dir(), manual)
  id2nframe_path = manual / "video_db/tv/id2nframe.json"
  id2nframe = json.loads(id2nframe_path.read_text())
  vid = splits()["train"][0]
  id2nframe[vid] -= 2
  os.chmod(id2nframe_path, 0o644)
  id2nframe_path.write_text(json.dumps(id2nframe))
  b = build.build("hero_tv/videos", str(tmp_path / "tfds"), manual_dir=str(manual))
  report = build.read_report(b.data_dir)["train"]
  assert report["notes"]["alignment_beyond_features"] == 1
  assert report["first_ids"]["alignment_beyond_features"] == [vid]
  video = pipeline.VideoSource(b.data_dir, "train", max_clip_len=None).video_by_id(vid)
  ref = text_records("tv_subtitles.db")[vid]["unique_sub2frames"]
  n = id2nframe[vid]
  assert video.num_frames == n
  assert [list(f) for f in video.sub_frames] == [[x for x in f if x < n] for _, f in ref]
