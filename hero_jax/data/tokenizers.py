"""Tokenizers behind one interface, plus HERO's text normalisation.

The text DBs, the synthetic dataset and the training configs must not care
which vocabulary turned text into ids: all they need is ``encode``, ``decode``
and the special ids in the form HERO's ``txt_db/meta.json`` stores them
(CLS/SEP/PAD/UNK/MASK/BOS/EOS and ``v_range``, the id range masked language
modelling draws random replacement tokens from). Three implementations:

* ``RobertaBpeTokenizer``: RoBERTa's byte-level BPE from a user-supplied
  ``vocab.json`` + ``merges.txt``, the tokenizer the original HERO checkpoints
  were trained with. Ids equal HF ``RobertaTokenizer.tokenize`` +
  ``convert_tokens_to_ids`` for ordinary text.
* ``SentencePieceTokenizer``: a model trained here (``train_sentencepiece``)
  when RoBERTa's files are not available or a new vocabulary is wanted.
* ``WordTokenizer``: a fixed whitespace word list for synthetic data and tests.

``encode`` never adds special tokens and never normalises; callers run
``normalize_text`` first (``tokenize`` does both), as the original's
preprocessing scripts do.
"""

from __future__ import annotations

import abc
import html
import json
import os
import pathlib
import tempfile
from typing import Iterable, Iterator, Sequence

SPECIAL_KEYS = ("cls", "sep", "pad", "unk", "mask", "bos", "eos")
# Piece names shared by all implementations (RoBERTa's).
BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
# Ids of the special pieces in models trained here and in WordTokenizer.
TRAINED_SPECIALS = (BOS, PAD, EOS, UNK, MASK)


def normalize_text(text: str, *, unescape_html: bool) -> str:
  """HERO's normalisation before tokenising.

  Subtitles are HTML-unescaped first (``unescape_html=True``), queries are not;
  then all-caps text (``str.isupper``) is lower-cased, since shouted subtitles
  would otherwise tokenise into rare upper-case pieces.
  """
  if unescape_html:
    text = html.unescape(text)
  if text.isupper():
    text = text.lower()
  return text


