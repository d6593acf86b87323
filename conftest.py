"""Make JAX strict for every test, in tests/ and in the week folders (equinox does the same).

This file imports nothing of the build: ``pytest -m "not render"`` (the fast
lane) runs the mathematics without loading the renderer.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)


@pytest.fixture
def key():
    """The root key ``jax.random.key(0)``, the same in every test.

    Every test is then reproducible on its own; a test splits this key into the
    subkeys it needs, and key-reuse checking (above) rejects a subkey used twice.
    """
    return jax.random.key(0)
