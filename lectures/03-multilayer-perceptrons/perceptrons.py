"""Week 3: multi-layer perceptrons.

Five verified results, each an experiment with keyword defaults at lecture size
and the closed-form theory it is compared with:

1. Backpropagation: a hand-written backward pass equals ``jax.grad``
   (``run_backprop_check``), and reverse mode costs about three forward passes
   whatever the number of parameters ``P``, forward mode about ``2P``
   (``run_backprop_cost``, XLA's own flop count).
2. Approximation rates of one-hidden-layer ReLU networks in one dimension
   (``run_approximation``): ``N^-2`` with exact constants for knots placed
   uniformly and optimally (the least-squares output layer), ``N^-1/2`` for
   neurons sampled from the integral representation (Maurey, Barron).
3. Depth: ``L`` composed tent maps have ``2^L`` linear pieces (``run_sawtooth``),
   a one-hidden-layer net with ``N`` units at most ``N + 1``; no shallow net with
   few pieces approximates the sawtooth (``run_shallow_sawtooth``, Telgarsky's
   bound); a deep net approximates ``x^2`` with error ``4^-(m+1)`` (``run_square``).
4. Signal propagation: the pre-activation variance of a wide random network
   follows ``q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2``
   (``run_signal_propagation``).

The networks are ``dlcourse.mlp`` parameter lists ``[(W, b), ...]`` in standard
parametrization, applied with ``dlcourse.mlp.apply_mlp`` / ``apply_batch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dlcourse import metrics, mlp

Params = mlp.Params

# ---------------------------------------------------------------------------
# Activations and their derivatives
# ---------------------------------------------------------------------------


def _relu_prime(h):
    return (h > 0).astype(h.dtype)


def _tanh_prime(h):
    return 1.0 - jnp.tanh(h) ** 2


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (jax.nn.relu, _relu_prime),
    "tanh": (jnp.tanh, _tanh_prime),
}
"""``name -> (phi, phi')`` for the activations the week uses."""


# ---------------------------------------------------------------------------
# 1. Backpropagation by hand
# ---------------------------------------------------------------------------


class ForwardCache(NamedTuple):
    """What the backward pass needs from the forward pass.

    Attributes:
        pre: pre-activations ``h^l = a^{l-1} W_l^T + b_l``, ``l = 1..L``, each ``(B, n_l)``.
        post: inputs of each layer ``a^{l-1}``, ``l = 1..L`` (``a^0 = x``), each ``(B, n_{l-1})``.
    """

    pre: tuple
    post: tuple


def forward(params: Params, xs: jax.Array, *, activation: str = "relu") -> tuple[jax.Array, ForwardCache]:
    """Forward pass on a batch, keeping the intermediate values.

    ``a^0 = x``, ``h^l = W_l a^{l-1} + b_l``, ``a^l = phi(h^l)`` for hidden layers,
    output ``f = h^L`` (no activation on the last layer), as ``mlp.apply_mlp``.

    Args:
        params: ``[(W_1, b_1), ..., (W_L, b_L)]``, ``W_l`` of shape ``(n_l, n_{l-1})``.
        xs: inputs, shape ``(B, d)``.
        activation: a key of ``ACTIVATIONS``.

    Returns:
        The outputs ``(B, n_L)`` and the ``ForwardCache``.
    """
    phi, _ = ACTIVATIONS[activation]
    pre, post = [], []
    a = xs
    for i, (w, b) in enumerate(params):
        post.append(a)
        h = a @ w.T + b[None, :]
        pre.append(h)
        a = phi(h) if i < len(params) - 1 else h
    return a, ForwardCache(tuple(pre), tuple(post))


def backward(params: Params, cache: ForwardCache, delta: jax.Array, *, activation: str = "relu") -> Params:
    """Reverse-mode sweep through an MLP: the backpropagation equations.

    With ``delta^L = dLoss/dh^L`` (shape ``(B, n_L)``) given,

    ``dLoss/dW_l = (delta^l)^T a^{l-1}``, ``dLoss/db_l = sum_batch delta^l``,
    ``delta^{l-1} = (delta^l W_l) * phi'(h^{l-1})``.

    Each layer costs two matrix products (one for ``W_l``, one for ``delta^{l-1}``),
    the first layer one: about twice the forward pass.

    Args:
        params: the network.
        cache: from ``forward``.
        delta: gradient of the loss with respect to the outputs.
        activation: a key of ``ACTIVATIONS`` (the one used in ``forward``).

    Returns:
        Gradients with the structure of ``params``.

    References:
        Rumelhart, Hinton & Williams (1986); Linnainmaa (1970); Griewank & Walther (2008).
    """
    _, phi_prime = ACTIVATIONS[activation]
    grads = [None] * len(params)
    for layer in range(len(params) - 1, -1, -1):
        w, _ = params[layer]
        grads[layer] = (delta.T @ cache.post[layer], jnp.sum(delta, axis=0))
        if layer > 0:
            delta = (delta @ w) * phi_prime(cache.pre[layer - 1])
    return grads


def mse_loss(params: Params, xs: jax.Array, ys: jax.Array, *, activation: str = "relu") -> jax.Array:
    """``(1 / 2B) sum_i ||f(x_i) - y_i||^2`` with ``f = mlp.apply_mlp``."""
    phi, _ = ACTIVATIONS[activation]
    out = mlp.apply_batch(params, xs, activation=phi)
    return 0.5 * jnp.sum((out - ys) ** 2) / xs.shape[0]


def manual_grad(params: Params, xs: jax.Array, ys: jax.Array, *, activation: str = "relu") -> Params:
    """Gradient of ``mse_loss`` by ``forward`` then ``backward`` (``delta^L = (f - y) / B``)."""
    out, cache = forward(params, xs, activation=activation)
    return backward(params, cache, (out - ys) / xs.shape[0], activation=activation)


class BackpropCheckResult(NamedTuple):
    """Hand-written gradient against ``jax.grad``, layer by layer.

    Attributes:
        rel_err_w: ``||dW_manual - dW_jax|| / ||dW_jax||`` per layer.
        rel_err_b: the same for the biases.
        eps: machine epsilon of the dtype used.
    """

    rel_err_w: np.ndarray
    rel_err_b: np.ndarray
    eps: float


def run_backprop_check(
    *,
    key: jax.Array,
    widths: Sequence[int] = (16, 256, 256, 256, 4),
    batch: int = 128,
    activation: str = "tanh",
) -> BackpropCheckResult:
    """Compare ``manual_grad`` with ``jax.grad(mse_loss)`` on a random network and batch.

    The dtype is JAX's default (float32, or float64 inside ``jax.enable_x64(True)``).

    Args:
        key: randomness for the parameters, inputs and targets.
        widths: layer widths ``[d, n_1, ..., n_out]``.
        batch: number of examples ``B``.
        activation: ``"relu"`` or ``"tanh"``.

    Returns:
        Relative errors per layer and the machine epsilon.
    """
    init_key, x_key, y_key = jax.random.split(key, 3)
    params = mlp.init_mlp(widths, key=init_key, sigma_b=0.1)
    xs = jax.random.normal(x_key, (batch, widths[0]))
    ys = jax.random.normal(y_key, (batch, widths[-1]))
    mine = jax.jit(partial(manual_grad, activation=activation))(params, xs, ys)
    ref = jax.jit(jax.grad(partial(mse_loss, activation=activation)))(params, xs, ys)
    rel_w = [float(metrics.relative_error(m[0], r[0])) for m, r in zip(mine, ref)]
    rel_b = [float(metrics.relative_error(m[1], r[1])) for m, r in zip(mine, ref)]
    return BackpropCheckResult(np.array(rel_w), np.array(rel_b), float(jnp.finfo(xs.dtype).eps))


def matmul_flops(widths: Sequence[int], batch: int) -> int:
    """Flops of the forward pass's matrix products: ``F = 2 B sum_l n_{l-1} n_l``."""
    return 2 * batch * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def reverse_cost_ratio(widths: Sequence[int], batch: int) -> float:
    """Theory for (loss and gradient) / (loss) by reverse mode, counting matrix products.

    The forward pass costs ``F``; the backward pass repeats each product twice
    (weight gradient and back-propagated error) except the input error, so

    ``ratio = (3F - F_1) / F``, ``F_1 = 2 B n_0 n_1``.
    """
    f = matmul_flops(widths, batch)
    return (3 * f - 2 * batch * widths[0] * widths[1]) / f


def forward_mode_cost_ratio(widths: Sequence[int], batch: int) -> float:
    """Theory for (full gradient by forward mode) / (loss), counting matrix products.

    One Jacobian-vector product per parameter, each ``2F - F_1`` (the tangent of
    every layer but the first needs two products), on top of one forward pass:

    ``ratio = 1 + P (2F - F_1) / F``.
    """
    f = matmul_flops(widths, batch)
    n_params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    return 1 + n_params * (2 * f - 2 * batch * widths[0] * widths[1]) / f


class BackpropCostResult(NamedTuple):
    """XLA flop counts of the loss, its reverse-mode and its forward-mode gradient.

    Attributes:
        widths: hidden widths ``N``.
        n_params: number of parameters ``P`` per network.
        flops_loss, flops_reverse, flops_forward_mode: XLA's counts.
        theory_reverse, theory_forward_mode: predicted ratios to ``flops_loss``.
    """

    widths: np.ndarray
    n_params: np.ndarray
    flops_loss: np.ndarray
    flops_reverse: np.ndarray
    flops_forward_mode: np.ndarray
    theory_reverse: np.ndarray
    theory_forward_mode: np.ndarray


def _flops(fn, *args) -> float:
    """Flops of ``fn(*args)`` as counted by XLA on the compiled program (nothing runs)."""
    return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def run_backprop_cost(
    *,
    widths: Sequence[int] = (8, 20, 64),
    depth: int = 3,
    d: int = 16,
    batch: int = 32,
    forward_mode: bool = True,
) -> BackpropCostResult:
    """Count the flops of a loss, ``jax.value_and_grad`` and ``jax.jacfwd`` as the width grows.

    The programs are compiled from shapes only (``jax.ShapeDtypeStruct``); no
    randomness and no computation is needed.

    Args:
        widths: hidden widths ``N`` to try.
        depth: number of hidden layers ``L``.
        d: input dimension.
        batch: examples per loss evaluation.
        forward_mode: also count the forward-mode gradient (compiles ``jacfwd``).

    Returns:
        The counts and the predicted ratios.
    """
    rows = []
    for n in widths:
        arch = [d] + [n] * depth + [1]
        params = [
            (jax.ShapeDtypeStruct((b, a), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.float32))
            for a, b in zip(arch[:-1], arch[1:])
        ]
        xs = jax.ShapeDtypeStruct((batch, d), jnp.float32)
        ys = jax.ShapeDtypeStruct((batch, 1), jnp.float32)
        n_params = sum(a * b + b for a, b in zip(arch[:-1], arch[1:]))
        f0 = _flops(mse_loss, params, xs, ys)
        f1 = _flops(jax.value_and_grad(mse_loss), params, xs, ys)
        f2 = _flops(jax.jacfwd(mse_loss), params, xs, ys) if forward_mode else np.nan
        rows.append((n, n_params, f0, f1, f2, reverse_cost_ratio(arch, batch), forward_mode_cost_ratio(arch, batch)))
    cols = [np.array(c) for c in zip(*rows)]
    return BackpropCostResult(*cols)


# ---------------------------------------------------------------------------
# 2. Approximation by one-hidden-layer ReLU networks in one dimension
# ---------------------------------------------------------------------------


def bump(x, *, center: float = 0.3, scale: float = 0.1):
    """The target ``f(x) = exp(-(x - c)^2 / (2 s^2))`` on ``[0, 1]``."""
    return jnp.exp(-((x - center) ** 2) / (2 * scale**2))


def bump_d1(x, *, center: float = 0.3, scale: float = 0.1):
    """``f'(x) = -(x - c) / s^2 f(x)``."""
    return -(x - center) / scale**2 * bump(x, center=center, scale=scale)


def bump_d2(x, *, center: float = 0.3, scale: float = 0.1):
    """``f''(x) = ((x - c)^2 / s^4 - 1 / s^2) f(x)``."""
    return ((x - center) ** 2 / scale**4 - 1 / scale**2) * bump(x, center=center, scale=scale)


def midpoint_grid(m: int) -> jax.Array:
    """``m`` midpoints ``(k + 1/2) / m`` of ``[0, 1]``: the quadrature grid of the week."""
    return (jnp.arange(m) + 0.5) / m


def fit_piecewise_linear(knots: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Least-squares continuous piecewise-linear fit with given knots (the output layer).

    The span of ``{1, relu(x - k_0), ..., relu(x - k_{N-1})}`` on ``[k_0, k_N]`` is
    the span of the hat functions on the knots; in the hat basis the normal
    equations are tridiagonal and well conditioned. Knots that no data point
    sees (padding beyond the data, so that fits of several widths share one
    shape) get the value 0.

    Args:
        knots: increasing knots ``k_0 < ... < k_N``, shape ``(N + 1,)``, ``x`` inside ``[k_0, k_N]``.
        x: sample points, shape ``(M,)``.
        y: values to fit, shape ``(M,)``.

    Returns:
        The values ``c_k`` of the fit at the knots, shape ``(N + 1,)``.
    """
    n = knots.shape[0] - 1
    idx = jnp.clip(jnp.searchsorted(knots, x, side="right") - 1, 0, n - 1)
    t = (x - knots[idx]) / (knots[idx + 1] - knots[idx])
    left, right = 1.0 - t, t
    seg = partial(jax.ops.segment_sum, num_segments=n + 1)
    diag = seg(left**2, idx) + seg(right**2, idx + 1)
    off = seg(left * right, idx)[:n]
    rhs = seg(left * y, idx) + seg(right * y, idx + 1)
    gram = jnp.diag(jnp.where(diag > 0, diag, 1.0)) + jnp.diag(off, 1) + jnp.diag(off, -1)
    return jnp.linalg.solve(gram, rhs)


def eval_piecewise_linear(knots: jax.Array, values: jax.Array, x: jax.Array) -> jax.Array:
    """The continuous piecewise-linear function with ``values`` at ``knots``, at ``x``."""
    return jnp.interp(x, knots, values)


def relu_net_from_knots(knots: jax.Array, values: jax.Array) -> Params:
    """The one-hidden-layer ReLU network equal to a piecewise-linear function on ``[k_0, k_N]``.

    ``f(x) = c_0 + s_0 relu(x - k_0) + sum_{j=1}^{N-1} (s_j - s_{j-1}) relu(x - k_j)``,
    ``s_j = (c_{j+1} - c_j) / (k_{j+1} - k_j)``: width ``N`` for ``N`` pieces.

    Returns:
        ``dlcourse.mlp`` parameters for widths ``[1, N, 1]``.
    """
    slopes = jnp.diff(values) / jnp.diff(knots)
    out_w = jnp.concatenate([slopes[:1], jnp.diff(slopes)])
    n = slopes.shape[0]
    return [(jnp.ones((n, 1)), -knots[:-1]), (out_w[None, :], values[:1])]


def optimal_knots(levels: jax.Array, x: jax.Array, curvature: jax.Array) -> jax.Array:
    """Knots with density proportional to ``|f''|^{2/5}``: its quantiles at ``levels``.

    Minimizing the asymptotic squared error ``sum_j f''(k_j)^2 h_j^5 / 720`` under
    ``sum_j h_j = 1`` gives knot density ``rho ~ |f''|^{2/5}`` (Lagrange multiplier).

    Args:
        levels: quantile levels in ``[0, 1]``, e.g. ``j / N``, ``j = 0..N``.
        x: midpoint grid of ``[0, 1]`` (``midpoint_grid``).
        curvature: ``f''`` on ``x``.

    Returns:
        The knots, same shape as ``levels``.
    """
    density = jnp.abs(curvature) ** 0.4
    cdf = jnp.concatenate([jnp.zeros(1), jnp.cumsum(density)])
    edges = jnp.linspace(0.0, 1.0, x.shape[0] + 1)
    return jnp.interp(levels, cdf / cdf[-1], edges)


def padded_levels(n_pieces, n_max: int) -> tuple[jax.Array, jax.Array]:
    """Levels ``j / N`` for ``j <= N`` and a mask, padded to length ``n_max + 1``.

    Several widths ``N`` then share one shape (and one compiled program): the
    padding knots are put at ``1 + (j - N) > 1``, where they see no data and their
    units are inactive on ``[0, 1]``.
    """
    j = jnp.arange(n_max + 1)
    return jnp.minimum(j / n_pieces, 1.0), j <= n_pieces


def _pad(knots, valid, n_pieces):
    return jnp.where(valid, knots, 1.0 + jnp.arange(knots.shape[0]) - n_pieces)


def l2_constant_uniform(curvature: jax.Array) -> float:
    """``C_unif = (int_0^1 f''^2 / 720)^{1/2}``: ``||f - f_N|| ~ C_unif N^-2``, uniform knots.

    On a piece of length ``h`` where ``f`` is nearly quadratic, the best continuous
    linear fit leaves ``(f''/12) h^2 P_2`` (Legendre), of squared norm ``f''^2 h^5 / 720``.
    ``curvature`` is ``f''`` on the midpoint grid (the integral is its mean).
    """
    return float(jnp.sqrt(jnp.mean(curvature**2) / 720))


def l2_constant_optimal(curvature: jax.Array) -> float:
    """``C_opt = (int_0^1 |f''|^{2/5})^{5/2} / sqrt(720)``: the same with optimal knots.

    This is the exact asymptotics of the best L2 approximation by ``N``-piece
    continuous piecewise-linear functions (free knots), hence of width-``N`` networks.
    """
    return float(jnp.mean(jnp.abs(curvature) ** 0.4) ** 2.5 / jnp.sqrt(720.0))


def maurey_variance(x: jax.Array, f: jax.Array, f0: float, d1_at_0: float, curvature: jax.Array) -> float:
    """``V`` in ``E||f - f_N||^2 = V / N`` for neurons sampled from the integral representation.

    ``f(x) = f(0) + f'(0) x + int_0^1 f''(b) relu(x - b) db`` on ``[0, 1]``. Sample
    ``b_i ~ |f''| / ||f''||_1`` and set ``a_i = ||f''||_1 sign f''(b_i) / N``: the network
    is unbiased and its squared L2 error has mean ``V / N`` with

    ``V = ||f''||_1 int_0^1 |f''(b)| (1 - b)^3 / 3 db - ||f - f(0) - f'(0) x||^2``.

    Args:
        x: midpoint grid; f, curvature: ``f`` and ``f''`` on it; f0, d1_at_0: ``f(0)``, ``f'(0)``.

    References:
        Barron (1993); Pisier (1981), who credits Maurey.
    """
    l1 = jnp.mean(jnp.abs(curvature))
    second_moment = l1 * jnp.mean(jnp.abs(curvature) * (1 - x) ** 3 / 3)
    g = f - f0 - d1_at_0 * x
    return float(second_moment - jnp.mean(g**2))


def sample_maurey_net(
    n_units, x: jax.Array, f0: float, d1_at_0: float, curvature: jax.Array, *, key: jax.Array, n_max: int
) -> Params:
    """A ReLU network with one linear unit and ``n_units`` random ones (Maurey's sampling).

    Knots ``b_i`` are drawn by inverse transform from ``|f''| / ||f''||_1`` on the grid;
    output weights ``||f''||_1 sign f''(b_i) / n_units``; the extra unit ``relu(x)``
    carries ``f'(0) x`` and the output bias ``f(0)``. The layer has ``n_max``
    random units, of which the first ``n_units`` get a nonzero output weight (so
    that widths share one shape).
    """
    dens = jnp.abs(curvature)
    cdf = jnp.concatenate([jnp.zeros(1), jnp.cumsum(dens)])
    edges = jnp.linspace(0.0, 1.0, x.shape[0] + 1)
    knots = jnp.interp(jax.random.uniform(key, (n_max,)), cdf / cdf[-1], edges)
    curv_at = jnp.interp(knots, x, curvature)
    used = jnp.arange(n_max) < n_units
    out_w = jnp.where(used, jnp.mean(dens) * jnp.sign(curv_at) / n_units, 0.0)
    out_w = jnp.concatenate([jnp.array([d1_at_0]), out_w])
    knots = jnp.concatenate([jnp.zeros(1), knots])
    return [(jnp.ones((n_max + 1, 1)), -knots), (out_w[None, :], jnp.array([f0]))]


class ApproximationResult(NamedTuple):
    """Approximation error ``||f - f_N||_{L^2[0,1]}`` of width-``N`` ReLU networks.

    Attributes:
        widths: ``N``.
        err_uniform: least-squares output layer, knots ``j / N``.
        err_optimal: least-squares output layer, knots at quantiles of ``|f''|^{2/5}``.
        err_random: RMS over seeds of the Maurey network with ``N`` random units.
        err_random_sem: standard error of ``err_random`` (delta method).
        const_uniform, const_optimal: theory ``C`` in ``C N^-2``.
        variance_random: theory ``V`` in ``(V / N)^{1/2}``.
        fit_uniform, fit_optimal, fit_random: log-log fits (``metrics.PowerLawFit``).
    """

    widths: np.ndarray
    err_uniform: np.ndarray
    err_optimal: np.ndarray
    err_random: np.ndarray
    err_random_sem: np.ndarray
    const_uniform: float
    const_optimal: float
    variance_random: float
    fit_uniform: metrics.PowerLawFit
    fit_optimal: metrics.PowerLawFit
    fit_random: metrics.PowerLawFit


def _l2(net: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """``(int (net - y)^2)^{1/2}`` by the midpoint rule."""
    return jnp.sqrt(jnp.mean((mlp.apply_batch(net, x[:, None])[:, 0] - y) ** 2))


def run_approximation(
    *,
    key: jax.Array,
    widths: Sequence[int] = (4, 8, 16, 32, 64, 128, 256),
    n_seeds: int = 128,
    n_grid: int = 2**13,
    n_grid_random: int = 2**10,
    fit_from: int = 16,
    center: float = 0.3,
    scale: float = 0.1,
) -> ApproximationResult:
    """Approximate the bump ``f`` by one-hidden-layer ReLU networks of width ``N``.

    Three constructions per width, errors measured on the network itself
    (``mlp.apply_batch``), by the midpoint rule:

    * uniform knots, least-squares output layer: theory ``C_unif N^-2``;
    * optimal knots (density ``|f''|^{2/5}``), least squares: theory ``C_opt N^-2``,
      the exact asymptotics of the best width-``N`` network;
    * ``N`` random neurons from the integral representation (Maurey's argument
      behind Barron's theorem): theory ``(V / N)^{1/2}``, ``n_seeds`` networks.

    All widths and seeds run in one ``vmap`` (widths padded to ``max(widths)``).

    Args:
        key: randomness of the random-neuron networks.
        widths: the widths ``N``.
        n_seeds: random networks per width.
        n_grid: quadrature points of the least-squares fits and their errors.
        n_grid_random: quadrature points for the random networks.
        fit_from: smallest ``N`` in the power-law fits of the two deterministic series.
        center, scale: of the bump.

    Returns:
        The errors, the theory constants and the fitted slopes.
    """
    n_max = max(widths)
    ns = jnp.asarray(widths)
    target = partial(bump, center=center, scale=scale)
    x = midpoint_grid(n_grid)
    f, curv = target(x), bump_d2(x, center=center, scale=scale)
    f0 = float(target(0.0))
    d1_at_0 = float(bump_d1(0.0, center=center, scale=scale))

    def deterministic(n):
        levels, valid = padded_levels(n, n_max)
        knots = jnp.stack([_pad(levels, valid, n), _pad(optimal_knots(levels, x, curv), valid, n)])
        values = jax.vmap(lambda k: fit_piecewise_linear(k, x, f))(knots)
        return jax.vmap(lambda k, c: _l2(relu_net_from_knots(k, c), x, f))(knots, values)

    xr = midpoint_grid(n_grid_random)
    fr, curv_r = target(xr), bump_d2(xr, center=center, scale=scale)

    def random(n, k):
        net = sample_maurey_net(n, xr, f0, d1_at_0, curv_r, key=k, n_max=n_max)
        return _l2(net, xr, fr) ** 2

    det = np.asarray(jax.jit(jax.vmap(deterministic))(ns))
    keys = jax.random.split(key, (len(widths), n_seeds))
    sq = np.asarray(jax.jit(jax.vmap(jax.vmap(random, in_axes=(None, 0))))(ns, keys))
    mean_sq, sem_sq = metrics.mean_and_sem(sq, axis=1)
    rms = np.sqrt(mean_sq)
    widths_np = np.array(widths)
    use = widths_np >= fit_from
    return ApproximationResult(
        widths=widths_np,
        err_uniform=det[:, 0],
        err_optimal=det[:, 1],
        err_random=rms,
        err_random_sem=sem_sq / (2 * rms),
        const_uniform=l2_constant_uniform(curv),
        const_optimal=l2_constant_optimal(curv),
        variance_random=maurey_variance(xr, fr, f0, d1_at_0, curv_r),
        fit_uniform=metrics.loglog_slope(widths_np[use], det[use, 0]),
        fit_optimal=metrics.loglog_slope(widths_np[use], det[use, 1]),
        fit_random=metrics.loglog_slope(widths_np, rms),
    )


# ---------------------------------------------------------------------------
# 3. Depth: the sawtooth, counting linear pieces, Telgarsky's bound, x^2
# ---------------------------------------------------------------------------


def tent_net(depth: int) -> Params:
    """``L = depth`` composed tent maps as a width-2 ReLU network of depth ``L``.

    ``T(x) = 2 relu(x) - 4 relu(x - 1/2)`` maps ``[0, 1]`` onto itself (``2x`` then
    ``2 - 2x``). Hidden layer ``l`` computes ``relu(u), relu(u - 1/2)`` of
    ``u = T^{l-1}(x)``; the next layer's weights form ``T`` from them.

    Returns:
        ``dlcourse.mlp`` parameters for widths ``[1, 2, ..., 2, 1]`` (``depth`` hidden layers).
    """
    first = (jnp.ones((2, 1)), jnp.array([0.0, -0.5]))
    middle = (jnp.array([[2.0, -4.0], [2.0, -4.0]]), jnp.array([0.0, -0.5]))
    last = (jnp.array([[2.0, -4.0]]), jnp.zeros(1))
    return [first] + [middle] * (depth - 1) + [last]


def linear_pieces(params: Params, *, lo: float = 0.0, hi: float = 1.0, activation: str = "relu") -> np.ndarray:
    """Exact breakpoints of a scalar-input ReLU network on ``[lo, hi]``.

    Walks through the layers with the network restricted to the line: on each
    current piece every unit's pre-activation is affine in ``x``, so a unit adds a
    breakpoint where it crosses zero inside the piece. At the end, breakpoints
    where the output's slope does not change are dropped. The number of linear
    pieces is ``len(breakpoints) + 1``. Dynamic sizes: numpy, float64.

    Args:
        params: ``dlcourse.mlp`` parameters with input dimension 1.
        lo, hi: the interval.
        activation: must be ``"relu"`` (piecewise linear).

    Returns:
        Sorted breakpoints strictly inside ``(lo, hi)``.
    """
    if activation != "relu":
        raise ValueError("only ReLU networks are piecewise linear")
    layers = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in params]
    cuts = np.array([lo, hi])
    # on piece j the current layer's input is slope[j] * x + icept[j] (vectors)
    slope = np.ones((1, 1))
    icept = np.zeros((1, 1))
    for i, (w, b) in enumerate(layers):
        s_h = slope @ w.T  # (pieces, n_out)
        c_h = icept @ w.T + b
        if i == len(layers) - 1:
            slope, icept = s_h, c_h
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            roots = -c_h / s_h  # (pieces, n_out): where each unit crosses zero
        inside = np.isfinite(roots) & (roots > cuts[:-1, None]) & (roots < cuts[1:, None])
        new_cuts = np.unique(np.concatenate([cuts, roots[inside]]))
        mids = 0.5 * (new_cuts[:-1] + new_cuts[1:])
        piece = np.clip(np.searchsorted(cuts, mids, side="right") - 1, 0, len(cuts) - 2)
        s_h, c_h = s_h[piece], c_h[piece]
        active = (s_h * mids[:, None] + c_h) > 0
        slope, icept, cuts = s_h * active, c_h * active, new_cuts
    out_slopes = slope[:, 0]
    scale = max(np.max(np.abs(out_slopes)), 1e-300)
    change = np.abs(np.diff(out_slopes)) > 1e-9 * scale
    return cuts[1:-1][change]


def count_pieces_on_grid(y: np.ndarray, *, rtol: float = 1e-6) -> int:
    """Linear pieces of a function sampled on a uniform grid, from slope changes.

    Slopes of consecutive cells are compared; a kink strictly inside a cell changes
    the slope twice in a row (into and out of the mixed cell), which counts once.
    Exact when every kink is a grid point (e.g. dyadic kinks on a dyadic grid) and
    no two kinks share a cell.

    Args:
        y: function values on the grid, shape ``(M,)``.
        rtol: slope changes below ``rtol * max|slope|`` are ignored.

    Returns:
        The number of pieces.
    """
    y = np.asarray(y, np.float64)
    s = np.diff(y)
    changed = np.abs(np.diff(s)) > rtol * np.max(np.abs(s))
    # count runs of consecutive changes as one kink
    starts = changed & ~np.concatenate([[False], changed[:-1]])
    return int(np.sum(starts)) + 1


def random_shallow_net(n_units: int, *, key: jax.Array) -> Params:
    """A random one-hidden-layer ReLU net on ``[0, 1]`` with every kink inside ``(0, 1)``.

    ``f(x) = sum_i a_i relu(w_i (x - u_i)) + c`` with ``w_i, a_i`` standard normal
    and ``u_i`` uniform on ``(0, 1)``: ``N`` units, ``N + 1`` pieces almost surely.
    """
    w_key, u_key, a_key = jax.random.split(key, 3)
    w = jax.random.normal(w_key, (n_units, 1))
    u = jax.random.uniform(u_key, (n_units,))
    a = jax.random.normal(a_key, (1, n_units))
    return [(w, -w[:, 0] * u), (a, jnp.zeros(1))]


class SawtoothResult(NamedTuple):
    """Linear pieces of deep narrow (tent) and shallow networks.

    Attributes:
        depths: ``L``.
        pieces_grid: pieces of ``T^L`` counted from slope changes on a dyadic grid.
        pieces_exact: pieces of ``T^L`` from the exact breakpoints (``linear_pieces``).
        units_deep: hidden units of the deep net, ``2L``.
        pieces_shallow: pieces of random one-hidden-layer nets with ``2L`` units.
        x, curves: the grid and ``T^L(x)`` for the first few ``L`` (for plotting).
    """

    depths: np.ndarray
    pieces_grid: np.ndarray
    pieces_exact: np.ndarray
    units_deep: np.ndarray
    pieces_shallow: np.ndarray
    x: np.ndarray
    curves: np.ndarray


def run_sawtooth(
    *, key: jax.Array, depths: Sequence[int] = tuple(range(1, 13)), grid_log2: int = 16, n_curves: int = 4
) -> SawtoothResult:
    """Count the linear pieces of ``T^L`` and of shallow nets with as many units.

    Theory: ``T^L`` has ``2^L`` pieces (each piece of ``T^{L-1}`` is mapped onto
    ``[0, 1]`` and folded once more); a one-hidden-layer net with ``N`` units has
    at most ``N + 1``.

    Args:
        key: randomness of the shallow nets.
        depths: the depths ``L`` (``2^L`` must stay below ``2^grid_log2``).
        grid_log2: the grid is ``k / 2^grid_log2``, ``k = 0..2^grid_log2``.
        n_curves: how many ``T^L`` to return for plotting.

    Returns:
        The counts and a few curves.
    """
    x = jnp.linspace(0.0, 1.0, 2**grid_log2 + 1)[:, None]
    deepest = max(depths)
    # one forward pass of the deepest net: hidden layer l + 1 receives u = T^l(x)
    out, cache = jax.jit(forward)(tent_net(deepest), x)
    saw = {l: np.asarray(cache.pre[l][:, 0]) for l in range(1, deepest)}
    saw[deepest] = np.asarray(out[:, 0])
    n_max = 2 * deepest
    shallow_nets = jax.jit(jax.vmap(lambda k: random_shallow_net(n_max, key=k)))(
        jax.random.split(key, len(depths))
    )
    shallow = []
    for i, depth in enumerate(depths):
        (w, b), (a, c) = jax.tree_util.tree_map(lambda t: np.asarray(t[i]), shallow_nets)
        n = 2 * depth  # the first 2L units of an independent random net
        shallow.append(len(linear_pieces([(w[:n], b[:n]), (a[:, :n], c)])) + 1)
    return SawtoothResult(
        depths=np.array(depths),
        pieces_grid=np.array([count_pieces_on_grid(saw[l]) for l in depths]),
        pieces_exact=np.array([len(linear_pieces(tent_net(l))) + 1 for l in depths]),
        units_deep=2 * np.array(depths),
        pieces_shallow=np.array(shallow),
        x=np.asarray(x[:, 0]),
        curves=np.array([saw[l] for l in range(1, n_curves + 1)]),
    )


def telgarsky_l1_bound(n_pieces, depth: int):
    """Lower bound on ``||f - T^L||_{L^1[0,1]}`` for any ``f`` with ``t`` linear pieces.

    ``||f - T^L||_1 >= (1/8) (1 - (2t + 2) / 2^L)`` (clipped at 0). Proof: ``T^L - 1/2``
    has ``2^L - 1`` whole triangles of area ``2^{-L} / 4`` of alternating sign;
    ``f - 1/2`` changes sign at most ``t`` times, so it has the wrong sign on at
    least ``(2^L - 2t - 2) / 2`` of them. Cf. Telgarsky (2016), Lemma 3.
    """
    t = np.asarray(n_pieces, dtype=float)
    return np.maximum(0.125 * (1 - (2 * t + 2) / 2.0**depth), 0.0)


class ShallowSawtoothResult(NamedTuple):
    """Least-squares one-hidden-layer fits of ``T^L``.

    Attributes:
        widths: ``N`` (uniform knots ``j / N``, ``N`` pieces).
        err_l1: ``||f_N - T^L||_1`` of the fits.
        bound_l1: ``telgarsky_l1_bound(N + 1, L)``, valid for any width-``N`` network.
        depth: ``L``.
    """

    widths: np.ndarray
    err_l1: np.ndarray
    bound_l1: np.ndarray
    depth: int


def run_shallow_sawtooth(*, depth: int = 5, max_width: int = 40, n_grid: int = 2**12) -> ShallowSawtoothResult:
    """Fit ``T^L`` with ``N = 1..max_width`` pieces (uniform knots) and compare with the bound.

    All widths are fitted at once with ``vmap``: each knot vector is padded to the
    same length with knots beyond 1, which see no data.
    """
    x = midpoint_grid(n_grid)
    y = mlp.apply_batch(tent_net(depth), x[:, None])[:, 0]
    widths = np.arange(1, max_width + 1)
    j = np.arange(max_width + 1)
    knots = np.where(j[None, :] <= widths[:, None], j[None, :] / widths[:, None], 1.0 + j[None, :])

    def err(kn):
        c = fit_piecewise_linear(kn, x, y)
        return jnp.mean(jnp.abs(eval_piecewise_linear(kn, c, x) - y))

    errs = jax.jit(jax.vmap(err))(jnp.asarray(knots))
    return ShallowSawtoothResult(widths, np.asarray(errs), telgarsky_l1_bound(widths + 1, depth), depth)


def square_net(m: int) -> Params:
    """Yarotsky's deep ReLU network for ``x^2`` on ``[0, 1]``: width 3, ``m`` hidden layers.

    ``f_m(x) = x - sum_{s=1}^m T^s(x) / 4^s`` is the piecewise-linear interpolant
    of ``x^2`` at ``k / 2^m``. Hidden layer ``s`` holds ``relu`` of
    ``(f_{s-1}(x), u, u - 1/2)`` with ``u = T^{s-1}(x)``; ``f_{s-1} >= 0`` so its
    ReLU is the identity.

    References:
        Yarotsky (2017), Proposition 2.
    """
    first = (jnp.ones((3, 1)), jnp.array([0.0, 0.0, -0.5]))
    layers = [first]
    for s in range(1, m):
        w = jnp.array([[1.0, -2.0 / 4**s, 4.0 / 4**s], [0.0, 2.0, -4.0], [0.0, 2.0, -4.0]])
        layers.append((w, jnp.array([0.0, 0.0, -0.5])))
    layers.append((jnp.array([[1.0, -2.0 / 4**m, 4.0 / 4**m]]), jnp.zeros(1)))
    return layers


class SquareResult(NamedTuple):
    """Sup-norm error of deep and shallow ReLU approximations of ``x^2`` on ``[0, 1]``.

    Attributes:
        depths: ``m``; deep net with ``3m`` hidden units.
        err_deep: measured ``max |f_m(x) - x^2|``; theory ``4^{-(m+1)}``.
        widths: ``N`` for the shallow interpolants (``N`` pieces).
        err_shallow: measured sup error of the shallow interpolant; theory ``1 / (4 N^2)``.
        bound_shallow: ``1 / (8 (N + 1)^2)``: no width-``N`` network does better.
    """

    depths: np.ndarray
    err_deep: np.ndarray
    widths: np.ndarray
    err_shallow: np.ndarray
    bound_shallow: np.ndarray


def run_square(*, depths: Sequence[int] = tuple(range(1, 9)), grid_log2: int = 14) -> SquareResult:
    """Yarotsky's construction against the best shallow network, for ``x^2``.

    Deep: ``f_m`` interpolates ``x^2`` at spacing ``h = 2^-m``, so its error
    ``h^2 / 4`` is reached at the midpoints. Shallow with the same number of
    units ``N = 3m``: the uniform interpolant has error ``1 / (4 N^2)``; any
    ``N``-unit net has a piece of length ``>= 1 / (N + 1)`` on which the best line
    misses ``x^2`` by ``h^2 / 8``.
    """
    x = jnp.linspace(0.0, 1.0, 2**grid_log2 + 1)
    deepest = max(depths)
    # one forward pass: hidden layer m + 1 receives f_m(x) as its first unit
    out, cache = jax.jit(forward)(square_net(deepest), x[:, None])
    approx = {m: cache.pre[m][:, 0] for m in range(1, deepest)}
    approx[deepest] = out[:, 0]
    deep = np.array([float(jnp.max(jnp.abs(approx[m] - x**2))) for m in depths])
    widths = 3 * np.array(depths)
    n_max = int(widths.max())

    def shallow_error(n):
        levels, valid = padded_levels(n, n_max)
        knots = _pad(levels, valid, n)
        net = relu_net_from_knots(knots, knots**2)  # units beyond n are inactive on [0, 1]
        return jnp.max(jnp.abs(mlp.apply_batch(net, x[:, None])[:, 0] - x**2))

    shallow = np.asarray(jax.jit(jax.vmap(shallow_error))(jnp.asarray(widths)))
    return SquareResult(np.array(depths), deep, widths, shallow, 1 / (8 * (widths + 1.0) ** 2))


# ---------------------------------------------------------------------------
# 4. Signal propagation at initialization
# ---------------------------------------------------------------------------


def gaussian_expectation(g: Callable, q, *, order: int = 64):
    """``E_{z ~ N(0,1)}[g(sqrt(q) z)]`` by Gauss-Hermite quadrature (probabilists' weights)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    nodes = jnp.asarray(nodes, dtype=jnp.result_type(float))
    weights = jnp.asarray(weights / np.sqrt(2 * np.pi), dtype=jnp.result_type(float))
    q = jnp.asarray(q)[..., None]
    shape = (1,) * (q.ndim - 1) + (order,)
    return jnp.sum(weights.reshape(shape) * g(jnp.sqrt(q) * nodes.reshape(shape)), axis=-1)


def variance_map(q, *, sigma_w: float, sigma_b: float = 0.0, activation: str = "relu"):
    """The mean-field variance map ``q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2``.

    For ReLU, ``E[relu(sqrt(q) z)^2] = q / 2`` (half of a Gaussian second moment),
    so ``q -> sigma_w^2 q / 2 + sigma_b^2``: constant at He's ``sigma_w^2 = 2`` when ``sigma_b = 0``.

    References:
        Poole et al. (2016), eq. (3); He et al. (2015), eq. (10).
    """
    if activation == "relu":
        second = q / 2
    else:
        phi, _ = ACTIVATIONS[activation]
        second = gaussian_expectation(lambda u: phi(u) ** 2, q)
    return sigma_w**2 * second + sigma_b**2


def variance_recursion(q1, depth: int, *, sigma_w, sigma_b=0.0, activation: str = "relu") -> jax.Array:
    """``q_1, ..., q_L`` from ``q_{l+1} = variance_map(q_l)``, ``L = depth``."""

    def step(q, _):
        return variance_map(q, sigma_w=sigma_w, sigma_b=sigma_b, activation=activation), q

    _, qs = jax.lax.scan(step, jnp.asarray(q1, dtype=jnp.result_type(float)), None, length=depth)
    return qs


def preactivation_variances(
    xs: jax.Array, *, key: jax.Array, width: int, depth: int, sigma_w, sigma_b=0.0, activation: str = "relu"
) -> jax.Array:
    """Empirical ``q_l = mean_{i, x} (h^l_i(x))^2`` of one random network, ``l = 1..L``.

    ``h^1 = W_1 x + b_1``, ``h^{l+1} = W_{l+1} phi(h^l) + b_{l+1}``. Layers are drawn
    one at a time with ``dlcourse.mlp.init_mlp`` inside a ``lax.scan``, so memory
    stays at one ``width x width`` matrix.

    Args:
        xs: inputs, shape ``(B, N)`` (input dimension ``d = N``).
        key: randomness of the weights.
        width: ``N``.
        depth: ``L`` hidden layers.
        sigma_w, sigma_b: init scales (``W ~ N(0, sigma_w^2 / fan_in)``, ``b ~ N(0, sigma_b^2)``).
        activation: a key of ``ACTIVATIONS``.

    Returns:
        ``q_1..q_L``, shape ``(L,)``.
    """
    phi, _ = ACTIVATIONS[activation]

    def layer(carry, _):
        a, k = carry
        k, layer_key = jax.random.split(k)  # the key travels in the carry
        (w, b), = mlp.init_mlp([width, width], key=layer_key, sigma_w=sigma_w, sigma_b=sigma_b)
        h = a @ w.T + b[None, :]
        return (phi(h), k), jnp.mean(h**2)

    _, qs = jax.lax.scan(layer, (xs, key), None, length=depth)
    return qs


class SignalPropagationResult(NamedTuple):
    """Pre-activation variance through depth: wide random networks vs the recursion.

    Attributes:
        layers: ``l = 1..L``.
        sigma_w: the weight scales ``sigma_w`` (rows).
        measured: mean over seeds of ``q_l``, shape ``(len(sigma_w), L)``.
        sem: its standard error over seeds.
        theory: ``variance_recursion`` from the exact ``q_1``.
    """

    layers: np.ndarray
    sigma_w: np.ndarray
    measured: np.ndarray
    sem: np.ndarray
    theory: np.ndarray


def run_signal_propagation(
    *,
    key: jax.Array,
    sigma_w: Sequence[float] = (1.6**0.5, 2.0**0.5, 2.5**0.5),
    sigma_b: float = 0.0,
    activation: str = "relu",
    width: int = 256,
    depth: int = 20,
    n_inputs: int = 8,
    n_seeds: int = 32,
) -> SignalPropagationResult:
    """Measure ``q_l`` on ``n_seeds`` random networks per ``sigma_w^2`` (one ``vmap``).

    Inputs have ``||x||^2 = d`` (``d = width``), so ``q_1 = sigma_w^2 + sigma_b^2``.
    For ReLU with ``sigma_b = 0`` the mean of ``q_l`` obeys the recursion exactly at
    any width (``E[q_{l+1} | h^l] = sigma_w^2 M_l`` with ``M_l`` the mean of
    ``relu(h^l)^2``, and ``E[M_l | h^{l-1}] = q_l / 2``); its fluctuations grow
    like ``exp(5 l / N)`` (Hanin 2018). For smooth ``phi`` the recursion holds as
    ``N -> infinity``, up to ``O(1/N)``.

    Args:
        key: randomness of inputs and weights.
        sigma_w: weight scales to compare (``sigma_w^2`` = 1.6, 2, 2.5 by default).
        sigma_b: bias scale.
        activation: ``"relu"`` or ``"tanh"``.
        width: ``N``.
        depth: ``L``.
        n_inputs: inputs per network.
        n_seeds: networks per ``sigma_w^2``.

    Returns:
        Measured and predicted ``q_l``.
    """
    x_key, net_key = jax.random.split(key)
    xs = jax.random.normal(x_key, (n_inputs, width))
    xs = xs / jnp.linalg.norm(xs, axis=1, keepdims=True) * jnp.sqrt(width)
    sw = jnp.asarray(sigma_w, dtype=jnp.result_type(float))
    n_sigma = len(sigma_w)
    keys = jax.random.split(net_key, n_sigma * n_seeds)  # one network per (sigma_w, seed)
    sw_rep = jnp.repeat(sw, n_seeds)

    run = partial(preactivation_variances, width=width, depth=depth, sigma_b=sigma_b, activation=activation)
    measure = jax.jit(jax.vmap(lambda k, s: run(xs, key=k, sigma_w=s)))
    qs = np.asarray(measure(keys, sw_rep)).reshape(n_sigma, n_seeds, depth)
    mean, sem = metrics.mean_and_sem(qs, axis=1)
    theory = jax.vmap(lambda s: variance_recursion(s**2 + sigma_b**2, depth, sigma_w=s, sigma_b=sigma_b,
                                                    activation=activation))(sw)
    return SignalPropagationResult(np.arange(1, depth + 1), np.asarray(sw), mean, sem, np.asarray(theory))
