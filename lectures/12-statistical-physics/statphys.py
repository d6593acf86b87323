"""Week 12: statistical physics of learning in the perceptron.

The lecture's experiments, each a ``run_*`` function with lecture-size keyword
defaults (the tests call them at small sizes):

* ``run_langevin``: Langevin dynamics samples the Gibbs measure
  ``p(theta) ~ exp(-E(theta) / T)`` of a tilted double well, and fails to in
  the time available when the barrier is high compared with ``T``.
* ``run_cover``: the probability that random labels on ``P`` Gaussian points
  in ``R^N`` are separable by a hyperplane through the origin, measured by a
  linear-programming feasibility test, against Cover's ``C(P, N) / 2^P``;
  ``cover_sharpness`` measures how the step at ``P/N = 2`` sharpens with ``N``.
* ``run_overlap``: the teacher-student disagreement on isotropic inputs equals
  ``arccos(R) / pi``.
* ``run_hebb``: the Hebbian student's learning curve against its closed form.
* ``run_binary_perceptron``: Gibbs learning with binary weights by exhaustive
  enumeration of the version space at small ``N``, against the replica-symmetric
  learning curve with its first-order transition to perfect generalization.
* ``run_amp``: approximate message passing on the same problem at ``N = 600``,
  against its state evolution, which jumps to perfect generalization at the
  spinodal.

The replica-symmetric (RS) formulas are evaluated with ``numpy``/``scipy``
in float64; the simulations are JAX (float32).

References:
    T. M. Cover, IEEE Trans. Electron. Comput. EC-14, 326 (1965).
    E. Gardner, J. Phys. A 21, 257 (1988).
    G. Gyorgyi, Phys. Rev. A 41, 7097 (1990).
    H. Sompolinsky, N. Tishby, H. S. Seung, Phys. Rev. Lett. 65, 1683 (1990).
    A. Engel, C. Van den Broeck, Statistical Mechanics of Learning (2001).
    J. Barbier, F. Krzakala, N. Macris, L. Miolane, L. Zdeborova, PNAS 116, 5451 (2019).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize, special, stats

from dlcourse import plotting

# ---------------------------------------------------------------------------
# Gibbs measures and Langevin dynamics
# ---------------------------------------------------------------------------


def tilted_double_well(theta, *, tilt: float = 0.3):
    """The energy ``E(theta) = (theta^2 - 1)^2 - tilt * theta`` (two wells, the right one lower)."""
    return (theta**2 - 1.0) ** 2 - tilt * theta


def gibbs_density(grid, temperature: float, *, tilt: float = 0.3) -> np.ndarray:
    """The Gibbs density ``exp(-E / T) / Z`` on a uniform ``grid`` (``Z`` by the trapezoidal rule)."""
    grid = np.asarray(grid, dtype=np.float64)
    energy = np.asarray(tilted_double_well(grid, tilt=tilt))
    weight = np.exp(-(energy - energy.min()) / temperature)
    return weight / np.trapezoid(weight, grid)


def langevin_chains(theta0, temperature, *, lr: float, steps: int, tilt: float = 0.3, key):
    """Unadjusted Langevin algorithm for many independent chains.

    ``theta <- theta - lr * E'(theta) + sqrt(2 * lr * T) * xi``, ``xi ~ N(0, 1)``:
    the Euler-Maruyama step of ``d theta = -E'(theta) dt + sqrt(2 T) dB``, whose
    stationary law is the Gibbs measure ``exp(-E/T)/Z`` (up to an ``O(lr)`` bias).

    Args:
        theta0: initial positions, shape ``(n_chains,)``.
        temperature: ``T``.
        lr: the step ``eta`` (a time step of the diffusion).
        steps: number of steps.
        tilt: the tilt of the double well.
        key: random key.

    Returns:
        The positions after ``steps`` steps, shape ``(n_chains,)``.
    """
    grad = jax.vmap(jax.grad(lambda t: tilted_double_well(t, tilt=tilt)))
    noise_scale = jnp.sqrt(2.0 * lr * temperature)

    def step(theta, step_key):
        xi = jax.random.normal(step_key, theta.shape)
        return theta - lr * grad(theta) + noise_scale * xi, None

    theta, _ = jax.lax.scan(step, theta0, jax.random.split(key, steps))
    return theta


class LangevinResult(NamedTuple):
    """Final positions of Langevin chains started in the higher (left) well."""

    temperatures: np.ndarray  # (n_T,)
    samples: np.ndarray  # (n_T, n_chains)
    times: np.ndarray  # (n_T,) total diffusion time lr * steps
    tilt: float
    mean_measured: np.ndarray  # (n_T,) sample mean of theta
    mean_sem: np.ndarray  # (n_T,) its standard error
    mean_gibbs: np.ndarray  # (n_T,) Gibbs mean of theta (quadrature)


def run_langevin(
    temperatures: Sequence[float] = (0.6, 0.1),
    n_chains: int = 4096,
    steps: int = 6000,
    lr: float = 5e-3,
    tilt: float = 0.3,
    *,
    key,
) -> LangevinResult:
    """Langevin chains on the tilted double well at several temperatures.

    All chains start at ``theta = -1`` (the higher well). At high ``T`` they reach
    the Gibbs measure within the run; at low ``T`` the Arrhenius time
    ``~ exp(Delta E / T)`` to cross the barrier is far longer than the run.
    """
    keys = jax.random.split(key, len(temperatures))
    theta0 = -jnp.ones((n_chains,))
    run = jax.jit(langevin_chains, static_argnames=("steps",))
    samples = np.stack([np.asarray(run(theta0, t, lr=lr, steps=steps, tilt=tilt, key=k))
                        for t, k in zip(temperatures, keys)])
    grid = np.linspace(-3.0, 3.0, 6001)
    gibbs_mean = np.array([np.trapezoid(grid * gibbs_density(grid, t, tilt=tilt), grid)
                           for t in temperatures])
    return LangevinResult(
        temperatures=np.asarray(temperatures, dtype=float), samples=samples,
        times=np.full(len(temperatures), lr * steps), tilt=tilt,
        mean_measured=samples.mean(axis=1),
        mean_sem=samples.std(axis=1, ddof=1) / np.sqrt(n_chains),
        mean_gibbs=gibbs_mean,
    )


def plot_langevin(result: LangevinResult, axes):
    """(a) The energy landscape; (b, c) histograms of the chains against the Gibbs density."""
    grid = np.linspace(-1.9, 1.9, 600)
    axes[0].plot(grid, tilted_double_well(grid, tilt=result.tilt), color=plotting.THEORY_COLOR)
    axes[0].plot([-1.0], [tilted_double_well(-1.0, tilt=result.tilt)], "o",
                 color=plotting.PALETTE[1], label="start")
    axes[0].set_ylim(-0.6, 2.0)
    axes[0].legend(loc="upper center")
    plotting.label_axes(axes[0], r"$\theta$", r"$E(\theta)$")
    for i, (ax, t) in enumerate(zip(axes[1:], result.temperatures)):
        ax.hist(result.samples[i], bins=60, range=(-1.9, 1.9), density=True,
                color=plotting.PALETTE[i], alpha=0.6, label="Langevin")
        ax.plot(grid, gibbs_density(grid, t, tilt=result.tilt), color=plotting.THEORY_COLOR,
                lw=2.0, label="Gibbs")
        if i == 0:  # one legend serves both histogram panels
            ax.legend(loc="upper left")
        plotting.label_axes(ax, r"$\theta$", r"density", title=rf"$T = {t:g}$")
    return axes


# ---------------------------------------------------------------------------
# Storage: Cover's function-counting theorem
# ---------------------------------------------------------------------------


def cover_count(p: int, n: int) -> int:
    """Cover's count ``C(P, N) = 2 sum_{k=0}^{N-1} binom(P-1, k)``.

    The number of dichotomies of ``P`` points in general position in ``R^N``
    realizable by a homogeneous linear threshold function ``sign(w . x)``.
    """
    return 2 * sum(math.comb(p - 1, k) for k in range(n))


def cover_probability(p, n):
    """``C(P, N) / 2^P = Prob[Binomial(P - 1, 1/2) <= N - 1]``: the fraction of separable labelings."""
    return stats.binom.cdf(np.asarray(n) - 1, np.asarray(p) - 1, 0.5)


def is_separable(x, y, *, tol: float = 1e-6) -> bool:
    """Whether labels ``y`` on points ``x`` are separable by a hyperplane through the origin.

    A linear program that is always feasible and bounded: maximize ``t`` subject to
    ``y_mu w . x_mu >= t`` for all ``mu``, ``-1 <= w_i <= 1``, ``t <= 1``. The labels
    are (strictly) separable if and only if the optimum ``t*`` is positive; we
    declare ``t* > tol`` separable (``tol`` well above the solver's 1e-7 feasibility
    tolerance; Gaussian data put ``t*`` within ``tol`` of 0 with negligible probability).

    Args:
        x: points, shape ``(P, N)``.
        y: labels in ``{-1, +1}``, shape ``(P,)``.
        tol: threshold on the optimal margin.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    p, n = x.shape
    cost = np.zeros(n + 1)
    cost[-1] = -1.0  # minimize -t
    a_ub = np.hstack([-(y[:, None] * x), np.ones((p, 1))])  # t - y w.x <= 0
    bounds = [(-1.0, 1.0)] * n + [(None, 1.0)]
    # Presolve only costs time on these small dense problems (measured: ~20 %).
    res = optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(p), bounds=bounds, method="highs",
                           options={"presolve": False})
    if res.status != 0:
        raise RuntimeError(f"linprog failed: {res.message}")
    return bool(-res.fun > tol)


