"""TVR-style fine-tuning of the tiny HERO on the synthetic set: CPU minutes.

  python -m hero_jax.main --config configs/finetune_tvr_tiny.py --workdir /tmp/hero_tvr
  # from the tiny pre-training run (configs/pretrain_tiny.py):
  python -m hero_jax.main --config configs/finetune_tvr_tiny.py --workdir /tmp/hero_tvr \\
      --config.init_from=/tmp/hero

Trains VCMR on ``hero_synthetic/tvr`` (two queries per video, built into
``/tmp/hero_tfds`` on first use) and evaluates VCMR / SVMR / VR on the
synthetic val split (64 videos, 128 queries), writing the prediction files
under ``<workdir>/results/``.
"""

from configs import common, pretrain_tiny


def get_config():
  c = pretrain_tiny.get_config()   # the same tiny model, so its checkpoints fit
  c.data.datasets = {"tvr": common.dataset("hero_synthetic/tvr", "/tmp/hero_tfds",
                                           videos="hero_synthetic/videos")}
  c.layout.update({"queries": 1, "max_query_tokens": 9})
  common.use_objectives(c, vcmr=1.0)
  c.objectives.vcmr.update({"lw_st_ed": 0.01, "lw_neg_ctx": 8.0, "lw_neg_q": 8.0,
                            "drop_svmr_prob": 0.8, "hard_negative_start_step": 300,
                            "hard_pool_size": 4, "hard_neg_weight": 10.0})
  c.train.update({"num_steps": 600, "batch_videos": 32, "learning_rate": 1e-3,
                  "warmup_steps": 50})
  c.eval.splits = ["val"]
  c.eval.vcmr.update({"min_pred_l": 1, "max_pred_l": 8, "nms_thd": 0.5, "video_batch": 16,
                      "video_block": 64, "query_batch": 32, "use_desc_type": False})
  c.eval_batches = 2
  return c
