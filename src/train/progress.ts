/** What the user sees while training: a progress bar on a TTY, plain lines otherwise. */
export interface ProgressInfo {
  step: number;
  total: number;
  loss: number;
  /** The method's own loss term (KaSA's regulariser), when it has one. */
  methodLoss?: number;
  /** What a method's controller manages (AdaLoRA's budget, total rank), by metric name. */
  controlled?: Record<string, number>;
  tokensPerSecond: number;
  elapsedSeconds: number;
  lr: number;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  const sec = Math.round(s % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m` : `${m}:${String(sec).padStart(2, "0")}`;
}

export class Progress {
  private lastLine = 0;
  constructor(
    private readonly out: NodeJS.WriteStream | { write(s: string): boolean; isTTY?: boolean },
    private readonly logEvery: number,
  ) {}

  get tty(): boolean {
    return Boolean((this.out as NodeJS.WriteStream).isTTY);
  }

  update(p: ProgressInfo): void {
    const eta = p.step > 0 ? (p.elapsedSeconds / p.step) * (p.total - p.step) : Number.NaN;
    const ml =
      (p.methodLoss === undefined ? "" : `method_loss ${p.methodLoss.toExponential(3)} `) +
      Object.entries(p.controlled ?? {})
        .map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toPrecision(4)} `)
        .join("");
    if (this.tty) {
      const width = 24;
      const filled = Math.round((p.step / p.total) * width);
      const bar = `${"█".repeat(filled)}${"░".repeat(width - filled)}`;
      this.out.write(
        `\r${bar} ${p.step}/${p.total}  loss ${p.loss.toFixed(4)}  ${ml ? `${ml} ` : ""}${p.tokensPerSecond.toFixed(0)} tok/s  lr ${p.lr.toExponential(2)}  ETA ${fmtTime(eta)}  `,
      );
      return;
    }
    if (p.step === p.total || p.step - this.lastLine >= this.logEvery) {
      this.lastLine = p.step;
      this.out.write(
        `step ${p.step}/${p.total} loss ${p.loss.toFixed(4)} ${ml}tokens/s ${p.tokensPerSecond.toFixed(0)} lr ${p.lr.toExponential(2)} elapsed ${fmtTime(p.elapsedSeconds)} eta ${fmtTime(eta)}\n`,
      );
    }
  }

  /** A message on its own line (ends the bar's line on a TTY). */
  line(s: string): void {
    this.out.write(this.tty ? `\r\x1b[K${s}\n` : `${s}\n`);
  }

  done(): void {
    if (this.tty) this.out.write("\n");
  }
}

/** A plain-text table with aligned columns. */
export function table(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join("\n");
}
