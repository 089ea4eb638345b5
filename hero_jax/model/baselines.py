"""The paper's two baseline encoders, H-TRM and F-TRM (spec 5.7).

HERO's ablation compares its hierarchical encoder with two encoders that the
original code never released. Each is a ``v_encoder`` with the methods that
``Hero`` and the objectives call (``__call__`` -> frame states [V, F, H],
``cross_modal`` -> rows [V, R, M+T, H] for MLM, ``video_qa`` -> [Q, A, F, H])
and HERO's parameter names for every module it shares with HERO, so that every
objective, both downstream heads, the optimizer's parameter groups and
checkpoint loading work unchanged. ``HeroConfig.encoder`` selects them.

* **H-TRM** (``"h_trm"``) keeps the hierarchy but not the cross-modality of
  its first level: ``f_encoder`` (HERO's RoBERTa-style transformer, its
  ``cross_layers`` layers) reads each subtitle row's text alone; the row's
  output max-pooled over its real tokens is added to ``frame_transform`` of
  every frame aligned with the subtitle, exactly where HERO adds the
  cross-modal outputs at the frame slots; HERO's temporal transformer
  (``c_encoder``, ``temporal_layers`` layers) follows unchanged. The frame
  embedding of HERO's cross-modal rows (``f_encoder.img_embeddings``) has no
  use and does not exist.
* **F-TRM** (``"f_trm"``) drops the hierarchy: one BERT-like transformer
  (``f_encoder`` with ``cross_layers + temporal_layers`` layers, HERO's depth
  on the path from a frame to its output) reads each video as one sequence,
  ``[its F frames ; the tokens of all its subtitle rows]``. Frames go through
  HERO's frame embedding (``f_encoder.img_embeddings``; position = index on
  the timeline), tokens through HERO's text embedding, numbered consecutively
  over the video's real tokens (clamped at 511 as HERO clamps text
  positions). The outputs at the frames take the place of HERO's temporal
  outputs (MFM, FOM, VSM, VCMR, QA); the outputs at the tokens give MLM its
  predictions. There is no ``frame_transform``, ``c_encoder`` nor clip-level
  ``mask_embedding``; MFM's mask vector is the frame embedding's own.

Objectives on the baselines, where HERO's definition needs a reading:

* MLM: H-TRM predicts a masked token from its subtitle alone (the encoder
  that MLM trains never sees the video); F-TRM from the frames and every
  subtitle of the video.
* MFM: masked frames are zeroed; H-TRM adds HERO's clip-level mask vector
  before ``frame_transform``, F-TRM the frame embedding's mask vector.
* FOM: HERO shuffles the temporal transformer's input; F-TRM shuffles the
  raw frames, so a moved frame takes its new slot's frame position.
* Queries (VSM, VCMR) are encoded by ``f_encoder`` on the query text, as in
  HERO: the subtitle encoder (H-TRM) or the flat transformer (F-TRM).
* Video QA: H-TRM reads each answer copy's rows (``[SEP] sub [SEP] q [SEP]
  a``) as text, then the temporal transformer reads frames + QA tokens as
  HERO's; F-TRM reads ``[frames ; every subtitle ; [SEP] q [SEP] a]``, each
  once.

Packed cross-modal rows (``layout.packed_rows > 0``) pack HERO's
``[frames ; text]`` rows; the baselines refuse them.

Cost: F-TRM attends over F + R * T slots per video (+ Lqa in video QA), all
padding included, so its attention grows with the square of the whole
video's length where HERO's grows with each row's; the layout sizes bound it.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hero_jax.model import hero as H
from hero_jax.model import layers as L
from hero_jax.model.config import HeroConfig

_f32 = jnp.float32


def refuse_packed(batch, cfg: HeroConfig) -> None:
  if "pack_src" in batch:
    raise ValueError(
        f"model.encoder={cfg.encoder!r} does not take packed cross-modal rows: packing lays out "
        "HERO's [frames ; text] rows, which the baselines do not have; set layout.packed_rows=0 "
        "and layout.packed_width=0")


def max_pool(x, mask):
  """Max over the real positions of [..., T, H] (mask [..., T]) -> [..., H];
  zero for a row without any real position (a padded row: no frame sees it)."""
  real = mask.astype(bool)[..., None]
  pooled = jnp.max(jnp.where(real, x, jnp.finfo(x.dtype).min), axis=-2)
  return jnp.where(jnp.any(real, axis=-2), pooled, 0)


class HTrmEncoder(H.HierarchicalEncoder):
  """H-TRM's ``v_encoder``: HERO's with a text-only first level.

  Only the first level changes: the rows it returns hold, in their M frame
  slots, the row's max-pooled subtitle vector, so that HERO's ``fuse`` (and
  its video-QA pass) scatter it onto the row's aligned frames and add it to
  ``frame_transform`` of the raw frames; the text slots hold the token
  states MLM reads.
  """

  def subtitle_rows(self, ids, txt_mask, num_slots, deterministic):
    """Text rows [..., R, T] -> [..., R, num_slots + T, H] (see the class)."""
    f = self.f_encoder
    lead, t = ids.shape[:-1], ids.shape[-1]
    x = L.constrain(f.embed_text(ids.reshape(-1, t), deterministic), ("batch", "length", "embed"))
    text = f.encode(x, txt_mask.reshape(-1, t), deterministic)
    text = text.reshape(lead + text.shape[-2:])
    pooled = max_pool(text, txt_mask)
    slots = jnp.broadcast_to(pooled[..., None, :], lead + (num_slots, pooled.shape[-1]))
    out = jnp.concatenate([slots, text], axis=-2)
    self.sow("intermediates", "cross_modal_output", out)
    return out

  def cross_modal(self, batch, frames, mfm_mask, deterministic, slots=None):
    del frames, mfm_mask   # the subtitle encoder never sees the frames
    refuse_packed(batch, self.cfg)
    rows = self.subtitle_rows(batch["row_ids"], batch["row_txt_mask"],
                              batch["row_frame_idx"].shape[-1], deterministic)
    return rows if slots is None else H.take_slots(rows, slots)

  def qa_cross_modal(self, batch, deterministic=True):
    return self.subtitle_rows(batch["qa_row_ids"], batch["qa_row_txt_mask"],
                              batch["row_frame_mask"].shape[-1], deterministic)


def running_positions(mask, cfg: HeroConfig):
  """Text position ids [..., L]: the k-th real token of the sequence gets k
  (from 0; padding repeats its predecessor's), clamped as HERO clamps."""
  max_pos = min(H.MAX_TEXT_POSITION, cfg.max_position_embeddings - 1)
  return jnp.clip(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0, max_pos)


class FTrmEncoder(nn.Module):
  """F-TRM's ``v_encoder``: one flat transformer over frames + all subtitle tokens."""
  cfg: HeroConfig

  def setup(self):
    cfg = self.cfg
    # cfg.f_encoder_layers = cross_layers + temporal_layers for F-TRM.
    self.f_encoder = H.CrossModalTransformer(cfg)
    self.feat_regress = H.FeatRegress(cfg)
    self.fom_output = H.MLPLayer(cfg, cfg.fom_num_classes)

  def embed_frames(self, frames, mfm_mask, deterministic):
    """Frames [N, F, D] -> [N, F, H], HERO's frame embedding with timeline
    positions (plus the MFM mask vector when ``mfm_mask`` is given)."""
    f = self.f_encoder
    return f.img_embeddings(frames, f.embeddings.type_embedding(), mfm_mask, deterministic)

  def encode(self, img, frame_mask, text_ids, text_mask, deterministic):
    """Embedded frames [N, F, H] + text [N, L] -> states [N, F + L, H]."""
    f = self.f_encoder
    txt = f.embeddings(text_ids, deterministic, positions=running_positions(text_mask, self.cfg))
    x = jnp.concatenate([img, txt.astype(img.dtype)], axis=1)
    mask = jnp.concatenate([frame_mask, text_mask], axis=1)
    self.sow("intermediates", "embedding", x)
    out = f.encode(L.constrain(x, ("batch", "length", "embed")), mask, deterministic)
    self.sow("intermediates", "flat_output", out)
    return out

  def video(self, batch, frames, mfm_mask, deterministic):
    """States at the frames [V, F, H] and at the row text slots [V, R, T, H]."""
    refuse_packed(batch, self.cfg)
    v, r, t = batch["row_ids"].shape
    img = self.embed_frames(frames, mfm_mask, deterministic)
    out = self.encode(img, batch["frame_mask"], batch["row_ids"].reshape(v, r * t),
                      batch["row_txt_mask"].reshape(v, r * t), deterministic)
    n = frames.shape[1]
    return out[:, :n], out[:, n:].reshape(v, r, t, -1)

  def __call__(self, batch, *, mfm_mask=None, fom_source=None, deterministic=True):
    """The video representation [V, F, H] (HERO's temporal outputs' role)."""
    frames = batch["frames"].astype(_f32)
    if mfm_mask is not None:
      frames = jnp.where(mfm_mask[..., None].astype(bool), 0.0, frames)
    if fom_source is not None:
      # FOM: the raw frames move, so a moved frame gets its new slot's position.
      frames = jnp.take_along_axis(frames, fom_source[..., None], axis=1)
    seq, _ = self.video(batch, frames, mfm_mask, deterministic)
    return seq

  def cross_modal(self, batch, frames, mfm_mask, deterministic, slots=None):
    """HERO's row layout [V, R, M+T, H] (MLM reads the text slots): each row's
    frame slots hold its aligned frames' states, its text slots its tokens'
    (``slots``: those of HierarchicalEncoder.cross_modal)."""
    seq, text = self.video(batch, frames, mfm_mask, deterministic)
    rows = H._gather_rows(seq, batch["row_frame_idx"])
    rows = jnp.where(batch["row_frame_mask"][..., None].astype(bool), rows, 0)
    rows = jnp.concatenate([rows, text.astype(rows.dtype)], axis=-2)
    return rows if slots is None else H.take_slots(rows, slots)

  def video_qa(self, batch, deterministic=True):
    """States at the frames [Q, A, F, H] of each answer copy's sequence
    ``[frames ; every subtitle ; [SEP] q [SEP] a]``.

    The rows of ``qa_row_ids`` are ``[SEP] sub [SEP] q [SEP] a`` (layout):
    the suffix, as long as the copy's ``qa_mask``, is masked out of every
    row and ``qa_ids`` is read once at the end instead, so each subtitle and
    the question-answer pair appear once. The frame embeddings are the same
    in every copy and computed once per question.
    """
    frames = batch["frames"].astype(_f32)                                 # [Q, F, D]
    ids, txt_mask = batch["qa_row_ids"], batch["qa_row_txt_mask"]         # [Q, A, R, T]
    q, a, r, t = ids.shape
    qa_ids = batch["qa_ids"].reshape(q, a, -1)                            # [Q, A, Lqa]
    qa_mask = batch["qa_mask"].reshape(q, a, -1)
    sub_len = jnp.sum(txt_mask, -1) - jnp.sum(qa_mask, -1)[..., None]    # [Q, A, R]
    sub_mask = txt_mask * (jnp.arange(t) < sub_len[..., None])
    text_ids = jnp.concatenate([ids.reshape(q, a, r * t), qa_ids], -1).reshape(q * a, -1)
    text_mask = jnp.concatenate([sub_mask.reshape(q, a, r * t), qa_mask], -1).reshape(q * a, -1)

    def copies(y):
      return jnp.broadcast_to(y[:, None], (q, a) + y.shape[1:]).reshape((q * a,) + y.shape[1:])
    img = self.embed_frames(frames, None, deterministic)                  # [Q, F, H]
    out = self.encode(copies(img), copies(batch["frame_mask"]), text_ids,
                      text_mask.astype(jnp.int32), deterministic)
    n = frames.shape[1]
    return out[:, :n].reshape((q, a, n, -1))


ENCODERS = {"h_trm": HTrmEncoder, "f_trm": FTrmEncoder}
