"""Week 1: statistical learning.

Unit tests of the week's building blocks (Legendre features, lookup table and
nearest neighbours, ridge and min-norm least squares, the closed-form theory
functions against numerical integration), then one or more tests per verified
result, each running the lecture's experiment at a tiny size:

1. bias^2 + variance + noise equals the Monte Carlo test error;
2. the test error is U-shaped in the polynomial degree and in the ridge penalty,
   the latter against its Marchenko-Pastur asymptotics with the minimum at
   lambda* = sigma^2 gamma / r^2;
3. distances concentrate: exact coefficient of variation, relative contrast
   with fitted log-log slope -1/2;
4. double descent of min-norm least squares against the exact finite-n Gaussian
   risk and the asymptotic risk of Hastie et al. (2022); at p = n the risk grows
   like n with Edelman's t^{-1/2} tail.

Plus the memorization limits (lookup table, 1-NN, k-NN) and the
Marchenko-Pastur spectrum. Every statistical tolerance is stated where it is
used: "k SE" is k Monte Carlo standard errors; a finite-size allowance is added
where the theory is asymptotic, with its size justified.
"""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.stats

from dlcourse import metrics, train
import statlearn as w

# ---------------------------------------------------------------- building blocks


def test_legendre_features_are_orthonormal_and_match_the_closed_forms():
    x = w._midpoints(4000)
    phi = w.legendre_features(x, 6)
    # midpoint quadrature of E[phi_j phi_k] over U[-1, 1]: error O(n_grid^-2 * degree^4) ~ 1e-4
    np.testing.assert_allclose(phi.T @ phi / x.shape[0], np.eye(7), atol=2e-4)
    np.testing.assert_allclose(phi[:, 2], np.sqrt(5) * (3 * x**2 - 1) / 2, atol=1e-5)
    np.testing.assert_allclose(phi[:, 3], np.sqrt(7) * (5 * x**3 - 3 * x) / 2, atol=1e-5)


def test_lookup_table_remembers_exactly_and_knows_nothing_else(key):
    kx, ky, kq = jax.random.split(key, 3)
    x = jax.random.uniform(kx, (20, 1))
    y = jax.random.normal(ky, (20,))
    np.testing.assert_array_equal(w.lookup_table_predict(x, y, x), y)
    fresh = jax.random.uniform(kq, (30, 1))
    np.testing.assert_array_equal(w.lookup_table_predict(x, y, fresh, default=-7.0), -7.0)


def test_nearest_neighbours(key):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (25, 3))
    y = jax.random.normal(ky, (25,))
    np.testing.assert_array_equal(w.knn_predict(x, y, x, k=1), y)  # 1-NN interpolates
    np.testing.assert_allclose(w.knn_predict(x, y, x[:4], k=25), jnp.full(4, y.mean()), rtol=1e-5)
    q = jnp.array([[0.5, -0.2, 0.1]])
    dist = jnp.sum((x - q) ** 2, axis=1)
    np.testing.assert_allclose(w.knn_predict(x, y, q, k=3)[0], y[jnp.argsort(dist)[:3]].mean(), rtol=1e-6)


def test_memorization_experiment_uses_the_public_rules(key):
    """The masked, one-program experiment equals the plain functions on each subset."""
    n_values, n_test, sigma = (5, 9), 40, 0.4
    res = w.run_memorization(key=jax.random.clone(key), n_values=n_values, n_test=n_test, n_seeds=2, sigma=sigma)
    # the experiment's key derivation, step by step
    expected = []
    for k in jax.random.split(key, 2):
        k_train, k_test = jax.random.split(k)
        x, y = w.sample_regression(max(n_values), key=k_train, sigma=sigma)
        xt, yt = w.sample_regression(n_test, key=k_test, sigma=sigma)
        rows = []
        for n in n_values:
            xs, ys = x[:n, None], y[:n]
            preds = (
                w.lookup_table_predict(xs, ys, xt[:, None]),
                w.knn_predict(xs, ys, xt[:, None], k=1),
                w.knn_predict(xs, ys, xt[:, None], k=w.knn_k(n)),
            )
            rows.append([float(metrics.mse(p, yt)) for p in preds])
        expected.append(np.array(rows).T)
    np.testing.assert_allclose(res.test, np.mean(expected, axis=0), rtol=1e-5)


