"""Input supply vs the step's demand: videos/s per objective, host-fed path and frame bank.

  python benchmarks/input_pipeline.py                       # TV-like synthetic set, built in a temp dir
  python benchmarks/input_pipeline.py --release_dir ../shared/fixtures/hero_reference/release_format
  python benchmarks/input_pipeline.py --dataset_dir ~/tensorflow_datasets/hero_tv/videos/1.0.0
  python benchmarks/input_pipeline.py --accelerator H100 --accelerators_per_host 8 --workers 0 2
  python benchmarks/input_pipeline.py --objectives fom-device --train_videos 4096 --bank_workers 0 2

Three paths, the first two with 0..n grain worker processes:

* ``host``: the host decodes every video's float16 frames, pads them and
  ships them with the batch (``config.data.frame_bank = "off"``);
* ``bank``: the frames sit on the devices (``hero_jax.data.frame_bank``); the
  host reads records without their frames and ships ``frame_ids`` (the bank's
  load time is printed once);
* ``examples``: for the objectives whose step draws (``mlm-device``,
  ``mfm-nce-device``, ``fom-device``, ``vsm-device``), the laid-out examples
  sit on the devices too (``hero_jax.data.example_bank``,
  ``config.data.example_bank``); the host ships ``example_ids`` only (the
  time to make the bank is printed).

Demand: the videos/s one accelerator consumes at ``--mfu`` of its bf16 peak
(``KNOWN_PEAKS`` of ``benchmarks/train_step.py``) with ``--gflop_per_video``
useful FLOPs per video per training step (135: the base config on TV-like
videos, forward + backward; ``benchmarks/train_step.py`` prints the measured
figure), times ``--accelerators_per_host``. ``--step_videos_per_s`` adds the
demand of a measured step. The ratio supply / demand is what the input must
keep above 1 (the goal: 1.5 for the bank path). A batch counts as supplied
once it is a global ``jax.Array`` on this machine's first device
(``pipeline.make_global_batch``, as the loop hands it to the step); MB/s
counts its bytes. The first 1 + workers batches of each run (worker
start-up) are not timed. ``--read_threads`` sets grain's read threads per
pipeline process (``config.data.read_threads``, default 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from absl import flags

from hero_jax import layout
from hero_jax.data import build, example_bank, frame_bank, pipeline, synthetic
from hero_jax.objectives import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import KNOWN_PEAKS  # noqa: E402

# *-device: the objective with its random choices drawn in the step.
OBJECTIVES = ("mlm", "mlm-device", "mfm-nce", "mfm-nce-device", "fom", "fom-device", "vsm",
              "vsm-device")
# Frames, subtitles and feature size of HERO's TV features (60-90 s at 1.5 s a
# frame, ResNet + SlowFast 4352-d), as the synthetic generator can make them.
TV_LIKE = synthetic.SyntheticSpec(train_videos=256, val_videos=8, feature_dim=4352,
                                  min_frames=40, max_frames=60, min_sub_words=8, max_sub_words=16)


def measure(videos, objective, sizes, batch_videos, workers, batches, frame_index=None,
            read_threads=1, example_rows=None):
  ctx = pipeline.host_context(videos, sizes, queries_per_video=sizes.queries)
  if example_rows is not None:
    it = example_bank.IndexIterator(example_rows, objective, batch_videos, seed=0)
  else:
    it = pipeline.make_pipeline(videos, objective, ctx, pipeline.PipelineOptions(
        batch_videos=batch_videos, seed=0, worker_count=workers, read_threads=read_threads),
        process_index=0, process_count=1, frame_index=frame_index)
  import jax
  from hero_jax.train import sharding
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
  to_device = sharding.batch_sharding(mesh)
  for _ in range(1 + workers):   # untimed: every worker started and delivering
    jax.block_until_ready(pipeline.make_global_batch(next(it), to_device))
  nbytes = 0
  start = time.perf_counter()
  for _ in range(batches):
    batch = pipeline.make_global_batch(next(it), to_device)
    nbytes += sum(v.nbytes for v in batch.values())
  jax.block_until_ready(batch)
  seconds = time.perf_counter() - start
  it.close()
  return batches * batch_videos / seconds, nbytes / seconds / 1e6


def sizes_for(videos) -> layout.LayoutSizes:
  """Layout sizes that fit the set (from its first videos), capped at HERO's."""
  probe = [videos.video(i) for i in range(min(len(videos), 64))]
  frames = max(v.num_frames for v in probe)
  rows = max(len(v.sub_frames) for v in probe)
  row_frames = max(max((len(f) for f in v.sub_frames), default=1) for v in probe)
  return layout.LayoutSizes(max_frames=min(max(frames, 1), 100), max_rows=max(rows, 1) + 4,
                            max_row_frames=max(row_frames, 1) + 2, max_row_tokens=61,
                            queries=5, max_query_tokens=61, max_predictions=160)


def demand(args) -> dict:
  """{label: videos/s one host must supply}."""
  out = {}
  peak = KNOWN_PEAKS[args.accelerator]
  per_accelerator = args.mfu * peak * 1e12 / (args.gflop_per_video * 1e9)
  out[f"{args.accelerators_per_host} x {args.accelerator} at {args.mfu:.0%} MFU"] = (
      per_accelerator * args.accelerators_per_host)
  if args.step_videos_per_s:
    out["the measured step"] = args.step_videos_per_s
  return out


