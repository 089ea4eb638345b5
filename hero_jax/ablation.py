"""The paper's ablation tables as one command: pre-train, fine-tune, evaluate, tabulate.

  python -m hero_jax.ablation --table tasks --scale tiny --workdir /tmp/ablation
  python -m hero_jax.ablation --table baselines --scale tiny --workdir /tmp/ablation
  python -m hero_jax.ablation --table tasks --scale full --workdir gs://bucket/ablation \\
      --shard 0/6                       # one of 6 jobs, each running every 6th stage

Every row is a file of ``configs/ablation/`` (``ROW = recipe.Row(...)``). For
each row the command runs its pre-training (if any; rows with the same
recipe share one run), then each downstream fine-tune from it with its
whole-split evaluation, and writes ``<workdir>/<table>_<scale>.md`` and
``.json``: the measured numbers, the paper's beside them. A stage that
finished left ``result.json`` in its folder and is not run again; one that
stopped resumes from its newest checkpoint, so the command resumes where it
stopped. The stages share one persistent compilation cache
(``--compilation_cache``), so each shape compiles once per table.

``--shard i/n`` runs every n-th stage from the i-th, pre-training first. A
fine-tune whose pre-training another shard runs waits for it (polling its
``result.json``), so the n jobs can start together; the table is written
from whatever results exist when a shard ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import logging
import pkgutil
import sys
import time
from pathlib import Path
from typing import Optional

from hero_jax import paths

log = logging.getLogger("hero_jax")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training run of the plan: a row's pre-training or one fine-tune."""
  row_name: str
  task: str        # "pretrain" or a downstream task
  folder: str      # relative to the workdir; shared between rows with the same recipe
  init_from: str   # relative folder of the pre-training run ("": the config's own start)


