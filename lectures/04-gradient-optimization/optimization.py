"""Week 4: gradient-based optimization.

Four verified results, each an experiment beside its closed form:

1. Conditioning. On a quadratic with condition number ``kappa``, the number of
   iterations to reach a fixed relative accuracy grows like ``kappa`` for
   gradient descent and like ``sqrt(kappa)`` for tuned heavy-ball momentum
   (``run_conditioning``; ``gd_iterations_theory``, ``heavy_ball_loss_ratio``).
2. SGD noise floor. With additive gradient noise of covariance ``Sigma`` on a
   quadratic with Hessian ``H``, SGD's stationary excess loss is
   ``sum_i eta Sigma_ii / (2 (2 - eta h_i))`` in the eigenbasis of ``H``, linear in
   ``eta`` for small steps (``run_sgd_noise``; ``sgd_stationary_excess_loss``).
3. Gradient flow. Gradient descent tracks the gradient flow ``exp(-t H) theta_0``
   with an error proportional to ``eta``, and the modified flow of Barrett &
   Dherin (2021) with an error proportional to ``eta**2``
   (``run_gradient_flow``; ``flow_error_theory``).
4. Edge of stability (Cohen et al. 2021). Full-batch gradient descent on a small
   network raises the top Hessian eigenvalue to about ``2 / eta``, where it
   hovers (``run_edge_of_stability``).

Every optimizer is an ``optax.GradientTransformation`` driven by
``dlcourse.train``; curvature comes from ``dlcourse.linalg``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlcourse import data, linalg, metrics, mlp, plotting, train

# ---------------------------------------------------------------------------
# 1. Conditioning: gradient descent, heavy ball and Nesterov on quadratics
# ---------------------------------------------------------------------------


def quadratic_loss(theta: jax.Array, h: jax.Array) -> jax.Array:
    """``f(theta) = sum_i h_i theta_i**2 / 2``: a quadratic in its Hessian's eigenbasis."""
    return 0.5 * jnp.sum(h * theta**2)


def gd_hyperparams(mu, lipschitz=1.0):
    """Step size ``eta = 2 / (L + mu)`` that minimizes gradient descent's contraction factor."""
    return 2.0 / (lipschitz + mu)


def gd_rate(kappa):
    """Contraction factor of tuned gradient descent per step: ``(kappa - 1) / (kappa + 1)``.

    With ``eta = 2 / (L + mu)`` every eigendirection ``h`` of a quadratic is
    multiplied by ``|1 - eta h| <= (kappa - 1) / (kappa + 1)`` per step, with
    equality at ``h = mu`` and ``h = L``.
    """
    return (kappa - 1.0) / (kappa + 1.0)


def heavy_ball_hyperparams(mu, lipschitz=1.0):
    """Polyak's tuning of heavy-ball momentum for a quadratic with spectrum in ``[mu, L]``.

    ``eta = 4 / (sqrt(L) + sqrt(mu))**2`` and
    ``beta = ((sqrt(L) - sqrt(mu)) / (sqrt(L) + sqrt(mu)))**2``.

    References:
        Polyak (1964), Some methods of speeding up the convergence of iteration methods.
    """
    sl, sm = jnp.sqrt(lipschitz), jnp.sqrt(mu)
    return 4.0 / (sl + sm) ** 2, ((sl - sm) / (sl + sm)) ** 2


def heavy_ball_rate(kappa):
    """Spectral radius of tuned heavy ball: ``(sqrt(kappa) - 1) / (sqrt(kappa) + 1)``."""
    s = jnp.sqrt(kappa)
    return (s - 1.0) / (s + 1.0)


def nesterov_hyperparams(mu, lipschitz=1.0):
    """Nesterov's constant-momentum tuning: ``eta = 1 / L``, ``beta = (sqrt(kappa) - 1) / (sqrt(kappa) + 1)``.

    References:
        Nesterov (2018), Lectures on Convex Optimization, Section 2.2.
    """
    return 1.0 / lipschitz, heavy_ball_rate(lipschitz / mu)


def iterations_to_tolerance(losses: jax.Array, tol: float) -> jax.Array:
    """``T(tol) = min{t : f_s <= tol * f_0 for every recorded s >= t}``.

    Momentum methods are not monotone, hence "for every later s": the count is
    the number of leading entries whose running maximum from the right exceeds
    ``tol * f_0``. Equals ``len(losses)`` if the tolerance is never reached.
    """
    tail_max = jax.lax.cummax(losses, reverse=True)
    return jnp.sum(tail_max > tol * losses[0])


def gd_iterations_theory(kappa, tol):
    """Exact iteration count of tuned gradient descent on ``h = (1/kappa, 1)``, ``theta_0 = (1, 1)``.

    Both modes contract by exactly ``rho = (kappa - 1)/(kappa + 1)``, so
    ``f_t / f_0 = rho**(2 t)`` and ``T = ceil(log(1/tol) / (2 log(1/rho)))``,
    which is ``kappa log(1/tol) / 4`` for large ``kappa``.
    """
    rho = np.asarray(gd_rate(np.asarray(kappa, dtype=float)))
    return np.ceil(np.log(1.0 / tol) / (2.0 * np.log(1.0 / rho)))


def heavy_ball_loss_ratio(kappa, t):
    """Exact ``f_t / f_0`` of tuned heavy ball on ``h = (1/kappa, 1)``, ``theta_0 = (1, 1)``.

    Each mode obeys ``x_{t+1} = (1 + beta - eta h) x_t - beta x_{t-1}`` with
    ``x_1 = (1 - eta h) x_0`` (optax's trace starts at zero). Polyak's tuning gives
    both extreme modes a double root ``z = +r`` (``h = mu``) and ``z = -r``
    (``h = L``), ``r = (s - 1)/(s + 1)``, ``s = sqrt(kappa)``, hence
    ``x_t = (1 + c t) z**t x_0`` with ``c_mu = 2/(s + 1)``, ``c_L = 2 s/(s + 1)`` and

        f_t / f_0 = [(1 + c_mu t)**2 / kappa + (1 + c_L t)**2] r**(2t) / (1 + 1/kappa).
    """
    kappa = np.asarray(kappa, dtype=float)[..., None]
    t = np.asarray(t, dtype=float)
    s = np.sqrt(kappa)
    r = (s - 1.0) / (s + 1.0)
    c_mu, c_l = 2.0 / (s + 1.0), 2.0 * s / (s + 1.0)
    poly = ((1.0 + c_mu * t) ** 2 / kappa + (1.0 + c_l * t) ** 2) / (1.0 + 1.0 / kappa)
    return poly * r ** (2.0 * t)


