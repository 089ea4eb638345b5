"""grain input pipelines: built datasets -> static-shape batches per objective.

  source (tfds data_source, random access, no TensorFlow)
    -> this process's shard (index ``process_index::process_count``)
    -> shuffle (a new permutation every epoch, from the seed) -> repeat
    -> decode + the objective's host transform, seeded by (seed, objective,
       record index, epoch), in grain worker processes (which ignore SIGTERM
       and SIGINT: the main process saves, then ``BatchIterator.close()``
       stops them)
    -> ``BatchIterator``: counts skipped videos by reason, stacks
       ``batch_videos`` examples (every batch has the layout's static shapes),
       reports the padding share, saves / restores its position exactly.

``make_global_batch`` turns a process-local batch into global ``jax.Array``s.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import threading
import time
import zlib
from typing import Optional

import numpy as np

from hero_jax import layout, packing
from hero_jax.data import frame_bank, records
from hero_jax.objectives import host
from hero_jax.objectives import registry

STATE_VERSION = 2


def dataset_dir(data_dir: str, dataset: str, version: Optional[str] = None) -> str:
  """``<data_dir>/<name>/<config>/<version>`` (the newest version by default)."""
  from hero_jax import paths
  root = paths.resolve(data_dir) / dataset
  if version is None:
    versions = sorted((p.name for p in root.iterdir() if p.name[:1].isdigit()),
                      key=lambda v: tuple(int(x) for x in v.split(".")),
                      ) if root.is_dir() else []
    if not versions:
      raise FileNotFoundError(
          f"no built dataset {dataset!r} in {data_dir} (looked for {root}/<version>); build it "
          f"with: python -m hero_jax.data.build --dataset {dataset} --data_dir {data_dir}")
    version = versions[-1]
  path = root / version
  if not (path / "dataset_info.json").exists():
    raise FileNotFoundError(f"{path} is not a built dataset (no dataset_info.json)")
  return str(path)


class BuiltDataset:
  """One split of a built dataset and its metadata. ``decode_frames=False``
  leaves a video's ``frames`` feature undecoded (its bytes): the frame bank's
  pipelines never read it."""

  def __init__(self, path: str, split: str, decode_frames: bool = True):
    import tensorflow_datasets as tfds
    self.path, self.split = path, split
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
      raise ValueError(f"{path}: no split {split!r}; splits: {sorted(builder.info.splits)}")
    decoders = None if decode_frames else {"frames": tfds.decode.SkipDecoding()}
    self.source = builder.as_data_source(split, decoders=decoders)
    self.metadata = dict(builder.info.metadata or {})
    self.kind = self.metadata.get("kind")

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    return self.source[index]


class VideoSource(BuiltDataset):
  """Random access to the videos of a split: record, ``VideoExample``, vid lookup."""

  def __init__(self, path: str, split: str, max_clip_len: Optional[int] = 100,
               decode_frames: bool = True):
    super().__init__(path, split, decode_frames)
    if self.kind != "videos":
      raise ValueError(f"{path} holds {self.kind!r} records, not videos")
    self.max_clip_len = max_clip_len
    self.video_ids = list(self.metadata["video_ids"][split])
    if len(self.video_ids) != len(self.source):
      raise ValueError(f"{path}: metadata lists {len(self.video_ids)} videos for split "
                       f"{split!r} but the split has {len(self.source)} records")
    self.index = {vid: i for i, vid in enumerate(self.video_ids)}
    for i in {0, len(self.source) - 1}:  # records are in generation order: spot check
      got = records.text(self.source[i]["vid"])
      if got != self.video_ids[i]:
        raise ValueError(f"{path}: record {i} is video {got!r}, metadata says "
                         f"{self.video_ids[i]!r}; rebuild the dataset")

  @property
  def special_ids(self) -> host.SpecialIds:
    ids = self.metadata["special_ids"]
    return host.SpecialIds(cls=ids["cls"], sep=ids["sep"], pad=ids["pad"], unk=ids["unk"],
                           mask=ids["mask"], v_range=tuple(ids["v_range"]))

  @property
  def feature_dim(self) -> int:
    return int(self.metadata["feature_dim"])

  @property
  def frame_length(self) -> float:
    return float(self.metadata["frame_length"])

  def video(self, index: int) -> layout.VideoExample:
    return records.decode_video(self.source[index], self.max_clip_len)

  def raw_by_id(self, vid: str):
    """The stored record of video ``vid``, or None when this split lacks it."""
    return self.source[self.index[vid]] if vid in self.index else None

  def video_by_id(self, vid: str, *, needed_by: str = "") -> layout.VideoExample:
    if vid not in self.index:
      raise KeyError(f"video {vid!r}{' of ' + needed_by if needed_by else ''} is not in "
                     f"{self.path} split {self.split!r}")
    return self.video(self.index[vid])


class VideoCorpus:
  """Every split of a videos dataset, looked up by video id.

  A query split may name videos of any split of the videos dataset (the
  original reads one video DB for all of them), so query datasets join here.
  Behaves like a ``VideoSource`` for lookups and metadata.
  """

  def __init__(self, path: str, max_clip_len: Optional[int] = 100, decode_frames: bool = True):
    import tensorflow_datasets as tfds
    splits = sorted(tfds.builder_from_directory(path).info.splits)
    self.path, self.max_clip_len = path, max_clip_len
    self.splits = {split: VideoSource(path, split, max_clip_len, decode_frames)
                   for split in splits}
    first = self.splits[splits[0]]
    self.metadata, self.kind = first.metadata, first.kind
    self.owner = {}
    for split, source in self.splits.items():
      for vid in source.video_ids:
        self.owner.setdefault(vid, split)

  special_ids = VideoSource.special_ids
  feature_dim = VideoSource.feature_dim
  frame_length = VideoSource.frame_length

  def __contains__(self, vid: str) -> bool:
    return vid in self.owner

  def raw_by_id(self, vid: str):
    split = self.owner.get(vid)
    return None if split is None else self.splits[split].raw_by_id(vid)

  def video_by_id(self, vid: str, *, needed_by: str = "") -> layout.VideoExample:
    if vid not in self.owner:
      raise KeyError(f"video {vid!r}{' of ' + needed_by if needed_by else ''} is in no split "
                     f"of {self.path}")
    return self.splits[self.owner[vid]].video_by_id(vid)


class QuerySource(BuiltDataset):
  """A split of a query dataset (``moments``: TVR/How2R, ``qa``: TVQA/How2QA).

  ``video_index``: the data's global video index of the split's corpus
  ({video id: index}, TVR's ``vid2dur_idx.json``), or None when the data
  has none.
  """

  def __init__(self, path: str, split: str):
    super().__init__(path, split)
    if self.kind not in ("moments", "qa"):
      raise ValueError(f"{path} holds {self.kind!r} records, not queries")

  @property
  def video_index(self) -> Optional[dict]:
    index = self.metadata.get("video_index") or {}
    return dict(index[self.split]) if self.split in index else None

  def query(self, index: int):
    raw = self.source[index]
    return records.decode_moment(raw) if self.kind == "moments" else records.decode_qa(raw)


class QueryJoin:
  """Query records joined to their video at load time (queries hold only the id).

  ``join[i]`` is the pair of stored records ``(query, video)`` (video None
  when no split of the videos holds it: the pipeline counts such queries as
  skipped); ``join.example(i)`` the decoded ``layout.QueryExample``.
  """

  def __init__(self, queries: QuerySource, videos):
    self.queries, self.videos = queries, videos
    self.kind = queries.kind
    self.path, self.split = queries.path, queries.split
    self.max_clip_len = videos.max_clip_len

  @property
  def special_ids(self) -> host.SpecialIds:
    return self.videos.special_ids

  @property
  def feature_dim(self) -> int:
    return self.videos.feature_dim

  @property
  def frame_length(self) -> float:
    return self.videos.frame_length

  def __len__(self) -> int:
    return len(self.queries)

  def __getitem__(self, index: int) -> tuple:
    q = self.queries[index]
    return q, self.videos.raw_by_id(records.text(q["vid"]))

  def example(self, index: int) -> layout.QueryExample:
    query = self.queries.query(index)
    video = self.videos.video_by_id(query.vid, needed_by=f"query {query.qid!r}")
    return layout.QueryExample(video=video, query=query)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """How one objective's batches are drawn (per process)."""
  batch_videos: int
  seed: int = 0
  shuffle: bool = True
  num_epochs: Optional[int] = None  # None: repeat forever
  worker_count: int = 0
  worker_buffer_size: int = 2
  chunk_videos: int = 16   # records transformed and sent to the main process together
  # grain's read threads and prefetch buffer (in chunks), per process (the main
  # one, or each worker). The host transforms hold the GIL, so more threads
  # only contend for it (grain's default of 16 gave a third of one thread's
  # rate); a pipeline whose objective is not drawn still fills its buffer.
  read_threads: int = 1
  read_buffer: int = 4

  def __post_init__(self):
    if self.batch_videos <= 0:
      raise ValueError(f"batch_videos must be positive, got {self.batch_videos}")
    if self.worker_count < 0:
      raise ValueError(f"worker_count must be >= 0, got {self.worker_count}")
    if self.chunk_videos <= 0:
      raise ValueError(f"chunk_videos must be positive, got {self.chunk_videos}")
    if self.read_threads < 0 or self.read_buffer < 0:
      raise ValueError(f"read_threads and read_buffer must be >= 0, got {self.read_threads}, "
                       f"{self.read_buffer}")


def example_seed(seed: int, objective: str, record_index: int, epoch: int) -> list:
  """The host transform's seed: one stream per (seed, objective, record, epoch)."""
  return [int(seed), zlib.crc32(objective.encode()), int(record_index), int(epoch)]


def decode_item(raw, kind: str, max_clip_len: Optional[int], frame_index=None) -> tuple:
  """(item, bank offset): a stored record (a video, or a (query, video) pair)
  as ``make_example`` takes it; raises ``SkipExample`` for a query whose
  video is missing. With a ``frame_bank.FrameIndex`` the video's frames are
  a placeholder [rows, 0] and the offset is its first bank row (else None)."""
  if kind == "videos":
    v_raw, query = raw, None
  else:
    q_raw, v_raw = raw
    query = records.decode_moment(q_raw) if kind == "moments" else records.decode_qa(q_raw)
    if v_raw is None:
      raise registry.SkipExample("query_unknown_video",
                                 f"query {query.qid!r} names video {query.vid!r}")
  offset = None
  if frame_index is not None:
    offset, placeholder = frame_index.placeholder(records.text(v_raw["vid"]))
    v_raw = {**v_raw, "frames": placeholder}
  video = records.decode_video(v_raw, max_clip_len)
  return (video if query is None else layout.QueryExample(video=video, query=query)), offset


def item_id(item) -> str:
  return item.query.qid if isinstance(item, layout.QueryExample) else item.vid


@dataclasses.dataclass
class RecordTransform:
  """Decode + host transform of one record; picklable for grain workers.

  It holds the objective's ``make_example`` itself: unpickling it in a worker
  imports the module that defines (and registers) it, built-in or not.
  ``kind``: the records it reads (``Objective.records``); ``frame_index``:
  the frame bank's index (examples then carry ``frame_ids``, not ``frames``).
  """
  objective: str
  make_example: object
  ctx: host.HostContext
  seed: int
  shard_len: int
  max_clip_len: Optional[int]
  kind: str = "videos"
  frame_index: object = None

  def __call__(self, position: int, tagged) -> dict:
    record_index, raw = tagged
    epoch = position // self.shard_len
    rng = np.random.default_rng(example_seed(self.seed, self.objective, record_index, epoch))
    stats = collections.Counter()
    item = None
    try:
      item, offset = decode_item(raw, self.kind, self.max_clip_len, self.frame_index)
      example = self.make_example(item, rng, self.ctx, stats)
      if offset is not None:
        example = frame_bank.frame_ids(example, offset)
    except registry.SkipExample as e:
      return {"skip": e.reason, "vid": item_id(item) if item is not None else str(record_index)}
    except ValueError as e:
      raise ValueError(f"objective {self.objective!r}, record {record_index}: {e}") from None
    return {"example": example, "stats": dict(stats), "vid": item_id(item)}


def _pack_chunk(items: list) -> dict:
  """A chunk of transformed records as one transfer: the examples stacked
  (grain moves each array through its own shared-memory block, so a few
  large arrays instead of ten per video), the rest (skips, stats) as is."""
  examples = [item.pop("example") for item in items if "example" in item]
  return {"items": items, "examples": layout.stack_examples(examples) if examples else {}}


def _unpack_chunk(chunk: dict) -> list:
  """``_pack_chunk``'s items back, each example a view into the stacked arrays."""
  items, j = chunk["items"], 0
  for item in items:
    if "skip" not in item:
      item["example"] = {k: v[j] for k, v in chunk["examples"].items()}
      j += 1
  return items


def _tag(index: int, raw) -> tuple:
  return index, raw


def worker_init(worker_index: int, worker_count: int) -> None:
  """Runs first in every grain worker process.

  A preemption (``kill -TERM -<pgid>``) or a Ctrl-C signals the whole process
  group. A worker that died of it would fail the main process's next batch
  before the main process could save, so workers ignore both signals: on
  SIGTERM the main process finishes its step, saves and closes them; on
  Ctrl-C it stops at once (no save) and closes them. A SIGTERM that came while
  the worker was starting waits, blocked (``_sigterm_blocked``), and is dropped
  here. A main process that dies without closing them (SIGKILL, out of
  memory) is noticed by the watchdog: the workers exit.
  """
  del worker_index, worker_count
  signal.signal(signal.SIGTERM, signal.SIG_IGN)  # discards one pending since start-up
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # see _sigterm_blocked
  threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True,
                   name="hero-orphan-watchdog").start()


