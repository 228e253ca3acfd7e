"""Byte ranges of zip entries (torch checkpoints, .npz), read safely.

Stored entries are read with ``pread`` at their offset in the archive (their CRC-32
verified once per process, then only the bytes asked for are read); compressed entries
are decompressed as a stream and never past the bytes their tensors need, so a zip bomb
inflates no further than a real tensor would. Encrypted entries, unknown compression
methods, damaged local headers and bad CRCs are :class:`~rmt.errors.CheckpointError`
naming the file and the entry.
"""

from __future__ import annotations

import functools
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rmt.errors import CheckpointError
from rmt.io.files import READ_CHUNK, FileIdentity, read_bytes

# A compressed entry may inflate to at most this many times its compressed size: real
# weights deflate to ~90% of their size, a zip bomb to 0.1%.
MAX_INFLATE_RATIO = 100

ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError,
              EOFError, ValueError, UnicodeDecodeError, struct.error)

# Entries whose CRC-32 was verified in this process (identity, entry name).
_VERIFIED: set[tuple[FileIdentity, str]] = set()


@functools.lru_cache(maxsize=4)
def _archive(identity: FileIdentity) -> zipfile.ZipFile:
    # One parsed central directory per archive and process: re-parsing it for every
    # compressed member would make a many-member .npz quadratic.
    return zipfile.ZipFile(identity.path)


