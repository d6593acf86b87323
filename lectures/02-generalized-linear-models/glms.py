"""Week 2: generalized linear models.

A generalized linear model (GLM) draws ``y`` from an exponential family whose
natural parameter is linear in the input, ``xi = x^T theta``. This module has

* the three canonical families (Gaussian, Bernoulli, Poisson), with the mean and
  variance obtained from the log-partition function by automatic differentiation;
* the negative log-likelihood (squared loss, cross-entropy, Poisson loss), its
  gradient and Hessian in closed form, and one Newton step written as iteratively
  reweighted least squares (IRLS);
* the week's experiments, each a function with keyword defaults at lecture size:
  ``run_family_moments``, ``run_newton_vs_gd``, ``run_implicit_bias``,
  ``run_softmax_digits``, ``run_lasso_path`` and ``run_shrinkage``.

Three experiments run in float64 inside ``jax.enable_x64(True)``: quadratic
convergence doubles the number of correct digits per step, and float32 runs out
of digits after two steps; the implicit-bias run adds increments of relative size
``1/t`` to a growing vector for ``10^5`` steps; the posterior maximized on a grid
in ``run_shrinkage`` is flat at its maximum. Nothing global is changed.

References:
    Nelder & Wedderburn (1972), doi:10.2307/2344614; McCullagh & Nelder (1989),
    doi:10.1007/978-1-4899-3242-6; Soudry, Hoffer, Nacson, Gunasekar & Srebro
    (2018), arXiv:1710.10345; Tibshirani (1996),
    doi:10.1111/j.2517-6161.1996.tb02080.x; Beck & Teboulle (2009),
    doi:10.1137/080716542.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from dlcourse import data, linalg, train

Array = jax.Array


# --------------------------------------------------------------------------
# Exponential families
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExponentialFamily:
    """A one-parameter exponential family in canonical form (dispersion 1).

    ``p(y | xi) = h(y) exp(xi * y - b(xi))``. The mean is ``b'(xi)`` and the
    variance ``b''(xi)``; both come from ``log_partition`` by autodiff, so the
    identities are properties of the code, not of a table.

    Attributes:
        name: a short name, used in legends.
        log_partition: ``b``, applied elementwise.
        log_base: ``log h(y)``, applied elementwise (only needed to compare the
            loss with the full log-likelihood).
        sampler: ``sampler(key, xi) -> y`` with the shape of ``xi``.
    """

    name: str
    log_partition: Callable[[Array], Array]
    log_base: Callable[[Array], Array]
    sampler: Callable[[Array, Array], Array]

    def mean(self, xi: Array) -> Array:
        """``mu = b'(xi)``, the inverse of the canonical link, elementwise."""
        return jax.grad(lambda e: jnp.sum(self.log_partition(e)))(xi)

    def variance(self, xi: Array) -> Array:
        """``Var[y] = b''(xi) > 0``, elementwise."""
        return jax.grad(lambda e: jnp.sum(self.mean(e)))(xi)

    def log_likelihood(self, y: Array, xi: Array) -> Array:
        """``log p(y | xi) = log h(y) + xi * y - b(xi)``, elementwise."""
        return self.log_base(y) + xi * y - self.log_partition(xi)

    def sample(self, xi: Array, *, key: Array) -> Array:
        """Draw ``y ~ p(. | xi)`` elementwise."""
        return self.sampler(key, xi)


GAUSSIAN = ExponentialFamily(
    name="Gaussian",
    log_partition=lambda xi: 0.5 * xi**2,
    log_base=lambda y: -0.5 * y**2 - 0.5 * jnp.log(2 * jnp.pi),
    sampler=lambda key, xi: xi + data.normal(key, jnp.shape(xi)).astype(jnp.result_type(xi)),
)
"""``N(xi, 1)``: identity link, squared loss."""

BERNOULLI = ExponentialFamily(
    name="Bernoulli",
    log_partition=jax.nn.softplus,
    log_base=jnp.zeros_like,
    sampler=lambda key, xi: jax.random.bernoulli(key, jax.nn.sigmoid(xi)).astype(jnp.result_type(xi)),
)
"""``Bernoulli(sigmoid(xi))``: logit link, cross-entropy loss."""

POISSON = ExponentialFamily(
    name="Poisson",
    log_partition=jnp.exp,
    log_base=lambda y: -jax.scipy.special.gammaln(y + 1.0),
    sampler=lambda key, xi: jax.random.poisson(key, jnp.exp(xi), jnp.shape(xi)).astype(jnp.result_type(xi)),
)
"""``Poisson(exp(xi))``: log link, Poisson loss."""

FAMILIES = (GAUSSIAN, BERNOULLI, POISSON)


# --------------------------------------------------------------------------
# Maximum likelihood as a loss: value, gradient, Hessian, Newton / IRLS
# --------------------------------------------------------------------------


def glm_loss(theta: Array, x: Array, y: Array, *, family: ExponentialFamily, lam: float = 0.0) -> Array:
    """Penalized negative log-likelihood of a canonical GLM.

    ``L(theta) = (1/n) sum_i [b(x_i^T theta) - y_i x_i^T theta] + (lam/2) ||theta||^2``.

    Up to terms without ``theta`` this is the squared loss (Gaussian), the
    cross-entropy (Bernoulli) and the Poisson deviance (Poisson).

    Args:
        theta: parameters, shape ``(d,)``.
        x: design, shape ``(n, d)``.
        y: responses, shape ``(n,)``.
        family: the exponential family.
        lam: ridge penalty (a Gaussian prior ``N(0, I / (n lam))``).

    Returns:
        The scalar loss.
    """
    xi = x @ theta
    return jnp.mean(family.log_partition(xi) - y * xi) + 0.5 * lam * theta @ theta


