"""Tokenizers: HERO's normalisation, the shared interface, each implementation.

RoBERTa BPE is checked on a hand-made vocabulary with known ids and, on a
vocabulary trained here, against an independent re-implementation of HF's
slow ``RobertaTokenizer`` (GPT-2 byte-level BPE) written below.
"""

import json
import re
import subprocess
import sys
from functools import lru_cache

import pytest

from hero_jax.data import tokenizers as tk
from hero_jax.data import train_tokenizer

SPECIAL_KEYS = {"cls", "sep", "pad", "unk", "mask", "bos", "eos", "v_range"}


# --- normalize_text ---------------------------------------------------------

@pytest.mark.parametrize("text, unescape, expected", [
    ("WHAT ARE YOU DOING & WHY ?", False, "what are you doing & why ?"),
    ("WHAT ARE YOU DOING & WHY ?", True, "what are you doing & why ?"),
    ("Chase : OK", True, "Chase : OK"),
    ("Tom &amp; Jerry", True, "Tom & Jerry"),
    ("Tom &amp; Jerry", False, "Tom &amp; Jerry"),
    # Unescaping happens before the all-caps test.
    ("HEY &amp; YO", True, "hey & yo"),
    ("HEY &amp; YO", False, "HEY &amp; YO"),
    ("&lt;I&gt; HI", True, "<i> hi"),
    ("&lt;I&gt; HI", False, "&lt;I&gt; HI"),
    ("ÉTÉ !", False, "été !"),
    ("123 ?", False, "123 ?"),  # no cased character: isupper() is False
    ("", True, ""),
])
def test_normalize_text(text, unescape, expected):
  assert tk.normalize_text(text, unescape_html=unescape) == expected


def test_normalize_text_is_keyword_only():
  with pytest.raises(TypeError):
    tk.normalize_text("A", True)  # pylint: disable=too-many-function-args


# --- RoBERTa byte-level BPE: hand-made vocabulary ---------------------------

# Byte-level: " " is "Ġ", "é" (bytes C3 A9) is "Ã©".
TINY_VOCAB = {
    "<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, ".": 4, "h": 5, "e": 6, "t": 7,
    "Ġ": 8, "th": 9, "the": 10, "Ġthe": 11, "c": 12, "a": 13, "Ġc": 14,
    "at": 15, "Ġcat": 16, "<|endoftext|>": 17, "T": 18, "<mask>": 19, "Ã": 20,
    "©": 21, "Ã©": 22, "t.": 23,
}
# "t ." would merge across the pre-tokenizer's word/punctuation split: it must
# never apply.
TINY_MERGES = ["t .", "t h", "th e", "Ġ the", "Ġ c", "a t", "Ġc at", "Ã ©"]


def _write_bpe(folder, vocab=None, merges=None):
  folder.mkdir(parents=True, exist_ok=True)
  vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
  vocab_path.write_text(json.dumps(TINY_VOCAB if vocab is None else vocab), encoding="utf-8")
  lines = TINY_MERGES if merges is None else merges
  merges_path.write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
  return str(vocab_path), str(merges_path)


@pytest.fixture
def tiny_bpe(tmp_path):
  return tk.RobertaBpeTokenizer(*_write_bpe(tmp_path / "roberta"))


@pytest.mark.parametrize("text, ids", [
    ("the cat.", [10, 16, 4]),
    ("t.", [7, 4]),
    (" the", [11]),
    ("the the the", [10, 11, 11]),
    ("The", [18, 5, 6]),
    ("thé", [9, 22]),
    ("thex", [10, 3]),  # "x" is not in the vocabulary
    ("<s>", [3, 3, 3]),  # special strings are ordinary text
    ("", []),
])
def test_roberta_encode_tiny(tiny_bpe, text, ids):
  assert tiny_bpe.encode(text) == ids


@pytest.mark.parametrize("text", ["the cat.", " the", "The", "thé", "the  the"])
def test_roberta_decode_round_trips(tiny_bpe, text):
  assert tiny_bpe.decode(tiny_bpe.encode(text)) == text


def test_roberta_decode_keeps_special_tokens(tiny_bpe):
  assert tiny_bpe.decode([0, 10, 16, 2]) == "<s>the cat</s>"


