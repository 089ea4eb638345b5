"""The pre-training loop: task-sampled steps, evaluation, metrics, checkpoints, resume.

Each optimizer update draws one (dataset, objective) task from (seed, step),
takes ``accum_steps`` batches of it from that task's pipeline and runs that
objective's compiled step. Everything that decides a step (task draw, batch
contents, dropout rng) is a function of the seed, the step and the restored
iterator states, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time

import jax
import numpy as np
from clu import metrics as clu_metrics

from hero_jax import paths
from hero_jax.data import datasets, pipeline
from hero_jax.model.hero import Hero
from hero_jax.train import (checkpointing, init_from, optimizer, profiling, sharding,
                            step as step_lib, tasks, writers)


log = logging.getLogger("hero_jax")
STOP_CHECK_EVERY = 10


class NonFiniteError(FloatingPointError):
  """A loss or gradient was not finite (the update was skipped, nothing saved)."""


def init_params(config, cfg, heads_required: bool = False):
  """Params to start from (numpy), or None for a fresh init (``config.init_from``);
  ``heads_required`` (evaluation): a checkpoint lacking some heads is an error."""
  return init_from.load(config.init_from, cfg, fmt=config.init_format, seed=config.seed,
                        heads_required=heads_required)


class MetricSums:
  """The ``(sum, count)`` metrics of an interval's steps, averaged when read.

  The steps' metrics stay device arrays until ``averages()`` fetches them all
  in one transfer and sums them on the host: no eager device operation per
  step (clu's merge took about 90 of them per step of the tiny pre-training
  run, 0.5-1 ms each on the CPU backend).
  """

  def __init__(self):
    self._steps = []

  def add(self, prefix: str, metrics: dict) -> None:
    self._steps.append((prefix, metrics))

  def averages(self) -> dict:
    sums = {}
    for prefix, metrics in jax.device_get(self._steps):
      for name, (total, count) in metrics.items():
        previous = sums.get(prefix + name, (0.0, 0.0))
        sums[prefix + name] = (previous[0] + np.float64(total), previous[1] + np.float64(count))
    return {key: float(clu_metrics.Average(total=total, count=count).compute())
            for key, (total, count) in sums.items()}


class Trainer:
  """Holds the run's pieces; ``train()`` and ``evaluate()`` are the two modes."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    # What to train: the model, the (dataset, objective) tasks, the optimizer.
    self.cfg = tasks.hero_config(config)
    self.model = Hero(self.cfg)
    ratios_and_settings = tasks.objective_settings(config)
    self.settings = {name: s for name, (_, s) in ratios_and_settings.items()}
    self.tasks = tasks.tasks(config, ratios_and_settings)
    tasks.check_heads(self.tasks, self.cfg)
    self.sizes = tasks.layout_sizes(config)
    tasks.check_settings_fit_layout(self.settings, self.sizes)
    # Each objective's sizes: the layout's, or its own packed rows.
    self.objective_sizes = tasks.objective_sizes(config, self.sizes, self.settings)
    t = config.train
    self.tx, self.schedule = optimizer.hero_adamw(
        t.learning_rate, t.warmup_steps, t.num_steps, b1=t.b1, b2=t.b2, eps=t.eps,
        weight_decay=t.weight_decay, grad_clip=t.grad_clip, lr_mul=t.lr_mul)
    # Where: the mesh and this process's share of each batch.
    self.mesh = sharding.make_mesh(dict(config.mesh.shape),
                                   sharding.mesh_devices(config.mesh.num_devices),
                                   dcn_data=config.mesh.dcn_data)
    self.rules = sharding.rules_from_config(config.mesh.rules)
    self.batch_shards, self.local_batch = sharding.batch_split(self.mesh, t.batch_videos,
                                                                  self.sizes.pack_videos)
    # The data, opened and checked against the model, and one pipeline per task.
    # With a frame bank the training frames live on the devices and the
    # pipelines send only their rows (frame_ids).
    self.frame_bank, self.frame_index = self._load_frame_bank()
    self.train_videos = {key: datasets.open_checked(e, config.data.train_split, config, self.cfg,
                                                    decode_frames=self.frame_bank is None)
                         for key, e in config.data.datasets.items()}
    # Objectives whose step draws (Objective.host_draws False) can keep their
    # laid-out examples on the devices too: their pipelines send indices only.
    self.example_banks, self.example_rows = self._load_example_banks()
    self.val_videos = {}
    if config.eval_every or config.mode == "eval":  # a missing val split fails now, not later
      for key in config.data.datasets:
        self._val(key)
    self.iterators = {self._key(task): self._pipeline(task) for task in self.tasks}
    # The state (sharded from the start), compiled steps (made on first use), outputs.
    self.state = step_lib.create_state(self.cfg, self.tx, self.mesh, self.rules, config.seed,
                                       init_params(config, self.cfg, heads_required=config.mode == "eval"),
                                       offload_opt_state=t.offload_opt_state)
    self.shardings = step_lib.state_shardings(self.state)
    self.steps, self.eval_steps = {}, {}
    self.checkpoints = checkpointing.manager(workdir, config.keep_checkpoints)
    self.writer = writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    self.stop_requested = False

  @staticmethod
  def _key(task) -> str:
    return f"{task.dataset}:{task.objective}"

  def _context(self, videos, objective: str):
    return pipeline.host_context(videos, self.objective_sizes[objective],
                                 max_txt_len=self.config.host.max_txt_len,
                                 mask_prob=self.config.host.mask_prob,
                                 pack_queries=self.config.host.pack_queries,
                                 queries_per_video=self.sizes.queries)

  def _load_frame_bank(self) -> tuple:
    """(device frame bank, {dataset: FrameIndex}) of the training split, or (None, {})."""
    from hero_jax.data import frame_bank
    c = self.config
    frame_bank.check_config(c.data.frame_bank, c.data.frame_bank_dtype)
    if c.data.frame_bank == "off":
      return None, {}
    sources = {key: datasets.bank_sources(e, c.data.train_split, c)
               for key, e in c.data.datasets.items()}
    return frame_bank.load(sources, c.data.max_clip_len, self.mesh, c.data.frame_bank,
                           c.data.frame_bank_dtype)

  def _load_example_banks(self) -> tuple:
    """({objective: device example bank}, {objective: {dataset: DatasetRows}})."""
    from hero_jax.data import example_bank
    from hero_jax.objectives import registry
    c = self.config
    example_bank.check_config(c.data.example_bank, c.data.frame_bank)
    if c.data.example_bank == "off" or c.mode == "eval":   # evaluation reads the host path
      return {}, {}
    banked = sorted({t.objective for t in self.tasks if not registry.get(t.objective).host_draws})
    if not banked:
      raise ValueError(f"config.data.example_bank = {c.data.example_bank!r}, but no trained "
                       "objective draws on the device "
                       f"({', '.join(example_bank.bankable_objectives())}): there is nothing to "
                       "bank; set it to 'off'")
    banks, rows = {}, {}
    for objective in banked:
      datasets_of = [t.dataset for t in self.tasks if t.objective == objective]
      banks[objective], rows[objective] = example_bank.load(
          objective, {d: self.train_videos[d] for d in datasets_of},
          {d: self._context(self.train_videos[d], objective) for d in datasets_of},
          {d: self.frame_index[d] for d in datasets_of}, self.mesh, c.data.example_bank,
          workers=example_bank.worker_count(c.data.example_bank_workers),
          min_examples=self.local_batch)
    return banks, rows

  def _pipeline(self, task, videos=None, **options):
    """A training pipeline of ``task`` (frame-bank rows when there is a frame
    bank, example indices when its objective has an example bank), or with
    ``videos`` given, a host-fed one over them (evaluation)."""
    if videos is None and task.objective in self.example_rows:
      from hero_jax.data import example_bank
      return example_bank.IndexIterator(
          self.example_rows[task.objective][task.dataset], task.objective, self.local_batch,
          self.config.seed, process_index=jax.process_index(),
          process_count=jax.process_count(), sizes=self.objective_sizes[task.objective])
    frame_index = None if videos else self.frame_index.get(task.dataset)
    videos = videos or self.train_videos[task.dataset]
    options = {"batch_videos": self.local_batch, "seed": self.config.seed,
               "worker_count": self.config.data.worker_count,
               "read_threads": self.config.data.read_threads, **options}
    return pipeline.make_pipeline(videos, task.objective, self._context(videos, task.objective),
                                  pipeline.PipelineOptions(**options), frame_index=frame_index)

  def _train_step(self, objective: str):
    if objective not in self.steps:
      from hero_jax.objectives import registry
      self.steps[objective] = step_lib.make_train_step(
          self.model, registry.get(objective), self.settings[objective], self.tx, self.mesh,
          self.rules, self.shardings, self.config.train.accum_steps, self.frame_bank,
          self.example_banks.get(objective))
    return self.steps[objective]

  # --- the loop -----------------------------------------------------------

  def train(self) -> dict:
    """Runs to ``train.num_steps``; returns the last logged train and eval scalars."""
    c = self.config
    step = self.restore()
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    pending, merged, last = [], MetricSums(), {}
    start_time, start_step = time.time(), step
    # One dispatch per step (MaxText's habit): the same key as eager
    # fold_in(key(seed), step), without its eager operations.
    run_key, step_key = jax.random.key(c.seed), jax.jit(jax.random.fold_in)
    profiler = profiling.StepProfiler(paths.resolve(self.workdir) / "profile",
                                      c.profile_start, c.profile_steps)
    try:
      while step < c.train.num_steps:
        task = tasks.draw_task(self.tasks, c.seed, step)
        with profiler.step(step):  # the batch's host time is part of the step
          batch = self.next_batch(task)
          self.state, outputs = self._train_step(task.objective)(
              self.state, batch, step_key(run_key, step))
        profiler.step_done(step, self.state)
        step += 1
        merged.add(f"train/{task.objective}/", outputs.pop("metrics"))
        pending.append((step, task, outputs))
        boundary = step % c.log_every == 0 or step == c.train.num_steps
        # A SIGTERM one host got must stop every host at the same step. Asking the
        # others is a collective that makes the host wait for the device, so on
        # several hosts it happens every STOP_CHECK_EVERY steps, not every step.
        check = jax.process_count() == 1 or step % STOP_CHECK_EVERY == 0 or boundary
        stopping = check and sharding.any_process(self.stop_requested)
        saving = step % c.checkpoint_every == 0 or step == c.train.num_steps or stopping
        if boundary or saving:
          last.update(self._log(pending, merged, step, start_time, start_step))
          pending, merged = [], MetricSums()
        if c.eval_every and (step % c.eval_every == 0 or step == c.train.num_steps):
          last.update(self.evaluate(step))
        if saving:
          self.save(step)
        if stopping:
          log.warning("SIGTERM: saved checkpoint %d, exiting", step)
          break
    finally:
      signal.signal(signal.SIGTERM, previous)
      profiler.stop()  # a run that ended inside the window still gets its trace
      self.checkpoints.wait_until_finished()
      self.writer.flush()
      # The data workers ignore SIGTERM and SIGINT (pipeline.worker_init): they
      # stop here, after the last save, so none outlives the run.
      for it in self.iterators.values():
        it.close()
    return last

  def next_batch(self, task) -> dict:
    it = self.iterators[self._key(task)]
    micro = [next(it) for _ in range(self.config.train.accum_steps)]
    local = {k: np.stack([m[k] for m in micro]) for k in micro[0]}
    return pipeline.make_global_batch(local, sharding.batch_sharding(self.mesh, leading_axes=1))

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.stop_requested = True

  # --- hooks: metrics, evaluation, checkpoints -------------------------------

  def _log(self, pending, merged, step, start_time, start_step) -> dict:
    """Checks the interval's steps were finite, then writes its merged metrics."""
    pending = jax.device_get(pending)
    for s, task, out in pending:
      if not out["finite"]:
        raise NonFiniteError(f"non-finite loss or gradient at step {s}, objective "
                             f"{task.objective!r} (dataset {task.dataset}); the update was "
                             f"skipped and no checkpoint holds it")
    scalars = merged.averages()
    last_out = pending[-1][2]
    elapsed = max(time.time() - start_time, 1e-9)
    steps_per_s = (step - start_step) / elapsed
    videos = self.config.train.batch_videos * self.config.train.accum_steps
    scalars.update({"train/grad_norm": float(last_out["grad_norm"]),
                    "train/param_norm": float(last_out["param_norm"]),
                    "train/learning_rate": float(self.schedule(step - 1)),
                    "perf/steps_per_s": steps_per_s, "perf/videos_per_s": steps_per_s * videos})
    for key, it in self.iterators.items():
      for kind, share in it.padding.items():
        scalars[f"data/{key}/padding_{kind}"] = share
      for reason, n in it.skipped.items():
        scalars[f"data/{key}/skipped_{reason}"] = n
      for name, n in it.stats.items():   # e.g. truncated tokens, rebalanced pack groups
        scalars[f"data/{key}/{name}"] = n
    self.writer.write_scalars(step, scalars)
    self.writer.flush()  # a killed run keeps its metrics up to here
    task = pending[-1][1]
    loss = scalars.get(f"train/{task.objective}/loss", float("nan"))
    eta = (self.config.train.num_steps - step) / max(steps_per_s, 1e-9)
    log.info("step %d/%d %s loss %.4f | %.2f steps/s %.1f videos/s | ETA %s", step,
             self.config.train.num_steps, task.objective, loss, steps_per_s,
             steps_per_s * videos, time.strftime("%H:%M:%S", time.gmtime(eta)))
    return scalars

  def evaluate(self, step: int) -> dict:
    """Every objective on the val split of every dataset: merged (sum, count) metrics."""
    from hero_jax.objectives import registry
    out = {}
    for task in self.tasks:
      videos = self._val(task.dataset)
      local_batch, batches = self._eval_batching(task, len(videos))
      # Repeated, so skipped videos never leave a host short of batches.
      it = self._pipeline(task, videos, batch_videos=local_batch, shuffle=False,
                          num_epochs=None, worker_count=0)
      if task.objective not in self.eval_steps:
        self.eval_steps[task.objective] = step_lib.make_eval_step(
            self.model, registry.get(task.objective), self.settings[task.objective], self.mesh,
            self.rules, self.shardings.params)
      merged = MetricSums()
      for _, batch in zip(range(batches), it):
        arrays = pipeline.make_global_batch(batch, sharding.batch_sharding(self.mesh))
        merged.add(f"val/{task.dataset}/{task.objective}/", self.eval_steps[
            task.objective](self.state.params, arrays, self.state.step))
      out.update(merged.averages())
      out.update(self._downstream(task, step))
    self.writer.write_scalars(step, out)  # its log back end prints them
    self.writer.flush()
    return out

  def _val(self, dataset: str) -> pipeline.VideoSource:
    """The val split of a dataset, opened (and checked against the model) once."""
    if dataset not in self.val_videos:
      c = self.config
      self.val_videos[dataset] = datasets.open_checked(c.data.datasets[dataset],
                                                       c.data.val_split, c, self.cfg)
    return self.val_videos[dataset]

  def _eval_batching(self, task, num_videos: int) -> tuple:
    """(videos per process, batches): the same on every host, fitting the mesh."""
    group = getattr(self.settings[task.objective], "group_videos", 0) or 1
    unit = math.lcm(self.batch_shards * self.sizes.pack_videos, group)
    global_batch = min(self.config.train.batch_videos, num_videos) // unit * unit
    if global_batch == 0:
      raise ValueError(f"val split of {task.dataset!r} has {num_videos} videos, fewer than one "
                       f"batch that fits the mesh and {task.objective} ({unit})")
    local = global_batch // jax.process_count()
    return local, max(1, min(self.config.eval_batches, num_videos // global_batch))

  def _downstream(self, task, step: int) -> dict:
    """The objective's whole-split evaluation (e.g. VCMR), if it has one."""
    from hero_jax.eval import run as eval_run
    if task.objective not in eval_run.EVALUATORS:
      return {}
    evaluate_split, write_upload = eval_run.EVALUATORS[task.objective]
    c = self.config
    ctx = eval_run.EvalContext(
        model=self.model, params=self.state.params,
        sizes=self.objective_sizes[task.objective],
        objective_settings=self.settings[task.objective],
        eval_config=c.eval.to_dict(), workdir=self.workdir, mesh=self.mesh,
        batch_multiple=self.batch_shards, write_files=jax.process_index() == 0)
    out, predictions = {}, {}
    for split in c.eval.splits:
      source = (self._val(task.dataset) if split == c.data.val_split
                else datasets.open_split(c.data.datasets[task.dataset], split, c))
      metrics, predictions[split] = evaluate_split(ctx, source, task.dataset, split, step)
      out.update({f"val/{task.dataset}/{split}/{k}": v for k, v in metrics.items()})
    write_upload(ctx, task.dataset, step, predictions)
    return out

  def restore(self) -> int:
    """Resumes from the newest checkpoint; returns the step to continue from."""
    restored = checkpointing.restore(self.checkpoints, self.state)
    if restored is None:
      return 0
    self.state, saved, step = restored
    n = jax.process_count()
    if saved.get("process_count") != n:
      raise ValueError(f"checkpoint step {step} was written by {saved.get('process_count')} "
                       f"processes, this run has {n}: the data-iterator states do not carry over")
    data_state = saved["processes"][str(jax.process_index())]
    for key, it in self.iterators.items():
      if key not in data_state:
        raise ValueError(f"checkpoint step {step} has no data state for task {key}; "
                         f"its tasks: {sorted(data_state)}")
      it.set_state(data_state[key])
    log.info("resumed from checkpoint step %d", step)
    return step

  def save(self, step: int) -> None:
    local = {k: it.get_state() for k, it in self.iterators.items()}
    data_state = {"process_count": jax.process_count(),
                  "processes": sharding.gather_json(local)}
    checkpointing.save(self.checkpoints, step, self.state, data_state,
                       json.loads(self.config.to_json_best_effort()))


def train_and_evaluate(config, workdir: str) -> dict:
  return Trainer(config, workdir).train()


def evaluate_only(config, workdir: str) -> dict:
  trainer = Trainer(config, workdir)
  step = trainer.restore()
  return trainer.evaluate(step)
