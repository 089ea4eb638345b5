"""Our batches for the HERO reference fixtures, built from the recorded choices.

The fixtures (``$HERO_REFERENCE_FIXTURES``, default
``<repo>/../shared/fixtures/hero_reference``; a relative value is resolved
against the repo root) hold the ORIGINAL PyTorch HERO's batches and outputs
for six videos. Feeding the original's random decisions (``choice.*``) to our
``build_*`` functions gives the batch our model must reproduce those outputs
on. Every size is read from the fixture, so another fixture folder made the
same way (other sizes, other seed) works unchanged.

Packed outputs: the fixture stores cross-modal rows (flattened over videos in
batch order, ``num_subs`` per video) as the valid prefix ``[frames(n) ;
text(t)]`` of each row (one placeholder frame first when n = 0); our rows are
``[M frame slots ; T text slots]``. ``packed_index`` maps one to the other.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import numpy as np

from hero_jax import layout, packing
from hero_jax.data import records
from hero_jax.objectives import fom
from hero_jax.objectives import host
from hero_jax.objectives import mfm
from hero_jax.objectives import mlm
from hero_jax.objectives import vcmr
from hero_jax.objectives import videoqa
from hero_jax.objectives import vsm

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "HERO_REFERENCE_FIXTURES"
TASKS = ("repr", "mlm", "mfm-nce", "mffr", "fom", "vsm")


def fixture_dir() -> Path:
  """The fixture folder; fails with a message naming the env var."""
  path = Path(os.environ.get(ENV_VAR, "../shared/fixtures/hero_reference"))
  if not path.is_absolute():
    path = REPO_ROOT / path
  path = path.resolve()
  if not (path / "config.json").is_file():
    raise FileNotFoundError(
        f"HERO reference fixtures not found in {path}; set {ENV_VAR} to the folder")
  return path


@functools.lru_cache(maxsize=None)
def fixture_config() -> dict:
  return json.loads((fixture_dir() / "config.json").read_text())


@functools.lru_cache(maxsize=None)
def inputs_raw() -> dict:
  return json.loads((fixture_dir() / "inputs_raw.json").read_text())


@functools.lru_cache(maxsize=None)
def load_npz(task: str) -> dict:
  """All arrays of ``task_<task>.npz`` (cached: do not modify them)."""
  with np.load(fixture_dir() / f"task_{task}.npz") as z:
    return {k: z[k] for k in z.files}


def npz_json(task: str, key: str):
  """An npz entry that holds a JSON document (unicode dtype)."""
  return json.loads(str(load_npz(task)[key]))


def data_config() -> dict:
  return fixture_config()["data"]


def special_ids() -> host.SpecialIds:
  d = fixture_config()["special_ids"]
  return host.SpecialIds(cls=d["CLS"], sep=d["SEP"], pad=d["PAD"], unk=d["UNK"],
                         mask=d["MASK"], v_range=tuple(d["v_range"]))


def batch_video_order() -> list:
  return list(inputs_raw()["batch_video_order"])


@functools.lru_cache(maxsize=None)
def videos() -> tuple:
  """The batch's videos as ``VideoExample`` (frames cut to max_clip_len,
  the subtitles HERO keeps after the cut)."""
  max_clip_len = data_config()["max_clip_len"]
  by_name = {v["vid_name"]: v for v in inputs_raw()["videos"]}
  with np.load(fixture_dir() / "inputs_raw_feats.npz") as feats:
    out = []
    for name in batch_video_order():
      entry = by_name[name]
      after = entry["after_max_clip_len"]
      frames = feats[name][:max_clip_len].astype(np.float32)
      if frames.shape[0] != after["n_frames"]:
        raise ValueError(f"video {name}: {frames.shape[0]} frames after the cut, "
                         f"fixture says {after['n_frames']}")
      subs = [s for s, _ in after["sub2frames"]]
      if subs != list(range(len(subs))):
        raise ValueError(f"video {name}: kept subtitles {subs} are not a prefix")
      out.append(layout.VideoExample(
          vid=name, frames=frames,
          sub_ids=[np.asarray(entry["subtitles"][s]["input_ids"], np.int64) for s in subs],
          sub_frames=[np.asarray(fr, np.int64) for _, fr in after["sub2frames"]]))
  return tuple(out)


def _mlm_rows() -> dict:
  """(video, subtitle) -> row of the fixture's MLM batch."""
  z = load_npz("mlm")
  return {(int(v), int(s)): j for j, (v, s) in
          enumerate(zip(z["choice.mlm_row_video"], z["choice.mlm_row_sub_idx"]))}