def glm_gradient(theta: Array, x: Array, y: Array, *, family: ExponentialFamily, lam: float = 0.0) -> Array:
    """``grad L = X^T (mu - y) / n + lam theta`` with ``mu = b'(X theta)``."""
    n = x.shape[0]
    return x.T @ (family.mean(x @ theta) - y) / n + lam * theta


def glm_hessian(theta: Array, x: Array, y: Array, *, family: ExponentialFamily, lam: float = 0.0) -> Array:
    """``H = X^T W X / n + lam I`` with ``W = diag(b''(X theta))``: positive semi-definite.

    It does not depend on ``y`` (a property of canonical links), which is why the
    loss is convex whatever the data.
    """
    n, d = x.shape
    w = family.variance(x @ theta)
    return (x.T * w[None, :]) @ x / n + lam * jnp.eye(d, dtype=x.dtype)


def irls_step(theta: Array, x: Array, y: Array, *, family: ExponentialFamily, lam: float = 0.0) -> Array:
    """One Newton step, written as a weighted least-squares problem (IRLS).

    With ``xi = X theta``, ``mu = b'(xi)``, weights ``w = b''(xi)`` and the
    working response ``z = xi + (y - mu) / w``,

    ``theta_new = (X^T W X / n + lam I)^{-1} X^T W z / n``,

    which equals ``theta - H^{-1} grad L`` exactly (McCullagh & Nelder 1989, sec. 2.5).
    """
    n, d = x.shape
    xi = x @ theta
    w = family.variance(xi)
    z = xi + (y - family.mean(xi)) / w
    lhs = (x.T * w[None, :]) @ x / n + lam * jnp.eye(d, dtype=x.dtype)
    return jnp.linalg.solve(lhs, x.T @ (w * z) / n)


def newton_step(f: Callable[[Array], Array], theta: Array) -> Array:
    """Generic Newton step ``theta - H(theta)^{-1} grad f(theta)`` by autodiff."""
    return theta - jnp.linalg.solve(jax.hessian(f)(theta), jax.grad(f)(theta))


def newton_error_map(f: Callable[[Array], Array], theta_star: Array, e: Array) -> Array:
    """Leading-order Newton error: ``e_{k+1} = (1/2) H^{-1} D^3 f(theta*)[e_k, e_k] + O(|e_k|^3)``.

    ``H`` is the Hessian at the minimizer ``theta*`` and ``D^3 f[e, e]`` the third
    derivative contracted twice with ``e``; the latter is computed as the
    directional derivative of the Hessian-vector product, without forming any
    tensor. The derivation is in the handout (sec. "Newton's method").

    Args:
        f: the objective.
        theta_star: its minimizer.
        e: the current error ``theta_k - theta*``.

    Returns:
        The predicted next error ``theta_{k+1} - theta*``.
    """
    t_ee = jax.jvp(lambda th: linalg.hvp(f, th, e), (theta_star,), (e,))[1]
    return 0.5 * jnp.linalg.solve(jax.hessian(f)(theta_star), t_ee)


def gd_linear_rate(hessian_eigenvalues, lr: float) -> float:
    """Asymptotic rate of gradient descent near a minimum: ``rho = max_i |1 - eta h_i|``.

    ``||theta_{k+1} - theta*|| ~ rho ||theta_k - theta*||`` once the iterates are
    close enough for the loss to be quadratic; with ``eta = 1/h_max`` this is
    ``1 - 1/kappa``, ``kappa = h_max / h_min``.
    """
    h = np.asarray(hessian_eigenvalues, dtype=float)
    return float(np.max(np.abs(1.0 - lr * h)))


def convergence_orders(errors) -> np.ndarray:
    """Empirical orders ``q_k = log(e_{k+1}/e_k) / log(e_k/e_{k-1})``.

    ``q = 1`` for linear convergence, ``q = 2`` for quadratic convergence.
    Entry ``k - 1`` uses ``e_{k-1}, e_k, e_{k+1}``.
    """
    le = np.log(np.asarray(errors, dtype=float))
    return (le[2:] - le[1:-1]) / (le[1:-1] - le[:-2])


def fitted_linear_rate(errors, *, low: float, high: float) -> float:
    """``exp`` of the least-squares slope of ``log e_k`` against ``k`` over ``low < e_k < high``."""
    e = np.asarray(errors, dtype=float)
    k = np.flatnonzero((e > low) & (e < high))
    if k.size < 3:
        raise ValueError("fewer than three errors in the fitting window")
    return float(np.exp(np.polyfit(k, np.log(e[k]), 1)[0]))


# --------------------------------------------------------------------------
# Experiment 0: mean and variance from the log-partition function
# --------------------------------------------------------------------------


class MomentsResult(NamedTuple):
    """Monte Carlo moments against ``b'`` and ``b''``; arrays are ``(family, xi)``."""

    names: tuple[str, ...]
    xi: np.ndarray
    mean: np.ndarray
    mean_sem: np.ndarray
    var: np.ndarray
    var_sem: np.ndarray
    mean_theory: np.ndarray
    var_theory: np.ndarray


