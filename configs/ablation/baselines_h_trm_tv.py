"""Ablation row: TV | H-TRM (baselines table; the paper's numbers in ``paper``).

  python -m hero_jax.ablation --table baselines --rows baselines_h_trm_tv --scale tiny --workdir W
"""

from configs.ablation import recipe

ROW = recipe.Row(
    table="baselines",
    label="TV | H-TRM",
    order=4,
    pretrain={"mlm": 2.0, "mfm_nce": 2.0, "fom": 1.0, "vsm": 2.0},
    encoder="h_trm",
    downstream=("tvr", "tvqa"),
    paper={"TVR R@1": 3.12, "TVR R@10": 11.08, "TVR R@100": 18.42, "TVQA acc": 70.03},
)


def get_config(arg: str = "pretrain,full"):
  return recipe.stage_config(ROW, arg)
