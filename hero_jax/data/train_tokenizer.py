"""Trains a SentencePiece tokenizer on subtitle / text corpora.

For when RoBERTa's ``vocab.json``/``merges.txt`` are not at hand or a new
vocabulary is wanted:

  python -m hero_jax.data.train_tokenizer --corpus subs.jsonl --corpus q.txt \
      --model_prefix out/spm --vocab_size 8000

``.jsonl`` corpora are HERO subtitle records (every ``sub[*].text`` is a
line), anything else plain text. Prints the model path and its special ids
(the ``meta.json`` fields); use it in configs as ``sentencepiece:<path>``.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from hero_jax.data import tokenizers


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--corpus", action="append", required=True,
                 help="corpus file (.jsonl subtitle records or plain text); repeatable")
  p.add_argument("--model_prefix", required=True, help="writes <prefix>.model/.vocab")
  p.add_argument("--vocab_size", type=int, required=True)
  p.add_argument("--model_type", default="unigram", choices=("unigram", "bpe", "char", "word"))
  p.add_argument("--no_normalize", action="store_true",
                 help="skip HERO's normalize_text (html unescape, all-caps lower-casing)")
  p.add_argument("--soft_vocab_limit", action="store_true",
                 help="allow a smaller vocabulary than --vocab_size (tiny corpora)")
  return p


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  options = {"hard_vocab_limit": False} if args.soft_vocab_limit else {}
  path = tokenizers.train_sentencepiece(
      args.corpus, args.model_prefix, args.vocab_size, model_type=args.model_type,
      normalize=not args.no_normalize, **options)
  tok = tokenizers.SentencePieceTokenizer(path)
  print(path)
  print(json.dumps({"vocab_size": tok.vocab_size, **tok.special_ids()}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
