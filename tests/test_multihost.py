"""Two real JAX processes on the CPU (4 devices each, gloo collectives): the
sharded frame bank (from the metadata's frame rows, and counted for an older
build) and the sharded example bank load per host, each holding half, and
gather on the global mesh the one-process banks' rows
(``tests/multihost_banks.py``)."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hero_jax.data import build

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_hold_their_share_of_the_sharded_banks(tmp_path):
  data_dir = build.build("hero_synthetic/videos", str(tmp_path / "tfds")).data_dir
  port = free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  procs = [subprocess.Popen([sys.executable, str(REPO / "tests" / "multihost_banks.py"), str(i),
                             str(port), data_dir], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=600)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i}:\n{out[-4000:]}"
    assert f"process {i}: frame bank" in out and out.rstrip().endswith("OK"), out[-2000:]


def launch(args: list, port: int, log_dir: Path) -> list:
  """``python -m hero_jax.main --distributed`` as processes 0 and 1 of 2 (2 CPU
  devices each); returns their logs, asserting both succeeded."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update({"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
              "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"})
  logs = [log_dir / f"process{i}.log" for i in range(2)]
  procs = []
  for i, log in enumerate(logs):
    with open(log, "w") as out:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "hero_jax.main", "--distributed", "--coordinator_address",
           f"localhost:{port}", "--num_processes", "2", "--process_id", str(i), *args],
          env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT))
  try:
    for p in procs:
      p.wait(timeout=600)
  finally:
    for p in procs:
      p.kill()
  texts = [log.read_text() for log in logs]
  for i, (p, text) in enumerate(zip(procs, texts)):
    assert p.returncode == 0, f"process {i}:\n{text[-4000:]}"
  return texts


@pytest.mark.slow
def test_two_processes_train_on_sharded_banks_and_resume(tmp_path):
  """The pod path end to end on one machine: two processes build the embedded
  set once between them, train the device-drawn objectives from sharded
  frame and example banks (each host holding half), checkpoint, and a second
  launch resumes; both processes log the same losses."""
  args = ["--config", "configs/pretrain_tiny.py", "--workdir", str(tmp_path / "run"),
          f"--config.data.datasets.synthetic.data_dir={tmp_path / 'tfds'}",
          "--config.data.synthetic.train_videos=32", "--config.data.synthetic.val_videos=8",
          "--config.objectives.mfm_nce.ratio=0", "--config.objectives.fom.ratio=0",
          "--config.objective_draws=device", "--config.data.frame_bank=sharded",
          "--config.data.example_bank=sharded", "--config.log_every=1", "--config.eval_every=0",
          "--config.checkpoint_every=2"]
  first = launch(args + ["--config.train.num_steps=2"], free_port(), tmp_path)
  for i, text in enumerate(first):
    held, total = re.search(r"frame bank: \d+ videos, (\d+) frames .* this host read and held "
                            r"(\d+) rows", text).group(2, 1)
    assert int(held) < int(total)   # its half (and the zero row)
    assert f"examples made by this process ({i} of 2)" in text
  second = launch(args + ["--config.train.num_steps=3"], free_port(), tmp_path)
  assert all("resumed from checkpoint step 2" in text for text in second)
  losses = [re.findall(r"step \d+/\d+ \S+ loss (\S+)", text) for text in first + second]
  assert losses[0] == losses[1] and losses[2] == losses[3] and len(losses[2]) == 1


def test_process_flags_need_distributed(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "hero_jax.main", "--config", "configs/pretrain_tiny.py",
       "--workdir", str(tmp_path), "--process_id", "1"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert "--coordinator_address, --num_processes and --process_id need --distributed" in (
      done.stderr)