@functools.lru_cache(maxsize=None)
def fixture_sizes() -> layout.LayoutSizes:
  """The smallest sizes that fit the fixture (F = max_clip_len, Q = query_per_video)."""
  d = data_config()
  vids = videos()
  sub_lens = [len(ids) for v in vids for ids in v.sub_ids]
  row_frames = [np.size(fr) for v in vids for fr in v.sub_frames]
  query_lens = [1 + min(len(vids[v].sub_ids[s]), d["max_txt_len"])
                for v, subs in enumerate(_vsm_query_subs()) for s in subs]
  z = load_npz("mlm")
  labelled_rows = (z["choice.mlm_labels_full"] != -1).sum(1)
  per_video = np.bincount(z["choice.mlm_row_video"], weights=labelled_rows, minlength=len(vids))
  return layout.LayoutSizes(
      max_frames=int(d["max_clip_len"]),
      max_rows=max([len(v.sub_ids) for v in vids] + [1]),
      max_row_frames=max(row_frames + [1]),
      # 'repr' rows are [SEP] + untruncated ids; MLM rows ([CLS] + ids[:max_txt_len]) fit too.
      max_row_tokens=1 + max(sub_lens + [0]),
      queries=int(d["query_per_video"]),
      max_query_tokens=max(query_lens + [1]),
      max_predictions=max(int(per_video.max()), 1))


def host_context(sizes=None) -> host.HostContext:
  d = data_config()
  sizes = sizes or fixture_sizes()
  return host.HostContext(sizes=sizes, ids=special_ids(),
                          max_txt_len=int(d["max_txt_len"]), mask_prob=float(d["mask_prob"]),
                          queries_per_video=sizes.queries,
                          frame_length=float(inputs_raw()["frame_length"]))


# --- TVR (queries) ---

def word_ids(text: str) -> np.ndarray:
  """The fixture's stand-in tokenizer: word ``w<k>`` is id k."""
  return np.array([int(w[1:]) for w in text.split()], np.int64)


def moment_query(rec: dict) -> records.MomentQuery:
  """A TVR annotation record of ``inputs_raw.json`` as our query."""
  return records.MomentQuery(qid=str(rec["desc_id"]), vid=rec["vid_name"], text=rec["desc"],
                             token_ids=word_ids(rec["desc"]), ts=tuple(rec["ts"]),
                             duration=float(rec["duration"]), query_type=rec.get("type", ""))


@functools.lru_cache(maxsize=None)
def video_by_name(name: str) -> layout.VideoExample:
  return {v.vid: v for v in videos()}[name]


def tvr_train_examples() -> list:
  """The TVR training batch's (video, query) pairs in batch order."""
  z = load_npz("tvr_train")
  vids = json.loads(str(z["batch.vids"]))
  queries = [moment_query(r) for r in inputs_raw()["tvr_train_queries"]]
  out = []
  for row, vidx in zip(z["batch.query_input_ids"], z["batch.q_vidx"]):
    ids = row[1:][row[1:] != special_ids().pad]
    match = [q for q in queries if q.vid == vids[vidx] and np.array_equal(q.token_ids, ids)]
    if len(match) != 1:
      raise ValueError(f"no single TVR train query of video {vids[vidx]} has ids {ids.tolist()}")
    out.append(layout.QueryExample(video=video_by_name(vids[vidx]), query=match[0]))
  return out


def tvr_train_batch() -> dict:
  z = load_npz("tvr_train")
  sizes = dataclasses.replace(fixture_sizes(), queries=1,
                              max_query_tokens=z["batch.query_input_ids"].shape[1])
  ctx = host_context(sizes)
  return layout.stack_examples([vcmr.build_vcmr_example(item, ctx) for item in tvr_train_examples()])


# --- recorded choices, in our formats ---

def mlm_choices() -> list:
  z = load_npz("mlm")
  rows = _mlm_rows()
  max_txt_len = data_config()["max_txt_len"]
  out = []
  for v, video in enumerate(videos()):
    chosen, inputs = [], []
    for s, ids in enumerate(video.sub_ids):
      j, n = rows[(v, s)], min(len(ids), max_txt_len)
      chosen.append(z["choice.mlm_labels_full"][j, 1:1 + n] != -1)
      inputs.append(z["batch.input_ids"][j, 1:1 + n].astype(np.int64))
    out.append(mlm.MlmChoices(chosen=tuple(chosen), inputs=tuple(inputs)))
  return out


