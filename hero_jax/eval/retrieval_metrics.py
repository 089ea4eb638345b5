"""TVR / How2R / DiDeMo retrieval metrics: VCMR, SVMR and VR recall (spec 5.1).

Reproduces the original ``utils/tvr_standalone_eval.eval_retrieval`` (from
TVRetrieval's ``standalone_eval/eval.py``), key for key and value for value,
plus the flattening into ``eval_vcmr.validate_full_vcmr``'s ``val_log`` names.

A submission is ``{"video2idx": {vid_name: idx}, "VCMR" | "SVMR" | "VR":
[{"desc_id", "desc", "predictions": [[video_idx, st, ed, score], ...]}, ...]}``
(the score is never read). Ground truth is a list of ``{"desc_id",
"vid_name", "ts", "type"?, ...}`` records (TVR's ``*.jsonl``).

How a query is scored, for each task (only its first ``MAX_PRED_PER_QUERY``
predictions count):

* a prediction is *correct at threshold t* when its video is the ground-truth
  video and tIoU(prediction, ts) >= t, with tIoU = intersection / hull (the
  span from the smaller start to the larger end, not the true union); the
  spans are cast to float32 first and the IoU is computed and compared in
  float32, as the original does, so boundary cases (IoU exactly 0.5 / 0.7)
  come out the same;
* ground truth with >= 4 spans (DiDeMo) counts a prediction as correct when
  it reaches the threshold with at least 2 of them;
* VCMR R@k: a correct prediction among the top k;
* SVMR R@k: the same after dropping every prediction on another video (so the
  top k are the top k on the ground-truth video);
* VR R@k: the ground-truth video among the top k (times ignored).

Recall is reported in percent, rounded to 2 decimals the way the original
does (``round`` on a numpy float64, i.e. numpy's scale-and-rint rounding).

Where we differ: bad input (unknown or missing desc_ids, duplicate desc_ids, a
video name missing from video2idx, malformed rows or ``ts``, an unknown
query type, an empty prediction list) raises a ``ValueError`` naming the
item, where the original asserts, raises a bare KeyError/IndexError, or (for
duplicates, for 1-3 nested spans) silently computes something else.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

TASK_TYPES = ("VCMR", "SVMR", "VR")
# eval_vcmr.py runs its second (NMS) evaluation on these only.
NMS_TASK_TYPES = ("VCMR", "SVMR")
DESC_TYPES = ("v", "t", "vt")  # TVR query types: video, text (subtitle), both
RECALL_TOPKS = (1, 5, 10, 100)
MAX_PRED_PER_QUERY = 100
MIN_SPANS_FOR_MULTI_RULE = 4  # the original's DiDeMo test: len(ts) >= 4
MIN_OVERLAPPED_SPANS = 2
# The original compares video indices in float32; above this they alias.
_MAX_EXACT_FLOAT32_INT = 2**24


# --- small helpers ---


def rounded_percentage(fraction: float) -> float:
  """``round(fraction * 100, 2)`` exactly as the original gets it.

  The original's fractions are numpy float64 (``np.mean``, numpy division),
  so python's ``round`` dispatches to numpy's rounding (scale by 100, rint,
  unscale), which is not always python's correctly rounded ``round`` on a
  float; we go through the same numpy path. NaN (an empty query type) stays
  NaN.
  """
  return float(round(np.float64(fraction) * 100, 2))


def _fraction(count: int, total: int) -> float:
  # The original divides numpy numbers: 0 / 0 is NaN (with a warning), never
  # an exception. count / total of python ints is the same correctly rounded
  # float64 quotient as numpy's.
  return count / total if total else float("nan")


def temporal_iou(spans: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """tIoU of (N, 2) spans against one [st, ed], hull as denominator.

  Computed in the inputs' dtype (float32 in the evaluator, like the
  original); a zero-width hull gives 0.
  """
  inter = np.maximum(0, np.minimum(spans[:, 1], gt[1]) - np.maximum(spans[:, 0], gt[0]))
  hull = np.maximum(spans[:, 1], gt[1]) - np.minimum(spans[:, 0], gt[0])
  return np.divide(inter, hull, out=np.zeros_like(inter), where=hull != 0)


def _first_hit_within(flags: np.ndarray, topks: Sequence[int]) -> np.ndarray:
  """flags (..., N) bool -> (..., K) bool: any(flags[..., :k]) for each k.

  N may be 0 (an SVMR list with nothing on the ground-truth video): no hit.
  """
  if flags.shape[-1] == 0:
    return np.zeros(flags.shape[:-1] + (len(topks),), dtype=bool)
  first = np.where(flags.any(-1), flags.argmax(-1), np.iinfo(np.int64).max)
  return first[..., None] < np.asarray(topks)


def _describe_ids(ids: Iterable[Any], limit: int = 10) -> str:
  ids = sorted(ids, key=repr)
  shown = ", ".join(repr(i) for i in ids[:limit])
  return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _index_by_desc_id(entries: Iterable[Any], what: str) -> dict[Any, dict]:
  """{desc_id: entry}; duplicates raise (the original silently keeps the last)."""
  if not isinstance(entries, (list, tuple)):
    raise ValueError(f"{what}: expected a list of dicts, got {type(entries).__name__}")
  by_id: dict[Any, dict] = {}
  for i, entry in enumerate(entries):
    if not isinstance(entry, Mapping) or "desc_id" not in entry:
      raise ValueError(f"{what}: entry {i} has no 'desc_id': {entry!r:.200}")
    if entry["desc_id"] in by_id:
      raise ValueError(f"{what}: desc_id {entry['desc_id']!r} appears more than once")
    by_id[entry["desc_id"]] = entry
  return by_id


def _prediction_array(entry: Mapping, task_type: str, max_pred: int) -> np.ndarray:
  """(n, 3) float32 [video_idx, st, ed] of the first ``max_pred`` predictions."""
  desc_id = entry.get("desc_id")
  rows = entry.get("predictions")
  if not isinstance(rows, (list, tuple)):
    raise ValueError(f"{task_type} desc_id={desc_id!r}: 'predictions' must be a list")
  if not rows:
    raise ValueError(f"{task_type} desc_id={desc_id!r}: no predictions (the original "
                     "cannot evaluate an empty list)")
  for i, row in enumerate(rows):
    if (not isinstance(row, (list, tuple)) or len(row) < 3 or not all(
        isinstance(x, numbers.Real) and not isinstance(x, bool) for x in row[:3])):
      raise ValueError(f"{task_type} desc_id={desc_id!r}: prediction {i} must be "
                       f"[video_idx, st, ed, score], got {row!r:.200}")
  return np.asarray([row[:3] for row in rows[:max_pred]], dtype=np.float32)


def _gt_spans(gt: Mapping) -> tuple[np.ndarray, bool]:
  """(S, 2) float32 ground-truth spans and whether the >= 4 span rule applies."""
  ts = gt["ts"]
  try:
    spans = np.asarray(ts, dtype=np.float32)
  except (TypeError, ValueError):
    spans = None
  if spans is not None and spans.shape == (2,):
    return spans[None], False
  if (spans is not None and spans.ndim == 2 and spans.shape[1] == 2
      and len(spans) >= MIN_SPANS_FOR_MULTI_RULE):
    return spans, True
  raise ValueError(
      f"ground truth desc_id={gt['desc_id']!r}: 'ts' must be [st, ed] or a list of "
      f">= {MIN_SPANS_FOR_MULTI_RULE} [st, ed] spans, got {ts!r:.200} (the original misreads "
      "1-3 nested spans as a single span)")


def _correct_at(preds: np.ndarray, on_gt_video: np.ndarray, gt: Mapping,
                iou_thds: Sequence[float]) -> np.ndarray:
  """(T, n) bool: prediction correct at each IoU threshold."""
  spans, multi = _gt_spans(gt)
  # Off-video predictions get IoU 0 (the original multiplies by the match flag).
  ious = np.stack([temporal_iou(preds[:, 1:3], span) * on_gt_video for span in spans])  # (S, n)
  # float32 comparison, as the original's float32 array >= python float.
  reached = ious[None] >= np.asarray(iou_thds, dtype=np.float32)[:, None, None]  # (T, S, n)
  if multi:
    return reached.sum(axis=1) >= MIN_OVERLAPPED_SPANS
  return reached[:, 0]


def _query_hits(preds: np.ndarray, gt_vidx: int, gt: Mapping, task_type: str,
                iou_thds: Sequence[float], recall_topks: Sequence[int]) -> np.ndarray:
  """Recall hits of one query: (T, K) bool for VCMR/SVMR, (K,) for VR."""
  on_gt_video = preds[:, 0] == np.float32(gt_vidx)
  if task_type == "VR":
    return _first_hit_within(on_gt_video, recall_topks)
  if "ts" not in gt:
    raise ValueError(f"ground truth desc_id={gt['desc_id']!r} has no 'ts': "
                     f"{task_type} needs moment annotations")
  correct = _correct_at(preds, on_gt_video, gt, iou_thds)
  if task_type == "SVMR":
    correct = correct[:, on_gt_video]  # rank among the ground-truth video's spans only
  return _first_hit_within(correct, recall_topks)


def _metric_names(task_type: str, iou_thds: Sequence[float], recall_topks: Sequence[int],
                  prefix: str = "") -> list[str]:
  """Names in the original's order: '0.5-r1', ..., '0.7-r100' (VR: 'r1', ...)."""
  if task_type == "VR":
    return [f"{prefix}r{k}" for k in recall_topks]
  return [f"{prefix}{thd}-r{k}" for thd in iou_thds for k in recall_topks]


