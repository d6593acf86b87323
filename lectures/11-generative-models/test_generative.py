"""Week 11: generative models.

Unit tests of the week's functions against independent computations, then one
test per verified result of the lecture at a small size, each comparing a
measurement with an independent prediction, and the negative controls that
the same checks must reject.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import generative

# ---------------------------------------------------------------------------
# Mixtures and divergences
# ---------------------------------------------------------------------------


def test_mixture_score_is_the_gradient_of_the_log_density(key):
    # The closed-form score (responsibility-weighted pulls to the means) against automatic
    # differentiation of the log-density, at several noise levels; float32 rounding only.
    mix = generative.three_gaussians()
    x = 2.0 * jax.random.normal(key, (50, 2))
    for sigma in (0.0, 0.1, 1.0):
        auto = jax.vmap(jax.grad(lambda p, s=sigma: generative.mixture_log_density(mix, p, s)))(x)
        exact = jax.vmap(generative.mixture_score, in_axes=(None, 0, None))(mix, x, sigma)
        np.testing.assert_allclose(np.asarray(exact), np.asarray(auto), rtol=1e-4, atol=1e-4)


def test_sample_mixture_matches_its_weights_and_moments(key):
    mix = generative.three_gaussians()
    n = 40_000
    x, labels = generative.sample_mixture(mix, n, key=key)
    frac = np.bincount(np.asarray(labels), minlength=3) / n
    # Binomial z-scores below 4; the mean is sum_k w_k mu_k within 4 standard errors.
    assert np.max(np.abs(generative.fraction_z_scores(frac, mix.weights, n))) < 4
    mean = np.asarray(mix.weights) @ np.asarray(mix.means)
    se = np.asarray(x).std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(np.asarray(x).mean(axis=0) - mean) < 4 * se)


def test_divergences_of_known_pairs():
    # Identical laws: JS = W1 = 0. Disjoint supports: JS = log 2 whatever the distance,
    # while W1 of two narrow bumps at -a and a is the distance 2a (the lecture's motivation).
    p = generative.bimodal_1d()
    assert generative.jensen_shannon_1d(p, p) == pytest.approx(0.0, abs=1e-9)
    assert generative.wasserstein1_1d(p, p) == pytest.approx(0.0, abs=1e-9)
    for a in (3.0, 6.0):
        left = generative.Mixture(jnp.array([[-a]]), 0.1, jnp.array([1.0]))
        right = generative.Mixture(jnp.array([[a]]), 0.1, jnp.array([1.0]))
        assert generative.jensen_shannon_1d(left, right) == pytest.approx(math.log(2), rel=1e-6)
        assert generative.wasserstein1_1d(left, right) == pytest.approx(2 * a, rel=1e-6)
    # A translation by c moves W1 by exactly |c|.
    shifted = generative.Mixture(p.means + 0.7, p.std, p.weights)
    assert generative.wasserstein1_1d(p, shifted) == pytest.approx(0.7, rel=1e-6)


def test_sorted_w1_equals_the_integral_of_the_cdf_gap(key):
    # Independent formula: W1 = int |F_x - F_y| over the merged sample points (piecewise constant).
    x_key, y_key = jax.random.split(key)
    x = np.asarray(jax.random.normal(x_key, (300,)), np.float64)
    y = np.asarray(1.5 * jax.random.normal(y_key, (300,)) + 0.4, np.float64)
    points = np.sort(np.concatenate([x, y]))
    fx = np.searchsorted(np.sort(x), points[:-1], side="right") / x.size
    fy = np.searchsorted(np.sort(y), points[:-1], side="right") / y.size
    integral = float(np.sum(np.abs(fx - fy) * np.diff(points)))
    assert generative.wasserstein1_sorted(x, y) == pytest.approx(integral, rel=1e-10)
    # Negative control: pairing the samples in their drawn (unsorted) order is a coupling too,
    # but not the optimal one: its cost is larger.
    assert np.mean(np.abs(x - y)) > 1.2 * integral
    with pytest.raises(ValueError):
        generative.wasserstein1_sorted(x, y[:-1])


def test_modes_covered_counts_modes_and_rejects_a_collapsed_sample(key):
    data = generative.ring(std=0.1)
    full_key, one_key = jax.random.split(key)
    x, _ = generative.sample_mixture(data, 4000, key=full_key)
    modes, quality = generative.modes_covered(data, x)
    # 3 standard deviations in 2-D hold 1 - exp(-9/2) = 98.9 % of a Gaussian's mass.
    assert modes == 8
    assert quality == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    # A generator collapsed onto one mode covers one.
    collapsed = data.means[3][None, :] + data.std * jax.random.normal(one_key, (4000, 2))
    assert generative.modes_covered(data, collapsed)[0] == 1


# ---------------------------------------------------------------------------
# The importance-weighted bound
# ---------------------------------------------------------------------------


def test_iw_bound_on_a_model_with_known_evidence(key):
    # q = N(0, 1), and p(x, z) = N(z; 1/2, 1): the evidence is 1, log p(x) = 0, and
    # log w = z/2 - 1/8. L_1 = E log w = -1/8 = -KL(q || p); L_K increases towards 0.
    z = jax.random.normal(key, (200, 4096))
    log_w = z / 2 - 0.125
    bounds = [float(jnp.mean(generative.iw_bound(log_w, k))) for k in (1, 4, 64)]
    assert bounds[0] == pytest.approx(-0.125, abs=4 * 0.5 / math.sqrt(200 * 4096))
    assert bounds[0] < bounds[1] < bounds[2] < 0.0
    # Delta method: L_K ~ -Var(w) / (2K) with Var(w) = e^{1/4} - 1 = 0.284, so L_64 ~ -0.0022.
    assert bounds[2] == pytest.approx(-(math.exp(0.25) - 1) / 128, rel=0.15)
    # The control (mean log-weight) is the ELBO for every K.
    controls = [float(jnp.mean(generative.mean_log_weight(log_w, k))) for k in (1, 4, 64)]
    assert max(controls) - min(controls) < 1e-5


# ---------------------------------------------------------------------------
# Verified results at small size (the lecture runs them at full size)
# ---------------------------------------------------------------------------


def test_discriminator_approaches_the_optimal_one(key):
    result = generative.run_discriminator(steps=600, batch=256, width=16, n_eval=40_000, key=key)
    # D* = p_data / (p_data + p_g) from the densities (independent of training). A 16-unit
    # network after 600 steps: weighted mean error 0.017 measured; 0.05 is a quarter of the
    # shuffled-label control's 0.26, so the check separates the two.
    assert generative.weighted_error(result) < 0.05
    assert generative.weighted_error(result, result.d_shuffled) > 0.05
    # V(D, G) at the trained D against its maximum 2 JS - log 4 (JS by quadrature): within
    # 4 Monte Carlo standard errors plus 0.01 for the gap V(D*) - V(D), second order in D - D*.
    target = 2 * result.js - math.log(4)
    tol = 4 * result.value_se + 0.01
    assert abs(result.value - target) < tol
    # Control: a discriminator that learned nothing sits at -log 4, rejected by the same check.
    assert abs(result.value_shuffled - target) > tol


def test_critic_estimates_the_sorted_w1(key):
    result = generative.run_critic(n=400, steps=600, key=key)
    # KR duality: f / Lip(f) is 1-Lipschitz, so its gap is at most W1 of the two samples
    # (exact, from sorting); measured -3.6 % at this size (600 steps, not converged), the tolerance is 10 %.
    certified = result.estimate / result.lipschitz
    assert certified <= result.w1_sorted + 1e-6
    assert certified == pytest.approx(result.w1_sorted, rel=0.10)
    # The penalized (soft-constrained) estimate itself: measured -0.3 %; -6 % on two other keys.
    assert result.estimate == pytest.approx(result.w1_sorted, rel=0.10)
    # Control: without the penalty the critic's gap grows without bound (measured 62 x W1).
    assert result.estimate_free > 2 * result.w1_sorted


def test_importance_weighted_bound_increases_with_k(key):
    result = generative.run_vae(steps=800, width=64, ks=(1, 4, 16), n_test=100, key=key)
    # Burda et al. (2016): L_1 <= L_4 <= L_16 (in expectation). Each paired gain exceeds 3 of
    # its standard errors over 100 test images (measured z = 16 and 8).
    assert np.all(result.gain > 3 * result.gain_se)
    assert result.bound[-1] > result.bound[0]
    # Control: the mean log-weight (fresh samples for each K) has expectation the ELBO for
    # every K; its gains are noise, and the same check rejects it. They are also consistent
    # with zero: within 4 of their standard errors.
    assert not np.all(result.control_gain > 3 * result.control_gain_se)
    assert np.all(np.abs(result.control_gain) < 4 * result.control_gain_se)


def test_diffusion_recovers_the_score_and_the_weights(key):
    result = generative.run_diffusion(steps=1200, width=64, n_samples=2000, n_steps=200, n_eval=1000, n_repeats=1, key=key)
    # The exact score of the noised mixture is known in closed form; a 64-unit network after
    # 1200 steps has relative squared error 0.035 at sigma = 0.05 and below 0.03 elsewhere.
    assert np.max(result.score_error) < 0.15
    # Reverse-time samples put the mixture's weights on its components: binomial z-scores
    # of 2000 samples below 4 (measured 1.8 at most at this size; 3.3 on another key).
    n = result.samples.shape[0]
    assert np.max(np.abs(generative.fraction_z_scores(result.fractions, result.mixture.weights, n))) < 4
    # Control: Langevin at the smallest noise level from uniform starts fills the modes by
    # basin, not by weight; the same check rejects it (measured |z| = 13).
    assert np.max(np.abs(generative.fraction_z_scores(result.fractions_langevin, result.mixture.weights, n))) > 4
