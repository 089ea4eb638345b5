"""The paired benchmark against the original HERO, with hero_jax's rows packed.

``bench_paired.py`` (the project's shared benchmark, see the README's Speed
section) times the original and hero_jax on the same TV-like videos, each
side in its own process, alternating. Its hero_jax side pads every subtitle
row to the batch's longest, as the original does. This script runs that same
driver with one change on the hero_jax side only: the layout packs each
video's subtitle rows into rows of ``--pack_width`` slots (``packed_rows`` =
the fewest that hold the batch's most crowded video, ``packing.rows_needed``),
as a config does with ``layout.packed_rows`` / ``layout.packed_width``; with
``--pack_videos g`` the rows of g consecutive videos share their packed rows
(``layout.pack_videos``; ``packed_rows`` then holds the most crowded group), and
``--group_predictions -1`` pools MLM's prediction slots per group
(``objectives.mlm.group_predictions``: the most any group of the batch has). The
videos, the original side, the model, the optimizer and the timing are
bench_paired's own; the losses are the unpacked ones (tests/test_packing.py).

  python benchmarks/paired_packed.py --bench ../shared/bench/bench_paired.py --pack_width 96 \\
      --hero-src /tmp/hero --orig-python /tmp/venv-hero/bin/python \\
      --jax-python "$(which python)" --batch 8 --steps 3 --warmup 1 --rounds 1 \\
      --tasks mlm,mfm-nce,fom,vsm --out paired_packed.json

Two more changes, each off by default: ``--dtype bfloat16`` computes the
hero_jax side in bfloat16 (``model.dtype``; float32 parameters and Adam
state, as the README's Speed section describes), and ``--original_autocast``
runs the original's forward under ``torch.autocast("cpu", torch.bfloat16)``
(its backward follows; parameters, gradients and the optimizer stay float32),
the CPU counterpart of the original's own mixed precision (apex, GPU only),
for a like-for-like comparison of the two in bfloat16.

Every argument but ``--bench``, ``--pack_width``, ``--pack_videos``,
``--group_predictions``, ``--dtype`` and ``--original_autocast`` goes to
bench_paired. Its workers run this file again
(it stands in for bench_paired's own path), and read these settings from the
environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys

BENCH_ENV, WIDTH_ENV, GROUP_ENV, BUDGET_ENV, DTYPE_ENV, AUTOCAST_ENV = (
    "HERO_PAIRED_BENCH", "HERO_PAIRED_PACK_WIDTH", "HERO_PAIRED_PACK_VIDEOS",
    "HERO_PAIRED_GROUP_PREDICTIONS", "HERO_PAIRED_DTYPE", "HERO_PAIRED_ORIGINAL_AUTOCAST")


def load_bench(path: str):
  if not os.path.isfile(path):
    sys.exit(f"--bench {path!r}: no such file (bench_paired.py of the shared benchmarks)")
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))   # its bench_original
  spec = importlib.util.spec_from_file_location("bench_paired", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def packed_sizes(bench, width: int, group: int = 1, budget: int = 0):
  """bench_paired's ``choose_sizes``, then packed rows of ``width`` slots
  shared by pack groups of ``group`` videos."""
  unpacked = bench.choose_sizes

  def choose_sizes(examples, ids, seed):
    import numpy as np
    from hero_jax import layout, packing
    from hero_jax.objectives import host, registry
    sizes = unpacked(examples, ids, seed)
    ctx = host.HostContext(sizes=sizes, ids=ids, max_txt_len=bench.MAX_TXT_LEN)
    rows = layout.stack_examples([host.repr_example(ex, ctx) for ex in examples])
    # VSM packs its queries with its rows: its draws as bench_paired makes them.
    rng = np.random.default_rng(seed)
    vsm = layout.stack_examples([registry.get("vsm").make_example(ex, rng, ctx)
                                 for ex in examples])
    needed = packing.packed_rows_for([rows, vsm], width, group)
    sizes = dataclasses.replace(sizes, packed_rows=needed, packed_width=width, pack_videos=group)
    if group > 1:
      pack_when_stacking(sizes, budget)
    return sizes
  return choose_sizes


def pack_when_stacking(sizes, budget: int = 0) -> None:
  """Pack groups of several videos are packed per batch, not per example (as
  hero_jax's pipelines do): bench_paired stacks its examples with
  ``layout.stack_examples``, so from here on that packs the stacked batch.
  With ``budget`` (-1: the most real predictions of any group of the batch),
  MLM's settings get ``group_predictions``."""
  from hero_jax import layout, packing
  stack = layout.stack_examples

  def stack_and_pack(examples):
    batch = packing.pack_stacked(stack(examples), sizes)
    if budget and "mlm_weights" in batch:
      groups = len(batch["pack_src"])
      predict_per_group(budget if budget > 0 else
                        int(batch["mlm_weights"].reshape(groups, -1).sum(-1).max()))
    return batch
  layout.stack_examples = stack_and_pack


def predict_per_group(budget: int) -> None:
  """``registry.get("mlm")`` (bench_paired's settings come from it) with
  ``group_predictions = budget`` as its settings' default."""
  from hero_jax.objectives import mlm, registry
  get = registry.get

  @dataclasses.dataclass(frozen=True)
  class Budgeted(mlm.MlmSettings):
    group_predictions: int = budget
  registry.get = lambda name: (dataclasses.replace(get(name), settings=Budgeted)
                               if name == "mlm" else get(name))


def compute_in(dtype: str) -> None:
  """bench_paired builds its hero_jax model as ``tasks.PRESETS["base"](dtype=
  "float32")``: from here on that preset computes in ``dtype``."""
  from hero_jax.train import tasks
  base = tasks.PRESETS["base"]
  tasks.PRESETS["base"] = lambda **fields: base(**{**fields, "dtype": dtype})


def autocast_original(bench) -> None:
  """The original's model, as bench_paired builds it, with its forward (and
  so the losses it computes) under ``torch.autocast("cpu", bfloat16)``."""
  build = bench.bo.build_model

  def build_autocast(orig, drop_svmr_prob):
    import torch
    model, cfg = build(orig, drop_svmr_prob)
    forward = model.forward

    def forward_in_bf16(*args, **kwargs):
      with torch.autocast("cpu", dtype=torch.bfloat16):
        return forward(*args, **kwargs)
    model.forward = forward_in_bf16
    return model, cfg
  bench.bo.build_model = build_autocast


def main() -> None:
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--bench", default=os.environ.get(BENCH_ENV))
  parser.add_argument("--pack_width", type=int, default=int(os.environ.get(WIDTH_ENV, "96")))
  parser.add_argument("--pack_videos", type=int, default=int(os.environ.get(GROUP_ENV, "1")))
  parser.add_argument("--group_predictions", type=int,
                      default=int(os.environ.get(BUDGET_ENV, "0")),
                      help="MLM's objectives.mlm.group_predictions with --pack_videos > 1 (-1: "
                           "the most real predictions of any group of the batch)")
  parser.add_argument("--dtype", default=os.environ.get(DTYPE_ENV, "float32"),
                      choices=["float32", "bfloat16"], help="the hero_jax side's model.dtype")
  parser.add_argument("--original_autocast", action="store_true",
                      default=os.environ.get(AUTOCAST_ENV) == "1",
                      help="the original's forward under torch.autocast('cpu', bfloat16)")
  ours, rest = parser.parse_known_args()
  if not ours.bench:
    sys.exit("--bench: the path of bench_paired.py is needed")
  if ours.pack_width < 1:
    sys.exit(f"--pack_width must be positive, got {ours.pack_width}")
  if ours.pack_videos < 1:
    sys.exit(f"--pack_videos must be positive, got {ours.pack_videos}")
  os.environ[BENCH_ENV], os.environ[WIDTH_ENV] = os.path.abspath(ours.bench), str(ours.pack_width)
  os.environ[GROUP_ENV], os.environ[BUDGET_ENV] = str(ours.pack_videos), str(ours.group_predictions)
  os.environ[DTYPE_ENV], os.environ[AUTOCAST_ENV] = ours.dtype, str(int(ours.original_autocast))
  bench = load_bench(ours.bench)
  side = rest[rest.index("--worker") + 1] if "--worker" in rest else None
  if side == "hero_jax" and ours.dtype != "float32":
    compute_in(ours.dtype)
  if side == "original" and ours.original_autocast:
    autocast_original(bench)
  bench.__file__ = os.path.abspath(__file__)   # its workers start this script
  bench.choose_sizes = packed_sizes(bench, ours.pack_width, ours.pack_videos,
                                    ours.group_predictions)
  sys.argv = [sys.argv[0]] + rest
  bench.main()


if __name__ == "__main__":
  main()