class Tokenizer(abc.ABC):
  """Text <-> ids without special tokens, plus the special ids.

  Attributes:
    name: what produced the ids, e.g. ``"roberta-bpe"``; stored with text DBs
      so that DBs from different vocabularies are not mixed.
    vocab_size: number of ids (max id + 1); the model's embedding size.
  """
  name: str
  vocab_size: int

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of ``text``; no special tokens added, no normalisation."""

  @abc.abstractmethod
  def decode(self, ids: Iterable[int]) -> str:
    """Text of ``ids`` (special tokens are kept as their piece strings)."""

  def special_ids(self) -> dict:
    """``meta.json``'s special ids with lower-case keys (a fresh copy).

    Keys ``cls sep pad unk mask bos eos`` -> int and ``v_range`` ->
    ``[lo, hi)`` as a list of two ints. Subclasses set ``self._special``.
    """
    out = dict(self._special)
    out["v_range"] = list(self._special["v_range"])
    return out

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


def tokenize(tokenizer: Tokenizer, text: str, *, unescape_html: bool) -> list[int]:
  """``encode(normalize_text(text))``: the ids HERO stores for ``text``."""
  return tokenizer.encode(normalize_text(text, unescape_html=unescape_html))


def _special_dict(*, bos: int, pad: int, eos: int, unk: int, mask: int,
                  v_range: Sequence[int]) -> dict:
  """The meta.json layout: CLS is BOS and SEP is EOS as in RoBERTa."""
  ids = dict(cls=bos, sep=eos, pad=pad, unk=unk, mask=mask, bos=bos, eos=eos)
  out = {k: int(ids[k]) for k in SPECIAL_KEYS}
  out["v_range"] = [int(v_range[0]), int(v_range[1])]
  return out


def _require_file(path) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"tokenizer file not found: {path}")
  return path


# --- RoBERTa byte-level BPE -------------------------------------------------

class RobertaBpeTokenizer(Tokenizer):
  """RoBERTa's byte-level BPE from ``vocab.json`` and ``merges.txt``.

  Built from the ``tokenizers`` package's BPE model with the byte-level
  pre-tokenizer (no prefix space) and decoder and no post-processor, so no
  ``<s>``/``</s>`` are added. Pieces missing from the vocabulary become
  ``<unk>`` like in HF's slow tokenizer. Special-token strings inside the text
  (e.g. a literal ``"<mask>"``) are encoded as ordinary text.

  ``v_range`` is the original's ``[id('.'), id('<|endoftext|>') + 1)``. When
  the vocabulary has no ``<|endoftext|>`` the upper end is the largest id that
  is not one of the five special tokens, plus one.
  """
  name = "roberta-bpe"

  def __init__(self, vocab_json: str, merges_txt: str):
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers
    vocab_path, merges_path = _require_file(vocab_json), _require_file(merges_txt)
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    if not isinstance(vocab, dict) or not vocab:
      raise ValueError(f"{vocab_path} is not a non-empty JSON object of token -> id")
    self.vocab_size = max(vocab.values()) + 1
    self._special = self._find_specials(vocab, vocab_path)
    model = models.BPE.from_file(str(vocab_path), str(merges_path), unk_token=UNK)
    self._tok = HfTokenizer(model)
    self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    self._tok.decoder = decoders.ByteLevel()

  @staticmethod
  def _find_specials(vocab: dict, path: pathlib.Path) -> dict:
    def lookup(token):
      if token not in vocab:
        raise ValueError(f"token {token!r} missing from {path}")
      return vocab[token]
    ids = {t: lookup(t) for t in (BOS, PAD, EOS, UNK, MASK)}
    if "<|endoftext|>" in vocab:
      hi = vocab["<|endoftext|>"] + 1
    else:
      hi = max(i for t, i in vocab.items() if t not in ids) + 1
    return _special_dict(bos=ids[BOS], pad=ids[PAD], eos=ids[EOS], unk=ids[UNK],
                         mask=ids[MASK], v_range=(lookup("."), hi))

  def encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Iterable[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)



# --- SentencePiece ----------------------------------------------------------

class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model, e.g. one made by ``train_sentencepiece``.

  The model must define ``<s>`` (cls/bos), ``</s>`` (sep/eos), ``<pad>``,
  ``<unk>`` and a ``<mask>`` piece. ``v_range`` is ``[max special id + 1,
  vocab_size)``, i.e. ``[5, vocab_size)`` for models trained here.
  """

  def __init__(self, model_file: str):
    import sentencepiece
    path = _require_file(model_file)
    self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    self.name = f"sentencepiece:{path.stem}"
    self.vocab_size = self._sp.get_piece_size()
    self._special = self._find_specials(path)

  def _find_specials(self, path: pathlib.Path) -> dict:
    sp = self._sp
    ids = {BOS: sp.bos_id(), PAD: sp.pad_id(), EOS: sp.eos_id(), UNK: sp.unk_id(),
           MASK: sp.piece_to_id(MASK)}
    for piece, i in ids.items():
      if i < 0 or sp.id_to_piece(i) != piece:
        raise ValueError(f"piece {piece!r} missing from {path}")
    return _special_dict(bos=ids[BOS], pad=ids[PAD], eos=ids[EOS], unk=ids[UNK],
                         mask=ids[MASK],
                         v_range=(max(ids.values()) + 1, self.vocab_size))

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text, out_type=int))

  def decode(self, ids: Iterable[int]) -> str:
    return self._sp.decode([int(i) for i in ids])



def _corpus_lines(path: pathlib.Path) -> Iterator[str]:
  """Training lines of one corpus file.

  ``.jsonl``: one HERO subtitle record per line, every ``sub[*].text`` is a
  line; anything else: plain text, one line per line.
  """
  with open(path, encoding="utf-8") as f:
    if path.suffix != ".jsonl":
      yield from (line.rstrip("\r\n") for line in f)
      return
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        yield from (sub["text"] for sub in record.get("sub", ()))
      except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}:{lineno}: not a subtitle record "
                         f"{{'vid_name', 'sub': [{{'text', ...}}]}}: {e}") from None


def _write_corpus(corpus_files: Sequence[str], out_path: str, normalize: bool) -> int:
  """One training sentence per line; returns how many were written."""
  count = 0
  with open(out_path, "w", encoding="utf-8") as out:
    for name in corpus_files:
      for text in _corpus_lines(_require_file(name)):
        if normalize:
          text = normalize_text(text, unescape_html=True)
        # A newline inside a subtitle would end the sentence early.
        text = " ".join(text.split())
        if text:
          out.write(text + "\n")
          count += 1
  return count


