"""HERO: the hierarchical video+language encoder and its pre-training heads.

Module tree (names mirror the original's ``state_dict`` keys):

  Hero
    v_encoder            HierarchicalEncoder
      f_encoder          CrossModalTransformer: embeddings, img_embeddings,
                         encoder (cross_layers), pooler, lm_head (tied)
      frame_transform    LN(D) -> dropout -> Linear(D->H) -> ReLU
      c_encoder          TemporalTransformer: embeddings, encoder, pooler
      feat_regress       MFM head (MFFR and MFM-NCE)
      mask_embedding     (2, D) clip-level MFM mask vectors
      fom_output         FOM 100-way classifier
    video_query_linear   VSM local branch
    video_st_predictor, video_ed_predictor   Conv1d(1, 1, k=5) start/end
    q_feat_attn          QueryFeatEncoder: query tokens -> one vector

Inputs follow ``hero_jax.layout``. Methods are the building blocks the
objectives compose (``model.apply(params, ..., method=...)``).

``cfg.encoder`` swaps ``v_encoder`` for one of the paper's baselines (H-TRM,
F-TRM; ``hero_jax.model.baselines``), behind the same methods.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hero_jax.model import layers as L
from hero_jax.model.config import HeroConfig

_f32 = jnp.float32
TOKEN_TYPE_ROW = 1   # HERO looks up row 1 of the type table for text and frames
MAX_TEXT_POSITION = 511   # HERO clamps text positions at 511


class TextEmbeddings(nn.Module):
  """word + position (arange from 0) + type row 1 -> LN -> dropout."""
  cfg: HeroConfig

  def setup(self):
    cfg = self.cfg
    self.word_embeddings = L.embed(cfg, cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), "word_embeddings")
    self.position_embeddings = L.embed(cfg, cfg.max_position_embeddings, cfg.hidden_size, ("pos", "embed"),
                                       "position_embeddings")
    self.token_type_embeddings = L.embed(cfg, cfg.type_vocab_size, cfg.hidden_size, ("type", "embed"),
                                         "token_type_embeddings")
    self.LayerNorm = L.layer_norm(cfg, cfg.ln_eps, "embed")
    self.dropout = nn.Dropout(cfg.hidden_dropout)

  def type_embedding(self):
    return self.token_type_embeddings(jnp.asarray(TOKEN_TYPE_ROW))

  def __call__(self, ids, deterministic: bool, positions=None):
    """``positions``: [..., L] position ids (default: arange, clamped as HERO);
    F-TRM numbers the tokens of all subtitles of a video consecutively."""
    if positions is None:
      max_pos = min(MAX_TEXT_POSITION, self.cfg.max_position_embeddings - 1)
      pos = jnp.minimum(jnp.arange(ids.shape[-1]), max_pos)
    else:
      pos = positions
    x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.type_embedding()
    return self.dropout(self.LayerNorm(x), deterministic=deterministic)


class ImageEmbeddings(nn.Module):
  """Frame features of one subtitle row -> hidden (spec 1.5)."""
  cfg: HeroConfig

  @nn.compact
  def __call__(self, feats, type_emb, mfm_ids, deterministic: bool):
    cfg = self.cfg
    mask_embedding = L.embed(cfg, 2, cfg.frame_feat_dim, (None, "frame_feat"), "mask_embedding")
    if mfm_ids is None and self.is_initializing():
      mask_embedding(jnp.zeros((), jnp.int32))   # create the table (checkpoints hold it)
    if mfm_ids is not None:
      # Only on the MFM path, and the row the mask selects is always added:
      # row 0 is not zero in HERO (re-initialised after padding_idx zeroed it).
      feats = feats + mask_embedding(mfm_ids)
    x = L.layer_norm(cfg, cfg.ln_eps, "frame_feat", "img_LayerNorm")(feats)
    x = L.dense(cfg, cfg.hidden_size, ("frame_feat", "embed"), "img_linear")(x)
    n = feats.shape[-2]
    if n > cfg.max_frame_positions:
      raise ValueError(
          f"rows hold {n} frame slots but the frame position table has "
          f"max_frame_positions={cfg.max_frame_positions} rows")
    pos = L.embed(cfg, cfg.max_frame_positions, cfg.hidden_size, ("pos", "embed"), "position_embeddings")
    x = x + pos(jnp.arange(n)) + type_emb
    x = L.layer_norm(cfg, cfg.ln_eps, "embed")(x)
    return nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)


class LMHead(nn.Module):
  """dense -> GELU -> LN -> tied decoder (word embeddings) + bias."""
  cfg: HeroConfig

  @nn.compact
  def __call__(self, x, attend):
    cfg = self.cfg
    x = L.gelu(L.dense(cfg, cfg.hidden_size, ("embed", "embed_out"), "dense")(x))
    x = L.layer_norm(cfg, cfg.ln_eps, "embed")(x)
    bias = self.param("bias", L.zeros_init(("vocab",)), (cfg.vocab_size,), _f32)
    logits = L.add_bias(attend(x).astype(_f32), bias)   # its bias gradient as a matmul
    return logits[..., :cfg.mlm_columns]


class CrossModalTransformer(nn.Module):
  """``f_encoder``: one ``[frames ; text]`` row per subtitle, or text alone."""
  cfg: HeroConfig

  def setup(self):
    cfg = self.cfg
    self.embeddings = TextEmbeddings(cfg)
    self.img_embeddings = ImageEmbeddings(cfg)
    self.encoder = L.BertEncoder(cfg, cfg.f_encoder_layers, cfg.remat_cross)
    self.pooler = L.Pooler(cfg)
    self.lm_head = LMHead(cfg)

  def embed_rows(self, row_ids, row_txt_mask, row_feats, row_frame_mask, mfm_ids, deterministic):
    """Embeds rows [..., M frames] + [..., T tokens] into [..., M+T, H]."""
    txt = self.embeddings(row_ids, deterministic)
    img = self.img_embeddings(row_feats, self.embeddings.type_embedding(), mfm_ids, deterministic)
    x = jnp.concatenate([img, txt.astype(img.dtype)], axis=-2)
    mask = jnp.concatenate([row_frame_mask, row_txt_mask], axis=-1)
    self.sow("intermediates", "embedding", x)
    return x, mask

  def embed_image_rows(self, row_feats, deterministic):
    """Frame embeddings of rows [..., M, D] -> [..., M, H] (no MFM)."""
    return self.img_embeddings(row_feats, self.embeddings.type_embedding(), None, deterministic)

  def embed_text(self, ids, deterministic):
    x = self.embeddings(ids, deterministic)
    self.sow("intermediates", "embedding", x)
    return x

  def encode(self, x, mask, deterministic, segments=None, keep=None):
    return self.encoder(x, mask, deterministic, segments, keep)

  def mlm_logits(self, x):
    return self.lm_head(x, L.tied_decoder(self.cfg, self.embeddings.word_embeddings))

  def pool(self, x):
    return self.pooler(x)


class LinearLayer(nn.Module):
  """LN(in) -> dropout -> Linear (``net_1``) -> ReLU (frame_transform, query_input_proj)."""
  cfg: HeroConfig
  in_axis: str
  torch_default_init: bool = False

  @nn.compact
  def __call__(self, x, deterministic: bool):
    cfg = self.cfg
    x = L.layer_norm(cfg, cfg.ln_eps, self.in_axis)(x)
    x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
    fan_in = x.shape[-1] if self.torch_default_init else None
    # An embed -> embed kernel names its output axis embed_out (a mesh axis
    # may shard only one dimension of an array).
    out_axis = "embed_out" if self.in_axis == "embed" else "embed"
    x = L.dense(cfg, cfg.hidden_size, (self.in_axis, out_axis), "net_1", torch_default_init=fan_in)(x)
    return jax.nn.relu(x)


class PositionEmbeddings(nn.Module):
  """x + position table[arange(L)] -> LN -> dropout (temporal and query)."""
  cfg: HeroConfig
  std: float | None = None

  @nn.compact
  def __call__(self, x, deterministic: bool):
    cfg = self.cfg
    table = L.embed(cfg, cfg.max_position_embeddings, cfg.hidden_size, ("pos", "embed"),
                    "position_embeddings", std=self.std)
    length = x.shape[-2]
    if length > cfg.max_position_embeddings:
      raise ValueError(f"sequence of {length} positions exceeds max_position_embeddings="
                       f"{cfg.max_position_embeddings}")
    x = x + table(jnp.arange(length))
    x = L.layer_norm(cfg, cfg.ln_eps, "embed")(x)
    return nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)


class TemporalTransformer(nn.Module):
  """``c_encoder``: positions from arange, LN, then ``temporal_layers`` layers."""
  cfg: HeroConfig

  def setup(self):
    self.embeddings = PositionEmbeddings(self.cfg)
    self.encoder = L.BertEncoder(self.cfg, self.cfg.temporal_layers, self.cfg.remat_temporal)
    self.pooler = L.Pooler(self.cfg)

  def __call__(self, x, mask, deterministic):
    return self.encode(self.embed(x, deterministic), mask, deterministic)

  def embed(self, x, deterministic):
    x = self.embeddings(x, deterministic)
    self.sow("intermediates", "embedding", x)
    return x

  def encode(self, x, mask, deterministic):
    return self.encoder(x, mask, deterministic)

  def pool(self, x):
    return self.pooler(x)


class FeatRegress(nn.Module):
  """MFM head: Linear(H) -> GELU -> LN -> Linear(D) (``net_0``, ``net_2``, ``net_3``)."""
  cfg: HeroConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    x = L.gelu(L.dense(cfg, cfg.hidden_size, ("embed", "embed_out"), "net_0")(x))
    x = L.layer_norm(cfg, cfg.ln_eps, "embed", "net_2")(x)
    return L.dense(cfg, cfg.frame_feat_dim, ("embed", "frame_feat"), "net_3")(x).astype(_f32)


class MLPLayer(nn.Module):
  """linear_1 (H -> 2H) -> GELU -> LayerNorm -> linear_2 (-> out).

  ``torch_default_init``: PyTorch's default Linear init (heads built after
  the original's ``init_weights`` ran, e.g. the QA heads)."""
  cfg: HeroConfig
  out_features: int
  out_axis: str = "classes"
  torch_default_init: bool = False

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    h = cfg.hidden_size
    fan_in = lambda n: n if self.torch_default_init else None  # noqa: E731
    x = L.gelu(L.dense(cfg, 2 * h, ("embed", "mlp"), "linear_1", torch_default_init=fan_in(h))(x))
    x = L.layer_norm(cfg, cfg.ln_eps, "mlp")(x)
    return L.dense(cfg, self.out_features, ("mlp", self.out_axis), "linear_2",
                   torch_default_init=fan_in(2 * h))(x).astype(_f32)