def open_zip(path: Path) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The archive and its entries by name; a damaged central directory is an error."""
    try:
        zf = zipfile.ZipFile(path)
        infos = {info.filename: info for info in zf.infolist()}
    except ZIP_ERRORS as err:
        raise CheckpointError(path, f"not a readable zip archive ({type(err).__name__}: "
                                    f"{err})") from None
    return zf, infos


def entry_problem(info: zipfile.ZipInfo, needed: int | None = None) -> str | None:
    """Why an entry is refused (None: it is fine), before any of it is read.

    ``needed`` is the number of bytes its tensors use: a compressed entry that declares
    more is refused, as is one that inflates more than :data:`MAX_INFLATE_RATIO` times.
    """
    if info.flag_bits & 0x1:
        return "encrypted zip entry"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                  zipfile.ZIP_LZMA):
        return f"unsupported zip compression method {info.compress_type}"
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        return "stored entry whose sizes disagree (damaged zip)"
    if info.compress_type != zipfile.ZIP_STORED:
        if info.file_size > MAX_INFLATE_RATIO * max(info.compress_size, 1) + 2**20:
            return (f"compressed entry inflates {info.compress_size} bytes to "
                    f"{info.file_size} (refused: more than {MAX_INFLATE_RATIO}x)")
        if needed is not None and info.file_size > needed:
            return (f"compressed entry holds {info.file_size} bytes where its tensors need "
                    f"{needed}")
    return None


@dataclass(frozen=True)
class ZipEntry:
    """One entry of a zip archive on disk, read by byte range (picklable)."""

    identity: FileIdentity
    name: str
    header_offset: int
    compress_type: int
    compress_size: int
    file_size: int
    crc: int
    what: str = ""

    @classmethod
    def of(cls, identity: FileIdentity, info: zipfile.ZipInfo, what: str = "") -> ZipEntry:
        """The entry ``info`` of the archive ``identity``; ``what`` prefixes messages."""
        return cls(identity, info.filename, info.header_offset, info.compress_type,
                   info.compress_size, info.file_size, info.CRC,
                   f"{what}zip entry {info.filename}: ")

    def read(self, begin: int, end: int) -> np.ndarray:
        """Bytes ``begin..end`` of the entry's uncompressed data, as a uint8 array."""
        if not 0 <= begin <= end <= self.file_size:
            raise CheckpointError(self.identity.path, f"{self.what}bytes {begin}..{end} lie "
                                                      f"outside its {self.file_size} bytes")
        if self.compress_type == zipfile.ZIP_STORED:
            return self._read_stored(begin, end)
        return self._read_compressed(begin, end)

    def _data_offset(self) -> int:
        local = read_bytes(self.identity, self.header_offset, 30, self.what).tobytes()
        if local[:4] != b"PK\x03\x04":
            raise CheckpointError(self.identity.path, f"{self.what}corrupt zip: no local "
                                                      "header where the directory points")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        name = read_bytes(self.identity, self.header_offset + 30, name_len, self.what)
        if name.tobytes().decode("utf-8", "replace") != self.name:
            raise CheckpointError(self.identity.path, f"{self.what}corrupt zip: the local "
                                                      "header names another entry")
        return self.header_offset + 30 + name_len + extra_len

    def _read_stored(self, begin: int, end: int) -> np.ndarray:
        start = self._data_offset()
        key = (self.identity, self.name)
        if key in _VERIFIED:
            return read_bytes(self.identity, start + begin, end - begin, self.what)
        # First read of this entry: stream all of it once for its CRC-32, keeping only the
        # bytes asked for.
        out = np.empty(end - begin, dtype=np.uint8)
        crc = 0
        for pos in range(0, self.file_size, READ_CHUNK):
            chunk = read_bytes(self.identity, start + pos,
                               min(READ_CHUNK, self.file_size - pos), self.what)
            crc = zlib.crc32(chunk, crc)  # type: ignore[arg-type]  # ndarray is a buffer
            lo, hi = max(begin, pos), min(end, pos + chunk.size)
            if lo < hi:
                out[lo - begin:hi - begin] = chunk[lo - pos:hi - pos]
        if crc != self.crc:
            raise CheckpointError(self.identity.path, f"{self.what}bad CRC-32 (damaged file)")
        _VERIFIED.add(key)
        return out

    def _read_compressed(self, begin: int, end: int) -> np.ndarray:
        self.identity.check(self.what)
        out = np.empty(end - begin, dtype=np.uint8)
        try:
            with _archive(self.identity).open(self.name) as fh:
                pos = 0
                while pos < self.file_size:
                    chunk = fh.read(min(READ_CHUNK, self.file_size - pos))
                    if not chunk:
                        raise CheckpointError(self.identity.path, f"{self.what}compressed "
                                                                  "data ends early")
                    lo, hi = max(begin, pos), min(end, pos + len(chunk))
                    if lo < hi:
                        out[lo - begin:hi - begin] = np.frombuffer(chunk, np.uint8)[
                            lo - pos:hi - pos]
                    pos += len(chunk)
                fh.read(1)  # at the end of the entry: zipfile checks the CRC-32 here
        except CheckpointError:
            raise
        except ZIP_ERRORS as err:
            raise CheckpointError(self.identity.path, f"{self.what}damaged zip entry "
                                                      f"({type(err).__name__}: {err})") from None
        return out

    def head(self, nbytes: int) -> bytes:
        """The first ``nbytes`` bytes (a member's header), without reading the rest: no
        CRC check, which the full read does."""
        nbytes = min(nbytes, self.file_size)
        if self.compress_type == zipfile.ZIP_STORED:
            return read_bytes(self.identity, self._data_offset(), nbytes, self.what).tobytes()
        self.identity.check(self.what)
        try:
            with _archive(self.identity).open(self.name) as fh:
                return fh.read(nbytes)
        except ZIP_ERRORS as err:
            raise CheckpointError(self.identity.path, f"{self.what}damaged zip entry "
                                                      f"({type(err).__name__}: {err})") from None

    def read_all(self, limit: int) -> bytes:
        """The whole entry (small members: pickles, headers), at most ``limit`` bytes."""
        if self.file_size > limit:
            raise CheckpointError(self.identity.path, f"{self.what}{self.file_size} bytes, "
                                                      f"more than the {limit} allowed")
        return self.read(0, self.file_size).tobytes()
