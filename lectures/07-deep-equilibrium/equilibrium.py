"""Week 7: deep equilibrium models.

A weight-tied network iterated to infinite depth converges (when the layer is a
contraction) to a fixed point ``z* = f(z*, x)``; the *deep equilibrium model*
(DEQ) outputs ``z*`` directly, finds it with a root solver and differentiates
through it with the implicit function theorem, at a memory cost independent of
the number of solver iterations. A residual network with step ``1/L`` is the
Euler discretization of an ODE (the *neural ODE* view of depth).

Everything here is written for ONE example and batched with ``jax.vmap``.
The running example is the layer

    f(z, x) = tanh(W z + U x + b),   z in R^N, x in R^d,

whose Jacobian in ``z`` is ``J = diag(1 - f**2) W``; since ``|tanh'| <= 1`` the
map is a contraction with constant ``||W||_2`` (Banach), and plain iteration
converges at the asymptotic rate ``rho(J(z*))``.

Contents:
    init_deq, deq_map, jacobian_z, spectral_radius: the layer and its linearization.
    Solver, fixed_point_iteration, anderson, broyden, solve, fixed_point:
        fixed-point solvers as ``init``/``update`` pairs run by ``lax.scan``;
        krylov_rate: the rate a Krylov method (Anderson ~ GMRES) can reach.
    implicit_vjp, make_implicit_layer, unrolled: implicit (custom_vjp) and
        unrolled gradients.
    run_gradient_check, run_solvers, run_resnet_ode, run_memory: the four
        verified results of the lecture, at full lecture size by default.
    init_mondeq, mondeq_weight, run_mondeq: monotone operator equilibrium networks.

References:
    Bai, Kolter & Koltun (2019), Deep equilibrium models, arXiv:1909.01377.
    Chen, Rubanova, Bettencourt & Duvenaud (2018), Neural ordinary differential
        equations, arXiv:1806.07366.
    Walker & Ni (2011), Anderson acceleration for fixed-point iterations,
        doi:10.1137/10078356X.
    Broyden (1965), A class of methods for solving nonlinear simultaneous
        equations, doi:10.1090/S0025-5718-1965-0198670-6.
    Winston & Kolter (2020), Monotone operator equilibrium networks,
        arXiv:2006.08591.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dlcourse import metrics

Array = jax.Array

# ---------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------


class DEQParams(NamedTuple):
    """Parameters of ``f(z, x) = tanh(W z + U x + b)``.

    Attributes:
        w: ``(N, N)`` recurrent (weight-tied) matrix ``W``.
        u: ``(N, d)`` input injection ``U``.
        b: ``(N,)`` bias.
    """

    w: Array
    u: Array
    b: Array


def init_deq(
    d: int,
    width: int,
    *,
    key: Array,
    gamma: float = 0.95,
    input_scale: float = 1.0,
    symmetric: bool = True,
) -> DEQParams:
    """Random DEQ layer whose recurrent matrix has spectral norm exactly ``gamma``.

    ``W = gamma * A / ||A||_2`` with ``A`` Gaussian (symmetrized if ``symmetric``),
    ``U ~ N(0, input_scale**2 / d)`` entrywise, ``b = 0``. With ``gamma < 1`` the map
    ``z -> f(z, x)`` is a contraction with constant ``gamma`` for every ``x``.
    For symmetric ``W``, ``||W||_2 = rho(W)``, so the Banach constant is tight;
    for a non-symmetric Gaussian ``A`` the spectral radius is about half the norm
    (circular law versus the largest singular value), and iteration is faster
    than the Banach bound says.

    Args:
        d: input dimension.
        width: hidden width ``N``.
        key: randomness for ``W`` and ``U``.
        gamma: spectral norm of ``W`` (the Lipschitz constant of ``f`` in ``z``).
        input_scale: standard deviation of ``(U x)_i`` for ``x ~ N(0, I_d)``.
        symmetric: draw ``W`` from the Gaussian orthogonal ensemble.

    Returns:
        The parameters.
    """
    w_key, u_key = jax.random.split(key)
    a = jax.random.normal(w_key, (width, width))
    if symmetric:
        a = (a + a.T) / 2.0
    w = gamma * a / jnp.linalg.norm(a, ord=2)
    u = input_scale / jnp.sqrt(d) * jax.random.normal(u_key, (width, d))
    return DEQParams(w=w, u=u, b=jnp.zeros((width,)))


def deq_map(params: DEQParams, z: Array, x: Array) -> Array:
    """One weight-tied layer ``f(z, x) = tanh(W z + U x + b)`` for one example.

    Args:
        params: the layer.
        z: state, shape ``(N,)``.
        x: input, shape ``(d,)``.

    Returns:
        ``f(z, x)``, shape ``(N,)``.
    """
    return jnp.tanh(params.w @ z + params.u @ x + params.b)


def jacobian_z(params: DEQParams, z: Array, x: Array) -> Array:
    """Jacobian ``d f / d z = diag(1 - f(z, x)**2) W`` of ``deq_map``, shape ``(N, N)``."""
    fz = deq_map(params, z, x)
    return (1.0 - fz**2)[:, None] * params.w


def spectral_radius(matrix: Array) -> Array:
    """``rho(A) = max_i |lambda_i(A)|`` (eigenvalues of a general square matrix)."""
    return jnp.max(jnp.abs(jnp.linalg.eigvals(matrix)))


# ---------------------------------------------------------------------------
# Solvers: init / update pairs, run by lax.scan
# ---------------------------------------------------------------------------

Fn = Callable[[Array], Array]


class Solver(NamedTuple):
    """A fixed-point solver for ``z = fn(z)`` as a pair of pure functions.

    Attributes:
        init: ``init(fn, z0) -> state``; every state has a field ``z``, the
            current iterate.
        update: ``update(fn, state) -> (residual, new_state)``, where ``residual``
            is ``||fn(z_k) - z_k||`` of the iterate ``z_k`` *before* the update.
            The ``k``-th update has evaluated ``fn`` exactly ``k + 1`` times in
            every solver here, so residual histories are comparable per
            function evaluation.
    """

    init: Callable[[Fn, Array], Any]
    update: Callable[[Fn, Any], tuple[Array, Any]]


class PlainState(NamedTuple):
    z: Array


def fixed_point_iteration() -> Solver:
    """Plain (Picard) iteration ``z_{k+1} = fn(z_k)``.

    Near the fixed point ``e_{k+1} = J e_k + O(e_k^2)`` with ``J = fn'(z*)``, so
    ``||e_k|| ~ rho(J)^k``: the residual falls by the spectral radius per step.
    """

    def init(fn, z0):
        del fn
        return PlainState(z0)

    def update(fn, state):
        f = fn(state.z)
        return jnp.linalg.norm(f - state.z), PlainState(f)

    return Solver(init, update)


class AndersonState(NamedTuple):
    z: Array  # current iterate, (n,)
    xs: Array  # past iterates, ring buffer (m, n)
    fs: Array  # fn of past iterates, (m, n)
    count: Array  # number of updates done so far


def anderson(memory: int = 5, *, beta: float = 1.0, reg: float = 1e-5) -> Solver:
    """Anderson acceleration (type II) with ``memory`` past iterates.

    With ``g_i = fn(z_i) - z_i`` for the last ``m`` iterates, solve

        alpha = argmin ||sum_i alpha_i g_i||^2  subject to  sum_i alpha_i = 1,

    i.e. ``alpha = H^{-1} 1 / (1^T H^{-1} 1)`` with ``H = G G^T + reg I`` (after
    scaling ``G`` so its largest row has norm 1), and set ``z_{k+1} = beta sum_i alpha_i fn(z_i)
    + (1 - beta) sum_i alpha_i z_i``. Slots not yet filled hold copies of the
    newest pair, which is equivalent to a shorter history. For a linear ``fn``
    and unlimited memory, Anderson is equivalent to GMRES on ``(I - J) z = c``.

    Args:
        memory: number ``m`` of past iterates kept.
        beta: mixing parameter (1: use the ``fn`` values only).
        reg: Tikhonov regularization of the rescaled Gram matrix.

    Returns:
        The solver.

    References:
        Anderson (1965), doi:10.1145/321296.321305.
        Walker & Ni (2011), doi:10.1137/10078356X.
    """

    def init(fn, z0):
        del fn
        n = z0.shape[0]
        zeros = jnp.zeros((memory, n), z0.dtype)
        return AndersonState(z0, zeros, zeros, jnp.zeros((), jnp.int32))

    def update(fn, state):
        z, k = state.z, state.count
        f = fn(z)
        slot = k % memory
        xs = state.xs.at[slot].set(z)
        fs = state.fs.at[slot].set(f)
        valid = (jnp.arange(memory) <= k)[:, None]
        xv = jnp.where(valid, xs, z[None, :])
        fv = jnp.where(valid, fs, f[None, :])
        g = fv - xv
        # Rescale so the Gram matrix is O(1) (alpha is scale-invariant); an
        # exactly converged history (g = 0) then gives the uniform alpha.
        scale = jnp.max(jnp.linalg.norm(g, axis=1))
        g = g / jnp.where(scale > 0, scale, 1.0)
        gram = g @ g.T + reg * jnp.eye(memory, dtype=z.dtype)
        alpha = jnp.linalg.solve(gram, jnp.ones((memory,), z.dtype))
        alpha = alpha / jnp.sum(alpha)
        z_new = beta * (alpha @ fv) + (1.0 - beta) * (alpha @ xv)
        return jnp.linalg.norm(f - z), AndersonState(z_new, xs, fs, k + 1)

    return Solver(init, update)


class BroydenState(NamedTuple):
    z: Array  # current iterate, (n,)
    g: Array  # residual fn(z) - z, (n,)
    inv_jac: Array  # approximation of (d g / d z)^{-1}, (n, n)


def broyden() -> Solver:
    """Broyden's ("good") quasi-Newton method for the root of ``g(z) = fn(z) - z``.

    Keeps ``B ~ (g'(z))^{-1} = (J - I)^{-1}``, starting from ``B_0 = -I`` (so the
    first step is a plain iteration), steps ``z_{k+1} = z_k - B_k g_k`` and makes
    the secant equation ``B_{k+1} dg = dz`` hold with the rank-one update

        B_{k+1} = B_k + (dz - B_k dg) dz^T B_k / (dz^T B_k dg).

    References:
        Broyden (1965), doi:10.1090/S0025-5718-1965-0198670-6.
    """

    def init(fn, z0):
        n = z0.shape[0]
        return BroydenState(z0, fn(z0) - z0, -jnp.eye(n, dtype=z0.dtype))

    def update(fn, state):
        z, g, inv_jac = state
        dz = -inv_jac @ g
        z_new = z + dz
        g_new = fn(z_new) - z_new
        dg = g_new - g
        b_dg = inv_jac @ dg
        denom = dz @ b_dg
        safe = jnp.abs(denom) > jnp.finfo(z.dtype).tiny
        step = jnp.outer(dz - b_dg, dz @ inv_jac) / jnp.where(safe, denom, 1.0)
        inv_jac = inv_jac + jnp.where(safe, step, 0.0)
        return jnp.linalg.norm(g), BroydenState(z_new, g_new, inv_jac)

    return Solver(init, update)


class SolverTrace(NamedTuple):
    """Result of ``solve``: the last iterate and the residual history."""

    z: Array
    residuals: Array  # (iters,), residuals[k] = ||fn(z_k) - z_k||


def solve(solver: Solver, fn: Fn, z0: Array, *, iters: int) -> SolverTrace:
    """Run ``iters`` updates of ``solver`` on ``z = fn(z)`` from ``z0`` (a ``lax.scan``)."""

    def body(state, _):
        r, state = solver.update(fn, state)
        return state, r

    state, residuals = jax.lax.scan(body, solver.init(fn, z0), None, length=iters)
    return SolverTrace(state.z, residuals)


def fixed_point(solver: Solver, fn: Fn, z0: Array, *, iters: int) -> Array:
    """Like ``solve`` but keeps no history: memory independent of ``iters``."""

    def body(state, _):
        _, state = solver.update(fn, state)
        return state, None

    state, _ = jax.lax.scan(body, solver.init(fn, z0), None, length=iters)
    return state.z


# ---------------------------------------------------------------------------
# Implicit and unrolled differentiation
# ---------------------------------------------------------------------------

LayerFn = Callable[[Any, Array, Array], Array]


def implicit_vjp(f, params, x, z_star, v, *, solver, iters):
    """Backward pass through z* = f(params, z*, x) (implicit function theorem).

    Solves the adjoint fixed point u = v + J^T u, then returns the cotangents
    u^T df/dparams and u^T df/dx. Only vector-Jacobian products of f are
    used: the Jacobian J = df/dz (z*) is never formed.
    """
    _, vjp_z = jax.vjp(lambda z: f(params, z, x), z_star)  # u -> J^T u

    def adjoint(u):
        return v + vjp_z(u)[0]

    u = fixed_point(solver, adjoint, v, iters=iters)
    _, vjp_theta = jax.vjp(lambda p, xx: f(p, z_star, xx), params, x)
    return vjp_theta(u)


def make_implicit_layer(
    f: LayerFn,
    *,
    solver: Solver,
    iters: int,
    adjoint_iters: int | None = None,
) -> Callable[[Any, Array], Array]:
    """An equilibrium layer ``x -> z*(x)`` with ``z* = f(params, z*, x)``, differentiated implicitly.

    Forward: ``iters`` solver updates from ``z0 = 0`` (the state has the shape of
    ``params.b``); nothing is stored but ``z*``. Backward (a ``jax.custom_vjp``):
    by the implicit function theorem, for a cotangent ``v`` of ``z*``,

        v^T dz*/d(params, x) = u^T df/d(params, x),   u = v + J^T u,   J = df/dz (z*),

    i.e. ``u = (I - J^T)^{-1} v`` solved as the *adjoint fixed point* with the
    same solver (``adjoint_iters`` updates, default ``iters``), followed by one
    vector-Jacobian product of ``f``. Memory does not grow with ``iters``.

    Args:
        f: ``f(params, z, x) -> z``, one example.
        solver: fixed-point solver for the forward and the adjoint problem.
        iters: forward solver updates.
        adjoint_iters: adjoint solver updates.

    Returns:
        ``layer(params, x) -> z*``; batch with ``jax.vmap(layer, in_axes=(None, 0))``.

    References:
        Bai, Kolter & Koltun (2019), arXiv:1909.01377, Theorem 1.
    """
    adjoint_iters = iters if adjoint_iters is None else adjoint_iters

    @jax.custom_vjp
    def layer(params, x):
        z0 = jnp.zeros_like(params.b)
        return fixed_point(solver, lambda z: f(params, z, x), z0, iters=iters)

    def layer_fwd(params, x):
        z_star = layer(params, x)
        return z_star, (params, x, z_star)

    def layer_bwd(res, v):
        params, x, z_star = res
        return implicit_vjp(f, params, x, z_star, v, solver=solver, iters=adjoint_iters)

    layer.defvjp(layer_fwd, layer_bwd)
    return layer


def unrolled(f: LayerFn, params, x: Array, *, iters: int) -> Array:
    """``iters`` weight-tied layers ``z_{k+1} = f(params, z_k, x)`` from ``z_0 = 0``.

    Differentiating this with ``jax.grad`` back-propagates through every layer
    and stores the activations of all of them.
    """

    def body(z, _):
        return f(params, z, x), None

    z, _ = jax.lax.scan(body, jnp.zeros_like(params.b), None, length=iters)
    return z


def unrolled_to_depth(f: LayerFn, params, x: Array, depth: Array, *, max_iters: int) -> Array:
    """Like ``unrolled`` with a *traced* depth ``depth <= max_iters`` (steps past it are identity).

    One compilation serves every depth, and ``vmap`` over ``depth`` gives the
    unrolled result at many depths at once.
    """

    def body(z, k):
        return jnp.where(k < depth, f(params, z, x), z), None

    z, _ = jax.lax.scan(body, jnp.zeros_like(params.b), jnp.arange(max_iters))
    return z


def _readout_loss(z: Array, readout: Array, y: Array) -> Array:
    """``0.5 * ||R z - y||^2`` for one example."""
    return 0.5 * jnp.sum((readout @ z - y) ** 2)


def _tree_relative_error(a, b) -> Array:
    """``||a - b|| / ||b||`` over all leaves of two pytrees of the same structure."""
    num = sum(jnp.sum((p - q) ** 2) for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    den = sum(jnp.sum(q**2) for q in jax.tree.leaves(b))
    return jnp.sqrt(num / den)


class GradientCheckResult(NamedTuple):
    """Implicit versus unrolled gradients, one example at a time (``run_gradient_check``).

    Attributes:
        depths: unrolled depths ``K`` (``K = 0`` gives the zero gradient, error 1).
        rel_error: ``||grad_K - grad_implicit|| / ||grad_implicit||``, shape ``(batch, len(depths))``.
        rho: ``rho(J(z*(x)))`` of every example, shape ``(batch,)``.
        fitted_rate: per-example ``exp`` of the slope of ``log rel_error`` in ``K``
            over the decaying range (``10 * floor < error < 0.1``); theory: ``rho``.
        float_floor: median relative error over examples at the largest depth.
        bound: Banach constant ``||W||_2``.
    """

    depths: np.ndarray
    rel_error: np.ndarray
    rho: np.ndarray
    fitted_rate: np.ndarray
    float_floor: float
    bound: float


def _fit_rate(ks: np.ndarray, values: np.ndarray, low: float, high: float) -> float:
    """``exp(slope)`` of a least-squares fit of ``log values`` against ``ks`` where ``low < values < high``."""
    mask = (values > low) & (values < high)
    if mask.sum() < 3:
        return float("nan")
    return float(np.exp(np.polyfit(ks[mask], np.log(values[mask]), 1)[0]))


def run_gradient_check(
    *,
    key: Array,
    d: int = 16,
    width: int = 128,
    batch: int = 12,
    outputs: int = 4,
    gamma: float = 0.95,
    input_scale: float = 1.0,
    solver_iters: int = 200,
    depths: Sequence[int] = tuple(range(0, 81, 2)),
) -> GradientCheckResult:
    """Verified result 1: the implicit gradient equals the gradient through deep unrolling.

    Per example, loss ``0.5 ||R z*(x) - y||^2`` with a fixed random readout ``R``.
    The implicit gradient uses ``make_implicit_layer`` (plain iteration,
    ``solver_iters`` forward and adjoint steps); the unrolled gradients
    back-propagate through ``K`` layers for every ``K`` in ``depths`` (one
    compilation, ``vmap`` over ``K``). Theory: the unrolled gradient is a
    truncated Neumann series ``sum_{j < K} J^j`` of ``(I - J)^{-1}`` evaluated on
    not-yet-converged states, so the difference decays like ``rho(J(z*))^K`` (up
    to a factor polynomial in ``K``) until it reaches float32 round-off.

    Args:
        key: randomness (layer, data, readout).
        d, width, batch, outputs: sizes of ``x``, ``z``, the batch and ``R z``.
        gamma: ``||W||_2``.
        input_scale: scale of ``U x``.
        solver_iters: iterations of the implicit forward and adjoint solves.
        depths: unrolled depths ``K`` to compare.

    Returns:
        A ``GradientCheckResult``.
    """
    layer_key, x_key, r_key, y_key = jax.random.split(key, 4)
    params = init_deq(d, width, key=layer_key, gamma=gamma, input_scale=input_scale)
    xs = jax.random.normal(x_key, (batch, d))
    readout = jax.random.normal(r_key, (outputs, width)) / jnp.sqrt(width)
    ys = jax.random.normal(y_key, (batch, outputs))
    layer = make_implicit_layer(deq_map, solver=fixed_point_iteration(), iters=solver_iters)
    max_depth = int(max(depths))

    def one_example(p, x, y, depth_array):
        g_imp = jax.grad(lambda q: _readout_loss(layer(q, x), readout, y))(p)

        def unrolled_loss(q, depth):
            z = unrolled_to_depth(deq_map, q, x, depth, max_iters=max_depth)
            return _readout_loss(z, readout, y)

        g_unr = jax.vmap(jax.grad(unrolled_loss), in_axes=(None, 0))(p, depth_array)
        errs = jax.vmap(lambda g: _tree_relative_error(g, g_imp))(g_unr)
        rho = spectral_radius(jacobian_z(p, layer(p, x), x))
        return errs, rho

    compute = jax.jit(jax.vmap(one_example, in_axes=(None, 0, 0, None)))
    depth_array = jnp.asarray(np.asarray(depths), dtype=jnp.int32)
    errs, rho = compute(params, xs, ys, depth_array)
    errs, rho = np.asarray(errs, dtype=float), np.asarray(rho, dtype=float)
    ks = np.asarray(depths)
    floor = float(np.median(errs[:, -1]))
    rates = np.asarray([_fit_rate(ks, e, 10.0 * floor, 0.1) for e in errs])
    return GradientCheckResult(
        depths=ks,
        rel_error=errs,
        rho=rho,
        fitted_rate=rates,
        float_floor=floor,
        bound=float(jnp.linalg.norm(params.w, ord=2)),
    )


# ---------------------------------------------------------------------------
# Verified result 2: solvers
# ---------------------------------------------------------------------------


class SolversResult(NamedTuple):
    """Residual histories of three solvers on the same batch (``run_solvers``).

    Attributes:
        residuals: dict ``name -> (iters,)`` relative batch residual
            ``||F(Z_k) - Z_k||_F / ||F(Z_0) - Z_0||_F`` (``Z`` stacks the batch),
            for ``"fixed-point"``, ``"Anderson"`` and ``"Broyden"``.
        iters_to_tol: dict ``name -> first k`` with residual ``<= tol`` (``-1``: never).
        tol: the target relative residual.
        rho: ``rho(J(z*(x)))`` of every example, ``(batch,)``.
        fitted_rate: plain iteration's measured per-step factor for every
            example (fit of its own relative residual within ``fit_window``).
        plain_per_example: plain iteration's relative residual for every
            example, ``(batch, iters)``.
        bound: Banach constant ``||W||_2``.
    """

    residuals: dict
    iters_to_tol: dict
    tol: float
    rho: np.ndarray
    fitted_rate: np.ndarray
    plain_per_example: np.ndarray
    bound: float


def _iters_to_tol(residuals: np.ndarray, tol: float) -> int:
    hit = np.nonzero(residuals <= tol)[0]
    return int(hit[0]) if hit.size else -1


def run_solvers(
    *,
    key: Array,
    d: int = 16,
    width: int = 128,
    batch: int = 32,
    gamma: float = 0.99,
    input_scale: float = 0.2,
    iters: int = 600,
    memory: int = 5,
    tol: float = 1e-5,
    fit_window: tuple[float, float] = (1e-13, 1e-7),
    x64: bool = True,
) -> SolversResult:
    """Verified result 2: Anderson and Broyden reach ``tol`` in far fewer steps than plain iteration.

    All three solvers run ``iters`` updates on every example (``vmap``), from
    ``z_0 = 0``, one evaluation of ``f`` per update. Plain iteration's error obeys
    ``e_{k+1} = J e_k + O(e_k^2)``, so its residual falls by ``rho(J(z*(x)))``
    per step; Banach's constant ``||W||_2`` bounds that rate from above. The
    default layer (``||W||_2 = 0.99``, weak input) has ``rho`` close to 1, where
    acceleration pays most. The run is in float64 by default so that the fit
    window can sit far into the asymptotic regime (below ``1e-7``, where the
    slowest eigenmode dominates even when it starts with a small amplitude);
    in float32 the residuals stop near ``1e-7``.

    Args:
        key: randomness (layer, inputs).
        d, width, batch: sizes.
        gamma: ``||W||_2``.
        input_scale: scale of ``U x``.
        iters: solver updates.
        memory: Anderson's memory ``m``.
        tol: target relative residual.
        fit_window: relative residuals between which plain rates are fitted.
        x64: run in float64 (``jax.enable_x64``).

    Returns:
        A ``SolversResult``.
    """
    with jax.enable_x64(x64):
        return _run_solvers(key, d, width, batch, gamma, input_scale, iters, memory, tol, fit_window)


def _run_solvers(key, d, width, batch, gamma, input_scale, iters, memory, tol, fit_window):
    layer_key, x_key = jax.random.split(key)
    params = init_deq(d, width, key=layer_key, gamma=gamma, input_scale=input_scale)
    xs = jax.random.normal(x_key, (batch, d))
    solvers = {
        "fixed-point": fixed_point_iteration(),
        "Anderson": anderson(memory),
        "Broyden": broyden(),
    }

    @jax.jit
    def compute(p):
        traces = {}
        for name, s in solvers.items():
            run = lambda x, s=s: solve(s, lambda z: deq_map(p, z, x), jnp.zeros((width,), xs.dtype), iters=iters)
            traces[name] = jax.vmap(run)(xs)
        jacs = jax.vmap(jacobian_z, in_axes=(None, 0, 0))(p, traces["Anderson"].z, xs)
        return {k: v.residuals for k, v in traces.items()}, jax.vmap(spectral_radius)(jacs)

    per_example, rho = compute(params)
    residuals = {}
    for name, r in per_example.items():
        r = np.sqrt(np.sum(np.asarray(r, dtype=float) ** 2, axis=0))
        residuals[name] = r / r[0]
    plain = np.asarray(per_example["fixed-point"], dtype=float)
    plain = plain / plain[:, :1]
    ks = np.arange(iters)
    rates = np.asarray([_fit_rate(ks, r, *fit_window) for r in plain])
    return SolversResult(
        residuals=residuals,
        iters_to_tol={k: _iters_to_tol(v, tol) for k, v in residuals.items()},
        tol=tol,
        rho=np.asarray(rho, dtype=float),
        fitted_rate=rates,
        plain_per_example=plain,
        bound=float(jnp.linalg.norm(params.w, ord=2)),
    )


def krylov_rate(rho):
    """Chebyshev rate ``(1 - sqrt(1 - rho^2)) / rho`` of a Krylov method (GMRES) on ``(I - J) z = c``.

    When ``J`` is diagonalizable with real eigenvalues in ``[-rho, rho]``, the
    spectrum of ``I - J`` lies in ``[1 - rho, 1 + rho]`` (condition number
    ``kappa = (1 + rho)/(1 - rho)``) and the minimal residual polynomial gives
    ``||r_k|| <= 2 kappa(V) q^k ||r_0||`` with
    ``q = (sqrt(kappa) - 1)/(sqrt(kappa) + 1) = (1 - sqrt(1 - rho^2))/rho``,
    where ``V`` diagonalizes ``J``. For ``rho -> 1``, ``log(1/q) ~ sqrt(2 (1 - rho))``
    against ``log(1/rho) ~ 1 - rho`` for plain iteration: the square root of the
    iteration count.

    References:
        Saad & Schultz (1986), doi:10.1137/0907058.
        Walker & Ni (2011), doi:10.1137/10078356X (Anderson with full memory = GMRES).
    """
    return (1.0 - np.sqrt(1.0 - np.asarray(rho) ** 2)) / np.asarray(rho)


# ---------------------------------------------------------------------------
# Verified result 3: ResNets are Euler steps of an ODE
# ---------------------------------------------------------------------------


class VectorField(NamedTuple):
    """``g(z) = A tanh(B z + c)``: a one-hidden-layer network as an ODE's right-hand side."""

    a: Array  # (d, hidden)
    b: Array  # (hidden, d)
    c: Array  # (hidden,)