def train_sentencepiece(corpus_files: Sequence[str], model_prefix: str,
                        vocab_size: int, *, model_type: str = "unigram",
                        normalize: bool = True, **options) -> str:
  """Trains a SentencePiece model with the special-id layout used here.

  Ids: ``<s>``=0 (cls/bos), ``<pad>``=1, ``</s>``=2 (sep/eos), ``<unk>``=3,
  ``<mask>``=4, so ``v_range`` is ``[5, vocab_size)``. With ``normalize`` the
  lines go through ``normalize_text(line, unescape_html=True)`` first, so the
  model sees text as ``tokenize`` will give it. ``options`` are passed on to
  ``SentencePieceTrainer.train`` (e.g. ``hard_vocab_limit=False`` for tiny
  corpora, ``character_coverage``).

  Returns:
    The path of the written ``<model_prefix>.model``.
  """
  import sentencepiece
  if not corpus_files:
    raise ValueError("train_sentencepiece needs at least one corpus file")
  prefix = pathlib.Path(model_prefix)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "corpus.txt")
    if _write_corpus(corpus_files, corpus, normalize) == 0:
      raise ValueError(f"no text in corpus files {list(map(str, corpus_files))}")
    kwargs = dict(minloglevel=2)
    kwargs.update(options)
    sentencepiece.SentencePieceTrainer.train(
        input=corpus, model_prefix=str(prefix), vocab_size=vocab_size,
        model_type=model_type, bos_id=0, pad_id=1, eos_id=2, unk_id=3,
        bos_piece=BOS, pad_piece=PAD, eos_piece=EOS, unk_piece=UNK,
        user_defined_symbols=[MASK], **kwargs)
  return f"{prefix}.model"


# --- Fixed word list --------------------------------------------------------

class WordTokenizer(Tokenizer):
  """Whitespace words over a fixed list, for synthetic data and tests.

  Ids 0..4 are ``<s> <pad> </s> <unk> <mask>``, then ``words`` from id 5;
  unknown words map to ``<unk>``.
  """
  name = "words"

  def __init__(self, words: Sequence[str]):
    words = list(words)
    for w in words:
      if not isinstance(w, str) or not w or w != "".join(w.split()):
        raise ValueError(f"words must be non-empty strings without whitespace, got {w!r}")
    seen = set(TRAINED_SPECIALS)
    for w in words:
      if w in seen:
        raise ValueError(f"duplicate or special word {w!r}")
      seen.add(w)
    self._pieces = list(TRAINED_SPECIALS) + words
    self._ids = {w: i for i, w in enumerate(self._pieces)}
    self.vocab_size = len(self._pieces)
    self._special = _special_dict(bos=self._ids[BOS], pad=self._ids[PAD], eos=self._ids[EOS],
                                  unk=self._ids[UNK], mask=self._ids[MASK],
                                  v_range=(len(TRAINED_SPECIALS), self.vocab_size))

  @classmethod
  def from_file(cls, path: str) -> "WordTokenizer":
    """One word per line; blank lines are skipped."""
    text = _require_file(path).read_text(encoding="utf-8")
    return cls([line.strip() for line in text.splitlines() if line.strip()])

  def encode(self, text: str) -> list[int]:
    unk = self._ids[UNK]
    return [self._ids.get(w, unk) for w in text.split()]

  def decode(self, ids: Iterable[int]) -> str:
    out = []
    for i in ids:
      i = int(i)
      if not 0 <= i < self.vocab_size:
        raise ValueError(f"id {i} out of range [0, {self.vocab_size})")
      out.append(self._pieces[i])
    return " ".join(out)


# --- Config specs -----------------------------------------------------------

def _load_roberta(arg: str) -> Tokenizer:
  folder = pathlib.Path(arg)
  return RobertaBpeTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


_LOADERS = {
    "roberta": _load_roberta,
    "sentencepiece": SentencePieceTokenizer,
    "words": WordTokenizer.from_file,
}


def load_tokenizer(spec: str) -> Tokenizer:
  """A tokenizer from a config string ``"<scheme>:<path>"``.

  ``roberta:<dir with vocab.json and merges.txt>``,
  ``sentencepiece:<file.model>`` or ``words:<file.txt>`` (one word per line).
  """
  scheme, sep, arg = spec.partition(":")
  if not sep or scheme not in _LOADERS or not arg:
    raise ValueError(f"tokenizer spec must be '<scheme>:<path>' with scheme one of "
                     f"{sorted(_LOADERS)}, got {spec!r}")
  return _LOADERS[scheme](arg)
