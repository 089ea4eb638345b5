"""TV + HowTo100M pre-training: the TV recipe with the two datasets mixed by ratio.

  python -m hero_jax.data.build --dataset hero_howto100m/videos --manual_dir ~/howto \\
      --tokenizer roberta:~/roberta-base
  python -m hero_jax.main --config configs/pretrain_tv_howto100m.py --workdir ~/runs/hero_tv_ht

Each update draws a (dataset, objective) pair with weight dataset ratio x
objective ratio, as the original's MetaLoader with ``targets_ratio``. The
original's HowTo100M recipe (ratio, steps, frame length) was never
released; the 1 : 1 mix here is a starting point, not a reproduction.
"""

from configs import common, pretrain_tv


def get_config():
  c = pretrain_tv.get_config()
  c.data.datasets = {
      "tv": common.dataset("hero_tv/videos", ratio=1.0),
      "howto100m": common.dataset("hero_howto100m/videos", ratio=1.0),
  }
  return c
