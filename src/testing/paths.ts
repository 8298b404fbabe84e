/** Paths for tests, which run from dist/src/...: the repository root and its test data. */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const GOLDEN_MODELS = resolve(REPO_ROOT, "test/golden/models");
