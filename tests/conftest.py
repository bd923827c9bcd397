"""Test configuration: JAX settings for the tests only, and shared fixtures."""

import os
import pathlib

import jax
import jax.random as jr
import pytest

# The library never changes JAX's configuration; the tests choose theirs here.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "standard")
# The command points JAX's compilation cache at a folder; in-process calls of `main` in
# the tests must not (tests/test_cli.py checks the cache in subprocesses).
os.environ["JANSSEN_COMPILE_CACHE"] = "off"

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key on every call (deterministic per test)."""
    state = {"key": jr.PRNGKey(0)}

    def _getkey():
        state["key"], sub = jr.split(state["key"])
        return sub

    return _getkey


@pytest.fixture
def x64():
    """Run a test with 64-bit precision, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="session")
def siemens_star_path():
    """Path of the real Siemens-star dataset, or skip when `../shared/data` is absent."""
    path = SHARED_DATA / "tike_siemens_star" / "siemens-star-small.npz.bz2"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the shared data folder sits beside the checkout)")
    return path


@pytest.fixture(scope="module")
def cxi_file(tmp_path_factory):
    """A tiny simulated far-field CXI file with its ground truth (32 x 32 frames, 16 positions)."""
    from janssen.io import simulate, write_cxi

    dataset = simulate(32, 16, key=jr.PRNGKey(2), photons=1e5)
    path = tmp_path_factory.mktemp("data") / "tiny.cxi"
    write_cxi(path, dataset.data, ground_truth=dataset)
    return path
