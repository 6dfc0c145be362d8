"""Shared test fixtures: the golden vectors, hypothesis profiles, temp homes.

The golden vectors are the repository's copy `tests/vectors/` of the protocol's shared
`vectors/` (tests/test_vectors_copy.py checks the copy where the shared directory exists), so
the suite needs no file outside the repository and a missing vector file fails, never skips.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
VECTORS_DIR = REPO / "tests" / "vectors"
VECTORS_PATH = VECTORS_DIR / "spec_v1.json"

# How many vectors each section of spec_v1.json holds: a truncated or emptied copy fails here,
# before any test could pass by looping over nothing.
EXPECTED_VECTOR_COUNTS = {"gemm": 4, "gemm_large": 2, "keys": 2, "merkle.roots": 12,
                          "merkle.paths": 10}


def hypothesis_profile(environ: dict[str, str]) -> str:
    """`ci` (derandomized) when `$CI` says true, as CI services and .ci/run set it; else `dev`."""
    return "ci" if environ.get("CI", "").strip().lower() in ("1", "true", "yes") else "dev"


# Derandomized in CI so a red run is reproducible (STYLE: tinygrad's habit).
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile(hypothesis_profile(dict(os.environ)))


def load_vectors(path: Path = VECTORS_PATH) -> dict:
    """The golden vectors at `path`, each section checked against EXPECTED_VECTOR_COUNTS."""
    data = json.loads(path.read_text())  # a missing file raises: the test fails, no skip
    for section, expected in EXPECTED_VECTOR_COUNTS.items():
        value = data
        for key in section.split("."):
            value = value[key]
        count = len(value)
        assert count == expected, f"{path}: {section} has {count} vectors, expected {expected}"
    return data


@pytest.fixture(scope="session")
def vectors() -> dict:
    """The golden vectors (SPEC 'vectors/'), from the repository's copy tests/vectors/."""
    return load_vectors()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HASHCLOUD_HOME for one test."""
    h = tmp_path / "home"
    monkeypatch.setenv("HASHCLOUD_HOME", str(h))
    monkeypatch.delenv("HASHCLOUD_NODE", raising=False)
    monkeypatch.delenv("HASHCLOUD_PASSPHRASE", raising=False)
    return h
