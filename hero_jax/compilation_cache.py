"""JAX's persistent compilation cache, for runs that compile the same steps again.

A restarted run, or the next stage of an ablation table (the same model and
batch shapes with other weights), finds its compiled steps on disk instead of
compiling them again. Results are unchanged: only XLA's output is cached.
"""

from __future__ import annotations

from hero_jax import paths


def enable(directory: str) -> str:
  """Caches every compilation of this process in ``directory`` (local or a
  bucket); call before the first compilation. Returns the absolute path."""
  import jax
  where = str(paths.absolute(directory))
  jax.config.update("jax_compilation_cache_dir", where)
  # Small CPU steps compile in well under the default 1 s threshold; keep them too.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return where
