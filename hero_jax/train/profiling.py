"""A ``jax.profiler`` trace of chosen training steps (``--config.profile_steps``).

``StepProfiler(logdir, start, num_steps)`` traces the optimizer steps
``start .. start + num_steps - 1`` (0-based, the step about to run, so
``--config.profile_start=10`` skips the first steps, where each objective's
step compiles) into ``logdir`` (the loop uses ``workdir/profile``), each step
inside a ``StepTraceAnnotation("train", step_num=step)`` so TensorBoard's
profile plugin and Perfetto show per-step boundaries. ``num_steps=0`` is off.

Every process traces its own devices: jax writes
``logdir/plugins/profile/<time>/<host>.xplane.pb`` per host, so hosts do not
overwrite each other, and a slow host only shows up in its own trace.

For a ``gs://`` logdir the trace is written to a local temporary folder and
copied through ``etils.epath`` when it stops: the profiler writes with
jaxlib's own file system, which need not reach a bucket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any, ContextManager

import jax
from etils import epath

from hero_jax import paths

log = logging.getLogger("hero_jax")


class StepProfiler:
  """Usage, once per step::

    with profiler.step(step):
      state, out = train_step(state, batch)
    profiler.step_done(step, state)

  and ``profiler.stop()`` when the loop ends (a run shorter than the window,
  or one that failed inside it, still gets its trace written).
  """

  def __init__(self, logdir, start: int, num_steps: int):
    if start < 0 or num_steps < 0:
      raise ValueError(f"profile_start ({start}) and profile_steps ({num_steps}) must be >= 0")
    self.logdir = epath.Path(logdir)
    self.start, self.end = start, start + num_steps
    self.active = self.done = False
    self._tmp = None  # For a remote logdir: the local folder the profiler writes.

  def step(self, step: int) -> ContextManager:
    """Starts the trace at the window's first step (or the first step of a run
    resumed inside the window); annotates traced steps."""
    if not (self.active or self.done) and self.start <= step < self.end:
      if paths.is_remote(self.logdir):
        self._tmp = pathlib.Path(tempfile.mkdtemp(prefix="hero_jax_profile_"))
      jax.profiler.start_trace(os.fspath(self._tmp or self.logdir))
      self.active = True
      log.info("profiling steps %d..%d into %s", step, self.end - 1, self.logdir)
    if not self.active:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def step_done(self, step: int, outputs: Any) -> None:
    """After the window's last step: waits for its device work (dispatch is
    asynchronous, so the trace would otherwise miss it), then writes the trace."""
    if self.active and step + 1 >= self.end:
      jax.block_until_ready(outputs)
      self.stop()

  def stop(self) -> None:
    if not self.active:
      return
    self.active, self.done = False, True
    jax.profiler.stop_trace()
    if self._tmp is not None:
      _copy_tree(self._tmp, self.logdir)
      shutil.rmtree(self._tmp, ignore_errors=True)
      self._tmp = None
    log.info("profile written to %s", self.logdir)


def _copy_tree(src: pathlib.Path, dst: epath.Path) -> None:
  for path in src.rglob("*"):
    if path.is_file():
      target = dst / path.relative_to(src).as_posix()
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(path.read_bytes())