def init_vector_field(d: int, hidden: int, *, key: Array, scale: float = 1.5) -> VectorField:
    """Random vector field ``g(z) = A tanh(B z + c)``, ``B ~ N(0, scale^2/d)``, ``A ~ N(0, scale^2/hidden)``."""
    a_key, b_key, c_key = jax.random.split(key, 3)
    return VectorField(
        a=scale / jnp.sqrt(hidden) * jax.random.normal(a_key, (d, hidden)),
        b=scale / jnp.sqrt(d) * jax.random.normal(b_key, (hidden, d)),
        c=jax.random.normal(c_key, (hidden,)),
    )


def vector_field(params: VectorField, z: Array) -> Array:
    """``g(z) = A tanh(B z + c)`` for one state ``z`` of shape ``(d,)``."""
    return params.a @ jnp.tanh(params.b @ z + params.c)


def resnet(params: VectorField, x: Array, depth: Array, *, max_depth: int) -> Array:
    """Residual network ``z_{l+1} = z_l + g(z_l) / L`` with ``L = depth`` (traced), ``z_0 = x``.

    This is the explicit Euler scheme with step ``h = 1/L`` for ``dz/dt = g(z)``
    on ``[0, 1]``; steps ``l >= depth`` of the ``max_depth``-long scan are identity.
    """
    h = 1.0 / depth

    def body(z, step):
        return jnp.where(step < depth, z + h * vector_field(params, z), z), None

    z, _ = jax.lax.scan(body, x, jnp.arange(max_depth))
    return z