def test_roberta_special_ids(tiny_bpe):
  assert tiny_bpe.special_ids() == {
      "cls": 0, "sep": 2, "pad": 1, "unk": 3, "mask": 19, "bos": 0, "eos": 2,
      "v_range": [4, 18]}
  assert tiny_bpe.vocab_size == 24
  assert tiny_bpe.name == "roberta-bpe"


def test_roberta_special_ids_is_a_copy(tiny_bpe):
  tiny_bpe.special_ids()["v_range"][1] = 0
  assert tiny_bpe.special_ids()["v_range"] == [4, 18]


def test_roberta_v_range_without_endoftext(tmp_path):
  vocab = {t: i for t, i in TINY_VOCAB.items() if t != "<|endoftext|>"}
  tok = tk.RobertaBpeTokenizer(*_write_bpe(tmp_path, vocab=vocab))
  # Largest non-special id is "t." = 23; "<mask>" (19) does not count.
  assert tok.special_ids()["v_range"] == [4, 24]
  vocab["<mask>"] = 30
  tok = tk.RobertaBpeTokenizer(*_write_bpe(tmp_path, vocab=vocab))
  assert tok.special_ids()["v_range"] == [4, 24]
  assert tok.vocab_size == 31


def test_roberta_vocab_size_is_max_id_plus_one(tmp_path):
  vocab = dict(TINY_VOCAB, zz=99)
  tok = tk.RobertaBpeTokenizer(*_write_bpe(tmp_path, vocab=vocab))
  assert tok.vocab_size == 100


@pytest.mark.parametrize("missing", ["<s>", "</s>", "<pad>", "<unk>", "<mask>", "."])
def test_roberta_missing_special_token(tmp_path, missing):
  vocab = {t: i for t, i in TINY_VOCAB.items() if t != missing}
  vocab_path, merges_path = _write_bpe(tmp_path, vocab=vocab)
  with pytest.raises(ValueError) as err:
    tk.RobertaBpeTokenizer(vocab_path, merges_path)
  assert repr(missing) in str(err.value) and vocab_path in str(err.value)


@pytest.mark.parametrize("which", [0, 1])
def test_roberta_missing_file(tmp_path, which):
  paths = list(_write_bpe(tmp_path))
  paths[which] = str(tmp_path / "nope" / "file")
  with pytest.raises(FileNotFoundError, match=re.escape(paths[which])):
    tk.RobertaBpeTokenizer(*paths)


# --- RoBERTa byte-level BPE against a reference of HF's slow tokenizer ------

def _bytes_to_unicode():
  """GPT-2's byte -> printable character table (HF ``bytes_to_unicode``)."""
  bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1)))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


# GPT-2's pattern with stdlib ``re`` classes (\p{L} -> [^\W\d_], \p{N} -> \d);
# equal to it on the test strings below (no letters outside \w, no "²").
_GPT2_PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


class _SlowRoberta:
  """HF ``RobertaTokenizer._tokenize`` + ``convert_tokens_to_ids``."""

  def __init__(self, vocab_path, merges_path):
    with open(vocab_path, encoding="utf-8") as f:
      self.encoder = json.load(f)
    with open(merges_path, encoding="utf-8") as f:
      merges = [tuple(line.split()) for line in f.read().split("\n")
                if line and not line.startswith("#version")]
    self.ranks = {m: i for i, m in enumerate(merges)}
    self.byte_encoder = _bytes_to_unicode()

  @lru_cache(maxsize=None)  # noqa: B019  (one tokenizer per test session)
  def bpe(self, token):
    word = tuple(token)
    while len(word) > 1:
      pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
      bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if bigram not in self.ranks:
        break
      first, second = bigram
      new, i = [], 0
      while i < len(word):
        if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
          new.append(first + second)
          i += 2
        else:
          new.append(word[i])
          i += 1
      word = tuple(new)
    return word

  def encode(self, text):
    ids = []
    for piece in _GPT2_PAT.findall(text):
      token = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
      ids.extend(self.encoder.get(t, self.encoder["<unk>"]) for t in self.bpe(token))
    return ids


