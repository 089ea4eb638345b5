"""Checkpoint conversion CLI: ``python -m hero_jax.convert <command> ...``.

Commands:

  from-hero     an original HERO checkpoint (.pt / .npz) -> hero_jax checkpoint dir
  from-roberta  an HF RoBERTa checkpoint (.bin / .safetensors) -> hero_jax
                checkpoint dir, initialised as HERO's pre-training start
  to-hero       a hero_jax checkpoint dir -> original HERO format (.pt / .npz)

Model sizes. ``from-hero`` reads every size it can from the tensor shapes
(hidden, intermediate, vocab, frame feature dim, frame positions, FOM
classes, layer counts, and the encoder: HERO, or the H-TRM / F-TRM baselines
that ``to-hero`` wrote, recognised by the modules present). Vocabulary: original checkpoints always hold a
table padded to a multiple of 8 (``pad_vocab``), while the original JSON
configs give the tokenizer's size; a ``--model-config`` whose vocab_size is
not a multiple of 8 (``hero_pretrain.json``'s 50265) gives the padded table
and MLM logits sliced to the JSON's size, as the original's model. The head count is not in the shapes: it comes from
``--model-config`` (the original JSON with ``f_config``/``c_config``, e.g.
``config/hero_finetune.json``, or a hero_jax ``HeroConfig`` JSON) or
``--num-heads`` (default 12). A given ``--model-config`` also sets the layer
counts. Explicit flags override everything.

Examples:

  python -m hero_jax.convert from-hero --src hero-tv-ht100.pt \\
      --model-config config/hero_finetune.json --out ckpt/hero-tv-ht100
  python -m hero_jax.convert from-roberta --src pretrain-tv-init.bin \\
      --model-config config/hero_pretrain.json --out ckpt/roberta-init
  python -m hero_jax.convert to-hero --src ckpt/hero-tv-ht100 --out hero.pt
"""

from __future__ import annotations

import argparse
import json
import sys

from hero_jax import paths
from hero_jax.model.config import HeroConfig

_SIZE_FLAGS = (
    ("num_heads", "num_attention_heads", "attention heads (not readable from shapes; default 12)"),
    ("cross_layers", "cross_layers", "cross-modal transformer layers"),
    ("temporal_layers", "temporal_layers", "temporal transformer layers"),
    ("frame_feat_dim", "frame_feat_dim", "frame feature dim (4352 for ResNet+SlowFast)"),
    ("max_frame_positions", "max_frame_positions", "rows of the cross-modal frame position table"),
    ("fom_num_classes", "fom_num_classes", "FOM classes"),
    ("mlm_vocab_size", "mlm_vocab_size", "MLM logit columns kept (e.g. 50265 of 50272)"),
)


def read_model_config(path) -> HeroConfig:
  """Original HERO JSON (``f_config``/``c_config``) or a hero_jax config JSON."""
  path = paths.resolve(path)
  if not path.is_file():
    raise FileNotFoundError(f"model config not found: {path}")
  d = json.loads(path.read_text())
  if "f_config" in d:
    return HeroConfig.from_original(d)
  return HeroConfig.from_dict(d)


def _flag_overrides(args) -> dict:
  return {field: getattr(args, flag) for flag, field, _ in _SIZE_FLAGS
          if getattr(args, flag, None) is not None}


def hero_config_for(state_dict, args) -> tuple[HeroConfig, list]:
  """Config for an original HERO state dict: JSON < shapes < flags."""
  from hero_jax.convert import mapping  # noqa: PLC0415
  notes = []
  inferred = mapping.infer_config_kwargs(state_dict)
  base = HeroConfig()
  if args.model_config:
    base = read_model_config(args.model_config)
    # The JSON sets the layer counts; a checkpoint that disagrees then fails
    # with the missing/unexpected layers named.
    inferred.pop("cross_layers", None)
    inferred.pop("temporal_layers", None)
    rows = inferred.get("vocab_size", base.vocab_size)
    if rows != base.vocab_size:
      raise ValueError(
          f"the checkpoint's word embeddings have {rows} rows, but --model-config "
          f"{args.model_config} gives a table of {base.vocab_size} rows (its vocab_size "
          "padded to a multiple of 8, as the original's pad_vocab does); the original cannot "
          "load this checkpoint with that config either. Give the config it was trained "
          "with, or leave out --model-config to read the vocabulary from the shapes")
    if base.mlm_vocab_size is not None:
      notes.append(f"vocabulary: {base.vocab_size} rows, the model config's "
                   f"{base.mlm_vocab_size} padded to a multiple of 8 as the original's pad_vocab; "
                   f"MLM logits keep the first {base.mlm_vocab_size} columns")
  kw = {**inferred, **_flag_overrides(args)}
  return base.replace(**kw), notes


def _print_config(cfg: HeroConfig) -> None:
  print("model config: " + json.dumps(cfg.to_dict(), sort_keys=True))


