"""Mutation fuzzer for the checkpoint readers and ``rmt.analyze``.

Small valid files (safetensors, torch zip, legacy torch, .npz, GGUF) are mutated — byte flips,
truncations, insertions, and 8-byte "interesting" integers (0, 2**31, 2**63, -1, ...)
written over a random offset — and each mutant goes through ``rmt.analyze``. A case
passes when analyze returns a table or raises :class:`rmt.errors.CheckpointError`; it
fails on any other exception, on a row that hides ``MemoryError``/``RecursionError``,
on more than :data:`CASE_SECONDS`, or on the peak RSS growing more than
:data:`CASE_RSS_MB` (the files are a few KB). A worker runs cases under an
address-space limit and reports each case before it starts, so a hang or a crash
(SIGBUS, SIGSEGV, an abort) is charged to the case that caused it and the parent
restarts the worker after it.

Run ``python -m tests.fuzz --seconds 60`` by hand for a longer session; the test suite
runs a bounded minute (``tests/test_fuzz.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASE_SECONDS = 5.0
CASE_RSS_MB = 256
ADDRESS_SPACE = 3 * 2**30
INTERESTING = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62 + 1, 2**63 - 1, 2**64 - 1,
               2**64 - 8, 10**12]
KINDS = ("safetensors", "torch", "npz", "gguf", "torch-legacy")
SUFFIX = {"safetensors": ".safetensors", "torch": ".pt", "npz": ".npz", "gguf": ".gguf",
          "torch-legacy": ".pt"}


def seed_files(folder: Path) -> dict[str, bytes]:
    """The valid files the mutants start from (seeded weights, a few KB each)."""
    import ml_dtypes
    import pytest

    from rmt import io as rio
    from tests.checkpoints import write_torch_legacy, write_torch_zip

    rng = np.random.default_rng(0)
    a = rng.standard_normal((24, 12)).astype(np.float32)
    b = rng.standard_normal((16, 12)).astype(np.float16)
    out = {}
    rio.write_safetensors(folder / "s.safetensors", {
        "a.weight": a, "b.weight": b.astype(ml_dtypes.bfloat16), "b.bias": a[0]})
    base = rng.standard_normal(300).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        write_torch_zip(folder / "t.pt", {"state": {"a": a, "b": b, "v": (base, 4, (12, 20),
                                                                           (1, 12))}},
                        monkeypatch=mp)
        write_torch_legacy(folder / "l.pt", {"state": {"a": a, "v": (base, 4, (12, 20),
                                                                      (1, 12))}},
                           monkeypatch=mp)
    np.savez(folder / "n.npz", a=a, b=b)
    import gguf

    w = gguf.GGUFWriter(str(folder / "g.gguf"), "llama")
    w.add_tensor("blk.0.a", a)
    q = gguf.quants.quantize(rng.standard_normal((8, 64)).astype(np.float32),
                             gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.q", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for kind, name in zip(KINDS, ("s.safetensors", "t.pt", "n.npz", "g.gguf", "l.pt"),
                          strict=True):
        out[kind] = (folder / name).read_bytes()
    return out


def mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    """One to three random mutations of ``raw``."""
    data = bytearray(raw)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 5))
        pos = int(rng.integers(0, max(1, len(data))))
        if op == 0 and data:                       # flip bytes
            for p in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                data[int(p)] ^= int(rng.integers(1, 256))
        elif op == 1:                              # truncate
            del data[pos:]
        elif op == 2:                              # insert random bytes
            data[pos:pos] = rng.integers(0, 256, size=int(rng.integers(1, 65))).astype(
                np.uint8).tobytes()
        elif op == 3 and len(data) >= 8:           # an interesting 8-byte integer
            value = INTERESTING[int(rng.integers(0, len(INTERESTING)))]
            pos = min(pos, len(data) - 8)
            data[pos:pos + 8] = (value % 2**64).to_bytes(8, "little")
        elif data:                                 # an interesting 4-byte integer
            value = INTERESTING[int(rng.integers(0, len(INTERESTING)))] % 2**32
            pos = min(pos, max(0, len(data) - 4))
            data[pos:pos + 4] = value.to_bytes(4, "little")[: len(data) - pos]
    return bytes(data)


def case(seeds: dict[str, bytes], seed: int, index: int) -> tuple[str, bytes]:
    """The ``index``-th mutant of fuzz run ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, index])
    kind = KINDS[index % len(KINDS)]
    return kind, mutate(seeds[kind], rng)


class CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` swallows it."""


def _alarm(signum, frame):  # pragma: no cover - only fires on a slow case
    raise CaseTimeout


def run_one(path: Path) -> str | None:
    """Analyse one mutant; the reason it fails, or None."""
    import rmt
    from rmt.errors import CheckpointError

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, 2 * CASE_SECONDS)
    try:
        df = rmt.analyze(path, progress=False, n_threads=1)
    except CheckpointError:
        df = None
    except CaseTimeout:
        return f"hang: more than {2 * CASE_SECONDS} s"
    except Exception as err:
        return f"uncaught {type(err).__name__}: {str(err)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - start
    if seconds > CASE_SECONDS:
        return f"slow: {seconds:.1f} s"
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    if grown > CASE_RSS_MB:
        return f"memory: peak RSS grew {grown:.0f} MB"
    if df is not None and "warning" in df:
        hidden = df["warning"].astype(str).str.contains("MemoryError|RecursionError")
        if hidden.any():
            return f"row hides {df.loc[hidden, 'warning'].iloc[0][:200]}"
    return None


def worker(seed: int, start: int, stop: int, folder: Path) -> None:
    """Run cases ``start..stop``; print ``case i`` before each and ``fail i reason``."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    signal.signal(signal.SIGALRM, _alarm)
    seeds = seed_files(folder)
    for kind in KINDS:  # warm up: Numba caches and imports are not charged to a case
        warm = folder / f"warm{SUFFIX[kind]}"
        warm.write_bytes(seeds[kind])
        run_one(warm)
    print("ready", flush=True)
    crash_at = int(os.environ.get("RMT_FUZZ_CRASH_AT", "-1"))  # to test the harness itself
    for index in range(start, stop):
        kind, data = case(seeds, seed, index)
        path = folder / f"case{SUFFIX[kind]}"
        path.write_bytes(data)
        print(f"case {index}", flush=True)
        if index == crash_at:
            os.abort()
        problem = run_one(path)
        if problem:
            print(f"fail {index} {json.dumps(problem)}", flush=True)


def fuzz(seconds: float, seed: int = 0, max_cases: int = 20000, workers: int = 2,
         env: dict[str, str] | None = None) -> dict[str, object]:
    """Run workers for about ``seconds`` (or until ``max_cases`` ran); the number of cases
    run and the failures ``{index: reason}``."""
    deadline = time.monotonic() + seconds
    failures: dict[int, str] = {}
    done = 0
    ranges = [(w * max_cases // workers, (w + 1) * max_cases // workers) for w in range(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        procs: dict[int, tuple[subprocess.Popen, int, float]] = {}

        def launch(w: int, start: int) -> None:
            folder = Path(tmp) / f"w{w}-{start}"
            folder.mkdir()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz", "--worker", str(seed), str(start),
                 str(ranges[w][1]), str(folder)], cwd=root, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL)
            os.set_blocking(proc.stdout.fileno(), False)
            procs[w] = (proc, start - 1, time.monotonic() + 120)  # start-up allowance

        for w, (start, _) in enumerate(ranges):
            launch(w, start)
        buffers = {w: "" for w in procs}
        while procs and time.monotonic() < deadline:
            time.sleep(0.05)
            for w in list(procs):
                proc, current, limit = procs[w]
                try:
                    buffers[w] += os.read(proc.stdout.fileno(), 1 << 16).decode()
                except BlockingIOError:
                    pass
                *lines, buffers[w] = buffers[w].split("\n")
                for line in lines:
                    if line.startswith("case "):
                        current, limit = int(line.split()[1]), time.monotonic() + 4 * CASE_SECONDS
                        done += 1
                    elif line.startswith("fail "):
                        _, index, reason = line.split(" ", 2)
                        failures[int(index)] = json.loads(reason)
                    elif line == "ready":
                        limit = time.monotonic() + 4 * CASE_SECONDS
                procs[w] = (proc, current, limit)
                if proc.poll() is not None or time.monotonic() > limit:
                    if proc.poll() is None:
                        proc.kill()
                        reason = "hang (killed)"
                    else:
                        reason = f"worker died (exit {proc.returncode})"
                    proc.wait()
                    if proc.returncode != 0 and current >= ranges[w][0]:
                        failures[current] = reason
                    del procs[w]
                    if current + 1 < ranges[w][1] and proc.returncode != 0:
                        launch(w, current + 1)
                        buffers[w] = ""
        for proc, _, _ in procs.values():
            proc.kill()
            proc.wait()
    return {"cases": done, "failures": failures}


def main() -> None:
    """Command line: a fuzz session, or (internal) one worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=4, metavar=("SEED", "START", "STOP", "DIR"))
    args = parser.parse_args()
    if args.worker:
        seed, start, stop, folder = args.worker
        worker(int(seed), int(start), int(stop), Path(folder))
        return
    result = fuzz(args.seconds, args.seed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
