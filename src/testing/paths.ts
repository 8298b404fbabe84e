/** Paths for tests: the repository root and its test data. */
import { resolve } from "node:path";
import { PACKAGE_ROOT } from "../util/paths.js";

export const REPO_ROOT = PACKAGE_ROOT;
export const GOLDEN_MODELS = resolve(REPO_ROOT, "test/golden/models");
export const GOLDEN_LINALG = resolve(REPO_ROOT, "test/golden/linalg");
