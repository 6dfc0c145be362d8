"""Shared test fixtures: the shared golden vectors, hypothesis profiles, temp homes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
VECTORS_PATH = REPO.parent / "shared" / "vectors" / "spec_v1.json"

# Derandomized in CI so a red run is reproducible (STYLE: tinygrad's habit).
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def vectors() -> dict:
    """The shared golden vectors (SPEC 'vectors/'); skipped when shared/ is absent."""
    if not VECTORS_PATH.exists():
        pytest.skip(f"shared vectors not found at {VECTORS_PATH}")
    return json.loads(VECTORS_PATH.read_text())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HASHCLOUD_HOME for one test."""
    h = tmp_path / "home"
    monkeypatch.setenv("HASHCLOUD_HOME", str(h))
    monkeypatch.delenv("HASHCLOUD_NODE", raising=False)
    monkeypatch.delenv("HASHCLOUD_PASSPHRASE", raising=False)
    return h
