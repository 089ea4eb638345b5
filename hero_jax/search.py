"""Search your own videos: free-text queries -> the top moments of a collection.

Encode a video collection once into a frame bank (the same bank the VCMR
evaluation uses), then answer queries against it; a query never re-encodes
the bank.

  # 1. the bank, from a built TFDS dataset (all splits, or one) or the raw layout
  python -m hero_jax.search --checkpoint ~/runs/tvr --bank ~/tv.bank.npz \\
      --videos tfds:~/tensorflow_datasets/hero_tv/videos:val
  python -m hero_jax.search --checkpoint ~/runs/tvr --bank ~/mine.bank.npz \\
      --videos raw:~/my_videos --tokenizer roberta:~/roberta-base
  # 2. queries
  python -m hero_jax.search --checkpoint ~/runs/tvr --bank ~/tv.bank.npz \\
      --query "sheldon knocks on the door" --top 10

``--checkpoint``: a training workdir (fine-tuned VCMR, or any hero_jax run),
a converted hero_jax checkpoint folder, or an original HERO ``.pt`` (then
``--model-config`` with the original JSON, or the sizes are read from the
shapes and ``--num-heads``). Queries are tokenised as the original's
preprocessing (all-upper-case text lower-cased, ``[CLS]`` + tokens) with the
bank's tokenizer (recorded when the bank is built; ``--tokenizer`` sets it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from hero_jax.eval import vcmr as vcmr_lib

DEFAULTS = vcmr_lib.VcmrEvalSettings(min_pred_l=2, max_pred_l=16, max_vcmr_video=100,
                                     video_batch=16, query_batch=1)


@dataclasses.dataclass
class Moment:
  vid: str
  start: float
  end: float
  score: float


# --- model ---------------------------------------------------------------------


def load_model(checkpoint, *, model_config=None, num_heads=None):
  """(Hero model, params, HeroConfig) from any checkpoint form."""
  from hero_jax.model.hero import Hero
  from hero_jax.train import init_from
  path = Path(checkpoint).expanduser()
  if not path.exists():
    raise FileNotFoundError(f"--checkpoint {path} does not exist")
  if path.is_dir() and (path / "params").exists():
    from hero_jax.convert.checkpoint import load_hero_config
    cfg = load_hero_config(path)
  elif path.is_dir():
    cfg = _run_config(path)
  else:
    cfg = _original_config(path, model_config, num_heads)
  cfg = cfg.replace(hidden_dropout=0.0, attention_dropout=0.0)
  return Hero(cfg), init_from.load(str(path), cfg), cfg


def _run_config(path: Path):
  import ml_collections
  from hero_jax.train import init_from, tasks
  return tasks.hero_config(ml_collections.ConfigDict(init_from.run_config(path)))


def _original_config(path: Path, model_config, num_heads):
  from hero_jax.convert import files
  from hero_jax.convert.__main__ import hero_config_for
  args = argparse.Namespace(model_config=model_config, num_heads=num_heads)
  cfg, _ = hero_config_for(files.load_state_dict(path), args)
  return cfg


# --- bank ----------------------------------------------------------------------


def _tokenizer_spec_of(metadata: dict) -> str:
  if "synthetic_spec" in metadata:
    return "synthetic:" + json.dumps(metadata["synthetic_spec"])
  return ""


def load_tokenizer(spec: str):
  from hero_jax.data import synthetic, tokenizers
  if spec.startswith("synthetic:"):
    return synthetic.tokenizer(synthetic.SyntheticSpec(**json.loads(spec[len("synthetic:"):])))
  return tokenizers.load_tokenizer(spec)


def collection(videos: str, *, tokenizer: str = "", max_clip_len: int = 100,
               feature_dim: int | None = None, frame_length: float | None = None,
               vids=None):
  """(VideoExamples, special ids, frame length, tokenizer spec) of ``--videos``.

  ``tfds:<data_dir>/<name>[:<split>]`` (a built videos dataset) or
  ``raw:<manual_dir>`` (features/ + subtitles.jsonl, tokenised here);
  ``vids``: only these videos (in that order).
  """
  from hero_jax.data import pipeline
  scheme, _, rest = videos.partition(":")
  if scheme == "tfds":
    where, _, split = rest.partition(":")
    where = Path(where).expanduser()
    corpus = pipeline.VideoCorpus(pipeline.dataset_dir(str(where.parent.parent),
                                                       f"{where.parent.name}/{where.name}"),
                                  max_clip_len)
    if split and split not in corpus.splits:
      raise ValueError(f"--videos {videos}: no split {split!r}; splits: {sorted(corpus.splits)}")
    sources = [corpus.splits[split]] if split else list(corpus.splits.values())
    if vids is not None:
      examples = [(sources[0] if split else corpus).video_by_id(v) for v in vids]
    else:
      examples = [s.video(i) for s in sources for i in range(len(s))]
    return (examples, corpus.special_ids, corpus.frame_length,
            tokenizer or _tokenizer_spec_of(corpus.metadata))
  if scheme == "raw":
    from hero_jax.data import raw, records
    from hero_jax.data.report import BuildReport
    if not tokenizer:
      raise ValueError("--videos raw:... is tokenised here: pass --tokenizer roberta:<dir> | "
                       "sentencepiece:<file.model> | words:<file.txt>")
    tok = load_tokenizer(tokenizer)
    videos_raw = raw.RawVideos(str(Path(rest).expanduser()))
    report = BuildReport(f"search bank {rest}")
    fl = frame_length or 1.5
    wanted = sorted(videos_raw.files) if vids is None else list(vids)
    missing = [v for v in wanted if v not in videos_raw.files]
    if missing:
      raise ValueError(f"--videos {videos}: no features for {missing[:5]}")
    recs = videos_raw.records(wanted, tok, feature_dim=feature_dim or 4352,
                              frame_length=fl, max_clip_len=max_clip_len, report=report)
    examples = [records.decode_video(records.encode_video(r), max_clip_len) for r in recs]
    print(report.format(), file=sys.stderr)
    from hero_jax.objectives import host
    ids = tok.special_ids()
    special = host.SpecialIds(cls=ids["cls"], sep=ids["sep"], pad=ids["pad"], unk=ids["unk"],
                              mask=ids["mask"], v_range=tuple(ids["v_range"]))
    return examples, special, fl, tokenizer
  raise ValueError(f"--videos must be tfds:<data_dir>/<name>[:<split>] or raw:<dir>, got {videos!r}")


def build_bank(model, params, cfg, examples, special, frame_length, tokenizer_spec,
               settings=DEFAULTS) -> vcmr_lib.FrameBank:
  from hero_jax import layout
  from hero_jax.objectives import host
  if not examples:
    raise ValueError("the video collection is empty")
  n_frames = max(v.num_frames for v in examples)
  sizes = layout.LayoutSizes(
      max_frames=max(n_frames, 1), max_rows=max(max(len(v.sub_ids) for v in examples), 1),
      max_row_frames=max([np.size(f) for v in examples for f in v.sub_frames] + [1]),
      max_row_tokens=1 + max([len(i) for v in examples for i in v.sub_ids] + [1]),
      queries=1, max_query_tokens=2, max_predictions=1)
  ctx = host.HostContext(sizes=sizes, ids=special, queries_per_video=1, frame_length=frame_length)
  video2idx = {v.vid: i for i, v in enumerate(sorted(examples, key=lambda v: v.vid))}
  bank = vcmr_lib.encode_bank(model, params, examples, ctx, settings, video2idx,
                              progress=lambda n, t: print(f"encoded {n}/{t} videos", file=sys.stderr))
  bank.meta = {"tokenizer": tokenizer_spec, "special_ids": dataclasses.asdict(special)}
  return bank


# --- queries -------------------------------------------------------------------


def search(model, params, bank: vcmr_lib.FrameBank, query: str, *, top: int = 10,
           tokenizer_spec: str = "", settings=DEFAULTS) -> list:
  """The top moments of ``bank`` for a free-text ``query``."""
  from hero_jax.data.tokenizers import normalize_text
  spec = tokenizer_spec or bank.meta.get("tokenizer", "")
  if not spec:
    raise ValueError("the bank records no tokenizer: pass --tokenizer")
  tok = load_tokenizer(spec)
  ids = bank.meta["special_ids"]
  tokens = tok.encode(normalize_text(query, unescape_html=False))
  if not tokens:
    raise ValueError(f"query {query!r} has no tokens")
  s = dataclasses.replace(settings, max_before_nms=max(top, 1), query_batch=1)
  ranking = vcmr_lib.rank(model, params, bank, [np.array([ids["cls"]] + list(tokens))],
                          ids["pad"], s)
  fl = bank.frame_length
  return [Moment(bank.vids[v], float(st * fl), float((ed + 1) * fl), float(score))
          for v, st, ed, score in zip(ranking.vcmr_video[0], ranking.vcmr_st[0],
                                      ranking.vcmr_ed[0], ranking.vcmr_scores[0])][:top]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m hero_jax.search", description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--bank", required=True, help="the bank file (.npz); built by --videos")
  p.add_argument("--videos", help="build the bank from tfds:<data_dir>/<name>[:<split>] or raw:<dir>")
  p.add_argument("--query", action="append", default=[], help="a free-text query (repeatable)")
  p.add_argument("--top", type=int, default=10)
  p.add_argument("--tokenizer", default="", help="roberta:<dir> | sentencepiece:<file> | words:<file>")
  p.add_argument("--model-config", help="original HERO JSON, for an original .pt checkpoint")
  p.add_argument("--num-heads", type=int, help="attention heads, for an original .pt without JSON")
  p.add_argument("--max-clip-len", type=int, default=100)
  p.add_argument("--min-pred-l", type=int, default=DEFAULTS.min_pred_l)
  p.add_argument("--max-pred-l", type=int, default=DEFAULTS.max_pred_l)
  p.add_argument("--json", action="store_true", help="print JSON lines")
  args = p.parse_args(argv)
  try:
    settings = dataclasses.replace(DEFAULTS, min_pred_l=args.min_pred_l, max_pred_l=args.max_pred_l)
    model, params, cfg = load_model(args.checkpoint, model_config=args.model_config,
                                    num_heads=args.num_heads)
    if args.videos:
      examples, special, fl, spec = collection(args.videos, tokenizer=args.tokenizer,
                                               max_clip_len=args.max_clip_len,
                                               feature_dim=cfg.frame_feat_dim)
      bank = build_bank(model, params, cfg, examples, special, fl, spec, settings)
      bank.save(args.bank)
      print(f"wrote {args.bank}: {len(bank.vids)} videos", file=sys.stderr)
    elif not args.query:
      p.error("give --videos to build the bank, or --query to search it")
    if not args.query:
      return 0
    bank = vcmr_lib.FrameBank.load(args.bank)
    for q in args.query:
      moments = search(model, params, bank, q, top=args.top, tokenizer_spec=args.tokenizer,
                       settings=settings)
      for rank_, m in enumerate(moments, 1):
        if args.json:
          print(json.dumps({"query": q, "rank": rank_, **dataclasses.asdict(m)}))
        else:
          print(f"{q!r}\t{rank_}\t{m.vid}\t{m.start:.1f}\t{m.end:.1f}\t{m.score:.4g}")
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
