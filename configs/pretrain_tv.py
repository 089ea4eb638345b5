"""HERO's TV pre-training recipe (the original's pretrain-tv-16gpu.json + hero_pretrain.json).

  python -m hero_jax.data.build --dataset hero_tv/videos --manual_dir ~/hero_data
  python -m hero_jax.main --config configs/pretrain_tv.py --workdir ~/runs/hero_tv \\
      --config.init_from=~/roberta-base/pytorch_model.bin
  # TPU pod: ./launch_tpu.sh (see the README), which adds --distributed

1024 videos per update (the original: 16 GPUs x 32 videos x 2 accumulation
steps), objectives mlm : mfm-nce : fom : vsm = 2 : 2 : 1 : 2, AdamW
(0.9, 0.98), lr 3e-5, 10k warmup steps, 100k steps, bfloat16 compute.

The layout is unpacked at the recipe's maximum sizes (every row padded to 16
frames + 61 tokens). For speed, pack the rows at sizes fitted to the built
set (README, "Packed rows"): ``python -m hero_jax.packing --data_dir D
--dataset hero_tv/videos --pack_videos 8`` prints the packed rows that groups
of 8 videos need (P: the larger of ``packed_rows`` and ``vsm + queries``, VSM
packing its queries with its rows) and an MLM prediction budget B per group,
then add ``--config.layout.packed_width=W --config.layout.packed_rows=P --config.layout.pack_videos=8
--config.objectives.mlm.group_predictions=B`` (README, Speed, for what each
of them saved on TV-like batches). With ``--config.objective_draws=device``
also give ``vsm-device`` the packed rows of its column (it keeps a slot after
each matched row for its drawn queries): ``--config.objectives.vsm_device.packed_rows=P2``.
"""

from configs import common


def get_config():
  c = common.base_config()
  c.seed = 77
  c.model.update({"mlm_vocab_size": 50265, "dtype": "bfloat16"})
  c.init_format = "roberta"
  c.train.update({"num_steps": 100000, "batch_videos": 512, "accum_steps": 2,
                  "learning_rate": 3e-5, "warmup_steps": 10000})
  c.objectives.vsm.update({"hard_negative_start_step": 20000, "hard_pool_size": 20,
                           "hard_neg_weight": 10.0, "drop_svmr_prob": 0.8})
  c.eval_every = 500
  c.checkpoint_every = 500
  return c
