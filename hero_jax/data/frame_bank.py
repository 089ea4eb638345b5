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

Loading reads every video of the named splits once, on every host (each host
keeps the whole bank in host memory while placing its devices' share: about
10 GB for the TV set in float16). A corpus that does not fit host memory
stays on the host-fed path (``frame_bank = "off"``).
"""

from __future__ import annotations

import dataclasses
import logging
import time

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
  """(host bank [1 + N, D] float16, {key: FrameIndex}) of ``sources``.

  ``sources``: {key: list of ``VideoSource`` with decoded frames}; a video
  in several sources of one key (the same video id) is stored once.
  """
  chunks, indexes, total = [np.zeros((1, 0), np.float16)], {}, 1
  dim = None
  for key, key_sources in sources.items():
    rows = {}
    for source in key_sources:
      for i in range(len(source)):
        raw = source[i]
        vid = source.video_ids[i]
        frames = np.asarray(raw["frames"], np.float16)
        if dim is None:
          dim = frames.shape[1]
          chunks[0] = np.zeros((1, dim), np.float16)
        if frames.shape[1] != dim:
          raise ValueError(f"{source.path} split {source.split!r}: video {vid!r} has frame "
                           f"features of dim {frames.shape[1]}, the bank's are {dim}")
        if vid in rows:
          continue
        n = frames.shape[0] if max_clip_len is None else min(frames.shape[0], max_clip_len)
        rows[vid] = (total, frames.shape[0])
        chunks.append(frames[:n])
        total += n
    indexes[key] = FrameIndex(rows)
  return np.concatenate(chunks), indexes


def bank_sharding(mesh, mode: str):
  """Rows over every mesh axis (``sharded``) or whole on each device (``replicated``)."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  if mode == "sharded":
    return NamedSharding(mesh, P(tuple(mesh.axis_names)))
  return NamedSharding(mesh, P())


def place_rows(rows: np.ndarray, mesh, mode: str):
  """``rows`` [N, ...] as a global ``jax.Array`` placed by ``bank_sharding``
  (``sharded``: padded with zero rows to divide the devices)."""
  import jax
  sharding = bank_sharding(mesh, mode)
  n = rows.shape[0]
  if mode == "sharded":
    n = -(-n // mesh.size) * mesh.size

  def block(index):
    part = rows[index[0]]
    want = len(range(*index[0].indices(n)))
    if part.shape[0] < want:  # the zero rows padding the last shard
      part = np.concatenate([part, np.zeros((want - part.shape[0],) + rows.shape[1:], rows.dtype)])
    return part
  return jax.make_array_from_callback((n,) + rows.shape[1:], sharding, block)


def place(host_bank: np.ndarray, mesh, mode: str, dtype: str):
  """The bank as a global ``jax.Array`` in ``dtype`` (``place_rows``)."""
  return place_rows(host_bank.astype(DTYPES[dtype]), mesh, mode)


def load(sources: dict, max_clip_len, mesh, mode: str, dtype: str) -> tuple:
  """(device bank, {key: FrameIndex}); logs its size and load time."""
  check_config(mode, dtype)
  start = time.time()
  host_bank, indexes = load_rows(sources, max_clip_len)
  bank = place(host_bank, mesh, mode, dtype)
  videos = sum(len(index.rows) for index in indexes.values())
  log.info("frame bank: %d videos, %d frames x %d (%s, %s), %.2f GB, loaded in %.1f s", videos,
           host_bank.shape[0] - 1, host_bank.shape[1], dtype, mode,
           bank.size * bank.dtype.itemsize / 1e9, time.time() - start)
  return bank, indexes


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
