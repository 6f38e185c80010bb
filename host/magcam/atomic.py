"""Atomic file writes: a capture is either complete on disk or not there at all."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path beside ``path`` for writers that want a file name (tifffile, encoders).

    On success the file is fsynced and renamed into place; on any error (including ENOSPC) it
    is removed and ``path`` is untouched. A symlink at ``path`` stays a link: the file it points
    to is replaced. Anything at ``path`` that is not a regular file (a device such as
    ``/dev/sdb``, a pipe, a socket, a directory) raises ``NotRegularFileError`` before any
    work: a rename would put a file in its place.
    """
    path = writable_target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:  # it names the hidden temporary: say which file could not be written
        e.filename = str(path)
        raise
    os.close(fd)
    try:
        with contextlib.suppress(OSError):  # vfat (a CIRCUITPY drive) has no modes to set
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a capture is an ordinary file
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:  # a failed write() (ENOSPC) names no file
            e.filename = str(path)
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


class NotRegularFileError(OSError):
    """The output path holds something a file must not replace (a device, pipe, socket, directory)."""


def writable_target(path: str | os.PathLike) -> Path:
    """Where writing ``path`` atomically puts the file: the path itself, or the file a symlink
    there points to. Raises ``NotRegularFileError`` if that exists and is not a regular file."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError:  # unreadable: let the write itself say why
        return path
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a device, pipe or socket)"
        raise NotRegularFileError(errno.EEXIST, f"{kind}: not replacing it with a file", str(path))
    return path


def output_problem(out: str | os.PathLike, inputs=(), *, make_dirs: bool = False) -> str | None:
    """Why ``out`` cannot take an atomic write, said before any work (or None): its folder is
    missing (unless ``make_dirs``: then the nearest existing one must be a writable folder) or
    read-only, it is a directory or a device, or it is one of ``inputs`` (paths, or None for
    absent ones), which writing it would destroy. Callers prefix the path."""
    out = Path(out)
    clash = next((i for i in inputs if i is not None and same_file(i, out)), None)
    if clash is not None:
        return f"is also an input ({clash}); write to a new name"
    try:
        target = writable_target(out)
    except NotRegularFileError as e:
        return e.strerror
    folder = target.parent
    if not folder.is_dir():
        if not make_dirs:
            return f"directory {folder} does not exist"
        folder = next(p for p in target.parents if p.exists())  # "." or "/" at the latest
        if not folder.is_dir():
            return f"{folder} is not a directory"
    if not os.access(folder, os.W_OK):
        return f"directory {folder} is not writable"
    return None


def repeated(paths) -> tuple | None:
    """The first pair of ``paths`` that name one file (the same name, or through links), or
    None: a frame given twice would be merged with itself."""
    seen: dict = {}
    for p in paths:
        try:
            st = os.stat(p)
            key = (st.st_dev, st.st_ino)
        except OSError:  # missing: its reader names it; compare names only
            key = os.path.normcase(os.path.abspath(p))
        if key in seen:
            return seen[key], p
        seen[key] = p
    return None


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


def link_new(src: Path, dst: Path) -> bool:
    """Give the complete file ``src`` the name ``dst`` unless ``dst`` exists; False if it does.

    A hard link is atomic and never replaces: the name appears with all the data or not at
    all. Where the filesystem has no hard links (FAT, some network shares), ``dst`` is
    reserved with O_EXCL and the file renamed over the reservation."""
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV):
            raise
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    try:
        os.replace(src, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
        raise
    return True


def missing_dirs(path: str | os.PathLike) -> list[Path]:
    """The folders ``Path(path).mkdir(parents=True)`` would create, innermost first."""
    path = Path(path)
    return [d for d in (path, *path.parents) if not d.exists()]


def remove_empty(dirs: list[Path]) -> None:
    """Remove ``dirs`` (innermost first, as ``missing_dirs`` gives them) while they are empty: the
    folders a run made and then wrote nothing into. One that is not empty stays, with its parents."""
    for d in dirs:
        try:
            d.rmdir()
        except FileNotFoundError:  # already gone
            continue
        except OSError:  # not empty: something was written there
            break
