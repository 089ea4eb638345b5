"""Ablation row: TV | MLM + MNCE + FOM + VSM (tasks table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table tasks --rows tasks_mlm_mnce_fom_vsm --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="tasks",
    label="TV | MLM + MNCE + FOM + VSM",
    order=4,
    pretrain={"mlm": 2.0, "mfm_nce": 2.0, "fom": 1.0, "vsm": 2.0},
    paper={"TVR R@1": 4.44, "TVR R@10": 14.69, "TVR R@100": 22.82, "TVQA acc": 72.75,
           "How2R R@1": 2.78, "How2R R@10": 10.41, "How2R R@100": 18.77, "How2QA acc": 77.54},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
