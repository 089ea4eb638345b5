"""A fixture folder with another vocabulary, derived exactly from a given one.

The original pads its word-embedding table to a multiple of 8 and slices the
MLM logits back to the JSON's vocabulary (``pad_vocab``), so a folder made
with, say, 500 tokens holds 504-row weights and 500-column MLM logits. This
derives such a folder from any fixture folder without the original code:

* word embeddings / ``lm_head.bias``: the old rows are kept, new token rows
  are random, the new MASK id (vocab - 1) takes the old MASK row, and the
  padded rows are zero, as ``pad_vocab`` leaves them;
* the MLM batch's MASK ids move to the new id (same embedding row, so every
  encoder output is unchanged);
* MLM logits, per-token losses and the validation numbers are recomputed in
  float64 from the folder's own cross-modal outputs and the LM head weights
  (the old logits are reproduced first, as a check of the recomputation);
* ``config.json`` says what the original's would: the JSON vocab, the padded
  table, ``vocab_pad``, ``mlm_logit_columns`` and the special ids.

Every other file is copied unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from scipy.special import erf

F = "v_encoder.f_encoder."


def _gelu(x):
  return x * 0.5 * (1.0 + erf(x / np.sqrt(2.0)))


def _layer_norm(x, scale, bias, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def _masked_hidden(z: dict) -> np.ndarray:
  """Cross-modal outputs at the MLM targets, from the packed rows."""
  row_len = z["out.f_row_len"]
  starts = np.concatenate([[0], np.cumsum(row_len)[:-1]])
  rows, pos = np.nonzero(z["batch.txt_mask_tgt"])
  if np.any(pos >= row_len[rows]):
    raise ValueError("an MLM target lies outside its packed row")
  return z["out.f_sequence_packed"][starts[rows] + pos].astype(np.float64)


def _lm_transform(w: dict, hidden: np.ndarray) -> np.ndarray:
  g = lambda k: w[F + "lm_head." + k].astype(np.float64)  # noqa: E731
  x = _gelu(hidden @ g("dense.weight").T + g("dense.bias"))
  return _layer_norm(x, g("LayerNorm.weight"), g("LayerNorm.bias"))


def _save_weights(w: dict, out: Path) -> None:
  import torch
  np.savez(out / "weights.npz", **w)
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
  tensors[F + "lm_head.decoder.weight"] = tensors[F + "embeddings.word_embeddings.weight"]
  tensors["vocab_padded"] = True
  torch.save(tensors, out / "weights.pt")


def derive(src: Path, out: Path, vocab: int, seed: int = 0) -> Path:
  """Writes the folder for ``vocab`` tokens into ``out``; returns it."""
  src, out = Path(src), Path(out)
  cfg = json.loads((src / "config.json").read_text())
  old_vocab, old_mask = cfg["vocab_size"], cfg["special_ids"]["MASK"]
  if vocab <= old_vocab:
    raise ValueError(f"vocab {vocab} must exceed the folder's {old_vocab}")
  padded = -(-vocab // 8) * 8
  new_mask = vocab - 1
  shutil.copytree(src, out)
  for p in [out, *out.rglob("*")]:   # the source may be read-only
    p.chmod(0o755 if p.is_dir() else 0o644)

  w = dict(np.load(src / "weights.npz"))
  rng = np.random.default_rng(seed)
  emb, bias = w[F + "embeddings.word_embeddings.weight"], w[F + "lm_head.bias"]
  new_emb = np.zeros((padded, emb.shape[1]), np.float32)
  new_bias = np.zeros((padded,), np.float32)
  new_emb[:old_vocab], new_bias[:old_vocab] = emb[:old_vocab], bias[:old_vocab]
  fresh = slice(old_vocab, new_mask)
  new_emb[fresh] = rng.normal(0, 0.05, new_emb[fresh].shape)
  new_bias[fresh] = rng.normal(0, 0.05, new_bias[fresh].shape)
  new_emb[new_mask], new_bias[new_mask] = emb[old_mask], bias[old_mask]
  w[F + "embeddings.word_embeddings.weight"] = new_emb
  w[F + "lm_head.decoder.weight"] = new_emb.copy()
  w[F + "lm_head.bias"] = new_bias
  _save_weights(w, out)

  z = dict(np.load(src / "task_mlm.npz"))
  if np.any(z["choice.mlm_orig_input_ids"] == old_mask):
    raise ValueError("the MLM inputs use the MASK id as a real token")
  z["batch.input_ids"] = np.where(z["batch.input_ids"] == old_mask, new_mask, z["batch.input_ids"])
  masked = z["choice.mlm_masked_input_ids"]
  z["choice.mlm_masked_input_ids"] = np.where(masked == old_mask, new_mask, masked)
  x = _lm_transform(w, _masked_hidden(z))
  old_logits = x @ emb.astype(np.float64).T + bias
  err = np.abs(old_logits[:, :old_vocab] - z["out.mlm_logits"]).max()
  if err > 1e-4:
    raise ValueError(f"cannot reproduce the folder's MLM logits (max error {err})")
  logits = (x @ new_emb.astype(np.float64).T + new_bias)[:, :vocab]
  labels = z["batch.txt_labels"]
  top = logits.max(1)
  ce = np.log(np.exp(logits - top[:, None]).sum(1)) + top - logits[np.arange(len(labels)), labels]
  z.update({"out.mlm_logits": logits.astype(np.float32), "loss.mlm_per_token": ce.astype(np.float32),
            "loss.mlm_train": np.float32(ce.mean()), "val.loss": np.float64(ce.mean()),
            "val.acc": np.float64(np.mean(logits.argmax(1) == labels))})
  np.savez(out / "task_mlm.npz", **z)

  for part in ("f_config", "q_config"):
    cfg["model_config_pretrain"][part]["vocab_size"] = vocab
    cfg["model_config_finetune"][part]["vocab_size"] = padded
    cfg["resolved_configs"][part]["vocab_size"] = vocab
  cfg.update(vocab_size=vocab, vocab_size_padded=padded, vocab_pad=padded - vocab,
             mlm_logit_columns=vocab)
  ids = cfg["special_ids"]
  ids.update(MASK=new_mask, endoftext=new_mask - 1, v_range=[ids["v_range"][0], new_mask])
  (out / "config.json").write_text(json.dumps(cfg, indent=1))
  return out