def _exit_when_orphaned(parent: int, every_s: float = 1.0) -> None:
  # Reparenting changes the parent pid: nobody is left to read our batches.
  while os.getppid() == parent:
    time.sleep(every_s)
  os._exit(0)


@contextlib.contextmanager
def _sigterm_blocked():
  """SIGTERM blocked in the calling thread meanwhile.

  grain starts its threads and worker processes lazily, inside our calls to it;
  they inherit the block, so a SIGTERM that comes while a worker is still
  starting stays pending until ``worker_init`` ignores it instead of killing
  the worker (the race CPython's resource tracker closes the same way,
  bpo-33613). The signal still reaches the main process's other threads.
  """
  previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class BatchIterator:
  """Static-shape batches of one objective; ``get_state``/``set_state`` resume exactly.

  ``skipped``: videos the objective could not use, by reason (never silent).
  ``stats``: counts the host transforms report (e.g. truncated tokens).
  ``padding``: ``layout.padding_share`` of the last batch.
  """

  def __init__(self, dataset, objective: str, batch_videos: int, sizes=None):
    with _sigterm_blocked():
      self._it = iter(dataset)   # chunks of consecutive transformed records (_pack_chunk)
    self.objective = objective
    self.batch_videos = batch_videos
    self.sizes = sizes          # layout sizes: pack groups of several videos are packed here
    self._chunk: list = []
    self._pos = 0               # items of the current chunk already used
    self._chunk_state = None    # grain's state before the current chunk
    self.skipped = collections.Counter()
    self.skipped_ids: dict = {}
    self.stats = collections.Counter()
    self.batches = 0
    self.padding: dict = {}

  def __iter__(self):
    return self

  def close(self) -> None:
    """Stops the grain worker processes (joined, killed after grain's timeout);
    the iterator can give no more batches. ``get_state`` before closing resumes
    exactly in a new pipeline."""
    self._it.close()

  @_sigterm_blocked()
  def __next__(self) -> dict:
    examples, vids = [], []
    while len(examples) < self.batch_videos:
      item = self._next_item()  # StopIteration ends a finite pipeline; a partial batch is dropped
      if "skip" in item:
        self.skipped[item["skip"]] += 1
        ids = self.skipped_ids.setdefault(item["skip"], [])
        if len(ids) < 5:
          ids.append(item["vid"])
        continue
      self.stats.update(item["stats"])
      examples.append(item["example"])
      vids.append(item["vid"])
    batch = layout.stack_examples(examples)
    if self.sizes is not None:
      try:
        batch = packing.pack_stacked(batch, self.sizes, vids, self.stats)
      except packing.RowsDoNotFit as e:
        raise ValueError(f"objective {self.objective!r}: {e}") from None
    self.batches += 1
    self.padding = layout.padding_share(batch)
    return batch

  def _next_item(self) -> dict:
    if self._pos == len(self._chunk):
      self._chunk_state = self._it.get_state()
      self._chunk, self._pos = _unpack_chunk(next(self._it)), 0
    self._pos += 1
    return self._chunk[self._pos - 1]

  @_sigterm_blocked()
  def get_state(self) -> dict:
    # Inside a chunk: the state before it and the items used (a restore reads
    # the chunk again, deterministic, and skips them).
    inside = 0 < self._pos < len(self._chunk)
    return {"version": STATE_VERSION,
            "grain": self._chunk_state if inside else self._it.get_state(),
            "chunk_pos": self._pos if inside else 0,
            "skipped": dict(self.skipped), "stats": dict(self.stats), "batches": self.batches}

  @_sigterm_blocked()
  def set_state(self, state: dict) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(f"iterator state version {state.get('version')!r}, expected {STATE_VERSION}")
    self._it.set_state(state["grain"])
    self._chunk, self._pos = [], 0
    if state["chunk_pos"]:
      self._chunk_state = state["grain"]
      self._chunk, self._pos = _unpack_chunk(next(self._it)), state["chunk_pos"]
    self.skipped = collections.Counter(state["skipped"])
    self.stats = collections.Counter(state["stats"])
    self.batches = int(state["batches"])


