"""The kernel source `hc_kernels.h` (SPEC 1) built for the host and checked against
NumPy/hashlib: the same C the GPU runs, exhaustively where the domain is small."""

from __future__ import annotations

import ctypes
import hashlib

import numpy as np
import pytest

from hashcloud.engine import gemm
from hashcloud.engine.kernels import find_c_compiler, host_library
from hashcloud.engine.reference import _fmix_row

pytestmark = pytest.mark.skipif(find_c_compiler() is None, reason="no C compiler here")

SEED = "5eed"


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    return host_library()


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def test_splitmix64_on_random_keys(lib) -> None:
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**64, size=2000, dtype=np.uint64)
    ts = rng.integers(0, 2**21, size=2000, dtype=np.uint64)
    ts[:4] = [0, 1, 2**64 - 2, 2**64 - 1]
    counters = (ts + np.uint64(1)) * np.uint64(gemm.SPLITMIX_GAMMA)
    want = np.empty_like(keys)
    gemm.splitmix64_into(np, keys, counters, want, np.empty_like(keys))
    got = [lib.hc_host_splitmix64(int(k), int(t)) for k, t in zip(keys, ts, strict=True)]
    assert got == [int(w) for w in want]


def test_entries_exhaustive_over_bytes(lib) -> None:
    # Word b * 0x0101... puts byte value b in all 8 positions: every (byte, position) pair.
    for b in range(256):
        word = b * 0x0101010101010101
        want = (b & 0x7F) - 64
        assert [lib.hc_host_entry(word, j) for j in range(8)] == [want] * 8
        packed = lib.hc_host_pack_entries(word).to_bytes(8, "little")
        assert np.frombuffer(packed, dtype=np.int8).tolist() == [want] * 8
    rng = np.random.default_rng(2)
    for word in rng.integers(0, 2**64, size=500, dtype=np.uint64):
        expected = [(x & 0x7F) - 64 for x in int(word).to_bytes(8, "little")]
        assert [lib.hc_host_entry(int(word), j) for j in range(8)] == expected
        packed = lib.hc_host_pack_entries(int(word)).to_bytes(8, "little")
        assert np.frombuffer(packed, dtype=np.int8).tolist() == expected


def test_bf16_bits_exact_for_every_entry(lib) -> None:
    values = np.arange(-64, 64, dtype=np.int32)
    want = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    assert [lib.hc_host_bf16_bits(int(v)) for v in values] == want.tolist()
    # Round trip: the bf16 bits widened back are exactly the integer.
    back = (want.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(back, values.astype(np.float32))


@pytest.mark.parametrize("n", [64, 128])
def test_entry_dest_is_the_tn_layout(lib, n: int) -> None:
    nn = n * n
    dest = np.array([lib.hc_host_entry_dest(e, n) for e in range(2 * nn)], dtype=np.int64)
    assert np.array_equal(dest[:nn], np.arange(nn))  # A row-major
    r, c = np.divmod(np.arange(nn), n)
    assert np.array_equal(dest[nn:], nn + c * n + r)  # B transposed
    assert np.array_equal(np.sort(dest), np.arange(2 * nn))  # a permutation


def test_fmix32_on_random_and_extreme_values(lib) -> None:
    rng = np.random.default_rng(3)
    c = rng.integers(-(2**24), 2**24 + 1, size=4096).astype(np.int32)
    c[:4] = [0, -1, -(2**24), 2**24]
    want = gemm.row_digests(np, c.reshape(1, -1).astype(np.float32))[0]
    got = sum(lib.hc_host_fmix32(int(v) & 0xFFFFFFFF, j) for j, v in enumerate(c))
    assert got == int(want) == _fmix_row(c.tolist())


@pytest.mark.parametrize("length", list(range(0, 200)) + [1000, 8 * 1024 + 70])
def test_sha256_every_padding_case(lib, length: int) -> None:
    data = bytes((7 * k + length) & 0xFF for k in range(length))
    out = ctypes.create_string_buffer(32)
    lib.hc_host_sha256(data, len(data), out)
    assert out.raw == hashlib.sha256(data).digest()


@pytest.mark.parametrize("seed", ["0", "ab" * 27, "c" * 55, "d" * 56, "e" * 63, "f" * 64,
                                  "0" * 64, "9" * 130])
def test_loop_keys_and_batch_keys(lib, seed: str) -> None:
    indices = [0, 1, 9, 10, 99, 100, 12345, 2**32, 2**64 - 1]
    raw = seed.encode("ascii")
    for i in indices:
        assert lib.hc_host_loop_key(raw, len(raw), i) == gemm.loop_key(seed, i)
    keys = np.zeros(20, dtype=np.uint64)
    seed_buf = np.frombuffer(raw, dtype=np.uint8).copy()
    lib.hc_host_keys(_ptr(seed_buf), len(raw), 95, 20, _ptr(keys))
    assert np.array_equal(keys, gemm.loop_keys(seed, 95, 20))


def _generate(lib, suffix: str, dtype: type, keys: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(keys), 2 * n * n), dtype=dtype)
    getattr(lib, f"hc_host_generate_a_{suffix}")(_ptr(keys), n, len(keys), _ptr(out))
    getattr(lib, f"hc_host_generate_bt_{suffix}")(_ptr(keys), n, len(keys), _ptr(out))
    return out