def _gather_rows(x, idx):
  """x [V, F, ...], idx [V, R, M] -> [V, R, M, ...] (exact, no matmul)."""
  return jax.vmap(lambda xv, iv: xv[iv])(x, idx)


def take_slots(rows, slots):
  """rows [V, R, L, H], slots int [V, N] into each video's R * L -> [V, N, H]."""
  v, r, length, h = rows.shape
  return jnp.take_along_axis(rows.reshape(v, r * length, h), slots[..., None], axis=1)


def _scatter_rows(values, idx, mask, num_frames):
  """Adds row slot values [V, R, M, H] onto the timeline [V, F, H] (spec 1.7)."""
  values = jnp.where(mask[..., None].astype(bool), values, 0)

  def one(v, i):
    out = jnp.zeros((num_frames, v.shape[-1]), v.dtype)
    return out.at[i.reshape(-1)].add(v.reshape(-1, v.shape[-1]))
  return jax.vmap(one)(values, idx)


class HierarchicalEncoder(nn.Module):
  """``v_encoder``: cross-modal rows -> timeline -> temporal transformer."""
  cfg: HeroConfig

  def setup(self):
    cfg = self.cfg
    self.f_encoder = CrossModalTransformer(cfg)
    self.frame_transform = LinearLayer(cfg, "frame_feat")
    self.c_encoder = TemporalTransformer(cfg)
    self.feat_regress = FeatRegress(cfg)
    self.mask_embedding = L.embed(cfg, 2, cfg.frame_feat_dim, (None, "frame_feat"), "mask_embedding")
    self.fom_output = MLPLayer(cfg, cfg.fom_num_classes)

  def cross_modal(self, batch, frames, mfm_mask, deterministic, slots=None, grouped=False,
                  query_ids=None):
    """Runs every subtitle row through ``f_encoder``: [V, R, M+T, H].

    ``slots``: int [V, N] into each video's flattened row slots [R * (M+T)];
    then only those slots' outputs [V, N, H] are returned, and with
    ``cfg.prune_last_layer`` only they go through the last layer. With
    ``grouped`` (packed rows only) ``slots`` are int [G, N] into each pack
    group's flattened row slots (its videos' one after another) and the
    outputs [G, N, H].

    ``query_ids`` [V, Q, Lq] (VSM queries packed with the rows, batches with
    ``query_unpack_src``): the queries' text runs in the same packed rows,
    and the result is (rows' outputs, query token states [V, Q, Lq, H]; any
    value at padding), as ``Hero.encode_query`` encodes them alone."""
    row_frame_mask = batch["row_frame_mask"]
    row_feats = _gather_rows(frames, batch["row_frame_idx"])
    row_feats = jnp.where(row_frame_mask[..., None].astype(bool), row_feats, 0)
    mfm_ids = None
    if mfm_mask is not None:
      mfm_ids = _gather_rows(mfm_mask, batch["row_frame_idx"]) * row_frame_mask
    x, mask = self.f_encoder.embed_rows(batch["row_ids"], batch["row_txt_mask"], row_feats,
                                        row_frame_mask, mfm_ids, deterministic)
    pruned = slots is not None and self.cfg.prune_last_layer
    if grouped and "pack_src" not in batch:
      raise ValueError("slots of pack groups (grouped=True) need packed rows (pack_src)")
    queries = query_tokens = None
    if query_ids is not None:
      if "query_unpack_src" not in batch:
        raise ValueError("query_ids go through the rows' encoder pass only when the batch packs "
                         "them (query_unpack_src)")
      queries = self.f_encoder.embed_text(query_ids, deterministic)
    if "pack_src" in batch:
      out = self._encode_packed(x, batch, deterministic, slots if pruned else None, grouped,
                                queries)
      if queries is not None:
        out, query_tokens = out
    else:
      v, r = x.shape[:2]
      flat = x.reshape((v * r,) + x.shape[2:])
      flat = L.constrain(flat, ("batch", "length", "embed"))
      # Unpacked, a video's flattened encoder positions are its row slots.
      out = self.f_encoder.encode(flat, mask.reshape(v * r, -1), deterministic,
                                  keep=slots if pruned else None)
      if not pruned:
        out = out.reshape(x.shape)
    if not pruned:
      self.sow("intermediates", "cross_modal_output", out)
      if grouped:   # the groups' videos' rows one after another
        out = out.reshape((batch["pack_src"].shape[0], -1) + out.shape[2:])
      if slots is not None:
        out = take_slots(out, slots)
    return out if queries is None else (out, query_tokens)

  def _encode_packed(self, x, batch, deterministic, slots=None, grouped=False, queries=None):
    """Embedded rows [V, R, M+T, H] -> packed rows [G*P, W, H] (G pack groups of
    V / G videos) -> encoder -> back to [V, R, M+T, H] (``hero_jax.packing``;
    padding slots get any output), or with ``slots`` only those slots' outputs
    [V, N, H] (``cross_modal``). With embedded ``queries`` [V, Q, Lq, H],
    packed after the rows, also their token states: (rows, queries)."""
    groups, p, w = batch["pack_src"].shape
    v, h = x.shape[0], x.shape[-1]
    group_slots = x.reshape(groups, -1, h)   # a group's videos' row slots, one after another
    if queries is not None:                  # then its videos' query slots
      group_slots = jnp.concatenate(
          [group_slots, queries.reshape(groups, -1, h).astype(group_slots.dtype)], axis=1)
      query_src = batch["query_unpack_src"].reshape(groups, -1)
    packed = _gather_rows(group_slots, batch["pack_src"]).reshape(groups * p, w, h)
    packed = L.constrain(packed, ("batch", "length", "embed"))
    segments = batch["pack_seg"].reshape(groups * p, w)
    if slots is not None:
      owners = groups if grouped else v   # slots into each group's, or each video's, row slots
      keep = jnp.take_along_axis(batch["unpack_src"].reshape(owners, -1), slots, axis=1)
      keep = keep.reshape(groups, -1)
      n = keep.shape[1]
      if queries is not None:   # the queries' tokens are read too: kept after the slots
        keep = jnp.concatenate([keep, query_src], axis=1)
      out = self.f_encoder.encode(packed, None, deterministic, segments=segments, keep=keep)
      rows = out[:, :n] if grouped else out[:, :n].reshape(v, -1, h)
      return rows if queries is None else (rows, out[:, n:].reshape(queries.shape))
    out = self.f_encoder.encode(packed, None, deterministic, segments=segments)
    out = out.reshape(groups, p * w, h)
    rows = _gather_rows(out, batch["unpack_src"].reshape(groups, -1)).reshape(x.shape)
    return rows if queries is None else (rows, _gather_rows(out, query_src).reshape(queries.shape))

  def fuse(self, batch, *, mfm_mask=None, deterministic=True, query_ids=None):
    """The temporal input before positions: frame_transform(raw) + matched.

    With ``mfm_mask`` (MFM), masked frames are zeroed at both levels, the
    frame-level mask embedding goes into ``f_encoder`` and the clip-level one
    (``v_encoder.mask_embedding``, every position, padding included) into
    ``frame_transform``. With ``query_ids`` (packed VSM queries,
    ``cross_modal``): (fused, query token states).
    """
    frames = batch["frames"].astype(_f32)
    if mfm_mask is not None:
      frames = jnp.where(mfm_mask[..., None].astype(bool), 0.0, frames)
    v, r, m = batch["row_frame_idx"].shape
    # Only the frame slots' outputs are read: r * (M+T) + j, j < M.
    width = m + batch["row_ids"].shape[-1]
    frame_slots = (jnp.arange(r)[:, None] * width + jnp.arange(m)).reshape(1, r * m)
    slots = jnp.broadcast_to(frame_slots, (v, r * m))
    if query_ids is None:   # (the baselines' cross_modal has no queries)
      cross = self.cross_modal(batch, frames, mfm_mask, deterministic, slots=slots)
    else:
      cross, query_tokens = self.cross_modal(batch, frames, mfm_mask, deterministic, slots=slots,
                                             query_ids=query_ids)
    matched = _scatter_rows(cross.reshape(v, r, m, -1), batch["row_frame_idx"],
                            batch["row_frame_mask"], frames.shape[1])
    clip = frames
    if mfm_mask is None and self.is_initializing():
      self.mask_embedding(jnp.zeros((), jnp.int32))   # create the table (checkpoints hold it)
    if mfm_mask is not None:
      clip = clip + self.mask_embedding(mfm_mask).astype(_f32)
    transformed = self.frame_transform(clip, deterministic)
    self.sow("intermediates", "frame_transform_output", transformed)
    self.sow("intermediates", "matched_frames", matched)
    fused = L.constrain(transformed + matched.astype(transformed.dtype), ("batch", "length", "embed"))
    return fused if query_ids is None else (fused, query_tokens)

  def temporal(self, fused, frame_mask, deterministic):
    return self.c_encoder(fused, frame_mask, deterministic)

  def video_qa(self, batch, deterministic=True):
    """``HeroForVideoQA``'s encoder pass: temporal outputs at the frames [Q, A, F, H].

    Each question's A answers make A copies of its video whose subtitle rows
    end with ``[SEP] q [SEP] a``; the temporal transformer reads the copy's
    frames followed by those QA tokens. What is the same in every copy is
    computed once per question: the rows' frame embeddings and
    ``frame_transform`` of the raw frames.
    """
    cross = self.qa_cross_modal(batch, deterministic)                     # [Q, A, R, M+T, H]
    frames = batch["frames"].astype(_f32)                                  # [Q, F, D]
    q, a, r = cross.shape[:3]
    row_frame_mask = batch["row_frame_mask"]                               # [Q, R, M]
    m = row_frame_mask.shape[-1]
    copies = lambda y: jnp.broadcast_to(y[:, None], (q, a) + y.shape[1:]).reshape((q * a,) + y.shape[1:])  # noqa: E731
    n_frames = frames.shape[1]
    matched = _scatter_rows(cross[..., :m, :].reshape((q * a, r, m, -1)),
                            copies(batch["row_frame_idx"]), copies(row_frame_mask), n_frames)
    transformed = self.frame_transform(frames, deterministic)               # [Q, F, H]
    if self.is_initializing():
      self.mask_embedding(jnp.zeros((), jnp.int32))   # create the table (checkpoints hold it)
    fused = copies(transformed) + matched.astype(transformed.dtype)
    self.sow("intermediates", "matched_frames", matched)
    frame_emb = self.c_encoder.embed(fused, deterministic)                 # [Q*A, F, H]
    qa = self.f_encoder.embeddings(batch["qa_ids"].reshape(q * a, -1), deterministic)  # [Q*A, Lqa, H]
    self.sow("intermediates", "qa_embeddings", qa)
    joint = jnp.concatenate([frame_emb, qa.astype(frame_emb.dtype)], axis=1)
    joint_mask = jnp.concatenate([copies(batch["frame_mask"]), batch["qa_mask"].reshape(q * a, -1)], 1)
    out = self.c_encoder.encode(L.constrain(joint, ("batch", "length", "embed")), joint_mask,
                                deterministic)
    self.sow("intermediates", "fused_video_qa", out)
    return out[:, :n_frames].reshape((q, a, n_frames, -1))

  def qa_cross_modal(self, batch, deterministic=True):
    """The cross-modal rows of every answer copy, [Q, A, R, M+T, H]; with
    ``cfg.prune_last_layer`` only their frame slots, [Q, A, R, M, H]."""
    f = self.f_encoder
    frames = batch["frames"].astype(_f32)                                  # [Q, F, D]
    ids, txt_mask = batch["qa_row_ids"], batch["qa_row_txt_mask"]          # [Q, A, R, T]
    q, a, r, _ = ids.shape
    row_frame_mask = batch["row_frame_mask"]                               # [Q, R, M]
    m = row_frame_mask.shape[-1]
    row_feats = _gather_rows(frames, batch["row_frame_idx"])
    row_feats = jnp.where(row_frame_mask[..., None].astype(bool), row_feats, 0)
    img = f.embed_image_rows(row_feats, deterministic)                      # [Q, R, M, H]
    txt = f.embed_text(ids, deterministic)                                  # [Q, A, R, T, H]
    img = jnp.broadcast_to(img[:, None], (q, a) + img.shape[1:]).astype(txt.dtype)
    x = jnp.concatenate([img, txt], axis=-2)
    mask = jnp.concatenate([jnp.broadcast_to(row_frame_mask[:, None], (q, a, r, m)), txt_mask], -1)
    flat = L.constrain(x.reshape((q * a * r,) + x.shape[3:]), ("batch", "length", "embed"))
    if self.cfg.prune_last_layer:
      # video_qa reads the frame slots only: each row's first M positions.
      keep = jnp.broadcast_to(jnp.arange(m), (q * a * r, m))
      out = f.encode(flat, mask.reshape(q * a * r, -1), deterministic, keep=keep)
      return out.reshape((q, a, r, m, -1))
    cross = f.encode(flat, mask.reshape(q * a * r, -1), deterministic).reshape(x.shape)
    self.sow("intermediates", "cross_modal_output", cross)
    return cross

  def __call__(self, batch, *, mfm_mask=None, fom_source=None, deterministic=True,
               query_ids=None):
    """The video representation (task ``'repr'``): [V, F, H]; with
    ``query_ids`` (packed VSM queries, ``cross_modal``) and the query token
    states: (video, queries)."""
    fused = self.fuse(batch, mfm_mask=mfm_mask, deterministic=deterministic, query_ids=query_ids)
    if query_ids is not None:
      fused, query_tokens = fused
    if fom_source is not None:
      # FOM: fused frames move to their shuffled slots before the temporal
      # transformer, so a moved frame gets its new slot's position embedding.
      fused = jnp.take_along_axis(fused, fom_source[..., None], axis=1)
    self.sow("intermediates", "temporal_input", fused)
    out = self.temporal(fused, batch["frame_mask"], deterministic)
    return out if query_ids is None else (out, query_tokens)


