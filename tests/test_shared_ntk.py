"""Tests of dlcourse.ntk: the analytic NTK against Monte Carlo and wide networks, the
empirical NTK's three implementations against each other and against an explicit
Jacobian, and the kernel-regression formulas against gradient descent on a linear model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from dlcourse import mlp, ntk

SW, SB = 2.0**0.5, 0.5


def _inputs(key, n=6, d=3):
    return jax.random.normal(key, (n, d))


def test_relu_expectations_match_monte_carlo(key):
    """Arc-cosine closed forms vs 400k Gaussian samples, within 5 standard errors."""
    cov = jnp.array([[1.3, -0.4], [-0.4, 0.7]])
    z = jax.random.normal(key, (400_000, 2)) @ jnp.linalg.cholesky(cov).T
    u, v = z[:, 0], z[:, 1]
    e_phi, e_dphi = ntk.relu_expectations(cov[0, 1], cov[0, 0], cov[1, 1])
    for exact, samples in [(e_phi, jax.nn.relu(u) * jax.nn.relu(v)), (e_dphi, (u > 0) * (v > 0) * 1.0)]:
        se = jnp.std(samples) / math.sqrt(samples.size)
        assert abs(jnp.mean(samples) - exact) < 5 * se


def test_relu_expectations_diagonal_and_orthogonal():
    """E[relu(u)^2] = k/2, E[1{u>0}] = 1/2; independent inputs give k/(2 pi) and 1/4."""
    e_phi, e_dphi = ntk.relu_expectations(jnp.float32(2.0), 2.0, 2.0)
    assert e_phi == pytest.approx(1.0, rel=1e-3) and e_dphi == pytest.approx(0.5, abs=1e-3)
    e_phi, e_dphi = ntk.relu_expectations(jnp.float32(0.0), 2.0, 2.0)
    assert e_phi == pytest.approx(2.0 / (2 * math.pi), rel=1e-5) and e_dphi == pytest.approx(0.25, rel=1e-5)


def test_relu_kernels_depth_zero_is_linear(key):
    x = _inputs(key)
    k = ntk.relu_kernels(x, depth=0, sigma_w=SW, sigma_b=SB)
    expected = SW**2 * x @ x.T / x.shape[1] + SB**2
    np.testing.assert_allclose(k.ntk, expected, rtol=1e-6)
    np.testing.assert_allclose(k.nngp, expected, rtol=1e-6)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_relu_ntk_diagonal_closed_form(key, depth):
    """At He scaling without bias, Sigma^l(x,x) = 2|x|^2/d and Sigmadot = 1 on the diagonal,
    so Theta^{L+1}(x, x) = (L + 1) 2 |x|^2 / d exactly (a factor bug in the recursion breaks it)."""
    x = _inputs(key)
    k = ntk.relu_kernels(x, depth=depth, sigma_w=SW, sigma_b=0.0)
    sq = 2.0 * jnp.sum(x**2, axis=1) / x.shape[1]
    np.testing.assert_allclose(jnp.diag(k.ntk), (depth + 1) * sq, rtol=1e-4)
    np.testing.assert_allclose(jnp.diag(k.nngp), sq, rtol=1e-4)


def test_relu_kernels_cross_block_and_symmetry(key):
    """K(x1, x2) is the off-diagonal block of K on the union, and K is symmetric PSD."""
    x = _inputs(key, n=7)
    full = ntk.relu_ntk(x, depth=3, sigma_w=SW, sigma_b=SB)
    block = ntk.relu_ntk(x[:3], x[3:], depth=3, sigma_w=SW, sigma_b=SB)
    np.testing.assert_allclose(block, full[:3, 3:], rtol=1e-5)
    np.testing.assert_allclose(full, full.T, rtol=1e-5)
    assert jnp.linalg.eigvalsh(full)[0] > -1e-4


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_empirical_converges_to_analytic(key, depth):
    """dlcourse.mlp networks (init_mlp, apply_mlp, NTK parametrization, biases) at width 2048:
    the relative error of the empirical kernel is about c / sqrt(N) with c ~ 1.5-2.5 (measured,
    mean over seeds); we allow 5 / sqrt(N) = 0.11 for the mean over 4 seeds. A wrong bias or
    weight scale in the recursion gives an O(1) error and fails; so does a kernel off by a factor."""
    width, seeds = 2048, 4
    x_key, net_key = jax.random.split(key)
    x = _inputs(x_key, n=5, d=3)
    theory = ntk.relu_ntk(x, depth=depth, sigma_w=SW, sigma_b=SB)

    def error(k):
        params = mlp.init_mlp([3] + [width] * depth + [1], key=k, sigma_w=SW, sigma_b=SB, parametrization="ntk")
        emp = ntk.empirical_ntk_mlp(params, x, sigma_w=SW, sigma_b=SB)
        return jnp.linalg.norm(emp - theory) / jnp.linalg.norm(theory)

    err = jnp.mean(jax.vmap(error)(jax.random.split(net_key, seeds)))
    assert err < 5 / math.sqrt(width)


def test_nngp_is_output_covariance(key):
    """The NNGP kernel is the covariance of the outputs over initializations. Given the hidden
    layers, the 4000 units of a wide output layer are i.i.d. Gaussian with covariance
    sigma_w^2 x^L . x'^L / N + sigma_b^2, so one network with widths [2, 2048, 2048, 4000]
    gives 4000 samples. Tolerance: 5 Monte Carlo standard errors plus 0.1 times the largest
    entry for the O(N^{-1/2}) fluctuation of the hidden layer's own kernel at N = 2048."""
    x_key, net_key = jax.random.split(key)
    x = _inputs(x_key, n=3, d=2)
    theory = ntk.relu_nngp(x, depth=2, sigma_w=SW, sigma_b=SB)
    params = mlp.init_mlp([2, 2048, 2048, 4000], key=net_key, sigma_w=SW, sigma_b=SB, parametrization="ntk")
    f = mlp.apply_batch(params, x, sigma_w=SW, sigma_b=SB, parametrization="ntk").T  # (4000, n)
    prods = f[:, :, None] * f[:, None, :]
    se = jnp.std(prods, axis=0) / math.sqrt(f.shape[0])
    assert jnp.all(jnp.abs(jnp.mean(prods, axis=0) - theory) < 5 * se + 0.1 * jnp.max(theory))


