"""A NumPy-backed stand-in for the parts of CuPy and cuBLAS that `cupy_backend` drives.

Not a mock of results: every kernel launch runs the real kernel arithmetic of
`hc_kernels.h`, built for the host (`hc_X` on the GPU is `hc_host_X` here, same arguments),
and `gemmStridedBatchedEx` does a column-major strided batched GEMM with cuBLAS's argument
semantics (op, leading dimensions, strides), exact in int64/float64, refusing what cuBLAS's
8-bit tensor-core path refuses (not TN, leading dimensions or pointers not multiples of 4).

Streams are deferred queues: work runs only when the host synchronizes on an event or a
stream, in stream order, so a host read that forgot to wait sees stale memory (device memory
and pinned buffers start as a 0xA5 pattern) and the pipeline's output is wrong. Each kernel
launch is also checked to cover all the threads its arguments need.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

import numpy as np

from hashcloud.engine.kernels import host_library

GARBAGE = 0xA5

_local = threading.local()


class FakeStream:
    """A deferred in-order queue of device work."""

    def __init__(self, non_blocking: bool = False) -> None:
        self.ops: deque = deque()
        self.non_blocking = non_blocking
        self.executed = 0

    def enqueue(self, op) -> None:
        self.ops.append(op)

    def run_one(self) -> None:
        self.ops.popleft()()
        self.executed += 1

    def synchronize(self) -> None:
        while self.ops:
            self.run_one()

    def __enter__(self) -> FakeStream:
        _stack().append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _stack().pop()


NULL_STREAM = FakeStream()


def _stack() -> list[FakeStream]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def current_stream() -> FakeStream:
    stack = _stack()
    return stack[-1] if stack else NULL_STREAM


class FakeEvent:
    """Marks a point in a stream; `synchronize` runs that stream up to it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.fired = False
        self.time = 0.0
        self.stream: FakeStream | None = None

    def record(self, stream: FakeStream | None = None) -> None:
        stream = stream or current_stream()
        self.fired = False
        self.stream = stream

        def mark() -> None:
            self.fired = True
            self.time = time.perf_counter()

        stream.enqueue(mark)

    def synchronize(self) -> None:
        if self.stream is None:
            raise RuntimeError("event never recorded")
        while not self.fired:
            self.stream.run_one()

    @property
    def done(self) -> bool:
        return self.fired


def get_elapsed_time(start: FakeEvent, end: FakeEvent) -> float:
    if not (start.fired and end.fired):
        raise RuntimeError("cudaErrorNotReady: event not completed")
    return (end.time - start.time) * 1e3


class _Memory:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


class FakeArray:
    """Device memory: a NumPy array whose address is the device pointer."""

    def __init__(self, host: np.ndarray) -> None:
        self.a = host
        self.data = _Memory(host.ctypes.data)
        self.shape = host.shape
        self.dtype = host.dtype
        self.size = host.size

    def __getitem__(self, key: Any) -> FakeArray:
        return FakeArray(self.a[key])

    def reshape(self, *shape: Any) -> FakeArray:
        return FakeArray(self.a.reshape(*shape))

    def fill(self, value: Any) -> None:
        current_stream().enqueue(lambda: self.a.fill(value))

    def set(self, host: np.ndarray, stream: FakeStream | None = None) -> None:
        snapshot = np.array(host, dtype=self.dtype, copy=True).reshape(self.shape)
        (stream or current_stream()).enqueue(lambda: np.copyto(self.a, snapshot))

    def get(self, stream: FakeStream | None = None, out: np.ndarray | None = None,
            blocking: bool = True) -> np.ndarray:
        stream = stream or current_stream()
        out = np.empty(self.shape, self.dtype) if out is None else out
        stream.enqueue(lambda: np.copyto(out, self.a))
        if blocking:
            stream.synchronize()
        return out


def _garbage(shape: Any, dtype: Any) -> np.ndarray:
    a = np.empty(shape, dtype=dtype)
    a.view(np.uint8).reshape(-1)[:] = GARBAGE
    return a


def empty(shape: Any, dtype: Any = np.float32) -> FakeArray:
    return FakeArray(_garbage(shape, dtype))


def _scalar(x: Any) -> int:
    if isinstance(x, FakeArray):
        return x.data.ptr
    if isinstance(x, np.generic):
        return int(x)
    raise TypeError(f"kernel argument of type {type(x).__name__}: pass numpy scalars")


def _threads(grid: tuple, block: tuple) -> int:
    return int(np.prod(grid)) * int(np.prod(block))


