"""A device-resident frame bank: a split's frame features stored once on the devices.

With the bank (``config.data.frame_bank``), a batch carries ``frame_ids``
int32 [V, F] (rows of the bank) instead of ``frames`` float [V, F, D]; the
jitted step gathers the frames on the device (``gather_frames``). Per step
only token ids, masks and indices cross from the host, so a pod's input rate
no longer depends on moving 4 KB-8 KB of features per frame, and the host
transforms never decompress a frame (their source skips the ``frames``
feature: ``decode_frames=False``).

Layout: one array [1 + N, D] in ``float16`` (the stored precision, so the
gathered frames equal the host path's bit for bit) or ``bfloat16``; row 0 is
zeros, the frame of every padded slot; video ``vid`` holds rows
``offset .. offset + n - 1``, n its frames after the ``max_clip_len`` cut.
``replicated`` puts the whole bank on every device; ``sharded`` splits its
rows over all mesh devices (the gather then reads from the device holding
each row: XLA's partitioned gather, a masked local gather and an all-reduce).

Loading: the bank's layout (each video's offset) needs only the number of
frame rows each record stores, which the builders write into the dataset's
metadata (``frame_rows``, one list per split). Each host then reads and
holds only the rows its own devices keep (``host_blocks``): with
``sharded`` a host of a multi-host run holds 1/hosts of the bank (HowTo100M's
230 GB becomes 230/hosts), with ``replicated`` the whole bank. A dataset
built before the metadata had ``frame_rows`` is read in one pass that keeps
every frame (the whole bank in host memory: about 10 GB for the TV set in
float16); a multi-host ``sharded`` run first counts its rows in a pass that
keeps none, then reads its share.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Optional

import ml_dtypes
import numpy as np

# No jax import at module level: the grain workers import this module (the
# host transforms' ``frame_ids``) and never touch a device.

log = logging.getLogger("hero_jax")

MODES = ("off", "replicated", "sharded")
DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


@dataclasses.dataclass(frozen=True)
class FrameIndex:
  """Where each video's frames are in the bank: ``{vid: (offset, stored_rows)}``.

  ``stored_rows`` is the number of feature rows the record stores (before the
  ``max_clip_len`` cut): the host transforms see a placeholder of that many
  rows, so they cut exactly as with the real frames.
  """
  rows: dict

  def placeholder(self, vid: str) -> tuple:
    """(offset, frames placeholder [stored_rows, 0]) of video ``vid``."""
    if vid not in self.rows:
      raise KeyError(f"video {vid!r} is not in the frame bank (it holds {len(self.rows)} videos "
                     "of the splits it was loaded from)")
    offset, stored = self.rows[vid]
    return offset, np.zeros((stored, 0), np.float16)


def check_config(mode: str, dtype: str) -> None:
  if mode not in MODES:
    raise ValueError(f"config.data.frame_bank: {mode!r} is not one of {MODES}")
  if dtype not in DTYPES:
    raise ValueError(f"config.data.frame_bank_dtype: {dtype!r} is not one of {sorted(DTYPES)}")


def load_rows(sources: dict, max_clip_len) -> tuple:
  """(host bank [1 + N, D] float16, {key: FrameIndex}) of ``sources``: every
  record read once, every frame kept (the whole bank in host memory).

  ``sources``: {key: list of ``VideoSource`` with decoded frames}; a video
  in several sources of one key (the same video id) is stored once.
  """
  plan = BankPlan(sources, max_clip_len, stored_rows=None)
  return plan.host_bank(), plan.indexes


class BankPlan:
  """Where each video of ``sources`` goes in the bank: ``indexes`` ({key:
  FrameIndex}) and ``videos`` (``BankVideo`` in bank order), ``total`` rows
  (the zero row included) of ``dim`` features.

  ``stored_rows``: {id(source): stored frame rows per record} (``recorded_rows``)
  lays the bank out without reading a frame; None reads every record and keeps
  its frames (``frames``, one array per video in bank order).
  """

  def __init__(self, sources: dict, max_clip_len, stored_rows: Optional[dict]):
    self.indexes, self.videos, self.frames, self.total, self.dim = {}, [], [], 1, None
    for key, key_sources in sources.items():
      rows = {}
      for source in key_sources:
        if stored_rows is not None:
          self._set_dim(source, source.feature_dim)
        for i, vid in enumerate(source.video_ids):
          if stored_rows is None:
            frames = np.asarray(source[i]["frames"], np.float16)
            self._set_dim(source, frames.shape[1], vid)
            stored = frames.shape[0]
          else:
            stored = int(stored_rows[id(source)][i])
          if vid in rows:
            continue
          n = stored if max_clip_len is None else min(stored, max_clip_len)
          rows[vid] = (self.total, stored)
          self.videos.append(BankVideo(source, i, self.total, n, stored))
          if stored_rows is None:
            self.frames.append(frames[:n])
          self.total += n
      self.indexes[key] = FrameIndex(rows)
    if self.dim is None:
      raise ValueError(f"the frame bank's splits hold no video ({sorted(sources)})")

  def _set_dim(self, source, dim: int, vid: str = "") -> None:
    if self.dim is None:
      self.dim = dim
    elif dim != self.dim:
      raise ValueError(f"{source.path} split {source.split!r}: "
                       f"{f'video {vid!r} has ' if vid else ''}frame features of dim {dim}, "
                       f"the bank's are {self.dim}")

  def host_bank(self) -> np.ndarray:
    """[1 + N, D] float16: the zero row, then the frames read (``stored_rows=None``)."""
    return np.concatenate([np.zeros((1, self.dim), np.float16)] + self.frames)


@dataclasses.dataclass(frozen=True)
class BankVideo:
  """Record ``record`` of ``source``: bank rows ``offset .. offset + rows - 1``
  (its first ``rows`` frames of ``stored``)."""
  source: object
  record: int
  offset: int
  rows: int
  stored: int


def recorded_rows(sources: dict) -> Optional[dict]:
  """{id(source): stored frame rows per record} from the datasets' metadata
  (``frame_rows``), or None when a source was built without them."""
  out = {}
  for key_sources in sources.values():
    for source in key_sources:
      rows = (source.metadata.get("frame_rows") or {}).get(source.split)
      if rows is None:
        return None
      if len(rows) != len(source.video_ids):
        raise ValueError(f"{source.path} split {source.split!r}: metadata frame_rows lists "
                         f"{len(rows)} videos, video_ids {len(source.video_ids)}; rebuild the "
                         "dataset")
      out[id(source)] = rows
  return out


def counted_rows(sources: dict) -> dict:
  """``recorded_rows`` by decoding every record (and keeping no frame): for
  datasets built before the metadata had ``frame_rows``."""
  return {id(source): [len(source[i]["frames"]) for i in range(len(source))]
          for key_sources in sources.values() for source in key_sources}


def host_blocks(plan: BankPlan, blocks) -> dict:
  """{(start, stop): float16 [stop - start, D]}: the bank's rows of each
  block, reading only the records with rows in one of them."""
  out = {}
  for start, stop in sorted(set(blocks)):
    out[(start, stop)] = np.zeros((stop - start, plan.dim), np.float16)
  for video in plan.videos:
    end = video.offset + video.rows
    wanted = [(s, e) for s, e in out if video.offset < e and s < end]
    if not wanted:
      continue
    frames = np.asarray(video.source[video.record]["frames"], np.float16)
    vid = video.source.video_ids[video.record]
    if frames.shape != (video.stored, plan.dim):
      raise ValueError(f"{video.source.path} split {video.source.split!r}: video {vid!r} has "
                       f"frames {frames.shape}, the metadata's frame_rows and feature_dim say "
                       f"({video.stored}, {plan.dim}); rebuild the dataset")
    for s, e in wanted:
      lo, hi = max(s, video.offset), min(e, end)
      out[(s, e)][lo - s:hi - s] = frames[lo - video.offset:hi - video.offset]
  return out


def bank_sharding(mesh, mode: str):
  """Rows over every mesh axis (``sharded``) or whole on each device (``replicated``)."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  if mode == "sharded":
    return NamedSharding(mesh, P(tuple(mesh.axis_names)))
  return NamedSharding(mesh, P())


