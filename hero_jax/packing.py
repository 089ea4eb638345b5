"""Packing subtitle rows: several short cross-modal rows share one wide row.

HERO runs one ``[frames ; text]`` row per subtitle, padded to the most frames
and the longest text of the batch; on TV-like data about a third of the
executed slots are padding. Packing places the real slots of a video's rows
back to back in ``packed_rows`` rows of ``packed_width`` slots (first fit, the
longest rows first), and a block-diagonal attention mask (``pack_seg``) keeps
each subtitle row attending only to itself. Masked keys get exactly zero
attention weight either way, and positions are embedded before packing, so
every real output is the unpacked one (``tests/test_packing.py``).

Host side only (numpy); the model side is ``HierarchicalEncoder.cross_modal``.
"""

from __future__ import annotations

import numpy as np

from hero_jax import layout


class RowsDoNotFit(ValueError):
  """The rows of a video need more packed rows than ``packed_rows``, or one
  row (or query) is wider than ``packed_width`` (``needed_width``: its slots;
  only a wider packed row fixes that)."""

  def __init__(self, message: str, needed_width: int | None = None):
    super().__init__(message)
    self.needed_width = needed_width


def does_not_fit(error, queries: bool = False, spared: bool = False) -> str:
  """``RowsDoNotFit``'s message, with what the packed rows had to hold besides
  the rows (VSM's queries, or ``vsm-device``'s free [CLS] slots) and the fixes."""
  if queries:
    what, fix = " (its rows and VSM queries)", ", or set host.pack_queries=False"
  elif spared:
    what = " (its rows and the slots kept for vsm-device's query [CLS])"
    fix = (", or give vsm-device packed rows of its own (objectives.vsm_device.packed_rows; "
           "python -m hero_jax.packing prints how many), or set host.pack_queries=False")
  else:
    what = fix = ""
  needed = getattr(error, "needed_width", None)
  if needed is not None:   # more packed rows cannot help a row wider than one
    return f"{error}{what}; raise packed_width to at least {needed} in the layout sizes{fix}"
  return f"{error}{what}; raise packed_rows (or packed_width) in the layout sizes{fix}"


def row_lengths(row_frame_mask: np.ndarray, row_txt_mask: np.ndarray) -> np.ndarray:
  """Real slots of each row [R]: its frames then its text, both left-aligned."""
  return row_frame_mask.sum(-1) + row_txt_mask.sum(-1)


def assign_rows(lengths, packed_rows: int, packed_width: int) -> list:
  """First-fit decreasing: ``[(row, packed row, offset)]`` for every non-empty
  row; ``RowsDoNotFit`` when ``packed_rows`` rows are not enough."""
  free = []                       # free slots of each packed row opened so far
  placed = []
  for r in sorted(range(len(lengths)), key=lambda r: -int(lengths[r])):   # stable
    n = int(lengths[r])
    if n == 0:
      continue
    if n > packed_width:
      raise RowsDoNotFit(f"row {r} has {n} slots, more than packed_width={packed_width}", n)
    p = next((i for i, f in enumerate(free) if f >= n), len(free))
    if p == len(free):
      free.append(packed_width)
    placed.append((r, p, packed_width - free[p]))
    free[p] -= n
  if len(free) > packed_rows:
    raise RowsDoNotFit(f"the rows need {len(free)} packed rows of {packed_width} slots, more "
                       f"than packed_rows={packed_rows}")
  return placed


