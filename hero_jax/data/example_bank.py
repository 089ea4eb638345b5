"""A device-resident example bank: a split's laid-out examples, stored once on the devices.

An objective whose host transform draws nothing (``Objective.host_draws``
False: ``mlm-device``, ``mfm-nce-device``, ``mffr-device``, ``fom-device``,
``vsm-device``, whose random choices the step draws) makes the same example of a video every epoch. With
``config.data.example_bank`` the loop makes them once, at start (the host
transform over every record of the training split, frames as frame-bank
rows), and keeps them on the devices beside the frame bank. Per step the host
then sends only the batch's example indices, ``example_ids`` int32 [V]; the
jitted step gathers the batch from the bank (``gather``), then its frames
from the frame bank. The host's per-step work is slicing a permutation, so the
input no longer limits the step at any accelerator speed.

Layout: one array per field, [N, ...] in the field's dtype. ``replicated``:
every process makes every example (dataset d holds rows ``start_d ..
end_d - 1``) and every device holds them all. ``sharded``: each process
makes only its share of each dataset's records (every process_count-th) and
its examples fill its own devices' rows (``share_blocks``; zero rows pad
each device's block), so a host's memory and start time are 1/processes of
the bank's. Memory: the layout's per-video fields, about 20 KB a video at the
base layout (int32; 36 KB for ``vsm-device``), so about 0.45 GB per objective
for the TV set's 21.8k videos.

Order: ``IndexIterator`` draws this process's rows (its own with
``sharded``, every process_count-th with ``replicated``) in a new permutation
every epoch, from (seed, objective, epoch); not grain's order, so a run with
the bank sees the videos in another order than without. Videos the objective
skips are counted once, when the bank is made (the host-fed path counts them
every epoch); with ``sharded`` each process counts its share's, and the
totals over all processes are logged.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import time
import zlib
from typing import Optional

import numpy as np

from hero_jax import layout, packing
from hero_jax.objectives import registry

log = logging.getLogger("hero_jax")

STATE_VERSION = "example-bank-1"


@dataclasses.dataclass
class DatasetRows:
  """One dataset's part of the bank: rows ``start .. end - 1``, what was
  skipped making them (by reason, with up to 5 ids each), the host
  transforms' stats and the padding share of its examples."""
  start: int
  end: int
  skipped: collections.Counter
  skipped_ids: dict
  stats: collections.Counter
  padding: dict
  # int16 [n, R, 3] (``packing.row_counts``) when the layout packs groups of
  # several videos: IndexIterator packs each batch's groups from them.
  row_counts: Optional[np.ndarray] = None
  # The bank rows this process made and samples (one per example, in the
  # order of ``row_counts``), when each process made only its own share of a
  # sharded bank (``load``); None: rows ``start .. end - 1``, every process's.
  ids: Optional[np.ndarray] = None


# Records per task of a worker process; a split of fewer is made in process.
CHUNK_RECORDS = 1024
_worker_job: tuple = ()   # (transform, source) in a worker process


def _start_worker(transform, source, worker_count: int) -> None:
  from hero_jax.data import pipeline
  global _worker_job
  pipeline.worker_init(0, worker_count)   # signals and orphan watchdog as grain's workers
  _worker_job = (transform, source)


def _transform_records(records: list) -> list:
  transform, source = _worker_job
  return [transform(i, (i, source[i])) for i in records]


def transformed(transform, source, workers: int = 0, chunk: int = CHUNK_RECORDS,
                records=None):
  """``transform`` over the records ``records`` of ``source`` (default all),
  in order; in ``workers`` spawned processes, ``chunk`` records per task,
  when there is more than one chunk (the result is the same)."""
  records = list(range(len(source)) if records is None else records)
  chunks = [records[s:s + chunk] for s in range(0, len(records), chunk)]
  if workers <= 0 or len(chunks) < 2:
    yield from (transform(i, (i, source[i])) for i in records)
    return
  count = min(workers, len(chunks))
  with concurrent.futures.ProcessPoolExecutor(
      count, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
      initargs=(transform, source, count)) as pool:
    for outs in pool.map(_transform_records, chunks):
      yield from outs


def worker_count(setting: int) -> int:
  """``config.data.example_bank_workers``: -1 = one process per core."""
  if setting < -1:
    raise ValueError(f"config.data.example_bank_workers must be >= -1, got {setting}")
  return (os.cpu_count() or 1) if setting == -1 else setting


