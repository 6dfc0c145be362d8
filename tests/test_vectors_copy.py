"""The repository's golden vectors (`tests/vectors/`) are a faithful copy of the shared ones.

The suite reads only `tests/vectors/` (see conftest.py), so it runs from a bare checkout. Where
the protocol's shared directory sits next to the repository (`<repo>/../shared/vectors/`), the
copy must equal it file by file, byte for byte; only that comparison is skipped without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXPECTED_VECTOR_COUNTS, REPO, VECTORS_DIR, VECTORS_PATH, load_vectors

SHARED_VECTORS = REPO.parent / "shared" / "vectors"


def test_repository_copy_is_complete() -> None:
    assert VECTORS_PATH.is_file()  # a missing copy fails, it never skips
    data = load_vectors()  # every section holds its expected count of vectors
    assert set(data) >= {s.split(".")[0] for s in EXPECTED_VECTOR_COUNTS}


def test_load_vectors_refuses_a_truncated_or_missing_file(tmp_path: Path) -> None:
    data = load_vectors()
    data["gemm"] = data["gemm"][:-1]  # one vector lost
    truncated = tmp_path / "spec_v1.json"
    truncated.write_text(json.dumps(data))
    with pytest.raises(AssertionError, match="gemm has 3 vectors"):
        load_vectors(truncated)
    with pytest.raises(FileNotFoundError):
        load_vectors(tmp_path / "missing.json")


@pytest.mark.skipif(not SHARED_VECTORS.is_dir(),
                    reason=f"no shared vectors directory at {SHARED_VECTORS}")
def test_copy_equals_shared_vectors_file_by_file() -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}

    shared, copy = files(SHARED_VECTORS), files(VECTORS_DIR)
    assert shared, f"{SHARED_VECTORS} holds no file"
    assert sorted(copy) == sorted(shared)
    for name, content in shared.items():
        assert copy[name] == content, f"tests/vectors/{name} differs from {SHARED_VECTORS}"
