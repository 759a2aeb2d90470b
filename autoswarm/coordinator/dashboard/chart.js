// The progress chart, drawn as SVG: every scored experiment a dot, kept changes highlighted
// and labelled, the running best a step line; one colour per hardware class. The x axis is
// the experiment's number, or (xMode "time") when it finished.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLOURS = ["#2ecc71", "#2463eb", "#e67e22", "#8e44ad", "#c0392b", "#16a085"];
  const W = 900, H = 440, M = { left: 64, right: 24, top: 24, bottom: 44 };

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Rounded tick values covering [lo, hi].
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => raw <= s) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function fmt(v) {
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : (+v.toPrecision(5)).toString();
  }

  // The running best: from the first baseline (else the first kept), down (or up) at each
  // kept point that improves on it.
  function bestSteps(points, lowerIsBetter) {
    const better = (a, b) => (lowerIsBetter ? a < b : a > b);
    const base = points.find((p) => p[3] === "baseline") || points.find((p) => p[2]);
    if (!base) return [];
    let best = base[1];
    const steps = [[base[0], best]];
    for (const p of points) {
      if (p[2] && p[0] >= base[0] && better(p[1], best)) {
        best = p[1];
        steps.push([p[0], best]);
      }
    }
    return steps;
  }

  // A point is [x, metric, kept, kind, experiment_id, finished_s]; on the time axis x is
  // finished_s (in order of it).
  function onAxis(progress, xMode) {
    if (xMode !== "time") return progress;
    const series = progress.series.map((s) => ({ ...s,
      points: s.points.map((p) => [p[5], ...p.slice(1)]).sort((a, b) => a[0] - b[0]) }));
    return { ...progress, series };
  }

  function clock(seconds, span) {
    const d = new Date(seconds * 1000);
    const shown = span < 3600 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
    const hm = d.toLocaleTimeString([], shown);
    return span > 86400 ? `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${hm}` : hm;
  }

  function render(container, given, onPick, xMode) {
    container.textContent = "";
    const progress = onAxis(given, xMode);
    const all = progress.series.flatMap((s) => s.points);
    if (!all.length) {
      const empty = document.createElement("p");
      empty.className = "muted";
      empty.textContent = "No scored experiments yet.";
      container.appendChild(empty);
      return;
    }
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.06;
    y0 -= pad; y1 += pad;
    const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
    const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);

    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": `progress of ${progress.metric}` });
    for (const t of ticks(y0, y1, 5)) {
      svg.appendChild(el("line", { x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t), class: "grid-line" }));
      svg.appendChild(el("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt(t)));
    }
    const xTicks = xMode === "time" ? ticks(x0, x1, 6) : ticks(x0, x1, 8).filter((t) => Number.isInteger(t));
    for (const t of xTicks) {
      const label = xMode === "time" ? clock(t, x1 - x0) : String(t);
      svg.appendChild(el("text", { x: sx(t), y: H - M.bottom + 16, "text-anchor": "middle" }, label));
    }
    svg.appendChild(el("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom, class: "axis" }));
    svg.appendChild(el("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "axis" }));
    svg.appendChild(el("text", { x: (M.left + W - M.right) / 2, y: H - 6, "text-anchor": "middle" },
      xMode === "time" ? "Time (when each finished)" : "Experiment #"));
    const word = progress.lower_is_better ? "lower" : "higher";
    svg.appendChild(el("text", { x: 14, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(M.top + H - M.bottom) / 2})` }, `${progress.metric} (${word} is better)`));

    const legend = document.createElement("div");
    legend.className = "legend";
    progress.series.forEach((series, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const steps = bestSteps(series.points, progress.lower_is_better);
      if (steps.length) {
        let d = `M${sx(steps[0][0])},${sy(steps[0][1])}`;
        for (const [x, y] of steps.slice(1)) d += ` H${sx(x)} V${sy(y)}`;
        d += ` H${sx(x1)}`;
        svg.appendChild(el("path", { d, class: "best", stroke: colour, "data-hardware": series.hardware }));
      }
      // Thousands of dots: built as one fragment, described on hover (no node per tooltip).
      const dots = document.createDocumentFragment();
      for (const p of series.points.filter((q) => !q[2])) {
        dots.appendChild(el("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 3.2,
          class: "pt", fill: "#bbb", stroke: colour, "stroke-width": 0.8, "fill-opacity": 0.7,
          "data-eid": p[4], "data-tip": `${p[3]} ${p[4]}: ${fmt(p[1])}` }));
      }
      svg.appendChild(dots);
      for (const p of series.points.filter((q) => q[2])) {
        const dot = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 6, class: "pt kept", fill: colour,
          stroke: "#000", "stroke-width": 0.8, "data-eid": p[4], "data-hardware": series.hardware });
        const title = series.kept_titles[p[4]] || p[4];
        dot.appendChild(el("title", {}, `kept: ${title}: ${fmt(p[1])}`));
        svg.appendChild(dot);
        const label = title.length > 40 ? title.slice(0, 39) + "…" : title;
        svg.appendChild(el("text", { x: sx(p[0]) + 8, y: sy(p[1]) - 8, class: "label",
          transform: `rotate(-20 ${sx(p[0]) + 8} ${sy(p[1]) - 8})` }, label));
      }
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = colour;
      item.append(swatch, `${series.hardware} (${series.points.length})`);
      legend.appendChild(item);
    });
    const tip = el("title", {});
    svg.addEventListener("mouseover", (event) => {
      const text = event.target.getAttribute && event.target.getAttribute("data-tip");
      if (text) {
        tip.textContent = text;
        event.target.appendChild(tip);
      }
    });
    svg.addEventListener("click", (event) => {
      const eid = event.target.getAttribute && event.target.getAttribute("data-eid");
      if (eid && onPick) onPick(eid);
    });
    container.appendChild(svg);
    const note = document.createElement("span");
    note.textContent = progress.shown < progress.total
      ? `newest ${progress.shown} of ${progress.total} scored experiments`
      : `${progress.total} scored experiments; big dots: kept changes; line: running best`;
    legend.appendChild(note);
    container.appendChild(legend);
  }

  window.AutoswarmChart = { render, bestSteps };
})();
