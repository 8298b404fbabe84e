/** A loss/eval curve as a standalone SVG (no dependencies), written at the end of training. */
export interface Series {
  name: string;
  color: string;
  points: [number, number][];
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");

export function lineChartSvg(
  title: string,
  series: Series[],
  opts: { width?: number; height?: number; xLabel?: string; yLabel?: string } = {},
): string {
  const w = opts.width ?? 720;
  const h = opts.height ?? 400;
  const m = { l: 64, r: 20, t: 40, b: 48 };
  const all = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs, 0);
  const x1 = Math.max(...xs, 1);
  let y0 = Math.min(...ys, Number.POSITIVE_INFINITY);
  let y1 = Math.max(...ys, Number.NEGATIVE_INFINITY);
  if (!Number.isFinite(y0)) [y0, y1] = [0, 1];
  if (y1 === y0) [y0, y1] = [y0 - 1, y1 + 1];
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0 || 1)) * (w - m.l - m.r);
  const sy = (y: number) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="${w}" height="${h}" fill="white"/>`);
  parts.push(`<text x="${w / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    parts.push(`<line x1="${m.l}" x2="${w - m.r}" y1="${sy(y)}" y2="${sy(y)}" stroke="#ddd"/>`);
    parts.push(`<text x="${m.l - 6}" y="${sy(y) + 4}" text-anchor="end">${y.toPrecision(3)}</text>`);
    const x = x0 + ((x1 - x0) * i) / 4;
    parts.push(`<text x="${sx(x)}" y="${h - m.b + 16}" text-anchor="middle">${Math.round(x)}</text>`);
  }
  parts.push(
    `<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${h - m.b}" stroke="#333"/><line x1="${m.l}" x2="${w - m.r}" y1="${h - m.b}" y2="${h - m.b}" stroke="#333"/>`,
  );
  if (opts.xLabel) parts.push(`<text x="${(m.l + w - m.r) / 2}" y="${h - 10}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  if (opts.yLabel)
    parts.push(
      `<text x="16" y="${(m.t + h - m.b) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(m.t + h - m.b) / 2})">${esc(opts.yLabel)}</text>`,
    );
  series.forEach((s, i) => {
    const pts = s.points.filter(([, y]) => Number.isFinite(y));
    if (pts.length) {
      const d = pts.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.8"/>`);
      if (pts.length < 40)
        for (const [x, y] of pts) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    }
    parts.push(
      `<rect x="${w - m.r - 150}" y="${m.t + 4 + i * 18}" width="12" height="3" fill="${s.color}"/><text x="${w - m.r - 132}" y="${m.t + 9 + i * 18}">${esc(s.name)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n");
}
