"""Neural tangent kernels: the analytic infinite-width limit and the empirical kernel.

For a network ``f_theta: R^d -> R`` the (empirical) neural tangent kernel is

    Theta(x, x') = sum_p  d f_theta(x) / d theta_p  *  d f_theta(x') / d theta_p
                 = <grad_theta f(x), grad_theta f(x')>,

the Gram matrix of the parameter gradients (Jacot, Gabriel & Hongler 2018).
Under gradient flow on a loss, the outputs on the training inputs evolve as
``d f_t(X)/dt = -Theta(X, X) grad_f loss``; in the infinite-width limit of an
MLP in NTK parametrization ``Theta`` is deterministic and constant in time.

This module provides

* ``relu_kernels``: the infinite-width NNGP kernel ``Sigma`` and NTK ``Theta``
  of a ReLU MLP with ``depth`` hidden layers in NTK parametrization with
  biases, by the arc-cosine recursion (Cho & Saul 2009; Jacot et al. 2018;
  Arora et al. 2019; Lee et al. 2019). It matches
  ``dlcourse.mlp.init_mlp/apply_mlp(parametrization="ntk", sigma_w, sigma_b)``
  with ``widths = [d, N, ..., N, 1]`` (``depth`` copies of ``N``), ``N -> inf``.
* ``empirical_ntk``: the finite-width kernel of ANY scalar model
  ``apply_fn(params, x)``, either by contracting per-example gradients
  (``vmap`` of ``grad``; memory ``n * P``) or by NTK-vector products
  (one ``vjp`` and one ``jvp`` per column; memory ``O(P)``, no Jacobian).
* ``ntk_vector_product``: ``Theta(X1, X2) v`` without forming the Jacobian.
* ``empirical_ntk_mlp``: the same kernel for ``dlcourse.mlp`` networks by the
  layer-wise factorization of the gradient of a dense layer (an outer product),
  ``O(n^2 N)`` work on top of one forward and one backward pass: the fast path
  for wide networks (the "structured derivatives" of Novak et al. 2022).
* ``kernel_regression``, ``kernel_gd_coefficients`` and
  ``kernel_gd_predictions``: what an infinitely wide network trained by
  gradient descent on the squared loss predicts, and how far its weights move.

Conventions: one example ``x`` has shape ``(d,)``; batches ``(n, d)``; kernels
``(n1, n2)``. The loss is ``L = 1/(2n) sum_i (f(x_i) - y_i)^2`` (as in
``dlcourse.train.squared_loss``), so a gradient-descent step with learning rate
``lr`` moves the training outputs by ``-lr/n * Theta (f - y)``.

References:
    Jacot, Gabriel & Hongler (2018), arXiv:1806.07572.
    Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein & Pennington (2019),
    arXiv:1902.06720.
    Arora, Du, Hu, Li, Salakhutdinov & Wang (2019), arXiv:1904.11955.
    Cho & Saul (2009), "Kernel methods for deep learning", NeurIPS.
    Novak, Sohl-Dickstein & Schoenholz (2022), arXiv:2206.08720.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = [
    "InfiniteWidthKernels",
    "relu_expectations",
    "relu_kernels",
    "relu_ntk",
    "relu_nngp",
    "empirical_ntk",
    "ntk_vector_product",
    "empirical_ntk_mlp",
    "kernel_regression",
    "kernel_gd_coefficients",
    "kernel_gd_predictions",
]


# --------------------------------------------------------------------------
# Infinite width: the arc-cosine recursion
# --------------------------------------------------------------------------


class InfiniteWidthKernels(NamedTuple):
    """Infinite-width kernels of the network output between two sets of inputs.

    Attributes:
        nngp: ``Sigma^{(L+1)}(x1, x2)``, shape ``(n1, n2)``: the covariance of
            the Gaussian process ``f_theta`` at initialization.
        ntk: ``Theta^{(L+1)}(x1, x2)``, shape ``(n1, n2)``: the neural tangent kernel.
    """

    nngp: jax.Array
    ntk: jax.Array


def relu_expectations(k12: jax.Array, k11: jax.Array, k22: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gaussian expectations of ReLU and its derivative (arc-cosine kernels).

    For ``(u, v) ~ N(0, [[k11, k12], [k12, k22]])``, with
    ``cos(t) = k12 / sqrt(k11 k22)``:

        E[relu(u) relu(v)] = sqrt(k11 k22) / (2 pi) * (sin t + (pi - t) cos t),
        E[1{u > 0} 1{v > 0}] = (pi - t) / (2 pi).

    Args:
        k12: covariances, any shape.
        k11: variances of ``u``, broadcastable to ``k12``.
        k22: variances of ``v``, broadcastable to ``k12``.

    Returns:
        ``(E[relu(u) relu(v)], E[relu'(u) relu'(v)])``, each of ``k12``'s shape.

    References:
        Cho & Saul (2009), "Kernel methods for deep learning", NeurIPS 22
        (arc-cosine kernels of degree 1 and 0).
    """
    # The angle from atan2(sqrt(det), k12), det = k11 k22 - k12^2 the Gram
    # determinant: arccos(k12 / norm) near cos = 1 turns one rounding error of
    # the ratio into an angle error ~sqrt(eps), half of float32's digits.
    det = k11 * k22 - k12 * k12
    positive = det > 0
    root = jnp.where(positive, jnp.sqrt(jnp.where(positive, det, 1.0)), 0.0)  # no NaN gradient at det = 0
    t = jnp.arctan2(root, k12)
    e_phi = (root + (math.pi - t) * k12) / (2 * math.pi)
    e_dphi = (math.pi - t) / (2 * math.pi)
    return e_phi, e_dphi