@functools.partial(jax.jit, static_argnames=("samples", "families"))
def _family_moments(xi, *, key, samples, families):
    keys = jax.random.split(key, len(families))
    out = []
    for family, fkey in zip(families, keys):  # distinct families, not seeds: unrolled once
        y = family.sample(jnp.tile(xi, samples), key=fkey).reshape(samples, xi.size)  # flat draw
        dev2 = (y - y.mean(0, keepdims=True)) ** 2
        out.append(jnp.stack([
            y.mean(0), y.std(0) / np.sqrt(samples),
            dev2.mean(0) * samples / (samples - 1), dev2.std(0) / np.sqrt(samples),
            family.mean(xi), family.variance(xi),
        ]))
    return jnp.stack(out, axis=1)  # (6, family, xi)


def run_family_moments(
    *,
    key: Array,
    xi=np.linspace(-2.0, 1.5, 8),
    samples: int = 20_000,
    families: tuple[ExponentialFamily, ...] = FAMILIES,
) -> MomentsResult:
    """Sample each family at several natural parameters and measure mean and variance.

    Theory: ``E[y] = b'(xi)`` and ``Var[y] = b''(xi)``. The standard error of
    the sample variance is estimated from the spread of ``(y - ybar)^2``.

    Args:
        key: randomness, split into one key per family.
        xi: natural parameters.
        samples: draws per (family, xi).
        families: the families to test.

    Returns:
        A ``MomentsResult``.
    """
    xi = jnp.asarray(xi, dtype=jnp.float32)
    cols = np.asarray(_family_moments(xi, key=key, samples=samples, families=tuple(families)))
    return MomentsResult(tuple(f.name for f in families), np.asarray(xi), *cols)


# --------------------------------------------------------------------------
# Experiment 1: Newton / IRLS against gradient descent
# --------------------------------------------------------------------------


def logistic_data(n: int, d: int, *, key: Array, cond: float = 10.0, signal: float = 3.0):
    """Anisotropic Gaussian inputs with logistic labels.

    ``x_i = diag(s) g_i`` with ``g_i ~ N(0, I_d)`` and ``s`` geometric from ``1`` to
    ``cond^{-1/2}`` (input covariance with condition number ``cond``);
    ``y_i ~ Bernoulli(sigmoid(x_i^T theta_0))`` with ``||theta_0|| = signal``.

    Returns:
        ``(x, y, theta_0)``, shapes ``(n, d)``, ``(n,)``, ``(d,)``.
    """
    x_key, t_key, y_key = jax.random.split(key, 3)
    scales = jnp.geomspace(1.0, cond**-0.5, d)
    x = data.normal(x_key, (n, d)) * scales[None, :]
    theta0 = jax.random.normal(t_key, (d,))
    theta0 = signal * theta0 / jnp.linalg.norm(theta0)
    y = BERNOULLI.sample(x @ theta0, key=y_key)
    return x, y, theta0


class ConvergenceResult(NamedTuple):
    """Errors ``||theta_k - theta*||`` of gradient descent and Newton, with their theory."""

    gd_error: np.ndarray  # (gd_steps + 1,)
    newton_error: np.ndarray  # (newton_steps + 1,)
    newton_predicted: np.ndarray  # (newton_steps,): ||(1/2) H^-1 T[e_k, e_k]||, predicts e_{k+1}
    gd_rate: float  # measured
    gd_rate_theory: float  # max |1 - eta h_i|
    lr: float
    hessian_eigenvalues: np.ndarray
    kappa: float


def _irls_iterates(x, y, lam, *, steps: int):
    def body(theta, _):
        return irls_step(theta, x, y, family=BERNOULLI, lam=lam), theta

    theta, path = jax.lax.scan(body, jnp.zeros(x.shape[1], x.dtype), None, length=steps)
    return jnp.concatenate([path, theta[None]])


@functools.partial(jax.jit, static_argnames=("n", "d", "gd_steps", "newton_steps"))
def _newton_vs_gd(key, cond, lam, *, n, d, gd_steps, newton_steps):
    x, y, _ = logistic_data(n, d, key=key, cond=cond)
    theta_star = _irls_iterates(x, y, lam, steps=40)[-1]

    def f(theta):
        return glm_loss(theta, x, y, family=BERNOULLI, lam=lam)

    h = jnp.linalg.eigvalsh(jax.hessian(f)(theta_star))
    lr = 1.0 / (jnp.linalg.eigvalsh(x.T @ x / n)[-1] / 4 + lam)
    gd_params, gd = train.trajectory(
        lambda p, batch: f(p), jnp.zeros(d, x.dtype), optax.sgd(lr), None,
        steps=gd_steps, observe=lambda p: p,
    )
    gd = jnp.concatenate([gd, gd_params[None]])
    newton = _irls_iterates(x, y, lam, steps=newton_steps)
    errors = newton - theta_star[None, :]
    predicted = jax.vmap(lambda e: newton_error_map(f, theta_star, e))(errors[:-1])
    return (
        jnp.linalg.norm(gd - theta_star[None, :], axis=1), jnp.linalg.norm(errors, axis=1),
        jnp.linalg.norm(predicted, axis=1), h, lr,
    )


