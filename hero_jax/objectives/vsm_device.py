"""``vsm-device``: VSM with its query subtitles drawn in the step.

The host sends the video's rows with their text whole ([SEP] + ids cut to
``max_txt_len``) and every subtitle as a candidate query: its text ([CLS] +
ids, cut to Lq), start / end frames and whether it has a matched frame. The
step draws HERO's choice for the whole batch: min(Q, matched) distinct matched
subtitles, uniformly (the top of iid uniform keys), in subtitle order with the
last repeated up to Q; it gathers their queries and takes their text out of
the video's rows (the row keeps its [SEP]). With packed rows the taken-out
slots leave their packed segment (segment 0: no position attends to them),
which gives the outputs of the host path's shorter rows (the packing
equivalence). With ``host.pack_queries`` the drawn queries then run in the
packed rows too, in their subtitles' text slots and a free slot kept after
each matched row for their ``[CLS]`` (``queries_in_place``). The same distribution as ``vsm`` (the parity path), another
random stream; with no host draw its examples can live in the device example
bank.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hero_jax import layout, packing
from hero_jax.objectives import common, host, registry, vsm

FIELDS = layout.VIDEO_FIELDS + ("vsm_query_ids", "vsm_query_mask", "vsm_query_st_ed",
                                "vsm_matched")


def make_vsm_rows_example(video: layout.VideoExample, rng, ctx: host.HostContext,
                          stats=None) -> dict:
  """Whole rows and every subtitle's query (``rng`` unused: the device draws)."""
  del rng
  s = ctx.sizes
  matched = vsm.matched_subtitles(video)
  if matched.size == 0:
    raise registry.SkipExample(
        "vsm_no_matched_subtitle", f"video {video.vid!r} has no subtitle with a matched frame")
  rows = host.sep_row_texts(video, ctx, max_txt_len=ctx.max_txt_len)
  spare = s.packed and ctx.pack_queries   # the drawn queries go into the packed rows
  if spare and s.max_query_tokens > s.max_row_tokens:
    # A query's token j runs in its row's text slot j: a query longer than the row has none.
    raise ValueError(f"vsm-device runs its queries in their rows' text slots: "
                     f"layout.max_query_tokens ({s.max_query_tokens}) must not exceed "
                     f"layout.max_row_tokens ({s.max_row_tokens}), or set "
                     "host.pack_queries=False")
  out = host.build_video_fields(video, ctx, rows, stats, pack=not spare)
  ids = np.full((s.max_rows, s.max_query_tokens), ctx.ids.pad, np.int32)
  mask = np.zeros((s.max_rows, s.max_query_tokens), np.int32)
  st_ed = np.zeros((s.max_rows, 2), np.int32)
  is_matched = np.zeros((s.max_rows,), np.int32)
  for sub in range(len(video.sub_ids)):
    text = np.concatenate(
        [[ctx.ids.cls], np.asarray(video.sub_ids[sub], np.int64)[:ctx.max_txt_len]])
    text = text[:s.max_query_tokens]  # as vsm's queries (it counts the cut of drawn ones)
    ids[sub, :text.size] = text
    mask[sub, :text.size] = 1
  for sub in matched:
    st_ed[sub] = vsm.query_st_ed(video, int(sub))
    is_matched[sub] = 1
  out.update({"vsm_query_ids": ids, "vsm_query_mask": mask, "vsm_query_st_ed": st_ed,
              "vsm_matched": is_matched})
  if spare:   # a free slot after each matched row, for the [CLS] of a query drawn from it
    out["row_spare"] = is_matched
    if not s.packs_batches:
      try:
        out.update(packing.pack_fields(out["row_frame_mask"], out["row_txt_mask"], s,
                                       row_spare=is_matched))
      except packing.RowsDoNotFit as e:
        raise ValueError(f"video {video.vid!r}: {packing.does_not_fit(e, spared=True)}") from None
  return out


def draw_subtitles(matched, key, queries: int):
  """[V, Q] subtitle of each query row: min(Q, count) distinct matched ones,
  uniformly, in subtitle order, the last repeated up to Q."""
  v, r = matched.shape
  if r < queries:
    raise ValueError(f"vsm-device: {queries} queries per video need at least as many rows, "
                     f"layout.max_rows is {r}")
  rows = jnp.broadcast_to(jnp.arange(r), (v, r))
  keys = jnp.where(matched > 0, jax.random.uniform(key, (v, r)), -1.0)
  rank = jnp.argsort(jnp.argsort(-keys, axis=-1), axis=-1)      # 0: the largest key
  chosen = (matched > 0) & (rank < queries)
  in_order = jnp.argsort(jnp.where(chosen, rows, r + rows), axis=-1)[:, :queries]
  count = jnp.sum(chosen, axis=-1, keepdims=True)
  last = jnp.take_along_axis(in_order, jnp.maximum(count - 1, 0), axis=-1)
  return jnp.where(jnp.arange(queries)[None, :] < count, in_order, last)