def rk4(rhs: Callable[[Array], Array], y0: Array, *, steps: int, t1: float = 1.0) -> tuple[Array, Array]:
    """Classical Runge-Kutta 4 for ``dy/dt = rhs(y)`` on ``[0, t1]``; returns ``(y(t1), path)``.

    The global error is ``O(h^4)``, ``h = t1 / steps``; ``path`` has shape
    ``(steps + 1, *y0.shape)`` and includes ``y0``.
    """
    h = t1 / steps

    def body(y, _):
        k1 = rhs(y)
        k2 = rhs(y + 0.5 * h * k1)
        k3 = rhs(y + 0.5 * h * k2)
        k4 = rhs(y + h * k3)
        y = y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return y, y

    y, path = jax.lax.scan(body, y0, None, length=steps)
    return y, jnp.concatenate([y0[None], path], axis=0)


def euler_error_coefficient(params: VectorField, x: Array, *, steps: int = 1024) -> Array:
    """Leading coefficient ``e(1)`` of Euler's global error ``z_L - z(1) = e(1)/L + O(1/L^2)``.

    ``e`` solves the variational equation driven by the local error
    ``-(h^2/2) z''`` (with ``z'' = J_g(z) g(z)``):

        e' = J_g(z(t)) e - (1/2) J_g(z(t)) g(z(t)),   e(0) = 0,

    integrated jointly with ``z' = g(z)`` by ``rk4``.

    References:
        Hairer, Norsett & Wanner (1993), Solving Ordinary Differential Equations I,
        Theorem II.8.1 (asymptotic expansion of the global error).
    """

    def rhs(state):
        z, e = state
        gz, jv = jax.jvp(lambda zz: vector_field(params, zz), (z,), (e - 0.5 * vector_field(params, z),))
        return jnp.stack([gz, jv])

    final, _ = rk4(rhs, jnp.stack([x, jnp.zeros_like(x)]), steps=steps)
    return final[1]


