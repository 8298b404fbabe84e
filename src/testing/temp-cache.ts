/**
 * Loaded with `node --import` by `npm test`: points PEFTKIT_CACHE at a fresh temporary folder for
 * the whole run, so tests (and the CLI processes they spawn, which inherit the environment) never
 * write compiled models into the user's cache folder. Removed when the run ends.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

if (!process.env.PEFTKIT_CACHE) {
  const dir = mkdtempSync(join(tmpdir(), "peftkit-test-cache-"));
  process.env.PEFTKIT_CACHE = dir;
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
}
