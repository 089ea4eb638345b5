"""Ablation row: TV | HERO (baselines table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table baselines --rows baselines_hero_tv --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="baselines",
    label="TV | HERO",
    order=5,
    pretrain={"mlm": 2.0, "mfm_nce": 2.0, "fom": 1.0, "vsm": 2.0},
    downstream=("tvr", "tvqa"),
    paper={"TVR R@1": 4.44, "TVR R@10": 14.69, "TVR R@100": 22.82, "TVQA acc": 72.75},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
