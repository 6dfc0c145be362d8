"""The CuPy-only part of HC-GEMM-v1 (SPEC 1): fused kernels, batched GEMM, stream overlap.

Imported by name through the registry (`backends.load_pipeline`) when the backend is
"cupy"; importing this module does not import CuPy (only `CupyPipeline` does), so the
kernel bodies below are plain functions over array operators that the NumPy test-suite
checks against `gemm` without a GPU:

- `splitmix64_body(key, counter)`: SPEC 1.3 word for `counter = (t+1) * gamma`;
- `entry_body(key, e)`: SPEC 1.4 entry `e` of a loop's stream, as float32;
- `fmix32_body(c, colmix)`: SPEC 1.7 fmix32 of the product (uint32 in, uint32 out);
- `build_kernels(xp, fuse)`: the generation and row-digest kernels, fused by `cupy.fuse`
  on the GPU and run as plain NumPy when `fuse` is the identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from hashcloud.engine.gemm import (
    FMIX_M1,
    FMIX_M2,
    SPLITMIX_GAMMA,
    SPLITMIX_M1,
    SPLITMIX_M2,
    column_mix,
    loop_keys,
    loop_seed,
)

__all__ = [
    "CupyPipeline",
    "build_kernels",
    "create_pipeline",
    "entry_body",
    "fmix32_body",
    "splitmix64_body",
]

# Constants as typed scalars so the fused kernels stay in uint64 / uint32 / float32.
_GAMMA = np.uint64(SPLITMIX_GAMMA)
_SM1 = np.uint64(SPLITMIX_M1)
_SM2 = np.uint64(SPLITMIX_M2)
_FM1 = np.uint32(FMIX_M1)
_FM2 = np.uint32(FMIX_M2)
_ONE64 = np.uint64(1)
_THREE64 = np.uint64(3)
_SEVEN64 = np.uint64(7)
_EIGHT64 = np.uint64(8)
_MASK7 = np.uint64(0x7F)
_OFFSET = np.float32(64)


def splitmix64_body(key: Any, counter: Any) -> Any:
    """SPEC 1.3: `word_t` from `key` and `counter = (t+1) * gamma` (uint64, wrapping)."""
    z = key + counter
    z = (z ^ (z >> np.uint64(30))) * _SM1
    z = (z ^ (z >> np.uint64(27))) * _SM2
    return z ^ (z >> np.uint64(31))


def entry_body(key: Any, e: Any) -> Any:
    """SPEC 1.4-1.5: float32 value of entry `e` (uint64 index into the loop's byte stream).

    Entry e is byte e % 8 (little-endian) of word e // 8; each GPU thread recomputes its
    word, which is far cheaper than a pass through memory.
    """
    word = splitmix64_body(key, ((e >> _THREE64) + _ONE64) * _GAMMA)
    byte = (word >> ((e & _SEVEN64) * _EIGHT64)) & _MASK7
    return byte.astype(np.float32) - _OFFSET


def fmix32_body(c: Any, colmix: Any) -> Any:
    """SPEC 1.7: fmix32 of `uint32(C[r, j]) ^ (j * 0x9E3779B1)`, all uint32 wrapping.

    `c` is the int32 product reinterpreted as uint32, `colmix` the per-column term.
    """
    x = (c ^ colmix) * _FM1
    x = x ^ (x >> np.uint32(13))
    x = x * _FM2
    return x ^ (x >> np.uint32(16))


def build_kernels(xp: Any, fuse: Callable[[Callable], Callable]) -> dict[str, Callable]:
    """The two element-wise stages as (possibly fused) kernels over `xp`.

    `generate(keys, e)`: keys uint64 (b, 1), e uint64 (2*n*n,) -> float32 (b, 2*n*n).
    `digests(c, colmix)`: c float32 (b, n, n), colmix uint32 (n,) -> uint64 (b, n).
    With `fuse=cupy.fuse` each is one GPU kernel (the digest one an element-wise map fused
    into its row reduction); with the identity they run on NumPy for the tests.
    """

    def generate(keys: Any, e: Any) -> Any:
        return entry_body(keys, e)

    def digests(c: Any, colmix: Any) -> Any:
        # float32 -> int32 is exact (SPEC 1.6); the uint32 cast is SPEC 1.7's uint32(v).
        x = fmix32_body(c.astype(np.int32).astype(np.uint32), colmix)
        return xp.sum(x.astype(np.uint64), axis=-1)

    return {"generate": fuse(generate), "digests": fuse(digests)}


def _enable_tf32(cupy: Any) -> None:
    """Let cuBLAS use TF32 tensor cores for float32 GEMM: exact here by SPEC 1.6."""
    try:
        from cupy._core import _routines_linalg as linalg

        linalg.set_compute_type(cupy.float32, linalg.COMPUTE_TYPE_TF32)
    except (ImportError, AttributeError):  # older/newer CuPy: keep the default (also exact)
        pass


class CupyPipeline:
    """GPU pipeline: batches of loops generated, multiplied and digested on the device.

    Two slots (stream, device buffers, pinned host buffer) alternate: while the GPU works
    on batch k in one stream, the host hashes the digests of batch k-1 (SHA256 of SPEC
    1.9), so hashing overlaps device work. Memory is fixed: 2 slots of `batch_size` loops.
    """

    def __init__(self, n: int, batch_size: int) -> None:
        import cupy
        import cupyx

        self.cp = cupy
        self.n = n
        self.batch_size = batch_size
        _enable_tf32(cupy)
        self.kernels = build_kernels(cupy, cupy.fuse)
        self.entry_index = cupy.arange(2 * n * n, dtype=cupy.uint64)
        self.colmix = column_mix(cupy, n)
        self.streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(2)]
        self.c = [cupy.empty((batch_size, n, n), dtype=cupy.float32) for _ in range(2)]
        self.host = [cupyx.empty_pinned((batch_size, n), dtype=np.uint64) for _ in range(2)]

    def _launch(self, slot: int, keys: np.ndarray) -> None:
        """Queue generation, GEMM, digests and the device->host copy of one batch."""
        cp = self.cp
        b, n = len(keys), self.n
        with self.streams[slot]:
            dev_keys = cp.asarray(keys).reshape(b, 1)
            ab = self.kernels["generate"](dev_keys, self.entry_index).reshape(b, 2, n, n)
            c = self.c[slot][:b]
            cp.matmul(ab[:, 0], ab[:, 1], out=c)  # SPEC 1.6: float32/TF32 exact
            d = self.kernels["digests"](c, self.colmix)
            d.get(stream=self.streams[slot], out=self.host[slot][:b], blocking=False)

    def _collect(self, slot: int, seed: str, start: int, count: int) -> list[bytes]:
        """Wait for a slot's batch and hash its leaves (SPEC 1.8-1.9) on the host."""
        self.streams[slot].synchronize()
        host = self.host[slot]
        leaves = []
        for k in range(count):
            h = hashlib.sha256(loop_seed(seed, start + k).encode("ascii"))
            h.update(host[k].astype("<u8", copy=False).tobytes())
            leaves.append(h.digest())
        return leaves

    def leaves(self, seed: str, start: int, count: int) -> list[bytes]:
        """Leaves of loops [start, start+count), batch k+1 queued before batch k is hashed."""
        out: list[bytes] = []
        pending: tuple[int, int, int] | None = None
        slot = 0
        for lo in range(start, start + count, self.batch_size):
            b = min(self.batch_size, start + count - lo)
            self._launch(slot, loop_keys(seed, lo, b))
            if pending is not None:
                out.extend(self._collect(pending[0], seed, pending[1], pending[2]))
            pending = (slot, lo, b)
            slot ^= 1
        if pending is not None:
            out.extend(self._collect(pending[0], seed, pending[1], pending[2]))
        return out

    def close(self) -> None:
        """Wait for queued work and drop the device buffers."""
        for s in self.streams:
            s.synchronize()
        self.c = []
        self.host = []


def create_pipeline(n: int, batch_size: int, lanes: int | None = None) -> CupyPipeline:
    """The registry entry point: one GPU pipeline (`lanes` is a CPU notion, ignored)."""
    del lanes
    return CupyPipeline(n, batch_size)
