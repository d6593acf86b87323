"""Unit tests of the shared package: training loops, curvature, MLPs, metrics, data, plotting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest

from dlcourse import data, linalg, metrics, mlp, plotting, train

matplotlib.use("Agg")


def quadratic(a):
    def loss(theta, _batch):
        return 0.5 * theta @ a @ theta

    return loss


def test_fit_matches_closed_form_gradient_descent():
    # GD on 1/2 x^T A x: x_t = (I - eta A)^t x_0 exactly (up to float32 rounding)
    a = jnp.diag(jnp.array([1.0, 0.3, 0.05]))
    x0 = jnp.array([1.0, -2.0, 3.0])
    lr, steps = 0.5, 40
    params, losses = train.fit(quadratic(a), x0, optax.sgd(lr), None, steps=steps, record_every=4)
    expected = jnp.linalg.matrix_power(jnp.eye(3) - lr * a, steps) @ x0
    np.testing.assert_allclose(params, expected, rtol=1e-5)
    assert losses.shape == (steps // 4,)
    np.testing.assert_allclose(losses[0], quadratic(a)(x0, None), rtol=1e-6)


def test_fit_rejects_partial_logging_block():
    with pytest.raises(ValueError):
        train.fit(quadratic(jnp.eye(2)), jnp.ones(2), optax.sgd(0.1), None, steps=10, record_every=3)


def test_fit_vmaps_over_seeds(key):
    a = jnp.eye(2)
    x0s = jax.random.normal(key, (5, 2))
    params, losses = jax.vmap(lambda x: train.fit(quadratic(a), x, optax.sgd(0.1), None, steps=10))(x0s)
    np.testing.assert_allclose(params, 0.9**10 * x0s, rtol=1e-5)
    assert losses.shape == (5, 10)


def test_fit_minibatch_full_batch_equals_fit(key):
    # with batch_size = n and a mean loss, sampling with replacement is still an unbiased
    # gradient; with n = 1 it is exactly full-batch gradient descent
    x = jnp.array([[2.0]])
    y = jnp.array([3.0])
    loss = train.squared_loss(lambda p, xs: xs @ p)
    p_mb, losses = train.fit_minibatch(loss, jnp.zeros(1), optax.sgd(0.1), (x, y), steps=20, batch_size=1,
                                       key=key)
    p_fb, _ = train.fit(loss, jnp.zeros(1), optax.sgd(0.1), (x, y), steps=20)
    np.testing.assert_allclose(p_mb, p_fb, rtol=1e-6)
    assert losses.shape == (20,)


def test_trajectory_records_before_each_step():
    a = jnp.eye(1)
    _, obs = train.trajectory(quadratic(a), jnp.ones(1), optax.sgd(0.5), None, steps=4, observe=lambda p: p[0])
    np.testing.assert_allclose(obs, 0.5 ** jnp.arange(4), rtol=1e-6)


def test_trajectory_record_every_and_record_last():
    # x <- x - 0.5 x halves x at every step: observations before steps 0, 2, 4 and after step 6
    a = jnp.eye(1)
    final, obs = train.trajectory(quadratic(a), jnp.ones(1), optax.sgd(0.5), None, steps=6,
                                  observe=lambda p: p[0], record_every=2, record_last=True)
    np.testing.assert_allclose(obs, 0.5 ** jnp.array([0.0, 2.0, 4.0, 6.0]), rtol=1e-6)
    np.testing.assert_allclose(final, 0.5**6 * jnp.ones(1), rtol=1e-6)


def test_hvp_equals_hessian_times_vector(key):
    k1, k2 = jax.random.split(key)
    m = jax.random.normal(k1, (4, 4))

    def f(x):
        return jnp.sum(jnp.tanh(m @ x) ** 2) + 0.5 * x @ x

    x = jax.random.normal(k2, (4,))
    v = jnp.arange(4.0)
    np.testing.assert_allclose(linalg.hvp(f, x, v), jax.hessian(f)(x) @ v, rtol=1e-4, atol=1e-5)


def test_top_eigenvalue_by_power_iteration(key):
    # spectrum with gap 10 vs 3: power iteration converges like (0.3)^iters
    q, _ = jnp.linalg.qr(jax.random.normal(key, (6, 6)))
    a = q @ jnp.diag(jnp.array([10.0, 3.0, 2.0, 1.0, 0.5, 0.1])) @ q.T
    lam = linalg.top_eigenvalue(lambda x: 0.5 * x @ a @ x, jnp.zeros(6), key=jax.random.key(1), iters=60)
    np.testing.assert_allclose(lam, 10.0, rtol=1e-4)


def test_top_eigenvalue_on_pytrees():
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}

    def f(p):
        return 2.0 * jnp.sum(p["a"] ** 2) + 0.5 * jnp.sum(p["b"] ** 2)

    lam = linalg.top_eigenvalue(f, params, key=jax.random.key(2), iters=30)
    np.testing.assert_allclose(lam, 4.0, rtol=1e-4)


def test_ntk_and_standard_parametrizations_define_the_same_function(key):
    widths = [3, 16, 16, 2]
    sw, sb = 1.5, 0.2
    ntk = mlp.init_mlp(widths, key=key, sigma_w=sw, sigma_b=sb, parametrization="ntk")
    std = [(sw / jnp.sqrt(w.shape[1]) * w, sb * b) for w, b in ntk]
    x = jnp.array([0.3, -1.0, 2.0])
    out_ntk = mlp.apply_mlp(ntk, x, sigma_w=sw, sigma_b=sb, parametrization="ntk")
    out_std = mlp.apply_mlp(std, x)
    np.testing.assert_allclose(out_ntk, out_std, rtol=1e-5, atol=1e-6)


def test_he_init_preserves_second_moment(key):
    # ReLU with sigma_w^2 = 2: E[h^2] is preserved layer to layer (He et al. 2015);
    # 4096 units average the second moment to a relative error ~ sqrt(2/4096) ~ 2%
    params = mlp.init_mlp([256, 4096, 1], key=key)
    x = jnp.ones(256)
    h = params[0][0] @ x + params[0][1]
    np.testing.assert_allclose(jnp.mean(h**2), jnp.mean(x**2) * 2.0, rtol=0.1)


def test_apply_batch_matches_single(key):
    params = mlp.init_mlp([2, 8, 1], key=key)
    xs = jnp.arange(6.0).reshape(3, 2)
    out = mlp.apply_batch(params, xs)
    np.testing.assert_allclose(out[1], mlp.apply_mlp(params, xs[1]), rtol=1e-6)


def test_unknown_parametrization(key):
    with pytest.raises(ValueError):
        mlp.init_mlp([1, 1], key=key, parametrization="mup")


def test_loglog_slope_exact_and_noisy():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    fit = metrics.loglog_slope(x, 3.0 * x**-0.5)
    assert abs(fit.slope + 0.5) < 1e-10 and fit.stderr < 1e-8
    assert abs(fit.intercept - np.log(3.0)) < 1e-10
    rng_noise = np.array([0.05, -0.04, 0.03, -0.05, 0.02])
    noisy = metrics.loglog_slope(x, 3.0 * x**-0.5 * np.exp(rng_noise))
    assert noisy.stderr > 0 and abs(noisy.slope + 0.5) < 4 * noisy.stderr
    with pytest.raises(ValueError):
        metrics.loglog_slope([1, 2], [1, 2])


def test_metrics_basic():
    assert float(metrics.mse(jnp.array([1.0, 3.0]), jnp.array([1.0, 1.0]))) == 2.0
    logits = jnp.array([[0.0, 1.0], [2.0, 0.0]])
    assert float(metrics.accuracy(logits, jnp.array([1, 1]))) == 0.5
    assert float(metrics.relative_error(jnp.array([1.0, 1.0]), jnp.array([1.0, 0.0]))) == 1.0
    mean, sem = metrics.mean_and_sem(np.array([[1.0], [3.0]]))
    np.testing.assert_allclose(mean, [2.0])
    np.testing.assert_allclose(sem, [1.0])


def test_gaussian_linear(key):
    x, y, beta = data.gaussian_linear(50, 7, key=key, noise=0.0)
    assert x.shape == (50, 7) and y.shape == (50,)
    np.testing.assert_allclose(jnp.linalg.norm(beta), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y, x @ beta, rtol=1e-5, atol=1e-6)


def test_regression_1d_and_split(key):
    k1, k2 = jax.random.split(key)
    x, y = data.regression_1d(40, key=k1, noise=0.0)
    np.testing.assert_allclose(y, jnp.sin(2 * jnp.pi * x), atol=1e-6)
    (xtr, ytr), (xte, yte) = data.train_test_split((x, y), key=k2, test_fraction=0.25)
    assert xtr.shape == (30,) and xte.shape == (10,)
    assert set(np.asarray(xtr).tolist()).isdisjoint(np.asarray(xte).tolist())


def test_digits_shipped_with_scikit_learn():
    x, y = data.digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    np.testing.assert_allclose(jnp.mean(x[:, 20]), 0.0, atol=1e-4)


def test_plotting_helpers_draw_on_given_axes():
    import matplotlib.pyplot as plt

    plotting.use_style()
    assert matplotlib.rcParams["pdf.fonttype"] == 42
    fig, ax = plt.subplots()
    out = plotting.theory_vs_experiment(ax, [1, 2, 3], [1.1, 1.9, 3.2], [1, 2, 3], err=[0.1, 0.1, 0.1])
    assert out is ax
    assert ax.lines[0].get_color() == plotting.THEORY_COLOR
    plotting.loglog_fit_line(ax, [1, 10], -0.5, 0.0, label="fit")
    plotting.label_axes(ax, "$N$", "error", title="t")
    plotting.panel_labels([ax])
    assert ax.get_xlabel() == "$N$"
    plt.close(fig)


def test_normal_is_the_flat_draw_reshaped():
    z = data.normal(jax.random.key(7), (3, 4))  # two equal keys: key reuse is checked
    assert z.shape == (3, 4)
    np.testing.assert_array_equal(z.ravel(), jax.random.normal(jax.random.key(7), (12,)))
