"""Where a run's weights start: ``config.init_from`` in any of the usual forms.

``init_format`` "auto" tells them apart:

* ``hero_jax``: a folder written by ``python -m hero_jax.convert`` (items
  ``params`` + ``config``);
* ``run``: a hero_jax training workdir (its ``checkpoints/``), a
  ``checkpoints/`` folder or one step of it: the newest step's parameters
  (a pre-trained model to fine-tune);
* ``original``: an original HERO state dict (``.pt``/``.npz``/...; keys
  ``v_encoder.*``), e.g. the released ``hero-tv-ht100.pt`` or a fine-tuned
  VCMR checkpoint, converted on the fly. Heads the checkpoint lacks start
  from HERO's initialisation (the original's non-strict load); keys our model
  lacks are ignored; both are logged by name;
* ``roberta``: HF RoBERTa weights (``roberta.*``), mapped as the original's
  pre-training start.

The model sizes always come from ``config.model``; a checkpoint whose shapes
do not fit it is an error naming the parameter.
"""

from __future__ import annotations

import logging

import jax
from etils import epath

from hero_jax import paths

log = logging.getLogger("hero_jax")

FORMATS = ("auto", "hero_jax", "run", "original", "roberta")


def _architecture(cfg):
  """The config without the fields that do not change the parameters."""
  return cfg.replace(dtype="float32", hidden_dropout=0.0, attention_dropout=0.0,
                     mlm_vocab_size=None)


def run_step_dir(path: epath.Path) -> epath.Path | None:
  """The newest step folder of a training run given its workdir, its
  ``checkpoints/`` folder or a step folder; None if ``path`` is none of these."""
  if (path / "state").is_dir():
    return path
  root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
  steps = sorted((int(p.name), p) for p in root.iterdir() if p.name.isdigit() and (p / "state").is_dir())
  return steps[-1][1] if steps else None


def run_config(path: epath.Path) -> dict:
  """The training config saved with a run's newest checkpoint (as a dict)."""
  import orbax.checkpoint as ocp
  step_dir = run_step_dir(paths.resolve(path))
  if step_dir is None or not (step_dir / "config").is_dir():
    raise FileNotFoundError(f"{path}: no training checkpoint with a saved config")
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir / "config")


def detect_format(path: epath.Path, state_dict=None) -> str:
  if path.is_dir():
    if (path / "params").exists() and (path / "config").exists():
      return "hero_jax"
    if run_step_dir(path) is not None:
      return "run"
    raise ValueError(f"config.init_from {path}: a folder that is neither a converted hero_jax "
                     "checkpoint (params/ + config/) nor a training run (checkpoints/<step>/state)")
  keys = list(state_dict or {})
  if any(k.startswith("v_encoder.") for k in keys):
    return "original"
  if any(k.startswith("roberta.") or k.startswith("embeddings.word_embeddings") for k in keys):
    return "roberta"
  raise ValueError(f"config.init_from {path}: its keys are neither HERO's (v_encoder.*) nor "
                   f"RoBERTa's (roberta.*); first keys: {keys[:5]}")


def _from_run(step_dir: epath.Path):
  """The ``params`` of a training checkpoint step (optimizer state not read)."""
  import orbax.checkpoint as ocp
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(step_dir / "state")
  tree = getattr(tree, "item_metadata", tree)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
  target = {"params": jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                   tree["params"])}
  out = ckptr.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  return jax.device_get(out["params"])


def _fit_run_params(params, cfg, what: str, seed: int, heads_required: bool):
  """A run's params for ``cfg``. Every shared parameter must have the model's
  shape. A run with other heads (a pre-training run starting a video-QA
  fine-tune) gives what the model shares with it: its other heads are dropped
  and the model's own are freshly initialised, as the original's non-strict
  ``load_state_dict``; both are logged."""
  from hero_jax.convert import mapping
  from hero_jax.model.params import abstract_params, init_params
  want = mapping.flatten(abstract_params(cfg))
  got = mapping.flatten(params)
  for p in sorted(set(want) & set(got)):
    if tuple(got[p].shape) != tuple(want[p].shape):
      raise ValueError(f"config.init_from {what}: parameter {mapping.path_str(p)} is "
                       f"{tuple(got[p].shape)}, config.model needs {tuple(want[p].shape)}")
  missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  if not missing and not extra:
    return params
  if missing and heads_required:
    raise ValueError(f"config.init_from {what} lacks {len(missing)} parameters of the model "
                     f"(heads={cfg.heads!r}), e.g. {[mapping.path_str(p) for p in missing[:5]]}")
  if len(missing) + len(extra) > len(want) // 2:  # not the same model: say so, do not guess
    raise ValueError(f"config.init_from {what}: {len(missing)} parameters of config.model are "
                     f"missing and {len(extra)} are extra, e.g. missing "
                     f"{[mapping.path_str(p) for p in missing[:3]]}, extra "
                     f"{[mapping.path_str(p) for p in extra[:3]]}")
  log.info("config.init_from %s: %d parameters dropped (e.g. %s), %d initialised fresh (e.g. %s)",
           what, len(extra), [mapping.path_str(p) for p in extra[:3]], len(missing),
           [mapping.path_str(p) for p in missing[:3]])
  fresh = mapping.flatten(jax.device_get(init_params(cfg, seed)))
  return mapping.unflatten({p: got.get(p, fresh[p]) for p in want})


def load(path, cfg, *, fmt: str = "auto", seed: int = 0, heads_required: bool = False):
  """Params (numpy tree) for ``cfg`` from ``path``; None when ``path`` is empty.

  ``heads_required``: an original checkpoint lacking parameters of the model
  (e.g. QA heads when evaluating) is an error instead of a fresh init.
  """
  if not path:
    return None
  if fmt not in FORMATS:
    raise ValueError(f"config.init_format must be one of {FORMATS}, got {fmt!r}")
  path = paths.resolve(path)
  if not path.exists():
    raise FileNotFoundError(f"config.init_from: {path} does not exist")
  state_dict = None
  if path.is_file():
    from hero_jax.convert import files
    state_dict = files.load_state_dict(path)
  if fmt == "auto":
    fmt = detect_format(path, state_dict)
  if fmt == "hero_jax":
    from hero_jax.convert.checkpoint import load_hero_checkpoint, load_hero_config
    saved = load_hero_config(path)
    if _architecture(saved) != _architecture(cfg):
      raise ValueError(f"config.init_from {path} holds a model with config {saved}, which does "
                       f"not fit config.model ({cfg})")
    return jax.device_get(load_hero_checkpoint(path)[0])
  if fmt == "run":
    return _fit_run_params(_from_run(run_step_dir(path)), cfg, str(path), seed, heads_required)
  if state_dict is None:
    raise ValueError(f"config.init_from {path}: format {fmt!r} needs a checkpoint file")
  if fmt == "roberta":
    from hero_jax.convert import roberta
    params, report = roberta.from_roberta(state_dict, cfg, seed=seed)
    log.info("RoBERTa init from %s: %s", path, report)
    return params
  from hero_jax.convert import mapping
  from hero_jax.model.params import init_params
  params, report = mapping.state_dict_to_params(state_dict, init_params(cfg, seed), strict=False)
  log.info("original HERO checkpoint %s: %s", path, report.summary())
  if heads_required and report.missing:
    raise ValueError(f"config.init_from {path} lacks {len(report.missing)} parameters of the "
                     f"model (heads={cfg.heads!r}), e.g. {report.missing[:5]}: evaluating them "
                     "freshly initialised would give a meaningless result")
  return jax.device_get(params)