def heavy_ball_iterations_theory(kappa, tol, *, horizon: int = 100_000):
    """``T(tol)`` from the exact loss ratio ``heavy_ball_loss_ratio`` (first time it stays below ``tol``)."""
    ratio = heavy_ball_loss_ratio(kappa, np.arange(horizon))
    tail_max = np.maximum.accumulate(ratio[..., ::-1], axis=-1)[..., ::-1]
    return np.sum(tail_max > tol, axis=-1).astype(float)


def count_iterations(kappa, *, method: str, steps: int, tol: float):
    """Steps until ``f_t <= tol * f_0`` for one tuned method on ``h = (1/kappa, 1)``, ``theta_0 = (1, 1)``.

    ``method`` is ``"gd"``, ``"heavy_ball"`` or ``"nesterov"``; ``kappa`` may be
    traced, so ``jax.vmap`` over it compiles once for every condition number.
    """
    mu = 1.0 / kappa
    h = jnp.stack([mu, jnp.ones_like(mu)])
    if method == "gd":
        opt = optax.sgd(gd_hyperparams(mu))
    elif method == "heavy_ball":
        lr, beta = heavy_ball_hyperparams(mu)  # Polyak's tuning
        opt = optax.sgd(lr, momentum=beta)
    else:
        lr, beta = nesterov_hyperparams(mu)
        opt = optax.sgd(lr, momentum=beta, nesterov=True)
    _, losses = train.fit(quadratic_loss, jnp.ones(2), opt, h, steps=steps)
    return iterations_to_tolerance(losses, tol)


class ConditioningResult(NamedTuple):
    """Iterations to relative accuracy ``tol`` versus the condition number."""

    kappas: np.ndarray
    gd: np.ndarray  # measured T for gradient descent, shape (len(kappas),)
    heavy_ball: np.ndarray
    nesterov: np.ndarray
    gd_theory: np.ndarray  # exact closed form
    heavy_ball_theory: np.ndarray
    gd_fit: metrics.PowerLawFit  # log-log slope of the measurements
    heavy_ball_fit: metrics.PowerLawFit
    nesterov_fit: metrics.PowerLawFit
    tol: float


def run_conditioning(
    *,
    kappas=tuple(np.geomspace(10.0, 1e4, 13)),
    tol: float = 1e-6,
    gd_steps: int = 40_000,
    momentum_steps: int = 2_000,
) -> ConditioningResult:
    """Iterations to ``f_t <= tol * f_0`` on ``f = (theta_1**2 / kappa + theta_2**2) / 2``.

    Gradient descent (``optax.sgd``), heavy ball (``optax.sgd(momentum=beta)``)
    and Nesterov (``nesterov=True``), each tuned for ``[mu, L] = [1/kappa, 1]``
    and ``vmap``-ed over ``kappa``. The two-mode quadratic is the worst case: the
    contraction factors of all three methods are set by the extreme eigenvalues.

    Args:
        kappas: condition numbers (at least three, spanning two decades or more).
        tol: relative accuracy on the loss.
        gd_steps: steps run for gradient descent (must exceed ``kappa log(1/tol)/4``).
        momentum_steps: steps run for the momentum methods.

    Returns:
        Measured counts, exact theory and log-log fits (slope ~1 for gradient
        descent, ~1/2 for the momentum methods).
    """
    kappas_arr = jnp.asarray(kappas, dtype=jnp.float32)

    def count(kappa, method, steps):
        return count_iterations(kappa, method=method, steps=steps, tol=tol)

    measured = {
        m: np.asarray(jax.jit(jax.vmap(lambda k, m=m, s=s: count(k, m, s)))(kappas_arr), dtype=float)
        for m, s in (("gd", gd_steps), ("heavy_ball", momentum_steps), ("nesterov", momentum_steps))
    }
    k = np.asarray(kappas, dtype=float)
    return ConditioningResult(
        kappas=k,
        gd=measured["gd"],
        heavy_ball=measured["heavy_ball"],
        nesterov=measured["nesterov"],
        gd_theory=gd_iterations_theory(k, tol),
        heavy_ball_theory=heavy_ball_iterations_theory(k, tol),
        gd_fit=metrics.loglog_slope(k, measured["gd"]),
        heavy_ball_fit=metrics.loglog_slope(k, measured["heavy_ball"]),
        nesterov_fit=metrics.loglog_slope(k, measured["nesterov"]),
        tol=tol,
    )


class PathsResult(NamedTuple):
    """Iterates of several optimizers on a two-dimensional quadratic."""

    h: np.ndarray  # Hessian eigenvalues (diagonal)
    paths: dict  # name -> array (steps + 1, 2)


def run_optimizer_paths(
    *,
    kappa: float = 25.0,
    steps: int = 40,
    theta0=(-4.0, 1.5),
) -> PathsResult:
    """Trajectories of GD, heavy ball, Nesterov and Adam on ``f = (theta_1**2/kappa + theta_2**2)/2``.

    GD and the momentum methods use the tunings above; Adam uses ``lr = 0.3``
    (its steps have size ~``lr`` whatever the gradient, so it walks straight
    across the valley). An illustration, not a verified result.
    """
    mu = 1.0 / kappa
    h = jnp.array([mu, 1.0])
    lr_hb, beta_hb = heavy_ball_hyperparams(mu)
    lr_n, beta_n = nesterov_hyperparams(mu)
    optimizers = {
        "gradient descent": optax.sgd(gd_hyperparams(mu)),
        "heavy ball": optax.sgd(lr_hb, momentum=beta_hb),
        "Nesterov": optax.sgd(lr_n, momentum=beta_n, nesterov=True),
        "Adam": optax.adam(0.3),
    }
    start = jnp.asarray(theta0, dtype=jnp.float32)
    paths = {}
    for name, opt in optimizers.items():
        final, obs = jax.jit(
            lambda o=opt: train.trajectory(quadratic_loss, start, o, h, steps=steps, observe=lambda p: p)
        )()
        paths[name] = np.concatenate([np.asarray(obs), np.asarray(final)[None]], axis=0)
    return PathsResult(h=np.asarray(h), paths=paths)


