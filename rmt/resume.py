"""Resume files of ``rmt.analyze``: finished layers, tied to one checkpoint and one set of options.

A resume file is JSON lines. The first line says what the file belongs to::

    {"rmt_resume": 1, "rmt_version": "...", "checkpoint": {...}, "options": {...}}

``checkpoint`` identifies the input (resolved path; for each file behind it its name,
size, modification time and a SHA-256 of its first 64 KiB and last 4 KiB — the header
of every format), ``options`` the analysis options that change results. Every further
line is one finished layer with all its rows::

    {"layer_id": 3, "name": "mlp.up.weight", "rows": [{...}, ...]}

Layers that could not be read are not recorded (reading may work next time). A layer
is done only when its whole line is there: it is written in one ``write`` and
flushed to disk (``fsync``) before the next layer starts, so a run cut at any moment
leaves at most one partial last line, which is repaired and redone. A file that
belongs to another checkpoint or other options is refused (``restart=True`` starts it
anew), and the file is locked for the whole run, so two runs never write into it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np

from rmt.io.files import fingerprint

FORMAT = 1
MAX_FILES = 10_000


class ResumeError(ValueError):
    """A resume file cannot be used for this run (another checkpoint, other options, in
    use by another run, or not a resume file); the message says which and what to do."""


# Files of a checkpoint directory that make up the checkpoint (tables, logs and plots
# written next to it are not part of its identity).
CHECKPOINT_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth", ".npz", ".gguf",
                       ".onnx", ".h5", ".keras", ".data")


def checkpoint_identity(source: Any, exclude: str | Path | None = None) -> dict[str, Any]:
    """What a resume file records about its checkpoint (cheap: headers and stat only).

    Paths: the resolved path and, for each file behind it (the file itself, or every
    checkpoint file of a directory or of an index's directory, see
    :data:`CHECKPOINT_SUFFIXES`), ``[name, size, mtime_ns, fingerprint]``. Dicts and
    modules: a digest of every tensor's name, shape, dtype and first and last 512
    elements. ``exclude`` (the resume file itself) is never part of the identity.
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source).resolve()
        folder = path if path.is_dir() else path.parent if path.name.endswith(
            ".index.json") else None
        files = [path] if folder is None else sorted(
            p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()
            and not p.name.startswith(".")
            and (exclude is None or p.resolve() != Path(exclude).resolve()))
        return {"path": str(path), "files": [
            [f.name, f.stat().st_size, f.stat().st_mtime_ns, fingerprint(f)]
            for f in files[:MAX_FILES]]}
    from rmt.io import open_checkpoint

    digest = hashlib.sha256()
    for name, tensor in open_checkpoint(source):
        digest.update(f"{name}|{tensor.shape}|{tensor.dtype}|".encode())
        arr = np.asarray(tensor.load())
        for part in (arr.flat[:512], arr.flat[-512:]):  # copies only these elements
            digest.update(np.ascontiguousarray(part).view(np.uint8).tobytes())
    return {"path": f"<{type(source).__name__}>", "content": digest.hexdigest()}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {_brief(old.get(key))} -> {_brief(new.get(key))}")
    return out


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


class ResumeLog:
    """An open, locked resume file: the layers it holds and an append for new ones.

    Parameters
    ----------
    path : path
        The JSON-lines file (created if missing).
    checkpoint, options : dict
        What this run analyses and how (:func:`checkpoint_identity`, the result-changing
        options); they must equal the file's, unless ``restart``.
    version : str
        The rmt version writing the file.
    restart : bool
        Discard a file that belongs to another run and start it anew.

    Raises
    ------
    ResumeError
        The file belongs to another checkpoint or other options, is locked by another
        run, or is not a resume file.
    """

    def __init__(self, path: str | Path, checkpoint: dict[str, Any], options: dict[str, Any],
                 version: str, restart: bool = False) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] = {"rmt_resume": FORMAT, "rmt_version": version,
                       "checkpoint": checkpoint, "options": options}
        if self.path.exists() and not self.path.is_file():
            raise ResumeError(f"resume file {self.path} is not a regular file")
        try:
            self._fh: IO[str] = open(self.path, "a+", encoding="utf-8")
        except OSError as err:
            raise ResumeError(f"resume file {self.path}: cannot open ({err.strerror})") from None
        try:
            self._lock()
            self.done = self._read(restart)
        except BaseException:
            self._fh.close()
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ResumeError(f"resume file {self.path} is in use by another run (locked); "
                              "wait for it or use another file") from None

    def _read(self, restart: bool) -> dict[tuple[int, str], list[dict[str, Any]]]:
        self._fh.seek(0)
        text = self._fh.read()
        lines = text.splitlines()
        if not lines or restart:
            self._fh.seek(0)
            self._fh.truncate()
            self._write_line(self.header)
            return {}
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("rmt_resume") != FORMAT:
            raise ResumeError(f"resume file {self.path} is not an rmt resume file of format "
                              f"{FORMAT} (its first line is not one); pass restart=True "
                              "(CLI --restart) to overwrite it, or use another file")
        ours = self.header
        diffs = [f"checkpoint {d}" for d in _differences(header.get("checkpoint") or {},
                                                          ours["checkpoint"])]
        diffs += [f"option {d}" for d in _differences(header.get("options") or {},
                                                       ours["options"])]
        if header.get("rmt_version") != self.header["rmt_version"]:
            diffs.append(f"rmt version {header.get('rmt_version')} -> "
                         f"{self.header['rmt_version']}")
        if diffs:
            raise ResumeError(f"resume file {self.path} belongs to another run ("
                              + "; ".join(diffs[:6]) + "); its rows are not mixed with this "
                              "run's: pass restart=True (CLI --restart) to start it anew, or "
                              "use another file")
        done: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
            except ValueError:
                if number < len(lines):  # the last line may be cut by an interrupted run
                    warnings.warn(f"resume file {self.path} line {number}: not JSON, skipped",
                                  stacklevel=4)
                continue
            if not (isinstance(record, dict) and isinstance(record.get("layer_id"), int)
                    and isinstance(record.get("name"), str)
                    and isinstance(record.get("rows"), list)
                    and all(isinstance(r, dict) for r in record["rows"])):
                warnings.warn(f"resume file {self.path} line {number}: not a layer record, "
                              "skipped", stacklevel=4)
                continue
            done[(record["layer_id"], record["name"])] = record["rows"]
        if text and not text.endswith("\n"):
            self._fh.write("\n")  # a cut last line: the next record starts on its own line
            self._fh.flush()
        return done

    def _write_line(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, layer_id: int, name: str, rows: list[dict[str, Any]]) -> None:
        """Record one finished layer with all its rows (one write, flushed to disk)."""
        self._write_line({"layer_id": layer_id, "name": name,
                          "rows": [_jsonable(r) for r in rows]})

    def close(self) -> None:
        """Release the lock and close the file."""
        self._fh.close()
