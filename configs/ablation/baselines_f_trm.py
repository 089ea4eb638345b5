"""Ablation row: none | F-TRM (baselines table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table baselines --rows baselines_f_trm --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="baselines",
    label="none | F-TRM",
    order=1,
    pretrain=None,
    encoder="f_trm",
    downstream=("tvr", "tvqa"),
    paper={"TVR R@1": 1.99, "TVR R@10": 7.76, "TVR R@100": 13.26, "TVQA acc": 31.8},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
