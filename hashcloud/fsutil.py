"""Durable file operations, written once (acknowledged means durable).

- `fsync_dir`: make a rename or a new directory entry durable.
- `atomic_replace`: replace a file with new bytes so a crash leaves the old or the new file,
  never a mix (temp file in the same directory, fsync, rename, fsync of the directory).
- `create_exclusive`: create a new file that must not exist yet, atomically and never
  replacing anything (O_EXCL temp file, fsync, hard link to the final name, fsync dir); key
  files and proof files use it, so a name that exists (a key!) is never overwritten.

Record framing (one format for every append-only log: the block log and the mempool journal)
is added here by the store work; the functions above are what every writer shares.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["atomic_replace", "create_exclusive", "fsync_dir"]


def fsync_dir(path: Path | str) -> None:
    """fsync directory `path`, so a rename or file creation inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    """A fresh hidden temp name beside `path` (same directory, so rename/link is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_replace(path: Path | str, data: bytes, *, durable: bool = True,
                   mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically; with `durable`, fsync file and directory.

    The temp file is removed on any failure, so an error leaves `path` as it was.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def create_exclusive(path: Path | str, data: bytes, *, mode: int = 0o644) -> None:
    """Create `path` holding `data`, durably, raising FileExistsError if it exists.

    Readers never see a partial file (the name appears only once the content is on disk),
    and two racing creators cannot both succeed: the hard link is the atomic test-and-set.
    """
    path = Path(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