def _model_and_inputs(key, parametrization="ntk", activation=jax.nn.relu):
    pkey, xkey = jax.random.split(key)
    params = mlp.init_mlp([3, 16, 12, 1], key=pkey, sigma_w=SW, sigma_b=SB, parametrization=parametrization)

    def apply_fn(p, x):
        return mlp.apply_mlp(p, x, sigma_w=SW, sigma_b=SB, parametrization=parametrization, activation=activation)[0]

    x = jax.random.normal(xkey, (7, 3))
    return params, apply_fn, x


@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
@pytest.mark.parametrize("activation", [jax.nn.relu, jnp.tanh])
def test_empirical_ntk_methods_agree_with_explicit_jacobian(key, parametrization, activation):
    """J J^T from an explicit flattened Jacobian (jacrev) is the ground truth; the Jacobian
    contraction, the NTK-vector products and the layer-wise MLP formula must equal it to
    float32 round-off (rtol 1e-4)."""
    params, apply_fn, x = _model_and_inputs(key, parametrization, activation)
    flat, unravel = ravel_pytree(params)
    jac = jax.jacrev(lambda th: jax.vmap(lambda xi: apply_fn(unravel(th), xi))(x))(flat)  # (n, P)
    truth = jac[:4] @ jac[2:].T
    x1, x2 = x[:4], x[2:]
    for method in ("jacobian", "ntvp"):
        np.testing.assert_allclose(ntk.empirical_ntk(apply_fn, params, x1, x2, method=method), truth, rtol=1e-4, atol=1e-5)
    layered = ntk.empirical_ntk_mlp(
        params, x1, x2, sigma_w=SW, sigma_b=SB, parametrization=parametrization, activation=activation
    )
    np.testing.assert_allclose(layered, truth, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ntk.empirical_ntk_mlp(params, x, parametrization=parametrization,
                                                     sigma_w=SW, sigma_b=SB, activation=activation),
                               jac @ jac.T, rtol=1e-4, atol=1e-5)


def test_ntk_vector_product(key):
    params, apply_fn, x = _model_and_inputs(key)
    v = jnp.linspace(-1.0, 1.0, 4)
    kern = ntk.empirical_ntk(apply_fn, params, x, x[3:])
    np.testing.assert_allclose(ntk.ntk_vector_product(apply_fn, params, x, x[3:], v), kern @ v, rtol=1e-4, atol=1e-5)


def test_unknown_options_raise(key):
    model_key, out_key = jax.random.split(key)
    params, apply_fn, x = _model_and_inputs(model_key)
    with pytest.raises(ValueError):
        ntk.empirical_ntk(apply_fn, params, x, method="nope")
    wide_out = mlp.init_mlp([3, 4, 2], key=out_key)
    with pytest.raises(ValueError):
        ntk.empirical_ntk_mlp(wide_out, x)


