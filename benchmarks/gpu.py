"""GPU benchmarks: a 7B-parameter-shaped bf16 checkpoint end to end, and the power-law scan.

``checkpoint`` (goal: ≤ 60 s on one H100)

1. A Llama-7B-shaped checkpoint — 32 blocks of q/k/v/o 4096×4096, gate/up 11008×4096 and
   down 4096×11008, a 32000×4096 embedding and LM head, the 1-D norms: 6.74 B parameters,
   12.6 GiB — is generated on the GPU (each matrix σ·G plus four rank-one spikes, rounded
   to bfloat16 on the device) and written to one safetensors file tensor by tensor; the
   host holds one chunk at a time.
2. Each in a fresh process, with the file in the page cache:

   - ``rmt.analyze(path, device="gpu")``: ESD, MP fit, power-law fit and phase of every
     layer, from the bf16 bytes on disk to the table — the goal's number;
   - the ESDs alone: ``rmt.esd_batch`` over each block's matrices;
   - the GPU floor: cuBLAS float64 Gram and cuSOLVER ``eigvalsh`` for as many matrices of
     the same shapes, already on the device in float64 (no I/O, decoding or fits);
   - block 0 by ``rmt.analyze`` on the GPU and on the CPU (all cores).

``powerlaw``: ``rmt.fit_powerlaw(device="gpu")`` against ``device="cpu"`` (all cores)
and the ``powerlaw`` package on ESD-shaped data, n = 1000 … 100000: seconds, same xmin,
|Δα|.

Results go to ``benchmarks/results/gpu-checkpoint.{json,md}`` and
``gpu-powerlaw.{json,md}``. Without a CUDA device the script says so and writes nothing;
``--device cpu`` runs the same pipeline on the CPU (the tests use it at toy sizes with
``--results DIR``). Run: ``python -m benchmarks.gpu [--only checkpoint,powerlaw]``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_dtypes
import numpy as np

from benchmarks._common import BENCHMARKS_DOC, RESULTS, machine, publish, run_json
from rmt.io import stream_safetensors

ROOT = Path(__file__).resolve().parents[1]
SIGMA = 0.02  # entry scale of the generated weights
SPIKES = (3.0, 2.5, 2.0, 1.5)  # rank-one signal strengths s: outliers at θ = s² ≥ 2.25 > 1
BF16_ONE = 0x3F80  # the norms' weights, 1.0 in bfloat16
CHUNK_ROWS = 8192


@dataclass(frozen=True)
class ModelShape:
    """Dimensions of a Llama-style decoder (defaults: Llama-7B)."""

    layers: int = 32
    hidden: int = 4096
    intermediate: int = 11008
    vocab: int = 32000

    def tensors(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's name and shape, in checkpoint order."""
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, self.hidden)}
        for i in range(self.layers):
            prefix = f"model.layers.{i}."
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[f"{prefix}self_attn.{proj}.weight"] = (self.hidden, self.hidden)
            out[f"{prefix}mlp.gate_proj.weight"] = (self.intermediate, self.hidden)
            out[f"{prefix}mlp.up_proj.weight"] = (self.intermediate, self.hidden)
            out[f"{prefix}mlp.down_proj.weight"] = (self.hidden, self.intermediate)
            out[f"{prefix}input_layernorm.weight"] = (self.hidden,)
            out[f"{prefix}post_attention_layernorm.weight"] = (self.hidden,)
        out["model.norm.weight"] = (self.hidden,)
        out["lm_head.weight"] = (self.vocab, self.hidden)
        return out

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return sum(math.prod(shape) for shape in self.tensors().values())


# --- generation ---------------------------------------------------------------------------


def bf16_bits(x: Any, xp: ModuleType) -> Any:
    """bfloat16 bit patterns (uint16) of finite float32 values, rounded to nearest even.

    CuPy has no bfloat16 dtype, so weights are made on the device as float32 and rounded
    here by integer arithmetic on the bits: add 0x7FFF plus the kept part's lowest bit,
    then keep the upper 16 bits (ties go to the even pattern).
    """
    u = xp.ascontiguousarray(x, dtype=xp.float32).view(xp.uint32)
    lsb = (u >> xp.uint32(16)) & xp.uint32(1)
    return ((u + xp.uint32(0x7FFF) + lsb) >> xp.uint32(16)).astype(xp.uint16)