_CORPUS = [
    "Chase : Okay, so what are you doing here?",
    "I don't know. We'll see what they've got, it's 10:30 already.",
    "Leonard : You're the one who said 1,000 dollars!",
    "Penny : Oh my god... that's so sweet   of you.",
    "Sheldon : Bazinga!! I'm not crazy; my mother had me tested.",
    "Ross : We were on a break_point, RACHEL.\nThat's it.",
    "Café au lait, s'il vous plaît — naïve façade.",
]


@pytest.fixture(scope="module")
def trained_bpe(tmp_path_factory):
  from tokenizers import ByteLevelBPETokenizer
  folder = tmp_path_factory.mktemp("bpe")
  trainer = ByteLevelBPETokenizer(add_prefix_space=False)
  trainer.train_from_iterator(_CORPUS * 3, vocab_size=400, min_frequency=1,
                              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                              show_progress=False)
  trainer.save_model(str(folder))
  vocab_path, merges_path = str(folder / "vocab.json"), str(folder / "merges.txt")
  return tk.RobertaBpeTokenizer(vocab_path, merges_path), _SlowRoberta(vocab_path, merges_path)


@pytest.mark.parametrize("text", _CORPUS + [
    " leading space", "trailing space  ", "two\n\nlines", "unseen Zebra xylophone 987",
    "under_score __init__", "tabs\tand 'quotes' 'S 'LL", "HELLO world", "",
])
def test_roberta_matches_slow_reference(trained_bpe, text):
  tok, ref = trained_bpe
  ids = tok.encode(text)
  assert ids == ref.encode(text)
  assert tok.decode(ids) == text


def test_roberta_trained_merges_are_used(trained_bpe):
  tok, _ = trained_bpe
  text = "Chase : Okay, so what are you doing here?"
  # Byte-level with merges: far fewer ids than UTF-8 bytes.
  assert len(tok.encode(text)) < len(text.encode("utf-8")) // 2
  assert tok.special_ids()["v_range"][0] == tok.encode(".")[0]


# --- SentencePiece ----------------------------------------------------------

_WORDS = ("the cat sat on a mat and dog ran to park with ball what are you "
          "doing why here there chase okay penny leonard sheldon").split()


