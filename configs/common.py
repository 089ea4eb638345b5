"""Pieces shared by the configs (not a config itself).

``base_config()`` declares every field a run reads, with its default, and
locks the config: recipes and ``--config.a.b=value`` change values, and a
misspelt field is an error naming the closest fields. Every ``HeroConfig``
field is under ``model`` and every registered objective's settings are under
``objectives.<name>`` (ratio 0 = not trained), so any of them can be set from
the command line on any config. ``hero_jax.train.tasks.check_config`` checks
a config against these declarations when a run starts.
"""

import dataclasses

import ml_collections

from hero_jax.data import synthetic
from hero_jax.train import sharding, tasks

# HERO's pre-training mix (the original's mlm : mfm-nce : fom : vsm).
PRETRAINING_RATIOS = {"mlm": 2.0, "mfm_nce": 2.0, "fom": 1.0, "vsm": 2.0}


def model_config(preset: str = "base", **fields) -> ml_collections.ConfigDict:
  """Every ``HeroConfig`` field: a preset's values ('base' | 'tiny') with ``fields`` changed."""
  return tasks.model_config_dict(preset, **fields)


def objectives_config(**ratios) -> ml_collections.ConfigDict:
  """Every registered objective with its default settings; ratio 0 unless given."""
  return tasks.objectives_config_dict(ratios)


def use_objectives(c: ml_collections.ConfigDict, **ratios) -> None:
  """Trains exactly the given objectives (by config key) with these ratios."""
  unknown = sorted(set(ratios) - set(c.objectives))
  if unknown:
    raise ValueError(f"unknown objectives {unknown}; known: {sorted(c.objectives)}")
  for key, entry in c.objectives.items():
    entry.ratio = float(ratios.get(key, 0.0))


def dataset(name: str, data_dir: str = "~/tensorflow_datasets", ratio: float = 1.0,
            videos: str = "") -> dict:
  """An entry of ``config.data.datasets``: a built dataset ``<data_dir>/<name>``
  (``videos``: for a query dataset, the videos dataset its queries refer to)."""
  return {"name": name, "data_dir": data_dir, "ratio": float(ratio), "videos": videos}


