/**
 * A killed compare leaves its run processes to notice the lost parent and exit, which they do
 * only between synchronous steps (a graph compile can take seconds). A rerun must not start the
 * same run in the same folder while such an orphan still writes there, so the runner records each
 * worker's pid in its run folder as soon as it has spawned it (before the worker runs any code of
 * its own: one that is still loading when the compare dies cannot be missed), and a rerun ends a
 * live one (checked by its command line) first.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic-write.js";

const PID_FILE = "worker.pid";

/** Names `pid` as the process that writes in `runDir` (atomically: a crash leaves the old name or the new one). */
export function recordWorkerPid(runDir: string, pid: number): void {
  writeFileAtomic(join(runDir, PID_FILE), `${pid}\n`);
}

function isWorker(pid: number, workerPath: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(workerPath);
  } catch {
    // No /proc (macOS, Windows): trust the pid only if the process exists.
    try {
      process.kill(pid, 0);
      return process.platform !== "linux";
    } catch {
      return false;
    }
  }
}

/** Ends a still-running worker of an earlier compare in `runDir` and waits until it is gone. */
export async function endOrphan(runDir: string, workerPath: string): Promise<void> {
  const file = join(runDir, PID_FILE);
  if (!existsSync(file)) return;
  const pid = Number(readFileSync(file, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || !isWorker(pid, workerPath)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  for (let i = 0; i < 100 && isWorker(pid, workerPath); i++) await new Promise((r) => setTimeout(r, 50));
}
