"""hero_jax entry point.

  python -m hero_jax.main --config configs/pretrain_tiny.py --workdir /tmp/hero
  python -m hero_jax.main --config configs/pretrain_tv.py --workdir /mnt/shared/run \\
      --config.train.num_steps=200000 --distributed

``--config.a.b=value`` overrides any config field; the config is locked, so
a misspelt field is an error. ``--config.mode=eval`` evaluates the newest
checkpoint of the workdir (or the ``--config.init_from`` weights) on every
objective, and downstream objectives on the whole ``eval.splits``, writing
their prediction files.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the config copy go here.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  if FLAGS.distributed:
    jax.distributed.initialize()
  from hero_jax.train import loop
  config, workdir = FLAGS.config, FLAGS.workdir
  if config is None or workdir is None:
    raise app.UsageError("--config and --workdir are required")
  if "://" in workdir:
    raise app.UsageError(f"--workdir {workdir}: remote paths are not supported yet (the metric "
                         "writers write local files); use a folder every host sees, e.g. a "
                         "gcsfuse or NFS mount")
  # Our progress lines at INFO; the libraries' (orbax, tfds) chatter only from WARNING.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("hero_jax").setLevel(logging.INFO)
  logging.getLogger("hero_jax").info("process %d of %d; %d local / %d global devices: %s", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].device_kind)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
  if config.mode == "train":
    loop.train_and_evaluate(config, workdir)
  elif config.mode == "eval":
    loop.evaluate_only(config, workdir)
  else:
    raise app.UsageError(f"config.mode must be 'train' or 'eval', got {config.mode!r}")


if __name__ == "__main__":
  app.run(main)
