"""Writers (and readers) for retrieval result files (spec 5.6, "Result files").

Three formats:

* The original HERO result JSON (``eval_vcmr.py`` saves it with
  ``utils/basic_utils.save_json``, i.e. plain ``json.dump``), which is also
  TVRetrieval's prediction format (``standalone_eval/README.md``)::

    {"video2idx": {vid_name: idx},
     "VCMR" | "SVMR" | "VR": [{"desc_id": int, "desc": str,
                              "predictions": [[video_idx, st, ed, score], ...]}]}

  VR rows are ``[video_idx, 0, 0, score]``.
* TVR's CodaLab upload (TVRetrieval ``standalone_eval/README.md``, "Codalab
  Submission"): one zip, no enclosing folder, holding
  ``tvr_val_submission.json`` (video2idx, VCMR, SVMR, VR) and
  ``tvr_test_public_submission.json`` (video2idx, VCMR, VR: SVMR needs the
  hidden ground-truth video), each in the format above with at most 100
  predictions of exactly 4 items per query.
* VALUE's How2R format: VALUE StarterCode ``utils/tvr_eval_utils.py``
  ``format_submission_file`` drops ``video2idx`` and ``desc`` and the
  scores: VR predictions are a list of video indices, VCMR / SVMR predictions
  ``[video_idx, st, ed]``. VALUE's scorer (EvaluationTools
  ``scoring_program/evaluate_how2r.py`` / ``evaluate_tvr.py``) reads
  ``how2r_val_predictions.json`` and ``how2r_test_public_predictions.json``
  from the ``how2r/`` folder of the uploaded zip (layout of its
  ``submission_data_sample``), puts ``video2idx`` back from
  ``how2r_video2dur_idx.json`` and turns each VR index ``v`` into
  ``[v, 0, 0, 0]`` (``from_value_format`` does the same).
"""

from __future__ import annotations

import io
import json
import numbers
import os
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np
from etils import epath

from hero_jax.eval.retrieval_metrics import MAX_PRED_PER_QUERY, TASK_TYPES, get_submission_top_n

TVR_VAL_FILE = "tvr_val_submission.json"
TVR_TEST_PUBLIC_FILE = "tvr_test_public_submission.json"
VALUE_HOW2R_DIR = "how2r"
VALUE_HOW2R_FILES = {"val": "how2r_val_predictions.json",
                     "test_public": "how2r_test_public_predictions.json"}


# --- validation ---


