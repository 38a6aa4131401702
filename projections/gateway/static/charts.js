// Tiny SVG charts (no library): bars of counts per minute, lines of percentiles over time.
const NS = "http://www.w3.org/2000/svg";
const W = 300, H = 80, PAD = 2;

function svg(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function frame(label) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label,
                            preserveAspectRatio: "none" });
  root.append(svg("title", {}, label));
  return root;
}

// points: [{x, y}], x in ms (minutes of the window [from, to)); bars of y scaled to the largest
export function bars(points, label, from, to) {
  const root = frame(label);
  if (!points.length) return root;
  const max = Math.max(1, ...points.map((p) => p.y));
  const x0 = from ?? Math.min(...points.map((p) => p.x)), x1 = to ?? Math.max(...points.map((p) => p.x)) + 60000;
  const bw = Math.max(1, (W - 2 * PAD) / ((x1 - x0) / 60000) - 1);
  for (const p of points) {
    const bh = ((H - 2 * PAD) * p.y) / max;
    const x = PAD + ((W - 2 * PAD) * (p.x - x0)) / (x1 - x0);
    const bar = svg("rect", { x, y: H - PAD - bh, width: bw, height: bh, class: "bar" });
    bar.append(svg("title", {}, `${new Date(p.x).toISOString().slice(11, 16)}Z: ${p.y}`));
    root.append(bar);
  }
  return root;
}

// series: [{name, cls, points: [{x, y}]}]; one y scale (the largest value), log-free
export function lines(series, label, from, to) {
  const root = frame(label);
  const all = series.flatMap((s) => s.points).filter((p) => p.y !== null);
  if (!all.length) return root;
  const max = Math.max(1, ...all.map((p) => p.y));
  const x0 = from ?? Math.min(...all.map((p) => p.x)), x1 = to ?? Math.max(x0 + 1, ...all.map((p) => p.x));
  const sx = (x) => PAD + ((W - 2 * PAD) * (x - x0)) / (x1 - x0);
  const sy = (y) => H - PAD - ((H - 2 * PAD) * y) / max;
  for (const s of series) {
    const pts = s.points.filter((p) => p.y !== null);
    if (!pts.length) continue;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
    root.append(svg("path", { d, class: `line ${s.cls}` }));
    for (const p of pts) root.append(svg("rect", { x: sx(p.x) - 1.5, y: sy(p.y) - 1.5, width: 3, height: 3, class: `dot ${s.cls}` }));
  }
  return root;
}
