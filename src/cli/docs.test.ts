import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../testing/paths.js";
import { cliReference } from "./docs.js";

test("docs/cli.md matches the commands (regenerate with npm run docs:cli)", () => {
  assert.equal(readFileSync(join(REPO_ROOT, "docs/cli.md"), "utf8"), cliReference());
});
