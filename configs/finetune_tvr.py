"""TVR fine-tuning as the original (train-tvr-8gpu.json): video corpus moment retrieval.

  python -m hero_jax.data.build --dataset hero_tv/videos --manual_dir ~/hero_data
  python -m hero_jax.data.build --dataset hero_tv/tvr --manual_dir ~/hero_data
  python -m hero_jax.main --config configs/finetune_tvr.py --workdir ~/runs/tvr \\
      --config.init_from=~/hero/hero-tv-ht100.pt
  # evaluate only, and write the prediction files (val and test_public):
  python -m hero_jax.main --config configs/finetune_tvr.py --workdir ~/runs/tvr_eval \\
      --config.mode=eval --config.init_from=~/runs/tvr \\
      --config.eval.splits='("val", "test_public")'

The original's 8 GPUs x 32 queries x 2 accumulation steps: 256 queries per
micro-step, 2 micro-steps per update. Its ranking negatives were gathered
over the 8 GPUs in each forward pass (256 queries, accumulation does not pool
them) and, since each GPU back-propagates only its own slice and Horovod
averages, the ranking terms' gradient was 1/8 of the gathered loss's while
the start/end loss is a plain mean: ``group_videos`` 256 and
``ranking_loss_scale`` 1/8 reproduce that on any mesh. lr 1e-4, 5000 steps,
500 warm-up, hard negatives from step 2000 (pool 20, weight 10),
``lw_neg_*`` 8, ``lw_st_ed`` 0.01, ``drop_svmr_prob`` 0.8; evaluation with
moments of 3-16 frames (``min_pred_l``/``max_pred_l`` 2/16), NMS 0.5, every
200 steps as the original's ``valid_steps``.
"""

from configs import common


def get_config():
  c = common.base_config()
  c.seed = 77
  c.model.dtype = "bfloat16"
  c.data.datasets = {"tvr": common.dataset("hero_tv/tvr", videos="hero_tv/videos")}
  c.data.max_clip_len = 100
  c.layout.update({"queries": 1, "max_query_tokens": 61})
  c.host.max_txt_len = 60
  common.use_objectives(c, vcmr=1.0)
  c.objectives.vcmr.update({
      "lw_st_ed": 0.01, "lw_neg_ctx": 8.0, "lw_neg_q": 8.0, "margin": 0.1,
      "ranking_loss": "hinge", "drop_svmr_prob": 0.8, "hard_negative_start_step": 2000,
      "hard_pool_size": 20, "hard_neg_weight": 10.0, "group_videos": 256,
      "ranking_loss_scale": 1.0 / 8})
  c.train.update({"num_steps": 5000, "batch_videos": 256, "accum_steps": 2,
                  "learning_rate": 1e-4, "warmup_steps": 500})
  c.eval.submission = "tvr"
  c.eval.splits = ["val"]
  c.eval.vcmr.update({"min_pred_l": 2, "max_pred_l": 16, "nms_thd": 0.5, "use_desc_type": True})
  c.eval_every = 200
  c.eval_batches = 10
  c.checkpoint_every = 200
  return c