def video_encoder(cfg: HeroConfig) -> nn.Module:
  """The ``v_encoder`` that ``cfg.encoder`` names: HERO's hierarchical encoder
  or one of the paper's baselines (same interface, same parameter names where
  they share modules; see ``hero_jax.model.baselines``)."""
  if cfg.encoder == "hero":
    return HierarchicalEncoder(cfg)
  from hero_jax.model import baselines   # noqa: PLC0415 (baselines builds on this module)
  return baselines.ENCODERS[cfg.encoder](cfg)


class QueryFeatEncoder(nn.Module):
  """``q_feat_attn``: query token states [N, L, H] -> one vector [N, H]."""
  cfg: HeroConfig

  @nn.compact
  def __call__(self, x, mask, deterministic: bool):
    cfg = self.cfg
    x = LinearLayer(cfg, "embed", torch_default_init=True, name="query_input_proj")(x, deterministic)
    # PyTorch default nn.Embedding init: N(0, 1).
    x = PositionEmbeddings(cfg, std=1.0, name="query_pos_embed")(x, deterministic)
    x = L.BertAttention(cfg, torch_default_init=True, name="query_self_attention")(
        x, L.attention_bias(mask), deterministic)
    scores = L.dense(cfg, 1, ("embed", None), "modular_vector_mapping", use_bias=False,
                     torch_default_init=cfg.hidden_size)(x)[..., 0].astype(_f32)
    weights = jax.nn.softmax(L.mask_logits(scores, mask), axis=-1)
    return jnp.einsum("...l,...lh->...h", weights, x.astype(_f32))


