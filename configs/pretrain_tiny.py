"""The embedded default: a tiny HERO pre-trained on the synthetic set, a few CPU minutes.

  python -m hero_jax.main --config configs/pretrain_tiny.py --workdir /tmp/hero
  python -m hero_jax.main --config configs/pretrain_tiny.py --workdir /tmp/hero \\
      --config.train.num_steps=50

Builds ``hero_synthetic/videos`` into ``/tmp/hero_tfds`` on first use.
"""

from configs import common


def get_config():
  c = common.base_config(model="tiny")
  c.seed = 0
  c.model.update({"frame_feat_dim": 48, "vocab_size": 128, "mlm_vocab_size": 125,
                  "cross_layers": 2, "temporal_layers": 1,
                  "hidden_dropout": 0.0, "attention_dropout": 0.0})
  c.data.datasets = {"synthetic": common.dataset("hero_synthetic/videos", "/tmp/hero_tfds")}
  c.data.max_clip_len = 32
  c.data.worker_count = 0
  c.layout.update({"max_frames": 32, "max_rows": 24, "max_row_frames": 4, "max_row_tokens": 9,
                   "queries": 2, "max_query_tokens": 9, "max_predictions": 40})
  c.objectives.mfm_nce.group_videos = 0
  c.objectives.vsm.hard_negative_start_step = 500
  c.objectives.vsm.hard_pool_size = 4
  # The device-drawn forms (used in place of the host ones): the same settings.
  c.objectives.mlm_device.max_predictions = 40
  c.objectives.mfm_nce_device.group_videos = 0
  c.objectives.vsm_device.update({"hard_negative_start_step": 500, "hard_pool_size": 4,
                                  "queries_per_video": 2})
  c.train.update({"num_steps": 1000, "batch_videos": 16, "learning_rate": 2e-3,
                  "warmup_steps": 50})
  c.log_every = 20
  c.eval_every = 200
  c.eval_batches = 4
  c.checkpoint_every = 200
  return c
