// rmt report: sortable tables, the layer map's colouring, and each layer's figures drawn
// as SVG when its panel opens (from the JSON in #rmt-data). No library, no network.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("rmt-data").textContent);
  window.addEventListener("error", function (e) {
    document.body.dataset.errors = (document.body.dataset.errors || "") + e.message + ";";
  });

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceTicks(lo, hi, log) {
    if (log) {
      const out = [];
      for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
        const v = Math.pow(10, e);
        if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
      }
      return out.length ? out : [lo, hi];
    }
    const span = hi - lo || 1, raw = span / 5, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * mag).find(s => span / s <= 6) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12 * span; v += step) out.push(v);
    return out;
  }

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e4 || a < 1e-2 ? v.toExponential(0) : String(Number(v.toPrecision(3)));
  }

  // One chart: series of {kind: "line"|"step"|"bars"|"vlines"|"points", x, y, color}.
  function chart(spec) {
    const W = spec.width || 440, H = spec.height || 270, L = 52, R = 12, T = 22, B = 38;
    const svg = el("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "figure",
                           role: "img", "aria-label": spec.title || ""});
    let xs = [], ys = [];
    for (const s of spec.series) {
      for (let i = 0; i < s.x.length; i++) {
        const x = s.x[i], y = s.kind === "vlines" ? null : s.y[i];
        if (x !== null && (!spec.xlog || x > 0)) xs.push(x);
        if (y !== null && y !== undefined && (!spec.ylog || y > 0)) ys.push(y);
      }
    }
    if (!xs.length) { el("text", {x: 10, y: 20}, svg).textContent = "no data"; return svg; }
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    let y0 = spec.ylog ? Math.min(...ys) : Math.min(0, ...ys), y1 = Math.max(...ys);
    if (spec.ymax !== undefined && spec.ymax > y0) y1 = Math.min(y1, spec.ymax);
    if (x0 === x1) { x0 = spec.xlog ? x0 / 2 : x0 - 1; x1 = spec.xlog ? x1 * 2 : x1 + 1; }
    if (y0 === y1) { y0 = spec.ylog ? y0 / 2 : y0 - 1; y1 = spec.ylog ? y1 * 2 : y1 + 1; }
    const tx = v => spec.xlog ? Math.log10(v) : v, ty = v => spec.ylog ? Math.log10(v) : v;
    const X = v => L + (tx(v) - tx(x0)) / (tx(x1) - tx(x0)) * (W - L - R);
    const Y = v => H - B - (ty(v) - ty(y0)) / (ty(y1) - ty(y0)) * (H - T - B);
    el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none",
                stroke: "#c8ced8"}, svg);
    for (const t of niceTicks(x0, x1, spec.xlog)) {
      el("line", {x1: X(t), x2: X(t), y1: H - B, y2: H - B + 4, stroke: "#555"}, svg);
      el("text", {x: X(t), y: H - B + 16, "text-anchor": "middle", "font-size": 10},
         svg).textContent = fmt(t);
    }
    for (const t of niceTicks(y0, y1, spec.ylog)) {
      el("line", {x1: L - 4, x2: L, y1: Y(t), y2: Y(t), stroke: "#555"}, svg);
      el("text", {x: L - 6, y: Y(t) + 3, "text-anchor": "end", "font-size": 10},
         svg).textContent = fmt(t);
    }
    el("text", {x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", "font-size": 11},
       svg).textContent = spec.xlabel || "";
    el("text", {x: 12, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 11,
                transform: `rotate(-90 12 ${(T + H - B) / 2})`}, svg).textContent = spec.ylabel || "";
    el("text", {x: L, y: 14, "font-size": 11, "font-weight": 600}, svg).textContent =
      spec.title || "";
    const clip = v => Math.max(T, Math.min(H - B, v));
    for (const s of spec.series) {
      const color = s.color || "#333";
      if (s.kind === "bars") {  // x: bin edges (n + 1), y: heights (n)
        for (let i = 0; i < s.y.length; i++) {
          const h = s.y[i];
          if (h === null || h <= 0) continue;
          const a = X(s.x[i]), b = X(s.x[i + 1]);
          el("rect", {x: a, y: clip(Y(h)), width: Math.max(b - a, 0.5),
                      height: Math.max(H - B - clip(Y(h)), 0), fill: color}, svg);
        }
      } else if (s.kind === "vlines") {
        for (const x of s.x) {
          if (x === null) continue;
          el("line", {x1: X(x), x2: X(x), y1: H - B, y2: H - B - (s.height || 18),
                      stroke: color, "stroke-width": 1.5}, svg);
        }
      } else {
        let d = "";
        for (let i = 0; i < s.x.length; i++) {
          const x = s.x[i], y = s.y[i];
          if (x === null || y === null || (spec.xlog && x <= 0) || (spec.ylog && y <= 0)) continue;
          const px = X(x).toFixed(1), py = clip(Y(y)).toFixed(1);
          if (s.kind === "points") {
            el("circle", {cx: px, cy: py, r: 2, fill: color}, svg);
            continue;
          }
          if (!d) d = `M${px},${py}`;
          else if (s.kind === "step") d += `H${px}V${py}`;
          else d += `L${px},${py}`;
        }
        if (d) el("path", {d: d, fill: "none", stroke: color, "stroke-width": s.width || 1.6,
                           "stroke-dasharray": s.dash || ""}, svg);
      }
      if (s.label) {
        const n = spec.series.filter(t => t.label).indexOf(s);
        el("text", {x: W - R - 4, y: T + 14 + 13 * n, "text-anchor": "end", "font-size": 10,
                    fill: color}, svg).textContent = s.label;
      }
    }
    return svg;
  }

  function figures(panel) {
    const out = [];
    const esd = panel.esd;
    if (esd) {
      const series = [{kind: "bars", x: esd.edges, y: esd.density, color: "#b9c0cc",
                       label: `ESD (${esd.n_evals} eigenvalues)`}];
      if (esd.mp_x) {
        series.push({kind: "line", x: esd.mp_x, y: esd.mp_y, color: "#2f6fb3",
                     label: `MP σ²=${fmt(esd.sigma2)}, Q=${fmt(esd.Q)}`});
        if (esd.spikes && esd.spikes.length)
          series.push({kind: "vlines", x: esd.spikes, color: "#c0392b",
                       label: `${esd.n_spikes} spike(s)`});
      }
      // the MP density diverges at 0 for Q = 1: the histogram sets the scale
      const top = Math.max(...esd.density.filter(v => v !== null));
      out.push(chart({title: "ESD and Marchenko–Pastur fit", series: series,
                      ymax: top > 0 ? 1.35 * top : undefined,
                      xlabel: esd.log10 ? "log10 λ" : "λ", ylabel: "density"}));
    }
    if (panel.tail) {
      const t = panel.tail;
      const series = [{kind: "step", x: t.x, y: t.ccdf, color: "#444", label: `data`}];
      if (t.fit_x) series.push({kind: "line", x: t.fit_x, y: t.fit_y, color: "#c0392b",
                                width: 2, label: `α=${fmt(t.alpha)}, D=${fmt(t.D)}, n_tail=${t.n_tail}`});
      out.push(chart({title: "Tail and power-law fit", series: series, xlog: true, ylog: true,
                      xlabel: "λ", ylabel: "P(X ≥ λ)"}));
    } else if (panel.profile) {
      out.push(chart({title: "Eigenvalue profile", xlog: true, ylog: true, xlabel: "rank",
                      ylabel: "λ", series: [{kind: "points", x: panel.profile.rank,
                                             y: panel.profile.lambda, color: "#444"}]}));
    }
    return out;
  }

  function trajectoryChart(series) {
    return chart({title: "α over training", xlabel: "step", ylabel: "α",
                  series: [{kind: "line", x: series.step, y: series.alpha, color: "#2f6fb3"},
                           {kind: "points", x: series.step, y: series.alpha, color: "#2f6fb3"}]});
  }

  function render(details) {
    if (details.dataset.rendered) return;
    details.dataset.rendered = "1";
    const key = details.dataset.key, body = details.querySelector(".figures");
    const traj = (data.trajectories || {})[key];
    if (traj) body.appendChild(trajectoryChart(traj));
    const panel = (data.panels || {})[key];
    if (panel) for (const svg of figures(panel)) body.appendChild(svg);
    if (!traj && !panel) body.textContent = "no figure: the layer has no fit";
  }

  function openLayer(id, scroll) {
    const details = document.getElementById(id);
    if (!details) return;
    details.open = true;
    render(details);
    if (scroll) details.scrollIntoView({block: "start"});
  }

  document.querySelectorAll("details.panel").forEach(d =>
    d.addEventListener("toggle", () => { if (d.open) render(d); }));
  document.querySelectorAll("[data-target]").forEach(node =>
    node.addEventListener("click", () => {
      history.replaceState(null, "", "#" + node.dataset.target);
      openLayer(node.dataset.target, true);
    }));

  // Layer map colouring: by phase (classes set in the page) or by a number.
  const cells = Array.from(document.querySelectorAll("table.map td[data-target]"));
  function ramp(t, diverging) {
    t = Math.max(0, Math.min(1, t));
    if (diverging) {  // blue (negative) - white - red (positive)
      const a = Math.abs(2 * t - 1), c = Math.round(255 - 150 * a);
      return t < 0.5 ? `rgb(${c},${c},255)` : `rgb(255,${c},${c})`;
    }
    const r = Math.round(255 - 180 * t), g = Math.round(240 - 140 * t), b = Math.round(200 - 40 * t);
    return `rgb(${r},${g},${b})`;
  }
  function colour(mode) {
    const legend = document.getElementById("map-legend-number");
    if (mode === "phase") {
      cells.forEach(c => { c.style.background = c.dataset.phaseColor; });
      if (legend) legend.textContent = "";
      return;
    }
    const values = cells.map(c => parseFloat(c.dataset[mode])).filter(v => isFinite(v));
    if (!values.length) return;
    let lo = Math.min(...values), hi = Math.max(...values);
    const diverging = mode === "delta";
    if (diverging) { hi = Math.max(Math.abs(lo), Math.abs(hi)) || 1; lo = -hi; }
    cells.forEach(c => {
      const v = parseFloat(c.dataset[mode]);
      c.style.background = isFinite(v) ? ramp((v - lo) / ((hi - lo) || 1), diverging) : "#eee";
    });
    if (legend) legend.textContent = `${mode === "delta" ? "Δα" : "α"} from ${fmt(lo)} (light) to ${fmt(hi)} (dark)`;
  }
  document.querySelectorAll("input[name=map-colour]").forEach(r =>
    r.addEventListener("change", () => colour(r.value)));
  colour("phase");

  // Sortable tables: numbers numerically, text alphabetically, empty cells last.
  document.querySelectorAll("table.sortable").forEach(table => {
    table.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
      const asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      const body = table.tBodies[0], rows = Array.from(body.rows);
      const key = r => {
        const cell = r.cells[col], v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent;
        const n = parseFloat(v);
        return v === "" ? null : (isFinite(n) && /^[-+0-9.eE]+$/.test(v.trim()) ? n : v);
      };
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === null) return 1;
        if (y === null) return -1;
        const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(r => body.appendChild(r));
    }));
  });

  if (location.hash.length > 1) openLayer(decodeURIComponent(location.hash.slice(1)), true);
  window.addEventListener("hashchange", () => openLayer(decodeURIComponent(location.hash.slice(1)), true));
  document.body.dataset.ready = "1";
})();
