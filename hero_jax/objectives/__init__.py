"""Objectives: importing this package registers the built-in ones."""

from hero_jax.objectives import (  # noqa: F401  (registration)
    fom, fom_device, mfm, mfm_device, mlm, mlm_device, vcmr, videoqa, vsm, vsm_device)
from hero_jax.objectives.registry import Objective, SkipExample, get, names, register  # noqa: F401