class CoverResult(NamedTuple):
    """Measured fraction of separable labelings on a grid of ``alpha = P/N``."""

    dims: np.ndarray  # (n_dims,)
    alphas: np.ndarray  # (n_alpha,)
    separable: np.ndarray  # (n_dims, n_alpha) measured fraction
    theory: np.ndarray  # (n_dims, n_alpha) C(P, N) / 2^P
    n_draws: int
    labels: str


def run_cover(
    dims: Sequence[int] = (10, 20, 40),
    alphas: Sequence[float] = tuple(np.round(np.arange(1.2, 3.21, 0.2), 2)),
    n_draws: int = 60,
    labels: str = "random",
    *,
    key,
) -> CoverResult:
    """Fraction of separable labelings of ``P = alpha N`` Gaussian points, for each ``N``.

    Args:
        dims: dimensions ``N``; ``alpha N`` must be an integer for every alpha.
        alphas: load ``alpha = P / N``.
        n_draws: independent draws (points and labels) per ``(N, alpha)``.
        labels: ``"random"`` (i.i.d. signs, Cover's setting) or ``"teacher"``
            (``y = sign(w* . x)`` for a random ``w*``: always separable; the
            negative control).
        key: random key.
    """
    if labels not in ("random", "teacher"):
        raise ValueError(f"labels must be 'random' or 'teacher', not {labels!r}")
    alphas = np.asarray(alphas, dtype=float)
    ps = np.round(alphas[None, :] * np.asarray(dims)[:, None]).astype(int)  # (n_dims, n_alpha)
    if np.any(np.abs(ps - alphas[None, :] * np.asarray(dims)[:, None]) > 1e-9):
        raise ValueError("alpha * N must be an integer for every N and alpha")
    sep = np.zeros(ps.shape)
    for i, (n, dim_key) in enumerate(zip(dims, jax.random.split(key, len(dims)))):
        # One draw of shape (n_alpha, n_draws, P_max, N) per N; each P uses a prefix.
        x_key, y_key = jax.random.split(dim_key)
        p_max = int(ps[i].max())
        x_all = np.asarray(jax.random.normal(x_key, (len(alphas), n_draws, p_max, n)))
        if labels == "random":
            y_all = np.asarray(jax.random.rademacher(y_key, x_all.shape[:3], dtype=jnp.float32))
        else:
            w = np.asarray(jax.random.normal(y_key, (len(alphas), n_draws, n)))
            y_all = np.sign(np.einsum("adpn,adn->adp", x_all, w))
        for j, p in enumerate(ps[i]):
            sep[i, j] = np.mean([is_separable(x_all[j, d, :p], y_all[j, d, :p])
                                 for d in range(n_draws)])
    theory = cover_probability(ps, np.asarray(dims)[:, None])
    return CoverResult(np.asarray(dims), alphas, sep, theory, n_draws, labels)


