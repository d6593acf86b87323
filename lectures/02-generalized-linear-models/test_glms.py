"""Week 2: generalized linear models.

Unit tests of the GLM algebra (moments from the log-partition function, losses
as negative log-likelihoods, closed-form gradients and Hessians, IRLS = Newton,
soft thresholding, the SVM solver), then one test per verified result:

1. gradient descent converges linearly at the rate set by the Hessian, Newton
   quadratically with the predicted constant;
2. gradient descent on separable data turns towards the hard-margin SVM with the
   angle of Soudry et al. (2018), decaying like 1 / log t;
3. the lasso path: zero above lambda_max, sparsity falling with the penalty,
   KKT conditions met, equal to scikit-learn's coordinate descent;
4. softmax regression on digits reaches high test accuracy (optax).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from dlcourse import data
import glms as w


# ---------------------------------------------------------------- families


def test_mean_and_variance_from_log_partition_match_closed_forms():
    lr = jnp.linspace(-3.0, 2.0, 11)
    s = jax.nn.sigmoid(lr)
    np.testing.assert_allclose(w.GAUSSIAN.mean(lr), lr, rtol=1e-6)
    np.testing.assert_allclose(w.GAUSSIAN.variance(lr), jnp.ones_like(lr), rtol=1e-6)
    np.testing.assert_allclose(w.BERNOULLI.mean(lr), s, rtol=1e-6)
    np.testing.assert_allclose(w.BERNOULLI.variance(lr), s * (1 - s), rtol=1e-5)
    np.testing.assert_allclose(w.POISSON.mean(lr), jnp.exp(lr), rtol=1e-6)
    np.testing.assert_allclose(w.POISSON.variance(lr), jnp.exp(lr), rtol=1e-6)


def test_log_likelihood_matches_scipy():
    """The canonical form h(y) exp(eta y - b(eta)) is the textbook density."""
    lr = np.linspace(-1.5, 1.5, 7)
    y_real = np.linspace(-2.0, 2.0, 7)
    y_bin = np.array([0, 1, 1, 0, 1, 0, 1.0])
    y_cnt = np.array([0, 1, 2, 3, 5, 8, 13.0])
    np.testing.assert_allclose(
        w.GAUSSIAN.log_likelihood(y_real, lr), scipy.stats.norm.logpdf(y_real, loc=lr), rtol=1e-5)
    np.testing.assert_allclose(
        w.BERNOULLI.log_likelihood(y_bin, lr),
        scipy.stats.bernoulli.logpmf(y_bin, 1 / (1 + np.exp(-lr))), rtol=1e-5)
    np.testing.assert_allclose(
        w.POISSON.log_likelihood(y_cnt, lr), scipy.stats.poisson.logpmf(y_cnt, np.exp(lr)), rtol=1e-5)


# Each check runs as one jit-compiled function: in eager mode every primitive
# (and a Hessian has hundreds) is compiled on its own, which costs seconds.


@pytest.mark.parametrize("family", w.FAMILIES, ids=lambda f: f.name)
def test_glm_loss_is_the_negative_log_likelihood_up_to_a_constant(family, key):
    """n * loss(theta) + sum log p(y | x theta) = sum log h(y): no theta dependence."""

    @jax.jit
    def check(key):
        kx, ky, kt = jax.random.split(key, 3)
        x = data.normal(kx, (30, 3))
        y = family.sample(x @ jnp.array([0.5, -0.3, 0.2]), key=ky)
        thetas = data.normal(kt, (2, 3))
        totals = jax.vmap(
            lambda th: 30 * w.glm_loss(th, x, y, family=family) + jnp.sum(family.log_likelihood(y, x @ th))
        )(thetas)
        return totals, jnp.sum(family.log_base(y))

    totals, expected = check(key)
    np.testing.assert_allclose(totals, np.full(2, expected), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("family", w.FAMILIES, ids=lambda f: f.name)
def test_closed_form_gradient_and_hessian_match_autodiff(family, key):
    @jax.jit
    def check(key):
        kx, ky, kt = jax.random.split(key, 3)
        x = data.normal(kx, (40, 4))
        y = family.sample(0.3 * x[:, 0], key=ky)
        theta = 0.3 * jax.random.normal(kt, (4,))
        kw = dict(x=x, family=family, lam=0.1)
        return (
            w.glm_gradient(theta, y=y, **kw), jax.grad(w.glm_loss)(theta, y=y, **kw),
            w.glm_hessian(theta, y=y, **kw), jax.hessian(w.glm_loss)(theta, y=y, **kw),
            w.glm_hessian(theta, y=jnp.zeros_like(y), **kw),
        )

    grad, grad_ad, hess, hess_ad, hess_no_labels = check(key)
    np.testing.assert_allclose(grad, grad_ad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hess, hess_ad, rtol=1e-5, atol=1e-6)
    # Convexity: the Hessian is positive definite and does not see the labels.
    assert np.linalg.eigvalsh(np.asarray(hess))[0] > 0
    np.testing.assert_allclose(hess, hess_no_labels)


@pytest.mark.parametrize("family", w.FAMILIES, ids=lambda f: f.name)
def test_irls_step_is_a_newton_step(family, key):
    @jax.jit
    def check(key):
        kx, ky, kt = jax.random.split(key, 3)
        x = data.normal(kx, (50, 3))
        y = family.sample(0.4 * x[:, 1], key=ky)
        theta = 0.2 * jax.random.normal(kt, (3,))
        newton = w.newton_step(lambda t: w.glm_loss(t, x, y, family=family, lam=0.05), theta)
        return w.irls_step(theta, x, y, family=family, lam=0.05), newton

    with jax.enable_x64(True):
        irls, newton = check(key)
    np.testing.assert_allclose(irls, newton, rtol=1e-10)


def test_newton_solves_least_squares_in_one_step(key):
    """Gaussian family: the loss is quadratic, so one IRLS step lands on ridge regression."""

    @jax.jit
    def check(key):
        kx, ky = jax.random.split(key)
        x = data.normal(kx, (40, 5))
        y = jax.random.normal(ky, (40,))
        theta = w.irls_step(jnp.zeros(5), x, y, family=w.GAUSSIAN, lam=0.1)
        return theta, jnp.linalg.solve(x.T @ x / 40 + 0.1 * jnp.eye(5), x.T @ y / 40)

    with jax.enable_x64(True):
        theta, ridge = check(key)
    np.testing.assert_allclose(theta, ridge, rtol=1e-12)


def test_newton_error_map_matches_the_glm_third_derivative(key):
    """For a canonical GLM, D^3 L[e, e] = X^T (b'''(X theta) (X e)^2) / n."""

    @jax.jit
    def check(key):
        kx, ky, ke = jax.random.split(key, 3)
        x = data.normal(kx, (60, 3))
        y = w.BERNOULLI.sample(x[:, 0], key=ky)
        theta = jnp.array([0.3, -0.2, 0.1])
        e = 1e-2 * jax.random.normal(ke, (3,))
        s = jax.nn.sigmoid(x @ theta)
        t_ee = x.T @ (s * (1 - s) * (1 - 2 * s) * (x @ e) ** 2) / 60
        expected = 0.5 * jnp.linalg.solve(w.glm_hessian(theta, x, y, family=w.BERNOULLI), t_ee)
        f = functools.partial(w.glm_loss, x=x, y=y, family=w.BERNOULLI)
        return w.newton_error_map(f, theta, e), expected

    with jax.enable_x64(True):
        got, expected = check(key)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_convergence_orders_and_rates_on_known_sequences():
    linear = 0.5 ** np.arange(10.0)
    quadratic = np.array([0.5, 0.25, 0.0625, 0.00390625, 1.52587890625e-05])
    np.testing.assert_allclose(w.convergence_orders(linear), 1.0)
    np.testing.assert_allclose(w.convergence_orders(quadratic), 2.0)
    np.testing.assert_allclose(w.fitted_linear_rate(linear, low=1e-9, high=1.0), 0.5)
    assert w.gd_linear_rate([1.0, 4.0], 0.25) == pytest.approx(0.75)


def test_family_moments_match_b_prime_and_b_double_prime(key):
    """Monte Carlo mean and variance against b'(eta) and b''(eta).

    Tolerance: 4.5 standard errors for each of the 2 x 3 x 8 = 48 comparisons
    (two-sided 7e-6 each, under 4e-4 for all of them together); a missing factor
    in a mean or a variance is tens of standard errors.
    """
    r = w.run_family_moments(key=key, samples=20_000)
    assert np.all(np.abs(r.mean - r.mean_theory) < 4.5 * r.mean_sem)
    assert np.all(np.abs(r.var - r.var_theory) < 4.5 * r.var_sem)


# ------------------------------------------ verified result 1: GD vs Newton


@pytest.fixture(scope="module")
def convergence():
    return w.run_newton_vs_gd(key=jax.random.key(1), n=200, d=6, cond=8.0, gd_steps=800, newton_steps=8)


def test_gradient_descent_rate_matches_the_hessian(convergence):
    """Measured linear rate against rho = max_i |1 - eta h_i| at the minimizer.

    The fit uses errors between 1e-12 and 1e-4, where the loss is quadratic up to
    relative corrections of order e <= 1e-4; so -log rho agrees to much better
    than the 2 % allowed. Using the worst-case 1 - 1/kappa with kappa from the
    input covariance, or a step off by a factor 2, misses by far more.
    """
    c = convergence
    assert np.log(c.gd_rate) / np.log(c.gd_rate_theory) == pytest.approx(1.0, rel=0.02)
    window = c.gd_error[(c.gd_error > 1e-11) & (c.gd_error < 1e-3)]
    assert window.size > 20
    np.testing.assert_allclose(w.convergence_orders(window), 1.0, atol=0.02)


def test_newton_converges_quadratically_with_the_predicted_constant(convergence):
    """e_{k+1} = |(1/2) H^-1 D^3 L[e_k, e_k]| + O(e_k^3): relative error O(e_k).

    Checked where 1e-11 < e_{k+1} (above float64 round-off of theta* ~ 1e-15)
    and e_k < 0.05 (the quadratic regime); the allowed relative error is
    0.1 + 2 e_k, while a missing 1/2 would give 100 %. The empirical order
    log(e_{k+1}/e_k) / log(e_k/e_{k-1}) is 2 within 0.1 there.
    """
    e, pred = convergence.newton_error, convergence.newton_predicted
    ks = [k for k in range(len(pred)) if e[k] < 0.05 and e[k + 1] > 1e-11]
    assert len(ks) >= 2
    for k in ks:
        assert e[k + 1] == pytest.approx(pred[k], rel=0.1 + 2 * e[k])
    orders = w.convergence_orders(e)
    in_regime = [orders[k - 1] for k in ks if k >= 1]
    np.testing.assert_allclose(in_regime, 2.0, atol=0.1)
    assert e[-1] < 1e-13 < convergence.gd_error[40]


# ------------------------------------------ verified result 2: implicit bias


def test_hard_margin_svm_on_a_hand_solved_example():
    """z = (1, 0), (0, 1) and a far point: w = (1, 1), alpha = (1, 1, 0)."""
    x = np.array([[1.0, 0.0], [0.0, -1.0], [3.0, 3.0]])
    y = np.array([1.0, -1.0, 1.0])
    svm = w.hard_margin_svm(x, y)
    np.testing.assert_allclose(svm.w, [1.0, 1.0], atol=1e-10)
    np.testing.assert_allclose(svm.alpha, [1.0, 1.0, 0.0], atol=1e-10)
    np.testing.assert_array_equal(svm.support, [True, True, False])
    with pytest.raises(ValueError):
        w.hard_margin_svm(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([1.0, -1.0]))


@pytest.mark.parametrize("seed", [15, 16])
def test_gradient_descent_turns_to_the_max_margin_direction_like_one_over_log_t(seed):
    """Angle(w(t), w_svm) against atan(|P w~| / (|w_svm| log t + u.w~)), Soudry et al. (2018).

    w_svm comes from the dual QP (scipy), w~ from its dual variables; neither uses
    the gradient-descent run. Corrections to the asymptotic form decay like
    t^-delta with delta >= 1 the margin gap of the data, so by t = 2000 they are
    below 1 % (measured: under 1 % from t = 10^3 on); 5 % is allowed for
    t >= 2000. The angle itself must fall by more than a factor 2 between t = 30
    and t = 3 * 10^4 while staying above half the theory value: slow, 1/log t, and not
    exponential.
    """
    r = w.run_implicit_bias(key=jax.random.key(seed), steps=30_000, per_decade=10)
    assert r.svm.support.sum() == 2 and r.min_gap >= 1.0 - 1e-9
    late = r.t >= 2000
    np.testing.assert_allclose(r.angle[late], r.angle_theory[late], rtol=0.05)
    assert r.angle[-1] < 0.5 * r.angle[np.searchsorted(r.t, 30)]
    # 1/log t: cot(angle) = (|w_svm| log t + u.w~) / |P w~| is affine in log t,
    # with the slope fixed by the SVM; an exponential or power-law approach
    # to the SVM direction would make cot(angle) grow exponentially in log t.
    u = r.svm.w / np.linalg.norm(r.svm.w)
    perp = np.linalg.norm(r.offset - (u @ r.offset) * u)
    slope, _ = np.polyfit(np.log(r.t[late]), 1 / np.tan(r.angle[late]), 1)
    assert slope == pytest.approx(np.linalg.norm(r.svm.w) / perp, rel=0.05)
    # The offset itself: theta(T) - w_svm log T - w~ -> 0 (like 1/t with the margin
    # gap); measured 0.03-0.08 at T = 3e4 for |w~| ~ 20. An offset computed with
    # eta instead of eta/n would miss by log(n)/|w_svm| ~ 0.6, one with alpha off
    # by a factor 2 by log(2)/|w_svm| ~ 0.15.
    residual = r.w[-1] - r.svm.w * np.log(r.t[-1]) - r.offset
    assert np.linalg.norm(residual) < 0.1


# ------------------------------------------ verified result 3: lasso path


def test_soft_threshold_is_the_proximal_map_of_the_l1_norm():
    """argmin_u (u - v)^2 / 2 + tau |u|, by brute force on a grid."""
    grid = np.linspace(-3, 3, 60_001)
    for v in (-2.0, -0.3, 0.0, 0.4, 1.7):
        brute = grid[np.argmin(0.5 * (grid - v) ** 2 + 0.5 * np.abs(grid))]
        assert float(w.soft_threshold(jnp.asarray(v), 0.5)) == pytest.approx(brute, abs=1e-4)


@pytest.fixture(scope="module")
def lasso():
    return w.run_lasso_path(key=jax.random.key(2), n=50, d=80, k=4, num_lambdas=15, steps=1500)


def test_lasso_path_satisfies_kkt_and_lambda_max(lasso):
    """Zero at lambda_max, non-zero below it, subgradient conditions everywhere.

    ISTA converges linearly once the support is found; with 1500 warm-started
    steps per penalty the KKT violation is below 1e-3 lambda (float32 round-off of
    the correlations is ~1e-6). A lambda_max off by a factor 2 would put zeros
    (or non-zeros) on the wrong side.
    """
    r = lasso
    assert np.max(r.kkt) < 1e-3
    assert r.nonzeros[0] == 0  # lam = lambda_max
    assert r.nonzeros[1] >= 1  # next grid point, lam < lambda_max
    assert r.nonzeros[-1] > r.nonzeros[len(r.lams) // 2] > r.nonzeros[1]
    x_key, e_key = jax.random.split(jax.random.key(2))
    # Just above lambda_max the solution is exactly zero; just below, it is not.
    x = data.normal(x_key, (50, 80))
    beta = jnp.zeros(80).at[:4].set(2.0 * (-1.0) ** jnp.arange(4) * (1.0 - 0.2 * jnp.arange(4)))
    y = x @ beta + 0.5 * jax.random.normal(e_key, (50,))
    lmax = w.lasso_lambda_max(x, y)
    assert float(lmax) == pytest.approx(r.lambda_max, rel=1e-6)
    above = w.lasso_path(x, y, jnp.array([1.01 * lmax]), steps=200)
    below = w.lasso_path(x, y, jnp.array([0.95 * lmax]), steps=200)
    assert np.all(above == 0) and np.count_nonzero(below) >= 1


def test_lasso_path_equals_coordinate_descent(lasso):
    """ISTA against scikit-learn's Lasso (same objective, coordinate descent, float64).

    Both are converged to ~1e-6; 1e-4 absolute allows float32 ISTA.
    """
    from sklearn.linear_model import Lasso

    x_key, e_key = jax.random.split(jax.random.key(2))
    x = np.asarray(data.normal(x_key, (50, 80)), dtype=float)
    beta = np.zeros(80)
    beta[:4] = 2.0 * (-1.0) ** np.arange(4) * (1.0 - 0.2 * np.arange(4))
    y = x @ beta + 0.5 * np.asarray(jax.random.normal(e_key, (50,)), dtype=float)
    for i in (3, 8, 14):
        sk = Lasso(alpha=float(lasso.lams[i]), fit_intercept=False, tol=1e-10, max_iter=100_000).fit(x, y)
        np.testing.assert_allclose(lasso.path[i], sk.coef_, atol=1e-4)


def test_map_estimates_are_lasso_and_ridge_with_the_prior_penalties(key):
    """Posterior modes (grid search) vs S_lam(z), lam = sigma^2/(n b), and z/(1+lam), lam = sigma^2/(n tau^2).

    The grid spacing is 2 max|z| / 20000 < 1e-4; a penalty off by a factor 2
    moves the estimates by ~lam ~ 0.05.
    """
    r = w.run_shrinkage(key=key)
    spacing = 2 * np.max(np.abs(r.z)) / 20_000
    np.testing.assert_allclose(r.map_laplace, w.soft_threshold(r.z, r.lam_lasso), atol=spacing + 1e-6)
    np.testing.assert_allclose(r.map_gauss, r.z / (1 + r.lam_ridge), atol=spacing + 1e-6)
    np.testing.assert_allclose(r.lasso, w.soft_threshold(r.z, r.lam_lasso), atol=1e-5)
    np.testing.assert_allclose(r.ridge, r.z / (1 + r.lam_ridge), atol=1e-5)
    assert 0 < np.count_nonzero(r.lasso) < len(r.z)


# ------------------------------------------ verified result 4: softmax on digits


def test_softmax_gradient_is_x_transpose_residual(key):
    @jax.jit
    def check(key):
        kx, kl, kw = jax.random.split(key, 3)
        x = data.normal(kx, (20, 5))
        labels = jax.random.randint(kl, (20,), 0, 10)
        params = (0.1 * data.normal(kw, (5, 10)), jnp.zeros(10))
        gw, gb = jax.grad(w.softmax_loss)(params, x, labels, lam=0.3)
        resid = jax.nn.softmax(w.softmax_logits_batch(params, x)) - jax.nn.one_hot(labels, 10)
        return gw, gb, x.T @ resid / 20 + 0.3 * params[0], resid.mean(0)

    gw, gb, gw_formula, gb_formula = check(key)
    np.testing.assert_allclose(gw, gw_formula, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb, gb_formula, rtol=1e-5, atol=1e-6)


def test_softmax_regression_on_digits():
    """All training images, 300 Adam steps: test accuracy >= 94 %.

    Softmax regression on these digits reaches 95-97 % (lecture: 97 %); 449 test
    images give a binomial standard error of ~1 %, so 94 % is two standard errors
    below the lowest expected value. With 100 training images and no penalty the
    training loss goes to zero while the test loss is several times larger
    (over-fitting).
    """
    r = w.run_softmax_digits(key=jax.random.key(0), lams=(1e-3,), steps=300, record_every=50)
    assert r.test_accuracy[0, -1] >= 0.94
    small = w.run_softmax_digits(key=jax.random.key(0), lams=(0.0,), n_train=100, steps=300, record_every=50)
    assert small.n_train == 100 and small.train_loss[0, -1] < 0.01
    assert small.test_loss[0, -1] > 20 * small.train_loss[0, -1]
    # Separability is certified, not inferred from counting parameters: a W that
    # classifies every training image correctly is a separating hyperplane set.
    assert small.train_accuracy[0, -1] == 1.0
    # Negative control: the full training set (1348 images, 650 parameters) under a
    # large penalty is not fitted perfectly, so the same check does reject.
    big = w.run_softmax_digits(key=jax.random.key(0), lams=(1.0,), steps=100, record_every=50)
    assert big.train_accuracy[0, -1] < 1.0
