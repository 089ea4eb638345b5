"""Two real JAX processes on the CPU (4 devices each, gloo collectives): the
sharded frame bank (from the metadata's frame rows, and counted for an older
build) and the sharded example bank load per host, each holding half, and
gather on the global mesh the one-process banks' rows
(``tests/multihost_banks.py``)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

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
