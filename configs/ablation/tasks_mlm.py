"""Ablation row: TV | MLM (tasks table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table tasks --rows tasks_mlm --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="tasks",
    label="TV | MLM",
    order=1,
    pretrain={"mlm": 2.0},
    paper={"TVR R@1": 2.92, "TVR R@10": 10.66, "TVR R@100": 17.52, "TVQA acc": 71.25,
           "How2R R@1": 2.06, "How2R R@10": 9.08, "How2R R@100": 14.45, "How2QA acc": 76.42},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
