"""TVQA-style fine-tuning of the tiny HERO on the synthetic questions: CPU minutes.

  python -m hero_jax.main --config configs/finetune_videoqa_tiny.py --workdir /tmp/hero_qa
  # from the tiny pre-training run (configs/pretrain_tiny.py):
  python -m hero_jax.main --config configs/finetune_videoqa_tiny.py --workdir /tmp/hero_qa \\
      --config.init_from=/tmp/hero

Trains HeroForVideoQA on ``hero_synthetic/qa`` (two questions per video, five
answers each, built into ``/tmp/hero_tfds`` on first use) and evaluates the
answer accuracy on the synthetic val split (128 questions; chance 1/5),
writing ``{qid: answer_idx}`` predictions under ``<workdir>/results/``.
"""

from configs import common, pretrain_tiny


def get_config():
  c = pretrain_tiny.get_config()   # the same tiny model, so its checkpoints fit
  c.model.heads = "videoqa"
  c.data.datasets = {"qa": common.dataset("hero_synthetic/qa", "/tmp/hero_tfds",
                                          videos="hero_synthetic/videos")}
  c.layout.update({"max_row_tokens": 16, "answers": 5, "max_qa_tokens": 8, "queries": 1})
  c.host.max_txt_len = 120
  common.use_objectives(c, videoqa=1.0)
  c.objectives.videoqa.lw_st_ed = 0.4
  # From scratch the tiny encoder needs a larger step than the recipe's 5e-5 x
  # lr_mul 10 (a pre-trained base encoder with fresh heads).
  c.train.update({"num_steps": 600, "batch_videos": 16, "learning_rate": 2e-3,
                  "warmup_steps": 50, "lr_mul": 1.0})
  c.eval.splits = ["val"]
  c.eval.qa_batch = 32
  c.eval_batches = 2
  return c
