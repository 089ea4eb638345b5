"""How2QA fine-tuning as VALUE's StarterCode (config/train-how2qa-8gpu.json).

  # VALUE's HowTo100M features are one frame per 1.5 s (the builder's default is 2 s)
  python -m hero_jax.data.build --dataset hero_howto100m/videos --manual_dir ~/howto \\
      --tokenizer roberta:~/roberta-base --frame_length 1.5
  python -m hero_jax.data.build --dataset hero_howto100m/how2qa --manual_dir ~/howto \\
      --tokenizer roberta:~/roberta-base --frame_length 1.5
  python -m hero_jax.main --config configs/finetune_how2qa.py --workdir ~/runs/how2qa \\
      --config.init_from=~/hero/hero-tv-ht100.pt

The TVQA recipe with VALUE's How2QA values: four answers per question
(``a0``..``a3``), 2000 steps, 200 warm-up, lr 5e-5, ``lr_mul`` 10,
``lw_st_ed`` 0.4, ``max_txt_len`` 120, 8 GPUs x 4 questions x 2 accumulation.
"""

from configs import common, finetune_tvqa


def get_config():
  c = finetune_tvqa.get_config()
  c.data.datasets = {"how2qa": common.dataset("hero_howto100m/how2qa",
                                              videos="hero_howto100m/videos")}
  c.layout.answers = 4
  c.train.update({"num_steps": 2000, "warmup_steps": 200})
  return c
