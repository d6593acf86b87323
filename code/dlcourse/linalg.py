"""Curvature without matrices: Hessian-vector products and power iteration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

PyTree = Any


def hvp(f: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product ``H(params) v`` by forward-over-reverse differentiation.

    Costs a small constant times one gradient evaluation; the Hessian is never formed.
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def top_eigenvalue(
    f: Callable[[PyTree], jax.Array],
    params: PyTree,
    *,
    key: jax.Array,
    iters: int = 50,
) -> jax.Array:
    """Largest-magnitude Hessian eigenvalue of ``f`` at ``params`` by power iteration.

    Iterates ``v <- H v / ||H v||`` from a random unit vector and returns the
    Rayleigh quotient ``v^T H v``. Converges at the rate ``|lambda_2 / lambda_1|``
    per iteration.

    Args:
        f: scalar function of a pytree.
        params: point at which the Hessian is taken.
        key: randomness for the starting vector.
        iters: number of power iterations.

    Returns:
        The estimate of the eigenvalue of largest magnitude.
    """
    flat, unravel = ravel_pytree(params)

    def matvec(u):
        return ravel_pytree(hvp(f, params, unravel(u)))[0]

    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(v, _):
        w = matvec(v)
        return w / jnp.linalg.norm(w), None

    v, _ = jax.lax.scan(body, v0, None, length=iters)
    return v @ matvec(v)
