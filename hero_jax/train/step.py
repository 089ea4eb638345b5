"""Train state, its sharded creation, and one jitted train / eval step per objective.

A train step takes ``accum_steps`` micro-batches of one objective (leading
axis), sums their gradients (as the original), applies the optimizer and
returns the new state with the objective's ``(sum, count)`` metrics. If the
loss or any gradient is not finite the update is skipped on device (the
state stays clean, so a non-finite value is never saved) and ``finite`` is
reported for the host to stop the run.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from hero_jax.data import example_bank as example_bank_lib
from hero_jax.data import frame_bank as frame_bank_lib
from hero_jax.model import params as params_lib
from hero_jax.model.hero import Hero
from hero_jax.train import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def create_state(cfg, tx, mesh, rules, seed: int, params=None,
                 offload_opt_state: bool = False) -> TrainState:
  """The state created already sharded (``params`` given: placed, not initialised).

  ``offload_opt_state``: the optimizer state lives in pinned host memory
  (each leaf keeps its sharding, in ``pinned_host``); the train step brings it
  to the device for the update and puts the new one back. Device memory then
  holds parameters and activations only, for two host<->device copies of the
  Adam moments per step. It is created on the device first, then moved.
  """
  shardings = sharding.param_shardings(params_lib.boxed_abstract_variables(cfg), mesh, rules)

  def init(key, given):
    p = given if given is not None else params_lib.init_fn(cfg)(key)
    p = jax.lax.with_sharding_constraint(p, shardings)
    return TrainState(step=jnp.zeros([], jnp.int32), params=p, opt_state=tx.init(p))

  with jax.set_mesh(mesh):
    state = jax.jit(init)(jax.random.key(seed), params)
  if offload_opt_state:
    state = state.replace(opt_state=jax.device_put(
        state.opt_state, _with_memory_kind(state_shardings(state.opt_state), "pinned_host")))
  return state


def _with_memory_kind(shardings, kind: str):
  return jax.tree.map(lambda s: s.with_memory_kind(kind), shardings)


def _device_memory_kind() -> str:
  return jax.devices()[0].default_memory().kind


def state_shardings(state: TrainState):
  return jax.tree.map(lambda x: x.sharding, state)


def _tree_add(a, b):
  return jax.tree.map(jnp.add, a, b)


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def device_batch(batch: dict, banks: dict) -> dict:
  """Inside a jitted step: a batch of ``example_ids`` gathered from the
  example bank, then its ``frame_ids`` from the frame bank (float32 frames)."""
  if "example_ids" in batch:
    batch = example_bank_lib.gather(batch, banks["examples"])
  return frame_bank_lib.device_frames(batch, banks.get("frames"))


def make_train_step(model: Hero, objective, settings, tx, mesh, rules, shardings, accum_steps: int,
                    frame_bank=None, example_bank=None):
  """A jitted ``(state, batch, rng) -> (state, outputs)`` for one objective.

  ``frame_bank``: the device's frame bank (``hero_jax.data.frame_bank``);
  batches with ``frame_ids`` take their frames from it, one micro-batch at a
  time. ``example_bank``: the objective's example bank
  (``hero_jax.data.example_bank``), for batches of ``example_ids``.
  """
  tx = optax.with_extra_args_support(tx)   # any optax transformation; hero_adamw reads grad_norm

  def micro_grads(params, micro_batch, rng, step, banks):
    micro_batch = device_batch(micro_batch, banks)

    def loss_fn(p):
      return objective.loss(model, p, micro_batch, settings, step=step, rng=rng,
                            deterministic=False)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, metrics, grads

  opt_kinds = {s.memory_kind for s in jax.tree.leaves(shardings.opt_state)}
  offloaded = "pinned_host" in opt_kinds

  def step_fn(state: TrainState, batch, rng, banks):
    if offloaded:  # the optimizer state comes to the device for the update
      state = state.replace(opt_state=jax.device_put(
          state.opt_state, _with_memory_kind(shardings.opt_state, _device_memory_kind())))
    rngs = jax.random.split(rng, accum_steps)
    first = jax.tree.map(lambda x: x[0], batch)
    loss, metrics, grads = micro_grads(state.params, first, rngs[0], state.step, banks)
    if accum_steps > 1:
      def body(carry, xs):
        micro, r = xs
        micro_loss, m, g = micro_grads(state.params, micro, r, state.step, banks)
        return _tree_add(carry, (micro_loss, m, g)), None
      rest = jax.tree.map(lambda x: x[1:], batch)
      (loss, metrics, grads), _ = jax.lax.scan(body, (loss, metrics, grads), (rest, rngs[1:]))
    finite = jnp.isfinite(loss) & _all_finite(grads)
    grad_norm = optax.tree.norm(grads)   # once, for clipping and the metrics

    def apply(params, opt_state):
      updates, opt_state = tx.update(grads, opt_state, params, grad_norm=grad_norm)
      return optax.apply_updates(params, updates), opt_state

    # A conditional rather than where(finite, new, old): with a select, XLA
    # fuses the parameter update with a recomputation of the new moments from
    # the old ones, and since the moments are updated in place it keeps a copy
    # of every old moment (and of the clipped gradients) alive: 0.6 GB more
    # temporaries on the base model (benchmarks/train_step.py's temp GiB).
    new_params, opt_state = jax.lax.cond(finite, apply, lambda p, o: (p, o), state.params,
                                         state.opt_state)
    if offloaded:
      opt_state = jax.device_put(opt_state, shardings.opt_state)
    new_state = TrainState(step=state.step + 1, params=new_params,
                           opt_state=opt_state)
    outputs = {"metrics": metrics, "finite": finite, "grad_norm": grad_norm,
               "param_norm": optax.tree.norm(new_state.params)}
    return new_state, outputs

  batch_sharding = sharding.batch_sharding(mesh, leading_axes=1)
  return _compiled_step(step_fn, (shardings, batch_sharding, sharding.replicated(mesh)),
                        (shardings, sharding.replicated(mesh)), mesh, rules,
                        _banks(frame_bank, example_bank), donate_argnums=0)


def make_eval_step(model: Hero, objective, settings, mesh, rules, param_shardings,
                   frame_bank=None):
  """A jitted ``(params, batch, step) -> metrics`` (deterministic, no rng)."""
  def eval_fn(params, batch, step, banks):
    batch = device_batch(batch, banks)
    _, metrics = objective.loss(model, params, batch, settings, step=step, rng=None,
                                deterministic=True)
    return metrics

  return _compiled_step(eval_fn, (param_shardings, sharding.batch_sharding(mesh),
                                  sharding.replicated(mesh)),
                        sharding.replicated(mesh), mesh, rules, _banks(frame_bank))


def _banks(frame_bank, example_bank=None) -> dict:
  return {k: v for k, v in (("frames", frame_bank), ("examples", example_bank)) if v is not None}


def _compiled_step(fn, in_shardings: tuple, out_shardings, mesh, rules, banks: dict, **jit_kw):
  """``run(*args)``: ``fn(*args, banks)`` jitted, under the mesh and the rules.

  The banks are an argument of the compiled step (never constants baked into
  it); without banks ``run.jitted`` takes just ``args``.
  """
  if not banks:
    jitted = jax.jit(lambda *args: fn(*args, {}), in_shardings=in_shardings,
                     out_shardings=out_shardings, **jit_kw)
    bank_args = ()
  else:
    jitted = jax.jit(fn, in_shardings=in_shardings + (jax.tree.map(lambda a: a.sharding, banks),),
                     out_shardings=out_shardings, **jit_kw)
    bank_args = (banks,)

  def run(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(*args, *bank_args)
  run.jitted = jitted
  return run
