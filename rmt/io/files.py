"""File access shared by the readers: regular files only, identity checks, bounded reads.

Tensors are read with ``pread`` into memory owned by the process, not memory-mapped: a
file truncated while it is mapped kills the process with SIGBUS (no Python handler can
recover from it), whereas a short ``pread`` is an ordinary error that becomes the
tensor's failed row. Before every tensor the file's identity (device, inode, size,
modification time) is compared with the one recorded when it was opened, so a file
replaced or rewritten in place during a run fails the tensors read after the change
instead of mixing old and new bytes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from rmt.errors import CheckpointError

# Bytes read per pread call: large enough to run at memory speed, small enough that a
# huge declared size is never allocated before the file has shown it holds the bytes.
READ_CHUNK = 16 * 2**20


@dataclass(frozen=True)
class FileIdentity:
    """What a file was when it was opened: a changed value means it changed on disk."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> FileIdentity:
        """Identity of a regular file (refusing FIFOs, devices and directories)."""
        st = regular_file_stat(path)
        return cls(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self, what: str = "", st: os.stat_result | None = None) -> None:
        """Raise :class:`CheckpointError` if the file is no longer the one opened.

        ``st`` is the ``fstat`` of an open descriptor; default: ``stat`` of the path.
        """
        if st is None:
            try:
                st = os.stat(self.path)
            except OSError as err:
                raise CheckpointError(self.path, f"{what}file disappeared during the run "
                                                 f"({err.strerror})") from None
        now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if now != (self.device, self.inode, self.size, self.mtime_ns):
            change = (f"size {self.size} -> {st.st_size} bytes" if st.st_size != self.size
                      else "rewritten or replaced")
            raise CheckpointError(self.path, f"{what}file changed on disk since it was opened "
                                             f"({change}); rerun on the finished file")


def regular_file_stat(path: str | Path) -> os.stat_result:
    """``os.stat`` of a regular file; anything else is a :class:`CheckpointError`.

    A FIFO or a character device would block or never end when read, and a directory
    cannot be read as a file: all are refused before anything is opened.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise CheckpointError(path, "dangling symbolic link") from None
        raise CheckpointError(path, "no such file or directory") from None
    except OSError as err:  # permission denied, symlink loop, name too long
        raise CheckpointError(path, f"cannot stat ({err.strerror or err})") from None
    except ValueError as err:  # an embedded NUL byte
        raise CheckpointError(repr(str(path)), f"not a valid path ({err})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO"
                if stat.S_ISFIFO(st.st_mode) else "a device or socket")
        raise CheckpointError(path, f"not a regular file ({kind})")
    return st


def read_bytes(identity: FileIdentity, offset: int, nbytes: int, what: str = "") -> np.ndarray:
    """``nbytes`` bytes at ``offset`` as a uint8 array, checked against a shrinking file.

    Parameters
    ----------
    identity : FileIdentity
        The file as opened; checked first, so a changed file fails here.
    offset, nbytes : int
        The byte range (Python ints: no overflow).
    what : str
        Prefix for error messages (``"tensor 'w': "``).
    """
    if offset < 0 or nbytes < 0 or offset + nbytes > identity.size:
        raise CheckpointError(identity.path, f"{what}bytes {offset}..{offset + nbytes} lie "
                                             f"outside the {identity.size}-byte file")
    try:
        fd = os.open(identity.path, os.O_RDONLY)
    except OSError as err:
        raise CheckpointError(identity.path, f"{what}cannot open ({err.strerror})") from None
    try:
        identity.check(what, os.fstat(fd))  # the file now open is the one listed
        out = np.empty(nbytes, dtype=np.uint8)
        view = memoryview(out)  # type: ignore[arg-type]  # ndarray is a buffer; numpy's stubs lag
        done = 0
        while done < nbytes:
            step = min(READ_CHUNK, nbytes - done)
            got = _pread_into(fd, view[done:done + step], offset + done)
            if got <= 0:
                raise CheckpointError(identity.path, f"{what}file ended at byte "
                                                     f"{offset + done} while reading (it "
                                                     "shrank on disk during the run)")
            done += got
    finally:
        os.close(fd)
    return out


def _pread_into(fd: int, buffer: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):  # Linux, macOS: no seek, no copy
        return os.preadv(fd, [buffer], offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.readv(fd, [buffer]) if hasattr(os, "readv") else _read_into(fd, buffer)


def _read_into(fd: int, buffer: memoryview) -> int:  # pragma: no cover - Windows
    data = os.read(fd, len(buffer))
    buffer[:len(data)] = data
    return len(data)


def fingerprint(path: str | Path, head: int = 65536, tail: int = 4096) -> str:
    """A cheap content fingerprint: SHA-256 of the size and the first and last bytes.

    It tells a checkpoint rewritten on disk (new header, other tensors) from the one a
    resume file was started on, at the cost of two small reads.
    """
    st = regular_file_stat(path)
    digest = hashlib.sha256(str(st.st_size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(head))
        if st.st_size > head:
            fh.seek(max(head, st.st_size - tail))
            digest.update(fh.read(tail))
    return digest.hexdigest()


def inside(base: Path, candidate: Path) -> bool:
    """Whether ``candidate`` resolves (symlinks followed) to a path inside ``base``."""
    try:
        real_base = base.resolve(strict=True)
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a loop (RuntimeError before 3.13),
        return False                                # or a NUL byte in the name
    return real == real_base or real_base in real.parents


def contained(base: Path, relative: str) -> Path | None:
    """``base / relative`` if ``relative`` is a relative path (no ``..``, no drive) naming
    an existing path inside ``base`` once symlinks are resolved, else None. How an index
    or a model names its other files: nothing it names may lie outside its directory."""
    parts = PurePosixPath(relative.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or not relative or ":" in parts.parts[0]:
        return None
    candidate = base / Path(*parts.parts)
    return candidate if inside(base, candidate) else None
