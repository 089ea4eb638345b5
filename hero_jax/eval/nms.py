"""Temporal NMS and span decoding for VCMR / SVMR (spec 5.1).

Same behaviour as the original ``utils/tvr_eval_utils.py`` (itself taken from
TVRetrieval), written with numpy:

* ``post_processing_vcmr_nms`` / ``post_processing_svmr_nms``: greedy temporal
  non-maximum suppression of the ranked ``[video_idx, st, ed, score]`` lists;
* ``generate_min_max_length_mask``: the valid (start, end) cells of the
  (L, L) start-by-end score matrix;
* ``find_max_triples_from_upper_triangle_product``: the top-n
  ``(st_idx, ed_idx, score)`` cells of each such matrix.

Differences from the original, all deliberate:

* Inputs are never mutated (the original rewrites ``e["predictions"]`` of the
  dicts it is given, which is why its saved TVR results hold the after-NMS
  lists); we return new dicts.
* Malformed input (a row without a score, an SVMR list that is empty) raises a
  ``ValueError`` naming the query instead of an ``IndexError``.
* ``prob_thd`` filters the score column; the original indexes a row instead
  (see ``find_max_triples_from_upper_triangle_product``).
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Sequence

import numpy as np

# The original's per-video NMS (``temporal_non_maximum_suppression``) keeps at
# most its default ``max_after_nms=100`` spans; the callers never pass their
# own ``max_after_nms`` down, so this cap applies whatever they ask for.
PER_VIDEO_NMS_CAP = 100


def hull_iou(st: float, ed: float, sts: np.ndarray, eds: np.ndarray) -> np.ndarray:
  """IoU of one span against many, with the hull as "union" (float64).

  TVR's definition: intersection / (max(ends) - min(starts)); the denominator
  is the convex hull, not the true union, so disjoint spans still get 0 and a
  zero-width hull gives 0 (no division).
  """
  inter = np.maximum(0.0, np.minimum(ed, eds) - np.maximum(st, sts))
  hull = np.maximum(ed, eds) - np.minimum(st, sts)
  return np.divide(inter, hull, out=np.zeros_like(inter), where=hull != 0)


def nms_keep(spans: np.ndarray, nms_thd: float, max_keep: int = PER_VIDEO_NMS_CAP) -> np.ndarray:
  """Positions (into ``spans``) kept by greedy temporal NMS, best first.

  ``spans`` is (N, 3) float64 ``[st, ed, score]``. Spans are ranked by score,
  descending, ties in input order (the original uses python's stable
  ``sorted(..., reverse=True)``); walking down the ranking, a span is kept
  unless a kept span overlaps it with IoU > ``nms_thd``; at most ``max_keep``
  are kept. This is exactly the original's pop-based loop (including its "add
  the last survivor" step), which is ordinary greedy NMS.
  """
  n = len(spans)
  order = np.argsort(-spans[:, 2], kind="stable")
  st, ed = spans[order, 0], spans[order, 1]
  alive = np.ones(n, dtype=bool)
  kept = []
  for pos in range(n):
    if not alive[pos]:
      continue
    kept.append(pos)
    if len(kept) >= max_keep:
      break
    alive[pos + 1:] &= ~(hull_iou(st[pos], ed[pos], st[pos + 1:], ed[pos + 1:]) > nms_thd)
  return order[np.asarray(kept, dtype=np.int64)]


def _is_number(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _checked_rows(entry: dict, what: str) -> list:
  """The entry's prediction rows, each checked to hold [vid, st, ed, score, ...]."""
  if not isinstance(entry, dict) or "predictions" not in entry:
    raise ValueError(f"{what}: expected a dict with 'predictions', got {entry!r:.200}")
  rows = entry["predictions"]
  desc_id = entry.get("desc_id")
  if not isinstance(rows, (list, tuple)):
    raise ValueError(f"{what} desc_id={desc_id!r}: 'predictions' must be a list")
  for i, row in enumerate(rows):
    if (not isinstance(row, (list, tuple)) or len(row) < 4
        or not all(_is_number(x) for x in row[:4])):
      raise ValueError(
          f"{what} desc_id={desc_id!r}: prediction {i} must be "
          f"[video_idx, st, ed, score], got {row!r:.200}")
    if np.isnan(row[3]):
      raise ValueError(f"{what} desc_id={desc_id!r}: prediction {i} has a NaN score")
  return list(rows)


def _spans(rows: Sequence[Sequence[float]]) -> np.ndarray:
  """(N, 3) float64 [st, ed, score] of [video_idx, st, ed, score, ...] rows."""
  return np.asarray([row[1:4] for row in rows], dtype=np.float64).reshape(-1, 3)