def cmd_from_hero(args) -> int:
  from hero_jax.convert import checkpoint, files, mapping  # noqa: PLC0415
  from hero_jax.model.params import abstract_params, init_params  # noqa: PLC0415
  sd = files.load_state_dict(args.src)
  cfg, notes = hero_config_for(sd, args)
  template = init_params(cfg, args.seed) if args.non_strict else abstract_params(cfg)
  params, report = mapping.state_dict_to_params(sd, template, strict=not args.non_strict)
  report.notes.extend(notes)
  print(report.summary())
  _print_config(cfg)
  meta = {"source": str(paths.absolute(args.src)), "converter": "from-hero",
          "report": report.summary(max_names=1000)}
  out = checkpoint.save_hero_checkpoint(args.out, params, cfg, meta=meta, overwrite=args.overwrite)
  print(f"wrote {out}")
  return 0


def cmd_from_roberta(args) -> int:
  from hero_jax.convert import checkpoint, roberta  # noqa: PLC0415
  sd = roberta.load_roberta_state_dict(args.src)
  base = read_model_config(args.model_config) if args.model_config else None
  cfg = roberta.roberta_config(sd, base, **_flag_overrides(args))
  params, report = roberta.from_roberta(sd, cfg, seed=args.seed, skip_layers=not args.no_skip_layers,
                                        load_lm_head=args.load_lm_head)
  print(report.summary())
  _print_config(cfg)
  meta = {"source": str(paths.absolute(args.src)), "converter": "from-roberta", "seed": args.seed,
          "report": report.summary(max_names=1000)}
  out = checkpoint.save_hero_checkpoint(args.out, params, cfg, meta=meta, overwrite=args.overwrite)
  print(f"wrote {out}")
  return 0


def cmd_to_hero(args) -> int:
  from hero_jax.convert import checkpoint, files, mapping  # noqa: PLC0415
  out = paths.resolve(args.out)
  files.check_output_path(out)
  if out.exists() and not args.overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
  params, cfg = checkpoint.load_hero_checkpoint(args.src)
  sd, added = mapping.pad_vocab(mapping.params_to_state_dict(params))
  files.save_state_dict(sd, out)
  _print_config(cfg)
  if added:
    print(f"note: vocabulary padded with {added} zero rows to {cfg.vocab_size + added} "
          "(original checkpoints always hold a multiple of 8 rows); load it with vocab_size "
          f"{cfg.vocab_size + added}, MLM logits sliced to {cfg.mlm_columns}")
  if cfg.encoder != "hero":
    print(f"note: encoder {cfg.encoder!r}, a baseline the original code does not have: the file "
          "holds HERO's names for the modules it shares with HERO and none for the ones it "
          "lacks, so the original loads it only non-strictly; from-hero reads it back exactly")
  print(f"wrote {out} ({len(sd)} tensors)")
  return 0


def _add_size_flags(p) -> None:
  p.add_argument("--model-config", help="model config JSON: original HERO format "
                 "(f_config/c_config) or a hero_jax HeroConfig dict")
  for flag, _, help_text in _SIZE_FLAGS:
    p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=int, help=help_text)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m hero_jax.convert",
                                   description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("from-hero", help="original HERO checkpoint -> hero_jax checkpoint dir")
  p.add_argument("--src", required=True, help="state dict file: .pt/.pth/.bin (torch) or .npz")
  p.add_argument("--out", required=True, help="output checkpoint directory")
  _add_size_flags(p)
  p.add_argument("--non-strict", action="store_true",
                 help="allow missing keys (fresh init, --seed) and unexpected keys (ignored)")
  p.add_argument("--seed", type=int, default=0, help="init seed for missing keys (--non-strict)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  p.set_defaults(fn=cmd_from_hero)

  p = sub.add_parser("from-roberta", help="HF RoBERTa -> hero_jax checkpoint dir (pre-training start)")
  p.add_argument("--src", required=True, help="RoBERTa checkpoint: .bin (torch) or .safetensors")
  p.add_argument("--out", required=True, help="output checkpoint directory")
  _add_size_flags(p)
  p.add_argument("--no-skip-layers", action="store_true",
                 help="take RoBERTa layers 0..n-1 instead of HERO's every-gap-th layer")
  p.add_argument("--load-lm-head", action="store_true",
                 help="also load HF lm_head.* (the original does not)")
  p.add_argument("--seed", type=int, default=0, help="init seed of everything not from RoBERTa")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  p.set_defaults(fn=cmd_from_roberta)

  p = sub.add_parser("to-hero", help="hero_jax checkpoint dir -> original HERO .pt/.npz")
  p.add_argument("--src", required=True, help="hero_jax checkpoint directory")
  p.add_argument("--out", required=True, help="output file: .pt (torch, like ModelSaver) or .npz")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  p.set_defaults(fn=cmd_to_hero)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.fn(args)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
