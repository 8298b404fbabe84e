/**
 * Fault injection for crash tests. `PEFTKIT_FAULT_AT=<point>[#<hit>][@<signal>]` makes the process
 * send itself <signal> (default SIGKILL, i.e. a crash with no cleanup) the <hit>-th time (default
 * the first) it reaches the named point. Unset, a fault point costs one string comparison.
 */

interface FaultSpec {
  point: string;
  hit: number;
  signal: NodeJS.Signals;
}

let spec: FaultSpec | null | undefined;
const hits = new Map<string, number>();

function parse(raw: string | undefined): FaultSpec | null {
  if (!raw) return null;
  const m = /^(.+?)(?:#(\d+))?(?:@(SIG[A-Z]+))?$/.exec(raw);
  if (!m) return null;
  return { point: m[1], hit: m[2] ? Number(m[2]) : 1, signal: (m[3] ?? "SIGKILL") as NodeJS.Signals };
}

/** Marks a named point where a crash test may stop the process. */
export function faultPoint(name: string): void {
  if (spec === undefined) spec = parse(process.env.PEFTKIT_FAULT_AT);
  if (spec === null || spec.point !== name) return;
  const n = (hits.get(name) ?? 0) + 1;
  hits.set(name, n);
  if (n === spec.hit) process.kill(process.pid, spec.signal);
}
