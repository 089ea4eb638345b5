"""Checkpoint conversion: original HERO / HF RoBERTa <-> hero_jax (CPU, fast).

Uses the HERO reference fixtures (``$HERO_REFERENCE_FIXTURES``, default
``<repo>/../shared/fixtures/hero_reference``): ``weights.npz`` and
``weights.pt`` are the original ``state_dict`` of a small model; every size
is read from the fixture's ``config.json``.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np
import pytest

from hero_jax.convert import checkpoint, files, mapping, roberta
from hero_jax.convert.__main__ import main as cli_main
from hero_jax.model.config import HeroConfig, padded_vocab_size
from hero_jax.model import params as params_module
from hero_jax.model.params import abstract_params, init_params
from tests import fixture_batches as fb
from tests import reference

F = "v_encoder.f_encoder."


fixture_dir = fb.fixture_dir
fixture_json = fb.fixture_config


def hero_cfg() -> HeroConfig:
  return reference.original_config()


@functools.lru_cache(maxsize=None)
def template():
  return abstract_params(hero_cfg())


def npz_state_dict() -> dict:
  return files.load_state_dict(fixture_dir() / "weights.npz")


@functools.lru_cache(maxsize=None)
def _npz_params():
  params, _ = mapping.state_dict_to_params(npz_state_dict(), template())
  return params


def assert_trees_equal(a, b):
  fa, fb = mapping.flatten(a), mapping.flatten(b)
  assert fa.keys() == fb.keys()
  for path in fa:
    x, y = np.asarray(fa[path]), np.asarray(fb[path])
    assert x.dtype == y.dtype == np.float32, path
    np.testing.assert_array_equal(x, y, err_msg=mapping.path_str(path))


def assert_state_dicts_equal(got: dict, want: dict):
  assert sorted(got) == sorted(want)
  for key in want:
    assert got[key].dtype == want[key].dtype, key
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


# ---------------------------------------------------------------------------
# Key rule
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, module, leaf", [
    (F + "encoder.layer.3.attention.self.query.weight",
     ("v_encoder", "f_encoder", "encoder", "layer_3", "attention", "self", "query"), "weight"),
    ("v_encoder.frame_transform.net.1.bias", ("v_encoder", "frame_transform", "net_1"), "bias"),
    ("v_encoder.fom_output.linear_1.weight", ("v_encoder", "fom_output", "linear_1"), "weight"),
    (F + "lm_head.bias", ("v_encoder", "f_encoder", "lm_head"), "bias"),
])
def test_key_rule_both_ways(key, module, leaf):
  assert mapping.torch_module_path(key) == (module, leaf)
  flax_leaf = {"weight": "kernel", "bias": "bias"}[leaf]
  assert mapping.flax_path_to_torch_key(module + (flax_leaf,)) == key


def test_every_template_path_round_trips_through_its_torch_key():
  for path in mapping.flatten(template()):
    module, _ = mapping.torch_module_path(mapping.flax_path_to_torch_key(path))
    assert module == path[:-1]


# ---------------------------------------------------------------------------
# Original checkpoints
# ---------------------------------------------------------------------------

def test_npz_loads_without_missing_or_unexpected_keys():
  sd = npz_state_dict()
  params, report = mapping.state_dict_to_params(sd, template())
  assert report.ok and not report.cast
  assert sorted(report.dropped) == sorted([F + "lm_head.decoder.weight", F + "pad", "v_encoder.pad"])
  n_params = len(mapping.flatten(template()))
  assert len(report.loaded) == n_params == len(sd) - 3
  # Spot-check the layouts: Dense transposed, Conv1d reversed, the rest as is.
  f = params["v_encoder"]["f_encoder"]
  np.testing.assert_array_equal(f["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"],
                                sd[F + "encoder.layer.0.attention.self.query.weight"].T)
  np.testing.assert_array_equal(params["video_st_predictor"]["kernel"][:, 0, 0],
                                sd["video_st_predictor.weight"][0, 0])
  np.testing.assert_array_equal(f["embeddings"]["LayerNorm"]["scale"],
                                sd[F + "embeddings.LayerNorm.weight"])


def test_pt_loads_and_equals_npz():
  sd = files.load_state_dict(fixture_dir() / "weights.pt")
  assert sd["vocab_padded"] is True
  params, report = mapping.state_dict_to_params(sd, template())
  assert report.ok
  assert "vocab_padded" in report.dropped
  assert_trees_equal(params, _npz_params())


def test_npz_params_state_dict_round_trip_is_exact():
  assert_state_dicts_equal(mapping.params_to_state_dict(_npz_params()), npz_state_dict())


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_params_file_params_round_trip_is_exact(tmp_path, suffix):
  path = files.save_state_dict(mapping.params_to_state_dict(_npz_params()), tmp_path / f"w{suffix}")
  sd = files.load_state_dict(path)
  if suffix == ".pt":
    assert sd["vocab_padded"] is True   # as ModelSaver writes it
  params, report = mapping.state_dict_to_params(sd, template())
  assert report.ok
  assert_trees_equal(params, _npz_params())


def test_pt_file_keeps_the_decoder_tied(tmp_path):
  import torch
  path = files.save_state_dict(mapping.params_to_state_dict(_npz_params()), tmp_path / "w.pt")
  obj = torch.load(path, map_location="cpu", weights_only=True)
  assert obj[F + "lm_head.decoder.weight"].data_ptr() == obj[F + "embeddings.word_embeddings.weight"].data_ptr()


def test_fp16_state_dict_converts_to_float32():
  sd16 = {k: v.astype(np.float16) for k, v in npz_state_dict().items()}
  params, report = mapping.state_dict_to_params(sd16, template())
  assert report.ok
  assert len(report.cast) == len(report.loaded)
  leaves = mapping.flatten(params).values()
  assert all(np.asarray(x).dtype == np.float32 for x in leaves)
  want = mapping.flatten(_npz_params())
  for path, x in mapping.flatten(params).items():
    np.testing.assert_array_equal(x, want[path].astype(np.float16).astype(np.float32))


def test_shape_mismatch_names_the_key():
  sd = npz_state_dict()
  key = "v_encoder.fom_output.linear_2.weight"
  good = sd[key].shape
  sd[key] = np.zeros((good[0] + 1, good[1]), np.float32)
  with pytest.raises(ValueError) as e:
    mapping.state_dict_to_params(sd, template())
  msg = str(e.value)
  assert key in msg and str((good[0] + 1, good[1])) in msg and str(good) in msg


def test_missing_and_unexpected_keys_are_named():
  sd = npz_state_dict()
  missing = "v_encoder.feat_regress.net.3.bias"
  del sd[missing]
  sd["qa_pool.weight"] = np.zeros((1, 4), np.float32)
  with pytest.raises(ValueError) as e:
    mapping.state_dict_to_params(sd, template(), strict=True)
  assert missing in str(e.value) and "qa_pool.weight" in str(e.value)

  # Non-strict needs values for missing keys: an abstract template has none.
  with pytest.raises(ValueError, match="init_params"):
    mapping.state_dict_to_params(sd, template(), strict=False)

  # Any real-valued template works; missing params keep its values.
  filler = {p: np.full(x.shape, 7.0, np.float32) for p, x in mapping.flatten(template()).items()}
  params, report = mapping.state_dict_to_params(sd, mapping.unflatten(filler), strict=False)
  assert report.missing == [missing] and report.unexpected == ["qa_pool.weight"]
  flat = mapping.flatten(params)
  np.testing.assert_array_equal(flat[("v_encoder", "feat_regress", "net_3", "bias")], 7.0)
  want = mapping.flatten(_npz_params())
  np.testing.assert_array_equal(flat[("v_encoder", "feat_regress", "net_3", "kernel")],
                                want[("v_encoder", "feat_regress", "net_3", "kernel")])


def test_untied_decoder_is_an_error():
  sd = npz_state_dict()
  sd[F + "lm_head.decoder.weight"] = sd[F + "lm_head.decoder.weight"] + 1.0
  with pytest.raises(ValueError, match="lm_head.decoder.weight"):
    mapping.state_dict_to_params(sd, template())


def test_legacy_gamma_beta_names():
  sd = npz_state_dict()
  for name in ("weight", "bias"):
    legacy = {"weight": "gamma", "bias": "beta"}[name]
    sd[F + f"embeddings.LayerNorm.{legacy}"] = sd.pop(F + f"embeddings.LayerNorm.{name}")
  params, report = mapping.state_dict_to_params(sd, template())
  assert report.ok and len(report.renamed) == 2
  assert_trees_equal(params, _npz_params())


def test_infer_config_from_shapes_matches_fixture():
  kw = mapping.infer_config_kwargs(npz_state_dict())
  cfg = hero_cfg()
  for name, value in kw.items():
    assert getattr(cfg, name) == value, name


# ---------------------------------------------------------------------------
# orbax checkpoint
# ---------------------------------------------------------------------------

def test_orbax_save_load_is_exact(tmp_path):
  cfg = hero_cfg().replace(mlm_vocab_size=hero_cfg().vocab_size - 3, dtype="bfloat16")
  checkpoint.save_hero_checkpoint(tmp_path / "ck", _npz_params(), cfg, meta={"source": "test"})
  params, cfg2 = checkpoint.load_hero_checkpoint(tmp_path / "ck")
  assert cfg2 == cfg
  assert_trees_equal(params, _npz_params())
  assert checkpoint.load_hero_meta(tmp_path / "ck") == {"source": "test"}
  with pytest.raises(FileExistsError):
    checkpoint.save_hero_checkpoint(tmp_path / "ck", _npz_params(), cfg)
  checkpoint.save_hero_checkpoint(tmp_path / "ck", _npz_params(), cfg, overwrite=True)


def test_orbax_load_onto_a_sharded_target(tmp_path):
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  checkpoint.save_hero_checkpoint(tmp_path / "ck", _npz_params(), hero_cfg())
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec())
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), template())
  params, _ = checkpoint.load_hero_checkpoint(tmp_path / "ck", target=target)
  assert all(x.sharding == sharding for x in jax.tree.leaves(params))
  assert_trees_equal(params, _npz_params())


def test_orbax_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    checkpoint.load_hero_checkpoint(tmp_path / "nope")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="not a hero_jax checkpoint"):
    checkpoint.load_hero_checkpoint(tmp_path / "empty")


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def test_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.pt"):
    files.load_state_dict(tmp_path / "missing.pt")
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match="unknown file extension"):
    files.load_state_dict(tmp_path / "w.h5")
  with pytest.raises(ValueError, match="unknown file extension"):
    files.save_state_dict({}, tmp_path / "w.txt")


# ---------------------------------------------------------------------------
# RoBERTa
# ---------------------------------------------------------------------------

N_SRC_LAYERS = 12
SRC_VOCAB = 317   # not a multiple of 8: padded like 50265 -> 50272


def roberta_cfg() -> HeroConfig:
  base = hero_cfg()
  return base.replace(vocab_size=-(-SRC_VOCAB // 8) * 8, mlm_vocab_size=SRC_VOCAB)


def synthetic_roberta(cfg: HeroConfig, with_lm_head: bool = True) -> dict:
  """HF ``RobertaForMaskedLM`` keys; layer L's tensors are filled with L + 1
  plus noise, so a test can tell which source layer landed where."""
  rng = np.random.default_rng(0)
  h, i = cfg.hidden_size, cfg.intermediate_size

  def t(*shape, base=0.0):
    return (base + rng.normal(size=shape)).astype(np.float32)
  e = "roberta.embeddings."
  sd = {e + "word_embeddings.weight": t(SRC_VOCAB, h),
        e + "position_embeddings.weight": t(cfg.max_position_embeddings, h),
        e + "token_type_embeddings.weight": t(1, h),
        e + "LayerNorm.weight": t(h), e + "LayerNorm.bias": t(h),
        e + "position_ids": np.arange(cfg.max_position_embeddings)[None],
        "roberta.pooler.dense.weight": t(h, h), "roberta.pooler.dense.bias": t(h)}
  for layer in range(N_SRC_LAYERS):
    p = f"roberta.encoder.layer.{layer}."
    shapes = {"attention.self.query": (h, h), "attention.self.key": (h, h),
              "attention.self.value": (h, h), "attention.output.dense": (h, h),
              "intermediate.dense": (i, h), "output.dense": (h, i)}
    for name, shape in shapes.items():
      sd[p + name + ".weight"] = t(*shape, base=1000.0 * (layer + 1))
      sd[p + name + ".bias"] = t(shape[0], base=1000.0 * (layer + 1))
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      sd[p + name + ".weight"] = t(h, base=1000.0 * (layer + 1))
      sd[p + name + ".bias"] = t(h, base=1000.0 * (layer + 1))
  if with_lm_head:
    sd.update({"lm_head.dense.weight": t(h, h), "lm_head.dense.bias": t(h),
               "lm_head.layer_norm.weight": t(h), "lm_head.layer_norm.bias": t(h),
               "lm_head.bias": t(SRC_VOCAB),
               "lm_head.decoder.weight": sd[e + "word_embeddings.weight"].copy()})
    sd["lm_head.decoder.bias"] = sd["lm_head.bias"].copy()
  return sd


def write_roberta(sd: dict, path: Path) -> Path:
  if path.suffix == ".safetensors":
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path))
  else:
    import torch
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, path)
  return path


@pytest.fixture(scope="module")
def roberta_base_params():
  return init_params(roberta_cfg(), seed=0)


@pytest.mark.parametrize("n_target, want", [
    (6, [1, 3, 5, 7, 9, 11]), (4, [2, 5, 8, 11]), (2, [5, 11]), (5, [1, 3, 5, 7, 9]),
    (12, list(range(12))), (7, list(range(7)))])
def test_layer_selection_matches_hero_rule(n_target, want):
  assert list(roberta.select_layers(12, n_target)) == want
  assert list(roberta.select_layers(12, n_target).values()) == list(range(n_target))
  assert list(roberta.select_layers(12, n_target, skip_layers=False)) == list(range(n_target))


def test_layer_selection_needs_enough_layers():
  with pytest.raises(ValueError, match="cannot fill"):
    roberta.select_layers(3, 6)


def test_roberta_config_pads_the_vocab():
  cfg = roberta.roberta_config(synthetic_roberta(roberta_cfg()), hero_cfg())
  assert cfg == roberta_cfg()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_roberta_mapping(tmp_path, roberta_base_params, suffix):
  cfg = roberta_cfg()
  src = synthetic_roberta(cfg)
  sd = roberta.load_roberta_state_dict(write_roberta(src, tmp_path / f"roberta{suffix}"))
  params, report = roberta.from_roberta(sd, cfg, seed=0, base_params=roberta_base_params)
  f = params["v_encoder"]["f_encoder"]
  layer_map = roberta.select_layers(N_SRC_LAYERS, cfg.cross_layers)
  assert report.layer_map == layer_map
  for s, d in layer_map.items():
    got = f["encoder"][f"layer_{d}"]
    want = f"roberta.encoder.layer.{s}."
    np.testing.assert_array_equal(got["attention"]["self"]["query"]["kernel"],
                                  src[want + "attention.self.query.weight"].T)
    np.testing.assert_array_equal(got["output"]["LayerNorm"]["scale"], src[want + "output.LayerNorm.weight"])
    np.testing.assert_array_equal(got["intermediate"]["dense"]["bias"], src[want + "intermediate.dense.bias"])
  skipped = {k for k, _ in report.skipped}
  unused_layers = set(range(N_SRC_LAYERS)) - set(layer_map)
  assert {f"roberta.encoder.layer.{s}.output.dense.weight" for s in unused_layers} <= skipped

  # Vocabulary zero-padded to a multiple of 8.
  word = f["embeddings"]["word_embeddings"]["embedding"]
  assert word.shape == (cfg.vocab_size, cfg.hidden_size)
  np.testing.assert_array_equal(word[:SRC_VOCAB], src["roberta.embeddings.word_embeddings.weight"])
  np.testing.assert_array_equal(word[SRC_VOCAB:], 0.0)
  np.testing.assert_array_equal(f["embeddings"]["position_embeddings"]["embedding"],
                                src["roberta.embeddings.position_embeddings.weight"])
  np.testing.assert_array_equal(f["pooler"]["dense"]["kernel"], src["roberta.pooler.dense.weight"].T)

  # Two type rows, both RoBERTa's row 0.
  types = f["embeddings"]["token_type_embeddings"]["embedding"]
  row0 = src["roberta.embeddings.token_type_embeddings.weight"][0]
  np.testing.assert_array_equal(types[0], row0)
  np.testing.assert_array_equal(types[1], row0)

  # Clip-level mask embedding row 0 zeroed; the frame-level one keeps its init.
  mask = params["v_encoder"]["mask_embedding"]["embedding"]
  np.testing.assert_array_equal(mask[0], 0.0)
  np.testing.assert_array_equal(mask[1], np.asarray(roberta_base_params["v_encoder"]["mask_embedding"]["embedding"])[1])
  assert np.any(f["img_embeddings"]["mask_embedding"]["embedding"][0] != 0)

  # The original does not load HF's lm_head: PyTorch default init for dense.
  assert "lm_head.dense.weight" in skipped
  dense = f["lm_head"]["dense"]["kernel"]
  bound = 1.0 / np.sqrt(cfg.hidden_size)
  assert np.abs(dense).max() <= bound and not np.allclose(dense, src["lm_head.dense.weight"].T)
  np.testing.assert_array_equal(f["lm_head"]["bias"], 0.0)
  # Everything else is the fresh init.
  np.testing.assert_array_equal(params["v_encoder"]["c_encoder"]["pooler"]["dense"]["kernel"],
                                roberta_base_params["v_encoder"]["c_encoder"]["pooler"]["dense"]["kernel"])
  assert "v_encoder.c_encoder.pooler.dense.weight" in report.initialised
  assert F + "embeddings.token_type_embeddings.weight" not in report.initialised
  assert all(np.asarray(x).dtype == np.float32 for x in mapping.flatten(params).values())


def test_roberta_load_lm_head_option(roberta_base_params):
  cfg = roberta_cfg()
  src = synthetic_roberta(cfg)
  params, report = roberta.from_roberta(src, cfg, load_lm_head=True, base_params=roberta_base_params)
  head = params["v_encoder"]["f_encoder"]["lm_head"]
  np.testing.assert_array_equal(head["dense"]["kernel"], src["lm_head.dense.weight"].T)
  np.testing.assert_array_equal(head["LayerNorm"]["scale"], src["lm_head.layer_norm.weight"])
  np.testing.assert_array_equal(head["bias"][:SRC_VOCAB], src["lm_head.bias"])
  np.testing.assert_array_equal(head["bias"][SRC_VOCAB:], 0.0)


def test_roberta_without_prefix_and_without_skip(roberta_base_params):
  cfg = roberta_cfg()
  src = {k.removeprefix("roberta."): v for k, v in synthetic_roberta(cfg, with_lm_head=False).items()}
  params, report = roberta.from_roberta(src, cfg, skip_layers=False, base_params=roberta_base_params)
  assert report.layer_map == {i: i for i in range(cfg.cross_layers)}
  np.testing.assert_array_equal(
      params["v_encoder"]["f_encoder"]["encoder"]["layer_0"]["output"]["dense"]["kernel"],
      src["encoder.layer.0.output.dense.weight"].T)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def write_model_json(tmp_path) -> Path:
  path = tmp_path / "hero_pretrain.json"
  path.write_text(json.dumps(fixture_json()["model_config_pretrain"]))
  return path


@pytest.mark.parametrize("src_name", ["weights.pt", "weights.npz"])
def test_cli_from_hero_to_hero_round_trip(tmp_path, capsys, src_name):
  src = fixture_dir() / src_name
  ck, out_pt, out_npz = tmp_path / "ck", tmp_path / "back.pt", tmp_path / "back.npz"
  assert cli_main(["from-hero", "--src", str(src), "--model-config", str(write_model_json(tmp_path)),
                   "--out", str(ck)]) == 0
  assert "loaded" in capsys.readouterr().out
  params, cfg = checkpoint.load_hero_checkpoint(ck)
  assert cfg == hero_cfg()
  assert_trees_equal(params, _npz_params())
  assert cli_main(["to-hero", "--src", str(ck), "--out", str(out_pt)]) == 0
  assert cli_main(["to-hero", "--src", str(ck), "--out", str(out_npz)]) == 0
  want = npz_state_dict()
  assert_state_dicts_equal(files.load_state_dict(out_npz), want)
  back = files.load_state_dict(out_pt)
  assert back.pop("vocab_padded") is True
  assert_state_dicts_equal(back, want)


def test_cli_from_hero_infers_sizes_from_shapes(tmp_path):
  # No model JSON: everything but the head count comes from the shapes, and
  # without the JSON's vocabulary every row of the table is an MLM column.
  ck = tmp_path / "ck"
  heads = str(hero_cfg().num_attention_heads)
  assert cli_main(["from-hero", "--src", str(fixture_dir() / "weights.npz"), "--num-heads", heads,
                   "--out", str(ck)]) == 0
  cfg = checkpoint.load_hero_config(ck)
  assert cfg == hero_cfg().replace(mlm_vocab_size=None)


def test_cli_errors(tmp_path, capsys):
  assert cli_main(["from-hero", "--src", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2
  assert "nope.pt" in capsys.readouterr().err
  assert cli_main(["from-hero", "--src", str(tmp_path / "w.xyz"), "--out", str(tmp_path / "o")]) == 2
  assert "unknown file extension" in capsys.readouterr().err
  assert cli_main(["to-hero", "--src", str(tmp_path), "--out", str(tmp_path / "w.txt")]) == 2
  assert "unknown file extension" in capsys.readouterr().err


def test_cli_from_roberta(tmp_path, monkeypatch, roberta_base_params):
  cfg = roberta_cfg()

  # The fresh init is init_params(cfg, seed); reuse the module's one (same
  # config and seed) instead of compiling it again.
  def cached_init(cfg_, seed):
    assert (cfg_, seed) == (cfg, 0)
    return roberta_base_params
  monkeypatch.setattr(params_module, "init_params", cached_init)
  src = write_roberta(synthetic_roberta(cfg), tmp_path / "roberta.safetensors")
  ck = tmp_path / "ck"
  argv = ["from-roberta", "--src", str(src), "--model-config", str(write_model_json(tmp_path)),
          "--frame-feat-dim", str(cfg.frame_feat_dim), "--max-frame-positions",
          str(cfg.max_frame_positions), "--fom-num-classes", str(cfg.fom_num_classes), "--out", str(ck)]
  assert cli_main(argv) == 0
  params, cfg2 = checkpoint.load_hero_checkpoint(ck)
  assert cfg2 == cfg
  word = np.asarray(params["v_encoder"]["f_encoder"]["embeddings"]["word_embeddings"]["embedding"])
  np.testing.assert_array_equal(word[SRC_VOCAB:], 0.0)


# ---------------------------------------------------------------------------
# Vocabulary padding (the original's pad_vocab)
# ---------------------------------------------------------------------------

def original_model_json(tmp_path, vocab: int) -> Path:
  """The fixture's original JSON config with ``vocab`` tokens."""
  d = copy.deepcopy(fixture_json()["model_config_pretrain"])
  for part in ("f_config", "q_config"):
    d[part]["vocab_size"] = vocab
  path = tmp_path / f"hero_{vocab}.json"
  path.write_text(json.dumps(d))
  return path


