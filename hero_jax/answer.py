"""Ask about your own video: a question and candidate answers -> answer probabilities and a time span.

  python -m hero_jax.answer --checkpoint ~/runs/tvqa \\
      --videos tfds:~/tensorflow_datasets/hero_tv/videos:val --vid friends_s01e01_seg01_clip_00 \\
      --question "What does Ross hold?" --answer "A cup" --answer "A book" --answer "A phone"
  python -m hero_jax.answer --checkpoint ~/runs/tvqa --videos raw:~/my_videos --vid kitchen \\
      --tokenizer roberta:~/roberta-base --question "..." --answer "..." --answer "..."

``--checkpoint``: a fine-tuned video-QA model (a training workdir, a
converted folder, or an original ``HeroForVideoQA`` ``.pt``). The question
and answers are tokenised as the original's preprocessing (all-caps text
lower-cased) and run through ``HeroForVideoQA`` exactly as in training and
evaluation: the probability of each answer (softmax of the answer logits)
and the most likely span (start i <= end j maximising P_st[i] P_ed[j]),
as seconds [i * interval, (j + 1) * interval].
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from hero_jax import layout, search
from hero_jax.data import records
from hero_jax.eval import run as eval_run
from hero_jax.objectives import host


@dataclasses.dataclass
class Answer:
  probabilities: list
  best: int
  start: float
  end: float


def best_span(st_logits, ed_logits, num_frames: int) -> tuple:
  """(i, j), i <= j < num_frames, maximising softmax(st)[i] * softmax(ed)[j]."""
  def probs(x):
    x = np.asarray(x[:num_frames], np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()
  scores = np.triu(np.outer(probs(st_logits), probs(ed_logits)))
  i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
  return int(i), int(j)


def answer(model, params, cfg, video: layout.VideoExample, question: str, answers: list, *,
           tokenizer, special: host.SpecialIds, frame_length: float) -> Answer:
  """Answer probabilities and the predicted span of one question about ``video``."""
  from hero_jax.data.tokenizers import normalize_text
  if cfg.heads != "videoqa":
    raise ValueError(f"the checkpoint has {cfg.heads!r} heads, not a video-QA model's")
  if len(answers) < 2:
    raise ValueError("give at least two candidate answers (--answer ... --answer ...)")
  enc = lambda text: np.asarray(tokenizer.encode(normalize_text(text, unescape_html=False)), np.int64)  # noqa: E731
  query = records.QaQuery(qid="question", vid=video.vid, question=question, answers=list(answers),
                          question_ids=enc(question), answer_ids=[enc(a) for a in answers],
                          answer_idx=-1, ts=(float("nan"), float("nan")))
  qa_len = 2 + len(query.question_ids) + max(len(a) for a in query.answer_ids)
  sizes = layout.LayoutSizes(
      max_frames=max(video.num_frames, 1), max_rows=max(len(video.sub_ids), 1),
      max_row_frames=max([np.size(f) for f in video.sub_frames] + [1]),
      max_row_tokens=1 + max([len(i) for i in video.sub_ids] + [0]) + qa_len,
      queries=1, max_query_tokens=2, answers=len(answers), max_qa_tokens=qa_len)
  hctx = host.HostContext(sizes=sizes, ids=special, queries_per_video=1, frame_length=frame_length)
  logits, st, ed = eval_run.qa_predictions(model, params, [layout.QueryExample(video, query)],
                                           hctx, batch_size=1)
  p = np.exp(logits[0] - logits[0].max())
  p /= p.sum()
  i, j = best_span(st[0], ed[0], video.num_frames)
  return Answer(probabilities=[float(x) for x in p], best=int(np.argmax(p)),
                start=i * frame_length, end=(j + 1) * frame_length)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m hero_jax.answer", description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--videos", required=True, help="tfds:<data_dir>/<name>[:<split>] or raw:<dir>")
  p.add_argument("--vid", required=True, help="the video's id")
  p.add_argument("--question", required=True)
  p.add_argument("--answer", action="append", default=[], help="a candidate answer (repeat)")
  p.add_argument("--tokenizer", default="", help="roberta:<dir> | sentencepiece:<file> | words:<file>")
  p.add_argument("--model-config", help="original HERO JSON, for an original .pt checkpoint")
  p.add_argument("--num-heads", type=int, help="attention heads, for an original .pt without JSON")
  p.add_argument("--max-clip-len", type=int, default=100)
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  try:
    model, params, cfg = search.load_model(args.checkpoint, model_config=args.model_config,
                                           num_heads=args.num_heads)
    examples, special, fl, spec = search.collection(
        args.videos, tokenizer=args.tokenizer, max_clip_len=args.max_clip_len,
        feature_dim=cfg.frame_feat_dim, vids=[args.vid])
    if not spec:
      raise ValueError("this video collection records no tokenizer: pass --tokenizer")
    out = answer(model, params, cfg, examples[0], args.question, args.answer,
                 tokenizer=search.load_tokenizer(spec), special=special, frame_length=fl)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps({"question": args.question, "answers": args.answer, **dataclasses.asdict(out)}))
  else:
    for k, (text, prob) in enumerate(zip(args.answer, out.probabilities)):
      print(f"{'*' if k == out.best else ' '} {prob:.3f}  {text}")
    print(f"span: {out.start:.1f} s - {out.end:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
