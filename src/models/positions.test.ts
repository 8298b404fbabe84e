import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../testing/paths.js";
import { usablePositions } from "./positions.js";

const config = (name: string) => JSON.parse(readFileSync(join(REPO_ROOT, "models", name, "config.json"), "utf8"));

test("usable positions per architecture", () => {
  assert.deepEqual(usablePositions(config("wordnet-bert")), { limit: 128, source: "max_position_embeddings 130 − padding_idx 1 − 1" });
  assert.equal(usablePositions(config("wordnet-llama"))?.limit, config("wordnet-llama").max_position_embeddings);
  assert.equal(usablePositions({ model_type: "bert", max_position_embeddings: 512 })?.limit, 512);
  assert.equal(usablePositions({ model_type: "gpt2", n_positions: 1024, max_position_embeddings: 7 })?.limit, 1024);
  assert.equal(usablePositions({ model_type: "qwen2", max_position_embeddings: 32768 })?.limit, 32768);
  assert.equal(usablePositions({ model_type: "vit" }), null);
});
