"""Shared fixtures for the engine tests: the golden vectors of SPEC 1 (`gemm` key)."""

from __future__ import annotations

import pytest
from hypothesis import settings

# Derandomized and small: the engine suite must stay well under a minute on 2 cores.
settings.register_profile("engine", derandomize=True, max_examples=6, deadline=None)

EXPECTED_GEMM_VECTORS = 4


@pytest.fixture(scope="session")
def gemm_vectors(vectors: dict) -> list[dict]:
    """The `gemm` golden vectors (from the root conftest's `vectors`: tests/vectors/)."""
    gemm = vectors["gemm"]
    assert len(gemm) == EXPECTED_GEMM_VECTORS  # the tests using them assert they ran them all
    return gemm