def make_examples(videos, objective: str, ctx, frame_index, workers: int = 0,
                  chunk: int = CHUNK_RECORDS, share: tuple = (0, 1)) -> tuple:
  """(stacked examples {field: [n, ...]}, DatasetRows with start 0) of the
  records of ``videos`` (a ``pipeline.VideoSource``, or a ``QueryJoin``)
  through the objective's host transform, with frames as rows of the frame
  bank's ``frame_index``; in ``workers`` processes (``transformed``).
  ``share`` (i, n): only records i, i + n, ... (process i's of n)."""
  from hero_jax.data import pipeline
  spec = registry.get(objective)
  if videos.kind != spec.records:
    raise ValueError(f"objective {objective!r} reads {spec.records} records, but {videos.path} "
                     f"split {videos.split!r} holds {videos.kind}")
  source = record_source(videos, objective)
  transform = pipeline.RecordTransform(objective, spec.make_example, ctx, seed=0,
                                       shard_len=len(source), max_clip_len=videos.max_clip_len,
                                       kind=spec.records, frame_index=frame_index)
  examples, skipped, skipped_ids, stats = [], collections.Counter(), {}, collections.Counter()
  records = range(share[0], len(source), share[1])
  for out in transformed(transform, source, workers, chunk, records):
    if "skip" in out:
      skipped[out["skip"]] += 1
      ids = skipped_ids.setdefault(out["skip"], [])
      if len(ids) < 5:
        ids.append(out["vid"])
      continue
    stats.update(out["stats"])
    examples.append(out["example"])
  if not examples:
    raise ValueError(f"{videos.path} split {videos.split!r}: objective {objective!r} skipped "
                     f"every one of its {len(records)} records"
                     f"{f' (process {share[0]} of {share[1]})' if share[1] > 1 else ''} "
                     f"({dict(skipped)})")
  stacked = layout.stack_examples(examples)
  counts = packing.row_counts(stacked) if ctx.sizes.packs_batches else None
  return stacked, DatasetRows(0, len(examples), skipped, skipped_ids, stats,
                              layout.padding_share(stacked), counts)


def concatenate(parts: dict) -> tuple:
  """{dataset: (stacked, DatasetRows)} -> (one host bank {field: [N, ...]},
  {dataset: DatasetRows} with their rows in it)."""
  fields, rows, start = collections.defaultdict(list), {}, 0
  for key, (stacked, part) in parts.items():
    n = part.end - part.start
    for field, value in stacked.items():
      fields[field].append(value)
    rows[key] = dataclasses.replace(part, start=start, end=start + n)
    start += n
  return {field: np.concatenate(values) for field, values in fields.items()}, rows


def place(host_bank: dict, mesh, mode: str) -> dict:
  """The bank as global ``jax.Array``s, one per field, rows replicated or sharded."""
  from hero_jax.data import frame_bank
  return {field: frame_bank.place_rows(value, mesh, mode) for field, value in host_bank.items()}