@jax.jit(static_argnames=("depth",))
def relu_kernels(
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    depth: int,
    sigma_w: float = 2.0**0.5,
    sigma_b: float = 0.0,
) -> InfiniteWidthKernels:
    """Infinite-width NNGP kernel and NTK of a ReLU MLP in NTK parametrization.

    The network has ``depth = L`` hidden layers of width ``N -> inf`` and a
    scalar output, ``h^1 = sigma_w W^1 x / sqrt(d) + sigma_b b^1``,
    ``h^{l+1} = sigma_w W^{l+1} relu(h^l) / sqrt(N) + sigma_b b^{l+1}``,
    ``f = h^{L+1}``, all entries of ``W^l, b^l`` i.i.d. ``N(0, 1)``.
    The kernels follow the recursion (Jacot et al. 2018, Thm 1; Arora et al.
    2019, Sec. 3; Lee et al. 2019, App. C), for ``l = 1, ..., L``:

        Sigma^1(x, x')     = sigma_w^2 x.x' / d + sigma_b^2,       Theta^1 = Sigma^1,
        Sigma^{l+1}(x, x') = sigma_w^2 E[relu(u) relu(v)] + sigma_b^2,
        Sigmadot^{l+1}     = sigma_w^2 E[relu'(u) relu'(v)],
        Theta^{l+1}        = Sigma^{l+1} + Sigmadot^{l+1} * Theta^l,

    with ``(u, v) ~ N(0, Sigma^l restricted to {x, x'})`` (see
    ``relu_expectations``). Equivalently
    ``Theta^{L+1} = sum_{l=1}^{L+1} Sigma^l prod_{k=l+1}^{L+1} Sigmadot^k``:
    layer ``l``'s weights and biases contribute their input kernel times the
    back-propagated derivative kernel.

    Args:
        x1: inputs, shape ``(n1, d)``.
        x2: inputs, shape ``(n2, d)``; ``None`` means ``x1``.
        depth: number of hidden layers ``L >= 0`` (``L = 0``: a linear model).
        sigma_w: weight scale (same in every layer, as in ``dlcourse.mlp``).
        sigma_b: bias scale.

    Returns:
        ``InfiniteWidthKernels(nngp, ntk)``, each of shape ``(n1, n2)``.

    References:
        Jacot, Gabriel & Hongler (2018), arXiv:1806.07572.
        Arora et al. (2019), arXiv:1904.11955.
        Lee et al. (2019), arXiv:1902.06720.
    """
    same = x2 is None  # K(X, X): take the variances from the matrix's own diagonal
    x2 = x1 if same else x2
    d = x1.shape[-1]
    sw2, sb2 = sigma_w**2, sigma_b**2
    k12 = sw2 * (x1 @ x2.T) / d + sb2  # (n1, n2)
    k11 = sw2 * jnp.sum(x1 * x1, axis=-1) / d + sb2  # (n1,)
    k22 = sw2 * jnp.sum(x2 * x2, axis=-1) / d + sb2  # (n2,)
    ntk = k12
    for _ in range(depth):
        if same:
            # bitwise-consistent diagonal: det = 0 and the angle is exactly 0 there
            k11 = k22 = jnp.diagonal(k12)
        e_phi, e_dphi = relu_expectations(k12, k11[:, None], k22[None, :])
        k12 = sw2 * e_phi + sb2
        ntk = k12 + sw2 * e_dphi * ntk
        # the diagonal: E[relu(u)^2] = k / 2
        k11 = sw2 * k11 / 2 + sb2
        k22 = sw2 * k22 / 2 + sb2
    return InfiniteWidthKernels(nngp=k12, ntk=ntk)


