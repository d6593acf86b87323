"""Shared JAX helpers of the course.

Modules:
    plotting: the house style and figure helpers (take an ``ax``, return it).
    data: synthetic data with explicit keys; datasets shipped with packages.
    train: optax training loops (jit, ``lax.scan``; ``vmap`` over seeds outside).
    linalg: Hessian-vector products and power iteration.
    mlp: fully connected networks in standard and NTK parametrization.
    metrics: errors, accuracies, power-law fits with standard errors.

Each week's experiments live in their own module (``dlcourse.week01`` ...), as
functions with keyword defaults: the lecture calls them at full size, the tests
at tiny size.
"""

__version__ = "2026.1"