def cover_z_scores(result: CoverResult) -> np.ndarray:
    """Binomial z-scores ``(measured - theory) / sqrt(theory (1 - theory) / n + 1/n^2)``.

    The ``1/n^2`` floor keeps a single unlikely draw at ``theory ~ 0`` or ``~ 1``
    from producing an infinite score.
    """
    n = result.n_draws
    p = result.theory
    return (result.separable - p) / np.sqrt(p * (1 - p) / n + 1.0 / n**2)


def cover_sharpness(result: CoverResult, theory: np.ndarray | None = None):
    """The drop of the separable fraction across ``alpha = 2``, per ``N``, with its standard error.

    ``D_N = mean_{alpha < 2} f_N(alpha) - mean_{alpha > 2} f_N(alpha)`` for the measured
    fractions ``f_N`` and for Cover's ``C(P, N)/2^P`` (or ``theory``, same shape as
    ``result.theory``). ``D_N`` grows to 1 as the step at ``alpha = 2`` sharpens. The
    statistic is linear in the measured fractions, so its standard error is the
    binomial one, ``sqrt(sum_j p_j (1 - p_j) / n_draws) / (number of alphas)`` on each
    side, evaluated at the theory's ``p_j``.

    Returns:
        ``(measured, theory, se)``, each of shape ``(n_dims,)``.
    """
    p = result.theory if theory is None else np.asarray(theory)
    below, above = result.alphas < 2.0 - 1e-9, result.alphas > 2.0 + 1e-9

    def drop(f):
        return f[:, below].mean(axis=1) - f[:, above].mean(axis=1)

    var = p * (1 - p) / result.n_draws
    se = np.sqrt(var[:, below].sum(axis=1) / below.sum()**2 + var[:, above].sum(axis=1) / above.sum()**2)
    return drop(result.separable), drop(p), se


def plot_cover(result: CoverResult, ax, *, control: CoverResult | None = None):
    """Measured fraction of separable labelings (markers) and ``C(P, N)/2^P`` (black lines)."""
    fine = np.linspace(result.alphas.min(), result.alphas.max(), 400)
    markers = "osD^"
    for i, n in enumerate(result.dims):
        ps = np.arange(int(np.ceil(fine.min() * n)), int(np.floor(fine.max() * n)) + 1)
        ax.plot(ps / n, cover_probability(ps, n), color=plotting.THEORY_COLOR, lw=1.6,
                ls=["-", "--", ":", "-."][i % 4], zorder=2)
        err = np.sqrt(result.theory[i] * (1 - result.theory[i]) / result.n_draws)
        ax.errorbar(result.alphas, result.separable[i], yerr=err, ls="none", marker=markers[i % 4],
                    color=plotting.PALETTE[i], capsize=2, label=rf"$N = {n}$", zorder=3)
    if control is not None:
        ax.plot(control.alphas, control.separable[-1], ls="none", marker="x", ms=9,
                color=plotting.PALETTE[3], label="teacher labels")
    ax.axvline(2.0, color="0.5", lw=1.0, ls=":")
    ax.plot([], [], color=plotting.THEORY_COLOR, label=r"$C(P,N)/2^P$")
    ax.legend(loc="lower left")
    return plotting.label_axes(ax, r"$\alpha = P/N$", "fraction separable")


# ---------------------------------------------------------------------------
# Teacher and student: the generalization error of an overlap
# ---------------------------------------------------------------------------


def generalization_error(overlap):
    """``eps(R) = arccos(R) / pi``: the probability that ``sign(w . x) != sign(w* . x)``.

    For ``x ~ N(0, I_N)`` (any isotropic law) and ``R = w . w* / (|w| |w*|)``. NumPy in, NumPy out;
    a JAX array (also inside ``jit``/``vmap``) gives a JAX array.
    """
    xp = jnp if isinstance(overlap, jax.Array) else np
    return xp.arccos(xp.clip(overlap, -1.0, 1.0)) / xp.pi


def _prefix_masks(alphas, n: int):
    """Loads ``alpha`` as prefixes of one draw: ``(alphas, P_max, masks)`` with ``masks[i, mu] = 1``
    for the first ``alpha_i N`` examples."""
    alphas = np.asarray(alphas, dtype=float)
    ps = np.round(alphas * n).astype(int)
    p_max = int(ps.max())
    return alphas, p_max, jnp.asarray(np.arange(p_max)[None, :] < ps[:, None], dtype=jnp.float32)


def student_at_overlap(teacher, overlap, *, key):
    """A unit vector with overlap ``R`` with the unit vector ``teacher``: ``R w* + sqrt(1 - R^2) u``.

    ``u`` is a uniformly random unit vector orthogonal to ``w*``.
    """
    g = jax.random.normal(key, teacher.shape)
    u = g - (g @ teacher) * teacher
    u = u / jnp.linalg.norm(u)
    return overlap * teacher + jnp.sqrt(1.0 - overlap**2) * u


class OverlapResult(NamedTuple):
    """Measured teacher-student disagreement at prescribed overlaps."""

    overlaps: np.ndarray  # (n_R,)
    disagreement: np.ndarray  # (n_R,) fraction of test inputs labelled differently
    n_test: int


def run_overlap(
    overlaps: Sequence[float] = tuple(np.round(np.linspace(-0.9, 0.99, 12), 3)),
    n: int = 50,
    n_test: int = 40_000,
    *,
    key,
) -> OverlapResult:
    """Fraction of isotropic Gaussian test inputs on which student and teacher disagree."""
    t_key, s_key, x_key = jax.random.split(key, 3)
    teacher = jax.random.normal(t_key, (n,))
    teacher = teacher / jnp.linalg.norm(teacher)
    overlaps_arr = jnp.asarray(overlaps, dtype=jnp.float32)
    students = jax.vmap(lambda r, k: student_at_overlap(teacher, r, key=k))(
        overlaps_arr, jax.random.split(s_key, len(overlaps)))
    x = jax.random.normal(x_key, (n_test, n))
    disagree = jnp.mean(jnp.sign(x @ students.T) != jnp.sign(x @ teacher)[:, None], axis=0)
    return OverlapResult(np.asarray(overlaps, dtype=float), np.asarray(disagree), n_test)


