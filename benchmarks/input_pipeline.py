"""Input pipeline throughput: videos/s and MB/s per objective, with 0, 1 and 2 workers.

  python benchmarks/input_pipeline.py                       # synthetic set, built in a temp dir
  python benchmarks/input_pipeline.py --release_dir ../shared/fixtures/hero_reference/release_format
  python benchmarks/input_pipeline.py --dataset_dir ~/tensorflow_datasets/hero_tv/videos/1.0.0

MB/s counts the bytes of the batches handed to the training step (numpy
arrays after the host transform and padding); the padding share is that of
those batches. The first batch of each run (worker start-up) is not timed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from absl import flags

from hero_jax import layout
from hero_jax.data import build, pipeline

OBJECTIVES = ("mlm", "mfm-nce", "fom", "vsm")


def measure(videos, objective, sizes, batch_videos, workers, batches):
  ctx = pipeline.host_context(videos, sizes, queries_per_video=sizes.queries)
  it = pipeline.make_pipeline(videos, objective, ctx, pipeline.PipelineOptions(
      batch_videos=batch_videos, seed=0, worker_count=workers), process_index=0, process_count=1)
  next(it)
  nbytes, padding = 0, []
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
    nbytes += sum(v.nbytes for v in batch.values())
    padding.append(it.padding["frames"])
  seconds = time.perf_counter() - start
  return batches * batch_videos / seconds, nbytes / seconds / 1e6, sum(padding) / len(padding)


def sizes_for(videos) -> layout.LayoutSizes:
  """Layout sizes that fit the set (from its first videos), capped at HERO's."""
  probe = [videos.video(i) for i in range(min(len(videos), 64))]
  frames = max(v.num_frames for v in probe)
  rows = max(len(v.sub_frames) for v in probe)
  row_frames = max(max((len(f) for f in v.sub_frames), default=1) for v in probe)
  return layout.LayoutSizes(max_frames=min(max(frames, 1), 100), max_rows=max(rows, 1) + 4,
                            max_row_frames=max(row_frames, 1) + 2, max_row_tokens=61,
                            queries=5, max_query_tokens=61, max_predictions=160)


def run(name, dataset_dir, batch_videos, batches, workers_list):
  videos = pipeline.VideoSource(dataset_dir, "train", max_clip_len=100)
  sizes = sizes_for(videos)
  batch_videos = min(batch_videos, len(videos))
  print(f"\n{name}: {len(videos)} train videos, feature dim {videos.feature_dim}, "
        f"batch {batch_videos} videos, {sizes}")
  print(f"{'objective':10s} {'workers':>7s} {'videos/s':>10s} {'MB/s':>8s} {'padding':>8s}")
  for objective in OBJECTIVES:
    for workers in workers_list:
      vps, mbps, pad = measure(videos, objective, sizes, batch_videos, workers, batches)
      print(f"{objective:10s} {workers:7d} {vps:10.1f} {mbps:8.1f} {pad:8.3f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--release_dir", help="a HERO release-layout folder to build and read")
  parser.add_argument("--dataset_dir", help="an already built videos dataset folder")
  parser.add_argument("--batch_videos", type=int, default=32)
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
  print(f"machine: {os.cpu_count()} CPUs")
  with tempfile.TemporaryDirectory() as tmp:
    if args.dataset_dir:
      run("built dataset", args.dataset_dir, args.batch_videos, args.batches, args.workers)
      return
    if args.release_dir:
      b = build.build("hero_tv/videos", tmp, manual_dir=args.release_dir)
      run("release format", b.data_dir, args.batch_videos, args.batches, args.workers)
    b = build.build("hero_synthetic/videos", tmp)
    run("synthetic", b.data_dir, args.batch_videos, args.batches, args.workers)


if __name__ == "__main__":
  main()
