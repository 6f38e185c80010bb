"""Atomic file writes: a capture is either complete on disk or not there at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path beside ``path`` for writers that want a file name (tifffile, encoders).

    On success the file is fsynced and renamed into place; on any error (including ENOSPC) it
    is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        with contextlib.suppress(OSError):  # vfat (a CIRCUITPY drive) has no modes to set
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a capture is an ordinary file
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Write through a file object; the file appears complete at ``path`` or not at all."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one existing file (through links, ``..`` or a case-blind
    disk): writing ``b`` would replace ``a``."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing (a new output cannot be an input) or unreadable
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)