def run_newton_vs_gd(
    *,
    key: Array,
    n: int = 500,
    d: int = 10,
    cond: float = 10.0,
    lam: float = 1e-3,
    gd_steps: int = 1000,
    newton_steps: int = 8,
) -> ConvergenceResult:
    """L2-penalized logistic regression by gradient descent and by Newton / IRLS.

    Gradient descent uses the safe step ``eta = 1/L`` with the global smoothness
    constant ``L = lambda_max(X^T X)/(4n) + lam`` (``b'' <= 1/4``). Its local rate
    is ``rho = max_i |1 - eta h_i| = 1 - eta h_min``, ``h_i`` the eigenvalues of the
    Hessian at the minimizer; Newton's error obeys
    ``e_{k+1} = (1/2) H^{-1} D^3 L[e_k, e_k] + O(e^3)`` (quadratic convergence).
    The minimizer is Newton's limit after 40 steps (gradient norm ~ 1e-16).

    Args:
        key: randomness for the data.
        n: samples.
        d: dimension.
        cond: condition number of the input covariance.
        lam: ridge penalty (keeps the minimizer finite and unique).
        gd_steps: gradient-descent steps.
        newton_steps: Newton steps.

    Returns:
        A ``ConvergenceResult`` (computed in float64).
    """
    with jax.enable_x64(True):
        out = _newton_vs_gd(key, cond, lam, n=n, d=d, gd_steps=gd_steps, newton_steps=newton_steps)
        gd_error, newton_error, predicted, h, lr = (np.asarray(o) for o in out)
    return ConvergenceResult(
        gd_error=gd_error,
        newton_error=newton_error,
        newton_predicted=predicted,
        gd_rate=fitted_linear_rate(gd_error, low=1e-12, high=1e-4),
        gd_rate_theory=gd_linear_rate(h, float(lr)),
        lr=float(lr),
        hessian_eigenvalues=h,
        kappa=float(h[-1] / h[0]),
    )


# --------------------------------------------------------------------------
# Experiment 2: implicit bias of gradient descent on separable data
# --------------------------------------------------------------------------


class SVMResult(NamedTuple):
    """Hard-margin SVM through the origin: ``min ||w||^2 / 2`` s.t. ``y_i x_i^T w >= 1``."""

    w: np.ndarray  # (d,)
    alpha: np.ndarray  # (n,) dual variables, w = sum_i alpha_i y_i x_i
    support: np.ndarray  # (n,) bool


def hard_margin_svm(x, y, *, tol: float = 1e-9) -> SVMResult:
    """Hard-margin SVM without intercept, from its dual QP (scipy, float64).

    Dual: ``max_{alpha >= 0} sum_i alpha_i - (1/2) ||sum_i alpha_i z_i||^2`` with
    ``z_i = y_i x_i``, solved by L-BFGS-B with bounds. The active set is then
    polished to machine precision by solving ``Z_S Z_S^T alpha_S = 1`` (margin one
    on the support vectors) and the KKT conditions are checked:
    ``alpha_S > 0`` and ``z_i^T w >= 1`` for all ``i``.

    This uses no gradient descent on the logistic loss: it is the independent
    reference for ``run_implicit_bias``.

    Raises:
        ValueError: if the data are not linearly separable through the origin or
            the KKT check fails.

    References:
        Cortes & Vapnik (1995), doi:10.1007/BF00994018.
    """
    z = np.asarray(y, dtype=float)[:, None] * np.asarray(x, dtype=float)
    gram = z @ z.T
    res = scipy.optimize.minimize(
        lambda a: (0.5 * a @ gram @ a - a.sum(), gram @ a - 1.0),
        np.zeros(len(z)), jac=True, method="L-BFGS-B",
        bounds=[(0.0, None)] * len(z), options=dict(ftol=1e-15, gtol=1e-12, maxiter=20_000),
    )
    support = res.x > 1e-6 * max(res.x.max(), 1e-300)
    alpha = np.zeros(len(z))
    alpha[support] = np.linalg.solve(gram[np.ix_(support, support)], np.ones(support.sum()))
    w = z.T @ alpha
    if not (np.all(alpha[support] > 0) and np.all(z @ w >= 1 - tol)):
        raise ValueError("hard-margin SVM: KKT check failed (data not separable through 0?)")
    return SVMResult(w, alpha, support)


def separable_data(n: int, *, key: Array, spread: float = 0.6, gap: float = 1.0):
    """Two Gaussian blobs in the plane, separable through the origin, with a margin gap.

    ``x_i = y_i m + spread * g_i`` with ``m = (1, 1/2)`` and balanced labels. If the
    draw is not separable through the origin a ``ValueError`` is raised. Then
    every point that is not a support vector of the hard-margin SVM is moved away
    from the separating line, ``x_i += y_i gap * w_svm / ||w_svm||^2``, so that its
    margin ``y_i x_i^T w_svm`` grows by exactly ``gap``. This leaves the SVM
    unchanged (its inactive constraints only loosen) and makes the asymptotics of
    gradient descent visible sooner: a point with margin ``1 + delta`` is forgotten
    like ``t^{-delta}`` (handout, sec. "Implicit bias").

    Returns:
        ``(x, y)`` as float64 numpy arrays, shapes ``(n, 2)`` and ``(n,)``.
    """
    g = np.asarray(data.normal(key, (n, 2)), dtype=float)
    y = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    x = y[:, None] * np.array([1.0, 0.5]) + spread * g
    svm = hard_margin_svm(x, y)
    x = x + gap * (~svm.support * y)[:, None] * svm.w / (svm.w @ svm.w)
    return x, y


