"""Week 7 (deep equilibrium models): the verified results at tiny size, and unit tests.

The experiments run in float32 (except ``run_solvers``, float64 by default), so
"equal" means "equal up to float32 round-off": machine epsilon is 1.2e-7, and
the relative errors of sums over a few hundred terms land around 1e-7 to 1e-6.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlcourse import metrics
import equilibrium

EPS32 = float(jnp.finfo(jnp.float32).eps)


# ---------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False])
def test_init_deq_has_the_requested_spectral_norm(key, symmetric):
    params = equilibrium.init_deq(5, 24, key=key, gamma=0.8, symmetric=symmetric)
    assert float(jnp.linalg.norm(params.w, ord=2)) == pytest.approx(0.8, rel=1e-5)
    if symmetric:
        np.testing.assert_allclose(params.w, params.w.T, atol=1e-7)
    assert params.u.shape == (24, 5) and params.b.shape == (24,)


def test_jacobian_z_matches_autodiff(key):
    p_key, z_key, x_key = jax.random.split(key, 3)
    params = equilibrium.init_deq(4, 10, key=p_key)
    z = jax.random.normal(z_key, (10,))
    x = jax.random.normal(x_key, (4,))
    expected = jax.jacfwd(lambda zz: equilibrium.deq_map(params, zz, x))(z)
    np.testing.assert_allclose(equilibrium.jacobian_z(params, z, x), expected, rtol=1e-5, atol=1e-6)


def test_spectral_radius_of_a_rotation_and_a_triangular_matrix():
    rotation = jnp.array([[0.0, -0.5], [0.5, 0.0]])  # eigenvalues +-0.5i
    assert float(equilibrium.spectral_radius(rotation)) == pytest.approx(0.5, rel=1e-6)
    triangular = jnp.array([[0.3, 5.0], [0.0, -0.7]])  # eigenvalues on the diagonal
    assert float(equilibrium.spectral_radius(triangular)) == pytest.approx(0.7, rel=1e-6)


# ---------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------


def _linear_problem(key, n=8, rho=0.9):
    """fn(z) = A z + c with a symmetric A of spectral radius rho: z* = (I - A)^{-1} c."""
    a_key, c_key = jax.random.split(key)
    a = jax.random.normal(a_key, (n, n))
    a = (a + a.T) / 2
    a = rho * a / jnp.max(jnp.abs(jnp.linalg.eigvalsh(a)))
    c = jax.random.normal(c_key, (n,))
    return (lambda z: a @ z + c), jnp.linalg.solve(jnp.eye(n) - a, c)


@pytest.mark.parametrize(
    "solver", [equilibrium.fixed_point_iteration(), equilibrium.anderson(4), equilibrium.broyden()], ids=["plain", "anderson", "broyden"]
)
def test_solvers_find_the_fixed_point_of_a_linear_map(key, solver):
    fn, z_star = _linear_problem(key, rho=0.7)
    trace = equilibrium.solve(solver, fn, jnp.zeros(8), iters=120)
    # 0.7^120 ~ 1e-19: all three are at float32 round-off, ~1e-6 relative.
    np.testing.assert_allclose(trace.z, z_star, rtol=1e-4, atol=1e-4)
    assert trace.residuals.shape == (120,)
    # fixed_point runs the same updates without keeping the history.
    np.testing.assert_allclose(equilibrium.fixed_point(solver, fn, jnp.zeros(8), iters=120), trace.z, rtol=1e-6, atol=1e-7)


def test_first_update_of_every_solver_is_a_plain_step(key):
    fn, _ = _linear_problem(key)
    z0 = jnp.ones(8)
    for solver in (equilibrium.fixed_point_iteration(), equilibrium.anderson(5), equilibrium.broyden()):
        r, state = solver.update(fn, solver.init(fn, z0))
        np.testing.assert_allclose(state.z, fn(z0), rtol=1e-5, atol=1e-6)
        assert float(r) == pytest.approx(float(jnp.linalg.norm(fn(z0) - z0)), rel=1e-5)


def test_anderson_with_full_memory_terminates_like_gmres(key):
    """For a linear map in R^n, Anderson with memory >= n + 1 is GMRES (Walker & Ni 2011):
    it reaches the solution in at most n + 1 evaluations, where plain iteration
    at rho = 0.9 needs about log(1e-4)/log(0.9) ~ 90."""
    fn, _ = _linear_problem(key, n=8, rho=0.9)
    r = equilibrium.solve(equilibrium.anderson(12, reg=1e-7), fn, jnp.zeros(8), iters=20).residuals
    r = np.asarray(r) / float(r[0])
    # n + 1 = 9 steps in exact arithmetic; a few more absorb float32 round-off in the Gram solve.
    assert np.argmax(r < 1e-4) <= 12
    plain = np.asarray(equilibrium.solve(equilibrium.fixed_point_iteration(), fn, jnp.zeros(8), iters=20).residuals)
    assert plain[-1] / plain[0] > 1e-2


def test_broyden_update_satisfies_the_secant_equation(key):
    fn, _ = _linear_problem(key)
    solver = equilibrium.broyden()
    state = solver.init(fn, jnp.zeros(8))
    _, state = solver.update(fn, state)
    old = state
    _, new = solver.update(fn, old)
    dz, dg = new.z - old.z, new.g - old.g
    # Rank-one update built so that B_{k+1} dg = dz exactly (up to round-off).
    np.testing.assert_allclose(new.inv_jac @ dg, dz, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Verified result 1: implicit gradient = unrolled gradient
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gradient_check():
    return equilibrium.run_gradient_check(
        key=jax.random.key(1), width=32, batch=4, solver_iters=120, depths=tuple(range(0, 61, 3))
    )


def test_implicit_gradient_equals_unrolled_gradient_once_converged(gradient_check):
    res = gradient_check
    # At K = 60, rho^K < 0.75^60 ~ 3e-8: the unrolled gradient has converged, and
    # what is left is float32 round-off (observed ~3e-7 ~ 3 eps). 1e-5 leaves a
    # 30x margin and is 1000x below the error of a transposed adjoint (next test).
    assert np.all(gradient_check.rho < 0.75)
    assert np.all(res.rel_error[:, -1] < 1e-5)
    # K = 0: the unrolled network ignores the parameters, so the error is exactly 1.
    np.testing.assert_allclose(res.rel_error[:, 0], 1.0, rtol=1e-6)


def test_unrolled_gradient_error_decays_at_the_spectral_radius(gradient_check):
    res = gradient_check
    # Theory: error ~ poly(K) rho^K. Over the ~20 depths of the decaying window the
    # polynomial factor shifts a pure exponential fit by a few percent (observed
    # up to 4% at full size), hence 10% per example. Using rho(W) = ||W|| = 0.95
    # instead of rho(J(z*)) ~ 0.6 would miss by 50%.
    np.testing.assert_allclose(res.fitted_rate, res.rho, rtol=0.10)
    assert np.all(res.rho < res.bound)


def _transposed_adjoint_layer(iters):
    """A deliberately wrong implicit layer: it solves u = v + J u (J instead of J^T)."""
    solver = equilibrium.fixed_point_iteration()

    @jax.custom_vjp
    def layer(params, x):
        return equilibrium.fixed_point(solver, lambda z: equilibrium.deq_map(params, z, x), jnp.zeros_like(params.b), iters=iters)

    def fwd(params, x):
        z = layer(params, x)
        return z, (params, x, z)

    def bwd(res, v):
        params, x, z = res
        jvp = lambda u: jax.jvp(lambda zz: equilibrium.deq_map(params, zz, x), (z,), (u,))[1]
        u = equilibrium.fixed_point(solver, lambda u: v + jvp(u), v, iters=iters)
        return jax.vjp(lambda p, xx: equilibrium.deq_map(p, z, xx), params, x)[1](u)

    layer.defvjp(fwd, bwd)
    return layer


def _problem(key):
    """A layer, an input and a loss 0.5 ||R z - 1||^2 of the layer's output."""
    p_key, x_key, r_key = jax.random.split(key, 3)
    params = equilibrium.init_deq(6, 24, key=p_key)
    x = jax.random.normal(x_key, (6,))
    readout = jax.random.normal(r_key, (3, 24))

    def loss(p, forward):
        return 0.5 * jnp.sum((readout @ forward(p, x) - 1.0) ** 2)

    return params, x, loss