class ResNetODEResult(NamedTuple):
    """ResNet (Euler) versus the ODE solution (``run_resnet_ode``).

    Attributes:
        depths: ``L`` values.
        error: ``mean_x ||z_L(x) - z(1; x)||`` (ResNet output vs RK4 reference).
        theory: ``mean_x ||e(1; x)|| / L`` (leading-order Euler error).
        slope, stderr: log-log fit of ``error`` against ``L`` (theory: -1).
        paths: RK4 paths of the first few inputs, ``(n_show, steps + 1, d)``.
        layers: ResNet states ``z_0..z_L`` for the first inputs at ``show_depth``.
        show_depth: the depth drawn as layers.
    """

    depths: np.ndarray
    error: np.ndarray
    theory: np.ndarray
    slope: float
    stderr: float
    paths: np.ndarray
    layers: np.ndarray
    show_depth: int


def run_resnet_ode(
    *,
    key: Array,
    d: int = 2,
    hidden: int = 64,
    n_inputs: int = 256,
    depths: Sequence[int] = (2, 4, 8, 16, 32, 64, 128, 256, 512),
    ref_steps: int = 1024,
    n_show: int = 12,
    show_depth: int = 6,
) -> ResNetODEResult:
    """Verified result 3: a ResNet with step ``1/L`` approaches the ODE flow with error ``~ 1/L``.

    For every input ``x ~ N(0, I_d)``: the ResNet ``z_{l+1} = z_l + g(z_l)/L``
    (``L`` in ``depths``, all in one ``vmap``) against ``z(1)`` from RK4 with
    ``ref_steps`` steps (truncation ``O(ref_steps^-4)``, far below the Euler
    error); the theory line is ``mean ||e(1)||/L`` from ``euler_error_coefficient``.

    Args:
        key: randomness (vector field, inputs).
        d, hidden: state dimension and hidden width of ``g``.
        n_inputs: number of inputs averaged over.
        depths: ResNet depths ``L``.
        ref_steps: RK4 steps of the reference solution.
        n_show: inputs whose trajectories are returned for plotting.
        show_depth: ResNet depth whose layer-by-layer states are returned.

    Returns:
        A ``ResNetODEResult``.
    """
    g_key, x_key = jax.random.split(key)
    params = init_vector_field(d, hidden, key=g_key)
    xs = jax.random.normal(x_key, (n_inputs, d))
    max_depth = int(max(max(depths), show_depth))

    @jax.jit
    def compute(p, xs, depth_array):
        ref, paths = jax.vmap(lambda x: rk4(lambda z: vector_field(p, z), x, steps=ref_steps))(xs)
        coef = jax.vmap(lambda x: euler_error_coefficient(p, x, steps=ref_steps))(xs)
        outs = jax.vmap(
            lambda depth: jax.vmap(lambda x: resnet(p, x, depth, max_depth=max_depth))(xs)
        )(depth_array)
        err = jnp.mean(jnp.linalg.norm(outs - ref[None], axis=-1), axis=-1)
        return err, jnp.mean(jnp.linalg.norm(coef, axis=-1)), paths[:n_show]

    depth_array = jnp.asarray(np.asarray(depths), dtype=jnp.float32)
    err, coef, paths = compute(params, xs, depth_array)
    ls = np.asarray(depths, dtype=float)
    err = np.asarray(err, dtype=float)
    fit = metrics.loglog_slope(ls, err)

    h = 1.0 / show_depth

    def layer_step(z, _):
        z = z + h * jax.vmap(lambda zz: vector_field(params, zz))(z)
        return z, z

    _, layers = jax.lax.scan(layer_step, xs[:n_show], None, length=show_depth)
    layers = jnp.concatenate([xs[None, :n_show], layers], axis=0).transpose(1, 0, 2)
    return ResNetODEResult(
        depths=np.asarray(depths),
        error=err,
        theory=float(coef) / ls,
        slope=fit.slope,
        stderr=fit.stderr,
        paths=np.asarray(paths),
        layers=np.asarray(layers),
        show_depth=show_depth,
    )