def rows_per_device(capacities: list, devices: list) -> int:
  """The rows each device holds of a bank of which process q makes at most
  ``capacities[q]`` rows on its ``devices[q]`` devices."""
  for q, n in enumerate(devices):
    if not n:
      raise ValueError(f"process {q} has no device in the mesh: a sharded example bank puts "
                       "each process's examples on its own devices")
  return max(1, max(-(-cap // n) for cap, n in zip(capacities, devices)))


def share_blocks(host_bank: dict, rows: dict, blocks: list) -> tuple:
  """This process's part of a sharded bank: ({field: {(start, stop): rows}},
  {dataset: DatasetRows with ``ids``}). Its examples fill its devices' row
  ``blocks`` in row order; the rest of each block is zeros."""
  from hero_jax.data import frame_bank
  blocks = sorted(set(blocks))
  slots = np.concatenate([np.arange(start, stop, dtype=np.int32) for start, stop in blocks])
  n = len(next(iter(host_bank.values())))
  if n > len(slots):
    raise ValueError(f"example bank: this process made {n} examples for {len(slots)} rows on "
                     "its devices")
  parts, at = {}, 0
  for start, stop in blocks:
    parts[(start, stop)] = {field: frame_bank.zero_padded(value[at:at + stop - start], stop - start)
                            for field, value in host_bank.items()}
    at += stop - start
  out = {field: {block: part[field] for block, part in parts.items()} for field in host_bank}
  return out, {key: dataclasses.replace(r, ids=slots[r.start:r.end]) for key, r in rows.items()}


def gather(batch: dict, bank: dict) -> dict:
  """Inside a jitted step: the batch of ``example_ids`` [V], its fields
  gathered from the bank (the batch's other fields are kept)."""
  import jax.numpy as jnp
  ids = batch["example_ids"]
  out = {k: v for k, v in batch.items() if k != "example_ids"}
  out.update({field: jnp.take(value, ids, axis=0) for field, value in bank.items()})
  return out


def record_source(videos, objective: str):
  """What ``make_examples`` reads records from: a video split's records, or
  the query records joined to their videos."""
  return videos.source if registry.get(objective).records == "videos" else videos


def load(objective: str, videos_by_dataset: dict, contexts: dict, frame_indexes: dict, mesh,
         mode: str, workers: int = 0, process: Optional[tuple] = None,
         min_examples: int = 1) -> tuple:
  """(device bank, {dataset: DatasetRows}) of ``objective`` over
  ``{dataset: videos}`` (``make_examples`` with that dataset's host context
  and frame index, in ``workers`` processes); logs its size, what was
  skipped and the load time.

  ``sharded``: each process (``process``: (index, count), default JAX's)
  makes only its share of each dataset's records (every count-th) and puts
  the examples on its own devices; its index stream samples them. Host memory
  and start time are then 1/processes of the bank's, and the skips and stats
  logged are this process's (the totals of all are logged too). Every process
  raises the same error if any process failed to make its share of a dataset
  (a bad record, every record skipped) or made fewer than ``min_examples``
  (``check_shares``). ``replicated``: every process makes every example and
  samples every count-th."""
  import jax
  from hero_jax.data import frame_bank
  from hero_jax.train import sharding
  check_objective(objective)
  start_time = time.time()
  index, count = process or (jax.process_index(), jax.process_count())
  share = (index, count) if mode == "sharded" else (0, 1)
  exchange = mode == "sharded" and count > 1
  parts, reports, failure = {}, {}, None
  for key, videos in videos_by_dataset.items():
    try:
      parts[key] = make_examples(videos, objective, contexts[key], frame_indexes[key], workers,
                                 share=share)
    except Exception as e:   # noqa: BLE001  (re-raised below, on every process)
      if not exchange:
        raise
      reports[key], failure = {"error": f"{type(e).__name__}: {e}"}, e
      break
    reports[key] = {"examples": parts[key][1].end, "skipped": dict(parts[key][1].skipped)}
  if exchange:
    # Every process must stop on the same error: one that raised alone would
    # leave the others waiting for it in the first collective.
    reports = sharding.gather_json(reports)
    try:
      check_shares(objective, reports, min_examples)
    except ValueError as e:
      raise e from failure
  host_bank, rows = concatenate(parts)
  if mode == "sharded":
    capacities = [sum(len(range(q, len(record_source(videos, objective)), count))
                      for videos in videos_by_dataset.values()) for q in range(count)]
    devices = collections.Counter(d.process_index for d in mesh.devices.flat)
    shape = (rows_per_device(capacities, [devices[q] for q in range(count)]) * mesh.size,)
    blocks = frame_bank.addressable_blocks(shape, frame_bank.bank_sharding(mesh, mode))
    field_blocks, rows = share_blocks(host_bank, rows, blocks)
    bank = {field: frame_bank.place_blocks(field_blocks[field], shape + value.shape[1:], mesh,
                                           mode)
            for field, value in host_bank.items()}
  else:
    bank = place(host_bank, mesh, mode)
  nbytes = sum(v.size * v.dtype.itemsize for v in bank.values())
  log.info("example bank %s: %d examples made by this process (%d of %d), %.2f GB on the "
           "devices (%s), made in %.1f s; skipped %s", objective,
           sum(r.end - r.start for r in rows.values()), share[0], share[1], nbytes / 1e9, mode,
           time.time() - start_time, {k: dict(r.skipped) for k, r in rows.items()})
  if exchange:
    log.info("example bank %s: skipped by all %d processes %s", objective, count,
             total_skips(reports))
  return bank, rows


def check_shares(objective: str, reports: dict, min_examples: int) -> None:
  """``reports`` {process: {dataset: {"examples", "skipped"} or {"error"}}}
  (``sharding.gather_json``, the same on every process) of a sharded bank:
  raises one ValueError, naming each process and dataset, if any process
  made no example of a dataset or fewer than ``min_examples`` (a batch)."""
  problems = []
  for process in sorted(reports, key=int):
    for dataset, report in reports[process].items():
      if "error" in report:
        problems.append(f"process {process}: {report['error']}")
      elif report["examples"] < min_examples:
        problems.append(f"process {process}, dataset {dataset!r}: {report['examples']} "
                        f"examples, fewer than batch_videos={min_examples}")
  if problems:
    raise ValueError(f"sharded example bank of {objective!r}: " + "; ".join(problems) +
                     ". Each process makes only every process_count-th record's example; "
                     "config.data.example_bank='replicated' has every process make them all")


def total_skips(reports: dict) -> dict:
  """{dataset: {reason: count}} summed over the processes' ``reports``."""
  totals = collections.defaultdict(collections.Counter)
  for report in reports.values():
    for dataset, r in report.items():
      totals[dataset].update(r.get("skipped", {}))
  return {dataset: dict(c) for dataset, c in totals.items()}


def check_config(mode: str, frame_bank_mode: str) -> None:
  from hero_jax.data import frame_bank
  if mode not in frame_bank.MODES:
    raise ValueError(f"config.data.example_bank: {mode!r} is not one of {frame_bank.MODES}")
  if mode != "off" and frame_bank_mode == "off":
    raise ValueError(f"config.data.example_bank = {mode!r} needs the frame bank (the examples "
                     "hold frame-bank rows): set config.data.frame_bank to 'replicated' or "
                     "'sharded'")


def bankable_objectives() -> list:
  """The registered objectives whose step draws (``Objective.host_draws`` False)."""
  import hero_jax.objectives  # noqa: F401  (registers the built-in objectives)
  return [name for name in registry.names() if not registry.get(name).host_draws]


def check_objective(objective: str) -> None:
  if registry.get(objective).host_draws:
    raise ValueError(f"objective {objective!r} draws its examples on the host (a new example "
                     "every epoch): the example bank holds only objectives whose step draws "
                     f"({', '.join(bankable_objectives())}); config.objective_draws='device' "
                     "trains each pre-training objective as its device-drawn twin")


class IndexIterator:
  """Batches ``{"example_ids": int32 [V]}`` of one dataset's bank rows; the
  ``pipeline.BatchIterator`` interface (``skipped``, ``stats``, ``padding``,
  ``get_state`` / ``set_state``, ``close``)."""

  def __init__(self, rows: DatasetRows, objective: str, batch_videos: int, seed: int,
               shuffle: bool = True, process_index: int = 0, process_count: int = 1,
               num_epochs: Optional[int] = None, sizes=None):
    self.objective, self.batch_videos = objective, batch_videos
    # Pack groups of several videos: the batch's groups are packed here, from
    # the bank rows' counts (the bank holds no pack fields then).
    if rows.row_counts is not None and sizes is None:
      raise ValueError(f"example bank of {objective!r}: its rows pack in groups; IndexIterator "
                       "needs the layout sizes")
    self._sizes = sizes
    # This process's rows, and their row counts in the same order.
    if rows.ids is not None:   # made by this process alone (a sharded bank)
      self._shard, self._counts = rows.ids, rows.row_counts
    else:                      # every process's: every process_count-th
      self._shard = np.arange(rows.start, rows.end, dtype=np.int32)[process_index::process_count]
      self._counts = (None if rows.row_counts is None
                      else rows.row_counts[process_index::process_count])
    if len(self._shard) < batch_videos:
      raise ValueError(f"example bank of {objective!r}: process {process_index} has "
                       f"{len(self._shard)} examples, fewer than batch_videos={batch_videos}")
    self._seed = [int(seed), zlib.crc32(objective.encode()), int(process_index)]
    self._shuffle, self._num_epochs = shuffle, num_epochs
    self.skipped, self.skipped_ids = rows.skipped, rows.skipped_ids
    self.stats, self.padding = collections.Counter(rows.stats), rows.padding
    self.position = 0   # examples handed out so far
    self.batches = 0
    self._epoch, self._order = -1, None

  def __iter__(self):
    return self

  def _epoch_order(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      self._epoch = epoch
      # Positions in the shard (the same order as permuting the shard itself).
      n = len(self._shard)
      self._order = (np.random.default_rng(self._seed + [epoch]).permutation(n)
                     if self._shuffle else np.arange(n))
    return self._order

  def __next__(self) -> dict:
    n, positions, filled = len(self._shard), np.empty(self.batch_videos, np.int64), 0
    while filled < self.batch_videos:
      epoch, at = divmod(self.position, n)
      if self._num_epochs is not None and epoch >= self._num_epochs:
        raise StopIteration   # a partial batch is dropped, as the host-fed path does
      take = self._epoch_order(epoch)[at:at + self.batch_videos - filled]
      positions[filled:filled + len(take)] = take
      filled += len(take)
      self.position += len(take)
    self.batches += 1
    out = self._shard[positions]
    if self._counts is None:
      return {"example_ids": out}
    try:
      pack, order = packing.pack_batch(self._counts[positions], self._sizes, vids=list(out))
    except packing.RowsDoNotFit as e:
      raise ValueError(f"example bank of {self.objective!r} (bank rows): {e}") from None
    if order is not None:   # a group overflowed: the batch regrouped, as the host path does
      out = out[order]
      self.stats["pack_groups_rebalanced"] += 1
    return {"example_ids": out, **pack}

  def close(self) -> None:
    """Nothing to stop (no worker processes)."""

  def get_state(self) -> dict:
    return {"version": STATE_VERSION, "position": self.position, "batches": self.batches}

  def set_state(self, state: dict) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(f"iterator state version {state.get('version')!r}, expected "
                       f"{STATE_VERSION} (the checkpoint was written by a run "
                       f"{'without' if 'grain' in state else 'with another'} example bank)")
    self.position, self.batches = int(state["position"]), int(state["batches"])
