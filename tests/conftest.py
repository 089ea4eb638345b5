"""Test setup: 8 virtual CPU devices (sharding tests) and parsed absl flags."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _fast_compiles():
  # Tiny models: XLA's optimisation passes cost more than they save here.
  import jax
  jax.config.update("jax_disable_most_optimizations", True)


_fast_compiles()
