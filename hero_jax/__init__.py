"""hero_jax: HERO (hierarchical video+language encoder) in JAX/Flax."""

__version__ = "0.1.0"
