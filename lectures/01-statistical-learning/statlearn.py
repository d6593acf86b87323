"""Week 1: statistical learning.

Learning is choosing a function from data so that it predicts *new* data well.
This module has the week's experiments, each a pure function with keyword
defaults at lecture size that returns a ``NamedTuple``, and the closed-form
theory each is compared with:

* ``run_memorization``: a lookup table and the 1-nearest-neighbour rule both fit
  the training set exactly; their test errors tend to ``E f^2 + sigma^2`` and
  ``2 sigma^2``, while k-NN with ``k ~ sqrt(n)`` tends to ``sigma^2``;
* ``run_bias_variance``: polynomial least squares on many training sets
  (``vmap``), test error against ``bias^2 + variance + sigma^2``;
* ``run_ridge_path``: the U-shaped test risk of ridge regression against the
  penalty, against its Marchenko-Pastur asymptotics (Dobriban & Wager 2018),
  minimal at ``lambda* = sigma^2 gamma / r^2``;
* ``run_distance_concentration``: distances between Gaussian points concentrate,
  relative spread ``~ (2d)^{-1/2}`` (exact chi formula), relative contrast
  ``~ d^{-1/2}`` (fitted slope);
* ``run_mp_spectrum``: the spectrum of a sample covariance against the
  Marchenko-Pastur law;
* ``run_double_descent``: the test risk of min-norm least squares against the
  asymptotic formula of Hastie, Montanari, Rosset & Tibshirani (2022) and its
  exact finite-``n`` Gaussian counterpart; optimally tuned ridge on the same data;
* ``run_interpolation_threshold``: at ``p = n`` the risk is heavy-tailed, of
  size ``~ n``, with the tail given by Edelman's law of the smallest singular value.

Conventions: the design ``X`` has shape ``(n, p)`` with i.i.d. ``N(0, 1)``
entries, ``y = X beta + sigma eps``, ``||beta|| = r``, ``gamma = p / n``. The
*excess risk* of an estimate ``b`` is ``E_x[(x^T b - x^T beta)^2] = ||b - beta||^2``
for isotropic ``x``; the test error (population risk) adds the noise ``sigma^2``.
Hastie et al. call the excess risk "the risk" and write it ``R_X``.

Speed: on CPU, compiling a JAX program costs seconds while running these
experiments costs fractions of one. Each experiment is therefore one ``jit``
with static sizes, a ``vmap`` over training sets, and one batched linear solve
(fixed shapes, with masks where the model size varies). Several independent
LAPACK calls in one program are avoided on purpose: each costs its own compile
time, and with jax 0.10 on CPU such programs were seen to hang at run time
(nondeterministically, with two or more independent solves).

References:
    Hastie, Montanari, Rosset & Tibshirani (2022), doi:10.1214/21-AOS2133;
    Dobriban & Wager (2018), doi:10.1214/17-AOS1549; Geman, Bienenstock &
    Doursat (1992), doi:10.1162/neco.1992.4.1.1; Gyorfi, Kohler, Krzyzak & Walk
    (2002), doi:10.1007/b97848; Beyer et al. (1999), doi:10.1007/3-540-49257-7_15;
    Marchenko & Pastur (1967), doi:10.1070/SM1967v001n04ABEH001994;
    Edelman (1988), doi:10.1137/0609045.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import scipy.stats

from dlcourse import data, metrics

Array = jax.Array


# Compile fast, run a little slower. On CPU these experiments spend seconds in
# XLA's LLVM back end and fractions of a second running; optimization level 0
# halves the compile time (measured with jax 0.10: 3.5 s -> 1.6 s for the
# bias-variance program, whose run time goes from 0.2 s to 0.3 s).
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _jit(*static: str):
    """``jax.jit`` with static argument names and the fast-compile options.

    For the top-level experiment programs only: JAX accepts compiler options on
    the outermost ``jit``, so helpers called inside them use a plain ``jax.jit``.
    """
    return functools.partial(jax.jit, static_argnames=static, compiler_options=_FAST_COMPILE)


def _spd_solve(a: Array, b: Array) -> Array:
    """Solve ``a x = b`` for symmetric positive definite ``a`` (batched), by Cholesky.

    Every system of this week is a Gram matrix plus a positive diagonal; Cholesky
    is twice as cheap as LU and compiles faster.
    """
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a), b)


# --------------------------------------------------------------------------
# The one-dimensional regression problem of the first half of the lecture
# --------------------------------------------------------------------------


def target(x: Array) -> Array:
    """The regression function ``f(x) = sin(2.5 x + 0.5)`` on ``[-1, 1]``.

    Smooth but not a polynomial, and neither even nor odd, so that every
    polynomial degree removes a little more bias.
    """
    return jnp.sin(2.5 * x + 0.5)


def sample_regression(n: int, *, key: Array, sigma: float) -> tuple[Array, Array]:
    """``x ~ U[-1, 1]``, ``y = f(x) + sigma * eps`` with ``f = target``.

    Returns:
        ``(x, y)``, both of shape ``(n,)``.
    """
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (n,), minval=-1.0, maxval=1.0)
    return x, target(x) + sigma * jax.random.normal(ke, (n,))


def target_mean_square(*, n_grid: int = 4096) -> float:
    """``E f(x)^2`` for ``x ~ U[-1, 1]``, by the midpoint rule (error ``O(n_grid^-2)``)."""
    return float(jnp.mean(target(_midpoints(n_grid)) ** 2))


def _midpoints(n_grid: int) -> Array:
    """Midpoints of ``n_grid`` equal cells of ``[-1, 1]``: a quadrature for ``U[-1, 1]``."""
    return (jnp.arange(n_grid) + 0.5) / n_grid * 2.0 - 1.0


# --------------------------------------------------------------------------
# Memorization: lookup table and nearest neighbours
# --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="default")
def lookup_table_predict(x_train: Array, y_train: Array, x_query: Array, *, default: float = 0.0) -> Array:
    """A lookup table: the stored label where the query was seen, ``default`` elsewhere.

    Args:
        x_train: inputs, shape ``(n, d)``.
        y_train: labels, shape ``(n,)``.
        x_query: queries, shape ``(m, d)``.
        default: the answer for an input never seen.

    Returns:
        Predictions, shape ``(m,)``.
    """
    match = jnp.all(x_query[:, None, :] == x_train[None, :, :], axis=-1)  # (m, n)
    return jnp.where(jnp.any(match, axis=1), y_train[jnp.argmax(match, axis=1)], default)


@functools.partial(jax.jit, static_argnames="k")
def knn_predict(x_train: Array, y_train: Array, x_query: Array, *, k: int) -> Array:
    """k-nearest-neighbour regression: the mean label of the ``k`` closest training points.

    Args:
        x_train: inputs, shape ``(n, d)``.
        y_train: labels, shape ``(n,)``.
        x_query: queries, shape ``(m, d)``.
        k: number of neighbours (static).

    Returns:
        Predictions, shape ``(m,)``.
    """
    d2 = jnp.sum((x_query[:, None, :] - x_train[None, :, :]) ** 2, axis=-1)  # (m, n)
    _, idx = jax.lax.top_k(-d2, k)
    return jnp.mean(y_train[idx], axis=1)


class MemorizationResult(NamedTuple):
    """Test errors of three rules that fit their training set by remembering it.

    ``test`` has shape ``(3, len(n))``, rows in the order of ``methods``;
    ``test_sem`` is one standard error over repetitions. The training errors
    are zero for the lookup table and 1-NN by construction.
    """

    n: np.ndarray
    k: np.ndarray
    methods: tuple[str, ...]
    test: np.ndarray
    test_sem: np.ndarray
    lookup_theory: float
    nn_theory: float
    bayes: float


def knn_k(n: int) -> int:
    """The number of neighbours used for a training set of size ``n``: ``round(sqrt(n))``."""
    return max(1, round(math.sqrt(n)))


@_jit("n_values", "n_test", "n_seeds")
def _memorization(key, sigma, *, n_values, n_test, n_seeds):
    n_max = max(n_values)
    sizes = jnp.asarray(n_values)
    ks = jnp.asarray([knn_k(n) for n in n_values])
    k_max = max(knn_k(n) for n in n_values)

    def one_rep(k):
        k_train, k_test = jax.random.split(k)
        x, y = sample_regression(n_max, key=k_train, sigma=sigma)
        xt, yt = sample_regression(n_test, key=k_test, sigma=sigma)
        d2 = (xt[:, None] - x[None, :]) ** 2  # (n_test, n_max)

        def errors(n, kk):
            # the training set of size n is the first n points: mask the others
            active = (jnp.arange(n_max) < n)[None, :]
            seen = active & (xt[:, None] == x[None, :])
            lookup = jnp.where(jnp.any(seen, axis=1), y[jnp.argmax(seen, axis=1)], 0.0)
            _, idx = jax.lax.top_k(-jnp.where(active, d2, jnp.inf), k_max)  # nearest first
            labels = y[idx]  # (n_test, k_max)
            knn = labels @ ((jnp.arange(k_max) < kk) / kk)  # mean of the kk nearest
            preds = jnp.stack([lookup, labels[:, 0], knn])
            return jnp.mean((preds - yt[None, :]) ** 2, axis=1)

        return jax.vmap(errors, out_axes=1)(sizes, ks)  # (3, len(n_values))

    return jax.vmap(one_rep)(jax.random.split(key, n_seeds))


def run_memorization(
    *,
    key: Array,
    n_values: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256, 512, 1024),
    n_test: int = 500,
    n_seeds: int = 10,
    sigma: float = 0.4,
) -> MemorizationResult:
    """Lookup table, 1-NN and k-NN (``k = round(sqrt(n))``) on the 1-D problem.

    The lookup table and 1-NN reproduce every training label (zero training
    error). Their test errors (mean squared, on fresh data) converge to
    different limits:

    * lookup table: ``E f^2 + sigma^2``: a continuous input is never seen twice,
      so the table answers its default ``0`` on every test point;
    * 1-NN: ``2 sigma^2``: the prediction is the label of a neighbour whose input
      tends to the query, i.e. ``f(x) + sigma eps'`` with independent noise;
    * k-NN with ``k -> inf``, ``k / n -> 0``: ``sigma^2``, the Bayes risk (Stone 1977).

    The rules are those of ``lookup_table_predict`` and ``knn_predict``, written
    here on one distance matrix with the unused training points masked, so that
    every size is one program (the tests check they agree).

    Args:
        key: randomness for the training and test sets.
        n_values: training-set sizes (nested: the first ``n`` points of one draw).
        n_test: test points per repetition.
        n_seeds: independent repetitions (``vmap``).
        sigma: noise level.

    Returns:
        A ``MemorizationResult``.

    References:
        Gyorfi, Kohler, Krzyzak & Walk (2002), doi:10.1007/b97848; Stone (1977),
        doi:10.1214/aos/1176343886.
    """
    n_values = tuple(int(n) for n in n_values)
    test = _memorization(key, sigma, n_values=n_values, n_test=n_test, n_seeds=n_seeds)
    test_mean, test_sem = metrics.mean_and_sem(test, axis=0)
    return MemorizationResult(
        n=np.asarray(n_values),
        k=np.asarray([knn_k(n) for n in n_values]),
        methods=("lookup table", "1-NN", r"$k$-NN, $k=\sqrt{n}$"),
        test=test_mean,
        test_sem=test_sem,
        lookup_theory=target_mean_square() + sigma**2,
        nn_theory=2 * sigma**2,
        bayes=sigma**2,
    )


# --------------------------------------------------------------------------
# Bias, variance and noise
# --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="degree")
def legendre_features(x: Array, degree: int) -> Array:
    """Orthonormal Legendre features ``phi_k(x) = sqrt(2k + 1) P_k(x)``, ``k = 0..degree``.

    ``E[phi_j(x) phi_k(x)] = delta_jk`` for ``x ~ U[-1, 1]``, so the Gram matrix
    ``Phi^T Phi / n`` tends to the identity: far better conditioned than monomials.
    Computed by Bonnet's recursion ``(k+1) P_{k+1} = (2k+1) x P_k - k P_{k-1}``.

    Args:
        x: inputs in ``[-1, 1]``, shape ``(n,)``.
        degree: the highest degree (static).

    Returns:
        Features, shape ``(n, degree + 1)``.
    """
    p = [jnp.ones_like(x), x]
    for k in range(1, degree):
        p.append(((2 * k + 1) * x * p[k] - k * p[k - 1]) / (k + 1))
    p = jnp.stack(p[: degree + 1], axis=-1)
    return p * jnp.sqrt(2.0 * jnp.arange(degree + 1) + 1.0)[None, :]


@jax.jit
def ridge_solution(x: Array, y: Array, lam) -> Array:
    """Ridge regression ``argmin_b (1/n)||y - X b||^2 + lam ||b||^2``.

    ``b = (X^T X + n lam I_p)^{-1} X^T y = X^T (X X^T + n lam I_n)^{-1} y``: the
    two forms are equal (push-through identity); the smaller system is solved.
    The second (dual) form also stays accurate as ``lam -> 0`` when ``p > n``.

    Args:
        x: design, shape ``(n, p)``.
        y: responses, shape ``(n,)``.
        lam: penalty ``lambda > 0`` (or ``0`` when the smaller Gram matrix is invertible).

    Returns:
        The coefficients, shape ``(p,)``.
    """
    n, p = x.shape
    if p <= n:
        return _spd_solve(x.T @ x + n * lam * jnp.eye(p), x.T @ y)
    return x.T @ _spd_solve(x @ x.T + n * lam * jnp.eye(n), y)


@jax.jit
def min_norm_solution(x: Array, y: Array) -> Array:
    """Minimum-norm least squares ``X^+ y``, the limit of ridge as ``lambda -> 0+``.

    For ``p <= n`` (full column rank) it is ``(X^T X)^{-1} X^T y``; for ``p > n``
    (full row rank) the interpolant of least norm, ``X^T (X X^T)^{-1} y``. It is
    also where gradient descent on the squared loss started at ``0`` converges.

    Args:
        x: design, shape ``(n, p)``, of full rank.
        y: responses, shape ``(n,)``.

    Returns:
        The coefficients, shape ``(p,)``.
    """
    n, p = x.shape
    if p <= n:
        return _spd_solve(x.T @ x, x.T @ y)
    return x.T @ _spd_solve(x @ x.T, y)


class BiasVarianceResult(NamedTuple):
    """Bias-variance decomposition of polynomial least squares, per degree.

    Attributes:
        degrees: polynomial degrees ``0..max_degree``.
        bias2, variance: ``E_x[(E_D f_D(x) - f(x))^2]`` and ``E_x Var_D f_D(x)``, unbiased
            Monte Carlo estimates (the bias^2 estimate can dip below 0 where it is tiny).
        noise: ``sigma^2``.
        test_error, test_sem: Monte Carlo test error on fresh data, and its standard error.
        train_error: mean training error.
        gap, gap_sem: ``test_error - (bias2 + variance + noise)`` and its standard error
            (per training set, so the fluctuations common to both sides cancel).
        grid, truth: quadrature points of ``U[-1, 1]`` and ``f`` on them.
        mean_fit: ``E_D f_D`` on the grid, shape ``(len(degrees), n_grid)``.
        sample_fits: the first ``n_show`` fits, shape ``(n_show, len(degrees), n_grid)``.
        example_x, example_y: the training set of the first fit.
    """

    degrees: np.ndarray
    bias2: np.ndarray
    variance: np.ndarray
    noise: float
    test_error: np.ndarray
    test_sem: np.ndarray
    train_error: np.ndarray
    gap: np.ndarray
    gap_sem: np.ndarray
    grid: np.ndarray
    truth: np.ndarray
    mean_fit: np.ndarray
    sample_fits: np.ndarray
    example_x: np.ndarray
    example_y: np.ndarray


def fit_every_degree(x: Array, y: Array, *, lam, max_degree: int) -> Array:
    """Ridge fits of all degrees ``0..max_degree`` at once; row ``j`` is degree ``j``.

    The model of degree ``j`` uses the first ``j + 1`` Legendre features; unused
    features get an identity block, so every degree is one ``(K, K)`` system of
    the same shape (``K = max_degree + 1``) and all are one batched solve.
    """
    phi = legendre_features(x, max_degree)  # (n, K)
    degrees = jnp.arange(max_degree + 1)
    # masks[j, k] = 1 if feature k belongs to the model of degree j: nested models
    masks = (degrees[None, :] <= degrees[:, None]).astype(phi.dtype)  # (K, K)
    eye = jnp.eye(max_degree + 1)
    gram, rhs = phi.T @ phi / x.shape[0], phi.T @ y / x.shape[0]
    a = gram[None] * masks[:, :, None] * masks[:, None, :] + lam * eye[None] * masks[:, :, None]
    a = a + eye[None] * (1.0 - masks)[:, :, None]
    return _spd_solve(a, (masks * rhs[None, :])[..., None])[..., 0]  # (K, K)


def one_training_set(key, phi_grid, *, n, n_test, sigma, lam):
    """Fits of every degree on one training set: on a grid, test and train errors."""
    train_key, test_key = jax.random.split(key)
    x, y = sample_regression(n, key=train_key, sigma=sigma)
    x_test, y_test = sample_regression(n_test, key=test_key, sigma=sigma)
    degree = phi_grid.shape[1] - 1
    w = fit_every_degree(x, y, lam=lam, max_degree=degree)  # row j: degree j

    def mse(x, y):  # one mean squared error per degree
        return jnp.mean((w @ legendre_features(x, degree).T - y[None, :]) ** 2, axis=1)

    return w @ phi_grid.T, mse(x_test, y_test), mse(x, y), x, y


@_jit("n", "max_degree", "n_seeds", "n_grid", "n_test", "n_show")
def _bias_variance(key, sigma, lam, *, n, max_degree, n_seeds, n_grid, n_test, n_show):
    grid = _midpoints(n_grid)
    phi_grid = legendre_features(grid, max_degree)  # (n_grid, K)

    def one_set(k):
        return one_training_set(k, phi_grid, n=n, n_test=n_test, sigma=sigma, lam=lam)

    fits, test, train, xs, ys = jax.vmap(one_set)(jax.random.split(key, n_seeds))
    truth = target(grid)
    mean_fit = jnp.mean(fits, axis=0)
    # unbiased estimates: the squared error of the mean of n_seeds fits overestimates
    # the bias^2 by variance / n_seeds; their sum is the mean squared deviation either way
    variance = jnp.mean(jnp.var(fits, axis=0, ddof=1), axis=1)
    bias2 = jnp.mean((mean_fit - truth[None, :]) ** 2, axis=1) - variance / n_seeds
    # per training set: test error minus its own squared deviation from f, minus sigma^2
    gap = test - jnp.mean((fits - truth[None, None, :]) ** 2, axis=2) - sigma**2
    return dict(
        bias2=bias2, variance=variance, test=test, train=train, gap=gap, grid=grid, truth=truth,
        mean_fit=mean_fit, sample_fits=fits[:n_show], example_x=xs[0], example_y=ys[0],
    )


def run_bias_variance(
    *,
    key: Array,
    n: int = 30,
    max_degree: int = 12,
    n_seeds: int = 2000,
    sigma: float = 0.4,
    lam: float = 1e-3,
    n_grid: int = 200,
    n_test: int = 200,
    n_show: int = 20,
) -> BiasVarianceResult:
    """Polynomial regression of every degree on ``n_seeds`` independent training sets.

    For each training set ``D`` (``n`` points of ``sample_regression``) and each
    degree ``k``, fit ``f_D`` by least squares on the Legendre features of degree
    ``<= k`` (with a tiny ridge ``lam`` that only guards the conditioning), then

    ``E_D E_{x,y} (f_D(x) - y)^2 = E_x (E_D f_D(x) - f(x))^2 + E_x Var_D f_D(x) + sigma^2``,

    i.e. test error = bias^2 + variance + noise. The left side is measured on a
    fresh test set per training set; the right side from the fits on a
    quadrature grid of ``U[-1, 1]``.

    Args:
        key: randomness for all training and test sets.
        n: training-set size.
        max_degree: highest polynomial degree.
        n_seeds: number of independent training sets (``vmap``).
        sigma: noise level.
        lam: ridge penalty guarding the conditioning (``1e-3`` on features of unit scale).
        n_grid: quadrature points for bias and variance.
        n_test: fresh test points per training set.
        n_show: number of individual fits returned for pictures.

    Returns:
        A ``BiasVarianceResult``.

    References:
        Geman, Bienenstock & Doursat (1992), doi:10.1162/neco.1992.4.1.1.
    """
    out = _bias_variance(
        key, sigma, lam, n=n, max_degree=max_degree, n_seeds=n_seeds, n_grid=n_grid, n_test=n_test, n_show=n_show
    )
    test, test_sem = metrics.mean_and_sem(out["test"])
    gap, gap_sem = metrics.mean_and_sem(out["gap"])
    return BiasVarianceResult(
        degrees=np.arange(max_degree + 1),
        bias2=np.asarray(out["bias2"]),
        variance=np.asarray(out["variance"]),
        noise=sigma**2,
        test_error=test,
        test_sem=test_sem,
        train_error=np.asarray(out["train"]).mean(axis=0),
        gap=gap,
        gap_sem=gap_sem,
        grid=np.asarray(out["grid"]),
        truth=np.asarray(out["truth"]),
        mean_fit=np.asarray(out["mean_fit"]),
        sample_fits=np.asarray(out["sample_fits"]),
        example_x=np.asarray(out["example_x"]),
        example_y=np.asarray(out["example_y"]),
    )


# --------------------------------------------------------------------------
# Random-matrix theory: Marchenko-Pastur
# --------------------------------------------------------------------------


def mp_edges(gamma: float) -> tuple[float, float]:
    """Edges ``(1 -+ sqrt(gamma))^2`` of the Marchenko-Pastur law with ratio ``gamma``."""
    return (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2


def mp_density(s, gamma: float):
    """Density of the continuous part of the Marchenko-Pastur law (variance 1, ratio ``gamma``).

    ``rho(s) = sqrt((s_+ - s)(s - s_-)) / (2 pi gamma s)`` on ``[s_-, s_+]``,
    ``s_-+ = (1 -+ sqrt(gamma))^2``: the limiting eigenvalue density of
    ``X^T X / n`` for ``X`` of shape ``(n, p)`` with i.i.d. unit-variance entries
    and ``p / n -> gamma``. For ``gamma > 1`` there is in addition an atom of mass
    ``1 - 1/gamma`` at ``0``; the continuous part then has mass ``1/gamma``.

    Args:
        s: points (scalar or array).
        gamma: aspect ratio ``p / n``.

    Returns:
        The density at ``s`` (zero outside the support), a numpy array.

    References:
        Marchenko & Pastur (1967), doi:10.1070/SM1967v001n04ABEH001994.
    """
    lo, hi = mp_edges(gamma)
    s = np.asarray(s, dtype=float)
    inside = (s > lo) & (s < hi)
    safe = np.where(inside, s, 1.0)
    return np.where(inside, np.sqrt(np.abs((hi - safe) * (safe - lo))) / (2 * np.pi * gamma * safe), 0.0)


def mp_stieltjes(lam, gamma):
    """Stieltjes transform of the Marchenko-Pastur law at ``z = -lam``: ``m(-lam) = E[1 / (s + lam)]``.

    ``m`` solves ``gamma z m^2 - (1 - gamma - z) m + 1 = 0``; the branch with
    ``m(-lam) > 0`` is

    ``m(-lam) = (-(1 - gamma + lam) + sqrt((1 - gamma + lam)^2 + 4 gamma lam)) / (2 gamma lam)``.

    Args:
        lam: ``lambda > 0`` (scalar or array).
        gamma: aspect ratio ``p / n > 0``.

    Returns:
        ``m(-lam)``, including the atom at 0 when ``gamma > 1``.

    References:
        Marchenko & Pastur (1967), doi:10.1070/SM1967v001n04ABEH001994.
    """
    a = 1.0 - gamma + lam
    return (-a + jnp.sqrt(a * a + 4.0 * gamma * lam)) / (2.0 * gamma * lam)


class SpectrumResult(NamedTuple):
    """Eigenvalues of ``X^T X / n`` pooled over draws, and the Marchenko-Pastur density."""

    gamma: float
    eigenvalues: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    mean_inverse: float
    mean_inverse_exact: float


@_jit("n", "p", "n_draws")
def _spectrum(key, *, n, p, n_draws):
    x = data.normal(key, (n_draws, n, p))
    return jnp.linalg.eigvalsh(jnp.swapaxes(x, 1, 2) @ x / n)


def run_mp_spectrum(*, key: Array, n: int = 400, p: int = 200, n_draws: int = 5) -> SpectrumResult:
    """The eigenvalues of the sample covariance ``X^T X / n`` against Marchenko-Pastur.

    With ``n = 2p`` the sample covariance of data whose true covariance is the
    identity has eigenvalues spread over ``[0.09, 2.91]``: the spread is not noise
    that averages away, it is a deterministic law. Also returned: the mean of
    ``1/s`` over eigenvalues against the exact Gaussian value
    ``E tr((X^T X / n)^{-1}) / p = n / (n - p - 1)`` (limit ``1 / (1 - gamma)``).

    Args:
        key: randomness for the designs.
        n: samples per draw.
        p: dimension (``p < n``).
        n_draws: independent designs pooled.

    Returns:
        A ``SpectrumResult``.
    """
    ev = np.asarray(_spectrum(key, n=n, p=p, n_draws=n_draws)).ravel()
    gamma = p / n
    lo, hi = mp_edges(gamma)
    grid = np.linspace(0.0, hi * 1.05, 600)
    return SpectrumResult(
        gamma=gamma,
        eigenvalues=ev,
        grid=grid,
        density=mp_density(grid, gamma),
        mean_inverse=float(np.mean(1.0 / ev)),
        mean_inverse_exact=n / (n - p - 1),
    )


# --------------------------------------------------------------------------
# Ridge regression in the isotropic Gaussian model
# --------------------------------------------------------------------------


def ridge_risk(lam, gamma, *, r2: float = 1.0, sigma2: float = 0.25):
    """Asymptotic excess risk of ridge regression with isotropic Gaussian features.

    With ``b = (X^T X / n + lam I)^{-1} X^T y / n`` and ``p / n -> gamma``,

    ``||b - beta||^2 -> r^2 lam^2 m'(-lam) + sigma^2 gamma (m(-lam) - lam m'(-lam))``,

    where ``m`` is the Marchenko-Pastur Stieltjes transform (``mp_stieltjes``) and
    ``m'(-lam) = E[1 / (s + lam)^2]``, obtained here by automatic differentiation.
    The first term is the bias, the second the variance.

    Args:
        lam: penalty ``lambda > 0`` (scalar or 1-D array).
        gamma: ``p / n``.
        r2: signal strength ``||beta||^2``.
        sigma2: noise variance.

    Returns:
        The excess risk (test error minus ``sigma2``), same shape as ``lam``.

    References:
        Dobriban & Wager (2018), doi:10.1214/17-AOS1549; Hastie et al. (2022),
        doi:10.1214/21-AOS2133.
    """

    def one(l):
        m = mp_stieltjes(l, gamma)
        dm = -jax.grad(mp_stieltjes)(l, gamma)  # m'(z) at z = -lam is -d/dlam m(-lam)
        return r2 * l**2 * dm + sigma2 * gamma * (m - l * dm)

    return jnp.vectorize(one)(jnp.asarray(np.asarray(lam, dtype=float)))


def ridge_optimal_penalty(gamma, *, r2: float = 1.0, sigma2: float = 0.25):
    """The risk-minimizing ridge penalty ``lambda* = sigma^2 gamma / r^2``.

    It is the posterior mean under the prior ``beta ~ N(0, r^2 / p I)``, hence
    Bayes-optimal; in the ``(1/n)``-normalized loss the prior precision
    ``p / r^2`` times the noise variance ``sigma^2`` divided by ``n`` gives it.

    References:
        Dobriban & Wager (2018), doi:10.1214/17-AOS1549.
    """
    return sigma2 * np.asarray(gamma) / r2


def optimal_ridge_risk(gamma, *, r2: float = 1.0, sigma2: float = 0.25):
    """Asymptotic excess risk of optimally tuned ridge: ``sigma^2 gamma m(-lambda*)``.

    Setting ``lam = lambda* = sigma^2 gamma / r^2`` in ``ridge_risk`` cancels the
    ``m'`` terms. Finite for every ``gamma``: tuning removes the peak at ``gamma = 1``.
    """
    gamma = np.asarray(gamma, dtype=float)
    lam = ridge_optimal_penalty(gamma, r2=r2, sigma2=sigma2)
    return sigma2 * gamma * np.asarray(mp_stieltjes(lam, gamma))


class RidgePathResult(NamedTuple):
    """Excess test risk and training error of ridge along a grid of penalties."""

    gamma: float
    lams: np.ndarray
    risk: np.ndarray
    risk_sem: np.ndarray
    train_error: np.ndarray
    theory: np.ndarray
    lam_star: float
    noise: float


@_jit("n", "p", "n_seeds")
def _ridge_path(key, lams, r, sigma, *, n, p, n_seeds):
    def one_set(k):
        kx, kb, ke = jax.random.split(k, 3)
        x = data.normal(kx, (n, p))
        beta = jax.random.normal(kb, (p,))
        beta = r * beta / jnp.linalg.norm(beta)
        y = x @ beta + sigma * jax.random.normal(ke, (n,))
        a = x.T @ x / n
        systems = a[None] + lams[:, None, None] * jnp.eye(p)[None]  # one system per penalty
        b = _spd_solve(systems, jnp.broadcast_to(x.T @ y / n, (lams.shape[0], p))[..., None])[..., 0]
        risk = jnp.sum((b - beta[None, :]) ** 2, axis=1)
        train = jnp.mean((b @ x.T - y[None, :]) ** 2, axis=1)
        return risk, train

    return jax.vmap(one_set)(jax.random.split(key, n_seeds))


def run_ridge_path(
    *,
    key: Array,
    n: int = 100,
    p: int = 100,
    lams=tuple(np.geomspace(1e-2, 1e1, 16)),
    n_seeds: int = 100,
    r: float = 1.0,
    sigma: float = 0.5,
) -> RidgePathResult:
    """Ridge regression along a grid of penalties, on ``n_seeds`` Gaussian training sets.

    Small ``lambda``: the fit follows the noise (variance); large ``lambda``: the
    coefficients shrink to zero (bias, excess risk ``-> r^2``). The measured excess
    risk ``||b - beta||^2`` is compared with ``ridge_risk``; its minimum sits at
    ``lambda* = sigma^2 gamma / r^2``. The training error falls monotonically as
    ``lambda`` decreases.

    Args:
        key: randomness for designs, coefficients and noise.
        n, p: samples and features (``gamma = p / n``).
        lams: penalties.
        n_seeds: independent training sets (``vmap``).
        r: ``||beta||``.
        sigma: noise level.

    Returns:
        A ``RidgePathResult``.

    References:
        Hoerl & Kennard (1970), doi:10.1080/00401706.1970.10488634;
        Dobriban & Wager (2018), doi:10.1214/17-AOS1549.
    """
    lams = np.asarray(lams, dtype=float)
    risk, train = _ridge_path(key, jnp.asarray(lams), r, sigma, n=n, p=p, n_seeds=n_seeds)
    mean, sem = metrics.mean_and_sem(risk)
    gamma = p / n
    return RidgePathResult(
        gamma=gamma,
        lams=lams,
        risk=mean,
        risk_sem=sem,
        train_error=np.asarray(train).mean(axis=0),
        theory=np.asarray(ridge_risk(lams, gamma, r2=r**2, sigma2=sigma**2)),
        lam_star=float(ridge_optimal_penalty(gamma, r2=r**2, sigma2=sigma**2)),
        noise=sigma**2,
    )


# --------------------------------------------------------------------------
# Distances in high dimension
# --------------------------------------------------------------------------


def chi_mean(d):
    """``E ||z||`` for ``z ~ N(0, I_d)``: ``sqrt(2) Gamma((d+1)/2) / Gamma(d/2)``.

    In float64 (numpy/scipy): ``distance_cv`` needs ``chi_mean(d)^2 / d`` to
    relative accuracy well below ``1/d``, which float32 does not have for
    ``d > 100`` (float64: fine up to ``d ~ 10^5``).
    """
    d = np.asarray(d, dtype=float)
    return np.sqrt(2.0) * np.exp(scipy.special.gammaln((d + 1) / 2) - scipy.special.gammaln(d / 2))


def distance_cv(d):
    """Coefficient of variation ``std(D) / E D`` of ``D = ||x - x'||``, ``x, x' ~ N(0, I_d)`` i.i.d.

    ``D = sqrt(2) chi_d``, so ``E D^2 = 2d``, ``E D = sqrt(2) chi_mean(d)`` and

    ``CV(d) = sqrt(d / chi_mean(d)^2 - 1) = (2d)^{-1/2} (1 + O(1/d))``.
    """
    d = np.asarray(d, dtype=float)
    return np.sqrt(d / chi_mean(d) ** 2 - 1.0)


class ConcentrationResult(NamedTuple):
    """Pairwise distances of Gaussian points against the dimension.

    Attributes:
        dims: dimensions.
        cv, cv_sem: measured coefficient of variation of pairwise distances, and its
            standard error over repetitions.
        cv_theory: ``distance_cv(dims)``.
        contrast, contrast_sem: relative contrast ``(D_max - D_min) / mean(D)`` over all
            pairs of ``n_points`` points, mean over repetitions and standard error.
        contrast_min: Beyer's normalization ``(D_max - D_min) / D_min`` (mean over repetitions).
        fit: log-log fit of the contrast for ``dims >= fit_from`` (slope, stderr).
        fit_from: smallest dimension in the fit.
        normalized: pairwise distances divided by their mean, shape ``(len(dims), pairs)``
            (first repetition), for histograms.
    """

    dims: np.ndarray
    cv: np.ndarray
    cv_sem: np.ndarray
    cv_theory: np.ndarray
    contrast: np.ndarray
    contrast_sem: np.ndarray
    contrast_min: np.ndarray
    fit: metrics.PowerLawFit
    fit_from: int
    normalized: np.ndarray


@_jit("dims", "n_points", "n_seeds")
def _distances(key, *, dims, n_points, n_seeds):
    iu = np.triu_indices(n_points, k=1)

    def one_rep(k):
        x = data.normal(k, (n_points, max(dims)))
        out = []
        for d in dims:  # the first d coordinates: nested dimensions, static slices
            xd = x[:, :d]
            if d <= 16:  # direct differences: the Gram identity below cancels for close pairs
                d2 = jnp.sum((xd[:, None, :] - xd[None, :, :]) ** 2, axis=-1)
            else:  # |x|^2 + |x'|^2 - 2 x.x': all distances ~ sqrt(2d), no cancellation
                sq = jnp.sum(xd**2, axis=1)
                d2 = sq[:, None] + sq[None, :] - 2.0 * xd @ xd.T
            out.append(jnp.sqrt(jnp.maximum(d2[iu], 0.0)))
        return jnp.stack(out)  # (len(dims), pairs)

    return jax.vmap(one_rep)(jax.random.split(key, n_seeds))


def run_distance_concentration(
    *,
    key: Array,
    dims: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
    n_points: int = 64,
    n_seeds: int = 16,
    fit_from: int = 16,
) -> ConcentrationResult:
    """Concentration of pairwise distances of ``n_points`` Gaussian points in ``R^d``.

    Two measures of how alike all distances become:

    * the coefficient of variation ``std(D) / E D``, exactly ``distance_cv(d)``;
    * the relative contrast ``(max D - min D) / mean D`` over all pairs, which
      decays like ``d^{-1/2}``: fitted log-log slope. Beyer et al. (1999) divide
      by ``min D`` instead; that has the same limit law but a correction of
      relative size ``d^{-1/2}`` (``min D / mean D = 1 - O(d^{-1/2})``), which
      steepens a fitted slope to about ``-0.6`` over ``d = 16..2048``. The range
      over the mean is corrected only at relative order ``1/d``: skewness shifts
      the largest and the smallest distance alike.

    Args:
        key: randomness for the points.
        dims: dimensions (nested: the first ``d`` coordinates of one draw).
        n_points: points per repetition (all ``n (n-1) / 2`` pairs are used).
        n_seeds: independent repetitions (``vmap``).
        fit_from: smallest dimension entering the slope fit (the law is asymptotic).

    Returns:
        A ``ConcentrationResult``.

    References:
        Beyer, Goldstein, Ramakrishnan & Shaft (1999), doi:10.1007/3-540-49257-7_15;
        Aggarwal, Hinneburg & Keim (2001), doi:10.1007/3-540-44503-X_27.
    """
    dims = tuple(int(d) for d in dims)
    dist = np.asarray(_distances(key, dims=dims, n_points=n_points, n_seeds=n_seeds), dtype=float)
    cv_per_rep = dist.std(axis=2) / dist.mean(axis=2)  # (reps, dims)
    spread = dist.max(axis=2) - dist.min(axis=2)
    contrast_per_rep = spread / dist.mean(axis=2)
    cv, cv_sem = metrics.mean_and_sem(cv_per_rep)
    contrast, contrast_sem = metrics.mean_and_sem(contrast_per_rep)
    dims_arr = np.asarray(dims)
    sel = dims_arr >= fit_from
    return ConcentrationResult(
        dims=dims_arr,
        cv=cv,
        cv_sem=cv_sem,
        cv_theory=np.asarray(distance_cv(dims_arr)),
        contrast=contrast,
        contrast_sem=contrast_sem,
        contrast_min=(spread / dist.min(axis=2)).mean(axis=0),
        fit=metrics.loglog_slope(dims_arr[sel], contrast[sel]),
        fit_from=fit_from,
        normalized=dist[0] / dist[0].mean(axis=1, keepdims=True),
    )


# --------------------------------------------------------------------------
# Double descent of min-norm least squares
# --------------------------------------------------------------------------


def ridgeless_risk(gamma, *, r2: float = 1.0, sigma2: float = 0.25):
    """Asymptotic excess risk of min-norm least squares with isotropic features.

    ``sigma^2 gamma / (1 - gamma)`` for ``gamma < 1`` and
    ``r^2 (1 - 1/gamma) + sigma^2 / (gamma - 1)`` for ``gamma > 1``, ``inf`` at 1
    (Hastie, Montanari, Rosset & Tibshirani 2022, isotropic case). The excess risk
    is ``E[(x^T b - x^T beta)^2 | X]``; the test error adds ``sigma^2``.

    Args:
        gamma: ``p / n`` (scalar or array).
        r2: ``||beta||^2``.
        sigma2: noise variance.

    Returns:
        The excess risk, a numpy array.

    References:
        Hastie et al. (2022), doi:10.1214/21-AOS2133.
    """
    g = np.asarray(gamma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        under = sigma2 * g / (1.0 - g)
        over = r2 * (1.0 - 1.0 / g) + sigma2 / (g - 1.0)
    return np.where(g < 1, under, np.where(g > 1, over, np.inf))


def ridgeless_risk_finite(n, p, *, r2: float = 1.0, sigma2: float = 0.25):
    """Exact expected excess risk of min-norm least squares for Gaussian ``X`` of shape ``(n, p)``.

    ``sigma^2 p / (n - p - 1)`` for ``p < n - 1`` and
    ``r^2 (1 - n/p) + sigma^2 n / (p - n - 1)`` for ``p > n + 1``; infinite for
    ``|p - n| <= 1``. Averaged over ``X`` (and ``beta`` uniform on its sphere);
    derived from ``E (W^{-1}) = I / (m - k - 1)`` for a Wishart matrix
    ``W ~ W_k(m, I)``. Its limit is ``ridgeless_risk``.

    Args:
        n: samples.
        p: features (scalar or array).
        r2: ``||beta||^2``.
        sigma2: noise variance.

    Returns:
        The expected excess risk, a numpy array.
    """
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        under = sigma2 * p / (n - p - 1.0)
        over = r2 * (1.0 - n / p) + sigma2 * n / (p - n - 1.0)
    return np.where(p < n - 1, under, np.where(p > n + 1, over, np.inf))


class DoubleDescentResult(NamedTuple):
    """Excess risk of min-norm least squares (and of optimally tuned ridge) against ``p / n``."""

    n: int
    p: np.ndarray
    gamma: np.ndarray
    risk: np.ndarray
    risk_sem: np.ndarray
    ridge: np.ndarray
    ridge_sem: np.ndarray
    theory: np.ndarray
    theory_finite: np.ndarray
    ridge_theory: np.ndarray
    r2: float
    sigma2: float


def _nested_normal_equations(x, masks, *, n: int, over: tuple[int, ...]):
    """The linear systems of min-norm least squares on nested designs ``X_p`` (the first ``p`` columns).

    For ``p <= n`` (the first ``len(masks) - len(over)`` rows of ``masks``): the normal equations
    ``X_p^T X_p b = X_p^T y`` in the first ``n`` coordinates, the identity on the unused ones.
    For ``p > n``: the dual kernels ``X_p X_p^T``, accumulated block by block over the sorted sizes.

    Returns:
        ``(xn, mu, a_u, kern)``: ``x[:, :n]``, the masks of the small models on those columns,
        their systems ``(n_under, n, n)`` and the kernels ``(len(over), n, n)``.
    """
    nu = masks.shape[0] - len(over)
    eye = jnp.eye(n)
    xn = x[:, :n]
    mu = masks[:nu, :n]
    gram = xn.T @ xn
    a_u = gram[None] * mu[:, :, None] * mu[:, None, :] + eye[None] * (1.0 - mu)[:, :, None]
    edges = (n,) + tuple(over)
    blocks = [xn @ xn.T] + [x[:, a:b] @ x[:, a:b].T for a, b in zip(edges[:-1], edges[1:])]
    kern = jnp.cumsum(jnp.stack(blocks), axis=0)[1:]
    return xn, mu, a_u, kern


@_jit("n", "p_values", "n_seeds")
def _double_descent(key, r, sigma, *, n, p_values, n_seeds):
    p_max = max(p_values)
    under = tuple(p for p in p_values if p <= n)
    over = tuple(p for p in p_values if p > n)
    pu, po = np.asarray(under, dtype=int), np.asarray(over, dtype=int)
    # optimal ridge penalties (in the (1/n)-normalized loss), one per model size
    lam_u = jnp.asarray(sigma**2 * pu / n / r**2)
    lam_o = jnp.asarray(sigma**2 * po / n / r**2)
    eye = jnp.eye(n)

    def one_set(k):
        kx, kb, ke = jax.random.split(k, 3)
        x = data.normal(kx, (n, p_max))
        g = jax.random.normal(kb, (p_max,))
        eps = jax.random.normal(ke, (n,))
        # The model with p features sees the first p columns of x, and the truth
        # beta_p = r g_{:p} / ||g_{:p}|| (nested designs: every size is correctly
        # distributed, and neighbouring sizes share their randomness).
        cols = jnp.arange(p_max)
        masks = (cols[None, :] < np.asarray(p_values)[:, None]).astype(x.dtype)  # (P, p_max)
        betas = r * masks * g[None, :] / jnp.linalg.norm(masks * g[None, :], axis=1, keepdims=True)
        signal = betas @ x.T  # (P, n): X_p beta_p
        ys = signal + sigma * eps[None, :]
        nu = len(under)
        # p <= n: normal equations; p > n: the dual, b = X_p^T alpha with (X_p X_p^T + n lam I) alpha = y
        xn, mu, a_u, kern = _nested_normal_equations(x, masks, n=n, over=over)
        rhs_u = mu * (ys[:nu] @ xn)
        ridge_u = a_u + n * lam_u[:, None, None] * eye[None] * mu[:, :, None]
        ridge_o = kern + n * lam_o[:, None, None] * eye[None]
        systems = jnp.concatenate([a_u, kern, ridge_u, ridge_o])
        rhs = jnp.concatenate([rhs_u, ys[nu:], rhs_u, ys[nu:]])
        sol = _spd_solve(systems, rhs[..., None])[..., 0]  # one batched solve

        def risks(s_u, s_o):
            r_u = jnp.sum((s_u - betas[:nu, :n]) ** 2, axis=1)
            # ||X^T alpha - beta||^2 = alpha^T K alpha - 2 alpha^T X beta + r^2
            r_o = jnp.einsum("pi,pij,pj->p", s_o, kern, s_o) - 2.0 * jnp.sum(s_o * signal[nu:], axis=1) + r**2
            return jnp.concatenate([r_u, r_o])

        size = len(p_values)
        return risks(sol[:nu], sol[nu:size]), risks(sol[size : size + nu], sol[size + nu :])

    return jax.vmap(one_set)(jax.random.split(key, n_seeds))


def default_p_values(n: int) -> tuple[int, ...]:
    """Model sizes for the double-descent curve: ``p / n`` from 0.1 to 10, denser near 1."""
    grid = np.round(np.geomspace(0.1, 10.0, 17) * n).astype(int)
    near = np.round(n * np.array([0.9, 0.95, 1.05, 1.1])).astype(int)
    p = np.unique(np.concatenate([grid, near]))
    return tuple(int(v) for v in p if abs(v - n) > 2)


def run_double_descent(
    *,
    key: Array,
    n: int = 100,
    p_values: tuple[int, ...] | None = None,
    n_seeds: int = 150,
    r: float = 1.0,
    sigma: float = 0.5,
) -> DoubleDescentResult:
    """Min-norm least squares and optimally tuned ridge for ``p / n`` from 0.1 to 10.

    Each training set: ``X`` of shape ``(n, p)`` with i.i.d. ``N(0, 1)`` entries,
    ``beta`` uniform on the sphere of radius ``r``, ``y = X beta + sigma eps``.
    Fit ``b = X^+ y`` (and ridge at ``lambda* = sigma^2 p / (n r^2)``) and measure
    the excess risk ``||b - beta||^2``, exactly the expected test error minus
    ``sigma^2`` for isotropic test inputs. Compared with ``ridgeless_risk``
    (asymptotic), ``ridgeless_risk_finite`` (exact mean at this ``n``) and
    ``optimal_ridge_risk``.

    Near ``p = n`` the risk has heavy tails (infinite variance within two or three
    of ``p = n``, infinite mean at ``|p - n| <= 1``): sample means there are
    unreliable and the default grid stays three or more away.

    Args:
        key: randomness for designs, coefficients and noise.
        n: samples.
        p_values: model sizes (default ``default_p_values(n)``).
        n_seeds: independent training sets (``vmap``).
        r: ``||beta||``.
        sigma: noise level.

    Returns:
        A ``DoubleDescentResult``.

    References:
        Hastie, Montanari, Rosset & Tibshirani (2022), doi:10.1214/21-AOS2133;
        Belkin, Hsu, Ma & Mandal (2019), doi:10.1073/pnas.1903070116.
    """
    p_values = default_p_values(n) if p_values is None else tuple(sorted(int(p) for p in p_values))
    risk, ridge = _double_descent(key, r, sigma, n=n, p_values=p_values, n_seeds=n_seeds)
    risk_mean, risk_sem = metrics.mean_and_sem(risk)
    ridge_mean, ridge_sem = metrics.mean_and_sem(ridge)
    p = np.asarray(p_values)
    gamma = p / n
    r2, sigma2 = r**2, sigma**2
    return DoubleDescentResult(
        n=n,
        p=p,
        gamma=gamma,
        risk=risk_mean,
        risk_sem=risk_sem,
        ridge=ridge_mean,
        ridge_sem=ridge_sem,
        theory=ridgeless_risk(gamma, r2=r2, sigma2=sigma2),
        theory_finite=ridgeless_risk_finite(n, p, r2=r2, sigma2=sigma2),
        ridge_theory=optimal_ridge_risk(gamma, r2=r2, sigma2=sigma2),
        r2=r2,
        sigma2=sigma2,
    )


# --------------------------------------------------------------------------
# Fixed data, unobserved features: when over-parametrization wins
# --------------------------------------------------------------------------


def misspecified_error_finite(n, p, *, n_features: int, r2: float = 1.0, sigma2: float = 0.01):
    """Exact expected test error of min-norm least squares on the first ``p`` of ``n_features`` features.

    The data are fixed: ``y = x^T beta + sigma eps`` with ``x ~ N(0, I_P)``, ``P = n_features``,
    ``beta`` uniform on the sphere of radius ``r`` in ``R^P``. A model that sees the first ``p``
    features treats the rest, ``w^T theta``, as noise independent of what it sees, of variance
    ``||theta||^2`` (Hastie, Montanari, Rosset & Tibshirani 2022, Sec. 5.1). Its test error is
    ``sigma^2 + ||theta||^2 + ||b - beta_p||^2``, and the last term is the well-specified excess
    risk with signal ``||beta_p||^2`` and noise ``sigma^2 + ||theta||^2``. Both enter
    ``ridgeless_risk_finite`` linearly, so their means, ``r^2 p / P`` and ``sigma^2 + r^2 (1 - p/P)``,
    give the exact mean.

    Args:
        n: samples.
        p: features the model sees (scalar or array), at most ``n_features``.
        n_features: ``P``, all the features that generate ``y``.
        r2: ``||beta||^2``.
        sigma2: noise variance.

    Returns:
        The expected test error ``E (y - x_p^T b)^2``, a numpy array.

    References:
        Hastie et al. (2022), doi:10.1214/21-AOS2133, Sec. 5.
    """
    p = np.asarray(p, dtype=float)
    seen = r2 * p / n_features
    unseen = r2 - seen
    return sigma2 + unseen + ridgeless_risk_finite(n, p, r2=seen, sigma2=sigma2 + unseen)


class MisspecifiedResult(NamedTuple):
    """Test error of min-norm least squares on the first ``p`` of ``n_features`` features, fixed data."""

    n: int
    n_features: int
    p: np.ndarray
    gamma: np.ndarray
    error: np.ndarray
    error_sem: np.ndarray
    theory: np.ndarray
    null_error: float  # the test error of predicting 0: sigma^2 + r^2
    r2: float
    sigma2: float


@_jit("n", "n_features", "p_values", "n_seeds")
def _misspecified(key, r, sigma, *, n, n_features, p_values, n_seeds):
    under = tuple(p for p in p_values if p <= n)
    over = tuple(p for p in p_values if p > n)

    def one_set(k):
        kx, kb, ke = jax.random.split(k, 3)
        x = data.normal(kx, (n, n_features))
        g = jax.random.normal(kb, (n_features,))
        beta = r * g / jnp.linalg.norm(g)
        y = x @ beta + sigma * jax.random.normal(ke, (n,))  # one data set for every model size
        cols = jnp.arange(n_features)
        masks = (cols[None, :] < np.asarray(p_values)[:, None]).astype(x.dtype)  # (P, n_features)
        seen = masks * beta[None, :]  # beta_p, zero beyond p
        nu = len(under)
        # p <= n: normal equations; p > n: the dual, b = X_p^T alpha with X_p X_p^T alpha = y
        xn, mu, a_u, kern = _nested_normal_equations(x, masks, n=n, over=over)
        rhs_u = mu * (y @ xn)[None, :]
        systems = jnp.concatenate([a_u, kern])
        rhs = jnp.concatenate([rhs_u, jnp.broadcast_to(y, (len(over), n))])
        sol = _spd_solve(systems, rhs[..., None])[..., 0]  # one batched solve
        s_u, s_o = sol[:nu], sol[nu:]
        excess_u = jnp.sum((s_u - seen[:nu, :n]) ** 2, axis=1)
        # ||X_p^T alpha - beta_p||^2 = alpha^T K alpha - 2 alpha^T X_p beta_p + ||beta_p||^2
        signal_o = seen[nu:] @ x.T  # (over, n): X_p beta_p
        excess_o = (jnp.einsum("pi,pij,pj->p", s_o, kern, s_o) - 2.0 * jnp.sum(s_o * signal_o, axis=1)
                    + jnp.sum(seen[nu:] ** 2, axis=1))
        unseen = r**2 - jnp.sum(seen**2, axis=1)  # ||theta||^2
        return sigma**2 + unseen + jnp.concatenate([excess_u, excess_o])

    return jax.vmap(one_set)(jax.random.split(key, n_seeds))


def run_misspecified(
    *,
    key: Array,
    n: int = 100,
    n_features: int = 1000,
    p_values: tuple[int, ...] | None = None,
    n_seeds: int = 200,
    r: float = 1.0,
    sigma: float = 0.1,
) -> MisspecifiedResult:
    """Fixed data with ``n_features`` features; min-norm least squares on the first ``p`` of them.

    Unlike ``run_double_descent``, where each ``p`` is its own problem with a signal of norm
    ``r`` on the features used, here one data set is generated by all ``P = n_features`` features
    and the models differ only in how many they see. The unseen features act as noise, and
    seeing more of them is worth more than the variance that interpolation costs: the test
    error is smallest at ``p = P``, far beyond ``p = n`` (Hastie et al. 2022, Sec. 5).
    Compared with ``misspecified_error_finite``, the exact mean at this ``n``.

    Args:
        key: randomness for designs, coefficients and noise.
        n: samples.
        n_features: ``P``.
        p_values: model sizes (default ``default_p_values(n)``, ``p / n`` from 0.1 to ``P / n``).
        n_seeds: independent data sets (``vmap``).
        r: ``||beta||``.
        sigma: noise level.

    Returns:
        A ``MisspecifiedResult``.

    References:
        Hastie, Montanari, Rosset & Tibshirani (2022), doi:10.1214/21-AOS2133, Sec. 5.
    """
    if p_values is None:
        p_values = tuple(p for p in default_p_values(n) if p <= n_features)
    p_values = tuple(sorted(int(p) for p in p_values))
    if p_values[-1] > n_features:
        raise ValueError(f"p = {p_values[-1]} exceeds the {n_features} features")
    err = _misspecified(key, r, sigma, n=n, n_features=n_features, p_values=p_values, n_seeds=n_seeds)
    mean, sem = metrics.mean_and_sem(err)
    p = np.asarray(p_values)
    r2, sigma2 = r**2, sigma**2
    return MisspecifiedResult(
        n=n, n_features=n_features, p=p, gamma=p / n, error=mean, error_sem=sem,
        theory=misspecified_error_finite(n, p, n_features=n_features, r2=r2, sigma2=sigma2),
        null_error=sigma2 + r2, r2=r2, sigma2=sigma2,
    )


# --------------------------------------------------------------------------
# At the interpolation threshold p = n
# --------------------------------------------------------------------------


def edelman_cdf(x):
    """Limit law of ``n s_min^2`` for an ``n x n`` real Gaussian matrix: ``1 - exp(-x/2 - sqrt(x))``.

    ``s_min`` is the smallest singular value; the density is
    ``(1 + sqrt(x)) / (2 sqrt(x)) exp(-x/2 - sqrt(x))``.

    References:
        Edelman (1988), doi:10.1137/0609045.
    """
    x = np.asarray(x, dtype=float)
    return 1.0 - np.exp(-x / 2.0 - np.sqrt(x))


def threshold_tail(t):
    """Limit of ``P(z^2 / (n s_min^2) > t)``, ``z ~ N(0, 1)`` independent of ``s_min``.

    At ``p = n`` the interpolant's excess risk is ``||X^{-1} eps||^2 sigma^2 =
    sigma^2 sum_i z_i^2 / s_i^2`` with ``z = U^T eps`` standard normal; its part
    along the smallest singular direction, scaled by ``sigma^2 n``, is
    ``z^2 / xi`` with ``xi = n s_min^2`` (``edelman_cdf``). Averaging
    ``P(xi < z^2 / t)`` over ``z`` (a Gaussian integral) gives

    ``S(t) = 1 - 2 sqrt(t / (t+1)) exp(1 / (2(t+1))) Phi(-1 / sqrt(t+1))``,

    a lower bound on the tail of the scaled risk and its exact large-``t`` form,
    ``S(t) ~ sqrt(2 / pi) t^{-1/2}``: the mean is infinite.

    Args:
        t: thresholds ``> 0``.

    Returns:
        ``S(t)``, a numpy array.
    """
    t = np.asarray(t, dtype=float)
    u = 1.0 / np.sqrt(t + 1.0)
    return 1.0 - 2.0 * np.sqrt(t / (t + 1.0)) * np.exp(u**2 / 2.0) * scipy.stats.norm.cdf(-u)


class ThresholdResult(NamedTuple):
    """The interpolant's excess risk at ``p = n``, scaled by ``sigma^2 n``, for several ``n``.

    ``scaled_risk[i]`` holds ``||b - beta||^2 / (sigma^2 n)`` for ``n_seeds``
    training sets of size ``n_values[i]`` (``b = X^{-1} y``, ``X`` square).
    """

    n_values: np.ndarray
    scaled_risk: np.ndarray
    median: np.ndarray


@_jit("n_values", "n_seeds")
def _threshold(key, *, n_values, n_seeds):
    size = max(n_values)

    def one(k, n):
        # X_n embedded as the block diag(X_n, I): one matrix shape for every n,
        # and the solution's first n entries are X_n^{-1} eps_n (partial pivoting
        # never leaves the X_n block, whose columns are zero in the identity rows)
        kx, ke = jax.random.split(k)
        active = jnp.arange(size) < n
        block = active[:, None] & active[None, :]
        x = jnp.where(block, data.normal(kx, (size, size)), jnp.diag(jnp.where(active, 0.0, 1.0)))
        eps = jnp.where(active, jax.random.normal(ke, (size,)), 0.0)
        return jnp.sum(jnp.linalg.solve(x, eps) ** 2) / n  # beta_hat - beta = X^{-1} eps

    keys = jax.random.split(key, (len(n_values), n_seeds))
    sizes = jnp.asarray(n_values)[:, None] * jnp.ones((1, n_seeds), dtype=int)
    return jax.vmap(jax.vmap(one))(keys, sizes)


def run_interpolation_threshold(
    *,
    key: Array,
    n_values: tuple[int, ...] = (20, 40, 80),
    n_seeds: int = 1000,
) -> ThresholdResult:
    """Distribution of the excess risk of the interpolant at ``p = n``.

    At ``p = n`` the design is square, ``b = X^{-1} y = beta + sigma X^{-1} eps``
    and ``||b - beta||^2 = sigma^2 sum_i z_i^2 / s_i^2``. Since ``n s_min^2`` has a
    limit law (Edelman 1988), the risk scaled by ``sigma^2 n`` has one too: the
    risk grows like ``n`` and its tail is ``threshold_tail(t) ~ t^{-1/2}``.
    The noise level drops out of the scaled risk.

    Args:
        key: randomness for designs and noise.
        n_values: sizes ``n = p``.
        n_seeds: training sets per size.

    Returns:
        A ``ThresholdResult``.

    References:
        Edelman (1988), doi:10.1137/0609045.
    """
    n_values = tuple(int(n) for n in n_values)
    scaled = np.asarray(_threshold(key, n_values=n_values, n_seeds=n_seeds))
    return ThresholdResult(n_values=np.asarray(n_values), scaled_risk=scaled, median=np.median(scaled, axis=1))
