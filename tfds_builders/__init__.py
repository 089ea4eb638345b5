"""TFDS builders of hero_jax (importing a module registers its builder).

Build through the Python API with ``python -m hero_jax.data.build`` (the
``tfds build`` command line needs TensorFlow); read with
``tfds.builder_from_directory(...).as_data_source(split)`` or
``hero_jax.data.pipeline``.
"""
