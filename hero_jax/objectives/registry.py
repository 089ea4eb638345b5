"""The objective registry: a new objective is one module plus a config entry.

An objective couples a host-side example transform (numpy, seeded) with a
device-side loss (jax). ``register`` it at import time of its module; the
training loop looks objectives up by the names in ``config.objectives``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

_REGISTRY: dict[str, "Objective"] = {}
RECORD_KINDS = ("videos", "moments", "qa")


class SkipExample(Exception):
  """Raised by a host transform for a video the objective cannot use.

  The pipeline counts these by ``reason`` and reports them; they are never
  dropped in silence.
  """

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Objective:
  """One pre-training (or fine-tuning) objective.

  name: registry key, as used in configs (e.g. ``"mfm-nce"``).
  fields: the batch fields its examples carry (see ``hero_jax.layout``).
  make_example: ``(video, rng, ctx, stats=None) -> dict`` host transform for
    one video; ``rng`` is a ``np.random.Generator`` seeded by the pipeline.
  loss: ``(model, params, batch, settings, *, step, rng, deterministic) ->
    (loss, metrics)`` on device; ``metrics`` is a dict of ``(sum, count)``
    pairs so they can be merged across steps and hosts. ``step`` is a traced
    int (schedules inside a loss never recompile).
  settings: a frozen dataclass of the objective's options with defaults; the
    config entry ``config.objectives.<name>`` overrides its fields.
  records: the records an example is made from: ``"videos"`` (pre-training:
    ``make_example`` gets a ``layout.VideoExample``), ``"moments"`` or
    ``"qa"`` (fine-tuning: one example per query, a ``layout.QueryExample``
    of the query and its video).
  heads: the ``HeroConfig.heads`` the loss needs (``"pretraining"`` for the
    VSM heads, ``"videoqa"``), or None when the encoder alone suffices.
  host_draws: whether ``make_example`` draws from its ``rng``. False: the
    example of a record is the same every epoch (the step draws the random
    choices), so the device example bank (``hero_jax.data.example_bank``)
    can hold it.
  """
  name: str
  fields: tuple
  make_example: Callable[..., dict]
  loss: Callable[..., Any]
  settings: type
  records: str = "videos"
  heads: str | None = None
  host_draws: bool = True

  def __post_init__(self):
    if self.records not in RECORD_KINDS:
      raise ValueError(f"objective {self.name!r}: records must be one of {RECORD_KINDS}, "
                       f"got {self.records!r}")

  def make_settings(self, overrides=None):
    """Settings from config overrides; unknown keys are an error."""
    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(self.settings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
      raise ValueError(f"objective {self.name!r}: unknown settings {unknown}; known: {sorted(known)}")
    return self.settings(**overrides)


def register(objective: Objective) -> Objective:
  if objective.name in _REGISTRY and _REGISTRY[objective.name] is not objective:
    raise ValueError(f"objective {objective.name!r} is already registered")
  _REGISTRY[objective.name] = objective
  return objective


def unregister(name: str) -> None:
  """Removes an objective (tests, interactive sessions)."""
  _REGISTRY.pop(name, None)


def get(name: str) -> Objective:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise KeyError(
        f"unknown objective {name!r}; registered: {sorted(_REGISTRY)}") from None


def names() -> list[str]:
  return sorted(_REGISTRY)
