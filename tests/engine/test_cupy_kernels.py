"""The fused-kernel bodies of `cupy_backend`, run on NumPy against `gemm` (no GPU needed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hashcloud.engine import cupy_backend, gemm

SEED = "5eed"


def _identity(fn):
    return fn


def test_cupy_code_is_imported_lazily() -> None:
    # The core engine modules never pull in the CuPy-only module, CuPy, typer or rich.
    code = (
        "import sys\n"
        "import hashcloud.engine.gemm, hashcloud.engine.bench, hashcloud.engine.selftest\n"
        "import hashcloud.engine.reference, hashcloud.engine.backends\n"
        "bad = {'hashcloud.engine.cupy_backend', 'cupy', 'typer', 'rich'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_splitmix_body_equals_gemm_words() -> None:
    counters = gemm.word_counters(np, 64)
    keys = gemm.loop_keys(SEED, 0, 3).reshape(3, 1)
    words = np.empty((3, 64), dtype=np.uint64)
    gemm.splitmix64_into(np, keys, counters, words, np.empty_like(words))
    assert np.array_equal(cupy_backend.splitmix64_body(keys, counters), words)


@pytest.mark.parametrize("n", [64, 128])
def test_generate_kernel_equals_generate_operands(n: int) -> None:
    kernels = cupy_backend.build_kernels(np, _identity)
    keys = gemm.loop_keys(SEED, 7, 3).reshape(3, 1)
    got = kernels["generate"](keys, np.arange(2 * n * n, dtype=np.uint64))
    assert got.dtype == np.float32
    a, b = gemm.generate_operands(np, SEED, 7, 3, n)
    got = got.reshape(3, 2, n, n)
    assert np.array_equal(got[:, 0], a) and np.array_equal(got[:, 1], b)


@pytest.mark.parametrize("n", [64, 128])
def test_digest_kernel_equals_row_digests(n: int) -> None:
    kernels = cupy_backend.build_kernels(np, _identity)
    a, b = gemm.generate_operands(np, SEED, 0, 2, n)
    c = np.matmul(a, b)
    got = kernels["digests"](c, gemm.column_mix(np, n))
    assert got.dtype == np.uint64
    assert np.array_equal(got, gemm.row_digests(np, c))


def test_fmix32_body_on_extremes() -> None:
    c = np.array([[0, -1, -(2**24), 2**24]], dtype=np.int32).view(np.uint32)
    colmix = gemm.column_mix(np, 4)
    x = cupy_backend.fmix32_body(c, colmix)
    assert x.dtype == np.uint32
    from hashcloud.engine.reference import _fmix_row

    assert int(x.astype(np.uint64).sum()) == _fmix_row([0, -1, -(2**24), 2**24])