def filter_vcmr_by_nms(rows: Sequence[Sequence[Any]], nms_thd: float, max_before_nms: int = 1000,
                       max_after_nms: int = 100) -> list[list]:
  """NMS of one VCMR list: per video, then merged and re-ranked.

  Like the original: keep the first ``max_before_nms`` rows, group them by
  video index (groups in order of first appearance), run NMS inside each group
  (capped at ``PER_VIDEO_NMS_CAP``), concatenate the groups in that order,
  stable-sort by score (descending) and keep ``max_after_nms``.
  """
  groups: dict[Any, list[int]] = {}
  rows = list(rows[:max_before_nms])
  for i, row in enumerate(rows):
    groups.setdefault(row[0], []).append(i)
  merged = []
  for vid, members in groups.items():
    keep = nms_keep(_spans([rows[i] for i in members]), nms_thd)
    # The original rebuilds each row as [group key] + row[1:].
    merged.extend([vid] + list(rows[members[k]][1:]) for k in keep)
  scores = np.asarray([row[3] for row in merged], dtype=np.float64)
  return [merged[i] for i in np.argsort(-scores, kind="stable")[:max_after_nms]]


def post_processing_vcmr_nms(vcmr_res: Iterable[dict], nms_thd: float = 0.6,
                             max_before_nms: int = 1000, max_after_nms: int = 100) -> list[dict]:
  """``filter_vcmr_by_nms`` on every query of a VCMR result list (new dicts)."""
  out = []
  for entry in vcmr_res:
    rows = _checked_rows(entry, "VCMR")
    out.append({**entry, "predictions": filter_vcmr_by_nms(
        rows, nms_thd, max_before_nms=max_before_nms, max_after_nms=max_after_nms)})
  return out


def post_processing_svmr_nms(svmr_res: Iterable[dict], nms_thd: float = 0.6,
                             max_before_nms: int = 1000, max_after_nms: int = 100) -> list[dict]:
  """NMS of every SVMR list (one video per query), returning new dicts.

  Like the original: NMS over the first ``max_before_nms`` rows (capped at
  ``PER_VIDEO_NMS_CAP``), then ``max_after_nms``. Quirk kept: the video index
  of EVERY output row is the one of the list's first row, whatever the other
  rows said (SVMR lists are meant to hold one video). The original crashes on
  an empty list; we raise a ValueError naming the query.
  """
  out = []
  for entry in svmr_res:
    rows = _checked_rows(entry, "SVMR")
    if not rows:
      raise ValueError(f"SVMR desc_id={entry.get('desc_id')!r}: empty predictions, "
                       "the original's SVMR NMS needs at least one")
    head = rows[:max_before_nms]
    keep = nms_keep(_spans(head), nms_thd)[:max_after_nms]
    vid = rows[0][0]
    out.append({**entry, "predictions": [[vid] + list(head[k][1:]) for k in keep]})
  return out


def generate_min_max_length_mask(array_shape: Sequence[int], min_l: int, max_l: int) -> np.ndarray:
  """float32 mask of shape (1, ..., 1, L, L): 1 where min_l <= j - i < max_l.

  Cell (i, j) is the span starting at frame i and ending at frame j
  (inclusive end index), so j - i + 1 frames; the callers multiply the
  start-by-end score matrix by this mask, zeroing invalid spans. Same as the
  original's ``triu(k=min_l) * (1 - triu(k=max_l))``.
  """
  rows, cols = array_shape[-2], array_shape[-1]
  diff = np.arange(cols)[None, :] - np.arange(rows)[:, None]  # j - i
  mask = ((diff >= min_l) & (diff < max_l)).astype(np.float32)
  return mask.reshape((1,) * (len(array_shape) - 2) + (rows, cols))


def top_n_array_2d(array_2d: np.ndarray, top_n: int) -> np.ndarray:
  """(min(top_n, size), 3) ``[row, col, value]`` of the largest cells, best first.

  As the original: numpy's default ascending argsort, reversed. Its order
  among equal values (the many masked zeros of an SVMR matrix) is what the
  original's lists hold when fewer than ``top_n`` spans score above zero, and
  zero-score spans can still hit the ground truth, so reproducing it keeps
  SVMR R@100 equal to the original's (a stable sort changed it on the
  fixtures). The same numpy sort gives the same order for the same values.
  """
  array_2d = np.asarray(array_2d)
  flat_order = np.argsort(array_2d, axis=None)[::-1][:top_n]
  rows, cols = np.unravel_index(flat_order, array_2d.shape)
  # np.stack promotes (int64, float32) to float64, as the original's output.
  return np.stack([rows, cols, array_2d[rows, cols]], axis=1)


def find_max_triples_from_upper_triangle_product(upper_product: np.ndarray, top_n: int = 5,
                                                 prob_thd: float | None = None) -> list[np.ndarray]:
  """Per (L, L) matrix of ``upper_product`` (N, L, L): its top-n (st, ed, score).

  Returns a list of N float64 arrays (min(top_n, L*L), 3). ``prob_thd``
  keeps the triples whose score is >= prob_thd. The original writes
  ``sorted_triple[sorted_triple[2] >= prob_thd]``, which tests the third
  TRIPLE instead of the score column (a bug, and an IndexError unless top_n
  is 3); every caller passes ``prob_thd=None``, so we implement the intent.
  """
  out = []
  for matrix in np.asarray(upper_product):
    triples = top_n_array_2d(matrix, top_n)
    if prob_thd is not None:
      triples = triples[triples[:, 2] >= prob_thd]
    out.append(triples)
  return out