def _to_host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()


def matrix_chunks(shape: tuple[int, int], seed: int, xp: ModuleType,
                  chunk_rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """bf16 bits (host uint16 arrays) of one generated weight, ``chunk_rows`` rows at a time.

    W = σ·G + U·diag(s·σ·c)·V with G and U standard normal, V's rows unit vectors and
    c = √(N/rows), N = max(rows, cols): X = WᵀW/N (or WWᵀ/N) then has an MP bulk of
    variance σ² and one outlier per spike at signal strength θ = s² in units of σ², above
    the BBP threshold √(M/N) ≤ 1 for every s in ``SPIKES``. Generated in float32 in
    namespace ``xp`` (on the device with CuPy), rounded to bfloat16 there.
    """
    rows, cols = shape
    rng = xp.random.default_rng(seed)
    V = rng.standard_normal((len(SPIKES), cols), dtype=xp.float32)
    V /= xp.sqrt((V * V).sum(axis=1, keepdims=True))
    c = math.sqrt(max(rows, cols) / rows)
    strengths = xp.asarray([s * SIGMA * c for s in SPIKES], dtype=xp.float32)
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        block = rng.standard_normal((n, cols), dtype=xp.float32)
        block *= xp.float32(SIGMA)
        U = rng.standard_normal((n, len(SPIKES)), dtype=xp.float32)
        block += (U * strengths[None, :]) @ V
        yield _to_host(bf16_bits(block, xp))


def write_checkpoint(path: Path, model: ModelShape, xp: ModuleType, seed: int = 0) -> None:
    """Write ``model``'s tensors as bf16 safetensors, matrices generated in namespace ``xp``.

    Matrix ``i`` (in file order) is :func:`matrix_chunks` with seed ``seed + i``; 1-D
    tensors are ones.
    """
    tensors = model.tensors()
    seeds = {name: seed + index for index, name in enumerate(tensors)}

    def chunks(name: str) -> Iterator[np.ndarray]:
        shape = tensors[name]
        if len(shape) == 1:
            yield np.full(shape, BF16_ONE, dtype=np.uint16)
        else:
            yield from matrix_chunks(shape, seeds[name], xp)  # type: ignore[arg-type]

    stream_safetensors(path, {n: (ml_dtypes.bfloat16, s) for n, s in tensors.items()}, chunks)


# --- the timed children (each in a fresh process) -----------------------------------------


def _namespace(device: str) -> ModuleType:
    if device == "gpu":
        import cupy

        return cupy
    return np


def _sync(xp: ModuleType) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def _memory(device: str) -> dict[str, float]:
    out = {"host_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "gpu":
        import cupy

        # The pool keeps what it has allocated, so its size at the end is its peak.
        out["gpu_pool_MiB"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    return out


def _warm_up(device: str) -> float:
    """CUDA context, cuBLAS/cuSOLVER handles and the bf16 decode kernel, on a small layer."""
    import ml_dtypes

    import rmt

    start = time.perf_counter()
    W = np.random.default_rng(0).standard_normal((256, 128)).astype(ml_dtypes.bfloat16)
    rmt.analyze({"warm_up": W}, device=device, progress=False)
    return time.perf_counter() - start


def child_analyze(path: str, device: str, layers: str | None) -> dict[str, Any]:
    """``rmt.analyze`` of the whole checkpoint (or the tensors matching ``layers``)."""
    import rmt

    warm = _warm_up(device)
    start = time.perf_counter()
    df = rmt.analyze(path, device=device, layers=layers, progress=False)
    seconds = time.perf_counter() - start
    ok = df[df.status != "failed"]
    return {"seconds": seconds, "warm_up_s": warm, "layers": len(df),
            "failed": int((df.status == "failed").sum()),
            "phases": {str(k): int(v) for k, v in df.phase.value_counts().items()},
            "mean_alpha": float(ok.alpha.mean()), "median_num_spikes":
            float(ok.num_spikes.median()), **_memory(device)}


def _blocks(names: list[str]) -> list[list[str]]:
    """Tensor names grouped by transformer block (other tensors alone), in file order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        match = re.match(r"(.*?layers\.\d+\.)", name)
        groups.setdefault(match.group(1) if match else name, []).append(name)
    return list(groups.values())


def child_esd(path: str, device: str) -> dict[str, Any]:
    """ESDs alone: ``rmt.esd_batch`` over each block's matrices (same shapes batched)."""
    import rmt
    from rmt.io import open_checkpoint

    tensors = {name: t for name, t in open_checkpoint(path) if t.ndim == 2}
    warm = _warm_up(device)
    start = time.perf_counter()
    n_evals = n_matrices = 0
    for group in _blocks(list(tensors)):
        spectra = rmt.esd_batch([tensors[n].load() for n in group], device=device, names=group)
        n_matrices += len(spectra)
        n_evals += sum(ev.size for ev in spectra)  # type: ignore[union-attr]
    return {"seconds": time.perf_counter() - start, "warm_up_s": warm, "matrices": n_matrices,
            "eigenvalues": n_evals, **_memory(device)}


def child_floor(path: str, device: str) -> dict[str, Any]:
    """float64 Gram + eigvalsh per matrix on inputs already resident in float64.

    One random matrix per distinct (oriented) shape is made on the device and reused; the
    Gram product and the eigensolve are run and timed once per matrix of the checkpoint.
    """
    from rmt.io import open_checkpoint

    xp = _namespace(device)
    shapes = Counter((max(t.shape), min(t.shape)) for _, t in open_checkpoint(path)
                     if t.ndim == 2)
    rng = np.random.default_rng(0)
    total, solve = 0.0, 0.0
    for (n, m), count in shapes.items():
        A = xp.asarray(rng.standard_normal((n, m)))
        xp.linalg.eigvalsh(A[:m].T @ A[:m])  # workspace and handles outside the timing
        _sync(xp)
        for _ in range(count):
            start = time.perf_counter()
            G = A.T @ A
            _sync(xp)
            middle = time.perf_counter()
            xp.linalg.eigvalsh(G)
            _sync(xp)
            total += time.perf_counter() - start
            solve += time.perf_counter() - middle
        del A
    return {"seconds": total, "eigvalsh_s": solve, "gram_s": total - solve,
            "matrices": sum(shapes.values()), **_memory(device)}


CHILDREN = {"analyze": child_analyze, "esd": child_esd, "floor": child_floor}


def run_child(kind: str, path: Path, device: str, layers: str | None = None) -> dict[str, Any]:
    """Run one child in a fresh Python process; its last stdout line is its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--child", kind, str(path), "--device", device]
    if layers:
        cmd += ["--child-layers", layers]
    return run_json(cmd, cwd=ROOT)


# --- the two benchmarks -------------------------------------------------------------------


def device_info(device: str) -> dict[str, Any]:
    """The host (``machine``) plus, on the GPU, its name, memory and CuPy/CUDA versions."""
    info = machine(0)
    if device == "gpu":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info.update(gpu=props["name"].decode(), gpu_memory_GiB=props["totalGlobalMem"] / 2**30,
                    cupy=cupy.__version__, cuda_runtime=cupy.cuda.runtime.runtimeGetVersion())
    else:
        info["gpu"] = "none (CPU run of the GPU benchmark)"
    return info


def bench_checkpoint(model: ModelShape, device: str, workdir: Path, seed: int) -> dict[str, Any]:
    """Generate the checkpoint on ``device`` and time the children; the JSON payload."""
    path = workdir / "model.safetensors"
    start = time.perf_counter()
    write_checkpoint(path, model, _namespace(device), seed)
    build_s = time.perf_counter() - start
    first_block = r"^model\.layers\.0\."
    result = {
        "model": asdict(model), "n_params": model.n_params,
        "file_GiB": path.stat().st_size / 2**30, "device": device, "build_s": build_s,
        "analyze": run_child("analyze", path, device),
        "esd": run_child("esd", path, device),
        "floor": run_child("floor", path, device),
        "block0": {"device": run_child("analyze", path, device, first_block),
                   "cpu": run_child("analyze", path, "cpu", first_block)},
    }
    result["analyze_over_floor"] = result["analyze"]["seconds"] / result["floor"]["seconds"]
    result["block0"]["cpu_over_device"] = (result["block0"]["cpu"]["seconds"]
                                           / result["block0"]["device"]["seconds"])
    path.unlink()
    return result


def checkpoint_table(r: dict[str, Any], info: dict[str, Any]) -> str:
    """Markdown summary of :func:`bench_checkpoint`."""
    a, e, f, b = r["analyze"], r["esd"], r["floor"], r["block0"]
    goal = " (goal ≤ 60 s on one H100)" if r["n_params"] > 6e9 else ""
    gpu_mem = f", GPU pool {a['gpu_pool_MiB']:.0f} MiB" if "gpu_pool_MiB" in a else ""
    return "\n".join([
        f"Checkpoint end to end on {info['gpu']} — {r['n_params'] / 1e9:.2f} B parameters, "
        f"{r['file_GiB']:.1f} GiB bf16 safetensors, {f['matrices']} matrices; host "
        f"{info['cpu']}, {info['cores']} cores; {info['date']}", "",
        "| step | wall s | notes |", "|---|---|---|",
        f"| generate on the {r['device'].upper()} + write | {r['build_s']:.1f} | bf16 rounding "
        "on the device |",
        f"| rmt.analyze, every layer{goal} | {a['seconds']:.1f} | ESD + MP + power law + phase; "
        f"{a['layers']} rows, {a['failed']} failed; peak host RSS {a['host_rss_MiB']:.0f} MiB"
        f"{gpu_mem}; first-call warm-up {a['warm_up_s']:.1f} s not counted |",
        f"| ESDs only (rmt.esd_batch per block) | {e['seconds']:.1f} | {e['eigenvalues']} "
        "eigenvalues |",
        f"| floor: float64 Gram + eigvalsh, inputs resident | {f['seconds']:.1f} | eigvalsh "
        f"{f['eigvalsh_s']:.1f} s, Gram {f['gram_s']:.1f} s |",
        f"| block 0: rmt.analyze on the {r['device'].upper()} / on the CPU | "
        f"{b['device']['seconds']:.2f} / {b['cpu']['seconds']:.2f} | CPU / "
        f"{r['device'].upper()} = {b['cpu_over_device']:.1f}× |", "",
        f"analyze / floor = {r['analyze_over_floor']:.2f}; phases {a['phases']}; mean α "
        f"{a['mean_alpha']:.2f}.",
    ])


def bench_powerlaw(device: str, sizes: list[int], powerlaw_max_n: int) -> list[dict[str, Any]]:
    """``rmt.fit_powerlaw`` on ``device`` vs the CPU path and the ``powerlaw`` package."""
    import rmt
    from benchmarks.powerlaw_fit import esd_shaped, timed

    rng = np.random.default_rng(0)
    warm = esd_shaped(500, rng)
    rmt.fit_powerlaw(warm, device=device)
    rmt.fit_powerlaw(warm, device="cpu")
    rows = []
    for n in sizes:
        x = esd_shaped(n, rng)
        fit, device_s = timed(lambda x=x: rmt.fit_powerlaw(x, device=device), 3)
        ref, cpu_s = timed(lambda x=x: rmt.fit_powerlaw(x, device="cpu"), 3)
        row: dict[str, Any] = {
            "n": n, "device_s": device_s, "cpu_s": cpu_s, "cpu_over_device": cpu_s / device_s,
            "alpha": fit.alpha, "xmin": fit.xmin, "same_xmin_as_cpu": bool(fit.xmin == ref.xmin),
            "abs_dalpha_cpu": abs(fit.alpha - ref.alpha)}
        if n <= powerlaw_max_n:
            import powerlaw

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pl, pl_s = timed(lambda x=x: powerlaw.Fit(
                    x, parameter_ranges={"alpha": [1, None]}, verbose=False))
            row.update(powerlaw_s=pl_s, powerlaw_over_device=pl_s / device_s,
                       same_xmin_as_powerlaw=bool(fit.xmin == pl.xmin),
                       abs_dalpha_powerlaw=abs(fit.alpha - pl.alpha))
        rows.append(row)
    return rows


def powerlaw_table(rows: list[dict[str, Any]], info: dict[str, Any], device: str) -> str:
    """Markdown summary of :func:`bench_powerlaw`."""
    dev = device.upper()
    lines = [f"Power-law fit on {info['gpu']} against the CPU path ({info['cores']} cores of "
             f"{info['cpu']}) and powerlaw; best of 3 (powerlaw: 1 run); {info['date']}", "",
             f"| n | {dev} s | CPU s | CPU/{dev} | powerlaw s | powerlaw/{dev} | same xmin "
             "(CPU, powerlaw) | max abs Δα |", "|" + "---|" * 8]
    for r in rows:
        pl = "powerlaw_s" in r
        lines.append(
            f"| {r['n']} | {r['device_s'] * 1e3:.1f} ms | {r['cpu_s'] * 1e3:.1f} ms | "
            f"{r['cpu_over_device']:.1f}× | " + (f"{r['powerlaw_s']:.2f} | "
                                                 f"{r['powerlaw_over_device']:.0f}× | "
                                                 if pl else "— | — | ")
            + f"{r['same_xmin_as_cpu']}, {r.get('same_xmin_as_powerlaw', '—')} | "
            f"{max(r['abs_dalpha_cpu'], r.get('abs_dalpha_powerlaw', 0.0)):.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the GPU benchmarks (or one child process of them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="checkpoint,powerlaw",
                        help="comma-separated subset of: checkpoint, powerlaw")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="cpu: run the same pipeline without a GPU (a dry run)")
    defaults = ModelShape()
    for field in ("layers", "hidden", "intermediate", "vocab"):
        parser.add_argument(f"--{field}", type=int, default=getattr(defaults, field))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--powerlaw-sizes", default="1000,4000,16000,50000,100000")
    parser.add_argument("--powerlaw-max-n", type=int, default=16000,
                        help="largest n also fitted by the powerlaw package")
    parser.add_argument("--workdir", help="where the checkpoint is written (default: a "
                        "temporary directory; needs 12.6 GiB free at the default shape)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output directory")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--child-layers", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, path = args.child
        extra = (args.child_layers,) if kind == "analyze" else ()
        print(json.dumps(CHILDREN[kind](path, args.device, *extra)))
        return 0

    if args.device == "gpu":
        from rmt._device import gpu_available

        if not gpu_available():
            print("benchmarks.gpu skipped: no usable CUDA device (CuPy and an NVIDIA GPU are "
                  "needed); nothing written. `--device cpu` runs the same pipeline on the CPU.")
            return 0
    info = device_info(args.device)
    official = args.device == "gpu" and args.results == RESULTS
    parts = args.only.split(",")
    if "checkpoint" in parts:
        model = ModelShape(args.layers, args.hidden, args.intermediate, args.vocab)
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            result = bench_checkpoint(model, args.device, Path(tmp), args.seed)
        publish("gpu-checkpoint", {"machine": info, **result}, checkpoint_table(result, info),
                doc=BENCHMARKS_DOC if official and model == ModelShape() else None,
                directory=args.results)
    if "powerlaw" in parts:
        sizes = [int(n) for n in args.powerlaw_sizes.split(",")]
        rows = bench_powerlaw(args.device, sizes, args.powerlaw_max_n)
        publish("gpu-powerlaw", {"machine": info, "device": args.device, "results": rows},
                powerlaw_table(rows, info, args.device),
                doc=BENCHMARKS_DOC if official else None,
                directory=args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
