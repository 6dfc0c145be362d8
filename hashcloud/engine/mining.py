"""The mining engine (SPEC 1): leaves of consecutive loops on the chosen backend.

`Engine` is what `mine`, `bench` and `selftest` drive. It never imports a backend module:
the registry in `backends` loads the pipeline of the chosen backend by name, so the core
stays free of CuPy and a new backend is one module plus one registry line.
"""

from __future__ import annotations

from typing import Any

from hashcloud.engine.backends import (
    BackendChoice,
    load_pipeline,
    numpy_choice,
    select_backend,
)
from hashcloud.engine.device import fix_for
from hashcloud.engine.gemm import validate_range
from hashcloud.errors import BackendUnavailable, EngineError
from hashcloud.params import DEFAULT_N
from hashcloud.types import validate_n, validate_seed

__all__ = ["Engine", "compute_leaves", "suggested_batch_size"]


def suggested_batch_size(n: int, backend: str) -> int:
    """Loops per `Engine.compute_batch` call: about 0.1 s of work on CPU, more on GPU.

    Large enough to amortise per-call overhead, small enough that a mining round stops
    close to its deadline. On CuPy it is also the number of loops per device batch.
    """
    n = validate_n(n)
    target_flop = 1e10 if backend == "numpy" else 2e11
    per_loop = 2.0 * n**3
    return int(min(256, max(1, target_flop // per_loop)))


class Engine:
    """Mining engine: leaves of consecutive loops of one `n` on one backend (SPEC 1).

    Attributes: `backend` ("numpy" or "cupy"), `device` (human name), `peak_flops`
    (conservative upper bound of the device's FLOP/s, for SPEC 3's rate sanity check),
    `reason` (why this backend), `n`, and `batch_size` (suggested loops per
    `compute_batch` call). Buffers are allocated once, so memory stays bounded however
    many loops a round runs; only the returned 32-byte leaves accumulate at the caller.
    Use as a context manager or call `close()` to release device resources.
    """

    def __init__(
        self,
        backend: str | BackendChoice = "auto",
        n: int = DEFAULT_N,
        batch_size: int | None = None,
        lanes: int | None = None,
    ) -> None:
        choice = backend if isinstance(backend, BackendChoice) else select_backend(backend)
        self.n = validate_n(n)
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise EngineError(f"batch_size must be a positive integer, got {batch_size!r}")
        try:
            impl = self._load(choice, batch_size, lanes)
        except Exception as exc:  # CUDA/NVRTC/cuBLAS errors have no common base
            if choice.name == "numpy":
                raise
            why = f"cupy pipeline failed ({type(exc).__name__}: {exc})".splitlines()[0][:300]
            if backend != "auto":
                raise BackendUnavailable(f"backend {choice.name} could not start: {why}; "
                                         f"{fix_for(why)}") from None
            choice = numpy_choice(f"auto: numpy ({why}; for a GPU: {fix_for(why)})")
            impl = self._load(choice, batch_size, lanes)
        self._impl: Any = impl
        self.backend = choice.name
        self.device = choice.device
        self.peak_flops = choice.peak_flops
        self.peaks = choice.peaks
        self.reason = choice.reason
        self.batch_size = int(getattr(self._impl, "batch_size", None) or batch_size
                              or suggested_batch_size(self.n, self.backend))
        self.lanes = getattr(self._impl, "lanes", 1)
        describe = getattr(self._impl, "describe", None)
        if describe is not None:  # e.g. the GEMM path the GPU pipeline chose, and why
            self.reason = f"{self.reason}; {describe()}"

    def _load(self, choice: BackendChoice, batch_size: int | None, lanes: int | None) -> Any:
        """The backend's pipeline; a GPU pipeline sizes its own batches (None) from its
        measured GEMM time, the CPU one takes the suggested size."""
        wanted = batch_size or (suggested_batch_size(self.n, choice.name)
                                if choice.name == "numpy" else None)
        return load_pipeline(choice.name, self.n, wanted, lanes)

    def compute_batch(self, seed: str, start: int, count: int) -> list[bytes]:
        """Leaves of loops [start, start+count) in order (SPEC 1), reusing the buffers."""
        validate_seed(seed)
        validate_range(start, count)
        return self._impl.leaves(seed, start, count)

    def close(self) -> None:
        """Release device buffers and streams; the engine is unusable afterwards."""
        self._impl.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compute_leaves(
    seed: str, start: int, count: int, n: int = DEFAULT_N, backend: str = "numpy"
) -> list[bytes]:
    """Leaves of loops [start, start+count) (SPEC 1) on `backend` ("auto"/"numpy"/"cupy").

    Runs the batched `Engine` pipeline; returns `count` 32-byte leaves in loop order.
    """
    validate_seed(seed)
    validate_range(start, count)
    engine = Engine(backend, n=n)
    try:
        return engine.compute_batch(seed, start, count)
    finally:
        engine.close()