def test_min_norm_solution_is_pinv_interpolates_and_is_the_ridgeless_limit(key):
    for k, (n, p) in zip(jax.random.split(key), [(12, 5), (5, 12)]):
        kx, ky = jax.random.split(k)
        x = jax.random.normal(kx, (n, p))
        y = jax.random.normal(ky, (n,))
        b = w.min_norm_solution(x, y)
        np.testing.assert_allclose(b, jnp.linalg.pinv(x) @ y, rtol=2e-4, atol=1e-5)
        # ridge at lambda = 1e-5 differs from the limit by O(lambda / s_min^2) ~ 1e-4 relative
        np.testing.assert_allclose(w.ridge_solution(x, y, 1e-5), b, rtol=2e-3, atol=1e-4)
        if p > n:
            np.testing.assert_allclose(x @ b, y, atol=1e-4)  # interpolates


def test_gradient_descent_from_zero_finds_the_min_norm_interpolant(key):
    """GD on the squared loss moves only in the row space of X: it ends at X^+ y."""
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (6, 15))
    y = jax.random.normal(ky, (6,))
    loss = train.squared_loss(lambda b, xs: xs @ b)
    # step 1/L with L = largest eigenvalue of X^T X / n; 3000 steps: the smallest
    # eigenvalue of X X^T / n is ~ (sqrt(15) - sqrt(6))^2 / 6 ~ 0.34 of L's ~ 5: error e^{-200}
    lmax = float(jnp.linalg.eigvalsh(x.T @ x / 6)[-1])
    b, _ = train.fit(loss, jnp.zeros(15), optax.sgd(1.0 / lmax), (x, y), steps=3000, record_every=3000)
    np.testing.assert_allclose(b, w.min_norm_solution(x, y), rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- theory functions


def test_mp_density_is_normalized_and_its_stieltjes_transform_matches():
    for gamma in (0.3, 0.7, 2.0):
        lo, hi = w.mp_edges(gamma)
        mass = scipy.integrate.quad(lambda s: w.mp_density(s, gamma), lo, hi, limit=200)[0]
        atom = max(0.0, 1.0 - 1.0 / gamma)
        np.testing.assert_allclose(mass + atom, 1.0, rtol=1e-4)
        for lam in (0.1, 1.0):
            m = scipy.integrate.quad(lambda s: w.mp_density(s, gamma) / (s + lam), lo, hi, limit=200)[0]
            np.testing.assert_allclose(float(w.mp_stieltjes(lam, gamma)), m + atom / lam, rtol=1e-4)


def test_ridge_risk_limits_and_optimum():
    # lambda -> 0+: the ridgeless formula of Hastie et al.; lambda -> inf: the null risk r^2
    for gamma in (0.5, 2.0):
        np.testing.assert_allclose(w.ridge_risk(1e-4, gamma), w.ridgeless_risk(gamma), rtol=2e-3)
        np.testing.assert_allclose(w.ridge_risk(1e4, gamma, r2=1.3), 1.3, rtol=1e-3)
    # the minimum sits at lambda* = sigma^2 gamma / r^2: grid spacing 0.1 %, but the minimum is
    # flat and float32 rounding (1e-7 relative) moves the grid argmin by ~0.3 %: rtol 1 %
    for gamma, r2, sigma2 in [(0.5, 1.0, 0.25), (1.0, 2.0, 0.5), (3.0, 1.0, 0.1)]:
        lams = np.geomspace(1e-3, 10.0, 10001)
        risk = np.asarray(w.ridge_risk(lams, gamma, r2=r2, sigma2=sigma2))
        np.testing.assert_allclose(lams[np.argmin(risk)], w.ridge_optimal_penalty(gamma, r2=r2, sigma2=sigma2),
                                   rtol=1e-2)
        np.testing.assert_allclose(risk.min(), w.optimal_ridge_risk(gamma, r2=r2, sigma2=sigma2), rtol=1e-4)


def test_finite_n_ridgeless_risk_tends_to_the_asymptotic_formula():
    gammas = np.array([0.2, 0.5, 0.9, 1.1, 2.0, 5.0])
    n = 10**6
    np.testing.assert_allclose(w.ridgeless_risk_finite(n, np.round(gammas * n)), w.ridgeless_risk(gammas),
                               rtol=1e-3)
    assert np.isinf(w.ridgeless_risk(1.0)) and np.isinf(w.ridgeless_risk_finite(50, [49, 50, 51])).all()


def test_distance_cv_exact_formula_against_sampling_and_asymptotics(key):
    d = np.array([1, 3, 10, 100])
    z = np.asarray(jax.random.normal(key, (200_000, 100)))
    for di in d:
        dist = np.sqrt(2.0) * np.linalg.norm(z[:, :di], axis=1)  # ||x - x'|| = sqrt(2) chi_d
        # 2e5 samples: the CV estimate has relative SE ~ 1/sqrt(2e5) ~ 0.3 %; allow 1.5 %
        np.testing.assert_allclose(dist.std() / dist.mean(), w.distance_cv(di), rtol=1.5e-2)
    # CV(d) = (2d)^{-1/2} (1 + O(1/d)): at d = 1e4 the two agree to ~1e-4
    np.testing.assert_allclose(w.distance_cv(1e4), 1 / np.sqrt(2e4), rtol=1e-3)


def test_edelman_law_of_the_smallest_singular_value():
    # n s_min^2 of 20 x 20 Gaussian matrices (numpy float64 SVD, an independent check);
    # finite-n corrections at n = 20 are below 1 % (Edelman 1988); 4000 samples: SE <= 0.008
    rng = np.random.default_rng(0)
    xi = 20 * np.linalg.svd(rng.standard_normal((4000, 20, 20)), compute_uv=False)[:, -1] ** 2
    for x in (0.05, 0.3, 1.0, 3.0):
        assert abs((xi <= x).mean() - w.edelman_cdf(x)) < 0.03


def test_threshold_tail_closed_form_against_quadrature():
    def tail(t):  # S(t) = P(xi < z^2 / t) = E_z[edelman_cdf(z^2 / t)], by quadrature
        def integrand(z):
            return scipy.stats.norm.pdf(z) * w.edelman_cdf(z * z / t)

        return scipy.integrate.quad(integrand, -np.inf, np.inf)[0]

    for t in (0.5, 3.0, 50.0):
        np.testing.assert_allclose(w.threshold_tail(t), tail(t), rtol=1e-6)
    np.testing.assert_allclose(w.threshold_tail(1e6) * np.sqrt(1e6), np.sqrt(2 / np.pi), rtol=1e-2)


# ---------------------------------------------------------------- memorization


def test_memorization_limits(key):
    """Lookup table -> E f^2 + sigma^2, 1-NN -> 2 sigma^2, k-NN -> sigma^2 (+ O(1/k))."""
    res = w.run_memorization(key=key, n_values=(16, 256), n_test=400, n_seeds=10)
    lookup, nn, knn = res.test[:, -1]
    se = res.test_sem[:, -1]
    # the lookup table always answers 0: its error is E f^2 + sigma^2 up to MC error (4 SE)
    assert abs(lookup - res.lookup_theory) < 4 * se[0]
    # 1-NN at n = 256: the neighbour's input is ~1/512 away, so the bias E(f(x) - f(x'))^2 is
    # ~ 1e-5; 4 SE covers the MC error. Mistaking the limit for sigma^2 would miss by 0.16.
    assert abs(nn - res.nn_theory) < 4 * se[1] + 0.01
    # k-NN, k = 16: variance sigma^2 / k = 0.01 and bias ~ (k/n)^2 f'' ~ 0.005 above sigma^2
    assert res.bayes < knn + 4 * se[2] and knn < res.bayes + 0.03 + 4 * se[2]
    assert nn > knn + 0.1 and lookup > nn + 0.2


# ---------------------------------------------------------------- 1. bias-variance


@pytest.fixture(scope="module")
def bias_variance():
    return w.run_bias_variance(key=jax.random.key(1), n=20, max_degree=8, n_seeds=600, n_grid=100, n_test=100)


def test_bias_variance_decomposition_equals_the_test_error(bias_variance):
    r = bias_variance
    # gap = test error - (bias^2 + variance + noise), per training set: the fluctuations of
    # the fits cancel between the two sides and only the fresh test noise remains; 4 SE.
    assert np.all(np.abs(r.gap) < 4 * r.gap_sem)
    np.testing.assert_allclose(r.test_error, r.bias2 + r.variance + r.noise, rtol=0.05)
    # the check has power: counting the variance twice (or dropping it) is rejected
    k = np.argmax(r.variance)
    assert abs(r.gap[k] - r.variance[k]) > 4 * r.gap_sem[k]
    assert abs(r.gap[k] + r.variance[k]) > 4 * r.gap_sem[k]


def _fixed_design_variance(n, max_degree, *, sigma, lam, n_designs, seed):
    """Independent prediction of the variance term, in numpy float64, without any y.

    At a fixed design the ridge fit's noise variance, integrated over ``x ~ U[-1, 1]``
    with orthonormal features (``E phi phi^T = I``), is ``sigma^2/n tr(G_l^-1 G G_l^-1)``,
    ``G = Phi^T Phi / n``, ``G_l = G + lam I``; average it over random designs.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n_designs, n))
    basis = np.eye(max_degree + 1)
    phi = np.stack([np.sqrt(2 * k + 1) * np.polynomial.legendre.legval(x, basis[k])
                    for k in range(max_degree + 1)], axis=-1)
    out = []
    for k in range(max_degree + 1):
        f = phi[..., : k + 1]
        g = np.einsum("bni,bnj->bij", f, f) / n
        g_lam = g + lam * np.eye(k + 1)
        a = np.linalg.solve(g_lam, g)
        b = np.linalg.solve(g_lam, np.swapaxes(a, 1, 2))
        out.append(np.trace(b, axis1=1, axis2=2).mean())
    return sigma**2 / n * np.array(out)


def test_variance_term_matches_the_fixed_design_prediction():
    # Where the bias is negligible (degrees 4-6: bias^2 / variance < 2 %), the variance
    # is the noise propagated through the fit: sigma^2/n E tr(G_l^-1 G G_l^-1), computed
    # above from 20 000 designs without any fit. The variance of a fit over 3000
    # training sets has a heavy tail (near-singular designs): measured ratios 0.91-1.07
    # over 3 keys. Tolerance 15 %.
    n, max_degree, sigma, lam = 30, 6, 0.4, 1e-3
    r = w.run_bias_variance(key=jax.random.key(0), n=n, max_degree=max_degree, n_seeds=3000,
                            sigma=sigma, lam=lam, n_grid=100, n_test=20)
    theory = _fixed_design_variance(n, max_degree, sigma=sigma, lam=lam, n_designs=20_000, seed=0)
    high = slice(4, None)
    assert np.all(r.bias2[high] < 0.02 * r.variance[high])
    assert np.all(np.abs(r.variance[high] / theory[high] - 1) < 0.15), r.variance / theory
    # Negative control: the large-n asymptote sigma^2 p / n ignores the design's
    # randomness (1.6 to 3.7 times too small at these degrees) and the check rejects it.
    naive = sigma**2 * (np.arange(max_degree + 1) + 1) / n
    assert np.all(np.abs(r.variance[high] / naive[high] - 1) > 0.15)


def test_bias_falls_and_variance_grows_with_the_degree(bias_variance):
    r = bias_variance
    assert r.bias2[0] > 100 * r.bias2[4]  # degree 4 captures f = sin(2.5 x + 0.5) to ~1e-3
    assert r.variance[-1] > 5 * r.variance[1]
    # least squares on nested models (ridge 1e-3 aside): the training error never increases
    assert np.all(np.diff(r.train_error) < 1e-4)


def test_test_error_is_u_shaped_in_the_degree(bias_variance):
    r = bias_variance
    best = int(np.argmin(r.test_error))
    assert 0 < best < len(r.degrees) - 1
    # both ends exceed the minimum by far more than their standard errors (6 SE)
    for end in (0, -1):
        assert r.test_error[end] - r.test_error[best] > 6 * np.hypot(r.test_sem[end], r.test_sem[best])


# ---------------------------------------------------------------- 2. ridge U-curve


def test_ridge_risk_is_u_shaped_and_matches_marchenko_pastur(key):
    res = w.run_ridge_path(key=key, n=60, p=60, lams=tuple(np.geomspace(1e-2, 10.0, 13)), n_seeds=150)
    # finite-size corrections to the MP formula are O(1/n): measured +0.3 % to +1.6 % at
    # n = 25..100 with 4000 training sets. Allowance: 4 SE + 3 % of the theory.
    assert np.all(np.abs(res.risk - res.theory) < 4 * res.risk_sem + 0.03 * res.theory)
    best = res.lams[np.argmin(res.risk)]
    assert res.lam_star / 2.5 < best < res.lam_star * 2.5  # within ~1.5 grid steps of lambda*
    assert res.risk[0] > res.risk.min() + 0.3 and res.risk[-1] > res.risk.min() + 0.3
    assert np.all(np.diff(res.train_error) > 0)  # the empirical risk only grows with lambda


# ---------------------------------------------------------------- 3. concentration


def test_distances_concentrate_like_d_to_the_minus_half(key):
    res = w.run_distance_concentration(key=key, dims=(1, 4, 16, 64, 256, 1024), n_points=32, n_seeds=12)
    # exact CV of a chi variable, against the sample CV over all pairs (4 SE + 2 %: the
    # sample std over 496 correlated pairs is biased low by ~1/(2 * 496))
    assert np.all(np.abs(res.cv - res.cv_theory) < 4 * res.cv_sem + 0.02 * res.cv_theory)
    # fitted slope of the relative contrast for d >= 16 (corrections O(1/d) relative):
    # within 3 stderr of -1/2, plus 0.02 for the corrections over the fitted range
    assert abs(res.fit.slope + 0.5) < 3 * res.fit.stderr + 0.02, res.fit
    assert res.fit.stderr < 0.05  # and the fit is sharp enough to tell -1/2 from -1 or 0
    assert np.all(np.diff(res.contrast) < 0) and np.all(res.contrast_min > res.contrast)


def test_marchenko_pastur_spectrum(key):
    res = w.run_mp_spectrum(key=key, n=200, p=100, n_draws=4)
    lo, hi = w.mp_edges(res.gamma)
    ev = np.sort(res.eigenvalues)
    # Kolmogorov distance to the MP law; fluctuations of linear statistics are O(1/p) and
    # the edges move by O(p^{-2/3}) ~ 0.05: a 0.03 allowance
    cdf = np.array([scipy.integrate.quad(lambda s: w.mp_density(s, res.gamma), lo, e)[0] if e > lo else 0.0
                    for e in ev[::20]])
    emp = (np.arange(ev.size)[::20] + 0.5) / ev.size
    assert np.max(np.abs(cdf - emp)) < 0.03


def test_mean_inverse_eigenvalue_is_the_finite_n_wishart_moment():
    # E[1/s] = n / (n - p - 1) exactly for Gaussian designs, against the asymptotic
    # 1 / (1 - gamma). At n = 20, p = 10 they differ by 11 % (2.222 vs 2); over 1000
    # designs (10 000 eigenvalues) the sample mean scattered by 0.6 % across 6 keys,
    # so a 2.5 % tolerance (about 4 standard errors) separates the two.
    res = w.run_mp_spectrum(key=jax.random.key(5), n=20, p=10, n_draws=1000)
    assert abs(res.mean_inverse / res.mean_inverse_exact - 1) < 0.025, res.mean_inverse
    # Negative control: the same check rejects the asymptotic value.
    assert abs(res.mean_inverse * (1 - res.gamma) - 1) > 0.025


# ---------------------------------------------------------------- 4. double descent


@pytest.fixture(scope="module")
def double_descent():
    return w.run_double_descent(key=jax.random.key(2), n=40, p_values=(8, 20, 30, 50, 60, 80, 160, 400),
                                n_seeds=400)


def test_double_descent_matches_the_exact_gaussian_risk(double_descent):
    r = double_descent
    # the risk has a finite variance only for |p - n| > 3 (second inverse moment of a Wishart
    # matrix); the grid stays 10 away from n = 40. Exact finite-n means: 4 SE, no other allowance.
    assert np.all(np.abs(r.risk - r.theory_finite) < 4 * r.risk_sem), (r.risk, r.theory_finite, r.risk_sem)


def test_double_descent_matches_hastie_et_al_asymptotics(double_descent):
    r = double_descent
    # the asymptotic formula differs from the exact mean at n = 40 by factors like
    # (1 - gamma) / (1 - gamma - 1/n); that known finite-size gap, plus 4 SE
    assert np.all(np.abs(r.risk - r.theory) < 4 * r.risk_sem + np.abs(r.theory_finite - r.theory))
    # the shape: a rise towards p = n, a second descent beyond it, then a slow climb to the
    # null risk r^2 (predict 0) as p -> inf; each step by many standard errors (6 SE)
    risk = dict(zip(r.p, r.risk))
    sem = dict(zip(r.p, r.risk_sem))
    for lo, hi in [(8, 30), (160, 50), (160, 400)]:
        assert risk[hi] - risk[lo] > 6 * np.hypot(sem[lo], sem[hi]), (lo, hi)
    assert risk[400] < r.r2
    # a factor-2 error in the variance term would be caught at p = 80 (gamma = 2)
    wrong = w.ridgeless_risk(2.0) + 0.25 / (2.0 - 1.0)
    assert abs(r.risk[r.p == 80][0] - wrong) > 6 * r.risk_sem[r.p == 80][0]


def test_optimal_ridge_removes_the_peak(double_descent):
    r = double_descent
    # finite-size corrections O(1/n): 4 SE + 5 % at n = 40 (measured +1.6 % at n = 25)
    assert np.all(np.abs(r.ridge - r.ridge_theory) < 4 * r.ridge_sem + 0.05 * r.ridge_theory)
    assert np.all(r.ridge <= r.risk + 4 * r.ridge_sem)
    assert np.all(np.diff(r.ridge) > 0)  # monotone in p / n: no peak


def over_parametrization_gain(gamma, error, sem) -> float:
    """How far the best interpolating model (p > n) beats the best under-parametrized one, in
    standard errors: positive when over-parametrization wins."""
    under, over = gamma < 1, gamma > 1
    iu, io = np.argmin(error[under]), np.argmin(error[over])
    gap = error[under][iu] - error[over][io]
    return gap / np.hypot(sem[under][iu], sem[over][io])


@pytest.fixture(scope="module")
def misspecified():
    return w.run_misspecified(key=jax.random.key(4), n=40, n_features=400,
                              p_values=(4, 8, 20, 30, 50, 60, 80, 160, 280, 400), n_seeds=400)


def test_misspecified_error_matches_the_exact_mean(misspecified):
    r = misspecified
    # exact finite-n means (misspecified_error_finite), the grid 10 or more away from p = n where
    # the error has finite variance: 4 SE, no other allowance
    assert np.all(np.abs(r.error - r.theory) < 4 * r.error_sem), (r.error, r.theory, r.error_sem)
    # the formula itself: all features seen and no noise left unexplained at p = P ...
    assert np.isclose(w.misspecified_error_finite(40, 400, n_features=400, r2=1.0, sigma2=0.01),
                      0.01 + w.ridgeless_risk_finite(40, 400, r2=1.0, sigma2=0.01))
    # ... and with one of a million features seen, the null error plus the variance of fitting one
    # coefficient to noise of variance 1.01 (sigma_eff^2 p / (n - p - 1), p = 1)
    assert abs(w.misspecified_error_finite(40, 1, n_features=10**6, r2=1.0, sigma2=0.01)
               - 1.01 * (1 + 1 / 38)) < 1e-5


def test_with_fixed_data_over_parametrization_wins(misspecified):
    r = misspecified
    # Hastie et al. (2022, Sec. 5): the best model sees all P features, beyond p = n, by many SE,
    # and beats predicting 0 (sigma^2 + r^2), which no under-parametrized model does here
    assert over_parametrization_gain(r.gamma, r.error, r.error_sem) > 6
    assert r.gamma[np.argmin(r.error)] == r.gamma.max()
    assert r.error.min() < r.null_error - 4 * r.error_sem[np.argmin(r.error)]
    assert np.all(r.error[r.gamma < 1] > r.null_error)


def test_negative_control_well_specified_problems_do_not_reward_interpolation(double_descent):
    """Week 1's well-specified family (each p its own problem, signal r on the p features): the
    same statistic finds no gain from interpolating; its best model is the smallest."""
    r = double_descent
    test_error = r.sigma2 + r.risk
    assert over_parametrization_gain(r.gamma, test_error, r.risk_sem) < 0
    assert r.gamma[np.argmin(test_error)] == r.gamma.min()


def test_risk_at_the_interpolation_threshold_grows_like_n_with_a_heavy_tail(key):
    res = w.run_interpolation_threshold(key=key, n_values=(10, 20), n_seeds=4000)
    # tail: P(scaled risk > t) against Edelman's law, at t where the smallest singular value
    # dominates. Binomial SE ~ 0.005; the rest of the spectrum adds O(1/t) relative (~5 % at
    # t = 30) and n = 10, 20 adds O(1/n): 4 SE + 15 % of the value.
    for t in (30.0, 100.0):
        tail = w.threshold_tail(t)
        for scaled in res.scaled_risk:
            p = (scaled > t).mean()
            assert abs(p - tail) < 4 * np.sqrt(tail * (1 - tail) / scaled.size) + 0.15 * tail, (t, p, tail)
    # scale: the risk divided by n has the same median at both sizes (ratio 1; it would be
    # 1/2 if the risk stayed bounded, 2 if it grew like n^2). Median SE here ~ 4 %: allow 20 %
    ratio = res.median[1] / res.median[0]
    assert 0.8 < ratio < 1.25, res.median