# ---------------------------------------------------------------------------
# 2. Stochastic gradients on a noisy quadratic
# ---------------------------------------------------------------------------


def sgd_stationary_excess_loss(lr, h, noise_var):
    """Exact stationary ``E[f(theta)] - f(theta*)`` of SGD on a quadratic with additive noise.

    The update ``theta <- theta - eta (H theta + xi)``, ``xi ~ N(0, Sigma)``, has a
    Gaussian stationary law whose covariance ``C`` solves the Lyapunov equation
    ``C = (I - eta H) C (I - eta H) + eta**2 Sigma``. In the eigenbasis of ``H``
    (eigenvalues ``h_i``, ``Sigma_ii = noise_var[i]``),
    ``C_ii = eta Sigma_ii / (h_i (2 - eta h_i))``, hence

        E f - f* = tr(H C) / 2 = sum_i eta Sigma_ii / (2 (2 - eta h_i))
                 = eta tr(Sigma) / 4 + eta**2 sum_i h_i Sigma_ii / 8 + O(eta**3).

    Valid for ``0 < eta h_i < 2`` (otherwise SGD diverges).

    Args:
        lr: learning rate(s), any shape.
        h: Hessian eigenvalues, shape ``(d,)``.
        noise_var: diagonal of ``Sigma`` in the eigenbasis of ``H``, shape ``(d,)``.
    """
    lr = np.asarray(lr, dtype=float)[..., None]
    h, s = np.asarray(h, dtype=float), np.asarray(noise_var, dtype=float)
    return np.sum(lr * s / (2.0 * (2.0 - lr * h)), axis=-1)


def sgd_mean_loss(lrs, h, noise_var, theta0_sq):
    """Exact ``E[f(theta_t)] - f*`` under a learning-rate schedule ``etas[t]``.

    Per eigendirection the second moment ``v_t = E[theta_i**2]`` obeys
    ``v_{t+1} = (1 - eta_t h_i)**2 v_t + eta_t**2 Sigma_ii`` (the cross term
    vanishes because the noise has mean zero); the loss is ``sum_i h_i v_i / 2``.

    Args:
        lrs: learning rate at each step, shape ``(T,)``.
        h, noise_var: eigenvalues of ``H`` and ``Sigma_ii`` in its eigenbasis.
        theta0_sq: squared coordinates of ``theta_0`` in the eigenbasis.

    Returns:
        The expected excess loss before each step, shape ``(T,)``.
    """
    h, s = np.asarray(h, dtype=float), np.asarray(noise_var, dtype=float)
    v = np.asarray(theta0_sq, dtype=float)
    out = np.empty(len(lrs))
    for t, lr in enumerate(np.asarray(lrs, dtype=float)):
        out[t] = 0.5 * np.sum(h * v)
        v = (1.0 - lr * h) ** 2 * v + lr**2 * s
    return out


class NoisyQuadratic(NamedTuple):
    """``f(theta) = theta^T H theta / 2`` seen through gradients ``H theta + xi``, ``xi ~ N(0, Sigma)``."""

    hess: np.ndarray  # H, shape (d, d)
    noise_chol: np.ndarray  # a Cholesky factor of Sigma
    h: np.ndarray  # eigenvalues of H
    eigvecs: np.ndarray  # columns: eigenvectors of H
    noise_var: np.ndarray  # diagonal of Q^T Sigma Q: the noise variance along each eigenvector


def noisy_quadratic(d: int, *, key: jax.Array, h_min: float = 0.2, h_max: float = 1.0) -> NoisyQuadratic:
    """A rotated quadratic with additive anisotropic gradient noise.

    Hessian ``H = Q diag(h) Q^T`` with ``h`` evenly spaced in ``[h_min, h_max]`` and a
    random rotation ``Q``; noise covariance ``Sigma = A A^T / d + 10**-3 I`` with
    ``A`` Gaussian, so ``Sigma`` is not diagonal in the eigenbasis of ``H``.
    (The small linear algebra is done in numpy from one JAX draw.)
    """
    g = np.asarray(jax.random.normal(key, (2, d, d)), dtype=np.float64)
    q, _ = np.linalg.qr(g[0])
    h = np.linspace(h_min, h_max, d)
    sigma = g[1] @ g[1].T / d + 1e-3 * np.eye(d)
    return NoisyQuadratic(
        hess=(q * h) @ q.T,
        noise_chol=np.linalg.cholesky(sigma),
        h=h,
        eigvecs=q,
        noise_var=np.diag(q.T @ sigma @ q),
    )


def _noisy_loss(theta, batch):
    """``f(theta) + xi^T theta``: its gradient is ``H theta + xi``."""
    hess, xi = batch
    return 0.5 * theta @ hess @ theta + xi @ theta


@partial(jax.jit, static_argnames=("n_seeds",))
def _sgd_chains(hess, chol, table, theta0, key, *, n_seeds):
    """Excess loss before every SGD step, for every schedule and chain.

    Args:
        hess, chol: ``H`` and a Cholesky factor of the noise covariance.
        table: learning rate at every step for each schedule, shape ``(R, T)``.
        theta0: starting point, shape ``(d,)``.
        key: split into one key per (schedule, chain).
        n_seeds: independent chains per schedule.

    Returns:
        Losses of shape ``(R, chains, T)``; the noise ``xi_t = chol z_t`` is drawn per step.
    """
    keys = jax.random.split(key, (table.shape[0], n_seeds))

    def chain(lr_t, key):
        opt = optax.sgd(lambda count: lr_t[count])
        step = train.make_step(_noisy_loss, opt)

        def body(carry, _):
            state, k = carry
            k, noise_key = jax.random.split(k)
            xi = chol @ jax.random.normal(noise_key, theta0.shape)
            loss_clean = 0.5 * state.params @ hess @ state.params
            state, _ = step(state, (hess, xi))
            return (state, k), loss_clean

        carry = (train.init_state(theta0, opt), key)
        _, losses = jax.lax.scan(body, carry, None, length=lr_t.shape[0])
        return losses

    return jax.vmap(jax.vmap(chain, in_axes=(None, 0)))(table, keys)