class Hero(nn.Module):
  """HERO for pre-training (``HeroForPretraining``)."""
  cfg: HeroConfig

  def setup(self):
    cfg = self.cfg
    h = cfg.hidden_size
    self.v_encoder = video_encoder(cfg)
    if cfg.heads == "videoqa":
      # HeroForVideoQA's heads, PyTorch's default init (built after init_weights).
      self.qa_pool = L.dense(cfg, 1, ("embed", None), "qa_pool", use_bias=False, torch_default_init=h)
      self.qa_pred_head = MLPLayer(cfg, 1, torch_default_init=True)
      self.st_ed_pool = L.dense(cfg, 1, ("embed", None), "st_ed_pool", use_bias=False,
                                torch_default_init=h)
      self.st_ed_pred_head = MLPLayer(cfg, 2, torch_default_init=True)
      return
    self.video_query_linear = L.dense(cfg, h, ("embed", "embed_out"), "video_query_linear",
                                      torch_default_init=h)
    k = cfg.vsm_conv_kernel

    def conv(name):
      return nn.Conv(1, kernel_size=(k,), padding=((k // 2, k // 2),), use_bias=False,
                     dtype=_f32, param_dtype=_f32, kernel_init=L.torch_linear_init(k, (None, None, None)),
                     name=name)
    self.video_st_predictor = conv("video_st_predictor")
    self.video_ed_predictor = conv("video_ed_predictor")
    self.q_feat_attn = QueryFeatEncoder(cfg)

  # -- video -----------------------------------------------------------------
  def __call__(self, batch, *, mfm_mask=None, fom_source=None, deterministic=True):
    return self.v_encoder(batch, mfm_mask=mfm_mask, fom_source=fom_source,
                          deterministic=deterministic)

  def cross_modal_rows(self, batch, deterministic=True, slots=None, grouped=False):
    """MLM path: only the cross-modal transformer, [V, R, M+T, H] (or the
    ``slots`` [V, N] of each video's flattened rows: [V, N, H]; with
    ``grouped``, [G, N] of each pack group's: [G, N, H])."""
    frames = batch["frames"].astype(_f32)
    # Pack groups need packed rows, which the baseline encoders refuse.
    extra = {"grouped": True} if grouped else {}
    return self.v_encoder.cross_modal(batch, frames, None, deterministic, slots=slots, **extra)

  # -- heads -----------------------------------------------------------------
  def mlm_logits(self, x):
    return self.v_encoder.f_encoder.mlm_logits(x)

  def feat_regress(self, x):
    return self.v_encoder.feat_regress(x)

  def fom_logits(self, x):
    return self.v_encoder.fom_output(x)

  # -- queries and VSM -------------------------------------------------------
  def encode_query(self, query_ids, query_mask, deterministic=True):
    """[..., Lq] query ids -> modular query vector [..., H] (float32)."""
    f = self.v_encoder.f_encoder
    ids = query_ids.reshape(-1, query_ids.shape[-1])
    tokens = f.encode(f.embed_text(ids, deterministic), query_mask.reshape(ids.shape),
                      deterministic)
    return self._modular_queries(tokens, query_mask, deterministic)

  def video_and_queries(self, batch, deterministic=True):
    """(video [V, F, H], modular queries [V, Q, H]) of a batch whose VSM
    queries are packed with its rows (``query_unpack_src``): one pass of the
    cross-modal transformer for both, the same values as ``__call__`` and
    ``encode_query`` (``tests/test_packing.py``)."""
    seq, tokens = self.v_encoder(batch, deterministic=deterministic,
                                 query_ids=batch["query_ids"])
    tokens = tokens.reshape((-1,) + tokens.shape[-2:])
    return seq, self._modular_queries(tokens, batch["query_mask"], deterministic)

  def _modular_queries(self, tokens, query_mask, deterministic):
    """Query token states [N, Lq, H] -> ``q_feat_attn`` vectors [..., H]."""
    self.sow("intermediates", "query_tokens", tokens)
    q = self.q_feat_attn(tokens, query_mask.reshape(tokens.shape[:2]), deterministic)
    return q.reshape(query_mask.shape[:-1] + (q.shape[-1],))

  def st_ed_logits(self, query, frames, frame_mask, conv_input_mask):
    """Start/end logits of each query against frames (``mask_logits`` applied).

    query [..., H]; frames [..., F, H] and masks [..., F] broadcast against
    it (pass frames[None] for every-query-against-every-video). Similarity
    values where ``conv_input_mask`` is 0 are zeroed before the Conv1d, which
    is how the original's zero padding beyond the batch's longest video enters.
    """
    q = self.video_query_linear(query).astype(_f32)
    self.sow("intermediates", "video_query_linear_output", q)
    sim = jnp.einsum("...h,...fh->...f", q, frames.astype(_f32))
    sim = jnp.where(conv_input_mask.astype(bool), sim, 0.0)
    flat = sim.reshape(-1, sim.shape[-1], 1)
    st = self.video_st_predictor(flat)[..., 0].reshape(sim.shape)
    ed = self.video_ed_predictor(flat)[..., 0].reshape(sim.shape)
    return L.mask_logits(st, frame_mask), L.mask_logits(ed, frame_mask)

  # -- video QA (heads = "videoqa") ---------------------------------------------
  def videoqa_logits(self, batch, deterministic=True):
    """``HeroForVideoQA``: answer logits [Q, A], start / end logits [Q, F].

    ``qa_pool`` scores each frame of each answer copy, softmax over the
    frames, pools -> ``qa_pred_head``; ``st_ed_pool`` scores each frame,
    softmax over the answer copies, pools -> ``st_ed_pred_head`` -> start /
    end per frame (``mask_logits`` at padded frames).
    """
    video = self.v_encoder.video_qa(batch, deterministic).astype(_f32)   # [Q, A, F, H]
    fm = batch["frame_mask"]                                              # [Q, F]
    mask = fm[:, None, :, None]
    qa_scores = self.qa_pool(video).astype(_f32)                          # [Q, A, F, 1]
    st_ed_scores = self.st_ed_pool(video).astype(_f32)
    self.sow("intermediates", "qa_pool_scores", qa_scores)
    self.sow("intermediates", "st_ed_pool_scores", st_ed_scores)
    st_ed_w = jax.nn.softmax(L.mask_logits(st_ed_scores, mask), axis=1)   # over answers
    qa_w = jax.nn.softmax(L.mask_logits(qa_scores, mask), axis=2)         # over frames
    st_ed_video = jnp.einsum("qafm,qafd->qfd", st_ed_w, video)
    qa_video = jnp.einsum("qafm,qafd->qad", qa_w, video)
    st_ed = self.st_ed_pred_head(st_ed_video)                             # [Q, F, 2]
    self.sow("intermediates", "st_ed_raw", st_ed)
    logits = self.qa_pred_head(qa_video)[..., 0]
    return logits, L.mask_logits(st_ed[..., 0], fm), L.mask_logits(st_ed[..., 1], fm)

  # -- init ------------------------------------------------------------------
  def init_all(self, batch, query_ids, query_mask):
    """Touches every parameter (heads and poolers too) for ``init``."""
    cfg = self.cfg
    f = self.v_encoder.f_encoder
    cross = self.cross_modal_rows(batch)
    f.pool(cross[:, 0])
    self.mlm_logits(cross[..., :1, :])
    if self.cfg.heads == "videoqa":
      qa = {"qa_row_ids": batch["row_ids"][:, None], "qa_row_txt_mask": batch["row_txt_mask"][:, None],
            "qa_ids": query_ids[:, None], "qa_mask": query_mask[:, None], **batch}
      seq = self.v_encoder.video_qa(qa)[:, 0]
      self.videoqa_logits(qa)
    else:
      seq = self(batch)
    if cfg.encoder != "f_trm":   # F-TRM has no temporal transformer
      self.v_encoder.c_encoder.pool(seq)
    self.feat_regress(seq)
    self.fom_logits(seq)
    if self.cfg.heads == "pretraining":
      q = self.encode_query(query_ids, query_mask)
      self.st_ed_logits(q[:, 0], seq, batch["frame_mask"], batch["frame_mask"])
    return seq