def relu_ntk(x1, x2=None, *, depth: int, sigma_w: float = 2.0**0.5, sigma_b: float = 0.0) -> jax.Array:
    """Infinite-width NTK ``Theta^{(L+1)}(x1, x2)``; see ``relu_kernels``."""
    return relu_kernels(x1, x2, depth=depth, sigma_w=sigma_w, sigma_b=sigma_b).ntk


def relu_nngp(x1, x2=None, *, depth: int, sigma_w: float = 2.0**0.5, sigma_b: float = 0.0) -> jax.Array:
    """Infinite-width NNGP kernel ``Sigma^{(L+1)}(x1, x2)``; see ``relu_kernels``."""
    return relu_kernels(x1, x2, depth=depth, sigma_w=sigma_w, sigma_b=sigma_b).nngp


# --------------------------------------------------------------------------
# Finite width: the empirical kernel of any scalar model
# --------------------------------------------------------------------------


def _batched(apply_fn: Callable, xs: jax.Array) -> Callable[[PyTree], jax.Array]:
    """``params -> (apply_fn(params, x) for x in xs)``, shape ``(n,)``."""
    return lambda params: jax.vmap(apply_fn, in_axes=(None, 0))(params, xs)


@jax.jit(static_argnames=("apply_fn",))
def ntk_vector_product(
    apply_fn: Callable[[PyTree, jax.Array], jax.Array],
    params: PyTree,
    x1: jax.Array,
    x2: jax.Array,
    v: jax.Array,
) -> jax.Array:
    """``Theta(x1, x2) @ v = J1 (J2^T v)`` without forming a Jacobian.

    ``J2^T v`` is one reverse-mode product (``vjp``, a parameter-shaped
    pytree) and ``J1 u`` one forward-mode product (``jvp``): the cost of about
    three forward passes over the batch and ``O(P)`` memory.

    Args:
        apply_fn: scalar model ``apply_fn(params, x) -> ()`` for one input.
        params: parameters ``theta``.
        x1: inputs, shape ``(n1, d)``.
        x2: inputs, shape ``(n2, d)``.
        v: vector, shape ``(n2,)``.

    Returns:
        ``Theta(x1, x2) v``, shape ``(n1,)``.
    """
    _, vjp2 = jax.vjp(_batched(apply_fn, x2), params)
    (u,) = vjp2(v)
    return jax.jvp(_batched(apply_fn, x1), (params,), (u,))[1]


@jax.jit(static_argnames=("apply_fn", "method"))
def empirical_ntk(
    apply_fn: Callable[[PyTree, jax.Array], jax.Array],
    params: PyTree,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    method: str = "jacobian",
) -> jax.Array:
    """Empirical NTK ``Theta(x, x') = <grad_theta f(x), grad_theta f(x')>`` of a scalar model.

    Two exact methods, for any model written for one example:

    * ``"jacobian"``: per-example gradients ``vmap(grad(apply_fn))`` (the rows
      of the Jacobian ``J``), contracted leaf by leaf: ``J1 J2^T``. Memory
      ``(n1 + n2) P`` floats; fastest when that fits.
    * ``"ntvp"``: column ``j`` is ``Theta e_j = J1 (J2^T e_j)``, one ``vjp``
      and one ``jvp`` (``ntk_vector_product``), columns in a ``lax.map``:
      memory ``O(P)``, never a Jacobian.

    Args:
        apply_fn: ``apply_fn(params, x) -> ()`` for one input ``x``.
        params: parameters ``theta`` (any pytree).
        x1: inputs, shape ``(n1, d)``.
        x2: inputs, shape ``(n2, d)``; ``None`` means ``x1``.
        method: ``"jacobian"`` or ``"ntvp"``.

    Returns:
        The kernel matrix, shape ``(n1, n2)``.

    References:
        Jacot, Gabriel & Hongler (2018), arXiv:1806.07572;
        Novak, Sohl-Dickstein & Schoenholz (2022), arXiv:2206.08720 (the
        cost of the methods).
    """
    same = x2 is None
    x2 = x1 if same else x2
    if method == "jacobian":
        per_example = jax.vmap(jax.grad(apply_fn), in_axes=(None, 0))
        j1 = per_example(params, x1)
        j2 = j1 if same else per_example(params, x2)

        def contract(a, b):
            return a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T

        return sum(jax.tree_util.tree_leaves(jax.tree_util.tree_map(contract, j1, j2)))
    if method == "ntvp":
        _, vjp2 = jax.vjp(_batched(apply_fn, x2), params)
        f1 = _batched(apply_fn, x1)

        def column(e):
            (u,) = vjp2(e)
            return jax.jvp(f1, (params,), (u,))[1]

        return jax.lax.map(column, jnp.eye(x2.shape[0], dtype=x1.dtype)).T
    raise ValueError(f"unknown method {method!r}")