def pack_group(frames_n: np.ndarray, text_n: np.ndarray, sizes: layout.LayoutSizes,
               query_n: np.ndarray | None = None, spare_n: np.ndarray | None = None) -> dict:
  """The ``layout.PACK_FIELDS`` of a pack group: g videos whose rows (real
  frame and text slots of each, ``frames_n`` / ``text_n`` [g, R], left-aligned
  as the host transforms lay them out) share the group's ``packed_rows`` rows.
  Returns ``pack_src`` / ``pack_seg`` [P, W] and ``unpack_src`` [g, R, M + T];
  the indices run over the group's videos one after another (video i's row r
  is the group's row i * R + r).

  ``query_n`` [g, Q]: real tokens of each VSM query (left-aligned in its Lq
  slots), packed as text-only rows after the group's rows: query q of video
  i reads source slot ``g * R * (M + T) + (i * Q + q) * Lq + t`` and is
  segment ``g * R + i * Q + q + 1``; ``query_unpack_src`` [g, Q, Lq] says
  where each of its real tokens went (0 for padding).

  ``spare_n`` [g, R]: slots kept free right after each row's real slots
  (segment 0, source 0), where ``vsm-device`` puts the ``[CLS]`` of a query
  it draws from that row's subtitle."""
  g, r_max = frames_n.shape
  spare_n = np.zeros(g * r_max, np.int64) if spare_n is None else np.asarray(spare_n).reshape(-1)
  m = sizes.max_row_frames
  width = m + sizes.max_row_tokens
  frames_n, text_n = frames_n.reshape(-1), text_n.reshape(-1)
  rows = g * r_max
  query_n = np.zeros((g, 0), np.int64) if query_n is None else np.asarray(query_n)
  lq = sizes.max_query_tokens
  if query_n.size and query_n.max() > sizes.packed_width:
    raise RowsDoNotFit(f"a query has {int(query_n.max())} tokens, more than packed_width="
                       f"{sizes.packed_width}", int(query_n.max()))
  lengths = np.concatenate([frames_n + text_n + spare_n, query_n.reshape(-1)])
  pack_src = np.zeros((sizes.packed_rows, sizes.packed_width), np.int32)
  pack_seg = np.zeros((sizes.packed_rows, sizes.packed_width), np.int32)
  unpack_src = np.zeros((rows, width), np.int32)
  query_unpack_src = np.zeros((query_n.size, lq), np.int32)
  for item, p, offset in assign_rows(lengths, sizes.packed_rows, sizes.packed_width):
    if item < rows:   # the row's real slots in the unpacked [M frames ; T text] layout
      slots = np.concatenate([np.arange(frames_n[item]), m + np.arange(text_n[item])])
      source, unpacked = item * width + slots, unpack_src[item]
    else:             # a query: its tokens, after every row of the group
      slots = np.arange(query_n.reshape(-1)[item - rows])
      source, unpacked = rows * width + (item - rows) * lq + slots, query_unpack_src[item - rows]
    at = offset + np.arange(slots.size)
    pack_src[p, at] = source
    pack_seg[p, at] = item + 1
    unpacked[slots] = p * sizes.packed_width + at
  out = {"pack_src": pack_src, "pack_seg": pack_seg,
         "unpack_src": unpack_src.reshape(g, r_max, width)}
  if query_n.shape[1]:
    out["query_unpack_src"] = query_unpack_src.reshape(g, -1, lq)
  return out


def pack_fields(row_frame_mask: np.ndarray, row_txt_mask: np.ndarray,
                sizes: layout.LayoutSizes, query_mask: np.ndarray | None = None,
                row_spare: np.ndarray | None = None) -> dict:
  """The ``layout.PACK_FIELDS`` of one video (no V axis) from its row masks;
  with its VSM ``query_mask`` [Q, Lq], its queries packed too
  (``query_unpack_src``); with ``row_spare`` [R], that many free slots after
  each row (``pack_group``'s ``spare_n``)."""
  queries = None if query_mask is None else query_mask.sum(-1)[None]
  spare = None if row_spare is None else row_spare[None]
  out = pack_group(row_frame_mask.sum(-1)[None], row_txt_mask.sum(-1)[None], sizes, queries,
                   spare)
  return {k: value[0] if k in ("unpack_src", "query_unpack_src") else value
          for k, value in out.items()}


def row_counts(batch: dict) -> np.ndarray:
  """int16 [V, R, 3]: the real frame and text slots of every row of a batch,
  and the free slots kept after it (``row_spare``, ``vsm-device``; else 0)."""
  spare = batch.get("row_spare", np.zeros(batch["row_txt_mask"].shape[:-1], np.int32))
  return np.stack([batch["row_frame_mask"].sum(-1), batch["row_txt_mask"].sum(-1), spare],
                  axis=-1).astype(np.int16)


def query_counts(batch: dict) -> np.ndarray | None:
  """int16 [V, Q]: the real tokens of every VSM query of a batch whose
  objective packs its queries with the rows (its examples carry
  ``query_unpack_src``); None otherwise."""
  if "query_unpack_src" not in batch:
    return None
  return batch["query_mask"].sum(-1).astype(np.int16)