def soudry_offset(x, y, svm: SVMResult, *, lr: float) -> np.ndarray:
    """The finite offset ``w~`` in ``w(t) = w_svm log t + w~ + o(1)``.

    For gradient descent ``w <- w - eta grad (1/n) sum_i log(1 + exp(-z_i^T w))``
    the support vectors satisfy ``(eta/n) exp(-z_s^T w~) = alpha_s``
    (Soudry et al. 2018, with the step rescaled for a mean loss), i.e.
    ``z_s^T w~ = log(eta / (n alpha_s))``: a linear system, uniquely solvable when
    the support vectors are ``d`` linearly independent points.
    """
    z = np.asarray(y)[:, None] * np.asarray(x)
    s = svm.support
    rhs = np.log(lr / (len(z) * svm.alpha[s]))
    return np.linalg.lstsq(z[s], rhs, rcond=None)[0]


def implicit_bias_angle_theory(t, w_svm, w_offset) -> np.ndarray:
    """Angle between ``w(t) ~ w_svm log t + w~`` and ``w_svm``.

    ``angle(t) = atan(||P w~|| / (||w_svm|| log t + u^T w~))`` with ``u`` the unit
    SVM direction and ``P = I - u u^T``; for large ``t`` this is
    ``||P w~|| / (||w_svm|| log t)``: a decay like ``1 / log t``.
    """
    w_svm, w_offset = np.asarray(w_svm), np.asarray(w_offset)
    u = w_svm / np.linalg.norm(w_svm)
    perp = np.linalg.norm(w_offset - (u @ w_offset) * u)
    return np.arctan2(perp, np.linalg.norm(w_svm) * np.log(np.asarray(t, dtype=float)) + u @ w_offset)


def angle_to(w, direction) -> np.ndarray:
    """Angle between the rows of ``w`` and ``direction`` (atan2 form, accurate near 0)."""
    w = np.asarray(w, dtype=float)
    u = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    par = w @ u
    return np.arctan2(np.linalg.norm(w - par[:, None] * u, axis=1), par)


class ImplicitBiasResult(NamedTuple):
    """Gradient descent on the logistic loss of separable data, against the SVM."""

    x: np.ndarray  # (n, 2)
    y: np.ndarray  # (n,)
    t: np.ndarray  # recorded steps (log-spaced)
    w: np.ndarray  # (len(t), 2) iterates at those steps
    angle: np.ndarray  # angle(w(t), w_svm)
    angle_theory: np.ndarray
    svm: SVMResult
    offset: np.ndarray  # w~
    lr: float
    min_gap: float  # smallest margin of a non-support point, minus one


@functools.partial(jax.jit, static_argnames=("steps",))
def _logistic_gd_path(z, lr, *, steps: int):
    def loss(w, z):
        return jnp.mean(jax.nn.softplus(-z @ w))

    w, path = train.trajectory(
        loss, jnp.zeros(z.shape[1], z.dtype), optax.sgd(lr), z, steps=steps, observe=lambda p: p
    )
    return jnp.concatenate([path, w[None]])


def run_implicit_bias(
    *,
    key: Array,
    n: int = 16,
    steps: int = 100_000,
    spread: float = 0.6,
    gap: float = 1.0,
    per_decade: int = 20,
) -> ImplicitBiasResult:
    """Gradient descent on the mean logistic loss of separable data, from ``w = 0``.

    Theory (Soudry et al. 2018): ``w(t) = w_svm log t + w~ + o(1)``, so ``w(t)``
    converges in direction to the hard-margin SVM, with the angle decaying like
    ``1 / log t`` (``implicit_bias_angle_theory``). ``w_svm`` comes from the dual QP
    (``hard_margin_svm``), ``w~`` from the SVM's dual variables (``soudry_offset``).
    The step is ``eta = 1/beta``, ``beta = lambda_max(Z^T Z)/(4n)`` the smoothness
    of the loss.

    Args:
        key: randomness for the data.
        n: number of points.
        steps: gradient-descent steps.
        spread: noise scale of the blobs.
        gap: margin gap added to the non-support points (``separable_data``).
        per_decade: recorded steps per decade, log-spaced and including the
            powers of ten and the last step.

    Returns:
        An ``ImplicitBiasResult``.
    """
    x, y = separable_data(n, key=key, spread=spread, gap=gap)
    svm = hard_margin_svm(x, y)
    z = y[:, None] * x
    lr = float(1.0 / (np.linalg.eigvalsh(z.T @ z / n)[-1] / 4))
    with jax.enable_x64(True):
        path = np.asarray(_logistic_gd_path(jnp.asarray(z), lr, steps=steps))
    exponents = np.arange(0.0, np.log10(steps) + 1e-9, 1.0 / per_decade)
    t = np.unique(np.append(np.round(10.0**exponents).astype(int), steps))
    w = path[t]
    offset = soudry_offset(x, y, svm, lr=lr)
    margins = z @ svm.w
    return ImplicitBiasResult(
        x=x, y=y, t=t, w=w,
        angle=angle_to(w, svm.w),
        angle_theory=implicit_bias_angle_theory(t, svm.w, offset),
        svm=svm, offset=offset, lr=lr,
        min_gap=float(margins[~svm.support].min() - 1.0),
    )


# --------------------------------------------------------------------------
# Experiment 3: softmax regression on scikit-learn's digits
# --------------------------------------------------------------------------