def place_rows(rows: np.ndarray, mesh, mode: str):
  """``rows`` [N, ...] as a global ``jax.Array`` placed by ``bank_sharding``
  (``sharded``: padded with zero rows to divide the devices)."""
  shape = (padded_rows(rows.shape[0], mesh, mode),) + rows.shape[1:]
  blocks = {(start, stop): zero_padded(rows[start:stop], stop - start)
            for start, stop in addressable_blocks(shape, bank_sharding(mesh, mode))}
  return place_blocks(blocks, shape, mesh, mode)


def zero_padded(part: np.ndarray, n: int) -> np.ndarray:
  """``part`` [m <= n, ...] with zero rows after it up to n."""
  if part.shape[0] == n:
    return part
  return np.concatenate([part, np.zeros((n - part.shape[0],) + part.shape[1:], part.dtype)])


def padded_rows(n: int, mesh, mode: str) -> int:
  """The placed bank's rows: ``sharded`` pads ``n`` to divide the devices."""
  return -(-n // mesh.size) * mesh.size if mode == "sharded" else n


def addressable_blocks(shape: tuple, sharding) -> list:
  """(start, stop) row blocks of ``shape`` that this process's devices hold."""
  return [index[0].indices(shape[0])[:2]
          for index in sharding.addressable_devices_indices_map(shape).values()]


def place_blocks(blocks: dict, shape: tuple, mesh, mode: str):
  """A global ``jax.Array`` of ``shape`` from this process's row blocks
  {(start, stop): array} (``addressable_blocks``)."""
  import jax
  return jax.make_array_from_callback(shape, bank_sharding(mesh, mode),
                                      lambda index: blocks[index[0].indices(shape[0])[:2]])


def place(host_bank: np.ndarray, mesh, mode: str, dtype: str):
  """The bank as a global ``jax.Array`` in ``dtype`` (``place_rows``)."""
  return place_rows(host_bank.astype(DTYPES[dtype]), mesh, mode)


def load(sources: dict, max_clip_len, mesh, mode: str, dtype: str) -> tuple:
  """(device bank, {key: FrameIndex}); logs its size, load time and the rows
  this host read and held.

  With every record's stored rows known (``recorded_rows``), or counted first
  (``counted_rows``) when this host holds only a share of a sharded bank,
  the host reads only its devices' rows (``host_blocks``); otherwise (a
  dataset built by an older release) it reads every frame in one pass.
  """
  import jax
  check_config(mode, dtype)
  start = time.time()
  stored = recorded_rows(sources)
  if stored is None and mode == "sharded" and jax.process_count() > 1:
    log.info("frame bank: the datasets' metadata has no frame_rows (built by an older "
             "release); counting every record's frames first (rebuild to skip this pass)")
    stored = counted_rows(sources)
  plan = BankPlan(sources, max_clip_len, stored)
  if stored is None:
    bank = place(plan.host_bank(), mesh, mode, dtype)
    held = plan.total
  else:
    shape = (padded_rows(plan.total, mesh, mode), plan.dim)
    blocks = host_blocks(plan, addressable_blocks(shape, bank_sharding(mesh, mode)))
    blocks = {k: v.astype(DTYPES[dtype], copy=False) for k, v in blocks.items()}
    bank = place_blocks(blocks, shape, mesh, mode)
    held = sum(stop - start for start, stop in blocks)
  videos = sum(len(index.rows) for index in plan.indexes.values())
  log.info("frame bank: %d videos, %d frames x %d (%s, %s), %.2f GB on the devices; this host "
           "read and held %d rows; loaded in %.1f s", videos, plan.total - 1, plan.dim, dtype,
           mode, bank.size * bank.dtype.itemsize / 1e9, held, time.time() - start)
  return bank, plan.indexes


def frame_ids(example: dict, offset: int) -> dict:
  """An example built on placeholder frames, with ``frame_ids`` instead of ``frames``."""
  out = {k: v for k, v in example.items() if k != "frames"}
  mask = example["frame_mask"]
  out["frame_ids"] = np.where(mask > 0, offset + np.arange(mask.shape[-1]), 0).astype(np.int32)
  return out


def device_frames(batch: dict, bank) -> dict:
  """Inside a jitted step: the batch with ``frames`` in float32, gathered
  from the bank for a batch with ``frame_ids``, else cast (host-fed batches
  ship float16 features)."""
  import jax.numpy as jnp
  out = {k: v for k, v in batch.items() if k != "frame_ids"}
  if "frame_ids" in batch:
    out["frames"] = jnp.take(bank, batch["frame_ids"], axis=0).astype(jnp.float32)
  elif "frames" in batch:
    out["frames"] = batch["frames"].astype(jnp.float32)
  return out