def base_config(model: str = "base") -> ml_collections.ConfigDict:
  """Every key a training config has; the recipes override the values."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.mode = "train"  # train | eval
  # Every HeroConfig field; model.dtype 'bfloat16' computes in bf16 while
  # params and optimizer state stay float32.
  c.model = model_config(model)
  # Weights to start from (hero_jax.train.init_from): a converted hero_jax
  # checkpoint folder, a training workdir (its newest checkpoint), an original
  # HERO .pt/.npz, or HF RoBERTa weights; "" = HERO's fresh init.
  c.init_from = ""
  c.init_format = "auto"  # auto | hero_jax | run | original | roberta
  # Data: datasets mixed by ratio (HERO's targets_ratio), keyed by a short
  # name; each is a built videos dataset '<data_dir>/<name>'. The synthetic
  # set is built if missing.
  c.data = ml_collections.ConfigDict({
      "datasets": {"tv": dataset("hero_tv/videos")},
      "train_split": "train",
      "val_split": "val",
      "max_clip_len": 100,
      "worker_count": 2,
      # Threads reading and transforming records in each pipeline process
      # (more contend for the GIL; 0: none, records read when a batch is asked).
      "read_threads": 1,
      # Training frames stored on the devices, batches send only their rows
      # (hero_jax.data.frame_bank): off | replicated | sharded (rows over all devices).
      "frame_bank": "off",
      "frame_bank_dtype": "float16",  # float16 (as stored: exact) | bfloat16
      # The laid-out examples of objectives whose step draws (mlm-device,
      # mfm-nce-device, mffr-device, fom-device, vsm-device) on the devices too,
      # batches send only example indices (hero_jax.data.example_bank; needs
      # the frame bank): off | replicated | sharded.
      "example_bank": "off",
      # Processes that make the example bank at start, CHUNK_RECORDS records per
      # task (-1: one per core; 0: in the main process; a split under two
      # chunks is always made in process).
      "example_bank_workers": -1,
      # Every SyntheticSpec field: the embedded set, built on first use.
      "synthetic": dataclasses.asdict(synthetic.SyntheticSpec()),
  })
  c.layout = ml_collections.ConfigDict({
      "max_frames": 100, "max_rows": 32, "max_row_frames": 16, "max_row_tokens": 61,
      "queries": 5, "max_query_tokens": 61, "max_predictions": 160,
      "answers": 5, "max_qa_tokens": 122,
      # Packed cross-modal rows per pack group of pack_videos videos and their
      # width (0, 0: one row per subtitle, as the original); see "Packed rows"
      # in the README.
      "packed_rows": 0, "packed_width": 0, "pack_videos": 1})
  # pack_queries: with packed rows (layout.packed_rows), VSM's queries share
  # the rows' packed rows instead of running padded beside them.
  c.host = ml_collections.ConfigDict({"max_txt_len": 60, "mask_prob": 0.15, "pack_queries": True})
  # Objectives: key = registry name with '-' written '_'; 'ratio' is the
  # sampling weight (0: not trained), every other key is the objective's setting.
  c.objectives = objectives_config(**PRETRAINING_RATIOS)
  # 'device': each objective with a device-drawn twin (mlm -> mlm_device, ...)
  # trains as that twin, with the ratio given here to the host form; needed
  # by data.example_bank (hero_jax.train.tasks.drawn_objectives).
  c.objective_draws = "host"
  c.objectives.mfm_nce.group_videos = 32
  c.objectives.mfm_nce_device.group_videos = 32   # the device-drawn forms: the same settings
  c.train = ml_collections.ConfigDict({
      "num_steps": 100000,
      "batch_videos": 1024,     # global videos per micro-step
      "accum_steps": 1,         # micro-steps per update (gradients summed, as the original)
      "learning_rate": 3e-5,
      "warmup_steps": 10000,
      "b1": 0.9, "b2": 0.98, "eps": 1e-6,
      "weight_decay": 0.01,
      "grad_clip": 1.0,
      "lr_mul": 1.0,            # lr factor of the parameters outside v_encoder (video QA: 10)
      # Adam moments in pinned host memory, brought to the device for each update
      # (frees device memory for larger batches; costs two copies per step).
      "offload_opt_state": False,
  })
  c.mesh = ml_collections.ConfigDict({
      "shape": {"data": -1, "fsdp": 1, "model": 1},  # one slice's mesh (-1: the rest)
      # Slices (multi-slice TPU) the data axis spans: global data = shape.data x dcn_data;
      # fsdp / model stay inside a slice, where the interconnect is fast.
      "dcn_data": 1,
      # Local devices to use, the first N (0: all); one process only: to debug on one
      # accelerator of a host, or to keep CPU tests off XLA's virtual devices.
      "num_devices": 0,
      "rules": [list(r) for r in sharding.DEFAULT_RULES],
  })
  # Whole-split evaluation of downstream objectives (VCMR: hero_jax.eval.vcmr),
  # every eval_every steps and in mode=eval, on each split in eval.splits.
  c.eval = ml_collections.ConfigDict({
      "splits": ["val"],
      "submission": "",  # "tvr": CodaLab zip (val + test_public) | "how2r": VALUE's format
      "vcmr": {"q2c_alpha": 20.0, "max_vcmr_video": 100, "min_pred_l": 2, "max_pred_l": 16,
               "max_before_nms": 200, "max_after_nms": 100, "nms_thd": 0.5, "video_batch": 50,
               "video_block": 256, "query_batch": 80, "use_desc_type": True},
      "qa_batch": 16,    # questions per evaluation batch (video QA)
  })
  c.log_every = 100
  # jax.profiler trace of optimizer steps profile_start .. profile_start +
  # profile_steps - 1 into workdir/profile (0 = off); the default start skips
  # the first steps, where each objective's step compiles.
  c.profile_steps = 0
  c.profile_start = 10
  c.eval_every = 500
  c.eval_batches = 10
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  # JAX's persistent compilation cache (a folder; "" = off): a restarted run
  # loads its compiled steps instead of compiling them again.
  c.compilation_cache_dir = ""
  c.lock()  # recipes change values; a field that is not declared here is an error
  return c
