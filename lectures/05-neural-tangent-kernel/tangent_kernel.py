"""Week 5: the neural tangent kernel.

Verified results, each an experiment beside its closed form:

1. Convergence at initialization. The empirical NTK of a deep ReLU MLP in NTK
   parametrization converges to the analytic infinite-width kernel
   (``dlcourse.ntk.relu_kernels``), with relative error ``~ N^{-1/2}``
   (``run_kernel_convergence``).
2. Lazy training. Trained by gradient descent, a one-hidden-layer network's
   weights and hidden features move by a relative amount ``~ N^{-1/2}`` with
   closed-form prefactors (``lazy_weight_change``, ``lazy_feature_change``);
   its kernel moves by less than the ``N^{-1/2}`` bound of the theorems:
   about ``N^{-3/4}`` for ReLU (a heuristic), ``N^{-1}`` for smooth activations
   (``run_lazy_training``).
3. Kernel regression. The trained network's predictions approach those of the
   linearized model with the analytic NTK (``dlcourse.ntk.kernel_gd_predictions``);
   the gap's asymptotically dominant part, from the random initial kernel,
   falls like ``N^{-1/2}`` (``run_lazy_training``).
4. Escaping the lazy regime by the output scale. With Chizat, Oyallon & Bach's
   (2019) scaling ``alpha (f - f_0)`` and loss ``/ alpha^2``, weights and
   features move by ``1/alpha`` times the lazy prediction for large ``alpha``
   while the kernel stays put; for small ``alpha`` (the mean-field point is
   ``alpha = N^{-1/2}``) the features and the kernel move by O(1)
   (``run_output_scale``).
5. Escaping by a large learning rate (Lewkowycz et al. 2020): above
   ``eta = 2 / lambda_0`` the loss first grows, the top NTK eigenvalue falls
   below ``2 / eta`` and training then converges (``run_catapult``).

Conventions (shared with ``dlcourse.ntk``): ``widths = [d, N, ..., N, 1]``,
NTK parametrization with weight scale ``sigma_w`` and bias scale ``sigma_b`` as
in ``dlcourse.mlp``; the loss is ``1/(2n) sum_i (f(x_i) - y_i)^2``; every
trained network is *centered*, ``f_theta - f_{theta_0}``, so that training
starts from the zero function (Chizat et al. 2019, Sec. 2; this changes no
gradient and no kernel, it only removes the random initial function).
Inputs live on the unit circle, ``x = (cos gamma, sin gamma)``, where the
kernels depend on the angle between inputs only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import optax

from dlcourse import metrics, mlp, ntk, plotting, train

SIGMA_W = 2.0**0.5
SIGMA_B = 0.5

# ---------------------------------------------------------------------------
# Data and networks
# ---------------------------------------------------------------------------


def default_target(gamma: jax.Array) -> jax.Array:
    """The regression target on the circle, ``y(gamma) = sin(2 gamma) + cos(gamma) / 2``."""
    return jnp.sin(2 * gamma) + 0.5 * jnp.cos(gamma)


def circle(gamma: jax.Array) -> jax.Array:
    """Points ``(cos gamma, sin gamma)`` on the unit circle, shape ``(..., 2)``."""
    return jnp.stack([jnp.cos(gamma), jnp.sin(gamma)], axis=-1)


class CircleData(NamedTuple):
    """A regression problem on the unit circle (inputs in ``R^2``)."""

    gamma_train: jax.Array  # (n,)
    x_train: jax.Array  # (n, 2)
    y_train: jax.Array  # (n,)
    gamma_test: jax.Array  # (m,)
    x_test: jax.Array  # (m, 2)
    y_test: jax.Array  # (m,)


@jax.jit(static_argnames=("n_train", "n_test", "target"))
def circle_data(
    n_train: int = 16,
    n_test: int = 181,
    *,
    target: Callable[[jax.Array], jax.Array] = default_target,
) -> CircleData:
    """Evenly spaced training angles ``2 pi (i + 1/2) / n`` and a test grid on ``[-pi, pi]``.

    Deterministic: no key is needed. Returns ``CircleData``.
    """
    gamma_train = 2 * jnp.pi * (jnp.arange(n_train) + 0.5) / n_train - jnp.pi
    gamma_test = jnp.linspace(-jnp.pi, jnp.pi, n_test)
    return CircleData(
        gamma_train, circle(gamma_train), target(gamma_train),
        gamma_test, circle(gamma_test), target(gamma_test),
    )


def init_params(widths: Sequence[int], *, key: jax.Array) -> mlp.Params:
    """Parameters of an MLP in NTK parametrization: every entry i.i.d. ``N(0, 1)``, in one draw.

    ``dlcourse.mlp.init_mlp_one_draw`` with ``parametrization="ntk"`` (the scales
    live in the forward pass). Its flat layout (``mlp.params_from_flat``) lets
    ``run_lazy_training`` cut every width from ONE vector.
    """
    return mlp.init_mlp_one_draw(widths, key=key, parametrization="ntk")


def network(params: mlp.Params, x: jax.Array, *, sigma_w: float = SIGMA_W, sigma_b: float = SIGMA_B) -> jax.Array:
    """Scalar output of the ReLU MLP in NTK parametrization for one input ``x``."""
    return mlp.apply_mlp(params, x, sigma_w=sigma_w, sigma_b=sigma_b, parametrization="ntk")[0]


def _rel_change(new, old) -> jax.Array:
    """``||new - old|| / ||old||`` over all entries of two pytrees."""
    return metrics.relative_error(ravel_pytree(new)[0], ravel_pytree(old)[0])


def _seed_stats(values) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the last axis (the seeds)."""
    return metrics.mean_and_sem(np.asarray(values), axis=-1)


# ---------------------------------------------------------------------------
# 1. The empirical NTK converges to the analytic one
# ---------------------------------------------------------------------------