def _grad(loss, params, forward):
    return jax.jit(jax.grad(lambda p: loss(p, forward)))(params)


def _unrolled(p, x):
    return equilibrium.unrolled(equilibrium.deq_map, p, x, iters=150)


def test_the_comparison_catches_a_transposed_adjoint(key):
    params, _, loss = _problem(key)
    right = equilibrium.make_implicit_layer(equilibrium.deq_map, solver=equilibrium.fixed_point_iteration(), iters=150)
    g_unrolled = _grad(loss, params, _unrolled)
    g_right = _grad(loss, params, right)
    g_wrong = _grad(loss, params, _transposed_adjoint_layer(150))
    rel = lambda a, b: float(equilibrium._tree_relative_error(a, b))
    assert rel(g_right, g_unrolled) < 1e-5
    assert rel(g_wrong, g_unrolled) > 1e-2  # J != J^T since diag(1 - z^2) W is not symmetric


def test_implicit_gradient_matches_central_differences(key):
    """An independent check that uses no adjoint: central differences along a fixed direction.

    Step 1e-2: truncation O(step^2 L''') ~ 1e-4 relative, float32 round-off
    ~ eps32 |L| / step ~ 1e-5 relative; tolerance 2e-3.
    """
    params, _, loss = _problem(key)
    layer = equilibrium.make_implicit_layer(equilibrium.deq_map, solver=equilibrium.anderson(5), iters=60)
    g = _grad(loss, params, layer)
    direction = jax.tree.map(lambda a: jnp.ones_like(a) / jnp.sqrt(a.size), params)
    step = 1e-2
    plus = jax.tree.map(lambda a, d: a + step * d, params, direction)
    minus = jax.tree.map(lambda a, d: a - step * d, params, direction)
    value = jax.jit(lambda p: loss(p, layer))
    numeric = (value(plus) - value(minus)) / (2 * step)
    analytic = sum(jnp.sum(a * d) for a, d in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
    assert float(analytic) == pytest.approx(float(numeric), rel=2e-3)


def test_implicit_gradient_with_respect_to_the_input(key):
    """dz*/dx = (I - J)^{-1} diag(1 - z*^2) U, from a dense linear solve."""
    p_key, x_key = jax.random.split(key)
    params = equilibrium.init_deq(5, 16, key=p_key, symmetric=False, gamma=0.9)
    x = jax.random.normal(x_key, (5,))
    layer = equilibrium.make_implicit_layer(equilibrium.deq_map, solver=equilibrium.broyden(), iters=40)
    jac_x = jax.jit(jax.jacrev(lambda xx: layer(params, xx)))(x)
    z = jax.jit(layer)(params, x)
    jac_z = equilibrium.jacobian_z(params, z, x)
    dense = jnp.linalg.solve(jnp.eye(16) - jac_z, (1 - z**2)[:, None] * params.u)
    np.testing.assert_allclose(jac_x, dense, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Verified result 2: solvers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def solver_run():
    # float64 (the default): the fit window [1e-13, 1e-7] needs ~400 steps at rho ~ 0.93.
    return equilibrium.run_solvers(key=jax.random.key(0), width=32, batch=6, iters=400)


def test_plain_iteration_converges_at_the_spectral_radius(solver_run):
    res = solver_run
    # Per example, the residual is a sum of eigenmodes of J(z*); in the fit window
    # (relative residual 1e-13..1e-7, float64) the slowest mode dominates, but a
    # second mode of nearly equal modulus can still bias the fitted rate downwards
    # by ~1% (full size: 0.988-1.000 of rho), hence 3%. A rate computed from
    # ||W|| = 0.99 instead of rho(J) ~ 0.9 would miss by 10%.
    np.testing.assert_allclose(res.fitted_rate, res.rho, rtol=0.03)
    # Banach's constant ||W||_2 bounds the rate.
    assert np.all(res.rho <= res.bound + 1e-6)


def test_anderson_and_broyden_need_far_fewer_iterations(solver_run):
    res = solver_run
    its = res.iters_to_tol
    assert all(k > 0 for k in its.values()), its
    # Full size: ~90-130 plain vs ~35 Anderson and Broyden. For a linear problem with
    # spectrum in [-rho, rho], Krylov methods gain a factor
    # log((1 - sqrt(1 - rho^2)) / rho) / log(rho) ~ 6 at rho = 0.95; memory 5 and the
    # nonlinearity cost part of it. Require a factor 2.
    assert its["Anderson"] <= its["fixed-point"] / 2
    assert its["Broyden"] <= its["fixed-point"] / 2


# ---------------------------------------------------------------------------
# Verified result 3: ResNet = Euler scheme, error ~ 1/L
# ---------------------------------------------------------------------------


def test_rk4_is_fourth_order_on_a_linear_ode():
    a = jnp.array([[0.0, 1.0], [-1.0, -0.1]])
    y0 = jnp.array([1.0, 0.0])
    exact = jax.scipy.linalg.expm(4.0 * a) @ y0
    # On [0, 4] with 8-32 steps the truncation error (1e-3..1e-5) dominates float32 round-off.
    errs = [
        float(jnp.linalg.norm(equilibrium.rk4(lambda y: a @ y, y0, steps=s, t1=4.0)[0] - exact)) for s in (8, 16, 32)
    ]
    # Halving h divides the error by 2^4 = 16 (up to O(h) corrections): 12-20.
    assert 12 < errs[0] / errs[1] < 20 and 12 < errs[1] / errs[2] < 20


def test_resnet_approaches_the_ode_with_error_one_over_depth(key):
    res = equilibrium.run_resnet_ode(key=key, n_inputs=16, depths=(4, 16, 64, 256, 1024), ref_steps=512)
    # The Euler error is e(1)/L + O(1/L^2); the O(1/L^2) term bends the log-log
    # line at small L (5% at L = 4), which moves the fitted slope by ~0.01.
    assert res.slope == pytest.approx(-1.0, abs=0.03)
    assert res.depths.max() / res.depths.min() >= 100  # two decades
    # Sharper: L * error converges to the leading coefficient mean ||e(1)||;
    # at L = 1024 the relative O(1/L) correction is ~1e-3. Tolerance 1%.
    assert res.error[-1] == pytest.approx(res.theory[-1], rel=1e-2)
    # A factor-2 bug (e.g. e' = J e - J g) would miss by 100%.
    assert np.all(np.abs(res.error / res.theory - 1) < 0.1)


# ---------------------------------------------------------------------------
# Verified result 4: memory of the backward pass
# ---------------------------------------------------------------------------


def test_backward_memory_is_flat_for_implicit_and_linear_for_unrolled(key):
    res = equilibrium.run_memory(key=key, d=5, width=24, batch=8, iters=(5, 20, 80))
    # XLA's temp allocation is deterministic: implicit is the same program for every K.
    assert len(set(res.implicit_bytes.tolist())) == 1
    # Unrolled: exactly the residuals of one layer's VJP per layer (3 arrays of
    # shape (B, N) here: z_k, tanh and 1 - tanh^2); allow one array of slack for
    # a different XLA schedule.
    assert res.residual_bytes_per_iter == 3 * res.array_bytes
    assert abs(res.bytes_per_iter - res.residual_bytes_per_iter) <= res.array_bytes
    assert res.unrolled_bytes[-1] > 10 * res.implicit_bytes[-1]


# ---------------------------------------------------------------------------
# Monotone operator equilibrium networks
# ---------------------------------------------------------------------------


def test_mondeq_weight_is_strongly_monotone(key):
    params = equilibrium.init_mondeq(3, 20, key=key, scale=2.0)
    w = equilibrium.mondeq_weight(params, m=0.3)
    sym = jnp.eye(20) - (w + w.T) / 2
    assert float(jnp.min(jnp.linalg.eigvalsh(sym))) >= 0.3 - 1e-4


def test_forward_backward_splitting_converges_within_its_bound(key):
    res = equilibrium.run_mondeq(key=key, width=32, batch=4, iters=100)
    assert res.norm_w > 1.0 and res.min_monotonicity >= 1.0 - 1e-4
    # ||z_k - z*|| <= r^k ||z_0 - z*|| gives residual_k / residual_0 <= (1 + r)/(1 - r) r^k.
    k = np.arange(res.splitting.size)
    bound = (1 + res.rate) / (1 - res.rate) * res.rate**k
    converged = res.splitting > 10 * EPS32  # below that, round-off
    assert np.all(res.splitting[converged] <= bound[converged])
    assert res.splitting[-1] < 1e-4
    # Plain iteration of z <- relu(W z + U x + b) does not converge for this W.
    assert res.naive[-1] > 1e-2


def test_loglog_slope_helper_recovers_minus_one():
    ls = np.array([4.0, 16.0, 64.0])
    assert metrics.loglog_slope(ls, 3.0 / ls).slope == pytest.approx(-1.0)


def test_krylov_rate_matches_condition_number_form():
    rho = np.array([0.5, 0.9, 0.99])
    kappa = (1 + rho) / (1 - rho)
    np.testing.assert_allclose(equilibrium.krylov_rate(rho), (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1), rtol=1e-12)
    # rho -> 1: log(1/q) ~ sqrt(2 (1 - rho)), the square root of plain iteration's log(1/rho) ~ 1 - rho.
    assert -np.log(equilibrium.krylov_rate(0.9999)) == pytest.approx(np.sqrt(2e-4), rel=0.02)


def test_full_memory_anderson_obeys_the_gmres_bound(key):
    """Walker & Ni (2011): for linear f and beta = 1, the Anderson iterate is f applied to the
    GMRES iterate, so ||g(z_{k+1})|| <= rho * ||r_k^GMRES|| <= 2 rho q^k ||g(z_0)|| for J
    symmetric with spectrum in [-rho, rho] (kappa(V) = 1), q = krylov_rate(rho)."""
    fn, _ = _linear_problem(key, n=30, rho=0.95)
    # reg = 1e-7: small enough not to spoil the Krylov property over 25 steps, large
    # enough for the float32 solve with duplicated (not yet filled) history slots.
    r = np.asarray(equilibrium.solve(equilibrium.anderson(40, reg=1e-7), fn, jnp.zeros(30), iters=25).residuals)
    r = r / r[0]
    k = np.arange(1, 25)
    bound = 2 * 0.95 * equilibrium.krylov_rate(0.95) ** (k - 1)
    # Observed: at most 0.3 of the bound. A plain iteration (rate 0.95) violates it from k ~ 5 on.
    assert np.all(r[1:] <= bound)
    plain = np.asarray(equilibrium.solve(equilibrium.fixed_point_iteration(), fn, jnp.zeros(30), iters=25).residuals)
    assert np.any(plain[1:] / plain[0] > bound)
