"""Metrics and the small statistics every week's checks need."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


def mse(pred, target):
    """Mean squared error ``mean((pred - target)**2)``."""
    return jnp.mean((pred - target) ** 2)


def accuracy(logits, labels):
    """Fraction of rows whose arg-max equals the integer label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def relative_error(a, b):
    """Frobenius relative error ``||a - b|| / ||b||``."""
    return jnp.linalg.norm(jnp.ravel(a - b)) / jnp.linalg.norm(jnp.ravel(b))


class PowerLawFit(NamedTuple):
    """Least-squares fit of ``log y = intercept + slope * log x``."""

    slope: float
    stderr: float
    intercept: float


def loglog_slope(x, y) -> PowerLawFit:
    """Fit a power law ``y ~ C x^slope`` by least squares in log-log coordinates.

    Args:
        x: positive abscissae (at least three).
        y: positive ordinates.

    Returns:
        The slope, its standard error (from the residual variance, n - 2 degrees
        of freedom) and the intercept ``log C``.
    """
    lx = np.log(np.asarray(x, dtype=float))
    ly = np.log(np.asarray(y, dtype=float))
    n = lx.size
    if n < 3:
        raise ValueError("a slope with a standard error needs at least three points")
    design = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
    resid = ly - design @ coef
    sigma2 = resid @ resid / (n - 2)
    cov = sigma2 * np.linalg.inv(design.T @ design)
    return PowerLawFit(slope=float(coef[1]), stderr=float(np.sqrt(cov[1, 1])), intercept=float(coef[0]))


def mean_and_sem(samples, axis=0):
    """Mean and standard error of the mean along ``axis``."""
    samples = np.asarray(samples, dtype=float)
    n = samples.shape[axis]
    return samples.mean(axis=axis), samples.std(axis=axis, ddof=1) / np.sqrt(n)
