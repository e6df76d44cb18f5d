// A small hand-written SVG line chart: time on x, one or more series, optional
// markers (anomalies) drawn as red dots on their series. No dependencies.
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const node = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }
  // axis labels stay inside the margin: 2500000 -> "2.5M", 0.26 -> "0.26"
  const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 2 });
  const tickLabel = (v) => compact.format(v);
  // opts: {series: [{name, color, points: [[t, y]...]}], markers: [{t, y, label}], unit, xFormat, height}
  function line(svg, opts) {
    const W = svg.clientWidth || 600, H = opts.height || 180, L = 46, R = 10, T = 18, B = 22;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("height", H);
    svg.replaceChildren();
    const pts = opts.series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
    if (!pts.length) { svg.appendChild(node("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "no data yet")); return; }
    let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
    let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
    if (opts.zero) y0 = Math.min(0, y0);
    if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
    const pad = (y1 - y0) * 0.08; y0 -= opts.zero && y0 === 0 ? 0 : pad; y1 += pad;
    if (x1 === x0) { x0 -= 1800000; x1 += 1800000; }  // one sample: half an hour either side
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const g = node("g", { class: "axis" });
    ticks(y0, y1, 4).forEach((v) => {
      g.appendChild(node("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid" }));
      g.appendChild(node("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end" }, tickLabel(v)));
    });
    const fx = opts.xFormat || ((t) => new Date(t).toISOString().slice(11, 16));
    const nx = Math.max(2, Math.floor((W - L - R) / 90));
    for (let i = 0; i <= nx; i++) {
      const t = x0 + (x1 - x0) * i / nx;
      const anchor = i === 0 ? "start" : (i === nx ? "end" : "middle");
      g.appendChild(node("text", { x: sx(t), y: H - 6, "text-anchor": anchor }, fx(t)));
    }
    if (opts.unit) g.appendChild(node("text", { x: 4, y: 11, class: "unit" }, opts.unit));
    svg.appendChild(g);
    opts.series.forEach((s, k) => {
      // a gap in time (over 5 typical steps) is a gap in the line, not a straight bridge
      const steps = s.points.slice(1).map((p, i) => p[0] - s.points[i][0]).sort((a, b) => a - b);
      const gap = steps.length ? 5 * steps[Math.floor(steps.length / 2)] : Infinity;
      let d = "", pen = false, prev = null;
      s.points.forEach(([t, y]) => {
        if (y === null || y === undefined) { pen = false; return; }
        if (prev !== null && t - prev > gap) pen = false;
        d += (pen ? "L" : "M") + sx(t).toFixed(1) + "," + sy(y).toFixed(1); pen = true; prev = t;
      });
      svg.appendChild(node("path", { d, class: "series", stroke: s.color, "data-series": s.name }));
      const real = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
      if (real.length === 1) svg.appendChild(node("circle", { cx: sx(real[0][0]), cy: sy(real[0][1]), r: 3, fill: s.color }));
      if (opts.series.length > 1) {
        const lx = L + 8 + k * 130;
        svg.appendChild(node("rect", { x: lx, y: 4, width: 10, height: 4, fill: s.color }));
        svg.appendChild(node("text", { x: lx + 14, y: 10, class: "legend" }, s.name));
      }
    });
    (opts.markers || []).forEach((m) => {
      if (m.t < x0 || m.t > x1 || m.y === null || m.y === undefined) return;
      const c = node("circle", { cx: sx(m.t), cy: sy(Math.min(Math.max(m.y, y0), y1)), r: 4, class: "marker" });
      c.appendChild(node("title", {}, m.label || "anomaly"));
      svg.appendChild(c);
    });
  }
  // bars: {groups: [name...], series: [{name, color, values: [...]}]}
  function bars(svg, opts) {
    const W = svg.clientWidth || 400, H = opts.height || 160, L = 30, B = 22, T = 16;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("height", H); svg.replaceChildren();
    const max = Math.max(1, ...opts.series.flatMap((s) => s.values));
    const gw = (W - L) / opts.groups.length, bw = gw * 0.7 / opts.series.length;
    ticks(0, max, 3).forEach((v) => {
      const y = T + (1 - v / max) * (H - T - B);
      svg.appendChild(node("line", { x1: L, x2: W, y1: y, y2: y, class: "grid" }));
      svg.appendChild(node("text", { x: L - 4, y: y + 4, "text-anchor": "end", class: "axis-t" }, tickLabel(v)));
    });
    opts.groups.forEach((gname, i) => {
      opts.series.forEach((s, k) => {
        const v = s.values[i], h = v / max * (H - T - B);
        const r = node("rect", { x: L + i * gw + gw * 0.15 + k * bw, y: H - B - h, width: bw - 2, height: h, fill: s.color });
        r.appendChild(node("title", {}, `${s.name}: ${v}`));
        svg.appendChild(r);
      });
      svg.appendChild(node("text", { x: L + i * gw + gw / 2, y: H - 6, "text-anchor": "middle", class: "axis-t" }, gname));
    });
    opts.series.forEach((s, k) => {
      svg.appendChild(node("rect", { x: L + 8 + k * 120, y: 2, width: 10, height: 8, fill: s.color }));
      svg.appendChild(node("text", { x: L + 22 + k * 120, y: 10, class: "legend" }, s.name));
    });
  }
  return { line, bars, node };
})();