# --------------------------------------------------------------------------
# Finite width, MLP structure: the layer-wise factorization
# --------------------------------------------------------------------------


def _mlp_layer_factors(params, x, *, sigma_w, sigma_b, parametrization, activation):
    """Inputs ``x^{l-1}`` and output sensitivities ``delta^l = df/dh^l`` of every layer, one example.

    ``delta^l`` is the gradient of the output with respect to an additive
    perturbation of the pre-activation ``h^l`` (one ``vjp``).
    """

    def forward(eps):
        h, inputs = x, []
        for i, ((w, b), e) in enumerate(zip(params, eps)):
            inputs.append(h)
            if parametrization == "ntk":
                h = sigma_w / jnp.sqrt(w.shape[1]) * (w @ h) + sigma_b * b + e
            else:
                h = w @ h + b + e
            if i < len(params) - 1:
                h = activation(h)
        return h[0], inputs

    eps = [jnp.zeros_like(b) for _, b in params]
    deltas, inputs = jax.grad(forward, has_aux=True)(eps)
    return inputs, deltas


@jax.jit(static_argnames=("parametrization", "activation"))
def empirical_ntk_mlp(
    params,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    sigma_w: float = 2.0**0.5,
    sigma_b: float = 0.0,
    parametrization: str = "ntk",
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
) -> jax.Array:
    """Empirical NTK of a ``dlcourse.mlp`` network with scalar output, layer by layer.

    For a dense layer ``h^l = c_w W^l x^{l-1} + c_b b^l`` the gradient of the
    output is an outer product, ``df/dW^l = c_w delta^l (x^{l-1})^T`` and
    ``df/db^l = c_b delta^l`` with ``delta^l = df/dh^l``, so

        Theta(x, x') = sum_l (delta^l . delta'^l) * (c_w^2 x^{l-1} . x'^{l-1} + c_b^2),

    with ``c_w = sigma_w / sqrt(fan_in)``, ``c_b = sigma_b`` (NTK
    parametrization) or ``c_w = c_b = 1`` (standard). One forward and one
    backward pass per example give all ``x^{l-1}`` and ``delta^l``; the
    kernel then costs ``O(n1 n2 sum_l n_l)``, against ``O(n1 n2 P)`` for
    contracting a Jacobian. Exactly equal to ``empirical_ntk`` on
    ``dlcourse.mlp.apply_mlp`` (a test checks it).

    Args:
        params: ``dlcourse.mlp`` parameters, last layer with one output.
        x1: inputs, shape ``(n1, d)``.
        x2: inputs, shape ``(n2, d)``; ``None`` means ``x1``.
        sigma_w, sigma_b, parametrization, activation: as in ``apply_mlp``.

    Returns:
        The kernel matrix, shape ``(n1, n2)``.

    References:
        Novak, Sohl-Dickstein & Schoenholz (2022), arXiv:2206.08720 (Sec. 3,
        structured derivatives).
    """
    if params[-1][0].shape[0] != 1:
        raise ValueError("empirical_ntk_mlp needs a scalar output (last layer with one row)")
    if parametrization not in ("standard", "ntk"):
        raise ValueError(f"unknown parametrization {parametrization!r}")
    factors = jax.vmap(
        lambda x: _mlp_layer_factors(
            params, x, sigma_w=sigma_w, sigma_b=sigma_b, parametrization=parametrization, activation=activation
        )
    )
    in1, de1 = factors(x1)
    in2, de2 = (in1, de1) if x2 is None else factors(x2)
    kernel = 0.0
    for (w, _), a1, a2, g1, g2 in zip(params, in1, in2, de1, de2):
        cw2, cb2 = (sigma_w**2 / w.shape[1], sigma_b**2) if parametrization == "ntk" else (1.0, 1.0)
        kernel = kernel + (g1 @ g2.T) * (cw2 * (a1 @ a2.T) + cb2)
    return kernel