# ---------------------------------------------------------------------------
# Verified result 4: memory of the backward pass
# ---------------------------------------------------------------------------


class MemoryResult(NamedTuple):
    """Compiled temporary memory of the gradient (``run_memory``).

    Attributes:
        iters: numbers of solver iterations / unrolled layers ``K``.
        unrolled_bytes: ``temp_size_in_bytes`` of ``jit(grad(loss_unrolled))``.
        implicit_bytes: the same for the implicit layer.
        bytes_per_iter: fitted slope of ``unrolled_bytes`` in ``K``.
        residual_bytes_per_iter: theory: bytes reverse mode saves per layer
            (``saved_bytes_per_layer``: the ``(B, N)`` residuals of one layer's VJP).
        array_bytes: size of one ``(batch, N)`` float32 array.
    """

    iters: np.ndarray
    unrolled_bytes: np.ndarray
    implicit_bytes: np.ndarray
    bytes_per_iter: float
    residual_bytes_per_iter: int
    array_bytes: int


def saved_bytes_per_layer(params: DEQParams, xs: Array) -> int:
    """Bytes reverse mode keeps for one batched layer ``Z -> f(Z, X)``, ``Z`` of shape ``(B, N)``.

    The residuals are read off the closure of ``jax.vjp`` (the arrays its
    backward function holds); only those of the batch's shape ``(B, N)`` are
    counted, since the parameter-sized ones (``W``) are loop-invariant and the
    scan stores them once. For ``tanh(W z + U x + b)`` these are ``z``,
    ``tanh(.)`` and ``1 - tanh(.)^2``.
    """
    zs = jnp.zeros((xs.shape[0], params.w.shape[0]))

    def layer(p, z):
        return jax.vmap(lambda zz, x: deq_map(p, zz, x))(z, xs)

    _, vjp_fn = jax.vjp(layer, params, zs)
    leaves = jax.tree.leaves(vjp_fn)
    return int(sum(leaf.size * leaf.dtype.itemsize for leaf in leaves if leaf.shape == zs.shape))


