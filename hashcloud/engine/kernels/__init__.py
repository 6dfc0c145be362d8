"""The HC-GEMM-v1 kernel source (SPEC 1) and its host build, for the GPU and the tests.

`hc_kernels.h` holds SplitMix64, entry extraction, the index maps of the tensor-core
layout, fmix32 row digests and SHA-256 of loop keys and leaves, written once: NVRTC compiles
it for the GPU (`cupy_backend`), and `host_library` compiles the same file with the system C
compiler into a shared library loaded through `ctypes`, so the arithmetic the GPU runs is
checked on any CPU (tests/engine/test_kernels_host.py, scripts/gpu_check.py) and a NumPy
stand-in for CuPy can run the real kernels (tests/engine/fake_cupy.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from hashcloud.errors import EngineError

__all__ = [
    "HEADER_PATH",
    "HOST_FUNCTIONS",
    "NO_C_KERNELS_ENV",
    "cpu_accelerator",
    "find_c_compiler",
    "host_library",
    "source",
]

HEADER_PATH = Path(__file__).with_name("hc_kernels.h")
"""The one kernel source file."""

_P = ctypes.c_void_p
_I = ctypes.c_int
_U64 = ctypes.c_uint64
_U32 = ctypes.c_uint32

HOST_FUNCTIONS: dict[str, tuple[object, list[object]]] = {
    # name: (restype, argtypes); the kernel `hc_X` of the GPU is `hc_host_X` here.
    "hc_host_keys": (None, [_P, _I, _U64, _I, _P]),
    **{f"hc_host_generate_{part}_{t}": (None, [_P, _I, _I, _P])
       for part in ("a", "bt") for t in ("i8", "f32", "bf16")},
    "hc_host_digest_i32": (None, [_P, _I, _U64, _P]),
    "hc_host_digest_f32": (None, [_P, _I, _U64, _P]),
    "hc_host_leaves": (None, [_P, _I, _U64, _I, _P, _I, _P]),
    "hc_host_splitmix64": (_U64, [_U64, _U64]),
    "hc_host_pack_entries": (_U64, [_U64]),
    "hc_host_entry": (_I, [_U64, _I]),
    "hc_host_bf16_bits": (ctypes.c_uint16, [_I]),
    "hc_host_entry_dest": (_U64, [_U64, _U64]),
    "hc_host_fmix32": (_U32, [_U32, _U32]),
    "hc_host_loop_key": (_U64, [ctypes.c_char_p, _I, _U64]),
    "hc_host_sha256": (None, [ctypes.c_char_p, _U64, _P]),
    "hc_cpu_generate_f32": (None, [_U64, _U64, _U64, _P]),
    "hc_cpu_digest_f32": (None, [_P, _I, _U64, _P]),
}
"""The host library's exports with their C signatures."""

NO_C_KERNELS_ENV = "HASHCLOUD_NO_C_KERNELS"
"""Set (non-empty) to keep the CPU miner on NumPy ufuncs only."""

_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None
_accel_failed = False


def source() -> str:
    """The kernel source text (compiled by NVRTC as CUDA C++)."""
    return HEADER_PATH.read_text(encoding="ascii")


def find_c_compiler() -> str | None:
    """The system C compiler (`$CC`, `cc`, `gcc` or `clang`), or None if there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    """A directory only this user can write, for the built library: the user's cache
    (`$XDG_CACHE_HOME/hashcloud` or `~/.cache/hashcloud`, mode 0700), else a fresh private
    temp directory. Never a shared, predictable path: loading a library someone else could
    have planted there would run their code."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hashcloud"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = base.stat()
        if info.st_uid == os.getuid() and not info.st_mode & 0o022:
            return base
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="hashcloud-kernels-"))


def host_library() -> ctypes.CDLL:
    """Compile `hc_kernels.h` for this CPU (once per source version) and load it.

    The library is cached in the user's private cache directory under the source's hash,
    written atomically. Raises `EngineError` when no C compiler exists or the build fails.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        text = source()
        compiler = find_c_compiler()
        if compiler is None:
            raise EngineError("no C compiler found (set CC) to build the host kernels")
        tag = hashlib.sha256(text.encode("ascii") + b"O3-native").hexdigest()[:16]
        target = _cache_dir() / f"hc_kernels-{tag}.so"
        if not target.exists():
            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "hc_kernels.c"
                src.write_text(text, encoding="ascii")
                out = Path(tmp) / "hc_kernels.so"
                # Tuned for this CPU (the library never leaves it); plain -O2 if refused.
                for flags in (["-O3", "-march=native"], ["-O2"]):
                    result = subprocess.run(
                        [compiler, *flags, "-std=c99", "-shared", "-fPIC", "-o", str(out),
                         str(src)], capture_output=True, text=True, timeout=120, check=False)
                    if result.returncode == 0:
                        break
                if result.returncode != 0:
                    raise EngineError(f"host kernel build failed: {result.stderr.strip()[:500]}")
                staged = target.with_suffix(f".{os.getpid()}.tmp")
                shutil.copyfile(out, staged)
                os.replace(staged, target)
        lib = ctypes.CDLL(str(target))
        for name, (restype, argtypes) in HOST_FUNCTIONS.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        _loaded = lib
        return lib


def cpu_accelerator() -> ctypes.CDLL | None:
    """The host library for the CPU miner's generation and digests, or None: an optional
    speed-up only (no compiler, a failed build or `HASHCLOUD_NO_C_KERNELS` set mean the
    NumPy ufunc path). Tried once per process."""
    global _accel_failed
    if os.environ.get(NO_C_KERNELS_ENV) or _accel_failed:
        return None
    try:
        return host_library()
    except (EngineError, OSError, subprocess.SubprocessError):
        _accel_failed = True
        return None