@pytest.mark.parametrize("n", [64, 192])
def test_generation_all_types_match_generate_operands(lib, n: int) -> None:
    keys = gemm.loop_keys(SEED, 3, 3)
    a, b = gemm.generate_operands(np, SEED, 3, 3, n)
    for suffix, dtype in (("i8", np.int8), ("f32", np.float32), ("bf16", np.uint16)):
        out = _generate(lib, suffix, dtype, keys, n)
        if suffix == "bf16":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        blocks = out.reshape(3, 2, n, n).astype(np.float32)
        assert np.array_equal(blocks[:, 0], a), suffix
        assert np.array_equal(blocks[:, 1], np.swapaxes(b, 1, 2)), suffix  # stored as B^T


def test_digests_and_leaves_match_the_reference(lib) -> None:
    n = 128
    keys = gemm.loop_keys(SEED, 40, 2)
    a, b = gemm.generate_operands(np, SEED, 40, 2, n)
    c = np.matmul(a, b)
    want = gemm.row_digests(np, c)
    for suffix, arr in (("i32", c.astype(np.int32)), ("f32", c)):
        got = np.zeros((2, n), dtype=np.uint64)
        getattr(lib, f"hc_host_digest_{suffix}")(_ptr(arr), n, 2 * n, _ptr(got))
        assert np.array_equal(got, want), suffix
    leaves = np.zeros((2, 32), dtype=np.uint8)
    seed_buf = np.frombuffer(SEED.encode(), dtype=np.uint8).copy()
    lib.hc_host_leaves(_ptr(seed_buf), len(SEED), 40, 2, _ptr(want), n, _ptr(leaves))
    assert [bytes(row) for row in leaves] == [gemm.compute_leaf(SEED, i, n) for i in (40, 41)]
    assert keys.shape == (2,)


def test_digest_reaches_two_to_the_24(lib) -> None:
    # Crafted rows: all -64 times all -64 at n=4096 is exactly 2^24; -64 * 63 its negative side.
    n = 4096
    c = np.zeros((2, n), dtype=np.int32)
    c[0, :] = n * 64 * 64
    c[1, :] = -n * 64 * 63
    got = np.zeros(2, dtype=np.uint64)
    lib.hc_host_digest_i32(_ptr(c), n, 2, _ptr(got))
    assert got.tolist() == [_fmix_row(c[0].tolist()), _fmix_row(c[1].tolist())]


