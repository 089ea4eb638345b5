"""The paper's ablation tables, one config file per row (``python -m hero_jax.ablation``)."""