def draw(batch: dict, key, queries: int, pad_id: int = layout.PAD_ID) -> dict:
  """The batch with ``query_ids`` / ``query_mask`` / ``query_st_ed`` of the
  drawn subtitles and their text taken out of the rows."""
  subs = draw_subtitles(batch["vsm_matched"], key, queries)
  pick = lambda field: jnp.take_along_axis(  # noqa: E731
      batch[field], subs.reshape(subs.shape + (1,) * (batch[field].ndim - 2)), axis=1)
  out = {k: v for k, v in batch.items() if not k.startswith("vsm_")}
  out.update({"query_ids": pick("vsm_query_ids"), "query_mask": pick("vsm_query_mask"),
              "query_st_ed": pick("vsm_query_st_ed")})
  v, r, t = batch["row_txt_mask"].shape
  is_query = jnp.zeros((v, r), bool).at[jnp.arange(v)[:, None], subs].set(True)
  taken = is_query[:, :, None] & (jnp.arange(t)[None, None, :] >= 1)   # [SEP] stays
  out["row_txt_mask"] = jnp.where(taken, 0, batch["row_txt_mask"])
  out["row_ids"] = jnp.where(taken, pad_id, batch["row_ids"])
  out.pop("row_spare", None)
  if "pack_seg" in batch:   # the taken slots leave their packed segment
    m = batch["row_frame_mask"].shape[-1]
    groups = batch["pack_src"].shape[0]   # pack groups: their videos' slots one after another
    slot_taken = jnp.concatenate([jnp.zeros((v, r, m), bool), taken], axis=-1)
    src = batch["pack_src"].reshape(groups, -1)
    gone = jnp.take_along_axis(slot_taken.reshape(groups, -1), src, axis=-1)
    gone = gone.reshape(batch["pack_seg"].shape)
    out["pack_seg"] = jnp.where(gone, 0, batch["pack_seg"])
    if "row_spare" in batch:
      out.update(queries_in_place(batch, out, subs))
  return out


def queries_in_place(batch: dict, out: dict, subs) -> dict:
  """``pack_src`` / ``pack_seg`` / ``query_unpack_src`` that run the drawn
  queries in the packed rows, where their subtitles' text already is: query
  token j >= 1 in the slot of its row's text token j, its ``[CLS]`` in the
  free slot after the row (``row_spare``), all in a segment of the query's
  own (the row keeps its frames and ``[SEP]``). A subtitle drawn twice (the
  last repeated up to Q) is run once: both queries read the same slots.
  ``pack_src`` reads query q of the group's i-th video, token t, at
  ``i_slots + (i * Q + q) * Lq + t`` as ``vsm``'s packed queries
  (``packing.pack_group``)."""
  v, r, t = batch["row_txt_mask"].shape
  m = batch["row_frame_mask"].shape[-1]
  groups, p, w = batch["pack_src"].shape
  per, q = v // groups, subs.shape[1]
  lq = out["query_ids"].shape[-1]
  row_slots = jnp.take_along_axis(batch["unpack_src"], subs[..., None], axis=1)  # [V, Q, M+T]
  text_n = jnp.take_along_axis(batch["row_txt_mask"].sum(-1), subs, axis=1)      # [V, Q]
  token = jnp.arange(lq)
  text_slots = jnp.take_along_axis(row_slots, jnp.minimum(m + token, m + t - 1)[None, None],
                                   axis=-1)
  spare = jnp.take_along_axis(row_slots, (m + text_n - 1)[..., None], axis=-1) + 1
  real = out["query_mask"] > 0
  q_src = jnp.where(real, jnp.where(token == 0, spare, text_slots), 0)           # [V, Q, Lq]
  # A query's first draw writes its slots; a repeat reads them.
  first = jnp.concatenate([jnp.ones((v, 1), bool), subs[:, 1:] != subs[:, :-1]], axis=1)
  local = (jnp.arange(v) % per)[:, None] * q + jnp.arange(q)[None, :]           # [V, Q]
  source = per * r * (m + t) + local[..., None] * lq + token
  segment = jnp.broadcast_to((per * r + local + 1)[..., None], q_src.shape)
  at = (jnp.arange(v) // per)[:, None, None] * (p * w) + q_src
  at = jnp.where(real & first[..., None], at, groups * p * w)   # out of range: dropped
  pack_src = jnp.asarray(batch["pack_src"]).reshape(-1).at[at.reshape(-1)].set(
      source.reshape(-1), mode="drop").reshape(groups, p, w)
  pack_seg = jnp.asarray(out["pack_seg"]).reshape(-1).at[at.reshape(-1)].set(
      segment.reshape(-1), mode="drop").reshape(groups, p, w)
  return {"pack_src": pack_src, "pack_seg": pack_seg, "query_unpack_src": q_src}


@dataclasses.dataclass(frozen=True)
class VsmDeviceSettings(vsm.VsmSettings):
  """``vsm``'s settings and ``queries_per_video`` (Q, HERO's 5)."""
  queries_per_video: int = 5

  def __post_init__(self):
    super().__post_init__()
    if self.queries_per_video <= 0:
      raise ValueError("objectives.vsm_device.queries_per_video must be positive, got "
                       f"{self.queries_per_video}")


def vsm_device_loss(model, params, batch, settings=VsmDeviceSettings(), *, step=0, rng=None,
                    deterministic=True):
  """``vsm.vsm_loss`` on the queries drawn here."""
  rng, key = common.device_draw_key(rng, step)
  return vsm.vsm_loss(model, params, draw(batch, key, settings.queries_per_video), settings,
                      step=step, rng=rng, deterministic=deterministic)


OBJECTIVE = registry.register(registry.Objective(
    name="vsm-device", fields=FIELDS, make_example=make_vsm_rows_example, loss=vsm_device_loss,
    settings=VsmDeviceSettings, heads="pretraining", host_draws=False))