def test_golden_leaves(lib, gemm_vectors) -> None:
    ran = 0
    for v in gemm_vectors:
        n, seed, i = v["n"], v["seed"], v["i"]
        keys = gemm.loop_keys(seed, i, 1)
        ops = _generate(lib, "i8", np.int8, keys, n).reshape(2, n, n).astype(np.int32)
        c = ops[0] @ ops[1].T
        digests = np.zeros(n, dtype=np.uint64)
        lib.hc_host_digest_i32(_ptr(np.ascontiguousarray(c)), n, n, _ptr(digests))
        leaf = np.zeros(32, dtype=np.uint8)
        raw = np.frombuffer(seed.encode(), dtype=np.uint8).copy()
        lib.hc_host_leaves(_ptr(raw), len(seed), i, 1, _ptr(digests), n, _ptr(leaf))
        assert "0x" + bytes(leaf).hex() == v["leaf"]
        ran += 1
    assert ran == len(gemm_vectors)


# ---- the CPU miner's fused passes (optional accelerator of the NumPy backend) ----------


@pytest.mark.parametrize("first_word,words", [(0, 1), (0, 511), (3, 512), (1000, 513),
                                              (2**40, 1537)])
def test_cpu_generate_equals_the_ufunc_chunks(lib, first_word: int, words: int) -> None:
    from hashcloud.engine.rows import ChunkScratch

    key = gemm.loop_key(SEED, 9)
    want = np.empty(8 * words, dtype=np.float32)
    ChunkScratch(64, words_per_chunk=100, use_accel=False).generate_into(key, first_word, want)
    got = np.full(8 * words + 8, 99.0, dtype=np.float32)
    lib.hc_cpu_generate_f32(key, first_word, words, _ptr(got))
    assert np.array_equal(got[:-8], want) and (got[-8:] == 99.0).all()  # no overrun


def test_cpu_digest_equals_row_digests(lib) -> None:
    a, b = gemm.generate_operands(np, SEED, 0, 1, 192)
    c = np.ascontiguousarray(np.matmul(a[0], b[0]))
    got = np.zeros(192, dtype=np.uint64)
    lib.hc_cpu_digest_f32(_ptr(c), 192, 192, _ptr(got))
    assert np.array_equal(got, gemm.row_digests(np, c))


@pytest.mark.parametrize("n", [64, 256])
def test_loop_pipeline_same_output_with_and_without_the_accelerator(n: int) -> None:
    from hashcloud.engine.rows import LoopPipeline

    fast, plain = LoopPipeline(n), LoopPipeline(n, use_accel=False)
    assert fast.scratch.accel is not None and plain.scratch.accel is None
    for i in (0, 5):
        assert fast.output(SEED, i) == plain.output(SEED, i)
    assert fast.leaf(SEED, 3) == gemm.compute_leaf(SEED, 3, n)


def test_env_switch_keeps_the_numpy_path(monkeypatch) -> None:
    from hashcloud.engine import kernels
    from hashcloud.engine.rows import LoopPipeline

    monkeypatch.setenv(kernels.NO_C_KERNELS_ENV, "1")
    assert kernels.cpu_accelerator() is None
    assert LoopPipeline(64).scratch.accel is None


@pytest.mark.timeout(180)
@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="no nvcc here")
@pytest.mark.parametrize("arch", ["sm_75"])
def test_kernel_source_compiles_as_cuda(tmp_path, arch: str) -> None:
    """The device half of the header (tiled transpose, warp digests) builds for the GPU
    (no device needed); NVRTC builds the same source at run time."""
    import subprocess

    from hashcloud.engine.kernels import HEADER_PATH

    result = subprocess.run(["nvcc", "-x", "cu", "--std=c++14", f"-arch={arch}", "-c",
                             "-o", str(tmp_path / "k.o"), str(HEADER_PATH)],
                            capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr


def test_library_cache_is_private(tmp_path, monkeypatch) -> None:
    import os
    import stat

    from hashcloud.engine import kernels

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    private = kernels._cache_dir()
    assert private == tmp_path / "hashcloud"
    assert stat.S_IMODE(os.stat(private).st_mode) & 0o077 == 0
    os.chmod(private, 0o777)  # someone else could plant a library here: not used
    other = kernels._cache_dir()
    assert other != private and stat.S_IMODE(os.stat(other).st_mode) & 0o077 == 0
    os.rmdir(other)
