#!/usr/bin/env bash
# The accelerator check, as one prepared run (about 9 minutes at most): the
# pre-training step's MFU in bfloat16 on the base model, per objective and for
# the 2:2:1:2 mix, then the knobs that matter there (the CPU's dot form,
# remat, scan), each under its own time limit so that one slow compile cannot
# eat the rest.
#
#   bash benchmarks/accelerator.sh                 # on the accelerator machine
#   MODELS=tiny BATCH=8 STEPS=1 bash benchmarks/accelerator.sh   # its plumbing, on a CPU
#
# It runs from the repository root with PYTHONPATH=. (no install) against the
# JAX, Flax and Optax the machine has. Wheels in .whl/ (for a machine without
# network, e.g. ml_collections, the one package hero_jax's step needs that a
# stock JAX GPU image lacks) are installed first:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
# Logs go to $OUT when it is set (else /tmp/hero_accelerator).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/hero_accelerator}"
mkdir -p "$OUT"
MODELS="${MODELS:-base}"
BATCH="${BATCH:-64}"
STEPS="${STEPS:-5}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/hero_site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/hero_site:${PYTHONPATH:-}"
fi
export PYTHONPATH=".:${PYTHONPATH:-}"

{
  date -u
  nvidia-smi -L 2>/dev/null || true
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__); print(jax.devices())"
} 2>&1 | tee "$OUT/environment.txt"

# name, time limit (s), train_step.py arguments
run() {
  local name="$1" limit="$2"
  shift 2
  echo "== $name: train_step.py $*" | tee "$OUT/$name.log"
  timeout "$limit" "$PY" benchmarks/train_step.py --models $MODELS --dtype bfloat16 \
      --batch "$BATCH" --steps "$STEPS" --pack 96 --pack_videos 8 --group_predictions -1 "$@" \
      2>&1 | grep -v "^WARNING" | tee -a "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/$name.log"
}

# The figure the issue asks for: MFU over the mix, bf16, packed rows.
run mix 300 --objectives mlm mfm-nce fom vsm vsm-device
# model.bf16_dots: auto is XLA's own dots off the CPU; the CPU's form, for comparison.
run f32_accumulate 90 --objectives mlm --bf16_dots f32_accumulate
# Activation memory against recompute, and scan's compile time.
run remat_dots 90 --objectives mlm vsm --remat dots
run scan 60 --objectives mlm --scan
