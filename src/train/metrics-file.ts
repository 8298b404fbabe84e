/** metrics.jsonl on resume: what a resumed run keeps of the records it will not redo. */
import { existsSync, readFileSync } from "node:fs";
import { writeFileAtomic } from "../io/atomic-write.js";

/**
 * Keeps the records up to `step` (a resumed run redoes the steps after its checkpoint) and drops
 * a line torn by a crash. Returns the last train loss kept (NaN when none).
 */
export function truncateMetrics(metricsPath: string, step: number): number {
  const kept: string[] = [];
  let lastLoss = Number.NaN;
  const text = existsSync(metricsPath) ? readFileSync(metricsPath, "utf8") : "";
  for (const line of text.split("\n")) {
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch {
      continue;
    }
    if (typeof r !== "object" || r === null) continue;
    const rec = r as Record<string, unknown>;
    if (typeof rec.step !== "number" || rec.step > step) continue;
    kept.push(`${line}\n`);
    if (typeof rec.loss === "number") lastLoss = rec.loss;
  }
  writeFileAtomic(metricsPath, kept.join(""));
  return lastLoss;
}