def _recalls(hits: np.ndarray, names: Sequence[str]) -> dict[str, float]:
  """hits (Q, ...) bool, flattened per query in the order of ``names``."""
  counts = hits.reshape(-1, len(names)).sum(axis=0)
  return {name: rounded_percentage(_fraction(int(c), len(hits))) for name, c in zip(names, counts)}


# --- public API ---


def eval_by_task_type(moment_predictions: Sequence[Mapping], video2idx: Mapping[str, int],
                      ground_truth: Sequence[Mapping], iou_thds: Sequence[float] = (0.5, 0.7),
                      recall_topks: Sequence[int] = RECALL_TOPKS, task_type: str = "SVMR",
                      max_pred_per_query: int = MAX_PRED_PER_QUERY, match_number: bool = True,
                      use_desc_type: bool = True) -> tuple[dict, dict]:
  """(metrics, metrics_by_type) of one task, as the original's function of that name.

  ``match_number``: the original asserts that predictions and ground truth
  have the same desc_ids; we raise a ValueError naming the missing and
  unknown ones. With ``match_number=False`` (a debugging aid in the original)
  only the ground-truth queries that have predictions are evaluated and extra
  predictions are ignored. ``metrics_by_type`` is empty unless
  ``use_desc_type``; then it holds every ``'<type>-<metric>'`` for the types
  v, t, vt (NaN for a type without queries, like the original's 0/0) and
  ``desc_type_ratio``, the share of each type in percent.
  """
  if task_type not in TASK_TYPES:
    raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
  preds_by_id = _index_by_desc_id(moment_predictions, f"{task_type} predictions")
  gt_by_id = _index_by_desc_id(ground_truth, "ground truth")
  missing = gt_by_id.keys() - preds_by_id.keys()
  unknown = preds_by_id.keys() - gt_by_id.keys()
  if match_number and (missing or unknown):
    raise ValueError(
        f"{task_type}: desc_ids of predictions and ground truth must match; "
        + "; ".join(f"{label}: {_describe_ids(ids)}" for label, ids in (
            ("missing predictions for ground-truth desc_ids", missing),
            ("predictions for unknown desc_ids", unknown)) if ids))
  queries = [gt for k, gt in gt_by_id.items() if k in preds_by_id]
  if not queries:
    raise ValueError(f"{task_type}: no ground-truth query has predictions")

  hits, desc_types = [], []
  for gt in queries:
    desc_id = gt["desc_id"]
    if gt.get("vid_name") not in video2idx:
      raise ValueError(f"ground truth desc_id={desc_id!r}: video {gt.get('vid_name')!r} "
                       "is not in the submission's video2idx")
    if use_desc_type:
      if gt.get("type") not in DESC_TYPES:
        raise ValueError(f"ground truth desc_id={desc_id!r}: query type {gt.get('type')!r} "
                         f"is not one of {DESC_TYPES} (use_desc_type=False for data without types)")
      desc_types.append(gt["type"])
    preds = _prediction_array(preds_by_id[desc_id], task_type, max_pred_per_query)
    hits.append(_query_hits(preds, video2idx[gt["vid_name"]], gt, task_type, iou_thds,
                            recall_topks))
  hits = np.stack(hits)  # (Q, T, K) or (Q, K)

  metrics = _recalls(hits, _metric_names(task_type, iou_thds, recall_topks))
  by_type: dict[str, Any] = {}
  if use_desc_type:
    desc_types = np.asarray(desc_types)
    for desc_type in DESC_TYPES:
      names = _metric_names(task_type, iou_thds, recall_topks, prefix=f"{desc_type}-")
      by_type.update(_recalls(hits[desc_types == desc_type], names))
    shares = [rounded_percentage(_fraction(int((desc_types == t).sum()), len(desc_types)))
              for t in DESC_TYPES]
    by_type["desc_type_ratio"] = "v {} t {} vt {}".format(*shares)
  return metrics, by_type