class KernelConvergenceResult(NamedTuple):
    """Empirical vs analytic NTK at initialization, per width.

    Attributes:
        widths: hidden widths ``N``, shape ``(W,)``.
        n_seeds: number of independent networks per width, shape ``(W,)``.
        rel_error: mean over seeds of ``||Theta_N - Theta|| / ||Theta||`` (Frobenius
            on the Gram matrix of the inputs), shape ``(W,)``.
        rel_error_sem: its standard error, shape ``(W,)``.
        fit: power-law fit of ``rel_error`` against ``widths``.
        gamma: input angles, shape ``(n,)``.
        theory: analytic Gram matrix ``Theta(x_i, x_j)``, shape ``(n, n)``.
        kernels: the first seed's empirical Gram matrix per width, shape ``(W, n, n)``.
        angle_grid: angles ``[0, pi]`` for the theory curve, shape ``(g,)``.
        theory_curve: ``Theta`` between inputs at angle ``angle_grid``, shape ``(g,)``.
    """

    widths: np.ndarray
    n_seeds: np.ndarray
    rel_error: np.ndarray
    rel_error_sem: np.ndarray
    fit: metrics.PowerLawFit
    gamma: np.ndarray
    theory: np.ndarray
    kernels: np.ndarray
    angle_grid: np.ndarray
    theory_curve: np.ndarray


