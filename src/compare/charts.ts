/** Standalone SVG charts of a comparison (no dependencies): a log-x scatter with a front, and bars. */

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");

export const PALETTE = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#ff7f0e",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
  "#393b79",
  "#000000",
];

export interface ScatterPoint {
  x: number;
  y: number;
  /** Error bar half-height (std), drawn when finite. */
  err?: number;
  series: string;
  label?: string;
}

function niceLogTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) ticks.push(10 ** e);
  return ticks;
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${+(n / 1e9).toPrecision(3)}G`;
  if (n >= 1e6) return `${+(n / 1e6).toPrecision(3)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toPrecision(3)}k`;
  return String(+n.toPrecision(3));
}

/** Metric against trainable parameters, log x; `front` (point indices) drawn as a dashed step line. */
export function scatterLogXSvg(
  title: string,
  points: readonly ScatterPoint[],
  front: readonly number[],
  opts: { xLabel: string; yLabel: string; chance?: number },
): string {
  const w = 760;
  const h = 440;
  const m = { l: 64, r: 170, t: 40, b: 52 };
  const ok = points.filter((p) => p.x > 0 && Number.isFinite(p.y));
  const xs = ok.map((p) => p.x);
  const ys = ok.flatMap((p) => [
    p.y - (Number.isFinite(p.err) ? (p.err as number) : 0),
    p.y + (Number.isFinite(p.err) ? (p.err as number) : 0),
  ]);
  if (opts.chance !== undefined) ys.push(opts.chance);
  const lx0 = Math.log10(Math.min(...xs, 1e9)) - 0.15;
  const lx1 = Math.log10(Math.max(...xs, 10)) + 0.15;
  let y0 = Math.min(...ys, Number.POSITIVE_INFINITY);
  let y1 = Math.max(...ys, Number.NEGATIVE_INFINITY);
  if (!Number.isFinite(y0)) [y0, y1] = [0, 1];
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.06;
  y0 -= pad;
  y1 += pad;
  const sx = (x: number) => m.l + ((Math.log10(x) - lx0) / (lx1 - lx0)) * (w - m.l - m.r);
  const sy = (y: number) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${(m.l + w - m.r) / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
  ];
  for (const t of niceLogTicks(10 ** lx0, 10 ** lx1)) {
    if (t < 10 ** lx0 || t > 10 ** lx1) continue;
    out.push(`<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${m.t}" y2="${h - m.b}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${sx(t).toFixed(1)}" y="${h - m.b + 16}" text-anchor="middle">${fmtCount(t)}</text>`);
  }
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    out.push(`<line x1="${m.l}" x2="${w - m.r}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${m.l - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end">${y.toPrecision(3)}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${w - m.l - m.r}" height="${h - m.t - m.b}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${(m.l + w - m.r) / 2}" y="${h - 12}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  out.push(
    `<text x="16" y="${(m.t + h - m.b) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(m.t + h - m.b) / 2})">${esc(opts.yLabel)}</text>`,
  );
  if (opts.chance !== undefined)
    out.push(
      `<line x1="${m.l}" x2="${w - m.r}" y1="${sy(opts.chance).toFixed(1)}" y2="${sy(opts.chance).toFixed(1)}" stroke="#999" stroke-dasharray="2 3"/><text x="${w - m.r - 4}" y="${(sy(opts.chance) - 4).toFixed(1)}" text-anchor="end" fill="#777">chance</text>`,
    );
  const fr = front.map((i) => points[i]).filter((p) => p.x > 0 && Number.isFinite(p.y));
  if (fr.length > 1)
    out.push(
      `<path d="${fr.map((p, j) => `${j ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ")}" fill="none" stroke="#555" stroke-width="1.2" stroke-dasharray="5 4"/>`,
    );
  const names = [...new Set(points.map((p) => p.series))];
  const color = (s: string) => PALETTE[names.indexOf(s) % PALETTE.length];
  points.forEach((p, i) => {
    if (!(p.x > 0 && Number.isFinite(p.y))) return;
    const cx = sx(p.x).toFixed(1);
    if (Number.isFinite(p.err) && (p.err as number) > 0)
      out.push(
        `<line x1="${cx}" x2="${cx}" y1="${sy(p.y - (p.err as number)).toFixed(1)}" y2="${sy(p.y + (p.err as number)).toFixed(1)}" stroke="${color(p.series)}"/>`,
      );
    const onFront = front.includes(i);
    out.push(
      `<circle cx="${cx}" cy="${sy(p.y).toFixed(1)}" r="${onFront ? 5.5 : 4}" fill="${color(p.series)}"${onFront ? ' stroke="#000" stroke-width="1.5"' : ""}><title>${esc(`${p.series} ${p.label ?? ""}: ${p.y.toPrecision(4)} at ${p.x} params`)}</title></circle>`,
    );
  });
  names.forEach((n, i) => {
    out.push(
      `<circle cx="${w - m.r + 16}" cy="${m.t + 8 + i * 18}" r="4" fill="${color(n)}"/><text x="${w - m.r + 26}" y="${m.t + 12 + i * 18}">${esc(n)}</text>`,
    );
  });
  const ly = m.t + 8 + names.length * 18 + 6;
  out.push(
    `<circle cx="${w - m.r + 16}" cy="${ly}" r="5.5" fill="white" stroke="#000" stroke-width="1.5"/><text x="${w - m.r + 26}" y="${ly + 4}">Pareto front</text>`,
  );
  out.push("</svg>");
  return out.join("\n");
}

