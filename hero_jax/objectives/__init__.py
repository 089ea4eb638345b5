"""Objectives: importing this package registers the built-in ones."""

from hero_jax.objectives import fom, mfm, mlm, mlm_device, vcmr, videoqa, vsm  # noqa: F401  (registration)
from hero_jax.objectives.registry import Objective, SkipExample, get, names, register  # noqa: F401