def _is_number(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_submission(submission: Mapping, required: Sequence[str] = ()) -> None:
  """Raise a ValueError naming the first malformed item of an original-format result.

  Checks ``video2idx`` (names to ints), that every task in ``required`` is
  present, and that each query entry has a ``desc_id`` (unique per task) and
  ``predictions`` rows of exactly 4 numbers whose video index is one of
  ``video2idx``'s values.
  """
  if not isinstance(submission, Mapping) or not isinstance(submission.get("video2idx"), Mapping):
    raise ValueError("submission must be a dict with a 'video2idx' dict")
  for name, idx in submission["video2idx"].items():
    if not isinstance(idx, numbers.Integral) or isinstance(idx, bool):
      raise ValueError(f"video2idx[{name!r}] must be an int, got {idx!r}")
  known = set(submission["video2idx"].values())
  for task in required:
    if task not in submission:
      raise ValueError(f"submission has no {task!r} entry (needs {list(required)})")
  unexpected = [k for k in submission if k != "video2idx" and k not in TASK_TYPES]
  if unexpected:
    raise ValueError(f"submission has unknown entries {unexpected}; allowed: video2idx, "
                     f"{', '.join(TASK_TYPES)}")
  for task in TASK_TYPES:
    seen = set()
    for i, entry in enumerate(submission.get(task, ())):
      if not isinstance(entry, Mapping) or "desc_id" not in entry or "predictions" not in entry:
        raise ValueError(f"{task} entry {i} needs 'desc_id' and 'predictions': {entry!r:.200}")
      desc_id = entry["desc_id"]
      if desc_id in seen:
        raise ValueError(f"{task}: desc_id {desc_id!r} appears more than once")
      seen.add(desc_id)
      for j, row in enumerate(entry["predictions"]):
        if not isinstance(row, (list, tuple)) or len(row) != 4 or not all(map(_is_number, row)):
          raise ValueError(f"{task} desc_id={desc_id!r}: prediction {j} must be "
                           f"[video_idx, st, ed, score], got {row!r:.200}")
        if row[0] not in known:
          raise ValueError(f"{task} desc_id={desc_id!r}: prediction {j} has video index "
                           f"{row[0]!r}, which is not in video2idx")


# --- (a) the original result JSON ---


def query_entry(desc_id: int, predictions: Sequence[Sequence[float]], desc: str = "") -> dict:
  """One query's entry, as eval_vcmr.py builds it (``desc`` is left empty there).

  numpy scalars become python numbers (JSON-serialisable); other values are
  kept, so VR rows stay ``[video_idx, 0, 0, score]`` like the original's.
  """
  def py(x):
    return x.item() if isinstance(x, np.generic) else x
  return {"desc_id": int(desc_id), "desc": desc,
          "predictions": [[int(r[0])] + [py(x) for x in r[1:4]] for r in predictions]}


def write_result_json(path: str | os.PathLike, submission: Mapping) -> None:
  """Save an original-format result (checked first) with ``json.dump``, like the original."""
  check_submission(submission)
  with epath.Path(path).open("w") as f:
    json.dump(submission, f)


def read_result_json(path: str | os.PathLike) -> dict:
  """Load and check an original-format result file."""
  with epath.Path(path).open() as f:
    submission = json.load(f)
  check_submission(submission)
  return submission


# --- (b) TVR CodaLab ---


def tvr_codalab_payload(val_submission: Mapping, test_public_submission: Mapping,
                        top_n: int = MAX_PRED_PER_QUERY) -> dict[str, dict]:
  """{file name in the zip: content} for TVR's CodaLab server.

  val needs VCMR, SVMR and VR; test-public needs VCMR and VR and loses its
  SVMR entry if it has one (not evaluable there, the README lists 3 entries).
  Lists are cut to ``top_n`` (100: the README's list length, and all the
  scorer reads).
  """
  check_submission(val_submission, required=TASK_TYPES)
  check_submission(test_public_submission, required=("VCMR", "VR"))
  test_public = {k: v for k, v in test_public_submission.items() if k != "SVMR"}
  return {TVR_VAL_FILE: get_submission_top_n(val_submission, top_n),
          TVR_TEST_PUBLIC_FILE: get_submission_top_n(test_public, top_n)}


def write_tvr_codalab_zip(path: str | os.PathLike, val_submission: Mapping,
                          test_public_submission: Mapping,
                          top_n: int = MAX_PRED_PER_QUERY) -> None:
  """The CodaLab upload: a zip with the two JSON files at its root (no folder)."""
  _write_zip(path, tvr_codalab_payload(val_submission, test_public_submission, top_n))


# --- (c) VALUE How2R ---


def to_value_format(submission: Mapping, top_n: int | None = MAX_PRED_PER_QUERY) -> dict:
  """VALUE's retrieval format (StarterCode ``format_submission_file``).

  No ``video2idx``, no ``desc``, no scores: ``{"VR": [{"desc_id", "predictions":
  [video_idx, ...]}], "VCMR"/"SVMR": [{"desc_id", "predictions": [[video_idx,
  st, ed], ...]}]}``. Lists are cut to ``top_n`` first (VALUE's eval_vcmr.py
  formats the lists it already cut to ``max_after_nms``); None keeps all.
  """
  check_submission(submission)
  out = {}
  for task in TASK_TYPES:
    if task not in submission:
      continue
    out[task] = []
    for entry in submission[task]:
      rows = entry["predictions"][:top_n]
      preds = [r[0] for r in rows] if task == "VR" else [[r[0], r[1], r[2]] for r in rows]
      out[task].append({"desc_id": entry["desc_id"], "predictions": preds})
  return out


def from_value_format(value_submission: Mapping, video2idx: Mapping[str, int]) -> dict:
  """Back to an evaluable original-format dict, as VALUE's scorer does.

  Adds ``video2idx``; VR indices become ``[v, 0, 0, 0]``; VCMR / SVMR rows
  get a score of 0 (``eval_retrieval`` never reads it).
  """
  out: dict[str, Any] = {"video2idx": dict(video2idx)}
  for task, entries in value_submission.items():
    if task not in TASK_TYPES:
      raise ValueError(f"unknown entry {task!r} in a VALUE submission; allowed: {TASK_TYPES}")
    out[task] = []
    for i, entry in enumerate(entries):
      if not isinstance(entry, Mapping) or "desc_id" not in entry or "predictions" not in entry:
        raise ValueError(f"{task} entry {i} needs 'desc_id' and 'predictions': {entry!r:.200}")
      rows = []
      for j, p in enumerate(entry["predictions"]):
        row = [p, 0, 0] if task == "VR" else p
        if not isinstance(row, (list, tuple)) or len(row) != 3 or not all(map(_is_number, row)):
          want = "a video index" if task == "VR" else "[video_idx, st, ed]"
          raise ValueError(f"{task} desc_id={entry['desc_id']!r}: prediction {j} must be "
                           f"{want}, got {p!r:.200}")
        rows.append([*row, 0])
      out[task].append({"desc_id": entry["desc_id"], "predictions": rows})
  return out


def value_how2r_payload(val_submission: Mapping | None = None,
                        test_public_submission: Mapping | None = None,
                        top_n: int | None = MAX_PRED_PER_QUERY) -> dict[str, dict]:
  """{path in the zip: content} of the How2R part of a VALUE upload."""
  splits = {"val": val_submission, "test_public": test_public_submission}
  if all(s is None for s in splits.values()):
    raise ValueError("give at least one of val_submission / test_public_submission")
  return {f"{VALUE_HOW2R_DIR}/{VALUE_HOW2R_FILES[split]}": to_value_format(sub, top_n)
          for split, sub in splits.items() if sub is not None}


def write_value_how2r_zip(path: str | os.PathLike, val_submission: Mapping | None = None,
                          test_public_submission: Mapping | None = None, mode: str = "w",
                          top_n: int | None = MAX_PRED_PER_QUERY) -> None:
  """Write (``mode="w"``) or add to (``"a"``, the zip of the other VALUE tasks)
  a VALUE upload zip: ``how2r/how2r_{val,test_public}_predictions.json``.
  VALUE asks for both splits; either may be given alone while assembling."""
  _write_zip(path, value_how2r_payload(val_submission, test_public_submission, top_n), mode)


def _write_zip(path: str | os.PathLike, files: Mapping[str, Any], mode: str = "w") -> None:
  """Built in memory and written whole, so ``path`` may be in a bucket (no seeks)."""
  path = epath.Path(path)
  buffer = io.BytesIO(path.read_bytes() if mode == "a" else b"")
  with zipfile.ZipFile(buffer, mode, compression=zipfile.ZIP_DEFLATED) as zf:
    existing = set(zf.namelist()) if mode == "a" else set()
    for name, content in files.items():
      if name in existing:
        raise ValueError(f"{path} already holds {name}")
      zf.writestr(name, json.dumps(content))
  path.write_bytes(buffer.getvalue())