def plot_overlap(result: OverlapResult, ax):
    """Measured disagreement (markers) against ``arccos(R)/pi`` (black) and the wrong ``(1-R)/2``."""
    fine = np.linspace(-1, 1, 400)
    ax.plot(fine, (1 - fine) / 2, color="0.55", ls="--", lw=1.6, label=r"$(1-R)/2$ (wrong)")
    err = np.sqrt(generalization_error(result.overlaps) * (1 - generalization_error(result.overlaps))
                  / result.n_test)
    plotting.theory_vs_experiment(ax, result.overlaps, result.disagreement, x_theory=fine,
                                  theory=generalization_error(fine), err=err, label="measured",
                                  theory_label=r"$\arccos(R)/\pi$")
    ax.legend(loc="upper right")
    return plotting.label_axes(ax, r"overlap $R$", r"generalization error $\varepsilon$")


# ---------------------------------------------------------------------------
# The Hebbian student
# ---------------------------------------------------------------------------


def hebb_overlap(alpha):
    """Large-``N`` overlap of the Hebbian student: ``R = sqrt(2 alpha/pi) / sqrt(1 + 2 alpha/pi)``."""
    a = 2.0 * np.asarray(alpha, dtype=float) / np.pi
    return np.sqrt(a / (1.0 + a))


def hebb_student(x, y):
    """Hebb's rule ``w = sum_mu y_mu x_mu`` (the unnormalized student; only its direction matters)."""
    return y @ x


class HebbResult(NamedTuple):
    """Generalization error of Hebbian students, one row per seed."""

    alphas: np.ndarray  # (n_alpha,)
    eps: np.ndarray  # (n_seeds, n_alpha)
    n: int


def run_hebb(
    alphas: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    n: int = 400,
    n_seeds: int = 24,
    *,
    key,
) -> HebbResult:
    """Hebbian learning curves: ``eps = arccos(R)/pi`` of ``w = sum_mu y_mu x_mu`` after ``P = alpha N`` examples.

    ``eps`` is computed exactly from the overlap, which is the generalization
    error for isotropic inputs (``run_overlap`` checks that identity). One draw
    of ``P_max`` examples per seed; the students for smaller ``P`` use its prefixes.
    """
    alphas, p_max, masks = _prefix_masks(alphas, n)

    def one_seed(seed_key):
        t_key, x_key = jax.random.split(seed_key)
        teacher = jax.random.normal(t_key, (n,))
        x = jax.random.normal(x_key, (p_max, n))
        y = jnp.sign(x @ teacher)
        students = hebb_student(x, masks * y[None, :])  # (n_alpha, n): prefix sums
        r = students @ teacher / (jnp.linalg.norm(students, axis=1) * jnp.linalg.norm(teacher))
        return generalization_error(r)

    eps = jax.lax.map(jax.jit(one_seed), jax.random.split(key, n_seeds))
    return HebbResult(alphas, np.asarray(eps), n)


def plot_hebb(result: HebbResult, ax, *, gibbs_alphas=None, gibbs_eps=None):
    """Hebbian learning curve: seed mean with standard errors over the closed form (black)."""
    fine = np.geomspace(result.alphas.min() * 0.8, result.alphas.max() * 1.2, 300)
    mean = result.eps.mean(axis=0)
    sem = result.eps.std(axis=0, ddof=1) / np.sqrt(result.eps.shape[0])
    plotting.theory_vs_experiment(ax, result.alphas, mean, err=sem, x_theory=fine,
                                  theory=generalization_error(hebb_overlap(fine)),
                                  label=rf"Hebb, $N = {result.n}$", theory_label="Hebb, theory")
    if gibbs_alphas is not None:
        ax.plot(gibbs_alphas, gibbs_eps, color=plotting.THEORY_COLOR, ls="--", lw=1.8,
                label="Gibbs (replica), theory")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plotting.plain_log_ticks(ax, "both")
    ax.legend(loc="lower left")
    return plotting.label_axes(ax, r"$\alpha = P/N$", r"generalization error $\varepsilon$")


# ---------------------------------------------------------------------------
# Replica-symmetric theory of Gibbs learning (teacher-student, version space)
# ---------------------------------------------------------------------------

_Z, _W = np.polynomial.hermite_e.hermegauss(161)
_W = _W / _W.sum()  # E_z f(z) = sum_i _W[i] f(_Z[i]) for z ~ N(0, 1)


def energetic_term(q):
    """``E(q) = 2 int Dt H(s t) ln H(s t)``, ``s = sqrt(q / (1 - q))``, ``H(x) = P[z > x]``.

    ``alpha E(q)`` is the (quenched, RS) log-probability per weight that a student
    at overlap ``q`` with the teacher, drawn with ``q`` as its mutual overlap,
    classifies ``P = alpha N`` examples like the teacher. ``E(0) = -ln 2``, ``E(1) = 0``.
    """
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    s = np.sqrt(q / (1.0 - q))
    half = 10.0 / np.maximum(s, 1.0)  # the integrand lives on |s t| < 10 and |t| < 10
    u = np.linspace(-1.0, 1.0, 4001)[None, :]
    t = half[:, None] * u
    log_h = special.log_ndtr(-s[:, None] * t)
    integrand = np.exp(log_h) * log_h * np.exp(-t**2 / 2) / np.sqrt(2 * np.pi)
    return 2.0 * np.trapezoid(integrand, t, axis=1)


class RSBranch(NamedTuple):
    """A curve of RS stationary points parametrized by the conjugate ``r`` (``q_hat``)."""

    r: np.ndarray
    q: np.ndarray  # overlap
    entropy_prior: np.ndarray  # G(q): log-volume per weight of students at overlap q


