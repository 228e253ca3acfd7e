"""Reports (rmt.report): what the page holds, and the page opened in a real browser."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import rmt
from rmt.demo import demo_model
from rmt.report import flags, report
from tests.browser import load


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "demo.html"
    report(demo_model(0), path, progress=False)
    return path, rmt.analyze(demo_model(0), progress=False)


def _data(text: str) -> dict:
    block = re.search(r'<script type="application/json" id="rmt-data">(.*?)</script>', text,
                      re.S).group(1)
    return json.loads(block.replace("<\\/", "</"))


def test_the_page_holds_every_layer_its_figures_and_nothing_from_elsewhere(demo_report):
    path, df = demo_report
    text = path.read_text()
    for i, name in enumerate(df.name):
        assert f'id="layer-{i}"' in text and name in text
    data = _data(text)
    ok = np.flatnonzero(df.status == "success")
    assert sorted(data["panels"]) == sorted(f"layer-{i}" for i in ok)
    for i in ok:  # the figure data is the layer's own fit
        panel = data["panels"][f"layer-{i}"]
        assert panel["phase"] == df.phase[i]
        if "tail" in panel:
            assert panel["tail"]["alpha"] == pytest.approx(df.alpha[i], rel=1e-4)
    # self-contained: no element loads anything, the policy forbids requests
    assert not re.search(r"\b(src|href)\s*=\s*[\"'](?!#|data:)", text)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert "default-src 'none'" in text
    summary = rmt.summary(df)
    assert f"{summary['alpha']:.3g}" in text


def test_flags_say_why_in_words():
    df = rmt.analyze(demo_model(0), progress=False)
    found = flags(df)
    kinds = {f.kind for f in found}
    assert {"rank-collapse", "random-like"} <= kinds
    by_kind = {f.kind: f for f in found}
    row = df.iloc[by_kind["rank-collapse"].index]
    assert row.phase == "rank-collapse" and str(int(row.rank_loss)) in \
        by_kind["rank-collapse"].text
    for f in found:
        if f.kind == "alpha<2":
            assert df.alpha.iloc[f.index] < 2


def test_in_a_browser_no_errors_no_requests_every_layer_and_a_drawn_panel(demo_report,
                                                                          tmp_path):
    from PIL import Image

    path, df = demo_report
    target = int(np.flatnonzero(df.status == "success")[0])
    page = load(path, tmp_path, fragment=f"layer-{target}")
    assert page.console == [], page.console  # no script error, no policy violation
    assert page.requests == []
    assert 'data-ready="1"' in page.dom and "data-errors" not in page.dom
    for i in range(len(df)):
        assert f'id="layer-{i}"' in page.dom
    # the layer map: one coloured cell per analysed (block, role) group
    cells = re.findall(r'<td data-target="layer-\d+"[^>]*style="background:[^"]+"', page.dom)
    assert len(cells) >= 1
    panel = page.dom[page.dom.index(f'id="layer-{target}"'):]
    panel = panel[:panel.index("</details>")]
    assert 'data-rendered="1"' in panel and panel.count('class="figure"') == 2
    shot = np.asarray(Image.open(page.screenshot).convert("RGB")).astype(int)
    drawn = (np.abs(shot - 255).sum(axis=2) > 30).mean()
    assert drawn > 0.02 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50


def test_a_comparison_report_shows_the_changes(tmp_path):
    rng = np.random.default_rng(3)
    base = {f"layers.{i}.mlp.up_proj.weight": rng.standard_normal((300, 120))
            for i in range(3)}
    tuned = {k: v + (0.5 * np.outer(rng.standard_normal(300), rng.standard_normal(120))
                     if k.startswith("layers.1.") else 0.01 * rng.standard_normal(v.shape))
             for k, v in base.items()}
    path = report(tuned, tmp_path / "cmp.html", base=base, progress=False)
    text = path.read_text()
    assert 'value="delta"' in text and "intruder dimensions" in text
    assert "alpha_change" in text and "layers.1.mlp.up_proj.weight" in text
    data = _data(text)
    assert len(data["panels"]) == 3


def test_a_training_run_report_has_alpha_over_training(tmp_path):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((300, 150))
    run = [{"layer.weight": W + rmt.synthetic.phase_matrix("heavy-tailed", 300, 150, rng=1)
            * (0.2 * k)} for k in range(5)]
    path = report(run, tmp_path / "run.html", track=True, steps=range(0, 500, 100),
                  progress=False)
    text = path.read_text()
    data = _data(text)
    traj = data["trajectories"]["layer-0"]
    assert traj["step"] == [0, 100, 200, 300, 400] and len(traj["alpha"]) == 5
    df = rmt.track(run, steps=range(0, 500, 100), progress=False)
    assert traj["alpha"] == pytest.approx(df.alpha.tolist(), rel=1e-4)
    assert "alpha_slope" in text


def test_markdown_with_pngs_and_a_model_card(tmp_path):
    import yaml

    df = rmt.analyze(demo_model(0), progress=False)
    md = report(demo_model(0), tmp_path / "r.md", format="md", progress=False)
    text = md.read_text()
    for png in re.findall(r"\]\((r_files/[^)]+\.png)\)", text):
        assert (tmp_path / png).stat().st_size > 1000
    assert "r_files/summary.png" in text and "## Layers" in text
    card = report(demo_model(0), tmp_path / "card.md", format="model-card", progress=False)
    front = card.read_text().split("---")[1]
    meta = yaml.safe_load(front)["rmt"]
    summary = rmt.summary(df)
    assert meta["layers"] == len(df) and meta["alpha_mean"] == pytest.approx(summary["alpha"],
                                                                              abs=1e-4)
    assert meta["phases"] == summary["phases"]
    with pytest.raises(ValueError, match="format"):
        report(demo_model(0), tmp_path / "x", format="pdf")


def test_the_command_line_writes_a_report(tmp_path, capsys):
    from safetensors.numpy import save_file

    from rmt.cli import main

    save_file({k: v.astype(np.float32) for k, v in demo_model(0).items()},
              str(tmp_path / "m.safetensors"))
    assert main(["report", str(tmp_path / "m.safetensors"), "-o",
                 str(tmp_path / "r.html")]) == 0
    assert "wrote" in capsys.readouterr().err and (tmp_path / "r.html").stat().st_size > 1000
    assert main(["report"]) == 1  # neither a checkpoint nor a run


def test_a_mixture_of_experts_report_has_the_population_table(tmp_path):
    rng = np.random.default_rng(4)
    model = {f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight":
             rng.standard_normal((256, 128)) for e in range(4)}
    model["model.layers.0.block_sparse_moe.gate.weight"] = rng.standard_normal((4, 128))
    text = report(model, tmp_path / "moe.html", progress=False).read_text()
    assert '<section id="experts">' in text and "router_stable_rank" in text
    assert 'id="layer-4"' in text  # the router's own row
