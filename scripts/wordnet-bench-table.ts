/** Rewrites the generated task table of docs/wordnet-bench.md from the wordnet-bench data. */
import { readFileSync, writeFileSync } from "node:fs";
import { buildWordnetBench } from "../src/data/wordnet-bench/index.js";
import { benchTable, readCeilings, replaceTable } from "../src/data/wordnet-bench/table.js";
import { PACKAGE_ROOT } from "../src/util/paths.js";

const path = "docs/wordnet-bench.md";
writeFileSync(path, replaceTable(readFileSync(path, "utf8"), benchTable(buildWordnetBench(), readCeilings(PACKAGE_ROOT))));
console.log(`wrote the task table of ${path}`);