def prior_branch(prior: str, r=None) -> RSBranch:
    """The entropic term ``G(q)`` of the RS entropy, parametrically in ``r``.

    ``G(q) = inf_r [psi(r) - q r / 2]`` with ``q = 2 psi'(r)``:

    * ``"spherical"`` (``|w|^2 = N``): ``q = r / (1 + r)``, ``G = ln(1 - q)/2 + q/2``;
    * ``"binary"`` (``w in {-1, +1}^N``): ``q = E_z tanh(sqrt(r) z + r)``,
      ``G = ln 2 + E_z ln cosh(sqrt(r) z + r) - r/2 - q r/2``.

    ``G(0) = 0`` (spherical, relative to the sphere) or ``ln 2`` (binary), ``G(1) = -inf`` or ``0``.
    """
    if r is None:
        r = np.geomspace(1e-6, 1e4 if prior == "spherical" else 400.0, 3000)
    r = np.asarray(r, dtype=np.float64)
    if prior == "spherical":
        q = r / (1.0 + r)
        g = 0.5 * np.log1p(-q) + 0.5 * q
    elif prior == "binary":
        a = np.sqrt(r)[:, None] * _Z[None, :] + r[:, None]
        q = np.tanh(a) @ _W
        log_cosh = np.abs(a) + np.log1p(np.exp(-2 * np.abs(a))) - np.log(2.0)
        g = np.log(2.0) + log_cosh @ _W - r / 2 - q * r / 2
    else:
        raise ValueError(f"prior must be 'spherical' or 'binary', not {prior!r}")
    return RSBranch(r, q, g)


@functools.lru_cache(maxsize=4)
def _default_branch(prior: str) -> tuple[RSBranch, np.ndarray]:
    """The default ``prior_branch`` and ``energetic_term`` along it, computed once per prior."""
    branch = prior_branch(prior)
    e_term = energetic_term(branch.q)
    for array in (*branch, e_term):
        array.setflags(write=False)
    return branch, e_term


@functools.lru_cache(maxsize=1)
def _fine_binary_branch() -> tuple[RSBranch, np.ndarray]:
    """The binary branch on a fine grid of ``r`` around the transition, with ``energetic_term``."""
    branch = prior_branch("binary", r=np.geomspace(1e-2, 20.0, 4000))
    return branch, energetic_term(branch.q)


def rs_entropy(alpha, prior: str, branch: RSBranch | None = None):
    """RS entropy of the version space along the branch: ``s(q) = G(q) + alpha E(q)``.

    Returns:
        ``(q, s)`` arrays; for ``"binary"`` the perfect-generalization state
        ``q = 1, s = 0`` is not on the branch and is added by the callers.
    """
    if branch is None:
        branch, e_term = _default_branch(prior)
    else:
        e_term = energetic_term(branch.q)
    return branch.q, branch.entropy_prior + alpha * e_term


class RSCurve(NamedTuple):
    """RS learning curve of Gibbs learning (the Gibbs student: a uniform draw from the version space)."""

    alphas: np.ndarray
    q: np.ndarray  # overlap of the stable state
    eps: np.ndarray  # arccos(q) / pi
    q_meta: np.ndarray  # overlap of the q < 1 state (nan where it does not exist)
    s_meta: np.ndarray  # its entropy


def rs_learning_curve(alphas, prior: str) -> RSCurve:
    """The Gibbs learning curve in RS theory: the maximum of ``s(q)`` over the branch.

    For binary weights the global maximum is taken between the interior (q < 1)
    maximum and the perfect state (``q = 1``, ``s = 0``); the interior maximum is
    returned as well (the metastable state beyond the transition).
    """
    branch, e_term = _default_branch(prior)
    qs, q_meta, s_meta = [], [], []
    for alpha in np.atleast_1d(alphas):
        s = branch.entropy_prior + alpha * e_term
        interior = np.flatnonzero((s[1:-1] > s[:-2]) & (s[1:-1] >= s[2:])
                                  & ((branch.q[1:-1] < 0.999) | (prior == "spherical"))) + 1
        if s[0] >= s[1]:  # the maximum sits at the start of the branch, q ~ 0 (alpha ~ 0)
            interior = np.append(interior, 0)
        if interior.size:
            k = interior[np.argmax(s[interior])]
            q_meta.append(branch.q[k])
            s_meta.append(s[k])
        else:
            q_meta.append(np.nan)
            s_meta.append(np.nan)
        if prior == "binary" and not (s_meta[-1] > 0):
            qs.append(1.0)
        else:
            qs.append(q_meta[-1])
    qs = np.asarray(qs)
    return RSCurve(np.atleast_1d(np.asarray(alphas, dtype=float)), qs, generalization_error(qs),
                   np.asarray(q_meta), np.asarray(s_meta))


def rs_transition(*, bracket=(1.0, 1.45)) -> float:
    """The RS first-order transition of the binary perceptron: the ``alpha`` where the q < 1 entropy is 0."""
    branch, e_term = _fine_binary_branch()

    def s_interior(alpha):
        s = branch.entropy_prior + alpha * e_term
        inner = (s[1:-1] > s[:-2]) & (s[1:-1] >= s[2:]) & (branch.q[1:-1] < 0.999)
        return np.max(s[1:-1][inner])

    return optimize.brentq(s_interior, *bracket, xtol=1e-6)


def rs_spinodal(*, bracket=(1.3, 1.7)) -> float:
    """The ``alpha`` beyond which the metastable (q < 1) RS state of the binary perceptron no longer exists."""
    branch, e_term = _fine_binary_branch()

    def exists(alpha):
        s = branch.entropy_prior + alpha * e_term
        return bool(np.any((s[1:-1] > s[:-2]) & (s[1:-1] >= s[2:]) & (branch.q[1:-1] < 0.999)))

    lo, hi = bracket
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if exists(mid) else (lo, mid)
    return 0.5 * (lo + hi)


def annealed_transition(*, bracket=(1.2, 1.7)) -> float:
    """The ``alpha`` where the largest annealed entropy at ``q < 1`` reaches 0 (first-moment threshold)."""
    q = np.linspace(0.0, 0.9999, 100001)

    def s_interior(alpha):
        s = annealed_entropy(q, alpha)
        inner = (s[1:-1] > s[:-2]) & (s[1:-1] >= s[2:])
        return np.max(s[1:-1][inner])

    return optimize.brentq(s_interior, *bracket, xtol=1e-6)


def annealed_entropy(q, alpha):
    """Annealed entropy of binary students at overlap ``q``: ``h((1-q)/2) + alpha ln(1 - arccos(q)/pi)``.

    ``h`` is the binary entropy (nats). ``exp(N s)`` is, to leading exponential
    order, the expected number of such students consistent with ``P = alpha N`` examples.
    """
    q = np.asarray(q, dtype=float)
    f = (1.0 - q) / 2
    h = -special.xlogy(f, f) - special.xlogy(1 - f, 1 - f)
    with np.errstate(divide="ignore"):  # q = -1: log 0 = -inf
        return h + alpha * np.log1p(-generalization_error(q))


