"""VCMR evaluation benchmark: videos encoded/s, queries ranked/s, projected full TVR val time.

  python benchmarks/eval_vcmr.py                      # base model, CPU
  python benchmarks/eval_vcmr.py --videos 256 --queries 800 --dtype bfloat16   # an accelerator

Encodes ``--videos`` TV-like videos (100 frames, 20 subtitles) into a frame
bank, tiles the bank to TVR val's corpus size (2,179 videos; ranking cost
does not depend on the bank's values), and ranks ``--queries`` queries of
15 tokens against it with the evaluator's settings (top 100 videos, moments
of 3-16 frames, top 200). The full TVR val evaluation (10,895 queries) is
projected from the two rates. FLOPs per video / per query come from XLA's
cost analysis; the original's ``validate_full_vcmr`` computes the same
products (its bank is the same encoder; per query batch it scores every
(query, video, frame) and sorts each query's 100 x L x L span scores), so
the FLOP figures stand for both.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from hero_jax import layout
from hero_jax.eval import vcmr as vcmr_lib
from hero_jax.model.hero import Hero
from hero_jax.model.params import init_params
from hero_jax.objectives import host
from hero_jax.train import tasks

TVR_VAL_VIDEOS, TVR_VAL_QUERIES = 2179, 10895
FRAMES, SUBS, TOKENS, QUERY_TOKENS = 100, 20, 12, 15


def make_videos(n: int, dim: int) -> list:
  rng = np.random.default_rng(0)
  per = FRAMES // SUBS
  return [layout.VideoExample(f"bench{v:05d}", rng.normal(size=(FRAMES, dim)).astype(np.float32),
                              [rng.integers(5, 50000, size=TOKENS) for _ in range(SUBS)],
                              [np.arange(s * per, (s + 1) * per) for s in range(SUBS)])
          for v in range(n)]


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="base", choices=["tiny", "base"])
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--videos", type=int, default=32, help="videos actually encoded")
  p.add_argument("--queries", type=int, default=160, help="queries actually ranked")
  p.add_argument("--video_batch", type=int, default=16)
  p.add_argument("--query_batch", type=int, default=80, help="the original's vcmr_eval_batch_size")
  args = p.parse_args()
  cfg = tasks.PRESETS[args.model](dtype=args.dtype)
  model, params = Hero(cfg), init_params(cfg, 0)
  settings = vcmr_lib.VcmrEvalSettings(video_batch=args.video_batch, query_batch=args.query_batch,
                                       video_block=256)
  sizes = layout.LayoutSizes(max_frames=FRAMES, max_rows=SUBS, max_row_frames=FRAMES // SUBS,
                             max_row_tokens=TOKENS + 1, queries=1, max_query_tokens=2)
  ctx = host.HostContext(sizes=sizes, queries_per_video=1)
  print(f"device: {jax.devices()[0].device_kind}; model {args.model} ({cfg.dtype}); "
        f"{args.videos} videos x {FRAMES} frames x {SUBS} subtitles, {args.queries} queries")
  videos = make_videos(args.videos, cfg.frame_feat_dim)
  idx = {v.vid: i for i, v in enumerate(videos)}
  # The first batch compiles; time the rest.
  vcmr_lib.encode_bank(model, params, videos[:args.video_batch], ctx, settings, idx)
  bank, encode_s = timed(lambda: vcmr_lib.encode_bank(model, params, videos, ctx, settings, idx))
  videos_per_s = args.videos / encode_s

  reps = -(-TVR_VAL_VIDEOS // args.videos)
  vids = [f"v{i:05d}" for i in range(TVR_VAL_VIDEOS)]
  big = vcmr_lib.FrameBank(vids=vids, video2idx={v: i for i, v in enumerate(vids)},
                           frames=np.tile(bank.frames, (reps, 1, 1))[:TVR_VAL_VIDEOS],
                           mask=np.tile(bank.mask, (reps, 1))[:TVR_VAL_VIDEOS], frame_length=1.5)
  rng = np.random.default_rng(1)
  queries = [np.concatenate([[0], rng.integers(5, 50000, size=QUERY_TOKENS)])
             for _ in range(args.queries)]
  gt = [vids[i % TVR_VAL_VIDEOS] for i in range(args.queries)]
  vcmr_lib.rank(model, params, big, queries[:args.query_batch], 1, settings, gt[:args.query_batch])
  _, rank_s = timed(lambda: vcmr_lib.rank(model, params, big, queries, 1, settings, gt))
  queries_per_s = args.queries / rank_s
  projected = TVR_VAL_VIDEOS / videos_per_s + TVR_VAL_QUERIES / queries_per_s
  frames_gb = big.frames.nbytes / 1e9
  batch = layout.stack_examples([host.repr_example(v, ctx) for v in videos[:args.video_batch]])
  video_gflop = flops(vcmr_lib.encode_fn(model, settings), params, batch) / args.video_batch
  k = min(settings.max_vcmr_video, TVR_VAL_VIDEOS)
  ids = np.zeros((args.query_batch, 16), np.int32)
  blocks = vcmr_lib.bank_blocks(big, settings)
  query_gflop = flops(vcmr_lib.rank_fn(model, settings, k, settings.max_before_nms), params, ids,
                      np.ones_like(ids), np.zeros(args.query_batch, np.int32), *blocks) / args.query_batch
  total_tflop = (TVR_VAL_VIDEOS * video_gflop + TVR_VAL_QUERIES * query_gflop) / 1e3
  print(f"bank:    {videos_per_s:8.2f} videos/s encoded ({encode_s:.1f} s for {args.videos}); "
        f"{video_gflop:.1f} GFLOP per video")
  print(f"ranking: {queries_per_s:8.2f} queries/s against {TVR_VAL_VIDEOS} videos "
        f"({rank_s:.1f} s for {args.queries}); {query_gflop:.2f} GFLOP per query; "
        f"bank {frames_gb:.2f} GB float32")
  print(f"projected full TVR val evaluation ({TVR_VAL_VIDEOS} videos, {TVR_VAL_QUERIES} queries): "
        f"{projected / 60:.1f} min, {total_tflop:.1f} TFLOP in all")


def flops(jitted, *args) -> float:
  """GFLOP of one call, from XLA's cost analysis of the compiled function."""
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) / 1e9


if __name__ == "__main__":
  main()
