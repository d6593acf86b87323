"""Training loops on optax: one jit-compiled step, many steps as a ``lax.scan``.

Every loop takes an ``optax.GradientTransformation`` (it never builds one) and a
loss ``loss_fn(params, batch) -> scalar``. Batch over seeds or widths of equal
shape with ``jax.vmap`` around these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any
LossFn = Callable[[PyTree, Any], jax.Array]


# For programs compiled once and run once (most lecture experiments): on a CPU, XLA's backend
# optimization passes then take longer than the program runs. ``jax.jit(f, compiler_options=
# QUICK_COMPILE)`` skips them; the operations are the same and results agree to float32
# round-off. Long training loops keep the default, optimizing, passes.
QUICK_COMPILE = {"xla_backend_optimization_level": 0}


class TrainState(NamedTuple):
    """Parameters and optimizer state carried through the scan."""

    params: PyTree
    opt_state: optax.OptState


def init_state(params: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
    """Initial ``TrainState`` for ``params``."""
    return TrainState(params, optimizer.init(params))


def make_step(loss_fn: LossFn, optimizer: optax.GradientTransformation):
    """One optimizer step: ``value_and_grad -> optimizer.update -> apply_updates``.

    Returns:
        ``step(state, batch) -> (new_state, loss)``, where ``loss`` is the loss at
        the parameters *before* the update.
    """

    def step(state: TrainState, batch) -> tuple[TrainState, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state), loss

    return step


def fit(
    loss_fn: LossFn,
    params: PyTree,
    optimizer: optax.GradientTransformation,
    data,
    *,
    steps: int,
    record_every: int = 1,
) -> tuple[PyTree, jax.Array]:
    """Full-batch training for ``steps`` steps.

    Args:
        loss_fn: ``loss_fn(params, data) -> scalar``.
        params: initial parameters.
        optimizer: an optax gradient transformation.
        data: the whole training set, passed to ``loss_fn`` at every step.
        steps: number of optimizer steps (a multiple of ``record_every``).
        record_every: record the loss every ``record_every`` steps.

    Returns:
        Final parameters and the recorded losses, shape ``(steps // record_every,)``;
        entry ``k`` is the loss before step ``k * record_every``.
    """
    if steps % record_every:
        raise ValueError(f"steps={steps} is not a multiple of record_every={record_every}")
    step = make_step(loss_fn, optimizer)

    def block(state, _):
        def inner(s, _):
            return step(s, data)

        state, losses = jax.lax.scan(inner, state, None, length=record_every)
        return state, losses[0]

    state, losses = jax.lax.scan(block, init_state(params, optimizer), None, length=steps // record_every)
    return state.params, losses


def fit_minibatch(
    loss_fn: LossFn,
    params: PyTree,
    optimizer: optax.GradientTransformation,
    data: tuple,
    *,
    steps: int,
    batch_size: int,
    key: jax.Array,
) -> tuple[PyTree, jax.Array]:
    """SGD-style training on minibatches drawn uniformly with replacement.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``; ``batch`` has the same
            structure as ``data`` with leading dimension ``batch_size``.
        params: initial parameters.
        optimizer: an optax gradient transformation.
        data: tuple of arrays sharing their leading dimension ``n``.
        steps: number of optimizer steps.
        batch_size: examples per step.
        key: randomness for the minibatch indices.

    Returns:
        Final parameters and the minibatch loss at every step, shape ``(steps,)``.
    """
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    step = make_step(loss_fn, optimizer)
    keys = jax.random.split(key, steps)

    def body(state, k):
        idx = jax.random.randint(k, (batch_size,), 0, n)
        batch = jax.tree_util.tree_map(lambda a: a[idx], data)
        return step(state, batch)

    state, losses = jax.lax.scan(body, init_state(params, optimizer), keys)
    return state.params, losses


def trajectory(
    loss_fn: LossFn,
    params: PyTree,
    optimizer: optax.GradientTransformation,
    data,
    *,
    steps: int,
    observe: Callable[[PyTree], Any],
    record_every: int = 1,
    record_last: bool = False,
) -> tuple[PyTree, Any]:
    """Full-batch training that records ``observe(params)`` every ``record_every`` steps.

    Useful when the quantity of interest is not the loss (a distance to a
    reference point, a Hessian eigenvalue, a kernel). Observation ``k`` is
    taken before step ``k * record_every``, so the first one is at
    initialization. Two nested ``lax.scan``s: the outer records, the inner trains.

    Args:
        loss_fn: ``loss(params, data) -> scalar``.
        params: initial parameters.
        optimizer: an optax gradient transformation.
        data: the full batch, passed to ``loss_fn`` unchanged.
        steps: number of optimizer steps, a multiple of ``record_every``.
        observe: ``observe(params) -> pytree`` of arrays.
        record_every: steps between observations.
        record_last: also observe the final parameters, after the last step
            (leading axis ``steps // record_every + 1``).

    Returns:
        Final parameters and the stacked observations (leading axis
        ``steps // record_every``, plus one with ``record_last``).
    """
    if steps % record_every:
        raise ValueError(f"steps={steps} is not a multiple of record_every={record_every}")
    step = make_step(loss_fn, optimizer)

    def train(state, _):
        state, _ = step(state, data)
        return state, None

    def record(state, _):
        obs = observe(state.params)
        state, _ = jax.lax.scan(train, state, None, length=record_every)
        return state, obs

    state, obs = jax.lax.scan(record, init_state(params, optimizer), None, length=steps // record_every)
    if record_last:
        obs = jax.tree_util.tree_map(lambda o, last: jnp.concatenate([o, last[None]]), obs, observe(state.params))
    return state.params, obs


def squared_loss(apply_fn: Callable) -> LossFn:
    """``loss(params, (x, y)) = mean((apply_fn(params, x) - y)**2) / 2``."""

    def loss(params, batch):
        x, y = batch
        return 0.5 * jnp.mean((apply_fn(params, x) - y) ** 2)

    return loss
