"""Train-step benchmark: compile time, step time, videos/s, padding share and MFU per objective.

  python benchmarks/train_step.py                 # tiny and base configs, CPU
  python benchmarks/train_step.py --models base --steps 5 --peak_tflops 989   # e.g. an H100 (bf16 dense)

The batch is the one the original HERO was measured with on a 2-core CPU:
8 videos per step, 60 frames and 20 subtitles of 12 tokens per video, fp32,
one objective per step (the original: 9-11 s per step, 0.8-0.9 videos/s).
``vcmr`` (TVR fine-tuning) takes one query per video instead of VSM's five;
``videoqa`` one question per video with five answers (five copies of the
video's rows; videos/s counts questions, the answer copies are printed too).
FLOPs come from XLA's cost analysis of the compiled step; MFU is against
``--peak_tflops``, or on CPU against a float32 matmul peak measured here
with numpy (stated in the output).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from hero_jax import layout
from hero_jax.data import pipeline, records
from hero_jax.model.hero import Hero
from hero_jax.objectives import host, registry
from hero_jax.train import optimizer, sharding, step as step_lib, tasks

OBJECTIVES = ("mlm", "mfm-nce", "fom", "vsm", "vcmr", "videoqa")
ANSWERS, QA_Q, QA_A = 5, 10, 5   # video QA: 5 answers, 10-token questions, 5-token answers
VIDEOS, FRAMES, SUBS, TOKENS = 8, 60, 20, 12


def measured_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  """Best float32 GFLOP/s of an n x n numpy matmul (the CPU's practical peak)."""
  a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best / 1e9


def videos(cfg, vocab_hi: int) -> list:
  rng = np.random.default_rng(0)
  frames_per_sub = FRAMES // SUBS
  out = []
  for v in range(VIDEOS):
    ids = [rng.integers(5, vocab_hi, size=TOKENS) for _ in range(SUBS)]
    frames = [np.arange(s * frames_per_sub, (s + 1) * frames_per_sub) for s in range(SUBS)]
    out.append(layout.VideoExample(f"bench{v}", rng.normal(size=(FRAMES, cfg.frame_feat_dim))
                                   .astype(np.float32), ids, frames))
  return out


def make_batch(objective: str, cfg, ctx) -> dict:
  rng = np.random.default_rng(1)
  items = videos(cfg, ctx.ids.v_range[1])
  if registry.get(objective).records == "moments":   # TVR fine-tuning: one query per video
    ctx = dataclasses.replace(ctx, sizes=dataclasses.replace(ctx.sizes, queries=1),
                              queries_per_video=1)
    items = [layout.QueryExample(v, records.MomentQuery(
        qid=v.vid, vid=v.vid, text="", token_ids=v.sub_ids[0][:TOKENS], ts=(3.0, 9.0),
        duration=FRAMES * 1.5)) for v in items]
  if registry.get(objective).records == "qa":   # TVQA: one question, five answer copies
    qa = 2 + QA_Q + QA_A
    ctx = dataclasses.replace(ctx, sizes=dataclasses.replace(
        ctx.sizes, queries=1, answers=ANSWERS, max_qa_tokens=qa,
        max_row_tokens=ctx.sizes.max_row_tokens + qa), queries_per_video=1, max_txt_len=120)
    items = [layout.QueryExample(v, records.QaQuery(
        qid=v.vid, vid=v.vid, question="", answers=[""] * ANSWERS,
        question_ids=v.sub_ids[0][:QA_Q], answer_ids=[v.sub_ids[k][:QA_A] for k in range(ANSWERS)],
        answer_idx=1, ts=(3.0, 9.0))) for v in items]
  examples = [registry.get(objective).make_example(x, rng, ctx) for x in items]
  return {k: v[None] for k, v in layout.stack_examples(examples).items()}


def eval_seconds(cfg, params, batch, steps: int) -> float:
  """Seconds per forward pass of HeroForVideoQA on the batch (evaluation)."""
  fn = jax.jit(lambda p, b: Hero(cfg).apply({"params": p}, b, method=Hero.videoqa_logits))
  one = {k: v[0] for k, v in batch.items()}
  jax.block_until_ready(fn(params, one))
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(params, one)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def bench(name: str, cfg, steps: int, peak_gflops: float, objectives=OBJECTIVES) -> None:
  sizes = layout.LayoutSizes(max_frames=FRAMES, max_rows=SUBS, max_row_frames=FRAMES // SUBS,
                             max_row_tokens=TOKENS + 1, queries=5, max_query_tokens=TOKENS + 1,
                             max_predictions=48)
  ids = host.SpecialIds(mask=min(cfg.vocab_size - 1, 50264), v_range=(4, min(cfg.vocab_size, 50261)))
  ctx = host.HostContext(sizes=sizes, ids=ids, queries_per_video=5)
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  tx, _ = optimizer.hero_adamw(3e-5, 10, 1000)
  states = {}   # one per set of heads (video QA has its own)

  def state_for(heads):
    if heads not in states:
      states[heads] = step_lib.create_state(cfg.replace(heads=heads), tx, mesh, rules, seed=0)
    return states[heads]
  state = state_for(cfg.heads)
  print(f"\n{name}: {sum(x.size for x in jax.tree.leaves(state.params)):,} params, "
        f"{VIDEOS} videos x {FRAMES} frames x {SUBS} subtitles x {TOKENS} tokens, "
        f"compute {cfg.dtype}")
  print(f"{'objective':9s} {'compile s':>9s} {'step s':>8s} {'videos/s':>9s} {'padding':>8s} "
        f"{'GFLOP/step':>11s} {'GFLOP/s':>8s} {'MFU':>6s}")
  for objective in objectives:
    heads = registry.get(objective).heads or cfg.heads
    state = state_for(heads)
    batch = make_batch(objective, cfg, ctx)
    settings = registry.get(objective).make_settings({})
    run = step_lib.make_train_step(Hero(cfg.replace(heads=heads)), registry.get(objective),
                                   settings, tx, mesh, rules, step_lib.state_shardings(state),
                                   accum_steps=1)
    arrays = pipeline.make_global_batch(batch, sharding.batch_sharding(mesh, leading_axes=1))
    key = jax.random.key(0)
    start = time.perf_counter()
    with jax.set_mesh(mesh):
      compiled = run.jitted.lower(state, arrays, key).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    gflop = float(cost.get("flops", float("nan"))) / 1e9
    state, out = run(state, arrays, key)  # warm-up (the jit cache reuses the compilation)
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(steps):
      state, out = run(state, arrays, key)
    jax.block_until_ready(out)
    states[heads] = state
    step_s = (time.perf_counter() - start) / steps
    padding = layout.padding_share({k: v[0] for k, v in batch.items()})
    pad = np.mean(list(padding.values()))
    copies = ""
    if objective == "videoqa":
      copies = (f"  ({ANSWERS * VIDEOS / step_s:.2f} answer copies/s; evaluation "
                f"{VIDEOS / eval_seconds(cfg.replace(heads=heads), state.params, batch, steps):.2f} "
                "questions/s)")
    print(f"{objective:9s} {compile_s:9.1f} {step_s:8.3f} {VIDEOS / step_s:9.2f} {pad:8.3f} "
          f"{gflop:11.1f} {gflop / step_s:8.1f} {gflop / step_s / peak_gflops:6.1%}{copies}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the device's peak; default: a numpy float32 matmul measured on CPU")
  args = parser.parse_args()
  device = jax.devices()[0]
  if args.peak_tflops:
    peak = args.peak_tflops * 1e3
    print(f"device: {device.device_kind}; peak stated: {args.peak_tflops} TFLOP/s")
  else:
    peak = measured_matmul_peak()
    print(f"device: {device.device_kind}; peak: {peak:.0f} GFLOP/s (numpy float32 2048^3 matmul, "
          f"measured now)")
  for name in args.models:
    bench(name, tasks.PRESETS[name](dtype=args.dtype), args.steps, peak, args.objectives)


if __name__ == "__main__":
  main()
