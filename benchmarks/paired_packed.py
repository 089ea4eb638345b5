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
(``layout.pack_videos``; ``packed_rows`` then holds the most crowded group). The
videos, the original side, the model, the optimizer and the timing are
bench_paired's own; the losses are the unpacked ones (tests/test_packing.py).

  python benchmarks/paired_packed.py --bench ../shared/bench/bench_paired.py --pack_width 96 \\
      --hero-src /tmp/hero --orig-python /tmp/venv-hero/bin/python \\
      --jax-python "$(which python)" --batch 8 --steps 3 --warmup 1 --rounds 1 \\
      --tasks mlm,mfm-nce,fom,vsm --out paired_packed.json

Every argument but ``--bench``, ``--pack_width`` and ``--pack_videos`` goes to
bench_paired. Its workers run this file again (it stands in for
bench_paired's own path), and read the three settings from the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys

BENCH_ENV, WIDTH_ENV, GROUP_ENV = ("HERO_PAIRED_BENCH", "HERO_PAIRED_PACK_WIDTH",
                                   "HERO_PAIRED_PACK_VIDEOS")


def load_bench(path: str):
  if not os.path.isfile(path):
    sys.exit(f"--bench {path!r}: no such file (bench_paired.py of the shared benchmarks)")
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))   # its bench_original
  spec = importlib.util.spec_from_file_location("bench_paired", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def packed_sizes(bench, width: int, group: int = 1):
  """bench_paired's ``choose_sizes``, then packed rows of ``width`` slots
  shared by pack groups of ``group`` videos."""
  unpacked = bench.choose_sizes

  def choose_sizes(examples, ids, seed):
    from hero_jax import layout, packing
    from hero_jax.objectives import host
    sizes = unpacked(examples, ids, seed)
    ctx = host.HostContext(sizes=sizes, ids=ids, max_txt_len=bench.MAX_TXT_LEN)
    rows = layout.stack_examples([host.repr_example(ex, ctx) for ex in examples])
    needed = packing.batch_rows_needed(rows["row_frame_mask"], rows["row_txt_mask"], width,
                                       group)
    sizes = dataclasses.replace(sizes, packed_rows=needed, packed_width=width, pack_videos=group)
    if group > 1:
      pack_when_stacking(sizes)
    return sizes
  return choose_sizes


def pack_when_stacking(sizes) -> None:
  """Pack groups of several videos are packed per batch, not per example (as
  hero_jax's pipelines do): bench_paired stacks its examples with
  ``layout.stack_examples``, so from here on that packs the stacked batch."""
  from hero_jax import layout, packing
  stack = layout.stack_examples
  layout.stack_examples = lambda examples: packing.pack_stacked(stack(examples), sizes)


def main() -> None:
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--bench", default=os.environ.get(BENCH_ENV))
  parser.add_argument("--pack_width", type=int, default=int(os.environ.get(WIDTH_ENV, "96")))
  parser.add_argument("--pack_videos", type=int, default=int(os.environ.get(GROUP_ENV, "1")))
  ours, rest = parser.parse_known_args()
  if not ours.bench:
    sys.exit("--bench: the path of bench_paired.py is needed")
  if ours.pack_width < 1:
    sys.exit(f"--pack_width must be positive, got {ours.pack_width}")
  if ours.pack_videos < 1:
    sys.exit(f"--pack_videos must be positive, got {ours.pack_videos}")
  os.environ[BENCH_ENV], os.environ[WIDTH_ENV] = os.path.abspath(ours.bench), str(ours.pack_width)
  os.environ[GROUP_ENV] = str(ours.pack_videos)
  bench = load_bench(ours.bench)
  bench.__file__ = os.path.abspath(__file__)   # its workers start this script
  bench.choose_sizes = packed_sizes(bench, ours.pack_width, ours.pack_videos)
  sys.argv = [sys.argv[0]] + rest
  bench.main()


if __name__ == "__main__":
  main()