def softmax_logits(params: tuple[Array, Array], x: Array) -> Array:
    """Logits ``W^T x + b`` of one example ``x`` of shape ``(d,)``.

    ``params = (W, b)`` with ``W`` of shape ``(d, C)`` and ``b`` of shape ``(C,)``;
    the class probabilities are ``softmax(W^T x + b)``.
    """
    w, b = params
    return w.T @ x + b


def softmax_logits_batch(params: tuple[Array, Array], x: Array) -> Array:
    """``softmax_logits`` vmapped over the rows of ``x`` (shape ``(n, d)``)."""
    return jax.vmap(softmax_logits, in_axes=(None, 0))(params, x)


def softmax_loss(params, x: Array, labels: Array, *, lam: float = 0.0) -> Array:
    """Cross-entropy of softmax regression plus ``(lam/2) ||W||_F^2`` (the bias is not penalized).

    Its gradient in ``W`` is ``X^T (softmax(XW + b) - Y) / n + lam W`` with ``Y`` the
    one-hot labels: the multiclass form of ``X^T (mu - y) / n``.
    """
    ce = optax.softmax_cross_entropy_with_integer_labels(softmax_logits_batch(params, x), labels)
    return jnp.mean(ce) + 0.5 * lam * jnp.sum(params[0] ** 2)


class DigitsResult(NamedTuple):
    """Softmax regression on digits for several ridge penalties (leading axis)."""

    lams: np.ndarray  # (L,)
    steps: np.ndarray  # (T,) step at which the curves are recorded
    train_loss: np.ndarray  # (L, T) cross-entropy without the penalty
    test_loss: np.ndarray  # (L, T)
    test_accuracy: np.ndarray  # (L, T)
    train_accuracy: np.ndarray  # (L, T); 1 certifies that the training set is linearly separable
    weights: np.ndarray  # (L, 64, 10) final W
    n_train: int
    n_test: int


@functools.partial(jax.jit, static_argnames=("n_train", "steps", "record_every", "lr"))
def _softmax_digits(x, y, lams, *, key, n_train, steps, record_every, lr):
    split_key, sub_key = jax.random.split(key)
    (x_tr, y_tr), (x_te, y_te) = data.train_test_split((x, y), key=split_key)
    if n_train is not None:
        idx = jax.random.permutation(sub_key, x_tr.shape[0])[:n_train]
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    mu, sd = x_tr.mean(0, keepdims=True), x_tr.std(0, keepdims=True) + 1e-3
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    optimizer = optax.adam(lr)
    params0 = (jnp.zeros((x_tr.shape[1], 10)), jnp.zeros(10))

    def one(lam):
        def observe(params):
            logits = softmax_logits_batch(params, x_te)
            return (
                softmax_loss(params, x_tr, y_tr),
                jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y_te)),
                jnp.mean(jnp.argmax(logits, -1) == y_te),
                jnp.mean(jnp.argmax(softmax_logits_batch(params, x_tr), -1) == y_tr),
            )

        final, obs = train.trajectory(
            lambda p, batch: softmax_loss(p, *batch, lam=lam), params0, optimizer, (x_tr, y_tr),
            steps=steps, observe=observe, record_every=record_every, record_last=True,
        )
        return jax.tree_util.tree_map(lambda o: o[1:], obs), final[0]  # after steps k * record_every, k >= 1

    (tr, te, acc, tr_acc), w = jax.vmap(one)(lams)
    return tr, te, acc, tr_acc, w, x_tr.shape[0], x_te.shape[0]


