"""Make JAX strict for the whole test suite (equinox's tests do the same)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)


@pytest.fixture
def key():
    """A fresh key per test: tests never share randomness."""
    return jax.random.key(0)