def eval_retrieval(submission: Mapping, ground_truth: Sequence[Mapping],
                   iou_thds: Sequence[float] = (0.5, 0.7), verbose: bool = False,
                   match_number: bool = True, use_desc_type: bool = True) -> dict[str, dict]:
  """Metrics of every task present in ``submission``, in the original's layout.

  Returns ``{"VCMR": {...}, "SVMR": {...}, "VR": {...}}`` (the tasks present,
  in that order) followed, when ``use_desc_type``, by ``"VCMR_by_type"``,
  ``"SVMR_by_type"``, ``"VR_by_type"``. Keys: ``"0.5-r1"`` ... ``"0.7-r100"``
  (VR: ``"r1"`` ... ``"r100"``); by type ``"v-0.7-r1"`` / ``"vt-r10"`` and
  ``"desc_type_ratio"``. R@{1,5,10,100} on the top 100 predictions, fixed
  like the original's. ``verbose`` logs what the original prints.
  """
  if not isinstance(submission, Mapping) or "video2idx" not in submission:
    raise ValueError("submission must be a dict with 'video2idx'")
  video2idx = submission["video2idx"]
  for name, idx in video2idx.items():
    if (not isinstance(idx, numbers.Integral) or isinstance(idx, bool)
        or abs(int(idx)) >= _MAX_EXACT_FLOAT32_INT):
      raise ValueError(f"video2idx[{name!r}] = {idx!r}: video indices must be integers below "
                       f"2**24 (the original compares them in float32)")
  task_types = [t for t in TASK_TYPES if t in submission]
  if not task_types:
    raise ValueError(f"submission has none of {TASK_TYPES}")
  if verbose:
    log.info("Evaluating for task %s", task_types)
  results, by_type = {}, {}
  for task_type in task_types:
    if verbose:
      log.info("Running evaluation with task_type %s, n results %d; n gt %d", task_type,
               len(submission[task_type]), len(ground_truth))
    results[task_type], by_type[f"{task_type}_by_type"] = eval_by_task_type(
        submission[task_type], video2idx, ground_truth, iou_thds=iou_thds,
        recall_topks=RECALL_TOPKS, task_type=task_type, max_pred_per_query=MAX_PRED_PER_QUERY,
        match_number=match_number, use_desc_type=use_desc_type)
  if use_desc_type:
    results.update(by_type)
  return results