def run_memory(
    *,
    key: Array,
    d: int = 16,
    width: int = 128,
    batch: int = 256,
    iters: Sequence[int] = (10, 30, 100, 300, 1000),
) -> MemoryResult:
    """Verified result 4: implicit backward memory is flat in ``K``, unrolled grows like ``K``.

    Nothing is run: each gradient is lowered and compiled, and XLA's
    ``memory_analysis().temp_size_in_bytes`` (scratch memory of the whole program,
    forward and backward) is read off. Unrolled: reverse mode keeps, per layer,
    the residuals of one ``tanh`` layer (here ``z_k``, ``f(z_k)`` and
    ``1 - f(z_k)^2``: three ``(B, N)`` arrays), so the slope is
    ``residual_bytes_per_iter``. Implicit: one solver state, whatever ``K``.

    Args:
        key: randomness (layer, inputs).
        d, width, batch: sizes.
        iters: values of ``K``.

    Returns:
        A ``MemoryResult``.
    """
    layer_key, x_key = jax.random.split(key)
    params = init_deq(d, width, key=layer_key)
    xs = jax.random.normal(x_key, (batch, d))

    def temp_bytes(loss):
        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return int(compiled.memory_analysis().temp_size_in_bytes)

    unrolled_bytes, implicit_bytes = [], []
    for k in iters:
        layer = make_implicit_layer(deq_map, solver=fixed_point_iteration(), iters=int(k))
        implicit_bytes.append(temp_bytes(lambda p, layer=layer: jnp.sum(jax.vmap(layer, in_axes=(None, 0))(p, xs))))
        unrolled_bytes.append(
            temp_bytes(
                lambda p, k=k: jnp.sum(jax.vmap(lambda x: unrolled(deq_map, p, x, iters=int(k)))(xs))
            )
        )
    ks = np.asarray(iters)
    unrolled_bytes = np.asarray(unrolled_bytes)
    slope = np.polyfit(ks.astype(float), unrolled_bytes.astype(float), 1)[0]
    residual = saved_bytes_per_layer(params, xs)
    return MemoryResult(
        iters=ks,
        unrolled_bytes=unrolled_bytes,
        implicit_bytes=np.asarray(implicit_bytes),
        bytes_per_iter=float(slope),
        residual_bytes_per_iter=residual,
        array_bytes=batch * width * 4,
    )