def _needed(name: str, args: list[int]) -> int | tuple:
    """Threads (or exact grid) a launch must cover, from its arguments."""
    if name in ("hc_keys", "hc_leaves"):
        return args[3]
    if name.startswith("hc_generate_a_"):
        n, count = args[1], args[2]
        return count * n * n // 8
    if name.startswith("hc_generate_bt_"):
        n, count = args[1], args[2]
        return ("grid", (n // 64, n // 64, count))
    if name.startswith("hc_digest_"):
        return args[2] * 32  # one warp per row
    raise KeyError(name)


class FakeKernel:
    def __init__(self, lib: ctypes.CDLL, name: str, log: list) -> None:
        self.name = name
        self.fn = getattr(lib, "hc_host_" + name.removeprefix("hc_"))
        self.log = log

    def __call__(self, grid: tuple, block: tuple, args: tuple, **kwargs: object) -> None:
        values = [_scalar(a) for a in args]
        need = _needed(self.name, values)
        if isinstance(need, tuple):
            assert tuple(grid) == need[1], (self.name, grid, need)
        else:
            assert _threads(grid, block) >= need, (self.name, grid, block, need)
        self.log.append(self.name)
        current_stream().enqueue(lambda: self.fn(*values))


class FakeRawModule:
    def __init__(self, code: str, options: tuple = (), **kwargs: object) -> None:
        assert "hc_generate_bt_" in code
        self.lib = host_library()
        self.log: list[str] = []

    def get_function(self, name: str) -> FakeKernel:
        return FakeKernel(self.lib, name, self.log)


# ---- cuBLAS ---------------------------------------------------------------------------

_TYPES = {0: (np.float32, ctypes.c_float), 3: (np.int8, ctypes.c_int8),
          10: (np.int32, ctypes.c_int32), 14: (np.uint16, ctypes.c_uint16)}
_COMPUTE_OK = {72: (3, 10), 68: None, 75: None, 77: None}


class NotSupportedError(RuntimeError):
    """cuBLAS's CUBLAS_STATUS_NOT_SUPPORTED."""


def _colmajor(ptr: int, ctype: Any, rows: int, cols: int, ld: int) -> np.ndarray:
    flat = np.ctypeslib.as_array((ctype * (ld * cols)).from_address(ptr))
    return flat.reshape(cols, ld)[:, :rows].T


def _as_number(m: np.ndarray, atype: int) -> np.ndarray:
    if atype == 14:  # bf16 bits -> float32 exactly
        return (m.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return m.astype(np.float64)  # exact: entries are 7-bit, |C| <= 2^24 < 2^53


class FakeCublas:
    """`gemmStridedBatchedEx` with cuBLAS semantics; counts calls."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def gemmStridedBatchedEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda,  # noqa: N802
                             strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc, strideC,  # noqa: N803
                             batchCount, computeType, algo) -> None:  # noqa: N803
        a_np, a_ct = _TYPES[Atype]
        c_np, c_ct = _TYPES[Ctype]
        assert Btype == Atype
        if computeType == 72:
            if (Atype, Ctype) != (3, 10):
                raise NotSupportedError("32I compute needs 8I inputs and 32I output")
            if (transa, transb) != (1, 0):
                raise NotSupportedError("8-bit tensor-core GEMM needs TN")
            if lda % 4 or ldb % 4 or m % 4 or A % 4 or B % 4 or C % 4:
                raise NotSupportedError("8-bit GEMM needs multiples of 4")
        elif Atype == 3:
            raise NotSupportedError("8I inputs need 32I compute")
        scalar = ctypes.c_int32 if computeType == 72 else ctypes.c_float
        if scalar.from_address(alpha).value != 1 or scalar.from_address(beta).value != 0:
            raise NotSupportedError("alpha must be 1 and beta 0 here")
        self.calls.append({"transa": transa, "transb": transb, "m": m, "n": n, "k": k,
                           "batch": batchCount, "compute": computeType})
        item = np.dtype(a_np).itemsize
        citem = np.dtype(c_np).itemsize

        def run() -> None:
            for i in range(batchCount):
                am = _colmajor(A + i * strideA * item, a_ct, k if transa else m,
                               m if transa else k, lda)
                bm = _colmajor(B + i * strideB * item, a_ct, n if transb else k,
                               k if transb else n, ldb)
                op_a = _as_number(am, Atype)
                op_b = _as_number(bm, Atype)
                op_a = op_a.T if transa else op_a
                op_b = op_b.T if transb else op_b
                cm = _colmajor(C + i * strideC * citem, c_ct, m, n, ldc)
                cm[...] = (op_a @ op_b).astype(c_np)

        current_stream().enqueue(run)


def fake_cuda(free_bytes: int = 8 << 30) -> SimpleNamespace:
    """A module set like `cupy_backend.load_cuda()`, backed by NumPy and the host kernels."""
    cuda_ns = SimpleNamespace(
        Stream=FakeStream,
        Event=FakeEvent,
        get_elapsed_time=get_elapsed_time,
        device=SimpleNamespace(get_cublas_handle=lambda: 0),
        runtime=SimpleNamespace(memGetInfo=lambda: (free_bytes, 2 * free_bytes)),
    )
    cp = SimpleNamespace(cuda=cuda_ns, empty=empty, RawModule=FakeRawModule,
                         uint8=np.uint8, uint64=np.uint64, int8=np.int8, int32=np.int32,
                         float32=np.float32)
    cupyx = SimpleNamespace(empty_pinned=_garbage)
    return SimpleNamespace(cp=cp, cupyx=cupyx, cublas=FakeCublas())