def mfm_choices(task: str) -> list:
  mask = load_npz(task)["choice.mfm_frame_mask"]
  return [mfm.MfmChoices(mask=mask[v, :video.num_frames].astype(bool))
          for v, video in enumerate(videos())]


def fom_choices() -> list:
  z = load_npz("fom")
  out = []
  for v, video in enumerate(videos()):
    orders, targets = z["choice.fom_orders"][v], z["choice.fom_targets"][v]
    # selected i <=> targets[orders[i]] == i (a selected frame may stay in place)
    sel = np.array([i for i in range(video.num_frames) if targets[orders[i]] == i], np.int64)
    out.append(fom.FomChoices(selected=sel, new_positions=orders[sel].astype(np.int64)))
  return out


def _vsm_query_subs() -> list:
  """Per video, the fixture's query subtitle of each query row."""
  q = data_config()["query_per_video"]
  return load_npz("vsm")["choice.vsm_query_sub_idx"].reshape(len(videos()), q).tolist()


def vsm_choices() -> list:
  sampled = load_npz("vsm")["choice.vsm_sampled_sub_idx"]
  return [vsm.VsmChoices(sampled=row[row >= 0].astype(np.int64)) for row in sampled]


def task_choices(task: str) -> list:
  """The recorded choices of ``task`` per video (None for 'repr')."""
  if task == "repr":
    return [None] * len(videos())
  if task == "mlm":
    return mlm_choices()
  if task in ("mfm-nce", "mffr"):
    return mfm_choices(task)
  if task == "fom":
    return fom_choices()
  if task == "vsm":
    return vsm_choices()
  raise KeyError(f"unknown task {task!r}; known: {TASKS}")


_BUILDERS = {
    "mlm": mlm.build_mlm_example,
    "mfm-nce": mfm.build_mfm_example,
    "mffr": mfm.build_mfm_example,
    "fom": fom.build_fom_example,
    "vsm": vsm.build_vsm_example,
}


def build_examples(task: str, stats=None, sizes=None) -> list:
  """Our examples for ``task``; ``sizes`` overrides the (smallest) fixture sizes."""
  ctx = host_context()
  if sizes is not None:
    ctx = dataclasses.replace(ctx, sizes=sizes)
  if task == "repr":
    return [host.repr_example(v, ctx, stats) for v in videos()]
  build = _BUILDERS[task]
  return [build(v, c, ctx, stats) for v, c in zip(videos(), task_choices(task))]


def build_batch(task: str, stats=None, sizes=None) -> dict:
  """Our batch (stacked numpy arrays) for ``task``, videos in batch order."""
  return layout.stack_examples(build_examples(task, stats, sizes))


def packed_sizes() -> layout.LayoutSizes:
  """The fixture sizes, packed as tightly as the fixture videos allow (the
  whole rows, and VSM's rows with its queries packed beside them)."""
  sizes = fixture_sizes()
  width = sizes.max_row_frames + sizes.max_row_tokens
  rows = packing.packed_rows_for([build_batch("repr"), build_batch("vsm")], width)
  return dataclasses.replace(sizes, packed_rows=rows, packed_width=width)


# --- packed cross-modal outputs <-> our row slots ---

def num_rows(batch: dict) -> np.ndarray:
  """Rows per video of our batch (every real row has its leading special id)."""
  return batch["row_txt_mask"][:, :, 0].sum(1)


def fixture_rows(num_subs) -> np.ndarray:
  """(N, 2) array: our (v, r) of each fixture row (rows flattened over videos)."""
  return np.array([(v, r) for v, n in enumerate(num_subs) for r in range(int(n))],
                  np.int64).reshape(-1, 2)


@dataclasses.dataclass(frozen=True)
class PackedIndex:
  """Per packed position: our video ``v``, row ``r`` and slot in ``[M ; T]``
  (``slot`` = -1 at a placeholder frame, which has no slot of ours);
  ``real`` = slot >= 0."""
  v: np.ndarray
  r: np.ndarray
  slot: np.ndarray

  @property
  def real(self) -> np.ndarray:
    return self.slot >= 0