# ---------------------------------------------------------------------------
# Monotone operator equilibrium networks
# ---------------------------------------------------------------------------


class MonDEQParams(NamedTuple):
    """Parameters of a monotone operator DEQ ``z = relu(W z + U x + b)``.

    ``W = (1 - m) I - A^T A + B - B^T`` so that ``I - W >= m I`` (strongly monotone).
    """

    a: Array  # (N, N)
    bmat: Array  # (N, N)
    u: Array  # (N, d)
    b: Array  # (N,)


def init_mondeq(d: int, width: int, *, key: Array, scale: float = 1.0) -> MonDEQParams:
    """Random monDEQ parameters; ``A, B ~ N(0, scale^2 / N)``, ``U ~ N(0, 1/d)``, ``b ~ N(0, 1)``."""
    a_key, b_key, u_key, c_key = jax.random.split(key, 4)
    s = scale / jnp.sqrt(width)
    return MonDEQParams(
        a=s * jax.random.normal(a_key, (width, width)),
        bmat=s * jax.random.normal(b_key, (width, width)),
        u=jax.random.normal(u_key, (width, d)) / jnp.sqrt(d),
        b=jax.random.normal(c_key, (width,)),
    )


def mondeq_weight(params: MonDEQParams, *, m: float) -> Array:
    """``W = (1 - m) I - A^T A + B - B^T``; then ``(I - W) + (I - W)^T = 2(m I + A^T A) >= 2 m I``.

    References:
        Winston & Kolter (2020), arXiv:2006.08591, Theorem 1.
    """
    n = params.a.shape[0]
    return (1.0 - m) * jnp.eye(n) - params.a.T @ params.a + params.bmat - params.bmat.T


