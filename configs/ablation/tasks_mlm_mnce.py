"""Ablation row: TV | MLM + MNCE (tasks table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table tasks --rows tasks_mlm_mnce --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="tasks",
    label="TV | MLM + MNCE",
    order=2,
    pretrain={"mlm": 2.0, "mfm_nce": 2.0},
    paper={"TVR R@1": 3.13, "TVR R@10": 10.92, "TVR R@100": 17.52, "TVQA acc": 71.99,
           "How2R R@1": 2.15, "How2R R@10": 9.27, "How2R R@100": 14.98, "How2QA acc": 76.95},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