@pytest.mark.parametrize("lr_fraction", [0.3, 0.9])
def test_kernel_gd_matches_gradient_descent_on_linear_model(key, lr_fraction):
    """A linear model f = phi(x) . theta IS its linearization, with kernel K = Phi Phi^T:
    optax gradient descent on 1/(2n) ||Phi theta - y||^2 from theta = 0 must reproduce
    kernel_gd_predictions and ||theta_t||^2 = c_t^T K c_t to float32 round-off. The larger
    step puts the top mode in the oscillating range 1 < lr lam / n < 2."""
    fkey, tkey, ykey = jax.random.split(key, 3)
    n, m, p = 6, 5, 40
    phi = jax.random.normal(fkey, (n, p))
    phi_test = jax.random.normal(tkey, (m, p))
    y = jax.random.normal(ykey, (n,))
    k = phi @ phi.T
    lr = lr_fraction * 2 * n / jnp.linalg.eigvalsh(k)[-1]
    steps = 25

    def loss(theta, _):
        return 0.5 * jnp.mean((phi @ theta - y) ** 2)

    opt = optax.sgd(lr)

    def step(carry, _):
        theta, state = carry
        updates, state = opt.update(jax.grad(loss)(theta, None), state)
        return (optax.apply_updates(theta, updates), state), None

    (theta, _), _ = jax.lax.scan(step, (jnp.zeros(p), opt.init(jnp.zeros(p))), None, length=steps)
    pred = ntk.kernel_gd_predictions(k, phi_test @ phi.T, y, lr=lr, steps=steps)
    np.testing.assert_allclose(pred, phi_test @ theta, rtol=1e-3, atol=1e-4)
    c = ntk.kernel_gd_coefficients(k, y, lr=lr, steps=steps)
    assert float(c @ k @ c) == pytest.approx(float(theta @ theta), rel=1e-3)


def test_kernel_gd_long_time_is_kernel_regression(key):
    x = _inputs(key, n=6)
    k = ntk.relu_ntk(x, depth=2, sigma_w=SW, sigma_b=SB)
    kt = ntk.relu_ntk(x[:2] + 0.1, x, depth=2, sigma_w=SW, sigma_b=SB)
    y = jnp.arange(6.0)
    lr = 0.5 * 2 * 6 / jnp.linalg.eigvalsh(k)[-1]
    np.testing.assert_allclose(
        ntk.kernel_gd_predictions(k, kt, y, lr=lr, steps=100_000), ntk.kernel_regression(k, kt, y), rtol=1e-3, atol=1e-3
    )
    # at the training inputs kernel regression interpolates
    np.testing.assert_allclose(ntk.kernel_regression(k, k, y), y, atol=2e-3)


def _ntk_arccos_float32(x, depth, sigma_w=2.0**0.5, sigma_b=0.3):
    """The former recursion: angle by arccos(k12 / sqrt(k11 k22)), variances from
    their own recursion (not bitwise equal to the matrix's diagonal)."""
    d = x.shape[-1]
    sw2, sb2 = sigma_w**2, sigma_b**2
    k12 = sw2 * (x @ x.T) / d + sb2
    k11 = sw2 * jnp.sum(x * x, axis=-1) / d + sb2
    theta = k12
    for _ in range(depth):
        norm = jnp.sqrt(k11[:, None] * k11[None, :])
        cos = jnp.clip(k12 / norm, -1.0, 1.0)
        t = jnp.arccos(cos)
        k12 = sw2 * norm / (2 * jnp.pi) * (jnp.sin(t) + (jnp.pi - t) * cos) + sb2
        theta = k12 + sw2 * (jnp.pi - t) / (2 * jnp.pi) * theta
        k11 = sw2 * k11 / 2 + sb2
    return theta


def _float32_errors(kernel_fn, x, depth):
    """Largest relative error of a float32 kernel against the float64 one:
    on the diagonal, and off it relative to the diagonal's scale."""
    k32 = np.asarray(kernel_fn(x, depth), dtype=np.float64)
    with jax.enable_x64(True):
        k64 = np.asarray(ntk.relu_ntk(jnp.asarray(x, jnp.float64), depth=depth, sigma_b=0.3))
    diag = np.abs(k32.diagonal() / k64.diagonal() - 1).max()
    scale = np.sqrt(np.outer(k64.diagonal(), k64.diagonal()))
    return diag, (np.abs(k32 - k64) / scale).max()


@pytest.mark.parametrize("depth", [1, 3, 5])
def test_float32_ntk_keeps_float32_accuracy(depth):
    # float32 has eps = 1.2e-7; a recursion of depth L with O(1) operations per layer
    # should stay within a few hundred eps. Measured: diagonal <= 8e-7, off-diagonal
    # <= 6e-7 of the diagonal scale at depth 5. The arccos form loses half the digits
    # (an angle error ~sqrt(eps) = 3e-4 where cos = 1 - eps): 7.5e-5 at depth 1,
    # 3.4e-4 at depth 5 on the diagonal (negative control below). Tolerance 1e-5.
    x = jax.random.normal(jax.random.key(0), (48, 10))
    diag, off = _float32_errors(lambda xs, dep: ntk.relu_ntk(xs, depth=dep, sigma_b=0.3), x, depth)
    assert diag < 1e-5 and off < 1e-5, (diag, off)


@pytest.mark.parametrize("depth", [1, 5])
def test_float32_check_rejects_the_arccos_recursion(depth):
    # Negative control: the same check on the former recursion fails.
    x = jax.random.normal(jax.random.key(0), (48, 10))
    diag, _ = _float32_errors(_ntk_arccos_float32, x, depth)
    assert diag > 1e-5, diag