def original_state_dict(vocab: int, seed: int = 0) -> dict:
  """What the original saves for the fixture's model built with ``vocab``
  tokens: the table padded to a multiple of 8 with zero rows (pad_vocab)."""
  cfg = hero_cfg().replace(vocab_size=padded_vocab_size(vocab), mlm_vocab_size=None)
  rng = np.random.default_rng(seed)
  params = {path: rng.normal(size=x.shape).astype(np.float32)
            for path, x in mapping.flatten(abstract_params(cfg)).items()}
  word = ("v_encoder", "f_encoder", "embeddings", "word_embeddings", "embedding")
  bias = ("v_encoder", "f_encoder", "lm_head", "bias")
  params[word][vocab:] = 0.0
  params[bias][vocab:] = 0.0
  return mapping.params_to_state_dict(mapping.unflatten(params))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".pt", ".npz"])
@pytest.mark.parametrize("vocab", [320, 500, 50265])
def test_any_vocab_converts_and_round_trips(tmp_path, vocab, suffix):
  padded = padded_vocab_size(vocab)
  sd = original_state_dict(vocab)
  assert sd[F + "embeddings.word_embeddings.weight"].shape[0] == padded
  src = files.save_state_dict(sd, tmp_path / f"original{suffix}")
  ck = tmp_path / "ck"
  assert cli_main(["from-hero", "--src", str(src), "--model-config",
                   str(original_model_json(tmp_path, vocab)), "--out", str(ck)]) == 0
  params, cfg = checkpoint.load_hero_checkpoint(ck)
  # The table has the padded rows, the MLM head the JSON's columns.
  assert cfg.vocab_size == padded and cfg.mlm_columns == vocab
  assert cfg.mlm_vocab_size == (vocab if vocab % 8 else None)
  want, _ = mapping.state_dict_to_params(sd, abstract_params(cfg))
  assert_trees_equal(params, want)
  out = tmp_path / f"back{suffix}"
  assert cli_main(["to-hero", "--src", str(ck), "--out", str(out)]) == 0
  back = files.load_state_dict(out)
  if suffix == ".pt":
    assert back.pop("vocab_padded") is True
  assert_state_dicts_equal(back, sd)
  # Without the JSON: the rows from the shapes, every row an MLM column.
  assert cli_main(["from-hero", "--src", str(src), "--num-heads", str(cfg.num_attention_heads),
                   "--out", str(tmp_path / "ck2")]) == 0
  assert checkpoint.load_hero_config(tmp_path / "ck2") == cfg.replace(mlm_vocab_size=None)


