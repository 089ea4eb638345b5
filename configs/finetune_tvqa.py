"""TVQA fine-tuning as the original (train-tvqa-8gpu.json): HeroForVideoQA.

  python -m hero_jax.data.build --dataset hero_tv/videos --manual_dir ~/hero_data
  python -m hero_jax.data.build --dataset hero_tv/tvqa --manual_dir ~/hero_data
  python -m hero_jax.main --config configs/finetune_tvqa.py --workdir ~/runs/tvqa \\
      --config.init_from=~/hero/hero-tv-ht100.pt
  # evaluate only and write {qid: answer_idx} predictions (a run, a converted
  # folder or an original HeroForVideoQA .pt such as tvqa_default.pt):
  python -m hero_jax.main --config configs/finetune_tvqa.py --workdir ~/runs/tvqa_eval \\
      --config.mode=eval --config.init_from=~/runs/tvqa

The original's 8 GPUs x 4 questions x 2 accumulation steps (32 questions per
micro-step, five answer copies each), lr 5e-5 with ``lr_mul`` 10 for every
parameter outside the encoder (its parameter groups 0 and 1), 10000 steps,
1000 warm-up, ``lw_st_ed`` 0.4, questions of at most 120 tokens
(``max_txt_len``; longer ones are skipped in training, as the original),
frames every 1.5 s, ``max_clip_len`` 100, evaluation every 200 steps.
"""

from configs import common


def get_config():
  c = common.base_config()
  c.seed = 77
  c.model.update({"heads": "videoqa", "dtype": "bfloat16"})
  c.data.datasets = {"tvqa": common.dataset("hero_tv/tvqa", videos="hero_tv/videos")}
  c.data.max_clip_len = 100
  # Rows hold [SEP] + subtitle + [SEP] q [SEP] a: up to 61 + 122 text slots.
  c.layout.update({"max_row_tokens": 183, "answers": 5, "max_qa_tokens": 122, "queries": 1})
  c.host.max_txt_len = 120
  common.use_objectives(c, videoqa=1.0)
  c.objectives.videoqa.lw_st_ed = 0.4
  c.train.update({"num_steps": 10000, "batch_videos": 32, "accum_steps": 2,
                  "learning_rate": 5e-5, "warmup_steps": 1000, "lr_mul": 10.0})
  c.eval.splits = ["val"]
  c.eval_every = 200
  c.checkpoint_every = 200
  return c
