"""The HERO model: config, Flax modules and parameter helpers."""

from hero_jax.model.config import HeroConfig, tiny_config  # noqa: F401
from hero_jax.model.hero import Hero  # noqa: F401
from hero_jax.model.params import abstract_params, count_params, init_params  # noqa: F401
