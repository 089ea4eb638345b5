"""Ablation row: TV | MLM + MNCE + FOM (tasks table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table tasks --rows tasks_mlm_mnce_fom --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="tasks",
    label="TV | MLM + MNCE + FOM",
    order=3,
    pretrain={"mlm": 2.0, "mfm_nce": 2.0, "fom": 1.0},
    paper={"TVR R@1": 3.09, "TVR R@10": 10.27, "TVR R@100": 17.43, "TVQA acc": 72.54,
           "How2R R@1": 2.36, "How2R R@10": 9.85, "How2R R@100": 15.97, "How2QA acc": 77.12},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
