"""Data: synthetic generators with explicit keys, and datasets shipped with packages.

Nothing here downloads anything: scikit-learn's digits ship inside the wheel.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal array of ``shape``, drawn flat and reshaped.

    Same law (and same values) as a flat ``jax.random.normal`` draw; the reason is
    speed: with jax 0.10 on CPU a multi-dimensional draw takes several times longer
    to compile than the flat draw of the same size (measured: ~1.2 s vs ~0.25 s).
    """
    return jax.random.normal(key, (int(np.prod(shape)),)).reshape(shape)


def gaussian_linear(n: int, d: int, *, key: jax.Array, noise: float = 0.0, beta: jax.Array | None = None):
    """Isotropic Gaussian design with a linear teacher.

    ``x_i ~ N(0, I_d)``, ``y_i = x_i^T beta + noise * eps_i`` with ``eps_i ~ N(0, 1)``.
    If ``beta`` is not given it is drawn uniformly on the unit sphere.

    Returns:
        ``(X, y, beta)`` with shapes ``(n, d)``, ``(n,)``, ``(d,)``.
    """
    kx, ke, kb = jax.random.split(key, 3)
    if beta is None:
        beta = jax.random.normal(kb, (d,))
        beta = beta / jnp.linalg.norm(beta)
    x = jax.random.normal(kx, (n, d))
    y = x @ beta + noise * jax.random.normal(ke, (n,))
    return x, y, beta


def regression_1d(
    n: int,
    *,
    key: jax.Array,
    target: Callable[[jax.Array], jax.Array] = lambda x: jnp.sin(2 * jnp.pi * x),
    noise: float = 0.3,
    low: float = -1.0,
    high: float = 1.0,
):
    """``x ~ U[low, high]``, ``y = target(x) + noise * eps``. Returns ``(x, y)``, shapes ``(n,)``."""
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (n,), minval=low, maxval=high)
    return x, target(x) + noise * jax.random.normal(ke, (n,))


def digits(*, standardize: bool = True):
    """scikit-learn's 8x8 handwritten digits (1797 images, shipped with the package).

    Returns:
        ``(X, y)`` with ``X`` of shape ``(1797, 64)`` (float32, pixel values in
        [0, 16], or standardized per pixel over the whole set) and integer labels.
    """
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = ds.data.astype(np.float32)
    if standardize:
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return jnp.asarray(x), jnp.asarray(ds.target)


def train_test_split(arrays: tuple, *, key: jax.Array, test_fraction: float = 0.25):
    """Random split of arrays sharing their leading dimension. Returns ``(train, test)`` tuples."""
    n = arrays[0].shape[0]
    perm = jax.random.permutation(key, n)
    n_test = int(round(test_fraction * n))
    test, train = perm[:n_test], perm[n_test:]
    return tuple(a[train] for a in arrays), tuple(a[test] for a in arrays)