def seeds_for_width(width: int, *, seeds_times_width: int = 8192, min_seeds: int = 4, max_seeds: int = 32) -> int:
    """``clip(seeds_times_width / N, min_seeds, max_seeds)``: more seeds where they are cheap.

    The relative error's seed-to-seed spread is a fixed fraction (about 30%)
    of its mean at every width, so a handful of seeds suffices at large ``N``,
    where each network costs ``O(N^2)`` random numbers.
    """
    return int(np.clip(seeds_times_width // width, min_seeds, max_seeds))


def run_kernel_convergence(
    *,
    key: jax.Array,
    widths: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    depth: int = 2,
    n_points: int = 24,
    sigma_w: float = SIGMA_W,
    sigma_b: float = SIGMA_B,
    seeds_times_width: int = 8192,
    min_seeds: int = 4,
    max_seeds: int = 32,
) -> KernelConvergenceResult:
    """Relative error of the empirical NTK of ``depth``-hidden-layer ReLU MLPs vs width.

    For each width ``N`` (one compiled program), ``seeds_for_width(N)``
    networks are drawn with ``vmap`` and their kernels computed with
    ``dlcourse.ntk.empirical_ntk_mlp`` on ``n_points`` evenly spaced inputs on
    the unit circle, then compared with ``dlcourse.ntk.relu_kernels``.
    Theory: the empirical kernel is an average over ``N`` units per layer, so
    by the central limit theorem its fluctuations, hence the relative error,
    fall like ``N^{-1/2}`` (Jacot et al. 2018; Hanin & Nica 2020); its mean
    differs from the limit only at order ``N^{-1}``.

    Args:
        key: randomness for all networks (one block of normals, a segment per width).
        widths: hidden widths ``N``.
        depth: number of hidden layers ``L``.
        n_points: number of inputs on the circle.
        sigma_w, sigma_b: initialization scales of ``dlcourse.mlp``.
        seeds_times_width, min_seeds, max_seeds: see ``seeds_for_width``.

    Returns:
        ``KernelConvergenceResult``.

    References:
        Jacot, Gabriel & Hongler (2018), arXiv:1806.07572.
        Arora et al. (2019), arXiv:1904.11955.
        Hanin & Nica (2020), arXiv:1909.05989.
    """
    gamma = 2 * jnp.pi * jnp.arange(n_points) / n_points
    x = circle(gamma)
    theory = ntk.relu_ntk(x, depth=depth, sigma_w=sigma_w, sigma_b=sigma_b)
    net_widths = [[2] + [width] * depth + [1] for width in widths]
    n_seeds = [
        seeds_for_width(width, seeds_times_width=seeds_times_width, min_seeds=min_seeds, max_seeds=max_seeds)
        for width in widths
    ]
    sizes = [s * mlp.n_params(w) for s, w in zip(n_seeds, net_widths)]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # all networks of all widths from ONE block of standard normals (one random-number program),
    # each width reading its own segment: independent draws, one compilation
    z_all = jax.random.normal(key, (int(sum(sizes)),))

    def run_width(z, w, s, start):
        zs = jax.lax.dynamic_slice_in_dim(z, start, s * mlp.n_params(w)).reshape(s, mlp.n_params(w))

        def sample(zi):
            emp = ntk.empirical_ntk_mlp(mlp.params_from_flat(w, zi), x, sigma_w=sigma_w, sigma_b=sigma_b)
            return emp, metrics.relative_error(emp, theory)

        return jax.vmap(sample)(zs)

    errors, kernels = [], []
    for w, s, start in zip(net_widths, n_seeds, starts):
        emp, err = jax.jit(lambda z, w=w, s=s, start=int(start): run_width(z, w, s, start))(z_all)
        errors.append(np.asarray(err))
        kernels.append(np.asarray(emp[0]))
    stats = [metrics.mean_and_sem(e) for e in errors]
    mean = np.array([m for m, _ in stats])
    sem = np.array([s for _, s in stats])
    angle_grid = jnp.linspace(0.0, jnp.pi, 181)
    curve = ntk.relu_ntk(circle(jnp.zeros(1)), circle(angle_grid), depth=depth, sigma_w=sigma_w, sigma_b=sigma_b)[0]
    return KernelConvergenceResult(
        widths=np.asarray(widths), n_seeds=np.asarray(n_seeds), rel_error=mean, rel_error_sem=sem,
        fit=metrics.loglog_slope(widths, mean), gamma=np.asarray(gamma), theory=np.asarray(theory),
        kernels=np.stack(kernels), angle_grid=np.asarray(angle_grid), theory_curve=np.asarray(curve),
    )


# ---------------------------------------------------------------------------
# 2-3. Lazy training: weights, features and kernel barely move; the network is kernel regression
# ---------------------------------------------------------------------------


def default_learning_rate(k_train: jax.Array, *, fraction: float = 0.5) -> float:
    """``fraction`` of the largest stable step ``2n / lambda_max(Theta)`` of the linearized dynamics."""
    n = k_train.shape[0]
    return float(fraction * 2 * n / jnp.linalg.eigvalsh(k_train)[-1])


@jax.jit
def lazy_weight_change(k_train, y, *, lr: float, steps: int, n_params) -> jax.Array:
    """Closed-form relative weight change of a lazily trained network.

    In the linearized regime ``theta_t - theta_0 = J^T c_t`` with ``c_t`` from
    ``dlcourse.ntk.kernel_gd_coefficients``, so
    ``||theta_t - theta_0||^2 = c_t^T Theta c_t``, a width-independent number,
    while ``E ||theta_0||^2 = P`` (all ``P`` entries are ``N(0, 1)`` in NTK
    parametrization). Hence

        ||theta_t - theta_0|| / ||theta_0||  ->  sqrt(c_t^T Theta c_t / P),

    which is ``~ N^{-1/2}`` for one hidden layer (``P = N (d + 2) + 1``) and
    ``~ N^{-1}`` with two or more (``P ~ N^2``).

    Args:
        k_train: infinite-width NTK on the training inputs, ``(n, n)``.
        y: targets ``(n,)`` (the network is centered, ``f_0 = 0``).
        lr: learning rate.
        steps: number of gradient-descent steps.
        n_params: number of parameters ``P`` (scalar or array).

    Returns:
        The predicted relative weight change (shape of ``n_params``).

    References:
        Lee et al. (2019), arXiv:1902.06720, Sec. 2 (the linearized dynamics).
    """
    c = ntk.kernel_gd_coefficients(k_train, y, lr=lr, steps=steps)
    return jnp.sqrt(c @ k_train @ c / jnp.asarray(n_params, dtype=k_train.dtype))


@jax.jit
def lazy_feature_change(x_train, y, *, width, lr: float, steps: int, sigma_w: float = SIGMA_W, sigma_b: float = SIGMA_B):
    """Closed-form relative change of the hidden pre-activations of a one-hidden-layer net.

    With ``h_k(x) = sigma_w a_k . x / sqrt(d) + sigma_b b_k`` and readout
    ``f = sigma_w w . relu(h) / sqrt(N) + sigma_b b``, the lazy displacement
    ``theta_t - theta_0 = J^T c_t`` moves unit ``k`` by

        Delta h_k(x) = sum_i c_i  sigma_w w_k relu'(h_k(x_i)) / sqrt(N)  Sigma^1(x_i, x),

    so ``sum_k Delta h_k(x)^2 -> sum_ij c_i c_j Sigma^1_ix Sigma^1_jx Sigmadot_ij`` with
    ``Sigmadot = sigma_w^2 E[relu'(u) relu'(v)]`` (a width-independent number),
    while ``sum_k h_k(x)^2 ~ N Sigma^1(x, x)``. Over the training inputs
    (Frobenius norm over units and inputs):

        ||Delta H|| / ||H||  ->  sqrt( sum((c c^T) * Sigmadot * (Sigma^1)^2) / (N tr Sigma^1) ),

    with ``*`` the entrywise product and ``(Sigma^1)^2`` the matrix square.

    Args:
        x_train: training inputs, ``(n, d)``.
        y: targets ``(n,)``.
        width: hidden width ``N`` (scalar or array).
        lr: learning rate.
        steps: number of gradient-descent steps.
        sigma_w, sigma_b: initialization scales.

    Returns:
        The predicted relative change of the hidden pre-activations.

    References:
        The lecture notes of week 5 (derivation); Jacot, Gabriel & Hongler
        (2018), arXiv:1806.07572, for the frozen features of the limit.
    """
    d = x_train.shape[-1]
    s1 = sigma_w**2 * (x_train @ x_train.T) / d + sigma_b**2
    diag = jnp.diag(s1)
    _, e_dphi = ntk.relu_expectations(s1, diag[:, None], diag[None, :])
    k_train = ntk.relu_ntk(x_train, depth=1, sigma_w=sigma_w, sigma_b=sigma_b)
    c = ntk.kernel_gd_coefficients(k_train, y, lr=lr, steps=steps)
    num = jnp.sum(jnp.outer(c, c) * sigma_w**2 * e_dphi * (s1 @ s1))
    return jnp.sqrt(num / (jnp.asarray(width, dtype=s1.dtype) * jnp.trace(s1)))


def _centered_loss(sigma_w, sigma_b):
    """``loss(params, (x, y, f0, alpha)) = mean((alpha (f - f0) - y)^2) / (2 alpha^2)``."""

    def loss(params, batch):
        x, y, f0, alpha = batch
        f = jax.vmap(lambda xi: network(params, xi, sigma_w=sigma_w, sigma_b=sigma_b))(x)
        return 0.5 * jnp.mean((alpha * (f - f0) - y) ** 2) / alpha**2

    return loss


def _hidden(params, x, *, sigma_w, sigma_b):
    """Pre-activations of the first hidden layer, shape ``(n, N)``."""
    w, b = params[0]
    return sigma_w / jnp.sqrt(w.shape[1]) * x @ w.T + sigma_b * b[None, :]


def _train_centered(params0, data: CircleData, alpha, *, lr, steps, sigma_w, sigma_b):
    """Gradient descent on the centered, alpha-scaled model; returns what the experiments measure."""
    apply = jax.vmap(lambda p, xi: network(p, xi, sigma_w=sigma_w, sigma_b=sigma_b), in_axes=(None, 0))
    f0_train, f0_test = apply(params0, data.x_train), apply(params0, data.x_test)
    batch = (data.x_train, data.y_train, f0_train, alpha)
    params, _ = train.fit(_centered_loss(sigma_w, sigma_b), params0, optax.sgd(lr), batch, steps=steps)
    k0 = ntk.empirical_ntk_mlp(params0, data.x_train, sigma_w=sigma_w, sigma_b=sigma_b)
    k1 = ntk.empirical_ntk_mlp(params, data.x_train, sigma_w=sigma_w, sigma_b=sigma_b)
    h0 = _hidden(params0, data.x_train, sigma_w=sigma_w, sigma_b=sigma_b)
    h1 = _hidden(params, data.x_train, sigma_w=sigma_w, sigma_b=sigma_b)
    # the loss in function space, mean((alpha (f - f0) - y)^2) / 2, comparable across alphas
    final_loss = alpha**2 * _centered_loss(sigma_w, sigma_b)(params, batch)
    return dict(
        weight=_rel_change(params, params0),
        feature=metrics.relative_error(h1, h0),
        kernel=metrics.relative_error(k1, k0),
        test_pred=alpha * (apply(params, data.x_test) - f0_test),
        kernel0=k0,
        loss=final_loss,
    )


class LazyTrainingResult(NamedTuple):
    """How much a one-hidden-layer network changes when trained, per width.

    Per-seed means (``*``) and standard errors (``*_sem``), shape ``(W,)``:
    ``weight_change`` ``||theta_T - theta_0|| / ||theta_0||``; ``feature_change``
    of the hidden pre-activations on the training inputs; ``kernel_change``
    ``||Theta_T - Theta_0|| / ||Theta_0||`` on the training inputs;
    ``prediction_gap`` ``||f_T - f^ker_T|| / ||f^ker_T||`` on the test grid, where
    ``f^ker_T`` is the linearized model with the analytic NTK; it splits into
    ``linearization_gap`` ``||f_T - f^lin_T|| / ||f^lin_T||``, the distance to
    the network's own linearization (kernel dynamics with its initial empirical
    kernel), and ``initial_kernel_gap`` ``||f^lin_T - f^ker_T|| / ||f^ker_T||``,
    the effect of the initial kernel's fluctuations.

    Attributes also hold the fits (``*_fit``), the closed forms
    ``weight_theory`` and ``feature_theory`` (shape ``(W,)``), the final
    training loss, the data, the kernel prediction on the test grid
    ``kernel_prediction`` ``(m,)`` and the first seed's trained predictions
    ``predictions`` ``(W, m)``; ``lr`` and ``steps`` of the run.
    """

    widths: np.ndarray
    weight_change: np.ndarray
    weight_change_sem: np.ndarray
    feature_change: np.ndarray
    feature_change_sem: np.ndarray
    kernel_change: np.ndarray
    kernel_change_sem: np.ndarray
    prediction_gap: np.ndarray
    prediction_gap_sem: np.ndarray
    linearization_gap: np.ndarray
    linearization_gap_sem: np.ndarray
    initial_kernel_gap: np.ndarray
    initial_kernel_gap_sem: np.ndarray
    weight_fit: metrics.PowerLawFit
    feature_fit: metrics.PowerLawFit
    kernel_fit: metrics.PowerLawFit
    gap_fit: metrics.PowerLawFit
    linearization_fit: metrics.PowerLawFit
    initial_kernel_fit: metrics.PowerLawFit
    weight_theory: np.ndarray
    feature_theory: np.ndarray
    train_loss: np.ndarray
    data: CircleData
    kernel_prediction: np.ndarray
    predictions: np.ndarray
    lr: float
    steps: int


def _kernel_problem(n_train: int, *, lr, sigma_w: float, sigma_b: float):
    """The circle data, the depth-1 analytic NTK on train and test points, and the step size."""
    data = circle_data(n_train)
    k_train = ntk.relu_ntk(data.x_train, depth=1, sigma_w=sigma_w, sigma_b=sigma_b)
    k_test = ntk.relu_ntk(data.x_test, data.x_train, depth=1, sigma_w=sigma_w, sigma_b=sigma_b)
    return data, k_train, k_test, default_learning_rate(k_train) if lr is None else lr


def run_lazy_training(
    *,
    key: jax.Array,
    widths: Sequence[int] = (16, 64, 256, 1024, 4096),
    n_seeds: int = 8,
    steps: int = 300,
    lr: float | None = None,
    n_train: int = 16,
    sigma_w: float = SIGMA_W,
    sigma_b: float = SIGMA_B,
) -> LazyTrainingResult:
    """Train centered one-hidden-layer ReLU networks of growing width by gradient descent.

    Full-batch gradient descent (``optax.sgd`` in ``dlcourse.train.fit``) on
    ``n_train`` points of ``circle_data``, ``seeds`` networks per width in one
    ``vmap``. Theory (lazy training; Jacot et al. 2018, Lee et al. 2019):
    weights and features move by ``lazy_weight_change`` and
    ``lazy_feature_change`` (both ``~ N^{-1/2}``); the trained network equals
    the linearized model with the analytic kernel up to ``O(N^{-1/2})``, the
    size of the fluctuations of the initial kernel. The kernel itself moves by
    at most ``O(N^{-1/2})`` (Lee et al. 2019, Thm. 2.1); the measured change is
    smaller, ``~ N^{-1}`` for smooth activations (Dyer & Gur-Ari 2020) and
    about ``N^{-3/4}`` for ReLU, whose kinks flip ``O(sqrt(N))`` units (a heuristic).

    Args:
        key: randomness; one key per width.
        widths: hidden widths ``N``.
        n_seeds: networks per width.
        steps: gradient-descent steps ``T``.
        lr: learning rate; ``None`` means ``default_learning_rate`` (half the
            largest stable step of the infinite-width linearized dynamics).
        n_train: number of training points on the circle.
        sigma_w, sigma_b: initialization scales.

    Returns:
        ``LazyTrainingResult``.

    References:
        Jacot, Gabriel & Hongler (2018), arXiv:1806.07572.
        Lee et al. (2019), arXiv:1902.06720.
        Dyer & Gur-Ari (2020), arXiv:1909.11304.
    """
    data, k_train, k_test, lr = _kernel_problem(n_train, lr=lr, sigma_w=sigma_w, sigma_b=sigma_b)
    f_kernel = ntk.kernel_gd_predictions(k_train, k_test, data.y_train, lr=lr, steps=steps)
    width_keys = jax.random.split(key, len(widths))
    p_max = mlp.n_params([2, max(widths), 1])

    def train_width(z, width):
        params0 = mlp.params_from_flat([2, width, 1], z)  # the first P(N) entries of z
        out = _train_centered(params0, data, 1.0, lr=lr, steps=steps, sigma_w=sigma_w, sigma_b=sigma_b)
        out["kernel0_test"] = ntk.empirical_ntk_mlp(params0, data.x_test, data.x_train, sigma_w=sigma_w, sigma_b=sigma_b)
        return out

    @jax.jit
    @jax.vmap
    def compare(out):
        # the network's own linearization: kernel dynamics with its initial empirical kernel
        f_lin = ntk.kernel_gd_predictions(out["kernel0"], out["kernel0_test"], data.y_train, lr=lr, steps=steps)
        return dict(
            gap=metrics.relative_error(out["test_pred"], f_kernel),
            lin_gap=metrics.relative_error(out["test_pred"], f_lin),
            init_gap=metrics.relative_error(f_lin, f_kernel),
        )

    runs = []
    for width, wkey in zip(widths, width_keys):
        # the same (seeds, P_max) random-number program for every width
        z = jax.random.normal(wkey, (n_seeds, p_max))
        out = jax.jit(jax.vmap(lambda zi, w=width: train_width(zi, w)))(z)
        out.update(compare(out))
        runs.append(jax.tree_util.tree_map(np.asarray, out))

    def stat(name):
        return _seed_stats(np.stack([r[name] for r in runs]))

    names = ("weight", "feature", "kernel", "gap", "lin_gap", "init_gap")
    (w, w_se), (h, h_se), (kc, kc_se), (g, g_se), (lg, lg_se), (ig, ig_se) = (stat(s) for s in names)
    widths_arr = np.asarray(widths)
    p_counts = widths_arr * (2 + 2) + 1  # P = N (d + 2) + 1 with d = 2
    return LazyTrainingResult(
        widths=widths_arr,
        weight_change=w, weight_change_sem=w_se,
        feature_change=h, feature_change_sem=h_se,
        kernel_change=kc, kernel_change_sem=kc_se,
        prediction_gap=g, prediction_gap_sem=g_se,
        linearization_gap=lg, linearization_gap_sem=lg_se,
        initial_kernel_gap=ig, initial_kernel_gap_sem=ig_se,
        weight_fit=metrics.loglog_slope(widths, w),
        feature_fit=metrics.loglog_slope(widths, h),
        kernel_fit=metrics.loglog_slope(widths, kc),
        gap_fit=metrics.loglog_slope(widths, g),
        linearization_fit=metrics.loglog_slope(widths, lg),
        initial_kernel_fit=metrics.loglog_slope(widths, ig),
        weight_theory=np.asarray(lazy_weight_change(k_train, data.y_train, lr=lr, steps=steps, n_params=p_counts)),
        feature_theory=np.asarray(
            lazy_feature_change(data.x_train, data.y_train, width=widths_arr, lr=lr, steps=steps,
                                sigma_w=sigma_w, sigma_b=sigma_b)
        ),
        train_loss=np.array([r["loss"].mean() for r in runs]),
        data=data,
        kernel_prediction=np.asarray(f_kernel),
        predictions=np.stack([r["test_pred"][0] for r in runs]),
        lr=lr,
        steps=steps,
    )


# ---------------------------------------------------------------------------
# 4. Escaping the lazy regime: the output scale alpha
# ---------------------------------------------------------------------------


class OutputScaleResult(NamedTuple):
    """Training with the output scale ``alpha`` at a fixed width.

    ``weight_change``, ``feature_change``, ``kernel_change`` (means over seeds,
    ``*_sem`` standard errors) and the closed-form lazy predictions
    ``weight_theory``, ``feature_theory`` have shape ``(A,)``;
    ``predictions`` ``(A, m)`` are the first seed's trained functions on the
    test grid, ``kernel_prediction`` ``(m,)`` the lazy limit; ``train_loss``
    ``(A,)`` the final training loss.
    """

    alphas: np.ndarray
    width: int
    weight_change: np.ndarray
    weight_change_sem: np.ndarray
    feature_change: np.ndarray
    feature_change_sem: np.ndarray
    kernel_change: np.ndarray
    kernel_change_sem: np.ndarray
    weight_theory: np.ndarray
    feature_theory: np.ndarray
    train_loss: np.ndarray
    data: CircleData
    kernel_prediction: np.ndarray
    predictions: np.ndarray


def run_output_scale(
    *,
    key: jax.Array,
    alphas: Sequence[float] = tuple(2.0 ** np.arange(-5, 6)),
    width: int = 1024,
    n_seeds: int = 4,
    steps: int = 300,
    lr: float | None = None,
    n_train: int = 16,
    sigma_w: float = SIGMA_W,
    sigma_b: float = SIGMA_B,
) -> OutputScaleResult:
    """Lazy vs feature learning by the output scale (Chizat, Oyallon & Bach 2019).

    The model is ``alpha (f_theta - f_theta0)``, trained by gradient descent on
    ``1/(2 n alpha^2) sum_i (alpha (f(x_i) - f_0(x_i)) - y_i)^2``: in function
    space the initial dynamics is the same for every ``alpha`` (kernel
    ``Theta``), but the parameters need to move only ``1/alpha`` as far.
    Theory: for ``alpha -> inf`` the run is the linearized one, weights and
    features move by ``lazy_weight_change / alpha`` and
    ``lazy_feature_change / alpha``, and the kernel stays put. For small
    ``alpha`` the network leaves the kernel regime: the features and the kernel
    change by O(1). ``alpha = N^{-1/2}`` turns the NTK parametrization's
    ``1/sqrt(N)`` readout into the mean-field ``1/N`` (Mei, Montanari & Nguyen
    2018; Chizat & Bach 2018). All ``alphas`` and seeds run in one ``vmap``.

    Args:
        key: randomness for the initializations (shared across ``alphas``).
        alphas: output scales.
        width: hidden width ``N``.
        n_seeds: networks per ``alpha``.
        steps: gradient-descent steps.
        lr: learning rate; ``None`` means ``default_learning_rate``.
        n_train: number of training points on the circle.
        sigma_w, sigma_b: initialization scales.

    Returns:
        ``OutputScaleResult``.

    References:
        Chizat, Oyallon & Bach (2019), arXiv:1812.07956.
    """
    data, k_train, k_test, lr = _kernel_problem(n_train, lr=lr, sigma_w=sigma_w, sigma_b=sigma_b)
    f_kernel = ntk.kernel_gd_predictions(k_train, k_test, data.y_train, lr=lr, steps=steps)
    alphas_arr = jnp.asarray(alphas, dtype=jnp.float32)
    seed_keys = jax.random.split(key, n_seeds)

    def one(alpha, k):
        params0 = init_params([2, width, 1], key=k)
        return _train_centered(params0, data, alpha, lr=lr, steps=steps, sigma_w=sigma_w, sigma_b=sigma_b)

    # The same initializations for every alpha: seeds vmapped inside, alphas outside.
    runs = jax.jit(jax.vmap(lambda a: jax.vmap(lambda k: one(a, k))(seed_keys)))(alphas_arr)
    runs = jax.tree_util.tree_map(np.asarray, runs)
    (w, w_se), (h, h_se), (kc, kc_se) = (_seed_stats(runs[s]) for s in ("weight", "feature", "kernel"))
    w_lazy = lazy_weight_change(k_train, data.y_train, lr=lr, steps=steps, n_params=mlp.n_params([2, width, 1]))
    h_lazy = lazy_feature_change(data.x_train, data.y_train, width=width, lr=lr, steps=steps,
                                 sigma_w=sigma_w, sigma_b=sigma_b)
    return OutputScaleResult(
        alphas=np.asarray(alphas_arr), width=width,
        weight_change=w, weight_change_sem=w_se,
        feature_change=h, feature_change_sem=h_se,
        kernel_change=kc, kernel_change_sem=kc_se,
        weight_theory=np.asarray(w_lazy / alphas_arr), feature_theory=np.asarray(h_lazy / alphas_arr),
        train_loss=runs["loss"].mean(axis=-1), data=data,
        kernel_prediction=np.asarray(f_kernel), predictions=runs["test_pred"][:, 0],
    )


# ---------------------------------------------------------------------------
# 5. Escaping the lazy regime: large learning rates (the catapult)
# ---------------------------------------------------------------------------


class CatapultResult(NamedTuple):
    """Training curves for several learning rates at one width.

    Attributes:
        lrs: learning rates ``eta``, shape ``(K,)``.
        lam0: ``lambda_0``, the top eigenvalue of ``Theta / n`` of the
            infinite-width kernel on the training inputs: the linearized
            dynamics is stable for ``eta < 2 / lambda_0``.
        loss: training loss before every step, shape ``(K, T)`` (first seed).
        lam: top eigenvalue of the empirical ``Theta_t / n`` before every step,
            shape ``(K, T)`` (first seed).
        final_lam: mean over seeds of the last ``lam``, shape ``(K,)``.
        final_loss: mean over seeds of the last loss, shape ``(K,)``.
        max_loss_ratio: mean over seeds of ``max_t loss_t / loss_0``, shape ``(K,)``.
    """

    lrs: np.ndarray
    lam0: float
    loss: np.ndarray
    lam: np.ndarray
    final_lam: np.ndarray
    final_loss: np.ndarray
    max_loss_ratio: np.ndarray


def run_catapult(
    *,
    key: jax.Array,
    lr_factors: Sequence[float] = (0.5, 1.2, 1.5),
    width: int = 2048,
    n_seeds: int = 4,
    steps: int = 200,
    n_train: int = 16,
    sigma_w: float = SIGMA_W,
    sigma_b: float = SIGMA_B,
) -> CatapultResult:
    """Gradient descent with learning rates ``eta = factor * 2 / lambda_0`` (the catapult).

    The linearized dynamics ``r <- (I - eta Theta / n) r`` diverges along the
    top eigenvector once ``eta > 2 / lambda_0``. A wide network does not:
    the loss grows for a few steps, the growing residual drives the kernel's
    top eigenvalue down until ``lambda < 2 / eta``, and training converges in a
    flatter region, with features that moved by O(1) (Lewkowycz et al. 2020).
    Below ``2 / lambda_0`` the run is lazy and ``lambda`` stays at
    ``lambda_0``. (For learning rates beyond a second threshold, about
    ``4 / lambda_0`` in their two-layer model, training diverges.)

    Args:
        key: randomness for the initializations (shared across learning rates).
        lr_factors: ``eta`` in units of ``2 / lambda_0``.
        width: hidden width ``N`` (one hidden layer).
        n_seeds: networks per learning rate.
        steps: gradient-descent steps.
        n_train: number of training points on the circle.
        sigma_w, sigma_b: initialization scales.

    Returns:
        ``CatapultResult``.

    References:
        Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari (2020), arXiv:2003.02218.
    """
    data = circle_data(n_train)
    k_train = ntk.relu_ntk(data.x_train, depth=1, sigma_w=sigma_w, sigma_b=sigma_b)
    lam0 = float(jnp.linalg.eigvalsh(k_train)[-1] / n_train)
    lrs = jnp.asarray(lr_factors, dtype=jnp.float32) * 2 / lam0
    seed_keys = jax.random.split(key, n_seeds)
    loss_fn = _centered_loss(sigma_w, sigma_b)

    def one(lr, k):
        params0 = init_params([2, width, 1], key=k)
        f0 = jax.vmap(lambda xi: network(params0, xi, sigma_w=sigma_w, sigma_b=sigma_b))(data.x_train)
        batch = (data.x_train, data.y_train, f0, 1.0)

        def observe(p):
            kern = ntk.empirical_ntk_mlp(p, data.x_train, sigma_w=sigma_w, sigma_b=sigma_b)
            return loss_fn(p, batch), jnp.linalg.eigvalsh(kern)[-1] / n_train

        _, (loss, lam) = train.trajectory(loss_fn, params0, optax.sgd(lr), batch, steps=steps, observe=observe)
        return loss, lam

    loss, lam = jax.jit(jax.vmap(lambda lr: jax.vmap(lambda k: one(lr, k))(seed_keys)))(lrs)
    loss, lam = np.asarray(loss), np.asarray(lam)
    return CatapultResult(
        lrs=np.asarray(lrs), lam0=lam0, loss=loss[:, 0], lam=lam[:, 0],
        final_lam=lam[:, :, -1].mean(axis=1), final_loss=loss[:, :, -1].mean(axis=1),
        max_loss_ratio=(loss.max(axis=-1) / loss[:, :, :1].max(axis=-1)).mean(axis=1),
    )


# ---------------------------------------------------------------------------
# Figures: helpers take axes and return them (the lecture's cells stay short)
# ---------------------------------------------------------------------------


def _log_y(ax):
    """Logarithmic y axis; over at most four decades labelled at 1, 2, 5 x 10^k in plain numbers."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / low <= 1e4:
        plotting.plain_log_ticks(ax, "y")
    return ax


def _loglog(ax, base_x: int = 2):
    """Log-log axes: powers of ``base_x`` on x, plain 1-2-5 labels on y."""
    ax.set_xscale("log", base=base_x)
    return _log_y(ax)


def _slope_label(fit: metrics.PowerLawFit, name: str = "fit") -> str:
    return f"{name}: slope ${fit.slope:.2f} \\pm {fit.stderr:.2f}$"


def _power_law_through(ax, x, y, slope, *, label, ls="-", color=None):
    """Line ``C x^slope`` with ``C`` fitted (in log space) to the points ``(x, y)``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    log_c = np.mean(np.log(y) - slope * np.log(x))
    grid = np.geomspace(x.min(), x.max(), 50)
    ax.plot(grid, np.exp(log_c) * grid**slope, ls=ls, lw=1.8, color=color or plotting.THEORY_COLOR, label=label, zorder=2)
    return ax


def plot_kernel_convergence(axes, res: KernelConvergenceResult, *, small_width: int = 32):
    """(a) every empirical Gram entry against the angle between its inputs, at two widths,
    over the analytic NTK; (b) relative error against width, log-log, with fits."""
    ax = axes[0]
    diff = np.abs(res.gamma[:, None] - res.gamma[None, :])
    angle = np.minimum(diff, 2 * np.pi - diff).ravel()
    i_small = int(np.argmin(np.abs(res.widths - small_width)))
    for i, color in ((i_small, plotting.PALETTE[1]), (len(res.widths) - 1, plotting.PALETTE[0])):
        ax.plot(angle, res.kernels[i].ravel(), ls="none", marker="o", ms=4, alpha=0.5, color=color,
                label=f"$N = {res.widths[i]}$", zorder=3)
    ax.plot(res.angle_grid, res.theory_curve, color=plotting.THEORY_COLOR, lw=2, label=r"$N = \infty$", zorder=4)
    ax.set_xticks([0, np.pi / 2, np.pi], ["0", r"$\pi/2$", r"$\pi$"])
    plotting.label_axes(ax, r"angle between $x$ and $x'$", r"$\Theta(x, x')$")
    ax.legend()
    ax = axes[1]
    plotting.theory_vs_experiment(ax, res.widths, res.rel_error, err=res.rel_error_sem, label="experiment")
    _power_law_through(ax, res.widths, res.rel_error, -0.5, label=r"theory $\propto N^{-1/2}$")
    plotting.loglog_fit_line(ax, res.widths, res.fit.slope, res.fit.intercept, label=_slope_label(res.fit))
    _loglog(ax)
    plotting.label_axes(ax, r"width $N$", r"$\|\hat\Theta_N - \Theta\|_F \,/\, \|\Theta\|_F$")
    ax.legend()
    plotting.panel_labels(axes)
    return axes


def plot_lazy_changes(axes, res: LazyTrainingResult):
    """(a) relative weight and feature change against width with their closed forms;
    (b) relative kernel change against width with the N^{-1/2} bound and the N^{-3/4} law."""
    ax = axes[0]
    for name, color, marker in (("weight", plotting.PALETTE[0], "o"), ("feature", plotting.PALETTE[2], "s")):
        measured, sem = getattr(res, f"{name}_change"), getattr(res, f"{name}_change_sem")
        fit = getattr(res, f"{name}_fit")
        plotting.theory_vs_experiment(ax, res.widths, measured, getattr(res, f"{name}_theory"), err=sem,
                                      color=color, marker=marker,
                                      label=f"{name}s (slope ${fit.slope:.2f}$)",
                                      theory_label="lazy theory" if name == "weight" else None)
    _loglog(ax)
    plotting.label_axes(ax, r"width $N$", "relative change")
    ax.legend()
    ax = axes[1]
    plotting.theory_vs_experiment(ax, res.widths, res.kernel_change, err=res.kernel_change_sem,
                                  color=plotting.PALETTE[1], label=_slope_label(res.kernel_fit, "kernel"))
    _power_law_through(ax, res.widths, res.kernel_change, -0.75, label=r"$\propto N^{-3/4}$ (ReLU kinks, heuristic)")
    w0, k0 = res.widths[0], res.kernel_change[0]
    grid = np.geomspace(res.widths.min(), res.widths.max(), 50)
    ax.plot(grid, k0 * (grid / w0) ** -0.5, ls=":", lw=2, color=plotting.THEORY_COLOR, label=r"bound $\propto N^{-1/2}$")
    _loglog(ax)
    plotting.label_axes(ax, r"width $N$", r"$\|\hat\Theta_T - \hat\Theta_0\|_F \,/\, \|\hat\Theta_0\|_F$")
    ax.legend()
    plotting.panel_labels(axes)
    return axes


def plot_kernel_regression(axes, res: LazyTrainingResult, *, small_width: int = 16):
    """(a) trained networks and the kernel prediction on the circle; (b) the gaps against width."""
    ax = axes[0]
    d = res.data
    i_small = int(np.argmin(np.abs(res.widths - small_width)))
    ax.plot(d.gamma_test, res.predictions[i_small], color=plotting.PALETTE[1], lw=2, label=f"network, $N = {res.widths[i_small]}$")
    ax.plot(d.gamma_test, res.predictions[-1], color=plotting.PALETTE[0], lw=2, label=f"network, $N = {res.widths[-1]}$")
    ax.plot(d.gamma_test, res.kernel_prediction, color=plotting.THEORY_COLOR, lw=1.5, ls="--", label="NTK prediction")
    ax.plot(d.gamma_train, d.y_train, ls="none", marker="o", ms=8, mfc="white", mec=plotting.THEORY_COLOR,
            mew=1.8, label="training data", zorder=5)
    ax.set_xticks([-np.pi, 0, np.pi], [r"$-\pi$", "0", r"$\pi$"])
    plotting.label_axes(ax, r"input angle $\gamma$", r"$f_T(x)$")
    ax.set_ylim(-2.6, 1.7)
    ax.legend(loc="lower center", ncols=2, fontsize=12)
    ax = axes[1]
    series = (
        ("prediction_gap", "gap_fit", "network vs NTK prediction", plotting.PALETTE[0], "o"),
        ("initial_kernel_gap", "initial_kernel_fit", r"from $\hat\Theta_0 \neq \Theta$", plotting.PALETTE[2], "s"),
        ("linearization_gap", "linearization_fit", "network vs its linearization", plotting.PALETTE[3], "^"),
    )
    for name, fitname, label, color, marker in series:
        fit = getattr(res, fitname)
        plotting.theory_vs_experiment(ax, res.widths, getattr(res, name), err=getattr(res, f"{name}_sem"),
                                      color=color, marker=marker, label=f"{label} (${fit.slope:.2f}$)")
    _power_law_through(ax, res.widths, res.initial_kernel_gap, -0.5, label=r"$\propto N^{-1/2}$")
    _loglog(ax)
    lowest = min(float(np.min(getattr(res, name))) for name, *_ in series)
    ax.set_ylim(bottom=lowest / 5)  # room for the legend below the data
    _log_y(ax)
    plotting.label_axes(ax, r"width $N$", "relative distance on test inputs")
    ax.legend(fontsize=12, loc="lower left")
    plotting.panel_labels(axes)
    return axes


def plot_output_scale(axes, res: OutputScaleResult):
    """(a) weight and feature change against alpha with the lazy 1/alpha laws; (b) kernel change."""
    ax = axes[0]
    for name, color, marker in (("weight", plotting.PALETTE[0], "o"), ("feature", plotting.PALETTE[2], "s")):
        plotting.theory_vs_experiment(ax, res.alphas, getattr(res, f"{name}_change"), getattr(res, f"{name}_theory"),
                                      err=getattr(res, f"{name}_change_sem"), color=color, marker=marker,
                                      label=f"{name}s", theory_label="lazy theory" if name == "weight" else None)
    _loglog(ax)
    plotting.label_axes(ax, r"output scale $\alpha$", "relative change")
    ax.legend()
    ax = axes[1]
    plotting.theory_vs_experiment(ax, res.alphas, res.kernel_change, err=res.kernel_change_sem,
                                  color=plotting.PALETTE[1], label="kernel")
    for x, text in ((1.0, "NTK"), (res.width**-0.5, "mean field")):
        ax.axvline(x, color="0.5", ls=":", lw=1.5)
        ax.text(x * 1.15, 0.04, text, transform=ax.get_xaxis_transform(), color="0.3", fontsize=13)
    _loglog(ax)
    plotting.label_axes(ax, r"output scale $\alpha$", r"$\|\hat\Theta_T - \hat\Theta_0\|_F \,/\, \|\hat\Theta_0\|_F$")
    ax.legend(loc="upper right")
    plotting.panel_labels(axes)
    return axes


def plot_catapult(axes, res: CatapultResult):
    """(a) training loss per step; (b) top eigenvalue of Theta_t / n with the thresholds 2 / eta."""
    steps = np.arange(res.loss.shape[1])
    for k, color in enumerate(plotting.PALETTE[: len(res.lrs)]):
        label = rf"$\eta = {res.lrs[k] * res.lam0 / 2:.2f} \times 2/\lambda_0$"
        axes[0].plot(steps, res.loss[k], color=color, label=label)
        axes[1].plot(steps, res.lam[k], color=color)
        axes[1].axhline(2 / res.lrs[k], color=color, ls="--", lw=1.5)
    axes[1].axhline(res.lam0, color=plotting.THEORY_COLOR, lw=1.5, label=r"$\lambda_0$ ($N = \infty$)")
    for ax in axes:
        _log_y(ax)
    plotting.label_axes(axes[0], r"step $t$", r"training loss $\hat{\mathcal{R}}_n$")
    axes[0].legend(fontsize=12)
    plotting.label_axes(axes[1], r"step $t$", r"$\lambda_{\max}(\hat\Theta_t)/n$  (dashed: $2/\eta$)")
    axes[1].legend(fontsize=12, loc="upper right")
    plotting.panel_labels(axes)
    return axes
