"""TFDS builders of hero_jax; importing the package registers all three.

  import tfds_builders  # noqa: F401  (registers hero_tv, hero_howto100m, hero_synthetic)
  import tensorflow_datasets as tfds
  builder = tfds.builder("hero_tv/tvr", data_dir="~/tensorflow_datasets")
  source = tfds.data_source("hero_synthetic/videos", split="train", data_dir="/tmp/hero_tfds")

Build through the Python API with ``python -m hero_jax.data.build`` (the
``tfds build`` command line needs TensorFlow); read with ``tfds.builder`` /
``tfds.data_source`` as above, ``tfds.builder_from_directory(...)`` or
``hero_jax.data.pipeline``.
"""

from tfds_builders import hero_howto100m, hero_synthetic, hero_tv  # noqa: F401  (registration)

BUILDERS = ("hero_tv", "hero_howto100m", "hero_synthetic")
