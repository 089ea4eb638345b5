"""MLM: masked language modelling on the Cross-modal Transformer rows (spec 2.1)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from hero_jax import layout
from hero_jax.objectives import common
from hero_jax.objectives import host
from hero_jax.objectives import registry

# --- host side (numpy) ---

FIELDS = layout.VIDEO_FIELDS + ("mlm_positions", "mlm_labels", "mlm_weights")


@dataclasses.dataclass(frozen=True)
class MlmChoices:
  """The random decisions of HERO's ``random_word`` for one video.

  Per subtitle r (its ids cut to ``max_txt_len``, no [CLS]):
  ``chosen[r]`` bool, the tokens to predict; ``inputs[r]`` int, the corrupted
  text (MASK, a random id, or the original id at chosen tokens; the original
  id elsewhere). The at-least-one rule is already applied.
  """
  chosen: tuple
  inputs: tuple


def _truncated_ids(video, ctx) -> list:
  return [np.asarray(ids, np.int64)[:ctx.max_txt_len] for ids in video.sub_ids]


def _flat(rows: list) -> tuple:
  """(concatenated rows, row lengths)."""
  lengths = np.fromiter((r.size for r in rows), np.int64, count=len(rows))
  flat = np.concatenate(rows) if rows else np.zeros((0,), np.int64)
  return flat, lengths


def _split(flat: np.ndarray, lengths: np.ndarray) -> tuple:
  """The rows of ``flat`` back (views; faster than ``np.split`` for short rows)."""
  ends = np.cumsum(lengths).tolist()
  return tuple(flat[end - n:end] for end, n in zip(ends, lengths.tolist()))


def draw_mlm_choices(video: layout.VideoExample, rng: np.random.Generator,
                     ctx: host.HostContext) -> MlmChoices:
  """BERT-style corruption, token by token, as HERO's ``random_word``.

  One uniform u per token: chosen if u < mask_prob; then u / mask_prob < 0.8
  gives MASK, < 0.9 a uniform id from ``range(*v_range)``, else unchanged. A
  row with tokens but no chosen one gets its first token forced to MASK. An
  empty subtitle has nothing to choose (the original would crash on it).
  Drawn for the whole video at once (the uniforms of all its tokens, then the
  random ids): the same distribution as the original's row-by-row draw.
  """
  lo, hi = ctx.ids.v_range
  ids, lengths = _flat(_truncated_ids(video, ctx))
  u = rng.random(ids.size)
  pick = u < ctx.mask_prob
  scaled = u / ctx.mask_prob if ctx.mask_prob > 0 else np.ones_like(u)
  to_mask = pick & (scaled < 0.8)
  to_rand = pick & (scaled >= 0.8) & (scaled < 0.9)
  corrupted = ids.copy()
  corrupted[to_mask] = ctx.ids.mask
  corrupted[to_rand] = rng.integers(lo, hi, size=int(to_rand.sum()))
  starts = np.cumsum(lengths) - lengths
  rows = np.repeat(np.arange(lengths.size), lengths)
  forced = starts[(lengths > 0) & (np.bincount(rows, pick, minlength=lengths.size) == 0)]
  pick[forced] = True
  corrupted[forced] = ctx.ids.mask
  return MlmChoices(chosen=_split(pick, lengths), inputs=_split(corrupted, lengths))


def _check_choices(video, choices: MlmChoices, lengths: np.ndarray) -> None:
  if len(choices.chosen) != lengths.size or len(choices.inputs) != lengths.size:
    raise ValueError(
        f"video {video.vid!r}: MLM choices for {len(choices.chosen)}/{len(choices.inputs)} "
        f"rows, the video has {lengths.size} subtitles")
  for name in ("chosen", "inputs"):
    shapes = [np.shape(x) for x in getattr(choices, name)]
    bad = [r for r, (shape, n) in enumerate(zip(shapes, lengths)) if shape != (n,)]
    if bad:
      r = bad[0]
      raise ValueError(
          f"video {video.vid!r}: MLM choices of subtitle {r} have shapes "
          f"{np.shape(choices.chosen[r])}/{np.shape(choices.inputs[r])}, expected ({lengths[r]},)")


def build_mlm_example(video: layout.VideoExample, choices: MlmChoices,
                      ctx: host.HostContext, stats=None) -> dict:
  """Rows [CLS] + corrupted ids and the prediction slots, in row-major order.

  ``mlm_positions`` index the flattened row text slots (r * T + t, t = 0 is
  [CLS]). Padded prediction slots hold position 0, label 0 and weight 0 (the
  label stays a valid vocabulary index so gathers need no special case).
  A prediction falling beyond T (only when T - 1 < max_txt_len) is dropped
  and counted under ``"mlm_predictions_truncated"``. More than K predictions
  is a random event of the draw, not a property of the data, so the video is
  skipped (``SkipExample("mlm_too_many_predictions")``) rather than failing
  the run; the pipeline reports the count, and a frequent skip means K is too
  small for the data.
  """
  s = ctx.sizes
  ids, lengths = _flat(_truncated_ids(video, ctx))
  _check_choices(video, choices, lengths)
  if not ids.size:
    raise registry.SkipExample(
        "mlm_no_tokens", f"video {video.vid!r} has no subtitle token")
  host.count(stats, "mlm_empty_rows", int((lengths == 0).sum()))
  chosen = np.concatenate(choices.chosen).astype(bool)
  inputs = np.concatenate(choices.inputs).astype(np.int64)
  starts = np.cumsum(lengths) - lengths
  # Token j of the video sits at slot t = 1 + its place in its row (t = 0: [CLS]).
  t = np.arange(ids.size) - np.repeat(starts, lengths) + 1
  keep = chosen & (t < s.max_row_tokens)
  host.count(stats, "mlm_predictions_truncated", int((chosen & ~keep).sum()))
  positions = np.repeat(np.arange(lengths.size), lengths)[keep] * s.max_row_tokens + t[keep]
  labels = ids[keep]
  k = positions.size
  if k > s.max_predictions:
    raise registry.SkipExample(
        "mlm_too_many_predictions",
        f"video {video.vid!r}: {k} MLM predictions > max_predictions={s.max_predictions}")
  rows = _split(np.insert(inputs, starts, ctx.ids.cls), lengths + 1)
  out = host.build_video_fields(video, ctx, list(rows), stats)
  out["mlm_positions"] = np.zeros((s.max_predictions,), np.int32)
  out["mlm_labels"] = np.zeros((s.max_predictions,), np.int32)
  out["mlm_weights"] = np.zeros((s.max_predictions,), np.float32)
  out["mlm_positions"][:k] = positions
  out["mlm_labels"][:k] = labels
  out["mlm_weights"][:k] = 1.0
  return out


def make_mlm_example(video: layout.VideoExample, rng: np.random.Generator,
                     ctx: host.HostContext, stats=None) -> dict:
  return build_mlm_example(video, draw_mlm_choices(video, rng, ctx), ctx, stats)


# --- device side (jax) ---




@dataclasses.dataclass(frozen=True)
class MlmSettings:
  """``group_predictions``: with pack groups (``layout.pack_videos`` > 1), the
  prediction slots the head computes per group (0: every video's K).

  Each video has K prediction slots, as many as the batch's most crowded
  video needs; the vocabulary head (logits over every word, about a fifth of
  an MLM step on the base model) then runs on each video's padding too. With
  a budget B, each group's real predictions are gathered first (in order)
  into B slots, so the head and the pruned last layer compute B per group
  instead of g * K. Predictions past B are not computed: they are counted in
  the ``group_overflow`` metric (per video), never dropped silently; raise B
  when it is not 0. The other host options live in ``HostContext``."""
  group_predictions: int = 0

  def __post_init__(self):
    if self.group_predictions < 0:
      raise ValueError("objectives.mlm(_device).group_predictions must be >= 0 (0: off), got "
                       f"{self.group_predictions}")


def prediction_slots(batch):
  """Each video's prediction slots [V, K] in its flattened row slots."""
  m, t = batch["row_frame_idx"].shape[-1], batch["row_ids"].shape[-1]
  # mlm_positions index the text slots (r * T + t); the rows are [frames ; text].
  positions = batch["mlm_positions"]
  return positions // t * (m + t) + m + positions % t


def mlm_logits(model, batch, deterministic=True):
  """Logits [V, K, mlm_columns] at the prediction slots (a model method)."""
  return model.mlm_logits(model.cross_modal_rows(batch, deterministic,
                                                 slots=prediction_slots(batch)))


def group_targets(batch, budget: int) -> dict:
  """Each pack group's real predictions first, in their order, in ``budget``
  slots: ``slots`` [G, B] into the group's flattened row slots, ``labels`` /
  ``weights`` [G, B], and ``overflow`` [V]: the real predictions of each
  video's group past B, counted once per group (on its first video)."""
  slots, weights = prediction_slots(batch), batch["mlm_weights"]
  v, k = slots.shape
  groups = batch["pack_src"].shape[0]
  per_video = batch["row_ids"].shape[1] * (batch["row_ids"].shape[2]
                                           + batch["row_frame_idx"].shape[2])
  # The group's flattened row slots hold its videos' one after another.
  slots = (slots + (jnp.arange(v) % (v // groups))[:, None] * per_video).reshape(groups, -1)
  weights = weights.reshape(groups, -1)
  order = jnp.argsort(weights <= 0, axis=-1, stable=True)[:, :budget]   # real ones first
  take = lambda x: jnp.take_along_axis(x, order, axis=-1)  # noqa: E731
  kept = take(weights)
  past = jnp.sum(weights > 0, axis=-1) - jnp.sum(kept > 0, axis=-1)
  overflow = jnp.zeros((groups, v // groups), past.dtype).at[:, 0].set(past).reshape(v)
  return {"slots": take(slots), "labels": take(batch["mlm_labels"].reshape(groups, -1)),
          "weights": kept, "overflow": overflow}


def mlm_group_logits(model, batch, slots, deterministic=True):
  """Logits [G, B, mlm_columns] at pack-group prediction slots (a model method)."""
  return model.mlm_logits(model.cross_modal_rows(batch, deterministic, slots=slots, grouped=True))


def grouped(batch, settings) -> bool:
  """The batch's predictions go through ``group_targets``."""
  return (settings is not None and settings.group_predictions > 0 and "pack_src" in batch
          and batch["pack_src"].shape[0] < batch["mlm_positions"].shape[0])


def mlm_loss(model, params, batch, settings=None, *, step=0, rng=None, deterministic=True):
  """Cross-entropy per masked token, mean over the batch's masked tokens."""
  del step
  if grouped(batch, settings):
    targets = group_targets(batch, settings.group_predictions)
    logits = common.apply(model, params, mlm_group_logits, batch, targets["slots"], rng=rng,
                          deterministic=deterministic)
    labels, weights = targets["labels"], targets["weights"]
  else:
    logits = common.apply(model, params, mlm_logits, batch, rng=rng, deterministic=deterministic)
    labels, weights = batch["mlm_labels"], batch["mlm_weights"]
  ce = common.cross_entropy(logits, labels)
  metrics = {"loss": common.metric(ce, weights),
             "acc": common.metric(common.accuracy(logits, labels), weights)}
  if grouped(batch, settings):
    overflow = targets["overflow"]
    metrics["group_overflow"] = (overflow.sum().astype(weights.dtype),
                                 jnp.asarray(overflow.shape[0], weights.dtype))
  return common.masked_mean(ce, weights), metrics


OBJECTIVE = registry.register(registry.Objective(
    name="mlm", fields=FIELDS, make_example=make_mlm_example, loss=mlm_loss,
    settings=MlmSettings))