def _sentences(n, seed):
  import random
  rng = random.Random(seed)
  return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _write_jsonl(path, texts, per_video=4):
  with open(path, "w", encoding="utf-8") as f:
    for v in range(0, len(texts), per_video):
      subs = [{"text": t, "start": 1.5 * i, "end": 1.5 * i + 1.0}
              for i, t in enumerate(texts[v:v + per_video])]
      f.write(json.dumps({"vid_name": f"vid_{v}", "sub": subs}) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  folder = tmp_path_factory.mktemp("spm_corpus")
  jsonl = _write_jsonl(folder / "subs.jsonl", _sentences(120, 0) + [
      "WHAT ARE YOU DOING HERE", "&lt;i&gt;okay&lt;/i&gt; Tom &amp; Jerry"])
  txt = folder / "queries.txt"
  txt.write_text("\n".join(_sentences(80, 1)) + "\n\n", encoding="utf-8")
  return [jsonl, str(txt)]


_OPTS = dict(hard_vocab_limit=False, character_coverage=1.0)


@pytest.fixture(scope="module")
def spm_model(corpus, tmp_path_factory):
  prefix = tmp_path_factory.mktemp("spm") / "out" / "spm"
  path = tk.train_sentencepiece(corpus, str(prefix), 80, **_OPTS)
  assert path == f"{prefix}.model"
  return path


@pytest.fixture(scope="module")
def spm_tok(spm_model):
  return tk.SentencePieceTokenizer(spm_model)


def test_sentencepiece_special_ids(spm_tok):
  n = spm_tok.vocab_size
  assert 20 < n <= 80
  assert spm_tok.special_ids() == {
      "cls": 0, "bos": 0, "pad": 1, "sep": 2, "eos": 2, "unk": 3, "mask": 4,
      "v_range": [5, n]}
  assert spm_tok.name == "sentencepiece:spm"


def test_sentencepiece_round_trip(spm_tok):
  sentence = _sentences(120, 0)[7]
  ids = spm_tok.encode(sentence)
  assert ids and all(5 <= i < spm_tok.vocab_size for i in ids)
  assert spm_tok.decode(ids) == sentence
  assert spm_tok.decode([0] + ids + [2]) == sentence  # controls decode to nothing


def test_sentencepiece_mask_piece_is_atomic(spm_tok):
  assert 4 in spm_tok.encode("the <mask> sat")


def test_sentencepiece_normalises_training_text(corpus, tmp_path):
  unk = 3
  # Upper-case letters only occur in an all-caps subtitle (lower-cased when
  # normalising), "<" only HTML-escaped (unescaped when normalising).
  on = tk.SentencePieceTokenizer(
      tk.train_sentencepiece(corpus, str(tmp_path / "on"), 80, **_OPTS))
  off = tk.SentencePieceTokenizer(
      tk.train_sentencepiece(corpus, str(tmp_path / "off"), 80, normalize=False, **_OPTS))
  assert unk in on.encode("WHAT") and unk not in off.encode("WHAT")
  assert unk not in on.encode("<i>") and unk in off.encode("<i>")
  for text in ("WHAT ARE YOU DOING", "&lt;i&gt;okay"):
    assert unk not in tk.tokenize(on, text, unescape_html=True), text
  assert unk not in off.encode("WHAT &lt;i&gt;")


def test_sentencepiece_bpe_model_type(corpus, tmp_path):
  tok = tk.SentencePieceTokenizer(tk.train_sentencepiece(
      corpus, str(tmp_path / "bpe"), 80, model_type="bpe", **_OPTS))
  sentence = _sentences(80, 1)[3]
  assert tok.decode(tok.encode(sentence)) == sentence
  assert tok.special_ids()["mask"] == 4


@pytest.mark.parametrize("contents", [
    {"empty.txt": "\n  \n"},
    {"empty.jsonl": json.dumps({"vid_name": "v", "sub": []}) + "\n",
     "blank.txt": ""},
])
def test_sentencepiece_empty_corpus(tmp_path, contents):
  files = []
  for name, text in contents.items():
    (tmp_path / name).write_text(text, encoding="utf-8")
    files.append(str(tmp_path / name))
  with pytest.raises(ValueError) as err:
    tk.train_sentencepiece(files, str(tmp_path / "m"), 50, **_OPTS)
  assert all(f in str(err.value) for f in files)


def test_sentencepiece_bad_jsonl(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"vid_name": "v", "sub": [{"text": "a b"}]}\n{"sub": [{"start": 1}]}\n')
  with pytest.raises(ValueError, match=re.escape(f"{path}:2")):
    tk.train_sentencepiece([str(path)], str(tmp_path / "m"), 50, **_OPTS)


def test_sentencepiece_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    tk.train_sentencepiece([str(tmp_path / "nope.txt")], str(tmp_path / "m"), 50)
  with pytest.raises(ValueError):
    tk.train_sentencepiece([], str(tmp_path / "m"), 50)
  with pytest.raises(FileNotFoundError, match="nope.model"):
    tk.SentencePieceTokenizer(str(tmp_path / "nope.model"))


def _train_raw_spm(corpus_file, prefix, **kwargs):
  import sentencepiece
  sentencepiece.SentencePieceTrainer.train(
      input=corpus_file, model_prefix=str(prefix), vocab_size=40,
      hard_vocab_limit=False, minloglevel=2, **kwargs)
  return f"{prefix}.model"


def test_sentencepiece_other_layout_is_looked_up(corpus, tmp_path):
  # SentencePiece's default layout (unk=0, bos=1, eos=2) plus pad and <mask>.
  path = _train_raw_spm(corpus[1], tmp_path / "other", pad_id=3,
                        user_defined_symbols=["<foo>", "<mask>"])
  tok = tk.SentencePieceTokenizer(path)
  assert tok.special_ids() == {
      "cls": 1, "bos": 1, "pad": 3, "sep": 2, "eos": 2, "unk": 0, "mask": 5,
      "v_range": [6, tok.vocab_size]}


@pytest.mark.parametrize("kwargs, missing", [
    (dict(pad_id=3), "<mask>"),
    (dict(user_defined_symbols=["<mask>"]), "<pad>"),
])
def test_sentencepiece_rejects_model_without_specials(corpus, tmp_path, kwargs, missing):
  path = _train_raw_spm(corpus[1], tmp_path / "plain", **kwargs)
  with pytest.raises(ValueError) as err:
    tk.SentencePieceTokenizer(path)
  assert repr(missing) in str(err.value) and path in str(err.value)


def test_train_tokenizer_main(corpus, tmp_path, capsys):
  prefix = tmp_path / "cmd" / "spm"
  assert train_tokenizer.main([
      "--corpus", corpus[0], "--corpus", corpus[1], "--model_prefix", str(prefix),
      "--vocab_size", "70", "--soft_vocab_limit"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == f"{prefix}.model"
  info = json.loads(lines[1])
  tok = tk.SentencePieceTokenizer(lines[0])
  assert info == {"vocab_size": tok.vocab_size, **tok.special_ids()}
  assert info["mask"] == 4 and info["v_range"] == [5, tok.vocab_size]


def test_train_tokenizer_module_runs(corpus, tmp_path):
  prefix = tmp_path / "spm"
  out = subprocess.run(
      [sys.executable, "-m", "hero_jax.data.train_tokenizer", "--corpus", corpus[1],
       "--model_prefix", str(prefix), "--vocab_size", "60", "--soft_vocab_limit"],
      capture_output=True, text=True, check=True, timeout=60)
  assert out.stdout.splitlines()[0] == f"{prefix}.model"
  assert json.loads(out.stdout.splitlines()[1])["unk"] == 3


# --- WordTokenizer ----------------------------------------------------------

def test_word_tokenizer():
  tok = tk.WordTokenizer(["hello", "world", "."])
  assert tok.vocab_size == 8
  assert tok.encode("hello  world\t.\nbye") == [5, 6, 7, 3]
  assert tok.decode([0, 5, 6, 2]) == "<s> hello world </s>"
  assert tok.encode("<mask> hello") == [4, 5]
  assert tok.special_ids() == {
      "cls": 0, "bos": 0, "pad": 1, "sep": 2, "eos": 2, "unk": 3, "mask": 4,
      "v_range": [5, 8]}
  assert tok.name == "words"


@pytest.mark.parametrize("words", [["a", "a"], ["<unk>"], ["a b"], [""], [3]])
def test_word_tokenizer_rejects_bad_words(words):
  with pytest.raises(ValueError):
    tk.WordTokenizer(words)


def test_word_tokenizer_decode_out_of_range():
  with pytest.raises(ValueError, match="6"):
    tk.WordTokenizer(["a"]).decode([6])


def test_tokenize_normalises_then_encodes():
  tok = tk.WordTokenizer(["what", "&", "why", "WHAT", "&amp;"])
  assert tk.tokenize(tok, "WHAT &amp; WHY", unescape_html=True) == [5, 6, 7]
  assert tk.tokenize(tok, "WHAT &amp; WHY", unescape_html=False) == [8, 9, 3]


# --- load_tokenizer ---------------------------------------------------------

def test_load_tokenizer_all_schemes(tmp_path, spm_model, spm_tok):
  _write_bpe(tmp_path / "rob")
  rob = tk.load_tokenizer(f"roberta:{tmp_path / 'rob'}")
  assert isinstance(rob, tk.RobertaBpeTokenizer) and rob.encode("the cat.") == [10, 16, 4]

  words = tmp_path / "words.txt"
  words.write_text("alpha\n\nbeta \n", encoding="utf-8")
  wt = tk.load_tokenizer(f"words:{words}")
  assert isinstance(wt, tk.WordTokenizer) and wt.encode("beta alpha x") == [6, 5, 3]

  sp = tk.load_tokenizer(f"sentencepiece:{spm_model}")
  assert isinstance(sp, tk.SentencePieceTokenizer)
  assert sp.special_ids() == spm_tok.special_ids()
  for tok in (rob, wt, sp):
    assert isinstance(tok, tk.Tokenizer) and set(tok.special_ids()) == SPECIAL_KEYS


@pytest.mark.parametrize("spec", ["bert:/x", "roberta", "/some/file.model", "words:"])
def test_load_tokenizer_bad_spec(spec):
  with pytest.raises(ValueError) as err:
    tk.load_tokenizer(spec)
  for scheme in ("roberta", "sentencepiece", "words"):
    assert scheme in str(err.value)


def test_load_tokenizer_missing_roberta_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="vocab.json"):
    tk.load_tokenizer(f"roberta:{tmp_path}")