def get_submission_top_n(submission: Mapping, top_n: int = 100) -> dict:
  """Every task's prediction lists cut to ``top_n`` (``video2idx`` first).

  Same result as the original's; it also cut the lists of the input dicts in
  place (which eval_vcmr.py relies on, see spec 5.1 step 7), we copy.
  """
  if "video2idx" not in submission:
    raise ValueError("submission must be a dict with 'video2idx'")
  out = {"video2idx": submission["video2idx"]}
  for key, entries in submission.items():
    if key != "video2idx":
      out[key] = [{**e, "predictions": list(e["predictions"][:top_n])} for e in entries]
  return out


def val_log(metrics: Mapping[str, Mapping], split: str, nms_thd: float | None = None) -> dict:
  """Flatten ``eval_retrieval`` output into eval_vcmr.py's ``val_log`` names.

  ``valid_{split}_{task}/{task}_{metric}``, e.g. ``valid_val_VCMR/VCMR_0.7-r1``
  or ``valid_val_VR_by_type/VR_by_type_vt-r10``; with ``nms_thd`` the group
  gets ``_nms_{nms_thd}``: ``valid_val_SVMR_nms_0.5/SVMR_0.5-r5``.
  ``desc_type_ratio`` is skipped, like the original. The original averages
  each value over ranks as ``sum(n_r * v_r) / sum(n_r)``; on one process
  that can move a value by an ulp, we return the value itself.
  """
  suffix = "" if nms_thd is None else f"_nms_{nms_thd}"
  return {f"valid_{split}_{task}{suffix}/{task}_{name}": value
          for task, task_metrics in metrics.items()
          for name, value in task_metrics.items() if name != "desc_type_ratio"}


def vcmr_val_log(split: str, metrics: Mapping[str, Mapping],
                 metrics_nms: Mapping[str, Mapping] | None = None,
                 nms_thd: float | None = None) -> dict:
  """The ``val_log`` of one ``validate_full_vcmr`` run, without its timing key.

  Without NMS: ``val_log(metrics, split)``. With NMS, the original then adds
  the metrics of its second evaluation, which only covers VCMR and SVMR (the
  NMS'd result dict has no VR), under ``_nms_{nms_thd}``; VR entries of
  ``metrics_nms`` are therefore dropped. The original's
  ``valid/vcmr_{split}_ex_per_s`` (examples per second) is not produced.
  """
  out = val_log(metrics, split)
  if metrics_nms is not None:
    if nms_thd is None:
      raise ValueError("nms_thd is needed to name the NMS metrics")
    nms_part = {task: m for task, m in metrics_nms.items()
                if task.removesuffix("_by_type") in NMS_TASK_TYPES}
    out.update(val_log(nms_part, split, nms_thd))
  return out
