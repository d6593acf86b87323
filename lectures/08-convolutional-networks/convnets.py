"""Week 8: convolutional networks, as experiments in JAX.

Images are arrays ``x[i, j, c]`` of shape ``(H, W, C)`` (height, width, channels);
kernels are ``w[a, b, c, o]`` of shape ``(k, k, C, O)``. Deep-learning
"convolution" is a cross-correlation,

    (w * x)[i, j, o] = sum_{a, b, c} w[a, b, c, o] x[i + a, j + b, c],

computed here three ways: by explicit shifted products (``conv2d_direct``),
with XLA (``conv2d_lax``, i.e. ``jax.lax.conv_general_dilated``) and, in one
dimension, as a matrix (``circulant``).

References:
    Fukushima (1980), Neocognitron, doi:10.1007/BF00344251.
    LeCun, Bottou, Bengio & Haffner (1998), Gradient-based learning applied to
        document recognition, doi:10.1109/5.726791.
    Dumoulin & Visin (2016), A guide to convolution arithmetic for deep
        learning, arXiv:1603.07285.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.patches import Rectangle

from dlcourse import metrics, ntk, plotting, train
from dlcourse import data as course_data
from dlcourse.data import normal
from dlcourse.train import QUICK_COMPILE

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
"""Layouts for ``lax.conv_general_dilated``: images (N, H, W, C), kernels (k, k, C, O)."""

EPS32 = float(np.finfo(np.float32).eps) / 2
"""The unit round-off u = 2^-24 of float32."""

# Random arrays are drawn with the course's flat sampler (dlcourse.data.normal: the same numbers as
# jax.random.normal, faster to compile); one-off programs skip XLA's optimization passes
# (dlcourse.train.QUICK_COMPILE), the training loop keeps them.
normal_now = jax.jit(normal, static_argnums=1, compiler_options=QUICK_COMPILE)
"""``normal`` outside a jitted program: compiled once per shape, quickly."""


# ---------------------------------------------------------------- convolution

def pad(x, h, *, mode):
    """Pad an image ``(H, W, C)`` by ``h`` pixels on each side of both spatial axes.

    Args:
        x: image of shape ``(H, W, C)``.
        h: number of pixels added on each side.
        mode: ``"zero"`` (the image is zero outside) or ``"circular"`` (the image
            is periodic: the plane is a torus).

    Returns:
        The padded image, shape ``(H + 2h, W + 2h, C)``.
    """
    np_mode = {"zero": "constant", "circular": "wrap"}[mode]
    return jnp.pad(x, ((h, h), (h, h), (0, 0)), mode=np_mode)


def conv2d_direct(x, w, *, stride=1):
    """Valid cross-correlation as a sum of k*k shifted, channel-mixed copies.

    ``y[i, j, o] = sum_{a, b < k} sum_c w[a, b, c, o] x[s i + a, s j + b, c]``
    for ``0 <= i < (H - k) // s + 1`` (and likewise ``j``): every output pixel is
    the same linear map of the k x k patch under it (weight sharing).

    Args:
        x: image, shape ``(H, W, C)``; pad it first for "same" outputs.
        w: kernel, shape ``(k, k, C, O)``.
        stride: step ``s`` between neighbouring output pixels.

    Returns:
        The output, shape ``((H - k) // s + 1, (W - k) // s + 1, O)``.
    """
    k = w.shape[0]
    out_h = (x.shape[0] - k) // stride + 1
    out_w = (x.shape[1] - k) // stride + 1
    y = jnp.zeros((out_h, out_w, w.shape[3]), x.dtype)
    for a in range(k):
        for b in range(k):
            patch = x[a:a + stride * (out_h - 1) + 1:stride,
                      b:b + stride * (out_w - 1) + 1:stride]  # (out_h, out_w, C)
            y = y + patch @ w[a, b]  # mix channels: (C,) @ (C, O)
    return y


def conv2d_lax(x, w, *, stride=1, dilation=1):
    """The same valid cross-correlation by ``jax.lax.conv_general_dilated``.

    Args:
        x: image, shape ``(H, W, C)``.
        w: kernel, shape ``(k, k, C, O)``.
        stride: step between output pixels.
        dilation: spacing between kernel taps (``rhs_dilation``).

    Returns:
        The output, shape ``(H', W', O)``.
    """
    y = jax.lax.conv_general_dilated(
        x[None], w, window_strides=(stride, stride), padding="VALID",
        rhs_dilation=(dilation, dilation), dimension_numbers=DIMENSIONS)
    return y[0]


def conv2d_flipped(x, w, *, stride=1):
    """A *convolution* in the mathematicians' sense: the kernel flipped in both axes.

    ``(w \\star x)[i, j] = sum_{a, b} w[k-1-a, k-1-b] x[i + a, j + b]``. It equals
    the cross-correlation only for symmetric kernels; used as a negative control.
    """
    return conv2d_direct(x, w[::-1, ::-1], stride=stride)


class ConvCheckResult(NamedTuple):
    """``conv2d_direct`` against ``lax``: errors relative to the rounding bound."""

    kernel_sizes: np.ndarray  # (n_k,)
    channels: int
    terms: np.ndarray  # (n_k,) number of terms n = k*k*C per output
    max_error: np.ndarray  # (n_k,) max |direct - lax| / sum |w x|
    flipped_error: np.ndarray  # (n_k,) same for the flipped kernel (negative control)
    bound: np.ndarray  # (n_k,) 2 n u: worst-case float32 rounding of two sums of n terms


def _conv_errors(key, k, size, channels, out_channels):
    """Max of ``|direct - lax| / sum|w x|`` for a random kernel and for its flip.

    Run eagerly, op by op: each small op is compiled once per shape and cached,
    far faster than compiling the unrolled sums of ``k * k`` terms as one program.
    """
    x_key, w_key = jax.random.split(key)
    x = normal_now(x_key, (size, size, channels))
    w = normal_now(w_key, (k, k, channels, out_channels)) / np.sqrt(k * k * channels)
    scale = conv2d_lax(jnp.abs(x), jnp.abs(w))  # sum |w x| per output
    ref = conv2d_lax(x, w)
    return (jnp.max(jnp.abs(conv2d_direct(x, w) - ref) / scale),
            jnp.max(jnp.abs(conv2d_flipped(x, w) - ref) / scale))


def run_conv_check(kernel_sizes=(3, 5, 7), size=16, channels=8, out_channels=8, *, key):
    """Compare the explicit sum with XLA's convolution on random images.

    The error of a float32 sum of ``n = k*k*C`` products is at most
    ``gamma_n sum |w x|`` with ``gamma_n = n u / (1 - n u)`` (Higham 2002, sec. 3.1),
    so two such sums differ by at most about ``2 n u sum |w x|``.

    Args:
        kernel_sizes: kernel sizes ``k``.
        size: image height and width.
        channels, out_channels: ``C`` and ``O``.
        key: randomness for images and kernels.

    Returns:
        A ``ConvCheckResult``.
    """
    keys = jax.random.split(key, len(kernel_sizes))
    errs, flipped, terms = [], [], []
    for k, sub in zip(kernel_sizes, keys):
        err, flip = _conv_errors(sub, k, size, channels, out_channels)
        errs.append(float(err))
        flipped.append(float(flip))
        terms.append(k * k * channels)
    terms = np.array(terms)
    return ConvCheckResult(np.array(kernel_sizes), channels, terms, np.array(errs),
                           np.array(flipped), 2 * terms * EPS32)


# ---------------------------------------------------------------- equivariance

def shift(x, s):
    """Circular translation ``(T_s x)[i, j] = x[i - s_0, j - s_1]`` (indices mod H, W)."""
    return jnp.roll(x, s, axis=(0, 1))


def conv_same(x, w, *, mode):
    """A "same"-size layer: pad by the half-width ``h = (k - 1) // 2``, then cross-correlate."""
    return conv2d_lax(pad(x, (w.shape[0] - 1) // 2, mode=mode), w)


def locally_connected(x, w):
    """A layer with *untied* weights, one k x k x C x O kernel per output pixel.

    ``y[i, j, o] = sum_{a, b, c} w[i, j, a, b, c, o] x_pad[i + a, j + b, c]`` with
    circular padding: the same receptive fields as ``conv_same``, no weight
    sharing, hence no equivariance (a negative control).

    Args:
        x: image ``(H, W, C)``.
        w: kernels ``(H, W, k, k, C, O)``.
    """
    k = w.shape[2]
    xp = pad(x, (k - 1) // 2, mode="circular")
    h, wd = x.shape[:2]
    patches = jnp.stack([jnp.stack([xp[a:a + h, b:b + wd] for b in range(k)], axis=2)
                         for a in range(k)], axis=2)  # (H, W, k, k, C)
    return jnp.einsum("ijabc,ijabco->ijo", patches, w)


def off_by_one(x, w, *, mode):
    """A "same" layer with an off-by-one bug in its padding (negative control).

    The padded image is moved up by one row and its last row is replaced by
    zeros, as if the wrap-around had copied one row too few. Every output row
    is the correct layer read one row lower, except the last, which sees a row
    of zeros: the layer commutes with no vertical circular shift.
    """
    h = (w.shape[0] - 1) // 2
    xp = pad(x, h, mode=mode)
    xp = jnp.concatenate([xp, jnp.zeros_like(xp[:1])], axis=0)[1:]  # rows moved up by one,
    return conv2d_lax(xp, w)  # the last row now sees zeros


def equivariance_error_map(layer, x, s):
    """Pixel-wise ``max_o |layer(T_s x) - T_s layer(x)|`` (shape ``(H, W)``)."""
    return jnp.max(jnp.abs(layer(shift(x, s)) - shift(layer(x), s)), axis=-1)


def predicted_band(size, k, s):
    """Rows where zero padding breaks equivariance under a circular shift by ``s``.

    On the torus the zero-padded layer equals the circular one except within
    ``h = (k - 1) // 2`` rows of the *seam* (between rows ``size - 1`` and ``0``),
    where it reads zeros instead of the wrapped-around image. Shifting the input
    by ``s`` moves the seam to between rows ``s - 1`` and ``s``. The error
    ``|layer(T_s x) - T_s layer(x)|`` is therefore nonzero exactly within ``h``
    rows of either seam: ``s + 2h`` rows when ``s <= 2h``, two bands of ``2h``
    rows (``4h`` in all) when ``s > 2h``.

    Returns:
        Boolean mask of shape ``(size,)``: True where the error is nonzero.
    """
    h = (k - 1) // 2
    i = np.arange(size)

    def near(seam):  # rows seam - h, ..., seam + h - 1 (mod size)
        return ((i - seam) % size < h) | ((seam - 1 - i) % size < h)

    return near(0) | near(s % size)


def band_width(k, s):
    """Number of rows in ``predicted_band``: ``min(s, 2h) + 2h`` (for ``s + 2h <= size``)."""
    h = (k - 1) // 2
    return min(s, 2 * h) + 2 * h


class EquivarianceResult(NamedTuple):
    """Equivariance errors of conv layers under circular shifts."""

    size: int
    kernel_sizes: np.ndarray  # (n_k,)
    shifts: np.ndarray  # (n_s,) vertical shifts for the band widths
    map_k: int  # kernel size of the error maps
    map_shift: tuple  # (s_0, s_1) of the error maps
    map_circular: np.ndarray  # (H, W) error map / scale, circular padding
    map_zero: np.ndarray  # (H, W) error map / scale, zero padding
    map_local: np.ndarray  # (H, W) error map / scale, locally connected layer (control)
    circular_error: float  # max error / scale, circular padding, all k and shifts
    band_measured: np.ndarray  # (n_k, n_s) rows with error > threshold, zero padding
    band_predicted: np.ndarray  # (n_k, n_s) min(s, 2h) + 2h
    mask_mismatch: int  # rows where measured and predicted masks disagree (all k, s)
    local_error: float  # max error / scale of the locally connected layer
    off_by_one_error: float  # max error / scale of the off-by-one layer (circular)
    threshold: float  # relative error above which a row counts as broken


def _controls(x, w, w_local, s):
    """Error maps of the two non-equivariant layers, and the scale of the untied one."""
    return (equivariance_error_map(lambda z: locally_connected(z, w_local), x, s),
            jnp.max(jnp.abs(locally_connected(x, w_local))),
            equivariance_error_map(lambda z: off_by_one(z, w, mode="circular"), x, s))


def run_equivariance(kernel_sizes=(3, 5, 7), shifts=(1, 2, 3, 4, 5, 6), size=28, channels=3,
                     out_channels=4, map_shift=(6, 2), threshold=1e-4, *, key):
    """Error maps of conv layers under circular translations of a random image.

    For each kernel size ``k`` and vertical shift ``s`` the rows where
    ``max_j |conv_zero(T_s x) - T_s conv_zero(x)|`` exceeds ``threshold * scale``
    (``scale = max |conv_zero(x)|``) are compared with ``predicted_band``. In
    float32 the rows that agree in exact arithmetic differ by ~1e-7 of the scale
    (the same sums in a different order, or none); the others by O(1).

    Args:
        kernel_sizes: odd kernel sizes ``k``.
        shifts: shifts ``s`` along axis 0.
        size: image height and width.
        channels, out_channels: ``C`` and ``O``.
        map_shift: the 2-D shift of the error maps (drawn with the last ``k``).
        threshold: relative error that counts as "nonzero".
        key: randomness for the image and the kernels.

    Returns:
        An ``EquivarianceResult``.
    """
    x_key, w_key, l_key = jax.random.split(key, 3)
    x = normal_now(x_key, (size, size, channels))
    w_keys = jax.random.split(w_key, len(kernel_sizes))
    # the vertical shifts (s, 0), then the 2-D shift of the maps
    all_shifts = jnp.array([[s, 0] for s in shifts] + [list(map_shift)])

    @partial(jax.jit, static_argnums=1, compiler_options=QUICK_COMPILE)
    def maps(w_key, k):  # one compile per kernel size, all shifts at once
        w = normal(w_key, (k, k, channels, out_channels)) / np.sqrt(k * k * channels)
        scale = jnp.max(jnp.abs(conv_same(x, w, mode="zero")))

        def both(s):
            return (equivariance_error_map(lambda z: conv_same(z, w, mode="zero"), x, s),
                    equivariance_error_map(lambda z: conv_same(z, w, mode="circular"), x, s))

        return (w, scale) + jax.vmap(both)(all_shifts)

    circ, bands, pred, mismatch = 0.0, [], [], 0
    for k, wk in zip(kernel_sizes, w_keys):
        w, scale, err_zero, err_circ = maps(wk, k)
        scale, err_zero, err_circ = float(scale), np.asarray(err_zero), np.asarray(err_circ)
        circ = max(circ, float(np.max(err_circ[:-1])) / scale)
        row_b, row_p = [], []
        for i, s in enumerate(shifts):
            rows = np.max(err_zero[i], axis=1) > threshold * scale
            mismatch += int(np.sum(rows != predicted_band(size, k, s)))
            row_b.append(int(rows.sum()))
            row_p.append(band_width(k, s))
        bands.append(row_b)
        pred.append(row_p)
    map_zero, map_circ = err_zero[-1], err_circ[-1]  # the last kernel size
    w_local = normal_now(l_key, (size, size, k, k, channels, out_channels)) / np.sqrt(
        k * k * channels)
    controls = jax.jit(_controls, static_argnums=3, compiler_options=QUICK_COMPILE)
    map_local, local_scale, obo = (np.asarray(a) for a in controls(x, w, w_local, map_shift))
    local_scale = float(local_scale)
    return EquivarianceResult(
        size, np.array(kernel_sizes), np.array(shifts), k, tuple(map_shift),
        map_circ / scale, map_zero / scale, map_local / local_scale, circ, np.array(bands),
        np.array(pred), mismatch, float(np.max(map_local)) / local_scale,
        float(np.max(obo)) / scale, threshold)


# ---------------------------------------------------------------- circulant matrices

def circulant(w, n):
    """The n x n matrix of the 1-D circular cross-correlation with kernel ``w``.

    ``(C_w x)_i = sum_{a=0}^{k-1} w_a x_{(i + a - h) mod n}`` with ``h = (k - 1) // 2``,
    built column by column by applying the layer to the basis vectors: a dense
    layer whose n^2 entries are tied to k numbers, ``C[i, j] = c_{(j - i) mod n}``.
    """
    h = (len(w) - 1) // 2
    basis = jnp.eye(n)

    def layer(x):
        xp = jnp.concatenate([x[n - h:], x, x[:h]]) if h else x
        return sum(w[a] * xp[a:a + n] for a in range(len(w)))

    return jax.vmap(layer, in_axes=1, out_axes=1)(basis)


def fourier_eigenvalues(w, n):
    """Eigenvalues of ``circulant(w, n)`` on the Fourier modes ``e_m[j] = exp(2 pi i m j / n)``.

    ``C e_m = lambda_m e_m`` with ``lambda_m = sum_a w_a exp(2 pi i m (a - h) / n)``:
    the discrete Fourier transform of the (re-centred, reflected) kernel.
    """
    h = (len(w) - 1) // 2
    a = np.arange(len(w)) - h
    m = np.arange(n)[:, None]
    return np.exp(2j * np.pi * m * a[None, :] / n) @ np.asarray(w, dtype=np.complex128)


def commutant_dimension(n, *, tol=1e-8):
    """Dimension of the space of n x n matrices A with ``A P = P A`` (P the cyclic shift).

    Solved as the null space of the linear map ``A -> A P - P A`` on R^(n x n)
    (an n^2 x n^2 matrix), by counting singular values below ``tol``: every
    shift-equivariant linear layer is a circulant, a space of dimension n.
    """
    p = np.roll(np.eye(n), 1, axis=0)
    op = np.kron(np.eye(n), p) - np.kron(p.T, np.eye(n))  # vec(P A - A P), column-major
    sv = np.linalg.svd(op, compute_uv=False)
    return int(np.sum(sv < tol)), sv


class CirculantResult(NamedTuple):
    """A 1-D circular layer as a matrix, and the commutant of the cyclic shift."""

    n: int
    kernel: np.ndarray  # (k,)
    matrix: np.ndarray  # (n, n)
    eig_measured: np.ndarray  # (n,) eigenvalues from C e_m / e_m
    eig_predicted: np.ndarray  # (n,) DFT of the kernel
    eig_error: float  # max |measured - predicted| / max |predicted|
    commutant_dim: int
    singular_values: np.ndarray  # (n^2,) of A -> PA - AP


def run_circulant(n=16, k=3, *, key):
    """Build the circulant of a random 1-D kernel; check its Fourier eigenvalues and the commutant.

    Args:
        n: signal length.
        k: kernel size.
        key: randomness for the kernel.

    Returns:
        A ``CirculantResult``.
    """
    w = jax.random.normal(key, (k,))
    c = np.asarray(circulant(w, n), dtype=np.complex128)
    modes = np.exp(2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n)  # column m = e_m
    measured = np.einsum("ij,jm->im", c, modes)[0] / modes[0]  # (C e_m)_0 / (e_m)_0
    predicted = fourier_eigenvalues(w, n)
    resid = np.max(np.abs(c @ modes - modes * predicted[None, :]))
    err = max(float(np.max(np.abs(measured - predicted))), float(resid)) / np.max(np.abs(predicted))
    dim, sv = commutant_dimension(n)
    return CirculantResult(n, np.asarray(w), c.real, measured, predicted, err, dim, sv)


# ---------------------------------------------------------------- the tangent kernel of a conv layer

def patches_1d(x, k):
    """Circular patches ``z_p(x) = (x_{p-h}, ..., x_{p+h})`` of a signal ``(n,)``: shape ``(n, k)``."""
    n = x.shape[0]
    h = (k - 1) // 2
    idx = (jnp.arange(n)[:, None] + jnp.arange(k)[None, :] - h) % n
    return x[idx]


def init_two_layer(width, fan_in, *, key):
    """Standard normal weights ``u (width, fan_in)``, ``v (width,)`` (NTK parametrization)."""
    u_key, v_key = jax.random.split(key)
    return {"u": normal(u_key, (width, fan_in)),
            "v": jax.random.normal(v_key, (width,))}


def conv_gap(params, x, *, sigma_w=np.sqrt(2.0)):
    """Circular conv layer, ReLU, global average pooling, linear read-out; ONE signal ``(n,)``.

    ``f(x) = sigma_w / sqrt(C) sum_c v_c (1/n) sum_p relu(sigma_w u_c . z_p(x) / sqrt(k))``
    in NTK parametrization: the two-layer network ``g`` of week 5 applied to every
    patch ``z_p(x)`` with the same weights, and averaged over positions.
    """
    width, k = params["u"].shape
    z = patches_1d(x, k)  # (n, k)
    hidden = jax.nn.relu(sigma_w * z @ params["u"].T / np.sqrt(k))  # (n, C)
    return sigma_w * jnp.mean(hidden, axis=0) @ params["v"] / np.sqrt(width)


def dense_two_layer(params, x, *, sigma_w=np.sqrt(2.0)):
    """The same two-layer network on the whole signal (one patch of size ``n``): an MLP."""
    width, d = params["u"].shape
    hidden = jax.nn.relu(sigma_w * params["u"] @ x / np.sqrt(d))
    return sigma_w * hidden @ params["v"] / np.sqrt(width)


def conv_gap_ntk(x1, x2, k):
    """Infinite-width NTK of ``conv_gap``: the week-5 ReLU kernel averaged over pairs of patches.

    ``Theta_conv(x, x') = (1/n^2) sum_{p, q} Theta_relu(z_p(x), z_q(x'))``, with
    ``Theta_relu = dlcourse.ntk.relu_ntk(depth=1)`` (Arora et al. 2019, CNTK with
    global average pooling). Shifting ``x`` or ``x'`` permutes the patches, so the
    kernel is invariant to circular shifts of *either* argument.

    Args:
        x1, x2: signals, shapes ``(n1, n)`` and ``(n2, n)``.
        k: kernel size.

    Returns:
        The kernel matrix ``(n1, n2)``.
    """
    n = x1.shape[1]
    z1 = jax.vmap(patches_1d, in_axes=(0, None))(x1, k).reshape(-1, k)
    z2 = jax.vmap(patches_1d, in_axes=(0, None))(x2, k).reshape(-1, k)
    theta = ntk.relu_ntk(z1, z2, depth=1)  # (n1 n, n2 n)
    return theta.reshape(x1.shape[0], n, x2.shape[0], n).mean(axis=(1, 3))


def conv_diagonal_ntk(x1, x2, k):
    """A WRONG kernel for ``conv_gap`` (negative control): only matching positions ``p = q``.

    ``(1/n) sum_p Theta_relu(z_p(x), z_p(x'))`` is the kernel of the conv layer
    *without* pooling (a flattened read-out with one weight per position), not
    of the pooled network.
    """
    n = x1.shape[1]
    z1 = jax.vmap(patches_1d, in_axes=(0, None))(x1, k)  # (n1, n, k)
    z2 = jax.vmap(patches_1d, in_axes=(0, None))(x2, k)
    per_pos = jax.vmap(lambda a, b: ntk.relu_ntk(a, b, depth=1), in_axes=(1, 1))(z1, z2)
    return jnp.mean(per_pos, axis=0)  # (n1, n2)


def channel_ntk_terms(model, params, xs):
    """Per-channel terms ``theta_c(x_i, x_j)`` with ``Theta = (1/C) sum_c theta_c``.

    The gradient of a two-layer network splits into channels ``c`` (the
    parameters ``u_c``, ``v_c``); at initialization the ``theta_c`` are i.i.d.,
    so their spread gives the Monte Carlo standard error of the empirical kernel.

    Returns:
        Array ``(C, N, N)`` for inputs ``xs`` of shape ``(N, n)``.
    """
    jac = jax.vmap(jax.grad(model), in_axes=(None, 0))(params, xs)  # u: (N, C, k), v: (N, C)
    width = params["v"].shape[0]
    return width * (jnp.einsum("ic,jc->cij", jac["v"], jac["v"])
                    + jnp.einsum("ica,jca->cij", jac["u"], jac["u"]))


class ConvKernelResult(NamedTuple):
    """Empirical NTKs of a wide conv-GAP layer and of an MLP against their limits."""

    width: int
    n: int  # signal length
    k: int  # kernel size
    shifts: np.ndarray  # (n,) s: the second input is T_s x1
    conv_emp: np.ndarray  # (n,) Theta_conv(x0, T_s x1), empirical
    conv_sem: np.ndarray  # (n,) its Monte Carlo standard error
    conv_theory: np.ndarray  # (n,) conv_gap_ntk
    mlp_emp: np.ndarray  # (n,) Theta_mlp(x0, T_s x1), empirical
    mlp_sem: np.ndarray
    mlp_theory: np.ndarray  # (n,) relu_ntk on the whole signal
    max_z: float  # max |emp - theory| / sem over all pairs of inputs, conv
    max_z_diagonal: float  # same against the wrong, position-matched kernel (control)
    invariance_error: float  # max_s |Theta(x0, T_s x1) - Theta(x0, x1)| / |Theta(x0, x1)|, conv
    mlp_variation: float  # same for the MLP's infinite-width kernel (control)


def run_conv_kernel(width=4096, n=16, k=3, *, key):
    """Empirical NTK of a wide circular conv layer with pooling vs ``conv_gap_ntk``.

    Inputs: a random signal ``x0`` and the ``n`` circular shifts ``T_s x1`` of a
    second one. Both networks are initialized once at width ``C``; their
    empirical kernels are the mean of ``C`` i.i.d. channel terms, so each entry
    is compared with the infinite-width formula in units of its standard error.

    Args:
        width: channels ``C`` of the conv layer (hidden units of the MLP).
        n: signal length.
        k: kernel size.
        key: randomness for the signals and the two initializations.

    Returns:
        A ``ConvKernelResult``.
    """
    @partial(jax.jit, compiler_options=QUICK_COMPILE)
    def kernels(key):  # every kernel of the experiment, as one program
        x_key, conv_key, mlp_key = jax.random.split(key, 3)
        x0, x1 = normal(x_key, (2, n))
        xs = jnp.concatenate([x0[None], jnp.stack([jnp.roll(x1, s) for s in range(n)])])
        return (channel_ntk_terms(conv_gap, init_two_layer(width, k, key=conv_key), xs),
                channel_ntk_terms(dense_two_layer, init_two_layer(width, n, key=mlp_key), xs),
                conv_gap_ntk(xs, xs, k), conv_diagonal_ntk(xs, xs, k),
                ntk.relu_ntk(xs, xs[:1], depth=1))

    conv_terms, mlp_terms, theory, wrong, mlp_theory = (
        np.asarray(a, dtype=np.float64) for a in kernels(key))
    conv_emp, conv_sem = metrics.mean_and_sem(conv_terms)
    mlp_emp, mlp_sem = metrics.mean_and_sem(mlp_terms)
    mlp_theory = mlp_theory[1:, 0]
    row = conv_emp[0, 1:]
    return ConvKernelResult(
        width, n, k, np.arange(n), row, conv_sem[0, 1:], theory[0, 1:],
        mlp_emp[0, 1:], mlp_sem[0, 1:], mlp_theory,
        float(np.max(np.abs(conv_emp - theory) / conv_sem)),
        float(np.max(np.abs(conv_emp - wrong) / conv_sem)),
        float(np.max(np.abs(row - row[0])) / abs(row[0])),
        float(np.max(np.abs(mlp_theory - mlp_theory[0])) / abs(mlp_theory[0])))


# ---------------------------------------------------------------- pooling

def max_pool(x, p):
    """Non-overlapping p x p max pooling of ``(H, W, C)`` (H, W multiples of p)."""
    h, w, c = x.shape
    return jnp.max(x.reshape(h // p, p, w // p, p, c), axis=(1, 3))


def avg_pool_global(x):
    """Global average pooling: the mean over all positions, shape ``(C,)``."""
    return jnp.mean(x, axis=(0, 1))


def pooling_unchanged_fraction(p):
    """Predicted fraction of p x p max-pool outputs unchanged by a one-pixel shift.

    For i.i.d. continuous pixels, a window and its one-pixel-shifted copy cover
    ``p(p + 1)`` pixels and share ``p(p - 1)``; their maxima coincide iff the
    largest of the ``p(p + 1)`` lies in the shared part, which by exchangeability
    has probability ``(p - 1) / (p + 1)``.
    """
    return (p - 1) / (p + 1)


class PoolingResult(NamedTuple):
    """Fraction of max-pool outputs unchanged under a one-pixel circular shift."""

    pool_sizes: np.ndarray  # (n_p,)
    fraction: np.ndarray  # (n_p,) mean over images
    sem: np.ndarray  # (n_p,) standard error over images
    predicted: np.ndarray  # (n_p,) (p - 1) / (p + 1)
    aligned: np.ndarray  # (n_p,) fraction unchanged under a shift by p (the stride)
    gap_circular: float  # max relative change of global average pooling, circular padding
    gap_zero: float  # same with zero padding
    border_fraction: float  # fraction of positions within h of the border (heuristic scale)


def run_pooling(pool_sizes=(2, 3, 4, 6), size=24, n_images=256, channels=4, *, key):
    """Measure the invariance of max pooling and of global average pooling to shifts.

    Max pooling: the fraction of ``p x p`` pooled outputs of i.i.d. Gaussian
    images unchanged by a one-pixel circular shift (prediction
    ``(p - 1) / (p + 1)``), and by a shift of ``p`` pixels (all unchanged, the
    pooled map is itself shifted by one cell and we compare after undoing it).
    Global average pooling after a ReLU conv layer: exactly invariant with
    circular padding, approximately with zero padding.

    Args:
        pool_sizes: pooling sizes ``p`` (divisors of ``size``).
        size: image height and width.
        n_images: number of i.i.d. Gaussian images.
        channels: channels per image.
        key: randomness for images and a conv kernel.

    Returns:
        A ``PoolingResult``.
    """
    def unchanged(x, p):  # (one-pixel shift, shift by p) for one image
        pooled = max_pool(x, p)
        return (jnp.mean(max_pool(shift(x, (0, 1)), p) == pooled),
                jnp.mean(shift(pooled, (0, 1)) == max_pool(shift(x, (0, p)), p)))

    def gap_change(x, w3, mode):
        out = avg_pool_global(jax.nn.relu(conv_same(x, w3, mode=mode)))
        out_s = avg_pool_global(jax.nn.relu(conv_same(shift(x, (2, 1)), w3, mode=mode)))
        return jnp.max(jnp.abs(out_s - out)) / jnp.max(jnp.abs(out))

    @partial(jax.jit, compiler_options=QUICK_COMPILE)
    def measure(key):  # the whole experiment as one program
        x_key, w_key = jax.random.split(key)
        xs = normal(x_key, (n_images, size, size, channels))
        w3 = normal(w_key, (3, 3, channels, channels)) / np.sqrt(9 * channels)
        return ([jax.vmap(partial(unchanged, p=p))(xs) for p in pool_sizes],
                gap_change(xs[0], w3, "circular"), gap_change(xs[0], w3, "zero"))

    fractions, gap_circular, gap_zero = measure(key)
    fr, se = np.array([metrics.mean_and_sem(np.asarray(one)) for one, _ in fractions]).T
    aligned = np.array([np.mean(np.asarray(by_p)) for _, by_p in fractions])
    return PoolingResult(np.array(pool_sizes), fr, se,
                         np.array([pooling_unchanged_fraction(p) for p in pool_sizes]),
                         aligned, float(gap_circular), float(gap_zero),
                         1 - (size - 2) ** 2 / size**2)


# ---------------------------------------------------------------- receptive fields

def receptive_field(kernel_sizes, strides, dilations=None):
    """Receptive-field size ``r_L = 1 + sum_l (k_l^eff - 1) prod_{i<l} s_i``.

    A kernel of size ``k`` with dilation ``d`` spans ``k^eff = d (k - 1) + 1`` inputs.

    Args:
        kernel_sizes, strides, dilations: per-layer ``k_l``, ``s_l``, ``d_l``.

    Returns:
        ``r_L``, the side of the input square that one output unit depends on.

    References:
        Dumoulin & Visin (2016), arXiv:1603.07285.
    """
    dilations = dilations or [1] * len(kernel_sizes)
    r, jump = 1, 1
    for k, s, d in zip(kernel_sizes, strides, dilations):
        r += (d * (k - 1)) * jump
        jump *= s
    return r


def init_stack(kernel_sizes, channels, *, key):
    """Gaussian kernels ``(k, k, C, C)`` (first layer ``(k, k, 1, C)``), variance 1 / fan-in."""
    keys = jax.random.split(key, len(kernel_sizes))
    return [normal_now(kk, (k, k, 1 if i == 0 else channels, channels))
            / np.sqrt(k * k * (1 if i == 0 else channels))
            for i, (k, kk) in enumerate(zip(kernel_sizes, keys))]


def apply_stack(params, x, strides, dilations):
    """A stack of valid conv layers with tanh between them; returns channel 0 of the output."""
    h = x
    for i, (w, s, d) in enumerate(zip(params, strides, dilations)):
        h = conv2d_lax(h, w, stride=s, dilation=d)
        if i < len(params) - 1:
            h = jnp.tanh(h)
    return h[..., 0]


def measured_receptive_field(params, strides, dilations, size):
    """Extent of the support of ``grad_x y[0, 0]`` along each axis (``jax.grad``).

    The output unit ``y[0, 0]`` of a valid stack sees the top-left corner of the
    input; the extent is ``max - min + 1`` of the rows (columns) where the
    gradient is nonzero. Holes (a stride larger than a kernel) do not change it.
    """
    def unit(params, x):
        return apply_stack(params, x, strides, dilations)[0, 0]

    x = np.full((size, size, 1), 0.1, dtype=np.float32)
    grad = jax.jit(jax.grad(unit, argnums=1), compiler_options=QUICK_COMPILE)  # run once
    g = np.abs(np.asarray(grad(params, x)))[..., 0]
    rows = np.nonzero(np.max(g, axis=1) > 0)[0]
    cols = np.nonzero(np.max(g, axis=0) > 0)[0]
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1), g


FAMILIES = {
    r"$k=3$": lambda l: ([3] * l, [1] * l, [1] * l),
    r"$k=3$, $s=2$": lambda l: ([3] * l, [2] * l, [1] * l),
    r"$k=3$, $d_l=2^{l-1}$": lambda l: ([3] * l, [1] * l, [2**i for i in range(l)]),
}
"""Stacks of depth ``l``: (kernel sizes, strides, dilations)."""


class ReceptiveFieldResult(NamedTuple):
    """Measured vs predicted receptive fields of conv stacks."""

    depths: np.ndarray  # (n_l,)
    names: tuple  # family names
    measured: np.ndarray  # (n_f, n_l) extent of the gradient's support
    predicted: np.ndarray  # (n_f, n_l) r_L formula
    grad_map: np.ndarray  # (size, size) |grad| of one unit, the example stack
    example: tuple  # (kernel_sizes, strides, dilations) of the example stack
    example_r: int


def run_receptive_field(depths=(1, 2, 3, 4), channels=3, *, key):
    """Receptive fields of conv stacks measured by ``jax.grad``, against ``receptive_field``.

    Args:
        depths: stack depths ``L``.
        channels: channels per hidden layer.
        key: randomness for the kernels.

    Returns:
        A ``ReceptiveFieldResult``.
    """
    keys = jax.random.split(key, len(FAMILIES) * len(depths) + 1)
    measured, predicted, i = [], [], 0
    for fam in FAMILIES.values():
        row_m, row_p = [], []
        for depth in depths:
            ks, ss, ds = fam(depth)
            r = receptive_field(ks, ss, ds)
            params = init_stack(ks, channels, key=keys[i])
            i += 1
            hr, wr, _ = measured_receptive_field(params, ss, ds, r + 4)
            row_m.append(max(hr, wr))
            row_p.append(r)
        measured.append(row_m)
        predicted.append(row_p)
    example = ([5, 3, 3], [2, 2, 1], [1, 1, 1])
    r = receptive_field(*example)
    params = init_stack(example[0], channels, key=keys[-1])
    _, _, g = measured_receptive_field(params, example[1], example[2], r + 6)
    return ReceptiveFieldResult(np.array(depths), tuple(FAMILIES), np.array(measured),
                                np.array(predicted), g, example, r)


# ---------------------------------------------------------------- shifted digits

def digit_images():
    """scikit-learn's digits as images ``(1797, 8, 8)`` in [0, 1] (background 0) and labels.

    Pixels are divided by 16, not standardized per pixel: a per-pixel
    standardization would give every position its own offset and break the
    translation structure this week is about.
    """
    x, y = course_data.digits(standardize=False)
    return x.reshape(-1, 8, 8) / 16.0, y


def translate(images, dy, dx):
    """Translate images ``(n, H, W)`` by ``(dy, dx)`` pixels, filling with background zeros."""
    n, h, w = images.shape
    out = jnp.zeros((n, h + 2 * abs(dy), w + 2 * abs(dx)), images.dtype)
    out = out.at[:, abs(dy) + dy:abs(dy) + dy + h, abs(dx) + dx:abs(dx) + dx + w].set(images)
    return out[:, abs(dy):abs(dy) + h, abs(dx):abs(dx) + w]


def conv2d_patches(x, w):
    """"Same" zero-padded cross-correlation as ONE matrix product on patches (im2col).

    Each output pixel is the dense layer ``w.reshape(k*k*C, O)`` applied to the
    flattened k x k patch around it: a convolution is a dense layer on patches,
    with the same weights at every position.

    Args:
        x: image ``(H, W, C)``.
        w: kernel ``(k, k, C, O)``, ``k`` odd.

    Returns:
        The output ``(H, W, O)``.
    """
    k, _, c, o = w.shape
    hgt, wid, _ = x.shape
    xp = pad(x, (k - 1) // 2, mode="zero")
    patches = jnp.concatenate([xp[a:a + hgt, b:b + wid] for a in range(k) for b in range(k)],
                              axis=-1)  # (H, W, k*k*C), ordered (a, b, c) like w
    return patches @ w.reshape(k * k * c, o)


def init_cnn(channels=(8, 16), n_classes=10, *, key):
    """A small CNN: conv3x3 - ReLU - maxpool2 - conv3x3 - ReLU - global max pool - dense.

    He-initialized kernels ``(3, 3, C_in, C_out)``, zero biases.
    """
    k1, k2, k3 = jax.random.split(key, 3)
    c1, c2 = channels
    return {
        "w1": normal(k1, (3, 3, 1, c1)) * np.sqrt(2 / 9),
        "b1": jnp.zeros(c1),
        "w2": normal(k2, (3, 3, c1, c2)) * np.sqrt(2 / (9 * c1)),
        "b2": jnp.zeros(c2),
        "w3": normal(k3, (c2, n_classes)) / np.sqrt(c2),
        "b3": jnp.zeros(n_classes),
    }


def cnn(params, image):
    """Logits of the CNN for ONE image ``(H, W)``.

    H x W x 1 -> conv -> H x W x C1 -> max pool 2 -> H/2 x W/2 x C1 -> conv
    -> H/2 x W/2 x C2 -> max over positions -> C2 -> dense -> 10.
    Up to the image border, the two conv layers are translation equivariant,
    the 2 x 2 pooling is equivariant to shifts by multiples of 2, and the global
    max is invariant.
    """
    h = jax.nn.relu(conv2d_patches(image[:, :, None], params["w1"]) + params["b1"][None, None])
    h = max_pool(h, 2)
    h = jax.nn.relu(conv2d_patches(h, params["w2"]) + params["b2"][None, None])
    return jnp.max(h, axis=(0, 1)) @ params["w3"] + params["b3"]


def init_mlp(d, width=128, n_classes=10, *, key):
    """A one-hidden-layer ReLU MLP on the ``d`` flattened pixels (He initialization)."""
    k1, k2 = jax.random.split(key)
    return {
        "w1": normal(k1, (d, width)) * np.sqrt(2 / d),
        "b1": jnp.zeros(width),
        "w2": normal(k2, (width, n_classes)) / np.sqrt(width),
        "b2": jnp.zeros(n_classes),
    }


def mlp(params, image):
    """Logits of the MLP for ONE image ``(H, W)``, flattened."""
    h = jax.nn.relu(image.reshape(-1) @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def n_params(params):
    """Number of scalar parameters in a pytree."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def cross_entropy(model):
    """Full-batch mean cross-entropy ``loss(params, (images, labels))`` of ``model``."""
    def loss(params, batch):
        images, labels = batch
        logits = jax.vmap(model, in_axes=(None, 0))(params, images)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    return loss


def fit_minibatches(loss_fn, params, optimizer, data, *, steps, batch_size, key):
    """Adam (or any optax optimizer) on minibatches drawn uniformly with replacement.

    All ``steps x batch_size`` indices are drawn up front and the steps run as
    one ``lax.scan`` over them, so the function ``vmap``s over keys (seeds).

    Returns:
        Final parameters and the minibatch loss at every step, shape ``(steps,)``.
    """
    n = data[0].shape[0]
    # drawn flat and reshaped, like ``normal``: the same numbers, a faster compile
    idx = jax.random.randint(key, (steps * batch_size,), 0, n).reshape(steps, batch_size)
    step = train.make_step(loss_fn, optimizer)

    def body(state, i):
        return step(state, tuple(a[i] for a in data))

    state, losses = jax.lax.scan(body, train.init_state(params, optimizer), idx)
    return state.params, losses


class ShiftedDigitsResult(NamedTuple):
    """Test accuracy of a CNN and an MLP on digits translated by ``s`` pixels."""

    shifts: np.ndarray  # (n_s,) shift magnitudes s
    cnn_acc: np.ndarray  # (n_seeds, n_s) accuracy, averaged over the 4 directions
    mlp_acc: np.ndarray  # (n_seeds, n_s)
    cnn_params: int
    mlp_params: int
    n_train: int
    n_test: int
    canvas: int
    cnn_loss: np.ndarray  # (n_seeds, steps) minibatch training loss
    mlp_loss: np.ndarray  # (n_seeds, steps)


def run_shifted_digits(shifts=(0, 1, 2), n_seeds=3, steps=300, batch_size=128, lr=1e-2,
                       width=128, channels=(8, 16), margin=2, *, key):
    """Train a CNN and a larger MLP on digits, test them on translated test digits.

    The 8x8 digits are placed in the centre of a ``(8 + 2 margin)``-pixel canvas
    of background, so a translation by ``s <= margin`` pixels moves the digit
    without cropping it. Both networks are trained with Adam on minibatches of
    ``batch_size`` digits for ``steps`` steps (``lax.scan``, ``vmap`` over seeds),
    on the centred training digits only. Each test digit is then translated by ``s`` pixels up, down, left
    and right and the accuracy averaged over the four directions.

    Args:
        shifts: translation magnitudes ``s`` in pixels.
        n_seeds: independent initializations (same train/test split).
        steps: optimizer steps.
        batch_size: training digits per step.
        lr: Adam step size.
        width: hidden width of the MLP.
        channels: channels of the CNN's two conv layers.
        margin: background pixels around the digit.
        key: randomness for the split and the initializations.

    Returns:
        A ``ShiftedDigitsResult``.
    """
    split_key, cnn_key, mlp_key = jax.random.split(key, 3)
    images, labels = digit_images()
    images = jnp.pad(images, ((0, 0), (margin, margin), (margin, margin)))
    (x_tr, y_tr), (x_te, y_te) = course_data.train_test_split(
        (images, labels), key=split_key, test_fraction=360 / 1797)
    optimizer = optax.adam(lr)
    d = images.shape[1] * images.shape[2]

    @partial(jax.jit, compiler_options=QUICK_COMPILE)
    def test_sets(x_te, y_te):  # per shift s: the test digits moved by s up, down, left, right
        return [(jnp.concatenate([translate(x_te, dy, dx)
                                  for dy, dx in ((s, 0), (-s, 0), (0, s), (0, -s))]),
                 jnp.tile(y_te, 4)) for s in shifts]

    moved = test_sets(x_te, y_te)
    results = {}
    for name, model, init, k in (("cnn", cnn, lambda kk: init_cnn(channels, key=kk), cnn_key),
                                 ("mlp", mlp, lambda kk: init_mlp(d, width, key=kk), mlp_key)):
        keys = jax.random.split(k, n_seeds)
        n_p = n_params(jax.eval_shape(init, jax.random.key(0)))  # shapes only

        def fit_one(kk, model=model, init=init):
            init_key, batch_key = jax.random.split(kk)
            return fit_minibatches(cross_entropy(model), init(init_key), optimizer,
                                   (x_tr, y_tr), steps=steps, batch_size=batch_size,
                                   key=batch_key)

        fit_jit = jax.jit(fit_one)  # one compile; a Python loop over seeds compiles
        runs = [fit_jit(kk) for kk in keys]  # far faster on CPU than a vmap of the scan
        params = jax.tree_util.tree_map(lambda *a: np.stack(a), *[r[0] for r in runs])
        losses = np.stack([r[1] for r in runs])

        @partial(jax.jit, compiler_options=QUICK_COMPILE)
        def accuracy(params, batch, labels, model=model):  # (n_seeds,): one compile per model
            logits = jax.vmap(jax.vmap(model, in_axes=(None, 0)), in_axes=(0, None))(params, batch)
            return jax.vmap(metrics.accuracy, in_axes=(0, None))(logits, labels)

        accs = [np.asarray(accuracy(params, batch, labels)) for batch, labels in moved]
        results[name] = (np.stack(accs, axis=1), n_p, losses)
    return ShiftedDigitsResult(np.array(shifts), results["cnn"][0], results["mlp"][0],
                               results["cnn"][1], results["mlp"][1], int(x_tr.shape[0]),
                               int(x_te.shape[0]), int(images.shape[1]),
                               results["cnn"][2], results["mlp"][2])


# ---------------------------------------------------------------- figures

def plot_conv_check(result, ax):
    """Error of the explicit sum against ``lax``, relative to sum|w x|, vs the number of terms."""
    plotting.theory_vs_experiment(ax, result.terms, result.max_error, result.bound,
                                  label=r"direct sum vs lax",
                                  theory_label=r"bound $2nu$", color=plotting.PALETTE[0])
    ax.plot(result.terms, result.flipped_error, ls="none", marker="s",
            color=plotting.PALETTE[1], label="flipped kernel (control)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(loc="center right")
    return plotting.label_axes(ax, r"terms per output $n = k^2 C$",
                               r"$\max\,|\Delta y| \,/\, \sum |w\,x|$")


def _error_image(ax, err, title, seams=None):
    im = ax.imshow(np.log10(np.maximum(err, 1e-8)), vmin=-8, vmax=0, cmap="magma")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if seams is not None:
        n = err.shape[0]
        for r in seams[0]:
            ax.axhline(r - 0.5, color=plotting.PALETTE[5], ls="--", lw=1.2)
        for c in seams[1]:
            ax.axvline(c - 0.5, color=plotting.PALETTE[5], ls="--", lw=1.2)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
    return im


def plot_error_maps(result, axes):
    """The maps ``log10 |layer(T_s x) - T_s layer(x)|`` for circular, zero and untied layers."""
    s0, s1 = result.map_shift
    _error_image(axes[0], result.map_circular, "circular padding")
    _error_image(axes[1], result.map_zero, "zero padding", seams=([0, s0], [0, s1]))
    im = _error_image(axes[2], result.map_local, "untied weights")
    cb = axes[2].figure.colorbar(im, ax=list(axes), shrink=0.8)
    cb.set_label(r"$\log_{10}$ error / scale")
    return axes


def plot_band_width(result, ax):
    """Rows with nonzero equivariance error vs the shift, against ``min(s, 2h) + 2h``."""
    grid = np.linspace(result.shifts.min(), result.shifts.max(), 200)
    for i, k in enumerate(result.kernel_sizes):
        h = (k - 1) // 2
        theory = np.minimum(grid, 2 * h) + 2 * h
        plotting.theory_vs_experiment(
            ax, result.shifts, result.band_measured[i], theory, x_theory=grid,
            label=f"$k={k}$", theory_label=r"$\min(s, 2h) + 2h$" if i == 0 else None,
            color=plotting.PALETTE[i])
    ax.legend(ncols=2, loc="upper left")
    return plotting.label_axes(ax, r"shift $s$ (pixels)", "rows with error")


def plot_circulant(result, axes):
    """(a) The circulant matrix of a 1-D layer; (b) its eigenvalues vs the DFT of the kernel."""
    lim = np.max(np.abs(result.matrix))
    axes[0].imshow(result.matrix, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0].set_title(f"$C_w$, $n={result.n}$, $k={len(result.kernel)}$")
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].grid(False)
    m = np.arange(result.n)
    fine = np.linspace(0, result.n, 400)
    h = (len(result.kernel) - 1) // 2
    a = np.arange(len(result.kernel)) - h
    curve = np.exp(2j * np.pi * fine[:, None] * a[None, :] / result.n) @ result.kernel
    axes[1].plot(fine, curve.real, color=plotting.THEORY_COLOR, lw=2, label=r"$\hat w(m)$")
    axes[1].plot(fine, curve.imag, color=plotting.THEORY_COLOR, lw=2, ls="--")
    axes[1].plot(m, result.eig_measured.real, "o", color=plotting.PALETTE[0],
                 label=r"Re $\lambda_m$")
    axes[1].plot(m, result.eig_measured.imag, "s", color=plotting.PALETTE[1],
                 label=r"Im $\lambda_m$")
    lo = min(curve.real.min(), curve.imag.min())
    hi = max(curve.real.max(), curve.imag.max())
    axes[1].set_ylim(lo - 0.1 * (hi - lo), hi + 0.45 * (hi - lo))  # room for the legend
    axes[1].legend(ncols=3, loc="upper center")
    plotting.label_axes(axes[1], r"Fourier mode $m$", r"eigenvalue $\lambda_m$")
    return axes


def plot_pooling(result, ax):
    """Fraction of max-pool outputs unchanged by a one-pixel shift, against ``(p-1)/(p+1)``."""
    grid = np.linspace(result.pool_sizes.min(), result.pool_sizes.max(), 200)
    plotting.theory_vs_experiment(ax, result.pool_sizes, result.fraction, (grid - 1) / (grid + 1),
                                  x_theory=grid, err=result.sem, label="shift by 1 pixel",
                                  theory_label=r"$(p-1)/(p+1)$", color=plotting.PALETTE[0])
    ax.plot(result.pool_sizes, result.aligned, ls="none", marker="s", color=plotting.PALETTE[2],
            label=r"shift by $p$ (then undo)")
    ax.set_ylim(0, 1.08)
    ax.legend(loc="lower right")
    return plotting.label_axes(ax, r"pool size $p$", "fraction unchanged")


def plot_gradient_map(result, ax):
    """``|grad_x y[0, 0]|`` of the example stack, with the predicted ``r x r`` square."""
    g = result.grad_map
    ax.imshow(np.log10(np.maximum(g, 1e-12)), cmap="viridis",
              vmin=np.log10(g[g > 0].min()), vmax=np.log10(g.max()))
    r = result.example_r
    ax.add_patch(Rectangle(
        (-0.5, -0.5), r, r, fill=False, ec=plotting.THEORY_COLOR, lw=2.5))
    ax.set_title(rf"$\log_{{10}}|\partial y_{{00}}/\partial x|$, $r_L = {r}$")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    return ax


def plot_receptive_field(result, ax):
    """Measured receptive fields vs depth for each family, against ``r_L``."""
    markers = "osD^v"
    for i, name in enumerate(result.names):
        plotting.theory_vs_experiment(
            ax, result.depths, result.measured[i], result.predicted[i], label=name,
            theory_label=r"$r_L$ formula" if i == 0 else None, color=plotting.PALETTE[i],
            marker=markers[i])
    ax.set_yscale("log", base=2)
    ax.set_xticks(result.depths)
    ax.legend(loc="upper left")
    return plotting.label_axes(ax, r"depth $L$", r"receptive field $r_L$")


def plot_shifted_digits(result, ax):
    """Test accuracy vs translation, CNN and MLP, mean and standard error over seeds."""
    for acc, name, n_p, c, mk in ((result.cnn_acc, "CNN", result.cnn_params, 0, "o"),
                                  (result.mlp_acc, "MLP", result.mlp_params, 1, "s")):
        m, s = metrics.mean_and_sem(acc)
        ax.errorbar(result.shifts, m, yerr=s, marker=mk, capsize=3, color=plotting.PALETTE[c],
                    label=f"{name} ({n_p:,} parameters)")
    ax.axhline(0.1, color="0.5", ls=":", lw=1.5, label="chance")
    ax.set_xticks(result.shifts)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 0.12))
    return plotting.label_axes(ax, r"translation $s$ (pixels)", "test accuracy")


def plot_digit_shifts(images, ax, shifts=(0, 1, 2)):
    """One digit on a canvas with a margin of ``max(shifts)``, translated right by ``s`` pixels."""
    m = max(shifts)
    images = jnp.pad(images[:1], ((0, 0), (m, m), (m, m)))
    row = np.concatenate([np.pad(np.asarray(translate(images[:1], 0, s)[0]), ((0, 0), (0, 1)),
                                 constant_values=np.nan) for s in shifts], axis=1)
    ax.imshow(row, cmap="gray_r")
    ax.set_xticks([images.shape[2] / 2 + i * (images.shape[2] + 1) for i in range(len(shifts))])
    ax.set_xticklabels([f"$s={s}$" for s in shifts])
    ax.set_yticks([])
    ax.grid(False)
    return ax


def plot_conv_kernel(result, ax):
    """``Theta(x_0, T_s x_1)`` against the shift ``s``: conv + pooling (flat) and MLP, vs theory."""
    s = result.shifts
    ax.plot(s, result.conv_theory, color=plotting.THEORY_COLOR, lw=2,
            label=r"$\frac{1}{n^2}\sum_{p,q}\Theta_{\mathrm{ReLU}}(z_p, z'_q)$")
    ax.errorbar(s, result.conv_emp, yerr=2 * result.conv_sem, ls="none", marker="o", capsize=3,
                color=plotting.PALETTE[0], label=f"conv + pooling, $C={result.width}$")
    ax.plot(s, result.mlp_theory, color=plotting.THEORY_COLOR, lw=1.5, ls="--",
            label=r"$\Theta_{\mathrm{ReLU}}(x_0, T_s x_1)$")
    ax.errorbar(s, result.mlp_emp, yerr=2 * result.mlp_sem, ls="none", marker="s", capsize=3,
                color=plotting.PALETTE[1], label=f"MLP, width {result.width}")
    ax.legend(loc="upper left", ncols=2, fontsize=12)
    top = max(result.mlp_emp.max(), result.conv_emp.max())
    ax.set_ylim(min(0, result.mlp_emp.min()) - 0.1, 1.6 * top)
    return plotting.label_axes(ax, r"shift $s$ of the second input",
                               r"$\Theta(x_0, T_s x_1)$")
