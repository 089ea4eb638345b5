"""Ablation row: none | HERO (baselines table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table baselines --rows baselines_hero --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="baselines",
    label="none | HERO",
    order=3,
    pretrain=None,
    downstream=("tvr", "tvqa"),
    paper={"TVR R@1": 2.98, "TVR R@10": 10.65, "TVR R@100": 18.25, "TVQA acc": 70.65},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
