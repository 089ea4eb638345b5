"""Ablation row: TV + HowTo100M | MLM + MNCE + FOM + VSM (tasks table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table tasks --rows tasks_tv_howto100m --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="tasks",
    label="TV + HowTo100M | MLM + MNCE + FOM + VSM",
    order=6,
    pretrain={"mlm": 2.0, "mfm_nce": 2.0, "fom": 1.0, "vsm": 2.0},
    data=("tv", "howto100m"),
    paper={"TVR R@1": 4.34, "TVR R@10": 13.97, "TVR R@100": 21.78, "TVQA acc": 74.24,
           "How2R R@1": 2.98, "How2R R@10": 11.16, "How2R R@100": 17.55, "How2QA acc": 77.75},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