def packed_index(batch: dict, row_len) -> PackedIndex:
  """Maps the fixture's packed row positions to our slots.

  ``row_len`` is the fixture's ``out.f_row_len``; it must agree with our
  masks (max(n_frames, 1) + n_text per row), else a ValueError says where.
  """
  m = batch["row_frame_mask"].shape[2]
  rows = fixture_rows(num_rows(batch))
  row_len = np.asarray(row_len)
  if len(rows) != len(row_len):
    raise ValueError(f"our batch has {len(rows)} rows, the fixture {len(row_len)}")
  vs, rs, slots = [], [], []
  for j, (v, r) in enumerate(rows):
    n = int(batch["row_frame_mask"][v, r].sum())
    t = int(batch["row_txt_mask"][v, r].sum())
    if max(n, 1) + t != row_len[j]:
      raise ValueError(f"row {j} (video {v}, row {r}): we have {n} frames and {t} tokens, "
                       f"the fixture row length is {row_len[j]}")
    frame_slots = list(range(n)) if n else [-1]
    row_slots = frame_slots + [m + k for k in range(t)]
    vs += [v] * len(row_slots)
    rs += [r] * len(row_slots)
    slots += row_slots
  return PackedIndex(v=np.array(vs, np.int64), r=np.array(rs, np.int64),
                     slot=np.array(slots, np.int64))


def gather_packed(ours: np.ndarray, index: PackedIndex) -> np.ndarray:
  """Our row outputs [V, R, M + T, ...] at the fixture's real packed
  positions; compare with ``fixture_packed[index.real]``."""
  real = index.real
  return np.asarray(ours)[index.v[real], index.r[real], index.slot[real]]


def unpack_rows(packed: np.ndarray, index: PackedIndex, batch: dict, fill=np.nan) -> np.ndarray:
  """The fixture's packed rows in our layout [V, R, M + T, ...]; slots that
  the fixture does not hold (our padding) = fill, and placeholder frames are
  dropped. Axis 0 of ``packed`` is the packed position (index per layer for
  ``out.f_hidden_states_packed``)."""
  packed = np.asarray(packed)
  v, r, m = batch["row_frame_mask"].shape
  t = batch["row_txt_mask"].shape[2]
  out = np.full((v, r, m + t) + packed.shape[1:], fill, dtype=np.result_type(packed, fill))
  real = index.real
  out[index.v[real], index.r[real], index.slot[real]] = packed[real]
  return out


# --- TVQA ---

def qa_query(rec: dict) -> records.QaQuery:
  """A TVQA annotation record of ``inputs_raw.json`` as our question."""
  keys = [f"a{i}" for i in range(10) if f"a{i}" in rec]
  try:
    ts = tuple(float(t) for t in str(rec["ts"]).split("-"))
  except (KeyError, ValueError):
    ts = (math.nan, math.nan)
  return records.QaQuery(qid=str(rec["qid"]), vid=rec["vid_name"], question=rec["q"],
                         answers=[rec[k] for k in keys], question_ids=word_ids(rec["q"]),
                         answer_ids=[word_ids(rec[k]) for k in keys],
                         answer_idx=int(rec.get("answer_idx", -1)), ts=ts)


def videoqa_examples() -> list:
  """The TVQA batch's (video, question) pairs in batch order (matched by the QA ids)."""
  z = load_npz("videoqa")
  n_q = z["batch.targets"].shape[0]
  answers = z["batch.qa_input_ids"].shape[0] // n_q
  ctx = host_context()
  out = []
  for i in range(n_q):
    rows = z["batch.qa_input_ids"][i * answers:(i + 1) * answers]
    theirs = [r[r != special_ids().pad].tolist() for r in rows]
    match = [q for q in map(qa_query, inputs_raw()["tvqa_questions"])
             if [t.tolist() for t in videoqa.qa_texts(q, ctx)] == theirs]
    if len(match) != 1:
      raise ValueError(f"no single TVQA question has the QA ids of batch question {i}")
    out.append(layout.QueryExample(video=video_by_name(match[0].vid), query=match[0]))
  return out


def videoqa_sizes() -> layout.LayoutSizes:
  z = load_npz("videoqa")
  n_q = z["batch.targets"].shape[0]
  return dataclasses.replace(
      fixture_sizes(), max_frames=z["batch.c_v_feats"].shape[1],
      max_row_tokens=z["batch.f_sub_input_ids"].shape[1],
      answers=z["batch.qa_input_ids"].shape[0] // n_q,
      max_qa_tokens=z["batch.qa_input_ids"].shape[1])


def videoqa_batch() -> dict:
  ctx = host_context(videoqa_sizes())
  return layout.stack_examples([videoqa.build_videoqa_example(x, ctx) for x in videoqa_examples()])