class SGDNoiseResult(NamedTuple):
    """Time-averaged stationary excess loss of SGD against the exact formula."""

    lrs: np.ndarray
    measured: np.ndarray  # mean over chains of the time-averaged excess loss
    sem: np.ndarray  # standard error over chains
    theory: np.ndarray  # sgd_stationary_excess_loss
    linear: np.ndarray  # eta tr(Sigma) / 4
    fit: metrics.PowerLawFit  # log-log slope of the measurements on the smaller half of the etas


def run_sgd_noise(
    *,
    key: jax.Array,
    lrs=tuple(np.geomspace(0.02, 1.6, 9)),
    d: int = 10,
    n_seeds: int = 16,
    burn_in: int = 2_000,
    steps: int = 2_000,
) -> SGDNoiseResult:
    """Stationary excess loss of constant-step SGD on ``noisy_quadratic``, ``vmap``-ed over eta and chains.

    Each chain starts at the minimum, runs ``burn_in`` steps (the second moments
    relax as ``(1 - eta h)**(2t)``; ``burn_in * eta_min * h_min`` should be >= 5)
    and averages the excess loss over the next ``steps`` steps. The standard
    error is over the independent chains.

    Args:
        key: randomness for the problem and the gradient noise.
        lrs: constant learning rates (``lr * h_max < 2``).
        d: dimension.
        n_seeds: independent chains per learning rate.
        burn_in, steps: discarded and averaged steps.
    """
    problem_key, noise_key = jax.random.split(key)
    prob = noisy_quadratic(d, key=problem_key)
    e = np.asarray(lrs, dtype=float)
    table = np.repeat(e[:, None], burn_in + steps, axis=1)
    losses = _sgd_chains(
        jnp.asarray(prob.hess, jnp.float32), jnp.asarray(prob.noise_chol, jnp.float32),
        jnp.asarray(table, jnp.float32), jnp.zeros(d), noise_key, n_seeds=n_seeds,
    )
    mean, sem = metrics.mean_and_sem(np.asarray(losses[:, :, burn_in:].mean(axis=2)), axis=1)
    small = e <= np.median(e)  # the linear regime
    return SGDNoiseResult(
        lrs=e,
        measured=mean,
        sem=sem,
        theory=sgd_stationary_excess_loss(e, prob.h, prob.noise_var),
        linear=e * prob.noise_var.sum() / 4.0,
        fit=metrics.loglog_slope(e[small], mean[small]),
    )


class ScheduleResult(NamedTuple):
    """Mean excess loss of SGD along several learning-rate schedules."""

    t: np.ndarray
    lrs: dict  # name -> learning rate at every step
    measured: dict  # name -> mean over chains, shape (steps,)
    theory: dict  # name -> exact mean (sgd_mean_loss)
    floors: dict  # name -> stationary loss of the final learning rate
    chains: dict  # name -> loss of every chain, shape (n_seeds, steps)
    theory_noiseless: dict  # name -> exact mean of gradient descent without noise (the negative control)