def test_original_config_pads_the_vocab_as_the_original():
  for vocab, rows, columns in [(50265, 50272, 50265), (50272, 50272, 50272), (500, 504, 500),
                               (320, 320, 320)]:
    d = copy.deepcopy(fixture_json()["model_config_pretrain"])
    d["f_config"]["vocab_size"] = vocab
    cfg = HeroConfig.from_original(d)
    assert (cfg.vocab_size, cfg.mlm_columns) == (rows, columns), vocab


def test_vocab_mismatch_between_config_and_checkpoint_is_named(tmp_path, capsys):
  src = files.save_state_dict(original_state_dict(500), tmp_path / "w.npz")
  assert cli_main(["from-hero", "--src", str(src), "--model-config",
                   str(original_model_json(tmp_path, 320)), "--out", str(tmp_path / "ck")]) == 2
  err = capsys.readouterr().err
  assert "504 rows" in err and "320" in err


def test_to_hero_pads_an_unpadded_vocab(tmp_path):
  """A hero_jax model with 317 tokens is written as the original saves it:
  320 rows, the 3 new ones zero, the decoder still tied."""
  vocab = 317
  sd = original_state_dict(padded_vocab_size(vocab))
  for key in (F + "embeddings.word_embeddings.weight", F + "lm_head.decoder.weight", F + "lm_head.bias"):
    sd[key] = sd[key][:vocab]
  cfg = hero_cfg().replace(vocab_size=vocab, mlm_vocab_size=None)
  params, _ = mapping.state_dict_to_params(sd, abstract_params(cfg))
  checkpoint.save_hero_checkpoint(tmp_path / "ck", params, cfg)
  assert cli_main(["to-hero", "--src", str(tmp_path / "ck"), "--out", str(tmp_path / "w.pt")]) == 0
  back = files.load_state_dict(tmp_path / "w.pt")
  assert back.pop("vocab_padded") is True
  for key in (F + "embeddings.word_embeddings.weight", F + "lm_head.decoder.weight", F + "lm_head.bias"):
    assert back[key].shape[0] == padded_vocab_size(vocab), key
    np.testing.assert_array_equal(back[key][:vocab], sd[key])
    np.testing.assert_array_equal(back[key][vocab:], 0.0)
  _, report = mapping.state_dict_to_params(
      back, abstract_params(cfg.replace(vocab_size=padded_vocab_size(vocab))))
  assert report.ok


