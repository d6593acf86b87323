"""Week 12: statistical physics of learning.

Unit tests of the week's functions, then one test per verified result of the
lecture at a small size, each comparing a measurement with an independent
prediction, and the negative controls that the same checks must reject.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statphys

# ---------------------------------------------------------------------------
# Cover's theorem
# ---------------------------------------------------------------------------


def test_cover_count_recursion_and_small_cases():
    # C(P, N) = 2^P when P <= N; C(1, N) = 2; Cover's recursion C(P+1, N) = C(P, N) + C(P, N-1).
    for n in range(1, 7):
        for p in range(1, n + 1):
            assert statphys.cover_count(p, n) == 2**p
    for p in range(1, 12):
        for n in range(2, 8):
            assert statphys.cover_count(p + 1, n) == statphys.cover_count(p, n) + statphys.cover_count(p, n - 1)
    # The probability is the binomial tail, and exactly 1/2 at P = 2N.
    for n in (3, 10, 40):
        assert statphys.cover_probability(2 * n, n) == pytest.approx(0.5, abs=1e-12)
        assert statphys.cover_probability(3 * n, n) == pytest.approx(statphys.cover_count(3 * n, n) / 2 ** (3 * n))


def test_lp_counts_cover_dichotomies_exactly(key):
    # All 2^7 labelings of 7 Gaussian points in R^3 (general position almost surely):
    # the LP must find exactly C(7, 3) = 2 (1 + 6 + 15) = 44 separable ones. Independent
    # of the formula's derivation: a brute-force count by the separability test.
    x = np.asarray(jax.random.normal(key, (7, 3)), dtype=np.float64)
    count = sum(statphys.is_separable(x, np.array(y)) for y in itertools.product([-1.0, 1.0], repeat=7))
    assert count == statphys.cover_count(7, 3) == 44


def test_cover_probability_measured(key):
    random_key, teacher_key = jax.random.split(key)
    result = statphys.run_cover(dims=(8, 16), alphas=(1.0, 1.5, 2.0, 2.5, 3.0), n_draws=60, key=random_key)
    # Binomial z-scores of 10 points: |z| > 4 has probability ~1e-4 each under the theory.
    assert np.max(np.abs(statphys.cover_z_scores(result))) < 4.0
    # Negative control: teacher labels are always separable, so the same check must reject
    # Cover's curve (at alpha = 3, N = 16 the theory gives 0.01 and the measurement 1).
    control = statphys.run_cover(dims=(8, 16), alphas=(1.0, 1.5, 2.0, 2.5, 3.0), n_draws=20,
                                 labels="teacher", key=teacher_key)
    assert np.all(control.separable == 1.0)
    assert np.max(np.abs(statphys.cover_z_scores(control._replace(theory=result.theory)))) > 4.0


def test_cover_transition_sharpens_with_n(key):
    # The drop D_N of the separable fraction across alpha = 2 (mean over alpha < 2 minus mean
    # over alpha > 2) grows with N; Cover's formula predicts D_32 - D_8 = 0.147. Its binomial
    # standard error with 100 draws per point is 0.029, so a 4-s.e. tolerance (0.116) is
    # below the prediction and passing implies that the step sharpens.
    random_key, teacher_key = jax.random.split(key)
    sizes = dict(dims=(8, 32), alphas=(1.0, 1.5, 2.5, 3.0))
    result = statphys.run_cover(**sizes, n_draws=100, key=random_key)
    measured, theory, se = statphys.cover_sharpness(result)
    tol = 4 * np.hypot(se[0], se[1])
    assert theory[1] - theory[0] > tol
    assert abs((measured[1] - measured[0]) - (theory[1] - theory[0])) < tol
    # Negative control: teacher labels are separable at every load, so D_N = 0 for every N
    # and the same check must reject the predicted growth.
    control = statphys.run_cover(**sizes, n_draws=20, labels="teacher", key=teacher_key)
    measured_c, _, _ = statphys.cover_sharpness(control, theory=result.theory)
    assert abs((measured_c[1] - measured_c[0]) - (theory[1] - theory[0])) > tol


# ---------------------------------------------------------------------------
# Teacher and student
# ---------------------------------------------------------------------------


def test_student_at_overlap_has_the_overlap(key):
    t_key, s_key = jax.random.split(key)
    teacher = jax.random.normal(t_key, (30,))
    teacher = teacher / jnp.linalg.norm(teacher)
    w = statphys.student_at_overlap(teacher, 0.3, key=s_key)
    np.testing.assert_allclose(float(jnp.linalg.norm(w)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(w @ teacher), 0.3, atol=1e-5)


def test_generalization_error_of_an_overlap(key):
    result = statphys.run_overlap(overlaps=(-0.5, 0.0, 0.5, 0.9), n=20, n_test=20_000, key=key)
    theory = statphys.generalization_error(result.overlaps)
    se = np.sqrt(theory * (1 - theory) / result.n_test)  # binomial error of a test-set fraction
    assert np.max(np.abs(result.disagreement - theory) / se) < 4.0
    # Negative control: the plausible but wrong eps = (1 - R)/2 is rejected by the same check
    # (at R = 0.5 it gives 0.25 instead of 1/3, 25 standard errors away).
    wrong = (1 - result.overlaps) / 2
    assert np.max(np.abs(result.disagreement - wrong) / se) > 4.0


def test_hebb_learning_curve(key):
    result = statphys.run_hebb(alphas=(0.5, 2.0, 8.0), n=200, n_seeds=16, key=key)
    theory = statphys.generalization_error(statphys.hebb_overlap(result.alphas))
    mean = result.eps.mean(axis=0)
    sem = result.eps.std(axis=0, ddof=1) / np.sqrt(result.eps.shape[0])
    # Seed-to-seed error (4 standard errors) plus the O(1/N) finite-size shift of R
    # (R^2 has N - 1 + (1 - 2/pi) instead of N in the denominator: |d eps| < 1e-3 at N = 200).
    assert np.all(np.abs(mean - theory) < 4 * sem + 1e-3)
    # Negative control: the same derivation with E|h| = sqrt(2/pi) replaced by 1 (a classic
    # slip) gives R = sqrt(alpha / (1 + alpha)); the same check must reject it.
    wrong = statphys.generalization_error(np.sqrt(result.alphas / (1 + result.alphas)))
    assert np.any(np.abs(mean - wrong) > 4 * sem + 1e-3)


def test_hebb_overlap_closed_form_limits():
    # Small alpha: R ~ sqrt(2 alpha / pi); large alpha: eps ~ 1 / sqrt(2 pi alpha).
    assert statphys.hebb_overlap(1e-6) == pytest.approx(math.sqrt(2e-6 / math.pi), rel=1e-5)
    alpha = 1e6
    eps = statphys.generalization_error(statphys.hebb_overlap(alpha))
    assert eps == pytest.approx(1 / math.sqrt(2 * math.pi * alpha), rel=1e-4)


# ---------------------------------------------------------------------------
# Replica-symmetric theory
# ---------------------------------------------------------------------------


def test_rs_terms_boundary_values():
    assert statphys.energetic_term([1e-12])[0] == pytest.approx(-math.log(2), abs=1e-6)
    assert statphys.energetic_term([1 - 1e-9])[0] == pytest.approx(0.0, abs=1e-3)
    branch = statphys.prior_branch("binary", r=np.array([1e-8, 50.0]))
    assert branch.entropy_prior[0] == pytest.approx(math.log(2), abs=1e-6)
    assert branch.q[1] == pytest.approx(1.0, abs=1e-6)
    assert branch.entropy_prior[1] == pytest.approx(0.0, abs=1e-6)


def test_rs_transition_matches_the_literature():
    # Gyorgyi (1990), Sompolinsky, Tishby & Seung (1990): alpha_c = 1.245 (3 digits quoted).
    assert statphys.rs_transition() == pytest.approx(1.245, abs=1e-3)


def test_spherical_gibbs_learning_asymptote():
    # Gibbs learning of the spherical perceptron: eps ~ 0.625 / alpha at large alpha
    # (Engel & Van den Broeck 2001, ch. 2); at alpha = 100 the correction is below 1 %.
    curve = statphys.rs_learning_curve([100.0], "spherical")
    assert 100 * curve.eps[0] == pytest.approx(0.625, rel=0.015)


def test_annealed_entropy_is_the_exact_first_moment():
    # expected_extra_students is a finite sum; its exponential rate is the annealed entropy.
    n, alpha = 2000, 1.0
    rate = statphys.log_expected_extra_students(n, [alpha * n])[0] / n
    q = np.linspace(0.0, 0.999, 20001)
    assert rate == pytest.approx(statphys.annealed_entropy(q, alpha).max(), abs=5e-3)


# ---------------------------------------------------------------------------
# Binary perceptron by enumeration
# ---------------------------------------------------------------------------


def test_first_error_table_matches_brute_force(key):
    x = jax.random.normal(key, (14, 7))
    y = jnp.sign(x.sum(axis=1))
    table = np.asarray(statphys.first_error_table(x, y, chunk=4))
    ref = np.zeros_like(table)
    xs, ys = np.asarray(x), np.asarray(y)
    for w in itertools.product([1.0, -1.0], repeat=7):
        wrong = (xs @ np.array(w)) * ys <= 0
        ref[int(np.sum(np.array(w) < 0)), int(np.argmax(wrong)) if wrong.any() else 14] += 1
    np.testing.assert_array_equal(table, ref)


def test_version_space_size_has_its_exact_mean(key):
    # E[|VS|] = 1 + sum_m binom(N, m) (1 - arccos(1 - 2m/N)/pi)^P exactly, at every N.
    result = statphys.run_binary_perceptron(dims=(9,), alpha_max=1.0, n_seeds=(400,), key=key)
    size = result.size[0]
    ps = np.arange(size.shape[1])
    exact = 1.0 + statphys.expected_extra_students(9, ps)
    sem = size.std(axis=0, ddof=1) / np.sqrt(size.shape[0])
    check = ps >= 1  # P = 0: |VS| = 2^N exactly, no spread
    assert np.all(np.abs(size.mean(axis=0)[check] - exact[check]) <= 4.5 * sem[check] + 1e-9)
    assert np.all(size[:, 0] == 2**9)


def test_binary_gibbs_error_approaches_rs_below_the_transition(key):
    # Below the transition the finite-N Gibbs error lies below the RS curve, and the gap
    # shrinks with N (lecture: N = 11, 15, 19; here N = 7 and 13, more seeds).
    result = statphys.run_binary_perceptron(dims=(7, 13), alpha_max=0.7, n_seeds=(400, 200), key=key)
    gap, sem = statphys.finite_size_gap(result)
    assert gap[1] < 0.0 and gap[0] < 0.0
    # Measured: gaps -0.024 and -0.007, standard errors 0.0015 (3 s.e. on each side).
    assert abs(gap[1]) + 3 * sem[1] < abs(gap[0]) - 3 * sem[0]
    assert abs(gap[1]) < 0.03  # RS is the N -> infinity limit: already within 0.03 at N = 13


# ---------------------------------------------------------------------------
# Langevin dynamics
# ---------------------------------------------------------------------------


def test_langevin_samples_the_gibbs_measure_when_it_mixes(key):
    result = statphys.run_langevin(temperatures=(0.6, 0.1), n_chains=1024, steps=4000, key=key)
    # High temperature: within 4 standard errors plus the O(lr) bias of the unadjusted scheme
    # (lr * E'' ~ 0.04 at the wells; the mean shifts by < 0.02).
    assert abs(result.mean_measured[0] - result.mean_gibbs[0]) < 4 * result.mean_sem[0] + 0.02
    # Negative control: at T = 0.1 the barrier (~0.7) is 7 T high: the chains stay in the
    # left well and the same check must fail.
    assert abs(result.mean_measured[1] - result.mean_gibbs[1]) > 4 * result.mean_sem[1] + 0.02


# ---------------------------------------------------------------------------
# Message passing on the binary perceptron
# ---------------------------------------------------------------------------


def test_amp_follows_state_evolution_and_jumps(key):
    result = statphys.run_amp(alphas=(0.5, 1.0, 1.25, 2.0), n=300, n_seeds=4, key=key)
    mean = result.eps.mean(axis=0)
    sem = result.eps.std(axis=0, ddof=1) / np.sqrt(result.eps.shape[0])
    theory = statphys.amp_theory(result.alphas)
    below = result.alphas < 1.4
    # Below the spinodal: seed-to-seed standard error (4 s.e.); at N = 300 the finite-size
    # spread of the overlap, O(N^-1/2), is part of that error.
    assert np.all(np.abs(mean - theory)[below] < 4 * sem[below])
    # Above the spinodal (alpha = 2 > 1.493) every seed recovers the teacher: eps = 0 up to
    # float32 rounding of the overlap, far below the jump (theory 0.19 just before it).
    assert np.all(result.eps[:, ~below] < 1e-3)
    # Negative control: the learning curve of spherical weights (no transition) is rejected
    # by both checks (at alpha = 1.25 it is 0.23 instead of 0.19; at alpha = 2, 0.17 instead of 0).
    wrong = statphys.amp_theory(result.alphas, "spherical")
    assert np.any(np.abs(mean - wrong)[below] > 4 * sem[below])
    assert np.all(np.abs(result.eps[:, ~below] - wrong[~below]) > 1e-3)


def test_amp_theory_has_the_spinodal():
    # The state-evolution curve is the interior RS branch up to the spinodal and 0 beyond.
    alpha_sp = statphys.rs_spinodal()
    eps = statphys.amp_theory([alpha_sp - 0.01, alpha_sp + 0.01])
    assert eps[0] > 0.1 and eps[1] == 0.0
    # Below alpha_c the branch is the stable one: the Bayes-optimal error arccos(sqrt(q))/pi.
    curve = statphys.rs_learning_curve([1.0], "binary")
    assert statphys.amp_theory([1.0])[0] == pytest.approx(statphys.generalization_error(np.sqrt(curve.q[0])))