# --------------------------------------------------------------------------
# What the infinitely wide trained network predicts
# --------------------------------------------------------------------------


@jax.jit
def kernel_regression(
    k_train: jax.Array, k_test_train: jax.Array, y: jax.Array, *, ridge: float = 0.0
) -> jax.Array:
    """Kernel (ridge) regression ``K(x*, X) (K(X, X) + ridge I)^{-1} y``.

    With ``ridge = 0`` and the NTK, this is the limit ``t -> inf`` of a
    gradient-flow-trained infinitely wide network started from the zero
    function (Jacot et al. 2018, Sec. 5; Lee et al. 2019, Eq. 16).

    Args:
        k_train: ``K(X, X)``, shape ``(n, n)``, symmetric positive definite.
        k_test_train: ``K(x*, X)``, shape ``(m, n)``.
        y: targets, shape ``(n,)``.
        ridge: ridge penalty ``lambda >= 0``.

    Returns:
        Predictions, shape ``(m,)``.
    """
    n = k_train.shape[0]
    return k_test_train @ jnp.linalg.solve(k_train + ridge * jnp.eye(n, dtype=k_train.dtype), y)


@jax.jit
def kernel_gd_coefficients(
    k_train: jax.Array,
    y: jax.Array,
    *,
    lr: float,
    steps: int | jax.Array,
) -> jax.Array:
    """Coefficients ``c_t = K^{-1} (I - (I - lr K/n)^t) y`` of the linearized model after ``t`` steps.

    The linearized network ``f^lin_theta = f_0 + J (theta - theta_0)``, started
    from ``f_0 = 0`` and trained by gradient descent on
    ``L = 1/(2n) ||f(X) - y||^2`` with step ``lr``, has training residual
    ``r_t = (I - lr K/n)^t r_0`` with ``K = J J^T``; summing the steps
    ``theta_{s+1} - theta_s = -lr/n J^T r_s`` gives

        theta_t - theta_0 = J^T c_t,     f_t(x) = K(x, X) c_t,
        ||theta_t - theta_0||^2 = c_t^T K c_t

    (Lee et al. 2019, Sec. 2.2, in discrete time). ``t -> inf`` gives
    ``c = K^{-1} y`` (if ``lr < 2n / lam_max``). The matrix function is applied
    in the eigenbasis of ``K``, with
    ``(1 - (1 - a)^t) / lam = -expm1(t log1p(-a)) / lam`` for ``a = lr lam / n < 1``,
    accurate for tiny eigenvalues ``lam``.

    Args:
        k_train: ``K(X, X)``, shape ``(n, n)``, symmetric positive definite.
        y: targets, shape ``(n,)``.
        lr: learning rate ``eta``.
        steps: number of steps ``t``.

    Returns:
        ``c_t``, shape ``(n,)``.
    """
    n = k_train.shape[0]
    lam, u = jnp.linalg.eigh(k_train)
    lam = jnp.maximum(lam, jnp.finfo(lam.dtype).tiny)
    a = lr * lam / n
    # 1 - (1 - a)^t: by expm1/log1p where 1 - a > 0, directly where it is not
    decay = jnp.where(a < 1, -jnp.expm1(steps * jnp.log1p(-jnp.where(a < 1, a, 0.0))), 1 - (1 - a) ** steps)
    return u @ (decay / lam * (u.T @ y))


@jax.jit
def kernel_gd_predictions(
    k_train: jax.Array,
    k_test_train: jax.Array,
    y: jax.Array,
    *,
    lr: float,
    steps: int | jax.Array,
) -> jax.Array:
    """Predictions ``f_t(x*) = K(x*, X) K^{-1} (I - (I - lr K/n)^t) y`` of the linearized model.

    What a network in the kernel regime predicts after ``t`` steps of gradient
    descent on ``L = 1/(2n) ||f(X) - y||^2`` from ``f_0 = 0`` (Lee et al. 2019,
    Eqs. 9-11, discrete time); see ``kernel_gd_coefficients``. As ``t -> inf``
    this is ``kernel_regression`` with ``ridge = 0``.

    Args:
        k_train: ``K(X, X)``, shape ``(n, n)``.
        k_test_train: ``K(x*, X)``, shape ``(m, n)``.
        y: targets, shape ``(n,)``.
        lr: learning rate ``eta``.
        steps: number of steps ``t``.

    Returns:
        Predictions ``f_t(x*)``, shape ``(m,)``.
    """
    return k_test_train @ kernel_gd_coefficients(k_train, y, lr=lr, steps=steps)