def run(name, dataset_dir, args):
  host_videos = pipeline.VideoSource(dataset_dir, "train", max_clip_len=100)
  bank_videos = pipeline.VideoSource(dataset_dir, "train", max_clip_len=100, decode_frames=False)
  sizes = sizes_for(host_videos)
  batch_videos = min(args.batch_videos, len(host_videos))
  start = time.perf_counter()
  rows, indexes = frame_bank.load_rows({"train": [host_videos]}, max_clip_len=100)
  load_s = time.perf_counter() - start
  needs = demand(args)
  print(f"\n{name}: {len(host_videos)} train videos, feature dim {host_videos.feature_dim}, "
        f"batch {batch_videos} videos, {sizes}")
  print(f"frame bank: {rows.shape[0] - 1} frames, {rows.nbytes / 1e6:.0f} MB float16, read in "
        f"{load_s:.1f} s ({len(host_videos) / load_s:.0f} videos/s, once per run)")
  for label, rate in needs.items():
    print(f"demand: {rate:,.0f} videos/s ({label})")
  labels = list(needs)
  print(f"{'objective':14s} {'path':8s} {'workers':>7s} {'videos/s':>10s} {'MB/s':>8s} "
        f"{'per core':>8s} " + " ".join(f"{'ratio' + str(i + 1):>8s} {'cores' + str(i + 1):>7s}"
                                     for i in range(len(labels))))
  for objective in args.objectives:
    example_rows = None
    if not registry.get(objective).host_draws:
      ctx = pipeline.host_context(bank_videos, sizes, queries_per_video=sizes.queries)
      for bank_workers in args.bank_workers:
        start = time.perf_counter()
        stacked, example_rows = example_bank.make_examples(
            bank_videos, objective, ctx, indexes["train"], workers=bank_workers,
            chunk=args.bank_chunk)
        made_s = time.perf_counter() - start
        print(f"example bank {objective}: {example_rows.end} examples, "
              f"{sum(v.nbytes for v in stacked.values()) / 1e6:.0f} MB, made in {made_s:.1f} s "
              f"with {bank_workers} worker processes ({example_rows.end / made_s:.0f} videos/s, "
              "once per run)")
    runs = [(path, w) for path in ("host", "bank") for w in args.workers]
    if example_rows is not None:
      runs.append(("examples", 0))   # no worker: the host slices a permutation
    for path, workers in runs:
      videos = host_videos if path == "host" else bank_videos
      index = indexes["train"] if path == "bank" else None
      vps, mbps = measure(videos, objective, sizes, batch_videos, workers,
                          args.batches * (100 if path == "examples" else 1), index,
                          args.read_threads, example_rows if path == "examples" else None)
      per_core = vps / min(max(workers, 1), os.cpu_count())
      ratios = " ".join(f"{vps / needs[label]:8.3f} {math.ceil(1.5 * needs[label] / per_core):7d}"
                        for label in labels)
      print(f"{objective:14s} {path:8s} {workers:7d} {vps:10.1f} {mbps:8.1f} {per_core:8.1f} "
            f"{ratios}")
  print("ratio<i>: supply / demand<i> on this machine (above 1: the input keeps up); cores<i>: "
        "the cores that would supply 1.5x demand<i> at this run's videos/s per core (per worker "
        "process, or the main process without workers), if the rate scales with the workers")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--release_dir", help="a HERO release-layout folder to build and read")
  parser.add_argument("--dataset_dir", help="an already built videos dataset folder")
  parser.add_argument("--batch_videos", type=int, default=32)
  parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  parser.add_argument("--read_threads", type=int, default=1,
                      help="grain read threads per pipeline process (config.data.read_threads)")
  parser.add_argument("--accelerator", default="H100", choices=sorted(KNOWN_PEAKS))
  parser.add_argument("--accelerators_per_host", type=int, default=8)
  parser.add_argument("--mfu", type=float, default=0.45)
  parser.add_argument("--gflop_per_video", type=float, default=135.0)
  parser.add_argument("--bank_workers", type=int, nargs="+", default=[0],
                      help="worker processes making the example bank (each count timed)")
  parser.add_argument("--bank_chunk", type=int, default=example_bank.CHUNK_RECORDS,
                      help="records per task of a bank worker")
  parser.add_argument("--train_videos", type=int, default=TV_LIKE.train_videos,
                      help="videos of the synthetic training split")
  parser.add_argument("--step_videos_per_s", type=float, default=0.0,
                      help="videos/s of a measured step (benchmarks/train_step.py), 0: none")
  args = parser.parse_args()
  if args.batches < 1:
    parser.error(f"--batches must be at least 1 (timed batches per run), got {args.batches}")
  flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
  print(f"machine: {os.cpu_count()} CPUs")
  with tempfile.TemporaryDirectory() as tmp:
    if args.dataset_dir:
      run("built dataset", args.dataset_dir, args)
    elif args.release_dir:
      b = build.build("hero_tv/videos", tmp, manual_dir=args.release_dir)
      run("release format", b.data_dir, args)
    else:
      spec = dataclasses.replace(TV_LIKE, train_videos=args.train_videos)
      b = build.build("hero_synthetic/videos", tmp, spec=spec)
      run("TV-like synthetic (4352-d features, 40-60 frames)", b.data_dir, args)


if __name__ == "__main__":
  main()
