"""Fully connected networks as pure functions on a list of ``(W, b)`` layers.

Two parametrizations of the same architecture (Jacot, Gabriel & Hongler 2018):

* ``"standard"``: ``W ~ N(0, sigma_w^2 / fan_in)``, ``h = W x + b``;
* ``"ntk"``: ``W ~ N(0, 1)``, ``h = sigma_w / sqrt(fan_in) * W x + sigma_b * b``.

They define the same function at initialization; they differ in how gradient
descent moves them as the width grows. The model is written for ONE example
``x`` of shape ``(d,)``; batch it with ``jax.vmap`` (see ``apply_batch``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Params = list[tuple[jax.Array, jax.Array]]


def init_mlp(
    widths: Sequence[int],
    *,
    key: jax.Array,
    sigma_w: float = 2.0**0.5,
    sigma_b: float = 0.0,
    parametrization: str = "standard",
) -> Params:
    """Gaussian initialization of an MLP with layer widths ``widths = [d, n_1, ..., n_out]``.

    Args:
        widths: input dimension, hidden widths, output dimension.
        key: randomness for all layers.
        sigma_w: weight scale (``sqrt(2)`` is He initialization for ReLU).
        sigma_b: bias scale.
        parametrization: ``"standard"`` or ``"ntk"`` (see module docstring).

    Returns:
        A list of ``(W, b)`` with ``W`` of shape ``(fan_out, fan_in)``.
    """
    if parametrization not in ("standard", "ntk"):
        raise ValueError(f"unknown parametrization {parametrization!r}")
    keys = jax.random.split(key, len(widths) - 1)
    params = []
    for k, fan_in, fan_out in zip(keys, widths[:-1], widths[1:]):
        wkey, bkey = jax.random.split(k)
        w = jax.random.normal(wkey, (fan_out, fan_in))
        b = jax.random.normal(bkey, (fan_out,))
        if parametrization == "standard":
            w, b = sigma_w / jnp.sqrt(fan_in) * w, sigma_b * b
        params.append((w, b))
    return params



def n_params(widths: Sequence[int]) -> int:
    """Number of parameters ``P = sum_l (n_{l-1} + 1) n_l`` of an MLP with layer widths ``widths``."""
    return sum(fo * fi + fo for fi, fo in zip(widths[:-1], widths[1:]))


def params_from_flat(widths: Sequence[int], z: jax.Array) -> Params:
    """Cut the first ``n_params(widths)`` entries of a flat vector ``z`` into ``(W, b)`` layers.

    The layout is ``W_1, b_1, W_2, b_2, ...`` (row-major). With ``z`` i.i.d.
    ``N(0, 1)`` any prefix is i.i.d. ``N(0, 1)``, so one vector of a fixed shape
    serves several widths.
    """
    params, start = [], 0
    for fi, fo in zip(widths[:-1], widths[1:]):
        w = z[start : start + fo * fi].reshape(fo, fi)
        b = z[start + fo * fi : start + fo * fi + fo]
        params.append((w, b))
        start += fo * fi + fo
    return params


def init_mlp_one_draw(
    widths: Sequence[int],
    *,
    key: jax.Array,
    sigma_w: float = 2.0**0.5,
    sigma_b: float = 0.0,
    parametrization: str = "standard",
) -> Params:
    """``init_mlp``'s distribution from ONE call to ``jax.random.normal``.

    Same distribution and layout as ``init_mlp`` (not the same numbers): one
    random-number program to compile instead of ``2 L``, which dominates the cost
    of small CPU experiments that compile one program per width or depth.
    """
    if parametrization not in ("standard", "ntk"):
        raise ValueError(f"unknown parametrization {parametrization!r}")
    params = params_from_flat(widths, jax.random.normal(key, (n_params(widths),)))
    if parametrization == "ntk":
        return params
    return [(sigma_w / jnp.sqrt(w.shape[1]) * w, sigma_b * b) for w, b in params]

def apply_mlp(
    params: Params,
    x: jax.Array,
    *,
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
    sigma_w: float = 2.0**0.5,
    sigma_b: float = 0.0,
    parametrization: str = "standard",
) -> jax.Array:
    """Output of the MLP for one input ``x`` of shape ``(d,)``.

    The scales must match those used in ``init_mlp`` for the NTK parametrization
    (they multiply the forward pass); they are ignored for the standard one.
    """
    h = x
    for i, (w, b) in enumerate(params):
        if parametrization == "ntk":
            h = sigma_w / jnp.sqrt(w.shape[1]) * (w @ h) + sigma_b * b
        else:
            h = w @ h + b
        if i < len(params) - 1:
            h = activation(h)
    return h


def apply_batch(params: Params, xs: jax.Array, **kwargs) -> jax.Array:
    """``apply_mlp`` vmapped over the leading axis of ``xs``."""
    return jax.vmap(lambda x: apply_mlp(params, x, **kwargs))(xs)