def log_expected_extra_students(n: int, p):
    """``ln E[|VS| - 1]`` for binary students (see :func:`expected_extra_students`), without overflow."""
    m = np.arange(1, n + 1)
    p = np.atleast_1d(np.asarray(p, dtype=float))
    log_comb = special.gammaln(n + 1) - special.gammaln(m + 1) - special.gammaln(n - m + 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # m = N: agree = 0, log = -inf
        log_agree = np.log1p(-generalization_error(1.0 - 2.0 * m / n))
        log_terms = log_comb[None, :] + np.where(p[:, None] > 0, p[:, None] * log_agree[None, :], 0.0)
    return special.logsumexp(log_terms, axis=1)


def expected_extra_students(n: int, p):
    """Exact ``E[|VS| - 1]``: expected number of binary students other than the teacher that fit ``P`` examples.

    ``sum_{m=1}^{N} binom(N, m) (1 - arccos(1 - 2m/N)/pi)^P``: a student with ``m``
    flipped weights has overlap ``1 - 2m/N`` and agrees with the teacher on each
    independent Gaussian input with probability ``1 - eps``. Exact at every ``N``;
    by Markov's inequality ``Pr[VS != {teacher}] <= E[|VS| - 1]``.
    """
    return np.exp(log_expected_extra_students(n, p))


# ---------------------------------------------------------------------------
# Binary perceptron: approximate message passing and its state evolution
# ---------------------------------------------------------------------------


def amp_perceptron(x, y, *, steps: int = 100, damping: float = 0.5):
    """Approximate message passing (GAMP) for a binary teacher ``w* in {-1, +1}^N``, ``y = sign(w* . x)``.

    With ``F = x / sqrt(N)`` and the posterior means ``a`` and variances ``v`` of the weights,
    one iteration is

    * output side: ``V = mean(v)``, ``omega = F a - V g_prev``,
      ``g = d/d omega log Phi(y omega / sqrt(V))``, ``dg = -g (omega / V + g)``;
    * input side: ``A = -sum_mu dg_mu / N``, ``B = F^T g + A a``, then the binary
      prior's posterior mean ``a = tanh(B)`` and variance ``v = 1 - a^2``, damped.

    Rows with ``y = 0`` contribute ``g = dg = 0``: they pad a data set to a fixed
    shape. Started from ``a = 0`` (no information), AMP follows the state evolution,
    whose fixed points are the stationary points of the RS entropy (``rs_learning_curve``).

    Args:
        x: inputs, shape ``(P, N)``, i.i.d. ``N(0, 1)`` entries.
        y: labels ``+-1``, or ``0`` for padding rows, shape ``(P,)``.
        steps: iterations.
        damping: weight of the old estimate in each update.

    Returns:
        The posterior-mean estimate ``a``, shape ``(N,)``.

    References:
        S. Rangan, ISIT (2011); L. Zdeborova, F. Krzakala, Adv. Phys. 65, 453 (2016);
        J. Barbier et al., PNAS 116, 5451 (2019).
    """
    p, n = x.shape
    f = x / jnp.sqrt(n)

    def step(carry, _):
        a, v, g_prev = carry
        var = jnp.maximum(jnp.mean(v), 1e-6)  # the posterior collapses as q -> 1: keep V > 0
        omega = f @ a - var * g_prev
        u = y * omega / jnp.sqrt(var)
        ratio = jnp.exp(-0.5 * u**2 - 0.5 * jnp.log(2 * jnp.pi) - jax.scipy.special.log_ndtr(u))
        g = y * ratio / jnp.sqrt(var)  # d/d omega log Phi(u): the Mills ratio, computed in logs
        dg = -g * (omega / var + g)
        a_new = jnp.tanh(f.T @ g - jnp.sum(dg) / n * a)
        a = damping * a + (1 - damping) * a_new
        v = damping * v + (1 - damping) * (1 - a_new**2)
        return (a, v, g), None

    init = (jnp.zeros(n), jnp.ones(n), jnp.zeros(p))
    (a, _, _), _ = jax.lax.scan(step, init, None, length=steps)
    return a


def amp_theory(alphas, prior: str = "binary"):
    """State-evolution learning curve of AMP from no information: ``eps = arccos(sqrt(q))/pi``.

    ``q`` is the smallest-overlap stable fixed point: the interior maximum of the RS
    entropy where it exists (for the binary prior up to the spinodal), else ``q = 1``.
    The posterior mean at overlap ``q`` has ``R = q / sqrt(q) = sqrt(q)`` with the
    teacher (Nishimori), hence the square root.
    """
    curve = rs_learning_curve(alphas, prior)
    q = np.where(np.isfinite(curve.q_meta), curve.q_meta, 1.0)
    return generalization_error(np.sqrt(q))


class AMPResult(NamedTuple):
    """Generalization error of the AMP estimate, one row per seed."""

    alphas: np.ndarray  # (n_alpha,)
    eps: np.ndarray  # (n_seeds, n_alpha) arccos(R)/pi of sign(a . x)
    n: int


def run_amp(
    alphas: Sequence[float] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.4, 1.55, 1.75, 2.0, 2.5),
    n: int = 600,
    n_seeds: int = 4,
    steps: int = 100,
    *,
    key,
) -> AMPResult:
    """AMP learning curve of the binary teacher-student perceptron.

    Per seed: one teacher and ``P_max = max(alpha) N`` examples; the load ``alpha``
    uses the first ``alpha N`` of them (the rest padded with ``y = 0``), all loads
    in one ``vmap``. The error of the student ``sign(a . x)`` is ``arccos(R)/pi``.
    """
    alphas, p_max, masks = _prefix_masks(alphas, n)

    def one_seed(seed_key):
        t_key, x_key = jax.random.split(seed_key)
        teacher = jax.random.rademacher(t_key, (n,), dtype=jnp.float32)
        x = jax.random.normal(x_key, (p_max, n))
        y = jnp.sign(x @ teacher)
        a = jax.vmap(lambda m: amp_perceptron(x, m * y, steps=steps))(masks)  # (n_alpha, N)
        r = a @ teacher / (jnp.linalg.norm(a, axis=1) * jnp.sqrt(n))
        return generalization_error(r)

    eps = jax.lax.map(jax.jit(one_seed), jax.random.split(key, n_seeds))
    return AMPResult(alphas, np.asarray(eps), n)


