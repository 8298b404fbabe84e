/** Writes docs/cli.md from the CLI's command specs. */
import { writeFileSync } from "node:fs";
import { cliReference } from "../src/cli/docs.js";

writeFileSync("docs/cli.md", cliReference());
console.log("wrote docs/cli.md");
