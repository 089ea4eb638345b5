#!/usr/bin/env bash
# Start a hero_jax run on every worker of a TPU VM (single host or pod slice).
#
#   TPU_NAME=hero-v4-64 ZONE=us-central2-b ACCELERATOR=v4-64 \
#   CONFIG=configs/pretrain_tv.py WORKDIR=gs://my-bucket/runs/hero_tv \
#   ./launch_tpu.sh --config.data.datasets.tv.data_dir=gs://my-bucket/tfds
#
# Variables (required unless a default is shown):
#   TPU_NAME      name of the TPU VM; created if it does not exist
#   ZONE          its zone
#   ACCELERATOR   accelerator type for creation, e.g. v4-8, v5litepod-64 (only when creating)
#   RUNTIME       TPU software version for creation (default: tpu-ubuntu2204-base)
#   PROJECT       GCP project (default: gcloud's configured project)
#   CONFIG        config file (default: configs/pretrain_tv.py)
#   WORKDIR       run folder every worker sees: a gs://bucket/folder (checkpoints, metrics,
#               TensorBoard events and results are written there; the TPU VM's service account
#               needs write access) or a shared mount (NFS / Filestore / gcsfuse)
#   REPO_URL      git URL to clone on the workers (default: this checkout's origin)
#   BRANCH        branch or commit to run (default: this checkout's HEAD commit)
# The built TFDS data must be readable by every worker: a gs:// folder or a shared mount; pass
# it in the extra arguments as --config.data.datasets.<key>.data_dir=<path>.
# Preemption: the TPU VM sends SIGTERM to every process; each run saves a checkpoint in
# WORKDIR and exits 0, and running this script again resumes from it.
# Extra arguments are passed to `python -m hero_jax.main` unchanged.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR}"
CONFIG="${CONFIG:-configs/pretrain_tv.py}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
REPO_URL="${REPO_URL:-$(git config --get remote.origin.url)}"
BRANCH="${BRANCH:-$(git rev-parse HEAD)}"
PROJECT_ARGS=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_ARGS=(--project "$PROJECT"); fi

tpu() { gcloud compute tpus tpu-vm "$@" --zone "$ZONE" "${PROJECT_ARGS[@]}"; }

if ! tpu describe "$TPU_NAME" >/dev/null 2>&1; then
  : "${ACCELERATOR:?TPU $TPU_NAME does not exist: set ACCELERATOR to create it}"
  echo "creating $TPU_NAME ($ACCELERATOR)"
  tpu create "$TPU_NAME" --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
fi

EXTRA=$(printf ' %q' "$@")
# Same steps on every worker: fetch the code, install as the README says, run.
# --distributed makes each process call jax.distributed.initialize().
tpu ssh "$TPU_NAME" --worker=all --command "
  set -euo pipefail
  if [[ ! -d hero_jax ]]; then git clone '$REPO_URL' hero_jax; fi
  cd hero_jax && git fetch --all -q && git checkout -q '$BRANCH'
  python3 -m venv ~/hero_venv && . ~/hero_venv/bin/activate
  pip install -q -U pip && pip install -q -e '.[gcs]' 'jax[tpu]>=0.10.2,<0.11'
  nohup python -m hero_jax.main --config '$CONFIG' --workdir '$WORKDIR' --distributed $EXTRA \
    > ~/hero_run.log 2>&1 &
  echo \"worker \$(hostname): started, log in ~/hero_run.log\"
"
