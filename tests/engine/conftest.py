"""Shared fixtures for the engine tests: the golden vectors of SPEC 1 (`gemm` key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import settings

# Derandomized and small: the engine suite must stay well under a minute on 2 cores.
settings.register_profile("engine", derandomize=True, max_examples=6, deadline=None)

VECTORS_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "spec_v1.json"
EXPECTED_GEMM_VECTORS = 4


@pytest.fixture(scope="session")
def gemm_vectors() -> list[dict]:
    """The `gemm` golden vectors, or a skip naming the missing file."""
    if not VECTORS_PATH.is_file():
        pytest.skip(f"shared vectors not found at {VECTORS_PATH}")
    vectors = json.loads(VECTORS_PATH.read_text())["gemm"]
    assert len(vectors) >= EXPECTED_GEMM_VECTORS
    return vectors