def _row_modules(rows_dirs) -> list:
  """(name, module) of every row file: ``configs/ablation/`` and each extra folder."""
  import configs.ablation as package
  out = [(info.name, importlib.import_module(f"configs.ablation.{info.name}"))
         for info in pkgutil.iter_modules(package.__path__)]
  for folder in rows_dirs:
    files = sorted(Path(folder).expanduser().glob("*.py"))
    if not files:
      raise ValueError(f"--rows_dir {folder}: no row files (*.py) there")
    for path in files:
      spec = importlib.util.spec_from_file_location(f"hero_ablation_rows.{path.stem}", path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      out.append((path.stem, module))
  return out


def load_rows(table: str, names: Optional[list] = None, rows_dirs: tuple = ()) -> list:
  """(name, Row) of the table's rows (``all``: both tables), in the paper's order;
  ``rows_dirs``: folders with more row files (your own rows)."""
  rows = []
  for name, module in _row_modules(rows_dirs):
    row = getattr(module, "ROW", None)
    if row is not None and table in ("all", row.table):
      rows.append((name, row))
  if names:
    known = {name for name, _ in rows}
    unknown = sorted(set(names) - known)
    if unknown:
      raise ValueError(f"--rows: unknown rows {unknown} in table {table!r}; rows: {sorted(known)}")
    rows = [(n, r) for n, r in rows if n in names]
  from configs.ablation import recipe
  return sorted(rows, key=lambda nr: (recipe.TABLES.index(nr[1].table), nr[1].order))


def plan(rows: list) -> list:
  """The stages of the rows, each once: every pre-training before any fine-tune."""
  pretrain, finetune, seen = [], [], set()
  for name, row in rows:
    if row.pretrain_key and row.pretrain_key not in seen:
      seen.add(row.pretrain_key)
      pretrain.append(Stage(name, "pretrain", f"pretrain/{row.pretrain_key}", ""))
    for task in row.downstream:
      folder = f"finetune/{row.finetune_key}/{task}"
      if folder not in seen:
        seen.add(folder)
        start = f"pretrain/{row.pretrain_key}" if row.pretrain_key else ""
        finetune.append(Stage(name, task, folder, start))
  return pretrain + finetune


def stage_config(stage: Stage, row, scale: str, workdir, *, data_dir: str = "",
                 init_without_pretraining: str = "", overrides: tuple = ()):
  """The stage's training config: the row file's, with the run's choices applied."""
  from configs.ablation import recipe
  from hero_jax.train import tasks
  c = recipe.stage_config(row, f"{stage.task},{scale}")
  if data_dir and scale == "tiny":   # the tiny configs' folders start with recipe.TINY_DATA_DIR
    for entry in c.data.datasets.values():
      entry.data_dir = data_dir + entry.data_dir.removeprefix(recipe.TINY_DATA_DIR)
  if stage.init_from:
    c.init_from, c.init_format = str(workdir / stage.init_from), "run"
  elif stage.task != "pretrain" and init_without_pretraining:
    c.init_from = init_without_pretraining
  for item in overrides:
    key, _, value = item.partition("=")
    error = tasks.unknown_field_error(c, key)
    if error:
      raise ValueError(f"--set {item}: {error}")
    node = c
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = type(node[leaf])(json.loads(value)) if not isinstance(node[leaf], str) else value
  tasks.check_config(c)
  return c


def run_stage(stage: Stage, config, workdir) -> dict:
  """Trains the stage (resuming it) and returns its final metrics; cached in result.json."""
  from hero_jax.train import loop
  folder = workdir / stage.folder
  done = folder / "result.json"
  if done.exists():
    return json.loads(done.read_text())["metrics"]
  folder.mkdir(parents=True, exist_ok=True)
  log.info("ablation: %s (%s) in %s", stage.task, stage.row_name, folder)
  (folder / "config.json").write_text(config.to_json_best_effort(indent=1))
  trainer = loop.Trainer(config, str(folder))
  metrics = trainer.train()
  if not any(k.startswith("val/") for k in metrics):
    # It had finished training but not its evaluation (stopped right after the last save).
    metrics.update(trainer.evaluate(trainer.restore()))
  write_result(done, {"stage": dataclasses.asdict(stage), "metrics": metrics})
  return metrics


def write_result(done, record: dict) -> None:
  """Writes a stage's ``result.json`` whole or not at all (a temporary file
  renamed): another shard waiting for it must never read half a file."""
  partial = done.with_name(done.name + ".partial")
  partial.write_text(json.dumps(record, indent=1))
  partial.rename(done)


def column_value(metrics: dict, suffix: str) -> Optional[float]:
  """A table cell from a fine-tune's final metrics: VCMR (no NMS) at tIoU 0.7, or QA
  accuracy, as percentages."""
  for key, value in sorted(metrics.items()):
    if not key.startswith("val/"):
      continue
    if suffix == "acc" and key.endswith("/acc") and key.count("/") == 3:
      return 100.0 * value
    if suffix != "acc" and key.endswith(f"/VCMR/{suffix}"):
      return float(value)
  return None


def table(rows: list, results: dict, table_name: str, scale: str) -> tuple:
  """(markdown, json-able dict) of the measured table, the paper's numbers beside."""
  from configs.ablation import recipe
  columns = [c for c in recipe.COLUMNS
             if any(c[1] in row.downstream for _, row in rows)]
  head = ["row", "pre-training", "model" if table_name == "baselines" else "tasks"]
  lines = ["| " + " | ".join(head + [c for c, _, _ in columns]) + " |",
           "|" + "---|" * (len(head) + len(columns))]
  out = []
  for name, row in rows:
    data, _, what = row.label.partition(" | ")
    cells, record = [], {"row": name, "label": row.label, "columns": {}}
    for column, task, suffix in columns:
      metrics = results.get(f"finetune/{row.finetune_key}/{task}")
      value = None if metrics is None or task not in row.downstream else column_value(metrics, suffix)
      paper = row.paper.get(column)
      record["columns"][column] = {"measured": value, "paper": paper}
      text = "-" if value is None else f"{value:.2f}"
      cells.append(text if paper is None else f"{text} ({paper:.2f})")
    lines.append("| " + " | ".join([name, data, what] + cells) + " |")
    out.append(record)
  note = (f"\nMeasured ({scale} scale) with the paper's number in brackets; '-': not run yet. "
          "TVR / How2R: VCMR recall at tIoU 0.7 without NMS; QA: accuracy, %.\n")
  return "\n".join(lines) + "\n" + note, {"table": table_name, "scale": scale, "rows": out}


def run(table_name: str, scale: str, workdir: str, *, row_names=None, rows_dirs: tuple = (),
        shard=(0, 1), data_dir: str = "", init_without_pretraining: str = "",
        overrides: tuple = ()) -> str:
  """Runs this shard's stages of the table and writes the table; returns its Markdown."""
  root = paths.workdir(workdir)
  rows = load_rows(table_name, row_names, rows_dirs)
  by_name = dict(rows)
  stages = plan(rows)
  index, count = shard
  owner = {stage.folder: i % count for i, stage in enumerate(stages)}
  results = {}
  for i, stage in enumerate(stages):
    done = root / stage.folder / "result.json"
    if i % count != index:
      if done.exists():
        results[stage.folder] = json.loads(done.read_text())["metrics"]
      continue
    if stage.init_from and owner[stage.init_from] != index:
      _wait_for(root / stage.init_from / "result.json", f"shard {owner[stage.init_from]}/{count}")
    config = stage_config(stage, by_name[stage.row_name], scale, root, data_dir=data_dir,
                          init_without_pretraining=init_without_pretraining, overrides=overrides)
    results[stage.folder] = run_stage(stage, config, root)
  markdown, record = table(rows, results, table_name, scale)
  (root / f"{table_name}_{scale}.md").write_text(markdown)
  (root / f"{table_name}_{scale}.json").write_text(json.dumps(record, indent=1))
  return markdown


def _wait_for(done, who: str, poll_s: float = 30.0) -> None:
  """Waits until another shard's pre-training has finished (its result.json)."""
  if not done.exists():
    log.info("ablation: waiting for %s (%s runs it)", done.parent, who)
  while not done.exists():
    time.sleep(poll_s)


def _shard(text: str) -> tuple:
  try:
    index, count = (int(x) for x in text.split("/"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"--shard: expected i/n, e.g. 0/4, got {text!r}") from None
  if not 0 <= index < count:
    raise argparse.ArgumentTypeError(f"--shard: need 0 <= i < n, got {text!r}")
  return index, count


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--table", required=True, choices=["tasks", "baselines", "all"])
  parser.add_argument("--scale", default="tiny", choices=["tiny", "full"])
  parser.add_argument("--workdir", required=True, help="a local folder or gs://...")
  parser.add_argument("--rows", default="", help="comma-separated row names (default: all)")
  parser.add_argument("--rows_dir", action="append", default=[],
                      help="a folder of your own row files (repeatable)")
  parser.add_argument("--shard", type=_shard, default=(0, 1), help="i/n: this job's stages")
  parser.add_argument("--data_dir", default="",
                      help="tiny scale: where the synthetic sets are built "
                           "(default /tmp/hero_tfds_ablation)")
  parser.add_argument("--init_without_pretraining", default="",
                      help="weights the fine-tunes of rows without pre-training start from "
                           "(full scale: RoBERTa, as the paper's 'no pre-training'); default: "
                           "the fine-tune config's own start")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="a config override for every stage, e.g. train.num_steps=20")
  parser.add_argument("--compilation_cache", default="",
                      help="JAX's persistent compilation cache, shared by the stages (their "
                           "models and batches have the same shapes); default "
                           "<workdir>/compilation_cache for a local workdir; 'none': off")
  args = parser.parse_args(argv)
  cache = args.compilation_cache or (
      "" if paths.is_remote(args.workdir) else f"{args.workdir}/compilation_cache")
  if cache and cache != "none":
    from hero_jax import compilation_cache
    compilation_cache.enable(cache)
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()   # grain workers read absl flags
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger("hero_jax").setLevel(logging.INFO)
  try:
    markdown = run(args.table, args.scale, args.workdir,
                   row_names=[r for r in args.rows.split(",") if r],
                   rows_dirs=tuple(args.rows_dir), shard=args.shard,
                   data_dir=args.data_dir, init_without_pretraining=args.init_without_pretraining,
                   overrides=tuple(args.set))
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(markdown)


if __name__ == "__main__":
  main()
