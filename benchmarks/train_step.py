"""Train-step benchmark: per objective and for the 2:2:1:2 task mix, videos/s,
useful and executed FLOPs, MFU, compile time and peak memory.

  python benchmarks/train_step.py                          # CPU: tiny and base, TV-like rows
  python benchmarks/train_step.py --rows uniform           # the README's older uniform batch
  python benchmarks/train_step.py --pack 96                # rows packed into rows of 96 slots
  python benchmarks/train_step.py --scan --remat dots      # scan over layers, rematerialised
  python benchmarks/train_step.py --ab_prune --pack 96     # prune_last_layer on vs off, alternating
  python benchmarks/train_step.py --pack 96 --no_pack_queries  # VSM's queries beside the rows
  python benchmarks/train_step.py --offload_opt_state      # Adam moments in pinned host memory
  python benchmarks/train_step.py --models base --dtype bfloat16 --batch 64 --pack 96  # a GPU/TPU

Rows (``--rows``):
  ``tv``       the original's kind of video: 40-60 frames (60-90 s at 1.5 s per
               frame), about 20 subtitles of 6-18 tokens, 1-5 frames each (a
               few frames unmatched, some videos with a subtitle that lost its
               frames), varying per video; the layout sizes fit the batch as a
               user would (the most frames/rows/row frames/tokens of any video).
  ``uniform``  8 x 60 frames x 20 subtitles x 12 tokens, 3 frames per subtitle.

FLOPs: *executed* is XLA's cost analysis of the compiled step (what the device
runs, padding included; not given with ``--scan``, whose loop body the cost
analysis counts once). *Useful* takes out the padding of the two
transformer stacks, counted analytically (per layer and token 24 H^2 + 4 L H
multiply-adds, x3 for forward and backward) from the real row lengths; with
``prune_last_layer`` (the default; ``--no_prune`` turns it off) the last
cross-modal layer counts keys and values for every real slot and the rest
only for the real slots it keeps (``padding_flops``); VSM's queries run
through the same stack, in the packed rows (host.pack_queries) or beside
them padded to Lq, and are counted the same way (``vsm-device``'s after a
draw on the host of the distribution its step draws from; with its queries
packed it gets packed rows of its own, as ``objectives.vsm_device.packed_rows``
gives a run); the heads and embeddings are counted as executed. MFU = FLOP/s over the device's
peak: ``--peak_tflops``, else a known peak for the device kind (bf16 dense),
else on CPU a matmul measured now: numpy's float32, or with ``--dtype bfloat16``
XLA's bfloat16 accumulated in float32 (the CPU's matrix units where it has
them; ``--bf16_dots`` sets ``model.bf16_dots``). Peak memory: the device's
``peak_bytes_in_use`` where it reports one, else the process's peak RSS; per
objective, ``temp GiB`` is XLA's temporaries of the compiled step
(``memory_analysis()``: what the step needs beside its state and batch).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time

import jax
import numpy as np

from hero_jax import layout, packing
from hero_jax.data import pipeline, records
from hero_jax.model.hero import Hero
from hero_jax.objectives import host, registry
from hero_jax.train import optimizer, sharding, step as step_lib, tasks

OBJECTIVES = ("mlm", "mfm-nce", "fom", "vsm", "vsm-device", "vcmr", "videoqa")
MIX = {"mlm": 2, "mfm-nce": 2, "fom": 1, "vsm": 2}   # the pre-training task mix
ANSWERS, QA_Q, QA_A = 5, 10, 5   # video QA: 5 answers, 10-token questions, 5-token answers
MAX_TXT_LEN = 60
# bf16 dense peaks (TFLOP/s) by device kind, for MFU when --peak_tflops is not given
KNOWN_PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
               "TPU v5p": 459.0, "TPU v6 lite": 918.0}


def measured_matmul_peak(dtype: str, n: int = 2048, repeats: int = 5) -> tuple:
  """(best GFLOP/s, what was measured) of an n x n matmul: numpy's float32
  (the CPU's practical float32 peak), or XLA's bfloat16 accumulated in float32
  (on CPUs with AMX, the matrix units; ``hero_jax.model.matmul``)."""
  a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
  if dtype == "bfloat16":
    a = jax.numpy.asarray(a, jax.numpy.bfloat16)
    jitted = jax.jit(lambda x: jax.numpy.matmul(x, x, preferred_element_type=jax.numpy.float32))
    product = lambda: jitted(a).block_until_ready()  # noqa: E731
    what = "XLA bfloat16 matmul accumulated in float32"
  else:
    product = lambda: a @ a  # noqa: E731
    what = "numpy float32 matmul"
  product()   # compiles the XLA one
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    product()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best / 1e9, f"{what} {n}^3"


def uniform_video(rng, name, dim, vocab_hi):
  frames, subs, tokens = 60, 20, 12
  ids = [rng.integers(5, vocab_hi, size=tokens) for _ in range(subs)]
  sub_frames = [np.arange(s * 3, (s + 1) * 3) for s in range(subs)]
  return layout.VideoExample(name, rng.normal(size=(frames, dim)).astype(np.float32), ids,
                             sub_frames)


def tv_video(rng, name, dim, vocab_hi):
  """A TV-like video: subtitles of 1-5 consecutive frames (2.4 on average, so
  about 20 per video) with a few unmatched frames between them; in 30% of
  videos one subtitle has none."""
  num_frames = int(rng.integers(40, 61))
  sub_frames, frame = [], int(rng.integers(0, 2))
  while True:
    n = int(rng.choice([1, 2, 3, 4, 5], p=[0.25, 0.3, 0.25, 0.15, 0.05]))
    if frame + n > num_frames:
      break
    sub_frames.append(np.arange(frame, frame + n))
    frame += n + int(rng.random() < 0.1)   # now and then an unmatched frame
  if rng.random() < 0.3:
    sub_frames[int(rng.integers(1, len(sub_frames)))] = np.arange(0)
  ids = [rng.integers(5, vocab_hi, size=int(rng.integers(6, 19))) for _ in sub_frames]
  return layout.VideoExample(name, rng.normal(size=(num_frames, dim)).astype(np.float32), ids,
                             sub_frames)


def make_videos(rows: str, count: int, dim: int, vocab_hi: int) -> list:
  rng = np.random.default_rng(0)
  make = tv_video if rows == "tv" else uniform_video
  return [make(rng, f"bench{v}", dim, vocab_hi) for v in range(count)]


def fitted_sizes(videos, pack_width: int, queries: int = 5,
                 pack_videos: int = 1) -> layout.LayoutSizes:
  """Sizes a user would choose for these videos (the batch's largest of each)."""
  longest = max(min(len(t), MAX_TXT_LEN) for v in videos for t in v.sub_ids)
  sizes = layout.LayoutSizes(
      max_frames=max(v.num_frames for v in videos), max_rows=max(len(v.sub_ids) for v in videos),
      max_row_frames=max(max(len(f) for f in v.sub_frames) for v in videos),
      max_row_tokens=longest + 1, queries=queries, max_query_tokens=longest + 1,
      max_predictions=max(sum(len(t) for t in v.sub_ids) for v in videos) // 4 + 8)
  if not pack_width:
    return sizes
  ctx = host.HostContext(sizes=sizes, queries_per_video=queries)
  repr_rows = layout.stack_examples([host.repr_example(v, ctx) for v in videos])
  # VSM packs its queries with its rows: its draws as make_batch makes them.
  rng = np.random.default_rng(1)
  vsm_rows = layout.stack_examples([registry.get("vsm").make_example(v, rng, ctx) for v in videos])
  rows = packing.packed_rows_for([repr_rows, vsm_rows], pack_width, pack_videos)
  return dataclasses.replace(sizes, packed_rows=rows, packed_width=pack_width,
                             pack_videos=pack_videos)


def objective_sizes(objective: str, videos, sizes: layout.LayoutSizes,
                    pack_queries: bool) -> layout.LayoutSizes:
  """``vsm-device``'s own packed rows (``objectives.vsm_device.packed_rows``)
  when its queries run in them: its rows whole and a free slot after each
  matched one; the other objectives' sizes are ``sizes``."""
  if objective != "vsm-device" or not sizes.packed or not pack_queries:
    return sizes
  ctx = host.HostContext(sizes=dataclasses.replace(sizes, packed_rows=0, packed_width=0,
                                                   pack_videos=1),
                         queries_per_video=sizes.queries)
  rows = layout.stack_examples([registry.get(objective).make_example(v, None, ctx)
                                for v in videos])
  rows["row_spare"] = rows["vsm_matched"]
  return dataclasses.replace(sizes, packed_rows=packing.packed_rows_for(
      [rows], sizes.packed_width, sizes.pack_videos))


def prediction_budget(batch: dict, args) -> int:
  """MLM's ``group_predictions`` for ``--group_predictions`` (-1: the most
  real predictions of any pack group of this batch); 0 for other objectives
  and without pack groups."""
  if not args.group_predictions or "mlm_weights" not in batch or "pack_src" not in batch:
    return 0
  groups = batch["pack_src"].shape[1]   # [accumulation, G, P, W]
  if groups == batch["mlm_weights"].shape[1]:
    return 0
  if args.group_predictions > 0:
    return args.group_predictions
  return int(batch["mlm_weights"][0].reshape(groups, -1).sum(-1).max())


def packing_words(args) -> str:
  if not args.pack:
    return "unpacked"
  group = f", in groups of {args.pack_videos} videos" if args.pack_videos > 1 else ""
  return f"packed rows of {args.pack}{group}"


def make_batch(objective: str, videos, ctx) -> dict:
  rng = np.random.default_rng(1)
  items = videos
  if registry.get(objective).records == "moments":   # TVR fine-tuning: one query per video
    ctx = dataclasses.replace(ctx, sizes=dataclasses.replace(ctx.sizes, queries=1),
                              queries_per_video=1)
    items = [layout.QueryExample(v, records.MomentQuery(
        qid=v.vid, vid=v.vid, text="", token_ids=v.sub_ids[0], ts=(3.0, 9.0),
        duration=v.num_frames * 1.5)) for v in videos]
  if registry.get(objective).records == "qa":   # TVQA: one question, five answer copies
    qa = 2 + QA_Q + QA_A
    sizes = dataclasses.replace(ctx.sizes, queries=1, answers=ANSWERS, max_qa_tokens=qa,
                                max_row_tokens=ctx.sizes.max_row_tokens + qa)
    if sizes.packed:   # wide enough for the longer rows (QA does not pack them)
      sizes = dataclasses.replace(sizes, packed_width=max(
          sizes.packed_width, sizes.max_row_frames + sizes.max_row_tokens))
    ctx = dataclasses.replace(ctx, sizes=sizes, queries_per_video=1, max_txt_len=120)
    items = [layout.QueryExample(v, records.QaQuery(
        qid=v.vid, vid=v.vid, question="", answers=[""] * ANSWERS,
        question_ids=v.sub_ids[0][:QA_Q], answer_ids=[v.sub_ids[k][:QA_A] for k in range(ANSWERS)],
        answer_idx=1, ts=(3.0, 9.0))) for v in videos]
  examples = [registry.get(objective).make_example(x, rng, ctx) for x in items]
  batch = packing.pack_stacked(layout.stack_examples(examples), ctx.sizes)
  return {k: v[None] for k, v in batch.items()}


def dense_flops(queries: float, hidden: int) -> float:
  """Training FLOPs (3x forward) of one layer's q, attention output and FFN
  (10 h^2 multiply-adds) per query position."""
  return 3 * 2 * queries * 10 * hidden * hidden


def attention_flops(queries: float, keys_each: float, hidden: int) -> float:
  """Training FLOPs of scores and weighted sum (2 n h) against ``keys_each`` keys."""
  return 3 * 2 * queries * 2 * keys_each * hidden


def kv_flops(positions: float, hidden: int) -> float:
  """Training FLOPs of one layer's k and v projections over ``positions``."""
  return 3 * 2 * positions * 2 * hidden * hidden


def stack_flops(rows, layers: int, hidden: int, last_layer: float | None = None) -> float:
  """Training FLOPs of a transformer stack whose ``rows`` are (positions, keys
  each); ``last_layer``: the last layer's FLOPs when it is pruned."""
  full = sum(kv_flops(n, hidden) + dense_flops(n, hidden) + attention_flops(n, k, hidden)
             for n, k in rows)
  if last_layer is None:
    return layers * full
  return (layers - 1) * full + last_layer


def kept_slots(b: dict, frames: np.ndarray, txt: np.ndarray, group_predictions: int = 0):
  """(real, executed) counts of the row slots the last cross-modal layer keeps
  under ``prune_last_layer``: MLM's predictions (``group_predictions`` per pack
  group when set), or else every frame slot."""
  if "mlm_weights" in b:
    executed = (b["pack_src"].shape[0] * group_predictions if group_predictions
                else b["mlm_weights"].size)
    return int(b["mlm_weights"].sum()), executed
  return int(frames.sum()), frames.size


def padding_flops(batch: dict, cfg, group_predictions: int = 0) -> float:
  """Executed minus useful FLOPs of the cross-modal and temporal stacks.

  Useful: each real position sees its row's real keys; with
  ``prune_last_layer`` the last cross-modal layer's queries are the read real
  slots only. Executed: the padded rows (or packed rows) as the step runs
  them."""
  b = {k: v[0] for k, v in batch.items()}
  if "qa_row_txt_mask" in b:   # the rows of every answer copy
    txt = b["qa_row_txt_mask"].reshape((-1,) + b["qa_row_txt_mask"].shape[-2:])
    frames = np.repeat(b["row_frame_mask"], txt.shape[0] // b["row_frame_mask"].shape[0], axis=0)
  else:
    txt, frames = b["row_txt_mask"], b["row_frame_mask"]
  lengths = (txt.sum(-1) + frames.sum(-1)).reshape(-1)
  real = lengths[lengths > 0]
  if "pack_seg" in b:
    rows, width = int(np.prod(b["pack_seg"].shape[:-1])), b["pack_seg"].shape[-1]
  else:
    rows, width = lengths.size, txt.shape[-1] + frames.shape[-1]
  h = cfg.hidden_size
  kept_real, kept_executed = kept_slots(b, frames, txt, group_predictions)
  query_padding = 0.0
  if "query_mask" in b:   # VSM's queries: text-only rows through the same stack
    query_n = b["query_mask"].sum(-1).reshape(-1)
    if "query_unpack_src" in b:   # in the packed rows; every query slot is kept
      real = np.concatenate([real, query_n])
      kept_real, kept_executed = kept_real + query_n.sum(), kept_executed + b["query_mask"].size
    else:                         # beside them, padded to Lq
      lq = b["query_mask"].shape[-1]
      query_padding = (stack_flops([(query_n.size * lq, lq)], cfg.cross_layers, h)
                       - stack_flops([(n, n) for n in query_n], cfg.cross_layers, h))
  useful_last = executed_last = None
  if cfg.prune_last_layer:
    # Keys and values of every slot; queries (q, output, FFN) of the kept slots
    # only. Useful: a kept real slot sees its own row, about the mean real row
    # length. Executed: scores of every slot against its (packed) row.
    useful_last = (kv_flops(real.sum(), h) + dense_flops(kept_real, h)
                   + attention_flops(kept_real, real.mean(), h))
    executed_last = (kv_flops(rows * width, h) + dense_flops(kept_executed, h)
                     + attention_flops(rows * width, width, h))
  useful_cross = stack_flops([(n, n) for n in real], cfg.cross_layers, h, useful_last)
  executed_cross = stack_flops([(rows * width, width)], cfg.cross_layers, h, executed_last)
  clip = b["frame_mask"].sum(-1)
  f = b["frame_mask"].shape[-1]
  temporal = (stack_flops([(clip.size * f, f)], cfg.temporal_layers, h)
              - stack_flops([(n, n) for n in clip], cfg.temporal_layers, h))
  return executed_cross - useful_cross + temporal + query_padding


def drawn_on_host(batch: dict, queries: int) -> dict:
  """A ``vsm-device`` batch after a draw of its queries (the distribution the
  step draws from, another key), whose slots ``padding_flops`` can count;
  other batches as they are."""
  if "vsm_matched" not in batch:
    return batch
  from hero_jax.objectives import vsm_device
  drawn = vsm_device.draw({k: v[0] for k, v in batch.items()}, jax.random.key(1), queries)
  return {k: np.asarray(v)[None] for k, v in drawn.items()}


def peak_memory_gib() -> tuple:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2 ** 30, "device"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "host RSS"


def bench(name: str, cfg, args, peak_gflops: float) -> None:
  ids = host.SpecialIds(mask=min(cfg.vocab_size - 1, 50264), v_range=(4, min(cfg.vocab_size, 50261)))
  videos = make_videos(args.rows, args.batch, cfg.frame_feat_dim, ids.v_range[1])
  sizes = fitted_sizes(videos, args.pack, pack_videos=args.pack_videos)
  ctx = host.HostContext(sizes=sizes, ids=ids, queries_per_video=5,
                         pack_queries=not args.no_pack_queries)
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  tx, _ = optimizer.hero_adamw(3e-5, 10, 1000)
  states = {}   # one per set of heads (video QA has its own)

  def state_for(heads):
    if heads not in states:
      states[heads] = step_lib.create_state(cfg.replace(heads=heads), tx, mesh, rules, seed=0,
                                            offload_opt_state=args.offload_opt_state)
    return states[heads]
  state = state_for(cfg.heads)
  print(f"\n{name}: {sum(x.size for x in jax.tree.leaves(state.params)):,} params, "
        f"{args.batch} videos per step, {args.rows} rows, compute {cfg.dtype}, "
        f"scan_layers {cfg.scan_layers}, remat {cfg.remat_cross}, "
        f"prune_last_layer {cfg.prune_last_layer}, offload_opt_state {args.offload_opt_state}, "
        f"{packing_words(args)}; sizes {sizes}")
  print(f"{'objective':9s} {'compile s':>9s} {'step s':>8s} {'videos/s':>9s} "
        f"{'executed GFLOP':>14s} {'useful GFLOP':>12s} {'useful/exec':>11s} {'GFLOP/s':>8s} "
        f"{'MFU':>6s} {'useful MFU':>10s} {'temp GiB':>8s}")
  results = {}
  for objective in args.objectives:
    heads = registry.get(objective).heads or cfg.heads
    state = state_for(heads)
    own = objective_sizes(objective, videos, sizes, not args.no_pack_queries)
    if own != sizes:
      print(f"({objective}: packed_rows={own.packed_rows}, its own)")
    batch = make_batch(objective, videos, dataclasses.replace(ctx, sizes=own))
    budget = prediction_budget(batch, args)
    settings = registry.get(objective).make_settings(
        {"group_predictions": budget} if budget else {})
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
    # XLA's cost analysis counts a while loop's body once: with scanned layers
    # the FLOP columns would be wrong, so they are not given.
    executed = float("nan") if cfg.scan_layers else float(cost.get("flops", float("nan"))) / 1e9
    useful = executed - padding_flops(drawn_on_host(batch, ctx.queries_per_video), cfg, budget) / 1e9
    # XLA's temporaries of the step (activations kept for the backward pass,
    # gradients, scratch): the memory the step adds to the state and batch.
    memory = compiled.memory_analysis()
    temp_gib = getattr(memory, "temp_size_in_bytes", float("nan")) / 2 ** 30
    state, out = run(state, arrays, key)  # warm-up (the jit cache reuses the compilation)
    jax.block_until_ready(out)
    times = []
    for _ in range(args.steps):
      start = time.perf_counter()
      state, out = run(state, arrays, key)
      jax.block_until_ready(out)
      times.append(time.perf_counter() - start)
    states[heads] = state
    step_s = float(np.median(times))
    results[objective] = step_s
    print(f"{objective:9s} {compile_s:9.1f} {step_s:8.3f} {args.batch / step_s:9.2f} "
          f"{executed:14.1f} {useful:12.1f} {useful / executed:11.3f} {executed / step_s:8.1f} "
          f"{executed / step_s / peak_gflops:6.1%} {useful / step_s / peak_gflops:10.1%} "
          f"{temp_gib:8.2f}")
  if set(MIX) <= set(results):
    mix_s = sum(w * results[o] for o, w in MIX.items()) / sum(MIX.values())
    print(f"{'mix':9s} {'':9s} {mix_s:8.3f} {args.batch / mix_s:9.2f}   "
          "(mlm:mfm-nce:fom:vsm = 2:2:1:2, mean step)")
  memory, where = peak_memory_gib()
  print(f"peak memory: {memory:.2f} GiB ({where})")


def ab_prune(name: str, cfg, args) -> None:
  """``--ab_prune``: per objective, the step with ``prune_last_layer`` on and
  off, compiled side by side and timed alternately (on, off, on, off...) so
  that both see the same machine; prints the median step times and the
  speed-up."""
  ids = host.SpecialIds(mask=min(cfg.vocab_size - 1, 50264), v_range=(4, min(cfg.vocab_size, 50261)))
  videos = make_videos(args.rows, args.batch, cfg.frame_feat_dim, ids.v_range[1])
  ctx = host.HostContext(sizes=fitted_sizes(videos, args.pack, pack_videos=args.pack_videos),
                         ids=ids, queries_per_video=5)
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  rules = sharding.DEFAULT_RULES
  tx, _ = optimizer.hero_adamw(3e-5, 10, 1000)
  print(f"\n{name}: prune_last_layer on vs off, {args.batch} videos per step, {args.rows} rows, "
        f"{packing_words(args)}, {args.steps} "
        f"alternating steps each")
  print(f"{'objective':9s} {'on: step s':>10s} {'off: step s':>11s} {'off / on':>8s}")
  results = {}
  for objective in args.objectives:
    obj = registry.get(objective)
    c = cfg.replace(heads=obj.heads or cfg.heads)
    arrays = pipeline.make_global_batch(make_batch(objective, videos, ctx),
                                        sharding.batch_sharding(mesh, leading_axes=1))
    key = jax.random.key(0)
    runs, times = {}, {True: [], False: []}
    for prune in (True, False):
      variant = c.replace(prune_last_layer=prune)
      state = step_lib.create_state(variant, tx, mesh, rules, seed=0)
      run = step_lib.make_train_step(Hero(variant), obj, obj.make_settings({}), tx, mesh, rules,
                                     step_lib.state_shardings(state), accum_steps=1)
      state, out = run(state, arrays, key)   # compile and warm up
      jax.block_until_ready(out)
      runs[prune] = [run, state]
    for _ in range(args.steps):
      for prune in (True, False):
        run, state = runs[prune]
        start = time.perf_counter()
        state, out = run(state, arrays, key)
        jax.block_until_ready(out)
        times[prune].append(time.perf_counter() - start)
        runs[prune][1] = state
    on, off = float(np.median(times[True])), float(np.median(times[False]))
    results[objective] = (on, off)
    print(f"{objective:9s} {on:10.3f} {off:11.3f} {off / on:8.3f}")
    del runs
  if set(MIX) <= set(results):
    on, off = (sum(w * results[o][i] for o, w in MIX.items()) / sum(MIX.values()) for i in (0, 1))
    print(f"{'mix':9s} {on:10.3f} {off:11.3f} {off / on:8.3f}   (2:2:1:2, mean step)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--batch", type=int, default=8, help="videos per step (one device)")
  parser.add_argument("--rows", default="tv", choices=["tv", "uniform"])
  parser.add_argument("--pack", type=int, default=0,
                      help="packed row width (0: one row per subtitle, as the original)")
  parser.add_argument("--pack_videos", type=int, default=1,
                      help="layout.pack_videos: videos whose rows share packed rows (with --pack)")
  parser.add_argument("--group_predictions", type=int, default=0,
                      help="objectives.mlm.group_predictions with --pack_videos (-1: the most "
                           "real predictions of any group of the batch)")
  parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--bf16_dots", default="auto", choices=["auto", "f32_accumulate", "xla"],
                      help="model.bf16_dots, with --dtype bfloat16")
  parser.add_argument("--scan", action="store_true", help="model.scan_layers: scan over layers")
  parser.add_argument("--no_pack_queries", action="store_true",
                      help="host.pack_queries=False: with --pack, VSM's queries run beside the rows")
  parser.add_argument("--offload_opt_state", action="store_true",
                      help="train.offload_opt_state: Adam moments in pinned host memory")
  parser.add_argument("--remat", default="none", choices=["none", "full", "dots"],
                      help="model.remat_cross and remat_temporal")
  parser.add_argument("--no_prune", action="store_true",
                      help="model.prune_last_layer=False: the last cross-modal layer computes "
                           "every position")
  parser.add_argument("--ab_prune", action="store_true",
                      help="time the step with prune_last_layer on and off, alternating")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the device's peak; default: known by device kind, or on CPU a "
                           "matmul of --dtype measured now (numpy float32; XLA bfloat16)")
  args = parser.parse_args()
  device = jax.devices()[0]
  known = next((v for k, v in KNOWN_PEAKS.items() if k in device.device_kind), None)
  if args.peak_tflops or (known and device.platform != "cpu"):
    tflops = args.peak_tflops or known
    peak = tflops * 1e3
    print(f"device: {device.device_kind}; peak: {tflops} TFLOP/s "
          f"({'stated' if args.peak_tflops else 'bf16 dense, from the vendor'})")
  else:
    peak, what = measured_matmul_peak(args.dtype)
    print(f"device: {device.device_kind}; peak: {peak:.0f} GFLOP/s ({what}, measured now); "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r} "
          "(glibc.malloc.hugetlb=1: huge pages for XLA's buffers, see the README's Speed)")
  for name in args.models:
    if args.ab_prune:
      ab_prune(name, tasks.PRESETS[name](dtype=args.dtype, scan_layers=args.scan,
                                         remat_cross=args.remat, remat_temporal=args.remat,
                                         bf16_dots=args.bf16_dots), args)
      continue
    bench(name, tasks.PRESETS[name](dtype=args.dtype, scan_layers=args.scan,
                                    remat_cross=args.remat, remat_temporal=args.remat,
                                    prune_last_layer=not args.no_prune,
                                    bf16_dots=args.bf16_dots), args, peak)


if __name__ == "__main__":
  main()