def make_pipeline(videos, objective: str, ctx: host.HostContext,
                  options: PipelineOptions, *, process_index: Optional[int] = None,
                  process_count: Optional[int] = None, frame_index=None) -> BatchIterator:
  """Batches of ``objective`` over this process's shard of ``videos``: a
  ``VideoSource``, or a ``QueryJoin`` for objectives that read queries.
  ``frame_index`` (``frame_bank.FrameIndex``): batches carry ``frame_ids``
  into the device's frame bank instead of ``frames``."""
  import grain
  import hero_jax.objectives  # noqa: F401  (registers the built-in objectives)
  spec = registry.get(objective)
  make_example = spec.make_example
  if videos.kind != spec.records:
    raise ValueError(f"objective {objective!r} reads {spec.records} records, but {videos.path} "
                     f"split {videos.split!r} holds {videos.kind}")
  if process_index is None or process_count is None:
    import jax
    process_index, process_count = jax.process_index(), jax.process_count()
  source = videos.source if spec.records == "videos" else videos
  ds = grain.MapDataset.source(source).map_with_index(_tag)
  ds = ds[process_index::process_count]
  shard_len = len(ds)
  if shard_len < options.batch_videos:
    raise ValueError(f"{videos.path} split {videos.split!r}: process {process_index} has "
                     f"{shard_len} videos, fewer than batch_videos={options.batch_videos}")
  if options.shuffle:
    ds = ds.shuffle(seed=options.seed)
  ds = ds.repeat(options.num_epochs)
  ds = ds.map_with_index(RecordTransform(objective, make_example, ctx, options.seed, shard_len,
                                    videos.max_clip_len, spec.records, frame_index))
  # Chunks of consecutive records cross to the main process together (one
  # transfer per chunk, not per video); workers take whole chunks in turn, so
  # the stream, and every batch, is the same whatever the worker count.
  ds = ds.batch(options.chunk_videos, batch_fn=_pack_chunk)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=options.read_threads,
                                                prefetch_buffer_size=options.read_buffer))
  if options.worker_count > 0:
    # Launching the resource tracker unblocks SIGTERM in the launching thread
    # (multiprocessing.resource_tracker.ensure_running): launch it here, not in
    # a grain thread inside _sigterm_blocked.
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=options.worker_count, per_worker_buffer_size=options.worker_buffer_size),
        worker_init_fn=worker_init)
  return BatchIterator(it_ds, objective, options.batch_videos, ctx.sizes)


def host_context(videos, sizes: layout.LayoutSizes, **kwargs) -> host.HostContext:
  """The host transforms' context with the videos' special ids and frame length."""
  kwargs.setdefault("frame_length", videos.frame_length)
  return host.HostContext(sizes=sizes, ids=videos.special_ids, **kwargs)


def make_global_batch(batch: dict, sharding) -> dict:
  """Process-local numpy batch -> global ``jax.Array``s sharded on the V axis."""
  import jax
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
