"""A slow, obviously-correct HC-GEMM-v1 (SPEC 1) used by tests to cross-check the fast path.

Python integers for SplitMix64 and the digests, NumPy int64 for the exact integer product:
no float, no wrap-around tricks, no shared code with `gemm`. Fine for n <= 256.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["reference_leaf", "reference_loop", "reference_row_digests", "splitmix64_words"]

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1


def splitmix64_words(key: int, count: int) -> list[int]:
    """The first `count` SplitMix64 words of SPEC 1.3 for `key`, with Python ints."""
    words = []
    for t in range(count):
        z = (key + (t + 1) * 0x9E3779B97F4A7C15) & MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        words.append(z ^ (z >> 31))
    return words


def _fmix_row(row: list[int]) -> int:
    """d_r of SPEC 1.7 for one row of the integer product."""
    total = 0
    for j, value in enumerate(row):
        x = (value & MASK32) ^ ((j * 0x9E3779B1) & MASK32)
        x = (x * 0x85EBCA6B) & MASK32
        x ^= x >> 13
        x = (x * 0xC2B2AE35) & MASK32
        x ^= x >> 16
        total += x
    return total


def reference_loop(seed: str, i: int, n: int) -> dict:
    """Every intermediate of loop `i` (SPEC 1.1-1.9) as plain Python/int64 values.

    Keys: loop_seed, key, words (first 4), A, B, C (int64 arrays), digests (Python ints),
    output (bytes), leaf (bytes).
    """
    ls = f"{seed}:{i}"
    key = int.from_bytes(hashlib.sha256(ls.encode("ascii")).digest()[:8], "little")
    words = splitmix64_words(key, 2 * n * n // 8)
    stream = b"".join(w.to_bytes(8, "little") for w in words)
    entries = [(b & 0x7F) - 64 for b in stream]
    a = np.array(entries[: n * n], dtype=np.int64).reshape(n, n)
    b = np.array(entries[n * n :], dtype=np.int64).reshape(n, n)
    c = a @ b  # exact: int64 never overflows here (|C| <= 2^24)
    digests = [_fmix_row(row) for row in c.tolist()]
    output = b"".join(d.to_bytes(8, "little") for d in digests)
    leaf = hashlib.sha256(ls.encode("ascii") + output).digest()
    return {"loop_seed": ls, "key": key, "words": words[:4], "A": a, "B": b, "C": c,
            "digests": digests, "output": output, "leaf": leaf}


def reference_leaf(seed: str, i: int, n: int) -> bytes:
    """leaf_i of SPEC 1.9 computed the slow, obvious way."""
    return reference_loop(seed, i, n)["leaf"]


def reference_row_digests(seed: str, i: int, n: int, rows: list[int]) -> list[int]:
    """d_r of SPEC 1.7 for `rows` only, the slow, obvious way (cross-checks the row audit).

    SPEC 3 v1.1 row audits recompute row r of C from row r of A and all of B; this does the
    same with Python-int SplitMix64 (whole stream up to the end of B, no word skipping) and
    an int64 product, sharing no code with `rows`. Fine for n <= 1024.
    """
    ls = f"{seed}:{i}"
    key = int.from_bytes(hashlib.sha256(ls.encode("ascii")).digest()[:8], "little")
    stream = b"".join(w.to_bytes(8, "little") for w in splitmix64_words(key, 2 * n * n // 8))
    entries = (np.frombuffer(stream, dtype=np.uint8).astype(np.int64) & 0x7F) - 64
    a = entries[: n * n].reshape(n, n)
    b = entries[n * n :].reshape(n, n)
    return [_fmix_row((a[r] @ b).tolist()) for r in rows]