def balanced_order(counts: np.ndarray, groups: int, queries: np.ndarray | None = None) -> np.ndarray:
  """A batch order whose ``groups`` pack groups hold about as many real slots
  each: the videos, most slots first (their queries' included), dealt to the
  groups back and forth."""
  totals = counts.reshape(len(counts), -1).sum(-1)
  if queries is not None:
    totals = totals + queries.sum(-1)
  dealt = [[] for _ in range(groups)]
  for i, video in enumerate(np.argsort(-totals, kind="stable")):
    turn, at = divmod(i, groups)
    dealt[at if turn % 2 == 0 else groups - 1 - at].append(video)
  return np.concatenate(dealt).astype(np.int64)


def pack_batch(counts: np.ndarray, sizes: layout.LayoutSizes, vids=None,
               queries: np.ndarray | None = None) -> tuple:
  """(fields, order) for a batch of ``row_counts`` [V, R, 3] in pack groups of
  ``sizes.pack_videos`` consecutive videos: ``pack_src`` / ``pack_seg``
  [V / g, P, W], ``unpack_src`` [V, R, M + T]; with ``query_counts``
  [V, Q], the queries packed too and ``query_unpack_src`` [V, Q, Lq].

  ``order`` is None when the batch's own order fits. Else, a crowded group
  having overflowed its P rows, the batch is regrouped (``balanced_order``)
  and ``order`` is the permutation the caller applies to every field before
  adding these (a batch is a set: no loss depends on its order). A batch that
  does not fit either way raises ``RowsDoNotFit`` naming the group's videos
  (``vids``, else batch positions)."""
  v, g = len(counts), sizes.pack_videos
  if v % g:
    raise ValueError(f"a batch of {v} videos does not split into pack groups of "
                     f"layout.pack_videos={g}")
  try:
    return _pack_groups(counts, sizes, vids, queries), None
  except RowsDoNotFit:
    if v == g:
      raise
  order = balanced_order(counts, v // g, queries)
  return _pack_groups(counts[order], sizes, None if vids is None else [vids[i] for i in order],
                      None if queries is None else queries[order]), order


def _pack_groups(counts: np.ndarray, sizes: layout.LayoutSizes, vids, queries) -> dict:
  groups, g = [], sizes.pack_videos
  for start in range(0, len(counts), g):
    try:
      part = counts[start:start + g]
      groups.append(pack_group(part[..., 0], part[..., 1], sizes,
                               None if queries is None else queries[start:start + g],
                               part[..., 2]))
    except RowsDoNotFit as e:
      names = list(vids[start:start + g]) if vids is not None else list(range(start, start + g))
      spared = bool(counts[start:start + g, :, 2].any())
      raise RowsDoNotFit(f"pack group of videos {names}: "
                         f"{does_not_fit(e, queries is not None, spared)}",
                         e.needed_width) from None
  out = {"pack_src": np.stack([x["pack_src"] for x in groups]),
         "pack_seg": np.stack([x["pack_seg"] for x in groups])}
  for key in ("unpack_src", "query_unpack_src"):   # per video
    if key in groups[0]:
      out[key] = np.concatenate([x[key] for x in groups])
  return out


def _pack_groups_of(batch: dict, sizes: layout.LayoutSizes, vids=None) -> tuple:
  """(batch with its pack groups' fields, reordered if regrouped; the order or
  None); as it is when the sizes do not pack batches (unpacked, or each
  example packed its own rows). Video QA rows are one copy per answer and are
  never packed."""
  if not sizes.packs_batches or "qa_row_ids" in batch:
    return batch, None
  fields, order = pack_batch(row_counts(batch), sizes, vids, query_counts(batch))
  if order is not None:
    batch = {k: value[order] for k, value in batch.items()}
  return {**batch, **fields}, order


def pack_stacked(batch: dict, sizes: layout.LayoutSizes, vids=None, stats=None) -> dict:
  """A stacked batch with its pack groups' ``layout.PACK_FIELDS`` when the
  sizes pack groups of several videos (``pack_videos`` > 1), its videos
  reordered if a group had to be rebalanced (counted in ``stats`` under
  ``pack_groups_rebalanced``); else as it is."""
  batch, order = _pack_groups_of(batch, sizes, vids)
  if order is not None and stats is not None:
    stats["pack_groups_rebalanced"] += 1
  return batch


def pack_keeping_order(batch: dict, sizes: layout.LayoutSizes) -> tuple:
  """(batch, undo) for evaluation code that reads outputs by batch position:
  ``pack_stacked``, and ``undo`` [V] puts the outputs of a regrouped batch
  back in the batch's order (None: not reordered). A batch that does not
  split into pack groups stays unpacked (the same outputs)."""
  if len(batch["row_ids"]) % sizes.pack_videos:
    return batch, None
  batch, order = _pack_groups_of(batch, sizes)
  return batch, None if order is None else np.argsort(order)


def rows_needed(row_frame_mask: np.ndarray, row_txt_mask: np.ndarray, packed_width: int,
                query_mask: np.ndarray | None = None) -> int:
  """Packed rows of ``packed_width`` one video needs (to choose ``packed_rows``);
  with its VSM ``query_mask`` [Q, Lq], for its queries too."""
  return batch_rows_needed(row_frame_mask[None], row_txt_mask[None], packed_width, 1,
                           None if query_mask is None else query_mask[None])


def batch_rows_needed(row_frame_mask: np.ndarray, row_txt_mask: np.ndarray, packed_width: int,
                      pack_videos: int = 1, query_mask: np.ndarray | None = None,
                      row_spare: np.ndarray | None = None) -> int:
  """``packed_rows`` a batch (masks [V, R, M] / [V, R, T]) needs: the most
  packed rows of ``packed_width`` any pack group of ``pack_videos``
  consecutive videos needs (with ``query_mask`` [V, Q, Lq], its queries
  packed too; with ``row_spare`` [V, R], the free slots kept after its rows)."""
  lengths = row_lengths(row_frame_mask, row_txt_mask)
  if row_spare is not None:
    lengths = lengths + row_spare
  if query_mask is not None:
    lengths = np.concatenate([lengths, query_mask.sum(-1)], axis=1)
  return max(rows_for(lengths[v:v + pack_videos].reshape(-1), packed_width)
             for v in range(0, len(lengths), pack_videos))


def packed_rows_for(batches, packed_width: int, pack_videos: int = 1) -> int:
  """``packed_rows`` that fits every one of some unpacked stacked batches:
  the most ``batch_rows_needed`` of any, a VSM batch's (``query_mask``) with
  its queries, as ``vsm`` packs them with its rows (``host.pack_queries``),
  a ``vsm-device`` batch's with the slots kept after its rows (``row_spare``)."""
  return max(batch_rows_needed(b["row_frame_mask"], b["row_txt_mask"], packed_width, pack_videos,
                               b.get("query_mask"), b.get("row_spare")) for b in batches)


def rows_for(lengths, packed_width: int) -> int:
  """Packed rows of ``packed_width`` that rows of ``lengths`` slots need."""
  return 1 + max((p for _, p, _ in assign_rows(lengths, len(lengths), packed_width)), default=-1)


def slot_counts(batch: dict) -> dict:
  """Useful vs executed cross-modal slots of a batch (packed or not)."""
  useful = int(np.sum(batch["row_frame_mask"]) + np.sum(batch["row_txt_mask"]))
  if "pack_seg" in batch:
    executed = int(np.prod(batch["pack_seg"].shape))
  else:
    executed = int(np.prod(batch["row_frame_mask"].shape) + np.prod(batch["row_txt_mask"].shape))
  return {"useful": useful, "executed": executed}


def video_row_lengths(video: layout.VideoExample, max_txt_len: int) -> np.ndarray:
  """Real slots of each row of a video as the pre-training transforms lay it
  out: its frames, [SEP]/[CLS] and the subtitle cut to ``max_txt_len``."""
  return np.array([len(fr) + 1 + min(len(ids), max_txt_len)
                   for fr, ids in zip(video.sub_frames, video.sub_ids)], np.int64)


def vsm_row_lengths(video: layout.VideoExample, rng: np.random.Generator, max_txt_len: int,
                    queries: int) -> np.ndarray | None:
  """Real slots of each row and then of each query of a video as ``vsm``
  lays it out with one random draw of its queries (the query subtitles' rows
  keep their frames and [SEP]; a query is [CLS] + its subtitle, the last
  repeated up to ``queries``); None for a video without a matched subtitle
  (``vsm`` skips it)."""
  matched = [r for r, fr in enumerate(video.sub_frames) if len(fr)]
  if not matched:
    return None
  chosen = sorted(rng.choice(matched, size=min(queries, len(matched)), replace=False).tolist())
  text = [min(len(ids), max_txt_len) for ids in video.sub_ids]
  rows = [len(fr) + 1 + (0 if r in chosen else text[r]) for r, fr in enumerate(video.sub_frames)]
  picks = chosen + [chosen[-1]] * (queries - len(chosen))
  return np.array(rows + [1 + text[q] for q in picks], np.int64)


def drawn_groups(per_video: list, pack_videos: int, epochs: int, seed: int) -> list:
  """Per-row arrays of the videos, concatenated per pack group as shuffled
  training batches draw the groups (``epochs`` random orders cut into groups
  of ``pack_videos``); groups of one are the videos themselves."""
  if pack_videos == 1:
    return per_video
  rng = np.random.default_rng(seed)
  return [np.concatenate([per_video[i] for i in order[k:k + pack_videos]])
          for order in (rng.permutation(len(per_video)) for _ in range(epochs))
          for k in range(0, len(order) - pack_videos + 1, pack_videos)]


def prediction_report(videos, max_txt_len: int = 60, pack_videos: int = 1,
                      mask_prob: float = 0.15, draws: int = 10, epochs: int = 20,
                      seed: int = 0) -> dict:
  """MLM predictions per pack group (or per video), drawn as MLM's host
  corruption draws them (each token with ``mask_prob``, a row with none gets
  one), ``draws`` times per group of ``drawn_groups``: max, p99.9 and median.
  The max sizes ``objectives.mlm.group_predictions`` (per video:
  ``layout.max_predictions``); ``group_overflow`` counts what a smaller
  budget leaves out."""
  tokens = [np.array([min(len(ids), max_txt_len) for ids in v.sub_ids], np.int64) for v in videos]
  groups = drawn_groups([t for t in tokens if t.size], pack_videos, epochs, seed)
  rng = np.random.default_rng(seed + 1)
  counts = []
  for rows in groups:
    chosen = rng.binomial(rows, mask_prob, size=(draws, rows.size))
    chosen = np.where((chosen == 0) & (rows > 0), 1, chosen)   # the forced first token
    counts.append(chosen.sum(-1))
  counts = np.concatenate(counts)
  return {"max": int(counts.max()), "p99.9": float(np.percentile(counts, 99.9)),
          "p50": float(np.median(counts)), "draws": draws}


def fit_report(videos, widths, max_txt_len: int = 60, pack_videos: int = 1,
               epochs: int = 20, seed: int = 0, queries: int = 5) -> list:
  """Per packed width: packed rows needed per pack group (max, p99, p50) and the
  share of executed cross-modal slots that are real, packed (P = the max) and
  unpacked. Groups of one are the videos; groups of ``pack_videos`` > 1 are
  drawn as shuffled training batches make them (``epochs`` random orders of
  the videos, cut into groups): P is then the most any drawn group needed.
  ``vsm_packed_rows``: the most any group needs for ``vsm``, whose
  ``queries`` per video share its packed rows (random draws of them; with
  groups of one video, one draw per video). ``vsm_device_packed_rows``: the
  same for ``vsm-device``: whole rows and a free slot after each matched one
  (``row_spare``); None where a row and its free slot exceed the width."""
  lengths = [video_row_lengths(v, max_txt_len) for v in videos]
  lengths = [x for x in lengths if x.size]
  frames = max(max(len(fr) for fr in v.sub_frames) for v in videos if v.sub_frames)
  tokens = 1 + max(min(len(i), max_txt_len) for v in videos for i in v.sub_ids)
  rows = max(x.size for x in lengths)
  unpacked_share = sum(int(x.sum()) for x in lengths) / (len(lengths) * rows * (frames + tokens))
  groups = drawn_groups(lengths, pack_videos, epochs, seed)
  useful = sum(int(x.sum()) for x in groups)
  # VSM's rows with its queries packed beside them (host.pack_queries), a new
  # draw of the queries each epoch.
  rng = np.random.default_rng(seed + 2)
  vsm_groups = []
  for epoch in range(epochs if pack_videos > 1 else 1):
    per_video = [vsm_row_lengths(v, rng, max_txt_len, queries) for v in videos]
    vsm_groups += drawn_groups([x for x in per_video if x is not None], pack_videos, 1,
                               seed + epoch)
  # vsm-device's rows: whole, a slot kept after each matched one; videos with a match.
  spared = [video_row_lengths(v, max_txt_len) + [len(fr) > 0 for fr in v.sub_frames]
            for v in videos if any(len(fr) for fr in v.sub_frames)]
  device_groups = drawn_groups(spared, pack_videos, epochs, seed)
  out = []
  for width in widths:
    if width < frames + tokens:   # must hold the longest row
      continue   # must hold the longest row
    need = np.array([rows_for(x, width) for x in groups])
    out.append({"packed_width": width, "packed_rows": int(need.max()),
                "p99": float(np.percentile(need, 99)), "p50": float(np.median(need)),
                "packed_real_share": useful / (len(groups) * int(need.max()) * width),
                "unpacked_real_share": unpacked_share,
                "vsm_packed_rows": max((rows_for(x, width) for x in vsm_groups), default=0),
                "vsm_device_packed_rows": _rows_or_none(device_groups, width)})
  return out


def _rows_or_none(groups, width: int) -> int | None:
  """The most packed rows any group needs; None when a row does not fit ``width``."""
  try:
    return max((rows_for(x, width) for x in groups), default=0)
  except RowsDoNotFit:
    return None


def _cell(value) -> str:
  return "-" if value is None else str(value)   # "-": a row and its spare slot do not fit


def main(argv=None) -> None:
  """``python -m hero_jax.packing --data_dir D``: how many packed rows a dataset needs."""
  import argparse
  from hero_jax.data import pipeline
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("--data_dir", required=True, help="the TFDS data_dir of the built set")
  parser.add_argument("--dataset", default="hero_tv/videos")
  parser.add_argument("--split", default="train")
  parser.add_argument("--max_clip_len", type=int, default=100)
  parser.add_argument("--max_txt_len", type=int, default=60)
  parser.add_argument("--limit", type=int, default=0, help="read the first N videos (0: all)")
  parser.add_argument("--widths", type=int, nargs="+", default=[64, 96, 128, 192, 256, 384])
  parser.add_argument("--pack_videos", type=int, default=1,
                      help="layout.pack_videos: rows per group of this many videos, as shuffled "
                           "batches group them (20 random orders)")
  parser.add_argument("--mask_prob", type=float, default=0.15, help="host.mask_prob")
  parser.add_argument("--queries", type=int, default=5,
                      help="layout.queries: VSM queries per video, packed with its rows")
  args = parser.parse_args(argv)
  if args.pack_videos < 1:
    parser.error(f"--pack_videos must be positive, got {args.pack_videos}")
  source = pipeline.VideoSource(pipeline.dataset_dir(args.data_dir, args.dataset), args.split,
                                args.max_clip_len)
  count = len(source) if not args.limit else min(args.limit, len(source))
  videos = [source.video(i) for i in range(count)]
  per = "video" if args.pack_videos == 1 else f"group of {args.pack_videos} videos"
  print(f"{args.dataset} {args.split}: {count} videos; packed rows per {per}")
  print("('vsm + queries': the packed rows vsm needs with its queries packed beside its rows, "
        "host.pack_queries; with vsm in the mix, take the larger. 'vsm-device': its whole rows "
        "and a slot kept after each matched one for a drawn query's [CLS]; give it as "
        "objectives.vsm_device.packed_rows)")
  print(f"{'packed_width':>12s} {'packed_rows':>11s} {'p99':>6s} {'p50':>6s} "
        f"{'real slots packed':>17s} {'unpacked':>9s} {'vsm + queries':>13s} {'vsm-device':>10s}")
  for r in fit_report(videos, args.widths, args.max_txt_len, args.pack_videos,
                      queries=args.queries):
    print(f"{r['packed_width']:12d} {r['packed_rows']:11d} {r['p99']:6.1f} {r['p50']:6.1f} "
          f"{r['packed_real_share']:17.1%} {r['unpacked_real_share']:9.1%} "
          f"{r['vsm_packed_rows']:13d} {_cell(r['vsm_device_packed_rows']):>10s}")
  predictions = prediction_report(videos, args.max_txt_len, args.pack_videos, args.mask_prob)
  key = ("objectives.mlm.group_predictions" if args.pack_videos > 1 else "layout.max_predictions")
  print(f"MLM predictions per {per} (mask_prob {args.mask_prob}, {predictions['draws']} draws per {per}): "
        f"max {predictions['max']}, p99.9 {predictions['p99.9']:.0f}, median "
        f"{predictions['p50']:.0f} -> {key}={predictions['max']}")


if __name__ == "__main__":
  main()