export interface Bar {
  label: string;
  value: number;
  err?: number;
}

/** Horizontal bars, one panel per quantity, sharing the labels. */
export function barsSvg(title: string, labels: readonly string[], panels: readonly { name: string; bars: readonly Bar[] }[]): string {
  const rowH = 18;
  const m = { l: 170, r: 20, t: 48, b: 30 };
  const pw = 260;
  const gap = 40;
  const w = m.l + panels.length * pw + (panels.length - 1) * gap + m.r;
  const h = m.t + labels.length * rowH + m.b;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${w / 2}" y="20" text-anchor="middle" font-size="15">${esc(title)}</text>`,
  ];
  labels.forEach((l, i) => {
    out.push(`<text x="${m.l - 6}" y="${m.t + i * rowH + 13}" text-anchor="end">${esc(l)}</text>`);
  });
  panels.forEach((p, k) => {
    const x0 = m.l + k * (pw + gap);
    const max = Math.max(...p.bars.map((b) => b.value + (Number.isFinite(b.err) ? (b.err as number) : 0)), 1e-9);
    out.push(`<text x="${x0 + pw / 2}" y="${m.t - 8}" text-anchor="middle">${esc(p.name)}</text>`);
    out.push(`<line x1="${x0}" x2="${x0}" y1="${m.t}" y2="${h - m.b}" stroke="#333"/>`);
    p.bars.forEach((b, i) => {
      if (!Number.isFinite(b.value)) return;
      const bw = (b.value / max) * (pw - 50);
      const y = m.t + i * rowH + 3;
      out.push(
        `<rect x="${x0}" y="${y}" width="${bw.toFixed(1)}" height="${rowH - 6}" fill="${PALETTE[i % PALETTE.length]}" opacity="0.8"/>`,
      );
      if (Number.isFinite(b.err) && (b.err as number) > 0) {
        const e = ((b.err as number) / max) * (pw - 50);
        out.push(
          `<line x1="${(x0 + bw - e).toFixed(1)}" x2="${(x0 + bw + e).toFixed(1)}" y1="${y + (rowH - 6) / 2}" y2="${y + (rowH - 6) / 2}" stroke="#000"/>`,
        );
      }
      out.push(`<text x="${(x0 + bw + 4).toFixed(1)}" y="${y + rowH - 8}">${b.value.toPrecision(3)}</text>`);
    });
  });
  out.push("</svg>");
  return out.join("\n");
}
