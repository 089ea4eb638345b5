"""hero_jax entry point.

  python -m hero_jax.main --config configs/pretrain_tiny.py --workdir /tmp/hero
  python -m hero_jax.main --config configs/pretrain_tv.py --workdir gs://bucket/runs/hero_tv \\
      --config.train.num_steps=200000 --distributed

``--config.a.b=value`` overrides any config field (every field is declared
in ``configs/common.py``); the config is locked, so a misspelt field is an
error naming the closest fields. ``--config.mode=eval`` evaluates the newest
checkpoint of the workdir (or the ``--config.init_from`` weights) on every
objective, and downstream objectives on the whole ``eval.splits``, writing
their prediction files. The workdir may be a local folder or a ``gs://``
path (install the ``gcs`` extra).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the config copy go here "
                    "(a local folder or gs://...).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
# Where JAX cannot find them itself (TPU pods, SLURM and MPI jobs it can): a
# GPU cluster started another way, or several processes on one machine.
flags.DEFINE_string("coordinator_address", None, "With --distributed: process 0's host:port.")
flags.DEFINE_integer("num_processes", None, "With --distributed: how many processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index.")
FLAGS = flags.FLAGS


def _config_path(argv) -> str | None:
  for i, arg in enumerate(argv):
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return None


def _override_error(argv) -> str | None:
  """The first ``--config.<field>`` override naming no field, explained."""
  from hero_jax.train import tasks
  path = _config_path(argv)
  if path is None:
    return None
  path, _, arg = path.partition(":")   # file.py:arg, as config_flags reads it
  spec = importlib.util.spec_from_file_location("_hero_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for arg in argv:
    if arg.startswith("--config."):
      error = tasks.unknown_field_error(config, arg[len("--config."):].split("=", 1)[0])
      if error:
        return error
  return None


def parse_flags(argv):
  """absl's parsing, with a bad ``--config.*`` override reported as a flag error
  (one line naming the field and the closest ones) instead of a traceback."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e) if isinstance(e, flags.Error) else (_override_error(argv) or str(e))
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
    sys.exit(1)


def main(argv):
  del argv
  import jax
  if FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif any(v is not None for v in (FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id)):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id need "
                         "--distributed")
  from hero_jax import paths
  from hero_jax.train import loop, tasks
  config, workdir = FLAGS.config, FLAGS.workdir
  if config is None or workdir is None:
    raise app.UsageError("--config and --workdir are required")
  tasks.check_config(config)
  if config.compilation_cache_dir:
    from hero_jax import compilation_cache
    compilation_cache.enable(config.compilation_cache_dir)
  workdir = paths.workdir(workdir)
  # Our progress lines at INFO; the libraries' (orbax, tfds) chatter only from WARNING.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("hero_jax").setLevel(logging.INFO)
  logging.getLogger("hero_jax").info(
      "process %d of %d; %d local / %d global devices: %s", jax.process_index(),
      jax.process_count(), jax.local_device_count(), jax.device_count(),
      jax.devices()[0].device_kind)
  if jax.devices()[0].platform == "cpu" and "hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
    # Read by the loader at process start, so it can only be suggested here.
    logging.getLogger("hero_jax").info(
        "on CPU, GLIBC_TUNABLES=glibc.malloc.hugetlb=1 gives XLA's buffers huge pages: "
        "base-model steps ran 6-11%% faster with it (README, Speed)")
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
  if config.mode == "train":
    loop.train_and_evaluate(config, workdir)
  elif config.mode == "eval":
    loop.evaluate_only(config, workdir)
  else:
    raise app.UsageError(f"config.mode must be 'train' or 'eval', got {config.mode!r}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