def forward_backward_rate(w: Array, *, m: float, alpha: float) -> Array:
    """Contraction factor of forward-backward splitting: ``sqrt(1 - 2 alpha m + alpha^2 L^2)``, ``L = ||I - W||_2``.

    Forward-backward iterates ``z <- relu((1 - alpha) z + alpha (W z + U x + b))``;
    ``z -> z - alpha((I - W) z - c)`` is a contraction with this factor when
    ``I - W`` is ``m``-strongly monotone and ``L``-Lipschitz, and ``relu`` (a
    proximal map) is non-expansive. The factor is ``< 1`` for
    ``0 < alpha < 2 m / L^2`` and smallest, ``sqrt(1 - m^2 / L^2)``, at
    ``alpha = m / L^2``.
    """
    lip = jnp.linalg.norm(jnp.eye(w.shape[0]) - w, ord=2)
    return jnp.sqrt(1.0 - 2.0 * alpha * m + alpha**2 * lip**2)


class MonDEQResult(NamedTuple):
    """Naive iteration versus forward-backward splitting on a monDEQ (``run_mondeq``).

    Attributes:
        naive: relative batch residual of ``z <- relu(W z + U x + b)``, ``(iters,)``.
        splitting: the same for forward-backward splitting with step ``alpha``.
        bound: ``rate**k`` (the theory's upper bound on the error contraction).
        rate: ``forward_backward_rate``.
        fitted_rate: measured per-iteration factor of the splitting residual.
        norm_w: ``||W||_2`` (greater than 1: naive iteration is not a contraction).
        alpha: the step.
        min_monotonicity: smallest eigenvalue of the symmetric part of ``I - W`` (``>= m``).
    """

    naive: np.ndarray
    splitting: np.ndarray
    bound: np.ndarray
    rate: float
    fitted_rate: float
    norm_w: float
    alpha: float
    min_monotonicity: float


def run_mondeq(
    *,
    key: Array,
    d: int = 16,
    width: int = 128,
    batch: int = 32,
    m: float = 1.0,
    scale: float = 0.6,
    iters: int = 100,
) -> MonDEQResult:
    """Monotone operator DEQ: forward-backward splitting converges where naive iteration cannot.

    ``W = (1 - m) I - A^T A + B - B^T`` has ``||W||_2 > 1`` (``A^T A`` and
    ``B - B^T`` are large), so ``z <- relu(W z + U x + b)`` is not a contraction;
    forward-backward splitting with ``alpha = m / L^2`` contracts at the rate
    ``sqrt(1 - m^2/L^2)`` (``forward_backward_rate``) for every input.

    Args:
        key: randomness (layer, inputs).
        d, width, batch: sizes.
        m: monotonicity parameter.
        scale: scale of ``A`` and ``B``.
        iters: iterations of each method.

    Returns:
        A ``MonDEQResult``.
    """
    p_key, x_key = jax.random.split(key)
    params = init_mondeq(d, width, key=p_key, scale=scale)
    xs = jax.random.normal(x_key, (batch, d))
    w = mondeq_weight(params, m=m)
    lip = float(jnp.linalg.norm(jnp.eye(width) - w, ord=2))
    alpha = m / lip**2
    rate = float(forward_backward_rate(w, m=m, alpha=alpha))

    def naive_map(z, x):
        return jax.nn.relu(w @ z + params.u @ x + params.b)

    def splitting_map(z, x):
        return jax.nn.relu((1.0 - alpha) * z + alpha * (w @ z + params.u @ x + params.b))

    @jax.jit
    def compute():
        plain = fixed_point_iteration()
        out = []
        for fn in (naive_map, splitting_map):
            trace = jax.vmap(lambda x, fn=fn: solve(plain, lambda z: fn(z, x), jnp.zeros((width,)), iters=iters))(xs)
            r = jnp.sqrt(jnp.sum(trace.residuals**2, axis=0))
            out.append(r / r[0])
        return out

    naive, splitting = (np.asarray(v, dtype=float) for v in compute())
    ks = np.arange(iters)
    fitted = _fit_rate(ks, splitting, 1e-6, 1e-1)
    sym = jnp.eye(width) - w
    sym = (sym + sym.T) / 2.0
    return MonDEQResult(
        naive=naive,
        splitting=splitting,
        bound=rate ** ks.astype(float),
        rate=rate,
        fitted_rate=fitted,
        norm_w=float(jnp.linalg.norm(w, ord=2)),
        alpha=alpha,
        min_monotonicity=float(jnp.min(jnp.linalg.eigvalsh(sym))),
    )