@pytest.mark.parametrize("encoder", ["h_trm", "f_trm"])
def test_baseline_encoders_convert_both_ways(tmp_path, capsys, encoder):
  """H-TRM / F-TRM checkpoints (hero_jax.model.baselines) go out in the
  original's names and come back exactly, the encoder read from the keys."""
  import jax
  from hero_jax.model.config import tiny_config
  from hero_jax.model.params import init_params
  cfg = tiny_config(encoder=encoder, vocab_size=320, num_attention_heads=4)
  params = jax.device_get(init_params(cfg, 0))
  checkpoint.save_hero_checkpoint(tmp_path / "ck", params, cfg)
  assert cli_main(["to-hero", "--src", str(tmp_path / "ck"), "--out", str(tmp_path / "w.npz")]) == 0
  assert f"encoder '{encoder}', a baseline" in capsys.readouterr().out
  sd = files.load_state_dict(tmp_path / "w.npz")
  assert mapping.infer_encoder(sd) == encoder
  assert cli_main(["from-hero", "--src", str(tmp_path / "w.npz"), "--num-heads", "4",
                   "--out", str(tmp_path / "back")]) == 0
  back, back_cfg = checkpoint.load_hero_checkpoint(tmp_path / "back")
  assert back_cfg.encoder == encoder
  assert back_cfg.f_encoder_layers == cfg.f_encoder_layers
  assert (back_cfg.temporal_layers == cfg.temporal_layers) == (encoder == "h_trm")
  assert_trees_equal(back, params)


