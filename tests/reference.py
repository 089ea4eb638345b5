"""The fixture's model config and weights, loaded through our converter."""

from __future__ import annotations

import functools

import jax
import numpy as np

from hero_jax import convert
from hero_jax.model.config import HeroConfig
from hero_jax.model.params import abstract_params
from tests import fixture_batches as fb


@functools.lru_cache(maxsize=None)
def original_config() -> HeroConfig:
  """The fixture model as its original JSON (``model_config_pretrain``) says."""
  c = fb.fixture_config()
  return HeroConfig.from_original(
      c["model_config_pretrain"], frame_feat_dim=c["vfeat_dim"],
      max_frame_positions=c["max_frm_seq_len"], fom_num_classes=c["fom_num_classes"])


@functools.lru_cache(maxsize=None)
def model_config() -> HeroConfig:
  """The fixture model as the fixtures ran it: dropout off, MLM logits sliced."""
  return original_config().replace(mlm_vocab_size=fb.fixture_config()["mlm_logit_columns"],
                                   hidden_dropout=0.0, attention_dropout=0.0)


@functools.lru_cache(maxsize=None)
def params(source: str = "npz"):
  """Our params from ``weights.npz`` or ``weights.pt`` (strict: every key used)."""
  path = fb.fixture_dir() / f"weights.{source}"
  out, _ = convert.state_dict_to_params(convert.load_state_dict(path), abstract_params(model_config()),
                                        strict=True)
  return out


def vcmr_state_dict() -> dict:
  """``HeroForVcmr``'s state dict: ``weights.npz``'s encoder + ``weights_vcmr.npz``'s heads."""
  sd = convert.load_state_dict(fb.fixture_dir() / "weights.npz")
  heads = convert.load_state_dict(fb.fixture_dir() / "weights_vcmr.npz")
  unknown = sorted(set(heads) - set(sd))
  if unknown:
    raise ValueError(f"weights_vcmr.npz holds keys HeroForPretraining lacks: {unknown}")
  return {**sd, **heads}


def head_state_dict(heads_file: str) -> dict:
  """An original downstream model's state dict: ``weights.npz``'s encoder + a heads file."""
  sd = convert.load_state_dict(fb.fixture_dir() / "weights.npz")
  encoder = {k: v for k, v in sd.items() if k.startswith("v_encoder.")}
  return {**encoder, **convert.load_state_dict(fb.fixture_dir() / heads_file)}


@functools.lru_cache(maxsize=None)
def videoqa_params():
  out, _ = convert.state_dict_to_params(head_state_dict("weights_videoqa.npz"),
                                        abstract_params(model_config().replace(heads="videoqa")),
                                        strict=True)
  return out


@functools.lru_cache(maxsize=None)
def vcmr_params():
  out, _ = convert.state_dict_to_params(vcmr_state_dict(), abstract_params(model_config()),
                                        strict=True)
  return out


def vsm_settings():
  """VSM settings as the fixtures ran them (``config.json`` ``vsm``)."""
  from hero_jax.objectives import vsm
  c = fb.fixture_config()["vsm"]
  on = c["hard_negative_settings_when_on"]
  return vsm.VsmSettings(lw_st_ed=c["lw_st_ed"], lw_neg_ctx=c["lw_neg_ctx"], lw_neg_q=c["lw_neg_q"],
                         margin=c["margin"], ranking_loss=c["ranking_loss_type"],
                         drop_svmr_prob=c["drop_svmr_prob_at_fixture_time"],
                         hard_pool_size=on["hard_pool_size"], hard_neg_weight=on["hard_neg_weight"])


def assert_same_losses(name: str, batch_a: dict, batch_b: dict) -> None:
  """Objective ``name`` on the fixture model gives the same loss and metrics
  on two batches of the same videos (laid out differently)."""
  from hero_jax.model.hero import Hero
  from hero_jax.objectives import registry
  model, weights, objective = Hero(model_config()), params(), registry.get(name)
  loss_fn = jax.jit(lambda b: objective.loss(model, weights, b, objective.make_settings()))
  loss_a, metrics_a = loss_fn(batch_a)
  loss_b, metrics_b = loss_fn(batch_b)
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5, atol=1e-6)
  for key in metrics_a:
    np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-5, atol=1e-5,
                               err_msg=key)
