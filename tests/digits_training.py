"""Real training runs on scikit-learn's digits, in NumPy, for the comparison and trajectory
tests: a 64-512-256-10 ReLU network trained by SGD with softmax cross-entropy, its weights
saved as safetensors checkpoints (the batch-size notebook's network)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from sklearn.datasets import load_digits

SIZES = (64, 512, 256, 10)


def data() -> tuple[np.ndarray, np.ndarray]:
    """Standardised digits images (1797 × 64) and their labels."""
    digits = load_digits()
    X = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-8)
    return X, digits.target


def init(seed: int) -> dict[str, np.ndarray]:
    """Glorot-normal weights, out × in, named like a torch Sequential of Linear layers."""
    rng = np.random.default_rng(seed)
    return {f"net.{2 * i}.weight": rng.standard_normal((o, n)) * np.sqrt(2.0 / (n + o))
            for i, (n, o) in enumerate(itertools.pairwise(SIZES))}


def _forward(W: list[np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    hs = [x]
    for i, w in enumerate(W):
        z = hs[-1] @ w.T
        hs.append(np.maximum(z, 0) if i < len(W) - 1 else z)
    return hs


def accuracy(weights: dict[str, np.ndarray], classes: tuple[int, ...] | None = None) -> float:
    """Training-set accuracy (on the given classes only, if any)."""
    X, y = data()
    keep = np.isin(y, classes) if classes is not None else np.ones(len(y), bool)
    logits = _forward([weights[k] for k in sorted(weights)], X[keep])[-1]
    return float(np.mean(logits.argmax(1) == y[keep]))


def train(weights: dict[str, np.ndarray], *, classes: tuple[int, ...] | None = None,
          epochs: int = 10, lr: float = 0.05, batch_size: int = 32, seed: int = 0,
          lora_rank: int | None = None, save_every: int | None = None,
          out_dir: Path | None = None) -> dict[str, np.ndarray]:
    """SGD from ``weights`` on the digits of ``classes``; returns the trained weights.

    With ``lora_rank`` only a low-rank update B·A of each weight is trained (B zero, A
    Gaussian at the start, as LoRA initialises them), and the merged weights are returned.
    With ``save_every``, ``out_dir/step-<n>.safetensors`` is written every that many epochs
    (n counts SGD steps), float32.
    """
    rng = np.random.default_rng(seed)
    X, y = data()
    keep = np.isin(y, classes) if classes is not None else np.ones(len(y), bool)
    X, y = X[keep], y[keep]
    names = sorted(weights)
    W0 = [weights[k].copy() for k in names]
    if lora_rank:
        A = [rng.standard_normal((lora_rank, w.shape[1])) / np.sqrt(w.shape[1]) for w in W0]
        B = [np.zeros((w.shape[0], lora_rank)) for w in W0]
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            W = [w + b @ a for w, b, a in zip(W0, B, A, strict=True)] if lora_rank else W0
            hs = _forward(W, X[idx])
            p = np.exp(hs[-1] - hs[-1].max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1
            g = p / len(idx)
            for i in range(len(W) - 1, -1, -1):
                grad = g.T @ hs[i]
                g = (g @ W[i]) * (hs[i] > 0) if i else g
                if lora_rank:
                    gB, gA = grad @ A[i].T, B[i].T @ grad
                    B[i] -= lr * gB
                    A[i] -= lr * gA
                else:
                    W0[i] -= lr * grad
            step += 1
        if save_every and out_dir is not None and (epoch + 1) % save_every == 0:
            W = [w + b @ a for w, b, a in zip(W0, B, A, strict=True)] if lora_rank else W0
            save_file({k: w.astype(np.float32) for k, w in zip(names, W, strict=True)},
                      str(Path(out_dir) / f"step-{step}.safetensors"))
    W = [w + b @ a for w, b, a in zip(W0, B, A, strict=True)] if lora_rank else W0
    return dict(zip(names, W, strict=True))
