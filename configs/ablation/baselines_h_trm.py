"""Ablation row: none | H-TRM (baselines table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table baselines --rows baselines_h_trm --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="baselines",
    label="none | H-TRM",
    order=2,
    pretrain=None,
    encoder="h_trm",
    downstream=("tvr", "tvqa"),
    paper={"TVR R@1": 2.97, "TVR R@10": 10.65, "TVR R@100": 18.68, "TVQA acc": 70.09},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