def plot_amp(result: AMPResult, ax, *, alpha_c: float, alpha_sp: float):
    """AMP's error (markers) against state evolution (black), the Bayes-optimal curve and the spherical control."""
    fine = np.linspace(0.05, result.alphas.max(), 300)
    below, above = fine < alpha_sp, fine >= alpha_sp
    theory = amp_theory(fine)
    ax.plot(fine, generalization_error(np.sqrt(rs_learning_curve(fine, "spherical").q)), color="0.55",
            ls=":", lw=1.8, label="spherical prior (control)")
    optimal = generalization_error(np.sqrt(rs_learning_curve(fine, "binary").q))
    ax.plot(fine, optimal, color=plotting.PALETTE[2], ls="--", lw=1.6, label=r"Bayes-optimal, jump at $\alpha_c$")
    ax.plot(fine[below], theory[below], color=plotting.THEORY_COLOR, lw=2.4, label="state evolution")
    ax.plot(fine[above], theory[above], color=plotting.THEORY_COLOR, lw=2.4)
    ax.plot([alpha_sp, alpha_sp], [0.0, theory[below][-1]], color=plotting.THEORY_COLOR, lw=1.0, ls="--")
    mean = result.eps.mean(axis=0)
    sem = result.eps.std(axis=0, ddof=1) / np.sqrt(result.eps.shape[0])
    ax.errorbar(result.alphas, mean, yerr=sem, ls="none", marker="o", ms=7, color=plotting.PALETTE[0],
                capsize=2, label=rf"AMP, $N = {result.n}$", zorder=5)
    ax.legend(loc="upper right")
    return plotting.label_axes(ax, r"$\alpha = P/N$", r"generalization error $\varepsilon$")


# ---------------------------------------------------------------------------
# Binary perceptron: exhaustive enumeration of the version space
# ---------------------------------------------------------------------------


def first_error_table(x, y, *, chunk: int = 64):
    """For all ``2^N`` binary students: the table of (flipped weights, first misclassified example).

    The teacher is the all-ones vector (no loss of generality: flipping the sign of
    coordinate ``i`` of every input maps the Gaussian input law to itself).
    Split ``w = (w_a, w_b)`` into two halves: the stabilities ``y w . x`` of all
    students are sums ``y w_a . x_a + y w_b . x_b`` of the two halves' tables, so
    the ``2^N`` students cost ``2^N P`` additions instead of ``2^N P N`` products.

    Args:
        x: inputs, shape ``(P, N)``.
        y: teacher labels ``sign(sum_i x_i)``, shape ``(P,)``.
        chunk: second-half students per step (a power of two).

    Returns:
        ``counts`` of shape ``(N + 1, P + 1)``: ``counts[m, k]`` is the number of
        students with ``m`` weights equal to ``-1`` whose first error is on example
        ``k`` (``k = P``: no error). Students in the version space after ``P'``
        examples are those with ``k >= P'``.
    """
    p, n = x.shape
    yx = y[:, None] * x  # (P, N)

    def half(cols):
        """All sign vectors on ``cols`` coordinates: their stabilities and flip counts."""
        bits = (jnp.arange(2**cols)[:, None] >> jnp.arange(cols)[None, :]) & 1
        return 1.0 - 2.0 * bits.astype(x.dtype), bits.sum(axis=1)

    n_a = n // 2
    w_a, flips_a = half(n_a)
    w_b, flips_b = half(n - n_a)
    stab_a = w_a @ yx[:, :n_a].T  # (2^n_a, P)
    stab_b = w_b @ yx[:, n_a:].T  # (2^n_b, P)
    chunk = min(chunk, stab_b.shape[0])

    def one_chunk(start):
        sb = jax.lax.dynamic_slice_in_dim(stab_b, start, chunk)
        fb = jax.lax.dynamic_slice_in_dim(flips_b, start, chunk)
        wrong = (stab_a[:, None, :] + sb[None, :, :]) <= 0  # (2^n_a, chunk, P)
        first = jnp.where(wrong.any(axis=2), jnp.argmax(wrong, axis=2), p)
        flips = flips_a[:, None] + fb[None, :]
        return jnp.zeros((n + 1, p + 1), jnp.int32).at[flips, first].add(1)

    starts = jnp.arange(0, stab_b.shape[0], chunk)
    return jax.lax.map(one_chunk, starts).sum(axis=0)


