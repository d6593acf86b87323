"""Week 6: mean-field theory of two-layer networks.

A two-layer network of width ``N`` is an average over ``N`` particles
``theta_j = (a_j, w_j)`` (a neuron: an output weight and an input weight vector)::

    f(x) = alpha_N * sum_j a_j * relu(w_j . x),

with ``alpha_N = 1/N`` in the *mean-field* scaling and ``alpha_N = 1/sqrt(N)``
in the *NTK* scaling. Gradient descent on the squared risk with learning rate
``eta * N**(2 * gamma - 1)`` (where ``alpha_N = N**-gamma``) moves the function at
an ``N``-independent speed in both scalings; the particles, however, move at speed
``O(1)`` in the mean-field scaling and ``O(N**-1/2)`` in the NTK scaling.

In the mean-field scaling the particle ODE
``d theta_j / dt = -grad_theta Psi(theta_j; rho_t)``,
``Psi(theta; rho) = E_x[(f_rho(x) - y(x)) * a * relu(w . x)]``,
does not depend on ``N``: the empirical measure ``rho_N = (1/N) sum_j delta_theta_j``
follows the Wasserstein gradient flow of the risk (Mei, Montanari & Nguyen 2018;
Chizat & Bach 2018; Rotskoff & Vanden-Eijnden 2018; Sirignano & Spiliopoulos 2020).

The task used throughout is a planted ("teacher") network on the unit circle:
inputs ``x`` on ``S^1`` (equispaced, so the empirical risk is a quadrature of the
population risk) and ``y(x) = sum_k c_k relu(u_k . x)`` with a few unit vectors
``u_k``. Low-dimensional inputs let us draw every particle.

The lecture calls the ``run_*`` functions with their defaults; the tests call them
at tiny sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlcourse import train as train_lib

SCALINGS = {"mean-field": 1.0, "ntk": 0.5}
"""Exponent ``gamma`` of the output scale ``alpha_N = N**-gamma`` of each scaling."""


# ---------------------------------------------------------------------------
# The task and the particles
# ---------------------------------------------------------------------------


class Particles(NamedTuple):
    """The neurons of a two-layer network: ``N`` particles ``theta_j = (a_j, w_j)``."""

    a: jax.Array  # (N,) output weights
    w: jax.Array  # (N, d) input weights


class Task(NamedTuple):
    """Inputs on the unit circle and the outputs of a planted teacher network."""

    x: jax.Array  # (n, 2) unit vectors
    y: jax.Array  # (n,) teacher outputs
    teacher: Particles  # c_k in .a, unit vectors u_k in .w


def unit_vectors(angles) -> jax.Array:
    """Points ``(cos t, sin t)`` of the unit circle, shape ``(len(angles), 2)``."""
    angles = jnp.asarray(angles, dtype=jnp.float32)
    return jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def teacher_task(
    *,
    n: int = 64,
    angles: Sequence[float] = (0.5, 2.4, 4.3),
    weights: Sequence[float] = (1.0, -1.0, 1.0),
) -> Task:
    """The planted task ``y(x) = sum_k c_k relu(u_k . x)`` on ``n`` equispaced circle points.

    The inputs ``x_i = (cos t_i, sin t_i)``, ``t_i = 2 pi (i + 1/2) / n``, make the
    empirical risk the trapezoidal quadrature of the population risk for
    ``x ~ Uniform(S^1)``. No two teacher directions should be (nearly) antipodal:
    ``relu(z) - relu(-z) = z`` would make the teacher's measure non-identifiable.

    Args:
        n: number of inputs.
        angles: directions ``u_k = (cos angle_k, sin angle_k)`` of the teacher's neurons.
        weights: the teacher's output weights ``c_k``.

    Returns:
        A ``Task`` with ``x`` of shape ``(n, 2)`` and ``y`` of shape ``(n,)``.
    """
    x = unit_vectors(2 * np.pi * (np.arange(n) + 0.5) / n)
    u = unit_vectors(angles)
    c = jnp.asarray(weights, dtype=jnp.float32)
    y = jax.nn.relu(x @ u.T) @ c
    return Task(x=x, y=y, teacher=Particles(a=c, w=u))


def init_particles(width: int, *, key: jax.Array, dim: int = 2, scale: float = 1.0) -> Particles:
    """I.i.d. particles from the initial measure ``rho_0``.

    ``a_j = scale * s_j`` with a random sign ``s_j``, and ``w_j = scale * u_j`` with
    ``u_j`` uniform on the unit sphere ``S^{d-1}``. The initialization is *balanced*
    (``|a_j| = |w_j|``), a property gradient flow preserves for ReLU (see
    ``balance``).

    Args:
        width: number of particles ``N``.
        key: randomness (split into a sign key and a direction key).
        dim: input dimension ``d``.
        scale: ``|a_j| = |w_j| = scale``.

    Returns:
        ``Particles`` with ``a`` of shape ``(N,)`` and ``w`` of shape ``(N, d)``.
    """
    sign_key, dir_key = jax.random.split(key)
    signs = jax.random.rademacher(sign_key, (width,), dtype=jnp.float32)
    u = jax.random.normal(dir_key, (width, dim))
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    return Particles(a=scale * signs, w=scale * u)


def quadrature_particles(width: int, *, scale: float = 1.0) -> Particles:
    """A deterministic discretization of the same ``rho_0`` (``d = 2``).

    Directions on the equispaced grid ``t_j = 2 pi (j + 1/2) / N`` with alternating
    signs ``(-1)^j``: integrals against ``rho_0`` become trapezoidal sums, whose error
    for the piecewise-smooth integrands met here falls like ``N**-2`` instead of the
    Monte Carlo ``N**-1/2``. Run through the same particle ODE, these particles give
    the mean-field limit ``rho_t`` to an accuracy no random draw of equal size can
    reach (a Lagrangian discretization of the continuity equation).

    Args:
        width: number of particles (even).
        scale: ``|a_j| = |w_j| = scale``.
    """
    if width % 2:
        raise ValueError(f"width={width} must be even (signs alternate)")
    angles = 2 * np.pi * (np.arange(width) + 0.5) / width
    signs = np.where(np.arange(width) % 2 == 0, 1.0, -1.0)
    return Particles(
        a=jnp.asarray(scale * signs, dtype=jnp.float32), w=scale * unit_vectors(angles)
    )


# ---------------------------------------------------------------------------
# The network in both scalings
# ---------------------------------------------------------------------------


def output_scale(width: int, scaling: str) -> float:
    """``alpha_N = N**-gamma``: ``1/N`` (mean-field) or ``1/sqrt(N)`` (NTK)."""
    return float(width) ** -SCALINGS[scaling]


def scaled_lr(width: int, scaling: str, lr: float) -> float:
    """Step size ``eta * N**(2 gamma - 1)`` that makes ``eta`` a step of time ``t``.

    With it the function moves at an ``N``-independent speed in both scalings:
    ``df/dt = -E_x'[K_N(x, x') (f(x') - y(x'))]`` with the tangent kernel
    ``K_N = (1/N) sum_j grad_theta sigma(x; theta_j) . grad_theta sigma(x'; theta_j)``.
    Mean-field: ``eta * N``; NTK: ``eta``.
    """
    return lr * float(width) ** (2 * SCALINGS[scaling] - 1)


def apply_one(params: Particles, x: jax.Array, *, scaling: str = "mean-field") -> jax.Array:
    """``f(x) = alpha_N sum_j a_j relu(w_j . x)`` for one input ``x`` of shape ``(d,)``."""
    alpha = output_scale(params.a.shape[0], scaling)
    return alpha * (params.a @ jax.nn.relu(params.w @ x))


def apply(params: Particles, xs: jax.Array, *, scaling: str = "mean-field") -> jax.Array:
    """``apply_one`` vmapped over the inputs ``xs`` of shape ``(n, d)``; returns ``(n,)``."""
    return jax.vmap(lambda x: apply_one(params, x, scaling=scaling))(xs)


def risk(params: Particles, batch: tuple, *, scaling: str = "mean-field") -> jax.Array:
    """Empirical risk ``(1/2n) sum_i (f(x_i) - y_i)^2``."""
    x, y = batch
    return 0.5 * jnp.mean((apply(params, x, scaling=scaling) - y) ** 2)


def velocity(params: Particles, task: Task) -> Particles:
    """Mean-field velocity field ``v(theta) = -grad_theta Psi(theta; rho_N)`` at every particle.

    ``Psi(theta; rho) = E_x[(f_rho(x) - y(x)) a relu(w . x)]`` is the first variation
    of the risk; ``v(theta_j) = -N grad_{theta_j} R`` in the mean-field scaling. The
    energy identity of a Wasserstein gradient flow, ``dR/dt = -int |v|^2 d rho``,
    is checked against it in the tests. Written in closed form (not by ``jax.grad``):

        v_a = -E_x[(f(x) - y(x)) relu(w . x)],
        v_w = -E_x[(f(x) - y(x)) a 1[w . x > 0] x],

    with ``E_x`` the mean over the task's inputs and ``f`` the mean-field network.
    """
    residual = apply(params, task.x) - task.y  # (n,)
    pre = task.x @ params.w.T  # (n, N)
    v_a = -jnp.mean(residual[:, None] * jax.nn.relu(pre), axis=0)
    gate = residual[:, None] * (pre > 0).astype(pre.dtype)  # (n, N)
    v_w = -params.a[:, None] * (gate.T @ task.x) / task.x.shape[0]
    return Particles(a=v_a, w=v_w)


def tangent_kernel(params: Particles, xs: jax.Array) -> jax.Array:
    """Tangent kernel ``K(x, x') = (1/N) sum_j grad sigma(x; theta_j) . grad sigma(x'; theta_j)``.

    For ``sigma(x; a, w) = a relu(w . x)``:
    ``grad sigma = (relu(w . x), a 1[w . x > 0] x)``, so
    ``K(x, x') = (1/N) sum_j [relu(w_j.x) relu(w_j.x') + a_j^2 1[w_j.x>0] 1[w_j.x'>0] x.x']``.
    It is the same kernel in both scalings with the step sizes of ``scaled_lr``.

    Returns:
        The ``(n, n)`` Gram matrix on ``xs``.
    """
    pre = xs @ params.w.T  # (n, N)
    act = jax.nn.relu(pre)
    gate = (pre > 0).astype(xs.dtype) * params.a[None, :]  # (n, N): a_j 1[w_j.x > 0]
    width = params.a.shape[0]
    return (act @ act.T + (gate @ gate.T) * (xs @ xs.T)) / width


def balance(params: Particles) -> jax.Array:
    """``a_j^2 - |w_j|^2`` per particle: conserved by gradient flow for ReLU.

    ``d a^2/dt = -2 a E[(f - y) relu(w.x)]`` and ``d |w|^2/dt = -2 a E[(f - y)
    relu'(w.x) w.x]`` agree because ``relu'(z) z = relu(z)``.
    """
    return params.a**2 - jnp.sum(params.w**2, axis=1)


def init_output_std(width, *, scale: float = 1.0, dim: int = 2):
    """Seed-to-seed standard deviation of ``f(x)`` at ``t = 0`` in the mean-field scaling.

    ``f(x) = (1/N) sum_j a_j relu(w_j . x)`` is an average of ``N`` i.i.d. terms of
    mean zero (random signs) and second moment
    ``scale^4 E[relu(u . x)^2] = scale^4 / (2 d)`` for ``|x| = 1``, ``u`` uniform
    on ``S^{d-1}`` (``E[(u.x)^2] = 1/d``, half of it on ``u.x > 0``), so

        std f(x) = scale^2 / sqrt(2 d N).
    """
    return scale**2 / np.sqrt(2 * dim * np.asarray(width, dtype=float))


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


class Trajectory(NamedTuple):
    """A training run recorded every ``record_every`` steps (and at the end)."""

    times: jax.Array  # (R,) t = step * eta
    losses: jax.Array  # (R,) risk at those times
    observed: Any  # pytree, leading axis R: observe(params) at those times
    final: Particles  # parameters after the last step


def train(
    params: Particles,
    task: Task,
    *,
    scaling: str = "mean-field",
    lr: float = 0.1,
    steps: int = 400,
    record_every: int = 10,
    observe: Callable[[Particles], Any] | None = None,
) -> Trajectory:
    """Full-batch gradient descent on the risk, time measured in units of ``eta``.

    One step is ``theta <- theta - eta N^{2 gamma - 1} grad R(theta)`` (optax SGD,
    ``dlcourse.train.make_step``); the steps run in a ``lax.scan``. In the
    mean-field scaling this is the Euler scheme of the particle ODE
    ``d theta_j/dt = -grad Psi(theta_j; rho_N)``, whose right-hand side does not
    depend on ``N``.

    Args:
        params: initial particles.
        task: inputs and targets.
        scaling: ``"mean-field"`` or ``"ntk"``.
        lr: time step (the learning rate ``eta`` before the width scaling).
        steps: number of steps (a multiple of ``record_every``).
        record_every: steps between records.
        observe: ``observe(params)`` recorded with the loss (default: outputs on ``task.x``).

    Returns:
        A ``Trajectory`` with ``R = steps // record_every + 1`` records, the first at
        ``t = 0`` and the last at ``t = steps * eta``.
    """
    if steps % record_every:
        raise ValueError(f"steps={steps} is not a multiple of record_every={record_every}")
    if observe is None:
        def observe(p):
            return apply(p, task.x, scaling=scaling)

    width = params.a.shape[0]
    optimizer = optax.sgd(scaled_lr(width, scaling, lr))
    loss_fn = lambda p, batch: risk(p, batch, scaling=scaling)  # noqa: E731
    data = (task.x, task.y)
    final, (losses, observed) = train_lib.trajectory(
        loss_fn, params, optimizer, data, steps=steps, record_every=record_every, record_last=True,
        observe=lambda p: (loss_fn(p, data), observe(p)),
    )
    times = lr * record_every * jnp.arange(steps // record_every + 1)
    return Trajectory(times=times, losses=losses, observed=observed, final=final)


def displacement(start: Particles, end: Particles) -> jax.Array:
    """Mean particle displacement ``(1/N) sum_j |theta_j(T) - theta_j(0)|``, ``theta = (a, w)``."""
    sq = (end.a - start.a) ** 2 + jnp.sum((end.w - start.w) ** 2, axis=1)
    return jnp.mean(jnp.sqrt(sq))


# ---------------------------------------------------------------------------
# Experiments
# ---------------------------------------------------------------------------


class MeanFieldLimitResult(NamedTuple):
    """The ``N -> infinity`` dynamics from quadrature particles."""

    times: np.ndarray  # (R,)
    losses: np.ndarray  # (R,)
    outputs: np.ndarray  # (R, n) f(x_i, t)
    displacement: float  # mean |theta_j(T) - theta_j(0)|
    kernel_change: float  # |K_T - K_0|_F / |K_0|_F


def run_mean_field_limit(
    *,
    width: int = 8192,
    scale: float = 1.0,
    lr: float = 0.1,
    steps: int = 400,
    record_every: int = 10,
    task: Task | None = None,
) -> MeanFieldLimitResult:
    """Mean-field limit of the risk curve, from ``quadrature_particles``.

    Deterministic (no key): the initial measure is discretized on a grid, so the
    remaining error is a quadrature error, far below the ``N**-1/2`` Monte Carlo
    fluctuations of any random network in the width sweep.

    Args:
        width: number of quadrature particles ``M`` (even).
        scale: initialization scale, as in ``init_particles``.
        eta, steps, record_every: see ``train``.
        task: the task (default ``teacher_task()``).

    Returns:
        A ``MeanFieldLimitResult``: the risk and outputs of the limit at the record
        times, and its mean particle displacement and relative kernel change at
        the end (the ``N -> infinity`` values of ``run_width_sweep``'s measures).
    """
    task = teacher_task() if task is None else task
    p0 = quadrature_particles(width, scale=scale)
    traj = jax.jit(lambda p: train(p, task, lr=lr, steps=steps, record_every=record_every))(p0)
    k0, k1 = tangent_kernel(p0, task.x), tangent_kernel(traj.final, task.x)
    return MeanFieldLimitResult(
        times=np.asarray(traj.times),
        losses=np.asarray(traj.losses),
        outputs=np.asarray(traj.observed),
        displacement=float(displacement(p0, traj.final)),
        kernel_change=float(jnp.linalg.norm(k1 - k0) / jnp.linalg.norm(k0)),
    )


class WidthSweepResult(NamedTuple):
    """Training runs for several widths, ``seeds`` independent networks per width."""

    scaling: str
    widths: np.ndarray  # (W,)
    times: np.ndarray  # (R,)
    losses: np.ndarray  # (W, S, R)
    output_mean: np.ndarray  # (W, R, n) mean over seeds of f(x_i, t)
    output_std: np.ndarray  # (W, R) seed-to-seed std of f(x, t), RMS over the inputs
    displacement: np.ndarray  # (W, S) mean |theta_j(T) - theta_j(0)|
    kernel_change: np.ndarray  # (W, S) |K_T - K_0|_F / |K_0|_F


def run_width_sweep(
    *,
    key: jax.Array,
    widths: Sequence[int] = (16, 64, 256, 1024, 4096),
    n_seeds: int = 16,
    scaling: str = "mean-field",
    scale: float = 1.0,
    lr: float = 0.1,
    steps: int = 400,
    record_every: int = 10,
    task: Task | None = None,
) -> WidthSweepResult:
    """Train ``seeds`` networks of each width (``vmap`` over seeds) in one scaling.

    Measures, per width ``N``: the risk curves ``R_N(t)``; the seed-to-seed
    fluctuation ``[mean_x Var_seeds f_N(x, t)]^{1/2}``, predicted ``~ N**-1/2`` in
    the mean-field scaling (exactly ``scale^2 / sqrt(2 d N)`` at ``t = 0``, see
    ``init_output_std``); the mean particle displacement, predicted ``O(1)``
    (mean-field) or ``~ N**-1/2`` (NTK); and the relative change of the tangent
    kernel, with the same predictions.

    Args:
        key: randomness, split into one key per width, then one per seed.
        widths: the widths ``N`` (one compiled program each).
        n_seeds: networks per width (at least 2).
        scaling: ``"mean-field"`` or ``"ntk"``.
        scale: initialization scale (``init_particles``).
        eta, steps, record_every: see ``train``.
        task: the task (default ``teacher_task()``).

    Returns:
        A ``WidthSweepResult``.

    References:
        Mei, Montanari & Nguyen (2018), arXiv:1804.06561; Rotskoff &
        Vanden-Eijnden (2018), arXiv:1805.00915; Chizat, Oyallon & Bach (2019),
        arXiv:1812.07956.
    """
    task = teacher_task() if task is None else task
    width_keys = jax.random.split(key, len(widths))
    out = {k: [] for k in ("losses", "mean", "std", "disp", "kern")}
    for width, width_key in zip(widths, width_keys):

        def one(k, width=width):
            p0 = init_particles(width, key=k, dim=task.x.shape[1], scale=scale)
            traj = train(p0, task, scaling=scaling, lr=lr, steps=steps, record_every=record_every)
            k0, k1 = tangent_kernel(p0, task.x), tangent_kernel(traj.final, task.x)
            kern = jnp.linalg.norm(k1 - k0) / jnp.linalg.norm(k0)
            return traj.losses, traj.observed, displacement(p0, traj.final), kern

        losses, outputs, disp, kern = jax.jit(jax.vmap(one))(jax.random.split(width_key, n_seeds))
        out["losses"].append(np.asarray(losses))
        out["mean"].append(np.asarray(outputs.mean(axis=0)))
        out["std"].append(np.sqrt(np.asarray(outputs.var(axis=0, ddof=1).mean(axis=-1))))
        out["disp"].append(np.asarray(disp))
        out["kern"].append(np.asarray(kern))
    times = lr * record_every * np.arange(steps // record_every + 1)
    return WidthSweepResult(
        scaling=scaling,
        widths=np.asarray(widths),
        times=times,
        losses=np.stack(out["losses"]),
        output_mean=np.stack(out["mean"]),
        output_std=np.stack(out["std"]),
        displacement=np.stack(out["disp"]),
        kernel_change=np.stack(out["kern"]),
    )


def collapse_deviation(sweep: WidthSweepResult, limit: MeanFieldLimitResult) -> np.ndarray:
    """``sup_t |R_N(t) - R_infinity(t)|`` per width and seed, shape ``(W, S)``.

    Predicted ``~ N**-1/2``: ``R_N - R_inf = E_x[(f_inf - y) delta f] + E_x[delta f^2]/2``
    with ``delta f = O(N**-1/2)`` of mean zero.
    """
    return np.max(np.abs(sweep.losses - limit.losses[None, None, :]), axis=-1)


class ParticleCloudResult(NamedTuple):
    """Snapshots of one network's particles, for drawing."""

    times: np.ndarray  # (R,)
    losses: np.ndarray  # (R,)
    a: np.ndarray  # (R, N)
    w: np.ndarray  # (R, N, 2)
    teacher: Particles


def run_particle_cloud(
    *,
    key: jax.Array,
    width: int = 512,
    scale: float = 0.2,
    lr: float = 0.1,
    steps: int = 400,
    record_every: int = 5,
    task: Task | None = None,
) -> ParticleCloudResult:
    """One mean-field network on the teacher task, every particle recorded.

    A small initialization (``scale = 0.2``) makes the picture of Chizat & Bach (2018)
    clean: the particles ``|a_j| w_j`` leave a small circle and gather on the rays of
    the teacher's neurons, positive ``a_j`` on the teacher's positive neurons,
    negative on the negative one. The prediction: the signed mass
    ``(1/N) sum a_j |w_j|`` near each teacher direction ``u_k`` tends to ``c_k``
    (``mass_near``).

    Args:
        key: randomness of the initial particles.
        width: number of particles ``N``.
        scale: initialization scale.
        eta, steps, record_every: see ``train``.
        task: the task (default ``teacher_task()``).

    Returns:
        A ``ParticleCloudResult`` with every particle at every record time.

    References:
        Chizat & Bach (2018), arXiv:1805.09545.
    """
    task = teacher_task() if task is None else task
    p0 = init_particles(width, key=key, dim=2, scale=scale)
    traj = jax.jit(
        lambda p: train(p, task, lr=lr, steps=steps, record_every=record_every, observe=lambda q: q)
    )(p0)
    return ParticleCloudResult(
        times=np.asarray(traj.times),
        losses=np.asarray(traj.losses),
        a=np.asarray(traj.observed.a),
        w=np.asarray(traj.observed.w),
        teacher=task.teacher,
    )


def angular_mass(a, w, bins: int = 72):
    """Signed mass of the measure per direction: ``sum_j (1/N) a_j |w_j|`` in angular bins.

    For ReLU, ``a relu(w . x) = a |w| relu(w/|w| . x)``: a particle contributes to
    the function only through its direction and its *mass* ``a |w|``. The teacher
    is the measure ``sum_k c_k delta_{u_k}``.

    Args:
        a: output weights, shape ``(..., N)``.
        w: input weights, shape ``(..., N, 2)``.
        bins: number of equal bins on ``[0, 2 pi)``.

    Returns:
        ``(edges, mass)`` with ``mass`` of shape ``(..., bins)`` (sums, not densities).
    """
    a, w = np.asarray(a), np.asarray(w)
    angle = np.mod(np.arctan2(w[..., 1], w[..., 0]), 2 * np.pi)
    mass = a * np.linalg.norm(w, axis=-1) / a.shape[-1]
    edges = np.linspace(0.0, 2 * np.pi, bins + 1)
    idx = np.clip(np.digitize(angle, edges) - 1, 0, bins - 1)
    n = a.shape[-1]
    rows = [
        np.bincount(i, weights=m, minlength=bins)
        for i, m in zip(idx.reshape(-1, n), mass.reshape(-1, n))
    ]
    return edges, np.stack(rows).reshape(a.shape[:-1] + (bins,))


def mass_near(a, w, angles, *, radius: float = 0.25) -> np.ndarray:
    """Signed mass ``(1/N) sum_j a_j |w_j|`` of the particles within ``radius`` of each angle.

    If the network's measure has converged to the teacher's, the mass near ``u_k``
    equals ``c_k``.
    """
    a, w = np.asarray(a), np.asarray(w)
    angle = np.arctan2(w[:, 1], w[:, 0])
    mass = a * np.linalg.norm(w, axis=-1) / a.shape[0]
    out = []
    for t in np.asarray(angles):
        gap = np.abs(np.angle(np.exp(1j * (angle - t))))
        out.append(mass[gap < radius].sum())
    return np.asarray(out)


# ---------------------------------------------------------------------------
# Optimal transport in one dimension
# ---------------------------------------------------------------------------


def w2_gaussian_1d(m0: float, s0: float, m1: float, s1: float) -> float:
    """``W_2(N(m0, s0^2), N(m1, s1^2)) = sqrt((m0 - m1)^2 + (s0 - s1)^2)``."""
    return float(np.sqrt((m0 - m1) ** 2 + (s0 - s1) ** 2))


def w2_empirical_1d(x0, x1) -> jax.Array:
    """``W_2`` between two empirical measures of equal size on the line.

    In one dimension the optimal plan is monotone: sort both samples and pair
    them in order, ``W_2^2 = (1/n) sum_i (x0_(i) - x1_(i))^2``.
    """
    return jnp.sqrt(jnp.mean((jnp.sort(x0) - jnp.sort(x1)) ** 2))


def displacement_interpolation(quantile0, quantile1, s, levels):
    """McCann's interpolant between two measures on the line, as quantile functions.

    The optimal map is ``T = F_1^{-1} o F_0``; the geodesic ``rho_s = ((1 - s) id +
    s T)_# rho_0`` has quantile function ``(1 - s) F_0^{-1} + s F_1^{-1}``.

    Args:
        quantile0, quantile1: quantile functions (callables on ``(0, 1)``).
        s: interpolation time in ``[0, 1]``.
        levels: probability levels in ``(0, 1)``.

    Returns:
        The quantiles of ``rho_s`` at ``levels``.
    """
    return (1 - s) * quantile0(levels) + s * quantile1(levels)


def gaussian_mixture_1d(means: Sequence[float], sds: Sequence[float], weights: Sequence[float]):
    """Density and quantile function of a Gaussian mixture on the line.

    The quantile function is the numerical inverse of the CDF on a fine grid
    (monotone interpolation), accurate to the grid spacing.

    Returns:
        ``(pdf, quantile)``, two callables on numpy arrays.
    """
    from scipy.stats import norm

    means, sds = np.asarray(means, float), np.asarray(sds, float)
    weights = np.asarray(weights, float) / np.sum(weights)

    def pdf(x):
        x = np.asarray(x, float)[..., None]
        return np.sum(weights * norm.pdf(x, means, sds), axis=-1)

    grid = np.linspace((means - 8 * sds).min(), (means + 8 * sds).max(), 20001)
    cdf = np.sum(weights * norm.cdf(grid[:, None], means, sds), axis=-1)

    def quantile(u):
        return np.interp(u, cdf, grid)

    return pdf, quantile


def interpolate_measures_1d(pdf0, quantile0, pdf1, quantile1, s_values, grid):
    """Two paths from ``rho_0`` to ``rho_1``: the mixture and McCann's displacement interpolation.

    Mixture (the straight line of the flat geometry): ``(1 - s) rho_0 + s rho_1``,
    mass fades out here and in there. Displacement (the ``W_2`` geodesic): the
    quantile function ``Q_s = (1 - s) Q_0 + s Q_1`` and the density
    ``rho_s(Q_s(u)) = 1 / Q_s'(u)``, mass moves.

    Returns:
        ``(mixture, displacement)``, each of shape ``(len(s_values), len(grid))``.
    """
    levels = np.linspace(1e-5, 1 - 1e-5, 20001)
    mix, disp = [], []
    for s in s_values:
        mix.append((1 - s) * pdf0(grid) + s * pdf1(grid))
        q = displacement_interpolation(quantile0, quantile1, s, levels)
        density = 1.0 / np.gradient(q, levels)
        disp.append(np.interp(grid, q, density, left=0.0, right=0.0))
    return np.stack(mix), np.stack(disp)


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


def draw_particles(ax, a, w, teacher: Particles, *, title: str | None = None):
    """Scatter the particles ``|a_j| w_j`` with the teacher's neurons as rays.

    For ReLU, ``a relu(w . x) = (a |w|) relu(w/|w| . x)``: the direction of the
    point is the neuron's direction and (for balanced particles, ``|a| = |w|``)
    its distance from the origin is ``|a_j w_j|``, the neuron's weight in ``f``
    times ``N``. Blue: ``a_j > 0``; vermillion: ``a_j < 0``. Teacher neurons: black
    dashed rays, marked with their sign.

    Returns:
        The axes.
    """
    from dlcourse.plotting import PALETTE, THEORY_COLOR

    a, w = np.asarray(a), np.asarray(w)
    pts = np.abs(a)[:, None] * w
    lim = 1.1 * np.max(np.abs(pts))
    for c, u in zip(np.asarray(teacher.a), np.asarray(teacher.w)):
        ax.plot([0, 2 * lim * u[0]], [0, 2 * lim * u[1]], ls="--", lw=1.2, color=THEORY_COLOR, zorder=1)
        ax.text(0.8 * lim * u[0], 0.8 * lim * u[1] + 0.08 * lim, "+" if c > 0 else "\u2212",
                ha="center", va="center", fontsize=16, color=THEORY_COLOR)
    ax.scatter(pts[a > 0, 0], pts[a > 0, 1], s=6, color=PALETTE[0], zorder=2, label=r"$a_j > 0$")
    ax.scatter(pts[a < 0, 0], pts[a < 0, 1], s=6, color=PALETTE[1], zorder=2, label=r"$a_j < 0$")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title is not None:
        ax.set_title(title)
    return ax
