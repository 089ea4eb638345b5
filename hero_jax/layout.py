"""The batch layout: the one contract between data, objectives and the model.

Every batch of one objective has the same static shapes (no recompilation), so
the ragged structure of HERO's input (videos with a variable number of frames,
subtitles with a variable number of frames and tokens) is padded to sizes
fixed by the config and described by masks.

Sizes (``LayoutSizes``):

====  ==================  ===================================================
V     videos per batch    leading axis of every field (sharded over data)
F     ``max_frames``      frames per video (HERO's ``max_clip_len``, 100)
R     ``max_rows``        subtitle rows per video (one cross-modal row each)
M     ``max_row_frames``  frame slots per subtitle row
T     ``max_row_tokens``  text slots per row, the leading [SEP]/[CLS] included
Q     ``queries``         VSM queries per video (5 in pre-training, 1 in TVR)
Lq    ``max_query_tokens``  query text slots, the leading [CLS] included
K     ``max_predictions``   MLM prediction slots per video
A     ``answers``         candidate answers per question (5 TVQA, 4 How2QA)
Lqa   ``max_qa_tokens``   ``[SEP] q [SEP] a`` slots of one answer
P     ``packed_rows``     packed cross-modal rows per pack group (0: no packing)
W     ``packed_width``    slots per packed row (at least M + T)
g     ``pack_videos``     videos per pack group (1: each video packs alone)
====  ==================  ===================================================

Fields common to every objective (``VIDEO_FIELDS``):

* ``frames``          float [V, F, D]  clip-level frame features, zero padded
  (float16 as datasets store them; the step computes in float32). With the
  device frame bank (``hero_jax.data.frame_bank``) batches carry instead
  ``frame_ids`` int32 [V, F], the bank rows of the frames (0: a zero row).
* ``frame_mask``      int32 [V, F]     1 for real frames.
* ``row_ids``         int32 [V, R, T]  text of each subtitle row: ``[SEP]`` +
  subtitle ids (``[CLS]`` + masked ids for MLM), padded with PAD (1).
* ``row_txt_mask``    int32 [V, R, T]  1 for real text slots.
* ``row_frame_idx``   int32 [V, R, M]  index into the video's F frames of each
  frame slot of the row, in the row's order; 0 in padded slots.
* ``row_frame_mask``  int32 [V, R, M]  1 for real frame slots.

Row r of video v is subtitle r of that video (HERO keeps a prefix of the
subtitles after the ``max_clip_len`` cut, so the subtitle index is the row
index). A subtitle without frames has no real frame slot: the original gives it
one zero placeholder frame with attention mask 0, which is the same thing.
Padded rows have no real slot at all.

The model reads each row as ``[frames (M slots) ; text (T slots)]``. HERO packs
each row as ``[frames(n) ; text(t) ; padding]`` instead; both layouts give the
same values at every real position because masked keys get exactly zero
attention weight (exp(-10000) underflows in float32) and positions are
per-part (frames 0..n-1, text 0..t-1). Padded slots hold garbage that no real
position ever sees.

Objective-specific fields:

* MLM: ``mlm_positions`` int32 [V, K] (flat index ``r * T + t`` into the row
  text slots), ``mlm_labels`` int32 [V, K], ``mlm_weights`` float32 [V, K]
  (1 for real predictions). ``mlm-device`` sends instead the rows uncorrupted
  and ``mlm_draw`` int32 [V, 3] (MASK id, ``v_range``); its step draws the rest.
* MFM (``mfm-nce``, ``mffr``): ``mfm_mask`` int32 [V, F], 1 for masked frames.
  ``frames`` stay unmasked on the host: the model zeroes masked frames, and the
  regression targets are ``frames`` at masked positions.
* FOM: ``fom_source`` int32 [V, F] (the shuffled timeline takes
  ``fused[v, fom_source[v, j]]`` at position j; identity at padding),
  ``fom_targets`` int32 [V, F] (original index of the frame now at j, -1 for
  no label).
* Video QA (one example = one question; ``frames``, ``frame_mask``,
  ``row_frame_idx``, ``row_frame_mask`` as above, once per question):
  ``qa_row_ids`` / ``qa_row_txt_mask`` int32 [V, A, R, T] (each answer's copy
  of the rows: ``[SEP]`` + subtitle ids + ``[SEP] q [SEP] a``), ``qa_ids`` /
  ``qa_mask`` int32 [V, A, Lqa], ``qa_target`` int32 [V] (answer index, -1
  unknown), ``qa_st_ed`` int32 [V, 2] (start / inclusive end frame, -1 none).
* Packing (only when ``packed_rows`` > 0; see ``hero_jax.packing``): the
  cross-modal transformer then runs on P rows of W slots per pack group (g
  consecutive videos of the batch; g = ``pack_videos``, 1 by default) instead
  of R rows of M + T per video, each packed row holding several subtitle rows
  back to back, every one attending only to itself. Within a group, row r of
  its i-th video is the group's row i * R + r. ``pack_src`` int32
  [V / g, P, W] (flat index ``(i * R + r) * (M + T) + slot`` of the row slot
  placed there, 0 when empty), ``pack_seg`` int32 [V / g, P, W] (i * R + r + 1
  of that row, 0 when empty), ``unpack_src`` int32 [V, R, M + T] (flat index
  ``p * W + w`` into the group's packed slots where each real row slot went, 0
  for padding). With g = 1 these are per video. The row fields above stay as
  they are: the model embeds the rows, packs, encodes and unpacks, so every
  output (and every loss) is the unpacked one. Groups of g > 1 are packed per
  batch (``pipeline.BatchIterator``, ``example_bank.IndexIterator``), not per
  example; a group never spans two devices (the trainer checks that g divides
  each device's videos).
* VSM / TVR: ``query_ids`` int32 [V, Q, Lq] (``[CLS]`` + ids, PAD padded),
  ``query_mask`` int32 [V, Q, Lq], ``query_st_ed`` int32 [V, Q, 2] (start and
  inclusive end frame, -1 for none). The query subtitles' row text is just
  ``[SEP]`` in ``row_ids``. With packed rows, ``vsm`` packs its queries as
  text-only rows of the packed rows (``host.pack_queries``): then
  ``query_unpack_src`` int32 [V, Q, Lq] (flat index ``p * W + w`` into the
  group's packed slots of each real query token, 0 for padding), and
  ``pack_src`` reads query q of the group's i-th video, token t, at
  ``g * R * (M + T) + (i * Q + q) * Lq + t``.
  ``vsm-device`` sends instead every subtitle as a candidate query,
  ``vsm_query_ids`` / ``vsm_query_mask`` int32 [V, R, Lq], ``vsm_query_st_ed``
  int32 [V, R, 2] and ``vsm_matched`` int32 [V, R] (1 for a subtitle with a
  matched frame), with every row's text whole; its step draws the queries.
  With packed rows (and ``host.pack_queries``) also ``row_spare`` int32
  [V, R]: 1 where the packing keeps a free slot after the row, for the
  ``[CLS]`` of a query drawn from it; the step then runs the drawn queries in
  the packed rows (``vsm_device.queries_in_place``) and adds
  ``query_unpack_src`` as ``vsm`` sends it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PAD_ID = 1

VIDEO_FIELDS = ("frames", "frame_mask", "row_ids", "row_txt_mask",
                "row_frame_idx", "row_frame_mask")
PACK_FIELDS = ("pack_src", "pack_seg", "unpack_src")
PACKING_SIZES = ("packed_rows", "packed_width")


@dataclasses.dataclass(frozen=True)
class LayoutSizes:
  """Static sizes of a batch (see the module docstring)."""
  max_frames: int = 100
  max_rows: int = 32
  max_row_frames: int = 16
  max_row_tokens: int = 61
  queries: int = 5
  max_query_tokens: int = 61
  max_predictions: int = 160
  answers: int = 5
  max_qa_tokens: int = 122
  packed_rows: int = 0
  packed_width: int = 0
  pack_videos: int = 1

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      optional = field.name in PACKING_SIZES   # 0: off
      if not isinstance(value, (int, np.integer)) or value < 0 or (value == 0 and not optional):
        kind = "a non-negative" if optional else "a positive"
        raise ValueError(f"LayoutSizes.{field.name} must be {kind} integer, got {value!r}")
    if (self.packed_rows > 0) != (self.packed_width > 0):
      raise ValueError("LayoutSizes.packed_rows and packed_width are set together (both 0: no "
                       f"packing), got {self.packed_rows} and {self.packed_width}")
    if self.pack_videos > 1 and not self.packed:
      raise ValueError(f"LayoutSizes.pack_videos={self.pack_videos} groups packed rows: it needs "
                       "packed_rows and packed_width")
    row = self.max_row_frames + self.max_row_tokens
    if self.packed and self.packed_width < row:
      raise ValueError(f"LayoutSizes.packed_width ({self.packed_width}) must hold one whole row: "
                       f"at least max_row_frames + max_row_tokens = {row}")

  @property
  def packed(self) -> bool:
    return self.packed_rows > 0

  @property
  def packs_examples(self) -> bool:
    """Each example packs its own rows (groups of one video)."""
    return self.packed and self.pack_videos == 1

  @property
  def packs_batches(self) -> bool:
    """Batches pack their groups of several videos (``pack_videos`` > 1)."""
    return self.packed and self.pack_videos > 1


def field_shapes(sizes: LayoutSizes, frame_dim: int, fields) -> dict:
  """Shape (without the V axis) and dtype of each named per-video field."""
  s = sizes
  known = {
      "frames": ((s.max_frames, frame_dim), np.float32),
      "frame_ids": ((s.max_frames,), np.int32),
      "frame_mask": ((s.max_frames,), np.int32),
      "row_ids": ((s.max_rows, s.max_row_tokens), np.int32),
      "row_txt_mask": ((s.max_rows, s.max_row_tokens), np.int32),
      "row_frame_idx": ((s.max_rows, s.max_row_frames), np.int32),
      "row_frame_mask": ((s.max_rows, s.max_row_frames), np.int32),
      "mlm_positions": ((s.max_predictions,), np.int32),
      "mlm_labels": ((s.max_predictions,), np.int32),
      "mlm_weights": ((s.max_predictions,), np.float32),
      "mlm_draw": ((3,), np.int32),
      "mfm_mask": ((s.max_frames,), np.int32),
      "fom_source": ((s.max_frames,), np.int32),
      "fom_targets": ((s.max_frames,), np.int32),
      "query_ids": ((s.queries, s.max_query_tokens), np.int32),
      "query_mask": ((s.queries, s.max_query_tokens), np.int32),
      "query_st_ed": ((s.queries, 2), np.int32),
      "query_unpack_src": ((s.queries, s.max_query_tokens), np.int32),
      "vsm_query_ids": ((s.max_rows, s.max_query_tokens), np.int32),
      "vsm_query_mask": ((s.max_rows, s.max_query_tokens), np.int32),
      "vsm_query_st_ed": ((s.max_rows, 2), np.int32),
      "vsm_matched": ((s.max_rows,), np.int32),
      "row_spare": ((s.max_rows,), np.int32),
      "qa_row_ids": ((s.answers, s.max_rows, s.max_row_tokens), np.int32),
      "qa_row_txt_mask": ((s.answers, s.max_rows, s.max_row_tokens), np.int32),
      "qa_ids": ((s.answers, s.max_qa_tokens), np.int32),
      "qa_mask": ((s.answers, s.max_qa_tokens), np.int32),
      "qa_target": ((), np.int32),
      "qa_st_ed": ((2,), np.int32),
      "pack_src": ((s.packed_rows, s.packed_width), np.int32),
      "pack_seg": ((s.packed_rows, s.packed_width), np.int32),
      "unpack_src": ((s.max_rows, s.max_row_frames + s.max_row_tokens), np.int32),
  }
  return {name: known[name] for name in fields}


def stack_examples(examples: list[dict]) -> dict:
  """Stacks per-video examples (same fields, same shapes) into one batch."""
  if not examples:
    raise ValueError("stack_examples needs at least one example")
  keys = examples[0].keys()
  for i, ex in enumerate(examples):
    if ex.keys() != keys:
      raise ValueError(f"example {i} has fields {sorted(ex)}, expected {sorted(keys)}")
  return {k: np.stack([ex[k] for ex in examples]) for k in keys}


def padding_share(batch: dict) -> dict:
  """Share of padded slots in a batch, per kind of slot (for reporting)."""
  out = {}
  if "frame_mask" in batch:
    out["frames"] = 1.0 - float(np.mean(batch["frame_mask"]))
  if "row_txt_mask" in batch:
    out["row_tokens"] = 1.0 - float(np.mean(batch["row_txt_mask"]))
  if "row_frame_mask" in batch:
    out["row_frames"] = 1.0 - float(np.mean(batch["row_frame_mask"]))
  return out


@dataclasses.dataclass
class VideoExample:
  """One aligned video as the host transforms receive it.

  ``frames``: float [n, D] clip features, already cut to ``max_clip_len``.
  ``sub_ids``: one int array of token ids per kept subtitle (no special ids).
  ``sub_frames``: one sorted int array of frame indices per kept subtitle
  (HERO's ``unique_sub2frames`` after the cut; may be empty).
  """
  vid: str
  frames: np.ndarray
  sub_ids: list
  sub_frames: list

  def __post_init__(self):
    if self.frames.ndim != 2:
      raise ValueError(f"video {self.vid!r}: frames must be [n, D], got shape {self.frames.shape}")
    if len(self.sub_ids) != len(self.sub_frames):
      raise ValueError(
          f"video {self.vid!r}: {len(self.sub_ids)} subtitle texts but "
          f"{len(self.sub_frames)} subtitle frame lists")
    n = self.frames.shape[0]
    for i, fr in enumerate(self.sub_frames):
      fr = np.asarray(fr)
      if fr.size and (fr.min() < 0 or fr.max() >= n):
        raise ValueError(
            f"video {self.vid!r}: subtitle {i} refers to frame {int(fr.max())} "
            f"but the video has {n} frames")

  @property
  def num_frames(self) -> int:
    return int(self.frames.shape[0])


@dataclasses.dataclass
class QueryExample:
  """A query record joined to its video, for objectives that read queries
  (``Objective.records`` other than ``"videos"``): ``query`` is a
  ``records.MomentQuery`` (TVR, How2R) or ``records.QaQuery`` (TVQA, How2QA)."""
  video: VideoExample
  query: Any