def run_schedules(
    *,
    key: jax.Array,
    lr: float = 0.5,
    d: int = 10,
    n_seeds: int = 32,
    steps: int = 3_000,
    theta0_scale: float = 3.0,
) -> ScheduleResult:
    """SGD on ``noisy_quadratic`` under four optax learning-rate schedules.

    Constant ``eta``, constant ``eta / 10``, step decay (``x 0.1`` at one and two
    thirds of the run) and cosine decay, all from ``theta_0 = theta0_scale *
    (1, ..., 1) / sqrt(d)``. Schedules and chains are ``vmap``-ed together; the
    exact mean loss comes from ``sgd_mean_loss``.
    """
    schedules = {
        f"constant $\\eta={lr:g}$": optax.constant_schedule(lr),
        f"constant $\\eta={lr / 10:g}$": optax.constant_schedule(lr / 10),
        "step decay": optax.piecewise_constant_schedule(lr, {steps // 3: 0.1, 2 * steps // 3: 0.1}),
        "cosine decay": optax.cosine_decay_schedule(lr, steps, alpha=1e-3),
    }
    problem_key, noise_key = jax.random.split(key)
    prob = noisy_quadratic(d, key=problem_key)
    t = np.arange(steps)
    table = np.asarray(jax.jit(lambda t: jnp.stack([jax.vmap(s)(t) for s in schedules.values()]))(t))
    theta0 = theta0_scale * np.ones(d) / np.sqrt(d)
    losses = _sgd_chains(
        jnp.asarray(prob.hess, jnp.float32), jnp.asarray(prob.noise_chol, jnp.float32),
        jnp.asarray(table, jnp.float32), jnp.asarray(theta0, jnp.float32), noise_key, n_seeds=n_seeds,
    )
    measured = np.asarray(losses.mean(axis=1))
    theta0_sq = (prob.eigvecs.T @ theta0) ** 2  # second moments in H's eigenbasis
    names = list(schedules)
    return ScheduleResult(
        t=t,
        lrs={n: table[i] for i, n in enumerate(names)},
        measured={n: measured[i] for i, n in enumerate(names)},
        theory={n: sgd_mean_loss(table[i], prob.h, prob.noise_var, theta0_sq) for i, n in enumerate(names)},
        floors={
            n: float(sgd_stationary_excess_loss(table[i, -1], prob.h, prob.noise_var))
            for i, n in enumerate(names)
        },
        chains={n: np.asarray(losses[i]) for i, n in enumerate(names)},
        theory_noiseless={n: sgd_mean_loss(table[i], prob.h, 0.0 * prob.noise_var, theta0_sq) for i, n in enumerate(names)},
    )


def schedule_window_z(res: ScheduleResult, *, window: int = 200, noiseless: bool = False) -> dict:
    """z-score of each schedule's mean loss over its last ``window`` steps against the exact mean.

    Each chain's window average is one independent sample (the steps inside a window
    are correlated, the chains are not), so the standard error is that of the chains'
    window averages. ``noiseless=True`` compares with the exact mean of gradient descent
    without noise (``Sigma = 0``): the negative control.
    """
    theories = res.theory_noiseless if noiseless else res.theory
    out = {}
    for name, chains in res.chains.items():
        per_chain = np.asarray(chains, np.float64)[:, -window:].mean(axis=1)
        theory = theories[name][-window:].mean()
        sem = per_chain.std(ddof=1) / np.sqrt(per_chain.size)
        out[name] = float((per_chain.mean() - theory) / sem)
    return out


class BatchFloorResult(NamedTuple):
    """Noise floor of minibatch SGD on least squares for several ``(eta, B)``."""

    lrs: np.ndarray  # (E,)
    batches: np.ndarray  # (B,)
    floor: np.ndarray  # (B, E) time-averaged excess empirical risk, mean over chains
    floor_sem: np.ndarray  # (B, E) standard error over chains
    trace_sigma: float  # tr Sigma_*, per-example gradient covariance at the minimum
    theory: np.ndarray  # (B, E) leading order eta tr Sigma_* / (4 B)


def run_batch_floor(
    *,
    key: jax.Array,
    lrs=(0.005, 0.01, 0.02, 0.04),
    batches=(1, 4, 16),
    n: int = 512,
    d: int = 5,
    burn_in: int = 1500,
    steps: int = 1500,
    n_seeds: int = 8,
) -> BatchFloorResult:
    """SGD with real minibatches (indices drawn with replacement) on least squares.

    The minibatch gradient's noise at the minimum ``theta_hat`` has covariance
    ``Sigma_* / B``, ``Sigma_*`` the covariance of the per-example gradients
    ``x_i (x_i . theta_hat - y_i)``; the noisy-quadratic result then predicts the
    floor ``eta tr Sigma_* / (4 B)`` to leading order in ``eta / B``. The noise
    grows away from the minimum, a relative correction ``O(eta h / B)``.
    Every step draws ``max(batches)`` indices and weights the first ``B`` by
    ``1 / B``, so the batch size is a traced number: one compiled program, one
    ``vmap`` over ``(eta, B, chain)``.
    """
    problem_key, run_key = jax.random.split(key)
    z = jax.random.normal(problem_key, (n, d + 1))
    x = z[:, :d]
    y = x @ jnp.ones(d) / jnp.sqrt(d) + 0.5 * z[:, d]
    hess = x.T @ x / n
    theta_hat = jnp.linalg.solve(hess, x.T @ y / n)
    per_example = x * (x @ theta_hat - y)[:, None]
    centred = per_example - per_example.mean(axis=0, keepdims=True)
    trace_sigma = float(jnp.sum(centred**2) / n)
    b_max = max(batches)

    def floor(lr, batch, chain_key):
        opt = optax.sgd(lr)
        weights = (jnp.arange(b_max) < batch) / batch

        def step(carry, _):
            theta, state, k = carry
            k, idx_key = jax.random.split(k)  # the key travels in the carry
            idx = jax.random.randint(idx_key, (b_max,), 0, n)
            grad = jax.grad(lambda t: 0.5 * jnp.sum(weights * (x[idx] @ t - y[idx]) ** 2))(theta)
            updates, state = opt.update(grad, state)
            excess = 0.5 * (theta - theta_hat) @ hess @ (theta - theta_hat)
            return (optax.apply_updates(theta, updates), state, k), excess

        carry = (theta_hat, opt.init(theta_hat), chain_key)
        _, excess = jax.lax.scan(step, carry, None, length=burn_in + steps)
        return excess[burn_in:].mean()

    grid_lr, grid_batch = np.meshgrid(np.asarray(lrs, float), np.asarray(batches, float))
    runs_lr = jnp.asarray(np.repeat(grid_lr.ravel(), n_seeds), jnp.float32)
    runs_batch = jnp.asarray(np.repeat(grid_batch.ravel(), n_seeds), jnp.float32)
    keys = jax.random.split(run_key, runs_lr.shape[0])
    floors = np.asarray(jax.jit(jax.vmap(floor))(runs_lr, runs_batch, keys), dtype=float)
    floors = floors.reshape(len(batches), len(lrs), n_seeds)
    mean, sem = metrics.mean_and_sem(floors, axis=-1)
    return BatchFloorResult(
        lrs=np.asarray(lrs, float), batches=np.asarray(batches), floor=mean, floor_sem=sem,
        trace_sigma=trace_sigma, theory=grid_lr * trace_sigma / (4 * grid_batch),
    )


def plot_batch_floor(ax, res: BatchFloorResult):
    """Floors against eta / B for each batch size, with the leading-order line."""
    for i, (batch, marker) in enumerate(zip(res.batches, "os^D")):
        ax.errorbar(res.lrs / batch, res.floor[i], yerr=res.floor_sem[i], ls="none", marker=marker,
                    capsize=3, color=plotting.PALETTE[i], label=f"$B = {batch}$")
    ratio = np.geomspace(res.lrs.min() / res.batches.max(), res.lrs.max() / res.batches.min(), 50)
    ax.plot(ratio, ratio * res.trace_sigma / 4, color=plotting.THEORY_COLOR,
            label=r"$\frac{\eta}{4B}\,\mathrm{tr}\,\Sigma_*$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend()
    return plotting.label_axes(ax, r"$\eta / B$", r"excess risk floor")


# ---------------------------------------------------------------------------
# 3. Gradient descent as a discretization of gradient flow
# ---------------------------------------------------------------------------


def modified_loss(f, lr: float):
    """Barrett & Dherin's modified loss ``f(theta) + (eta / 4) ||grad f(theta)||**2``.

    Gradient descent with step ``eta`` follows the gradient flow of this loss
    with a local error ``O(eta**3)`` (global ``O(eta**2)``), whereas it follows the
    flow of ``f`` itself only to ``O(eta)``.

    References:
        Barrett & Dherin (2021), Implicit gradient regularization, ICLR.
    """

    def f_tilde(theta):
        g = jax.grad(f)(theta)
        return f(theta) + 0.25 * lr * sum(jnp.vdot(x, x) for x in jax.tree_util.tree_leaves(g))

    return f_tilde


def exact_flow(t, q, h, c0):
    """Gradient flow of ``theta^T H theta / 2``: ``expm(-t H) theta_0 = Q exp(-t h) Q^T theta_0``.

    Args:
        t: time.
        q: orthogonal matrix whose columns are the eigenvectors of ``H``.
        h: eigenvalues of ``H``.
        c0: ``Q^T theta_0``, the start in the eigenbasis.
    """
    return q @ (jnp.exp(-t * h) * c0)


def flow_error_theory(lr, h, c0, horizon: float, *, order: int = 1, grid: int = 2001):
    """Leading-order sup-norm error of gradient descent against a flow on ``[0, horizon]``.

    In the eigenbasis of ``H`` (coefficients ``c0`` of ``theta_0``), gradient descent
    at time ``t = k eta`` is
    ``(1 - eta h)**(t / eta) = exp(-h t - eta h**2 t / 2 - eta**2 h**3 t / 3 - ...)``.
    Against the gradient flow ``exp(-h t)`` (``order=1``) the error is
    ``eta t h**2 exp(-h t) / 2``; against the modified flow
    ``exp(-(h + eta h**2 / 2) t)`` (``order=2``) it is ``eta**2 t h**3 exp(-h t) / 3``:

        order 1:  sup_t (eta t / 2) ||H**2 exp(-t H) theta_0||,
        order 2:  sup_t (eta**2 t / 3) ||H**3 exp(-t H) theta_0||.
    """
    t = np.linspace(0.0, horizon, grid)[:, None]
    h, c0 = np.asarray(h, dtype=float), np.asarray(c0, dtype=float)
    pref = {1: 0.5, 2: 1.0 / 3.0}[order]
    shape = np.sqrt(np.sum((t * h ** (order + 1) * np.exp(-h * t) * c0) ** 2, axis=1)).max()
    return pref * np.asarray(lr, dtype=float) ** order * shape


class FlowResult(NamedTuple):
    """Distance between gradient descent and the (modified) gradient flow versus eta."""

    lrs: np.ndarray
    error_flow: np.ndarray  # sup_k ||theta_k - exp(-k eta H) theta_0||
    error_modified: np.ndarray  # same against the modified flow
    theory_flow: np.ndarray
    theory_modified: np.ndarray
    fit_flow: metrics.PowerLawFit
    fit_modified: metrics.PowerLawFit
    horizon: float


def run_gradient_flow(
    *,
    key: jax.Array,
    lrs=tuple(np.geomspace(0.01, 0.3, 8)),
    d: int = 8,
    horizon: float = 4.0,
) -> FlowResult:
    """Gradient descent (``optax.sgd``) against ``theta(t) = expm(-t H) theta_0`` on a random quadratic.

    ``H = Q diag(h) Q^T`` with ``h`` in ``[0.2, 1.5]``; one run per eta, ``vmap``-ed,
    each ``horizon / eta_min`` steps long; the error is the sup over the steps
    with ``k eta <= horizon``. The flows are evaluated at every ``t = k eta`` by
    ``exact_flow`` (the matrix exponential in the eigenbasis; compounding a
    float32 ``expm(-eta H)`` would add a systematic round-off of ``k`` times its
    error, comparable with the ``O(eta**2)`` signal). The modified flow is the
    gradient flow of ``f + (eta/4) ||grad f||**2``, i.e. ``expm(-t (H + eta H**2 / 2)) theta_0``.
    """
    z = np.asarray(jax.random.normal(key, (d + 1, d)), dtype=np.float64)  # rotation and start
    q, _ = np.linalg.qr(z[:d])
    h = np.linspace(0.2, 1.5, d)
    hess = jnp.asarray((q * h[None, :]) @ q.T, jnp.float32)
    theta0 = jnp.asarray(z[d] / np.linalg.norm(z[d]), jnp.float32)
    c0 = q.T @ np.asarray(theta0, dtype=np.float64)  # theta_0 in the eigenbasis
    q32, h32, c32 = (jnp.asarray(a, jnp.float32) for a in (q, h, c0))
    steps = int(np.ceil(horizon / min(lrs)))

    def errors(lr):
        def loss(theta, _):
            return 0.5 * theta @ hess @ theta

        opt = optax.sgd(lr)
        step = train.make_step(loss, opt)

        def body(state, k):
            t = k * lr
            flow = exact_flow(t, q32, h32, c32)  # expm(-t H) theta_0
            mod = exact_flow(t, q32, h32 + 0.5 * lr * h32**2, c32)  # expm(-t (H + eta H^2 / 2)) theta_0
            inside = t <= horizon * (1 + 1e-6)
            e1 = jnp.where(inside, jnp.linalg.norm(state.params - flow), 0.0)
            e2 = jnp.where(inside, jnp.linalg.norm(state.params - mod), 0.0)
            state, _ = step(state, None)
            return state, (e1, e2)

        _, (e1, e2) = jax.lax.scan(body, train.init_state(theta0, opt), jnp.arange(steps + 1))
        return jnp.max(e1), jnp.max(e2)

    e1, e2 = jax.jit(jax.vmap(errors))(jnp.asarray(lrs, dtype=jnp.float32))
    e = np.asarray(lrs, dtype=float)
    e1, e2 = np.asarray(e1, dtype=float), np.asarray(e2, dtype=float)
    return FlowResult(
        lrs=e,
        error_flow=e1,
        error_modified=e2,
        theory_flow=flow_error_theory(e, h, c0, horizon, order=1),
        theory_modified=flow_error_theory(e, h, c0, horizon, order=2),
        fit_flow=metrics.loglog_slope(e, e1),
        fit_modified=metrics.loglog_slope(e, e2),
        horizon=horizon,
    )


# ---------------------------------------------------------------------------
# Adaptive methods: Adam written out, to check optax against the slide
# ---------------------------------------------------------------------------


class AdamState(NamedTuple):
    """First and second moment estimates and the step count."""

    m: jax.Array
    v: jax.Array
    t: jax.Array


def adam_init(theta: jax.Array) -> AdamState:
    """Zero moments at step 0."""
    return AdamState(jnp.zeros_like(theta), jnp.zeros_like(theta), jnp.zeros((), jnp.int32))


def adam_update(grad, state: AdamState, *, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step, as on the slide (Kingma & Ba 2015, Algorithm 1).

        m_t = b1 m_{t-1} + (1 - b1) g_t,      v_t = b2 v_{t-1} + (1 - b2) g_t**2,
        m^_t = m_t / (1 - b1**t),             v^_t = v_t / (1 - b2**t),
        theta_t = theta_{t-1} - lr m^_t / (sqrt(v^_t) + eps).

    Returns:
        ``(update, new_state)``; add ``update`` to the parameters.

    References:
        Kingma & Ba (2015), Adam: a method for stochastic optimization, ICLR.
    """
    t = state.t + 1
    m = b1 * state.m + (1.0 - b1) * grad
    v = b2 * state.v + (1.0 - b2) * grad**2
    m_hat = m / (1.0 - b1**t)
    v_hat = v / (1.0 - b2**t)
    return -lr * m_hat / (jnp.sqrt(v_hat) + eps), AdamState(m, v, t)


# ---------------------------------------------------------------------------
# 4. Edge of stability
# ---------------------------------------------------------------------------


def teacher_data(x: jax.Array, n: int, *, key: jax.Array, widths=(64, 64, 10)):
    """Digits images labelled by a random tanh teacher network.

    Inputs: the first ``n`` rows of ``x`` (standardized 8x8 digits,
    ``dlcourse.data.digits``). Targets: the outputs of a
    random ``tanh`` MLP (``sigma_w = 1.5``) on them, rescaled to unit variance.
    A smooth, non-trivial regression target that a small student fits slowly
    enough for progressive sharpening to show.
    """
    x = x[:n]
    teacher = mlp.init_mlp_one_draw(widths, key=key, sigma_w=1.5)
    y = mlp.apply_batch(teacher, x, activation=jnp.tanh)
    return x, y / jnp.std(y)


def mse_loss(params, batch):
    """``(1 / 2n) sum_i ||f_theta(x_i) - y_i||**2`` for a tanh MLP (sum over outputs)."""
    x, y = batch
    pred = mlp.apply_batch(params, x, activation=jnp.tanh)
    return 0.5 * jnp.mean(jnp.sum((pred - y) ** 2, axis=-1))


class EdgeOfStabilityResult(NamedTuple):
    """Sharpness and loss along full-batch gradient descent for several learning rates."""

    lrs: np.ndarray
    t: np.ndarray  # steps at which sharpness and loss are recorded
    sharpness: np.ndarray  # top Hessian eigenvalue, shape (len(etas), len(t))
    loss: np.ndarray  # training loss, same shape
    initial_sharpness: float


def run_edge_of_stability(
    *,
    key: jax.Array,
    lrs=(0.1, 0.07, 0.02),
    n: int = 256,
    widths=(64, 32, 32, 32, 10),
    sigma_w: float = 0.7,
    steps: int = 2_000,
    every: int = 20,
    power_iters: int = 20,
) -> EdgeOfStabilityResult:
    """Full-batch gradient descent on a tanh MLP, recording the sharpness every ``every`` steps.

    Sharpness is the top eigenvalue of the training-loss Hessian, computed by
    power iteration on Hessian-vector products (``dlcourse.linalg.top_eigenvalue``).
    On a quadratic, gradient descent is stable iff sharpness < 2/eta; on a
    network, the sharpness first rises (progressive sharpening) and then hovers
    at about 2/eta (the edge of stability) while the loss keeps decreasing
    non-monotonically. The same initialization is used for every eta
    (``vmap`` over eta).

    Args:
        key: randomness for the teacher, the student's initialization and the
            power-iteration starting vectors.
        lrs: learning rates.
        n: number of training examples.
        widths: student layer widths.
        sigma_w: student weight scale (small: low initial sharpness).
        steps: gradient-descent steps (a multiple of ``every``).
        every: steps between sharpness measurements.
        power_iters: power iterations per measurement.

    References:
        Cohen, Kaur, Li, Kolter & Talwalkar (2021), Gradient descent on neural
        networks typically occurs at the edge of stability, ICLR.
    """
    x, _ = data.digits()
    compute = jax.jit(
        _edge_of_stability,
        static_argnames=("n", "widths", "sigma_w", "steps", "every", "power_iters"),
    )
    lams, losses = compute(
        x, jnp.asarray(lrs, dtype=jnp.float32), key=key, n=n, widths=tuple(widths),
        sigma_w=sigma_w, steps=steps, every=every, power_iters=power_iters,
    )
    return EdgeOfStabilityResult(
        lrs=np.asarray(lrs, dtype=float),
        t=every * np.arange(steps // every),
        sharpness=np.asarray(lams),
        loss=np.asarray(losses),
        initial_sharpness=float(lams[0, 0]),
    )


def _edge_of_stability(x, lrs, *, key, n, widths, sigma_w, steps, every, power_iters):
    """The whole experiment as one jit-compiled function (one XLA compilation)."""
    teacher_key, init_key, power_key = jax.random.split(key, 3)
    batch = teacher_data(x, n, key=teacher_key)
    params0 = mlp.init_mlp_one_draw(widths, key=init_key, sigma_w=sigma_w)
    power_keys = jax.random.split(power_key, lrs.shape[0])

    def sharpness(params, k):
        return linalg.top_eigenvalue(lambda p: mse_loss(p, batch), params, key=k, iters=power_iters)

    def run(lr, key):
        opt = optax.sgd(lr)
        step = train.make_step(mse_loss, opt)

        def block(carry, _):
            state, k = carry
            k, start_key = jax.random.split(k)
            lam = sharpness(state.params, start_key)

            def inner(s, _):
                return step(s, batch)

            state, losses = jax.lax.scan(inner, state, None, length=every)
            return (state, k), (lam, losses[0])

        carry = (train.init_state(params0, opt), key)
        _, (lams, losses) = jax.lax.scan(block, carry, None, length=steps // every)
        return lams, losses

    lams, losses = jax.vmap(run)(lrs, power_keys)
    return lams, losses


# ---------------------------------------------------------------------------
# Figures: helpers take an ``ax`` (and a result) and return the ``ax``
# ---------------------------------------------------------------------------


def plot_conditioning(ax, res: ConditioningResult):
    """Iterations to accuracy versus kappa: markers measured, black lines exact theory."""
    pairs = (
        ("gradient descent", res.gd, res.gd_theory, res.gd_fit, plotting.PALETTE[0], "o"),
        ("heavy ball", res.heavy_ball, res.heavy_ball_theory, res.heavy_ball_fit, plotting.PALETTE[1], "s"),
    )
    for i, (name, meas, theory, fit, color, marker) in enumerate(pairs):
        plotting.theory_vs_experiment(
            ax, res.kappas, meas, theory, color=color, marker=marker,
            label=f"{name} (slope {fit.slope:.2f})",
            theory_label="closed form" if i == 0 else "_nolegend_",
        )
    ax.plot(res.kappas, res.nesterov, ls="none", marker="^", color=plotting.PALETTE[2],
            label=f"Nesterov (slope {res.nesterov_fit.slope:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    return plotting.label_axes(
        ax,
        r"condition number $\kappa$",
        rf"iterations $T(\varepsilon)$, $\varepsilon = 10^{{{np.log10(res.tol):.0f}}}$",
    )


def plot_paths(ax, res: PathsResult):
    """Optimizer trajectories over the contours of the two-dimensional quadratic."""
    g1, g2 = np.meshgrid(np.linspace(-4.5, 1.5, 200), np.linspace(-3.0, 3.0, 200))
    f = 0.5 * (res.h[0] * g1**2 + res.h[1] * g2**2)
    ax.contour(g1, g2, f, levels=np.geomspace(0.005, 10, 12), colors="0.75", linewidths=1.0)
    markers = ("o", "s", "^", "D")
    for (name, path), color, marker in zip(res.paths.items(), plotting.PALETTE, markers):
        ax.plot(path[:, 0], path[:, 1], color=color, marker=marker, ms=4, lw=1.4, label=name)
    ax.plot([0], [0], marker="*", ms=16, color=plotting.THEORY_COLOR, ls="none", label=r"minimum $\theta^*$")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(False)
    return plotting.label_axes(
        ax, r"$\theta_1$ (curvature $\mu = 1/\kappa$)", r"$\theta_2$ (curvature $L=1$)"
    )


def plot_sgd_noise(ax, res: SGDNoiseResult):
    """Stationary excess loss versus eta: measured (one SEM), exact (black), linear (dashed)."""
    plotting.theory_vs_experiment(
        ax, res.lrs, res.measured, res.theory, err=res.sem,
        label="SGD, time average",
        theory_label=r"exact: $\sum_i \eta\Sigma_{ii}/(2(2-\eta h_i))$",
    )
    ax.plot(res.lrs, res.linear, ls="--", color="0.45", lw=1.8, label=r"$\eta\,\mathrm{tr}\,\Sigma/4$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    ylabel = r"$\mathbb{E}\,\widehat{\mathcal{R}}_n(\theta_\infty) - \widehat{\mathcal{R}}_n^*$"
    return plotting.label_axes(ax, r"learning rate $\eta$", ylabel)


def plot_schedules(ax, res: ScheduleResult, *, smooth: int = 25):
    """Mean loss along each schedule (coloured, running mean over ``smooth`` steps) and exact mean (black)."""
    kernel = np.ones(smooth) / smooth
    for i, (name, color) in enumerate(zip(res.measured, plotting.PALETTE)):
        meas = np.convolve(res.measured[name], kernel, mode="valid")
        ax.plot(res.t[: len(meas)] + smooth // 2, meas, color=color, lw=1.8, alpha=0.9, label=name)
        ax.plot(res.t, res.theory[name], color=plotting.THEORY_COLOR, lw=1.2,
                label="exact mean" if i == 0 else "_nolegend_")
    ax.set_yscale("log")
    ax.set_ylim(bottom=min(v.min() for v in res.theory.values()) / 8)
    ax.legend(loc="lower left", fontsize=11, ncols=2)
    ylabel = r"$\mathbb{E}\,\widehat{\mathcal{R}}_n(\theta_t) - \widehat{\mathcal{R}}_n^*$"
    return plotting.label_axes(ax, r"step $t$", ylabel)


def plot_flow(ax, res: FlowResult):
    """Distance from gradient descent to the gradient flow and to the modified flow versus eta."""
    plotting.theory_vs_experiment(
        ax, res.lrs, res.error_flow, res.theory_flow, color=plotting.PALETTE[0],
        label=f"to gradient flow (slope {res.fit_flow.slope:.2f})", theory_label="leading order",
    )
    plotting.theory_vs_experiment(
        ax, res.lrs, res.error_modified, res.theory_modified, color=plotting.PALETTE[1], marker="s",
        label=f"to modified flow (slope {res.fit_modified.slope:.2f})", theory_label="_nolegend_",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(loc="lower right")
    ylabel = r"$\max_{k\eta \leq T}\, \|\theta_k - \theta(k\eta)\|$"
    return plotting.label_axes(ax, r"learning rate $\eta$", ylabel)


def plot_sharpness(ax, res: EdgeOfStabilityResult):
    """Sharpness along training for each eta, with the stability threshold 2/eta dashed."""
    for i, (lr, color) in enumerate(zip(res.lrs, plotting.PALETTE)):
        ax.plot(res.t, res.sharpness[i], color=color, lw=2.0, label=rf"$\eta = {lr:g}$")
        if 2 / lr < 1.2 * res.sharpness.max():
            ax.axhline(2 / lr, color=color, ls="--", lw=1.5)
            ax.text(res.t[-1], 2 / lr, rf"$2/\eta = {2 / lr:.3g}$", color=color,
                    ha="right", va="bottom", fontsize=13)
    ax.legend(loc="lower right")
    ylabel = r"sharpness $\lambda_{\max}(\nabla^2 \widehat{\mathcal{R}}_n)$"
    return plotting.label_axes(ax, r"step $t$", ylabel)


def plot_eos_loss(ax, res: EdgeOfStabilityResult):
    """Training loss along training for each eta (log scale)."""
    for i, (lr, color) in enumerate(zip(res.lrs, plotting.PALETTE)):
        ax.plot(res.t, res.loss[i], color=color, lw=1.8, label=rf"$\eta = {lr:g}$")
    ax.set_yscale("log")
    return plotting.label_axes(ax, r"step $t$", r"training loss $\widehat{\mathcal{R}}_n$")
