"""The ``LOCK`` file: one writer per chain store (SPEC 6 storage).

The writer holds ``flock(LOCK_EX | LOCK_NB)`` on it for as long as the store is open and
writes its pid into it, so a second writer is refused with the holder's pid. The kernel drops
the lock when the process dies, so a crashed writer never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from hashcloud.errors import StoreError, StoreLocked

__all__ = ["LOCK_NAME", "acquire_writer_lock", "writer_active"]

LOCK_NAME = "LOCK"


def acquire_writer_lock(data_dir: Path) -> int:
    """Take the exclusive writer lock; return its fd (keep it open to hold the lock).

    Raises StoreLocked naming the holder's pid, or StoreError if locking itself fails.
    """
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise StoreError(f"cannot lock chain store: {exc.strerror}") from None
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StoreLocked(f"chain store is locked by another process (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def writer_active(data_dir: Path) -> bool:
    """True if some process holds the writer lock on the store in ``data_dir``."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