def version_space_summary(counts):
    """From a ``first_error_table``: ``|VS|`` and the Gibbs error for every ``P' = 0..P``.

    Returns:
        ``(size, gibbs_eps)``, each of shape ``(P + 1,)``; ``gibbs_eps[P']`` is the
        mean of ``arccos(R)/pi`` over the version space after ``P'`` examples.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.shape[0] - 1
    alive = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]  # alive[m, P'] = #(k >= P')
    eps_m = generalization_error(1.0 - 2.0 * np.arange(n + 1) / n)
    size = alive.sum(axis=0)
    return size, (eps_m[:, None] * alive).sum(axis=0) / size


class BinaryResult(NamedTuple):
    """Gibbs learning of a binary teacher by enumeration; per ``N``, one row per seed."""

    dims: tuple  # (n_dims,)
    alphas: list  # per N: (n_P,) the loads P/N, P = 0, 1, ..., P_max
    gibbs_eps: list  # per N: (n_seeds, n_P) mean of arccos(R)/pi over the version space
    size: list  # per N: (n_seeds, n_P) |VS|


def run_binary_perceptron(
    dims: Sequence[int] = (11, 15, 19),
    alpha_max: float = 2.5,
    n_seeds: Sequence[int] = (300, 150, 50),
    *,
    key,
) -> BinaryResult:
    """Exhaustive Gibbs learning: the version space of a binary teacher after ``P`` examples.

    For each ``N`` every ``P = 0, ..., round(alpha_max N)`` is recorded (one draw of
    examples per seed, prefixes for smaller ``P``). The Gibbs error is the average
    of ``arccos(1 - 2m/N)/pi`` over the version space, the quantity the RS theory
    predicts for ``N -> infinity`` at ``alpha = P/N``.
    """
    alphas, eps_all, size_all = [], [], []
    for n, seeds, dim_key in zip(dims, n_seeds, jax.random.split(key, len(dims))):
        p_max = int(round(alpha_max * n))

        def one_seed(seed_key, n=n, p_max=p_max):
            x = jax.random.normal(seed_key, (p_max, n))
            y = jnp.sign(x.sum(axis=1))
            return first_error_table(x, y)

        tables = np.asarray(jax.lax.map(jax.jit(one_seed), jax.random.split(dim_key, seeds)))
        summaries = [version_space_summary(t) for t in tables]
        alphas.append(np.arange(p_max + 1) / n)
        size_all.append(np.stack([s for s, _ in summaries]))
        eps_all.append(np.stack([e for _, e in summaries]))
    return BinaryResult(tuple(dims), alphas, eps_all, size_all)


def finite_size_gap(result: BinaryResult, *, alpha_range=(0.05, 0.6), prior: str = "binary"):
    """Mean of ``eps_N(alpha) - eps_RS(alpha)`` over ``alpha = P/N`` in ``alpha_range``, per ``N``.

    ``prior`` selects the RS curve (``"binary"``, the right one; ``"spherical"``
    serves as a negative control in the tests).

    Returns:
        ``(gap, sem)`` arrays of shape ``(n_dims,)``; the standard error is over seeds
        (the per-seed average over the range, then its spread).
    """
    gaps, sems = [], []
    for alphas, eps in zip(result.alphas, result.gibbs_eps):
        keep = (alphas >= alpha_range[0]) & (alphas <= alpha_range[1])
        rs = rs_learning_curve(alphas[keep], prior).eps
        per_seed = (eps[:, keep] - rs[None, :]).mean(axis=1)
        gaps.append(per_seed.mean())
        sems.append(per_seed.std(ddof=1) / np.sqrt(len(per_seed)))
    return np.asarray(gaps), np.asarray(sems)


def plot_binary_perceptron(result: BinaryResult, ax, *, alpha_c: float):
    """Gibbs error by enumeration (markers, one colour per ``N``) against the RS curve (black)."""
    markers = "osD^"
    for i, n in enumerate(result.dims):
        eps = result.gibbs_eps[i]
        sem = eps.std(axis=0, ddof=1) / np.sqrt(eps.shape[0])
        ax.errorbar(result.alphas[i], eps.mean(axis=0), yerr=sem, ls="-", lw=1.0,
                    marker=markers[i % 4], ms=4, color=plotting.PALETTE[i], capsize=0,
                    label=rf"$N = {n}$", zorder=3)
    fine = np.linspace(0.0, max(a.max() for a in result.alphas), 251)
    rs = rs_learning_curve(fine, "binary")
    below = fine < alpha_c
    ax.plot(fine[below], rs.eps[below], color=plotting.THEORY_COLOR, lw=2.4, label="RS theory", zorder=4)
    ax.plot(fine[~below], rs.eps[~below], color=plotting.THEORY_COLOR, lw=2.4, zorder=4)
    ax.plot([alpha_c, alpha_c], [0.0, rs_learning_curve([alpha_c - 1e-4], "binary").eps[0]],
            color=plotting.THEORY_COLOR, lw=1.0, ls="--", zorder=4)
    meta = (fine > alpha_c) & np.isfinite(rs.q_meta)
    ax.plot(fine[meta], generalization_error(rs.q_meta[meta]), color=plotting.THEORY_COLOR,
            lw=1.4, ls=":", label="metastable (RS)", zorder=4)
    ax.legend(loc="upper right")
    return plotting.label_axes(ax, r"$\alpha = P/N$", r"$\varepsilon_{\mathrm{Gibbs}}$")


def plot_version_space(result: BinaryResult, ax, *, alpha_c: float):
    """Entropy ``<ln |VS|>/N`` of the version space by enumeration against the RS entropy (black)."""
    markers = "osD^"
    for i, n in enumerate(result.dims):
        ent = np.log(result.size[i]) / n
        sem = ent.std(axis=0, ddof=1) / np.sqrt(ent.shape[0])
        ax.errorbar(result.alphas[i], ent.mean(axis=0), yerr=sem, ls="-", lw=1.0,
                    marker=markers[i % 4], ms=4, color=plotting.PALETTE[i], capsize=0,
                    label=rf"$N = {n}$", zorder=3)
    fine = np.linspace(0.0, max(a.max() for a in result.alphas), 251)
    rs = rs_learning_curve(fine[1:], "binary")
    s = np.concatenate([[np.log(2.0)], np.where(rs.q < 1, rs.s_meta, 0.0)])
    ax.plot(fine, s, color=plotting.THEORY_COLOR, lw=2.4, label="RS theory", zorder=4)
    meta = np.concatenate([[False], (fine[1:] > alpha_c) & np.isfinite(rs.s_meta)])
    ax.plot(fine[meta], np.concatenate([[np.nan], rs.s_meta])[meta], color=plotting.THEORY_COLOR,
            lw=1.4, ls=":", zorder=4)
    ax.axhline(0.0, color="0.5", lw=1.0)
    ax.axvline(alpha_c, color="0.5", lw=1.0, ls="--")
    ax.legend(loc="upper right")
    return plotting.label_axes(ax, r"$\alpha = P/N$", r"$\langle \ln|\mathrm{VS}|\rangle / N$")


def plot_rs_entropy(alphas, ax, *, prior: str = "binary"):
    """The RS entropy ``s(q)`` of binary students at several ``alpha`` (theory curves)."""
    branch, _ = _default_branch(prior)
    styles = ["-", "--", "-.", ":"]
    for i, alpha in enumerate(alphas):
        q, s = rs_entropy(alpha, prior, branch)
        keep = q < 0.9999
        ax.plot(np.append(q[keep], 1.0), np.append(s[keep], 0.0), color=plotting.PALETTE[i],
                ls=styles[i % 4], label=rf"$\alpha = {alpha:g}$")
    ax.axhline(0.0, color="0.5", lw=1.0)
    ax.plot([1.0], [0.0], "o", color=plotting.THEORY_COLOR, ms=8)
    ax.set_ylim(-0.15, 0.3)
    ax.legend(loc="upper right")
    return plotting.label_axes(ax, r"overlap $q$", r"entropy $s(q)$")
