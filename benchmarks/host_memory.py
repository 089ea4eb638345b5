"""Host memory over a long tiny run: RSS every 100 steps, flat after warm-up?

  python benchmarks/host_memory.py                      # 2000 steps, 2 data workers
  python benchmarks/host_memory.py --steps 500 --workers 0

Runs ``python -m hero_jax.main --config configs/pretrain_tiny.py`` as a user
does (evaluation every 500 steps, checkpoints every 500) and samples the
resident memory of the run and its data workers (the whole process tree,
from ``/proc``) each time a metrics line for a multiple of 100 steps lands
in ``metrics.jsonl``. Prints every sample and the spread after warm-up:
the largest deviation from the mean of the samples from ``--warmup`` on
(the README's figure: within +-5%). The original
HERO's loader leaked until the host ran out of memory (its issue #30).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss_mb(pid: int) -> float:
  """Resident memory of ``pid`` and all its descendants, MB."""
  children: dict = {}
  rss: dict = {}
  for entry in Path("/proc").iterdir():
    if not entry.name.isdigit():
      continue
    try:
      stat = (entry / "stat").read_text()
      statm = (entry / "statm").read_text().split()
    except OSError:
      continue  # it ended meanwhile
    ppid = int(stat[stat.rindex(")") + 2:].split()[1])
    children.setdefault(ppid, []).append(int(entry.name))
    rss[int(entry.name)] = int(statm[1]) * PAGE
  total, todo = 0, [pid]
  while todo:
    p = todo.pop()
    total += rss.get(p, 0)
    todo += children.get(p, [])
  return total / 2**20


def logged_steps(metrics: Path) -> list:
  if not metrics.exists():
    return []
  steps = []
  for line in metrics.read_text().splitlines():
    try:
      steps.append(json.loads(line)["step"])
    except (ValueError, KeyError):
      continue  # a line being written
  return steps


def _slope(xs, ys) -> float:
  """Least-squares slope: a leak shows as a steady rise, whatever the noise."""
  if len(xs) < 2:
    return 0.0
  mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
  return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--every", type=int, default=100)
  # Warm-up: the first evaluation and checkpoint (step 500) build their pipelines and buffers.
  parser.add_argument("--warmup", type=int, default=1000, help="first step of the flatness window")
  parser.add_argument("--workers", type=int, default=2)
  args = parser.parse_args()
  tmp = Path(tempfile.mkdtemp(prefix="hero_mem_"))
  workdir = tmp / "run"
  command = [sys.executable, "-m", "hero_jax.main", "--config", "configs/pretrain_tiny.py",
             "--workdir", str(workdir), f"--config.train.num_steps={args.steps}",
             f"--config.log_every={args.every}", "--config.eval_every=500",
             "--config.checkpoint_every=500", f"--config.data.worker_count={args.workers}",
             f"--config.data.datasets.synthetic.data_dir={tmp / 'tfds'}"]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  start = time.time()
  proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=open(tmp / "log.txt", "w"))
  samples: dict = {}
  while proc.poll() is None:
    for step in logged_steps(workdir / "metrics.jsonl"):
      if step % args.every == 0 and step not in samples:
        samples[step] = tree_rss_mb(proc.pid)
        print(f"step {step:5d}  RSS {samples[step]:8.1f} MB  ({time.time() - start:6.0f} s)",
              flush=True)
    time.sleep(0.2)
  if proc.returncode != 0:
    sys.exit(f"the run failed (rc {proc.returncode}); log: {tmp / 'log.txt'}")
  window = [mb for step, mb in sorted(samples.items()) if step >= args.warmup]
  if not window:
    sys.exit(f"no samples from step {args.warmup} on (run more --steps)")
  mean = sum(window) / len(window)
  worst = max(abs(mb / mean - 1) for mb in window)
  steps = [step for step in sorted(samples) if step >= args.warmup]
  slope = _slope(steps, window) * 1000
  print(f"\n{len(samples)} samples; from step {args.warmup}: min {min(window):.1f} MB, "
        f"max {max(window):.1f} MB, mean {mean:.1f} MB, every sample within "
        f"{100 * worst:.1f}% of the mean ({'flat: within 5%' if worst <= 0.05 else 'NOT flat'}); "
        f"trend {slope:+.1f} MB per 1000 steps")
  print(f"first sample {samples[min(samples)]:.1f} MB, last {samples[max(samples)]:.1f} MB; "
        f"{args.workers} data workers; {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