def test_infer_encoder_from_the_modules_present():
  sd = npz_state_dict()
  assert mapping.infer_encoder(sd) == "hero"
  assert mapping.infer_encoder({k: v for k, v in sd.items() if ".c_encoder." not in k}) == "f_trm"
  assert mapping.infer_encoder({k: v for k, v in sd.items() if ".img_embeddings." not in k}) == "h_trm"
  assert mapping.infer_encoder({"qa_pool.weight": np.zeros(1)}) is None


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_videoqa_checkpoint_converts_both_ways(tmp_path, suffix):
  """HeroForVideoQA (``weights_videoqa.npz`` heads on the encoder): the heads
  are recognised from the keys, and the round trip is exact."""
  import jax
  sd = reference.head_state_dict("weights_videoqa.npz")
  src = files.save_state_dict(sd, tmp_path / f"qa{suffix}")
  ck, back = tmp_path / "ck", tmp_path / f"back{suffix}"
  assert cli_main(["from-hero", "--src", str(src), "--model-config", str(write_model_json(tmp_path)),
                   "--out", str(ck)]) == 0
  params, cfg = checkpoint.load_hero_checkpoint(ck)
  assert cfg.heads == "videoqa" and "qa_pool" in params and "q_feat_attn" not in params
  assert_trees_equal(params, jax.device_get(reference.videoqa_params()))
  assert cli_main(["to-hero", "--src", str(ck), "--out", str(back)]) == 0
  out = files.load_state_dict(back)
  if suffix == ".pt":
    assert out.pop("vocab_padded") is True
  assert_state_dicts_equal(out, sd)