def run_softmax_digits(
    *,
    key: Array,
    lams=(0.0, 1e-4, 1e-3, 1e-2, 1e-1),
    n_train: int | None = None,
    steps: int = 1000,
    record_every: int = 10,
    lr: float = 0.05,
) -> DigitsResult:
    """Softmax regression ``p(y = c | x) = softmax(W^T x + b)_c`` on the 8x8 digits, with Adam.

    The 1797 images are split 75/25 into train and test; optionally only
    ``n_train`` training images are kept (the over-fitting regime: 650 parameters
    for ``n_train = 100`` images). Pixels are standardized with the training
    statistics. One run per ridge penalty, batched with ``vmap``.

    Args:
        key: randomness for the split and the subsample.
        lams: ridge penalties on ``W``.
        n_train: number of training images (``None``: all 1348).
        steps: full-batch Adam steps (a multiple of ``record_every``).
        record_every: record the curves every ``record_every`` steps.
        lr: Adam's step size.

    Returns:
        A ``DigitsResult``.

    References:
        Alpaydin & Kaynak (1998), doi:10.24432/C50P49 (the data).
    """
    if steps % record_every:
        raise ValueError(f"steps={steps} is not a multiple of record_every={record_every}")
    x, y = data.digits(standardize=False)
    tr, te, acc, tr_acc, w, n_tr, n_te = _softmax_digits(
        x, y, jnp.asarray(lams, dtype=jnp.float32), key=key, n_train=n_train,
        steps=steps, record_every=record_every, lr=lr,
    )
    return DigitsResult(
        lams=np.asarray(lams, dtype=float), steps=np.arange(1, steps // record_every + 1) * record_every,
        train_loss=np.asarray(tr), test_loss=np.asarray(te), test_accuracy=np.asarray(acc),
        train_accuracy=np.asarray(tr_acc),
        weights=np.asarray(w), n_train=int(n_tr), n_test=int(n_te),
    )


# --------------------------------------------------------------------------
# Experiment 4: the lasso by proximal gradient (ISTA); ridge and lasso shrinkage
# --------------------------------------------------------------------------


def soft_threshold(v: Array, tau) -> Array:
    """``S_tau(v) = sign(v) max(|v| - tau, 0)``: the proximal map of ``tau ||.||_1``."""
    return jnp.sign(v) * jnp.maximum(jnp.abs(v) - tau, 0.0)


def ridge_shrink(v: Array, tau) -> Array:
    """``v / (1 + tau)``: the proximal map of ``(tau/2) ||.||_2^2``."""
    return v / (1.0 + tau)


def lasso_objective(theta: Array, x: Array, y: Array, lam) -> Array:
    """``(1/2n) ||y - X theta||^2 + lam ||theta||_1`` (scikit-learn's ``Lasso`` convention)."""
    r = y - x @ theta
    return 0.5 * jnp.mean(r**2) + lam * jnp.sum(jnp.abs(theta))


def lasso_lambda_max(x: Array, y: Array) -> Array:
    """``lambda_max = ||X^T y||_inf / n``: the lasso solution is zero iff ``lam >= lambda_max``."""
    return jnp.max(jnp.abs(x.T @ y)) / x.shape[0]


def proximal_gradient(x: Array, y: Array, lam, theta0: Array, *, steps: int, prox=soft_threshold) -> Array:
    """Proximal gradient descent on ``(1/2n)||y - X theta||^2 + lam * penalty``.

    ``theta <- prox(theta - eta X^T (X theta - y)/n, eta lam)`` with ``eta = 1/L``,
    ``L = lambda_max(X^T X / n)``. With ``prox = soft_threshold`` this is ISTA
    (Daubechies, Defrise & De Mol 2004; Beck & Teboulle 2009), with
    ``prox = ridge_shrink`` it solves ridge regression.
    """
    n = x.shape[0]
    lr = 1.0 / jnp.linalg.eigvalsh(x.T @ x / n)[-1]

    def body(theta, _):
        grad = x.T @ (x @ theta - y) / n
        return prox(theta - lr * grad, lr * lam), None

    theta, _ = jax.lax.scan(body, theta0, None, length=steps)
    return theta


@functools.partial(jax.jit, static_argnames=("steps",))
def lasso_path(x: Array, y: Array, lams: Array, *, steps: int) -> Array:
    """ISTA along a decreasing grid of penalties, each warm-started at the previous solution.

    Returns:
        The solutions, shape ``(len(lams), d)``.
    """

    def body(theta, lam):
        theta = proximal_gradient(x, y, lam, theta, steps=steps)
        return theta, theta

    return jax.lax.scan(body, jnp.zeros(x.shape[1], x.dtype), lams)[1]


def lasso_kkt_violation(x: Array, y: Array, theta: Array, lam) -> Array:
    """Largest violation of the lasso's optimality conditions, relative to ``lam``.

    With ``c = X^T (y - X theta) / n``: ``c_j = lam sign(theta_j)`` where
    ``theta_j != 0`` and ``|c_j| <= lam`` where ``theta_j = 0`` (zero is in the
    subdifferential). Returns ``max_j violation_j / lam``.
    """
    c = x.T @ (y - x @ theta) / x.shape[0]
    viol = jnp.where(theta != 0, jnp.abs(c - lam * jnp.sign(theta)), jnp.maximum(jnp.abs(c) - lam, 0.0))
    return jnp.max(viol) / lam


class LassoPathResult(NamedTuple):
    """The lasso path on a Gaussian design with a sparse truth."""

    lams: np.ndarray  # (L,) decreasing
    lambda_max: float
    path: np.ndarray  # (L, d)
    kkt: np.ndarray  # (L,) relative KKT violation
    correlations: np.ndarray  # (L, d) |X_j^T (y - X theta)| / (n lam): 1 on the support, <= 1 off it
    nonzeros: np.ndarray  # (L,) number of |theta_j| > 1e-6
    beta: np.ndarray  # (d,) the truth


@functools.partial(jax.jit, static_argnames=("n", "d", "k", "num_lambdas", "steps"))
def _lasso_experiment(key, noise, min_ratio, *, n, d, k, num_lambdas, steps):
    x_key, e_key = jax.random.split(key)
    x = data.normal(x_key, (n, d))
    beta = jnp.zeros(d).at[:k].set(2.0 * (-1.0) ** jnp.arange(k) * (1.0 - 0.2 * jnp.arange(k)))
    y = x @ beta + noise * jax.random.normal(e_key, (n,))
    lmax = lasso_lambda_max(x, y)
    lams = lmax * jnp.geomspace(1.0, min_ratio, num_lambdas)
    path = lasso_path(x, y, lams, steps=steps)
    kkt = jax.vmap(lambda th, lam: lasso_kkt_violation(x, y, th, lam))(path, lams)
    corr = jax.vmap(lambda th, lam: jnp.abs(x.T @ (y - x @ th)) / (n * lam))(path, lams)
    return lams, lmax, path, kkt, corr, beta


def run_lasso_path(
    *,
    key: Array,
    n: int = 100,
    d: int = 200,
    k: int = 5,
    noise: float = 0.5,
    num_lambdas: int = 40,
    min_ratio: float = 1e-2,
    steps: int = 300,
) -> LassoPathResult:
    """The lasso path by warm-started ISTA, ``lam`` from ``lambda_max`` down to ``min_ratio lambda_max``.

    Data: ``X`` with i.i.d. ``N(0, 1)`` entries (more features than samples),
    ``y = X beta + noise * eps`` with ``k`` non-zero coefficients of alternating
    sign and decreasing size ``2, 1.6, ...``.

    Args:
        key: randomness for the data.
        n, d: samples and features.
        k: number of non-zero coefficients of the truth (at most 5).
        noise: noise level ``sigma``.
        num_lambdas: grid size (geometric).
        min_ratio: smallest ``lam / lambda_max``.
        steps: ISTA steps per penalty.

    Returns:
        A ``LassoPathResult`` with the KKT check of every solution.
    """
    lams, lmax, path, kkt, corr, beta = (np.asarray(o) for o in _lasso_experiment(
        key, noise, min_ratio, n=n, d=d, k=k, num_lambdas=num_lambdas, steps=steps))
    return LassoPathResult(
        lams=lams, lambda_max=float(lmax), path=path, kkt=kkt, correlations=corr,
        nonzeros=np.count_nonzero(np.abs(path) > 1e-6, axis=1), beta=beta,
    )


class ShrinkageResult(NamedTuple):
    """MAP estimates under Laplace and Gaussian priors in an orthogonal design."""

    z: np.ndarray  # (d,) least-squares estimate X^T y / n
    map_laplace: np.ndarray  # (d,) argmax of the posterior, by grid search
    map_gauss: np.ndarray  # (d,)
    lasso: np.ndarray  # (d,) ISTA on the lasso objective with lam_lasso
    ridge: np.ndarray  # (d,) proximal gradient on the ridge objective with lam_ridge
    lam_lasso: float  # sigma^2 / (n b)
    lam_ridge: float  # sigma^2 / (n tau^2)


@functools.partial(jax.jit, static_argnames=("n", "d", "grid_size", "steps"))
def _shrinkage(key, noise, prior_scale, *, n, d, grid_size, steps):
    q_key, b_key, e_key = jax.random.split(key, 3)
    q, _ = jnp.linalg.qr(data.normal(q_key, (n, d)))
    x = jnp.sqrt(n) * q
    beta = prior_scale * jax.random.laplace(b_key, (d,))
    y = x @ beta + noise * jax.random.normal(e_key, (n,))
    z = x.T @ y / n
    tau2 = 2.0 * prior_scale**2
    grid = jnp.linspace(-1.0, 1.0, grid_size) * (jnp.max(jnp.abs(z)) + 1e-3)
    loglik = -(n / (2 * noise**2)) * (z[:, None] - grid[None, :]) ** 2  # (d, grid)
    map_laplace = grid[jnp.argmax(loglik - jnp.abs(grid[None, :]) / prior_scale, axis=1)]
    map_gauss = grid[jnp.argmax(loglik - grid[None, :] ** 2 / (2 * tau2), axis=1)]
    lam_lasso = noise**2 / (n * prior_scale)
    lam_ridge = noise**2 / (n * tau2)
    theta0 = jnp.zeros(d)
    lasso = proximal_gradient(x, y, lam_lasso, theta0, steps=steps, prox=soft_threshold)
    ridge = proximal_gradient(x, y, lam_ridge, theta0, steps=steps, prox=ridge_shrink)
    return z, map_laplace, map_gauss, lasso, ridge, lam_lasso, lam_ridge


def run_shrinkage(
    *,
    key: Array,
    n: int = 100,
    d: int = 60,
    noise: float = 1.0,
    prior_scale: float = 0.1,
    grid_size: int = 20_001,
    steps: int = 100,
) -> ShrinkageResult:
    """Penalties as priors: posterior modes by brute force against lasso and ridge.

    Orthogonal design ``X = sqrt(n) Q`` (``X^T X / n = I``), ``y = X beta + sigma eps``,
    so the least-squares estimate is ``z = X^T y / n ~ N(beta, sigma^2 / n)``.
    The log posterior of ``beta_j`` is ``-(n / 2 sigma^2)(z_j - beta_j)^2 + log prior``;
    its maximum is found on a grid (no formula used). Theory:

    * Laplace prior ``exp(-|beta|/b) / 2b``: the mode is the lasso solution
      ``S_lam(z)`` with ``lam = sigma^2 / (n b)`` (soft thresholding);
    * Gaussian prior ``N(0, tau^2)`` with the same variance ``tau^2 = 2 b^2``: the
      ridge solution ``z / (1 + lam)`` with ``lam = sigma^2 / (n tau^2)``.

    The lasso and ridge objectives are also solved by proximal gradient on
    ``(X, y)`` directly.

    Args:
        key: randomness (design, coefficients drawn from the Laplace prior, noise).
        n, d: samples and coefficients (``d <= n``).
        noise: ``sigma``.
        prior_scale: ``b``.
        grid_size: points of the grid for the posterior maximization.
        steps: proximal-gradient steps.

    Returns:
        A ``ShrinkageResult``.
    """
    with jax.enable_x64(True):  # the log posterior is flat at its maximum: float32 would blur it
        out = _shrinkage(key, noise, prior_scale, n=n, d=d, grid_size=grid_size, steps=steps)
    z, map_laplace, map_gauss, lasso, ridge, lam_lasso, lam_ridge = (np.asarray(o) for o in out)
    return ShrinkageResult(z, map_laplace, map_gauss, lasso, ridge, float(lam_lasso), float(lam_ridge))
