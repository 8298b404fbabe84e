import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../util/rng.js";
import {
  configKey,
  encode,
  encodedLength,
  extraTrainArgs,
  methodCount,
  neighbours,
  parseSpace,
  SearchSpaceError,
  sampleConfig,
  totalCount,
} from "./space.js";
import { SYNTHETIC_SPACE } from "./synthetic.js";

test("a space with no valid configuration is one clear error", () => {
  assert.throws(
    () => parseSpace({ methods: { lora: { r: [40, 60] }, ia3: { target_modules: [] } } }, "space.yaml", 4),
    (e: Error) =>
      e instanceof SearchSpaceError &&
      e.message ===
        "space.yaml: search space has no valid configuration (lora: r range holds no value; ia3: target_modules lists no choice)",
  );
  assert.throws(() => parseSpace({ methods: {} }, "space.yaml", 4), /search space has no valid configuration \(no methods\)/);
  // One empty method among valid ones is fine.
  assert.equal(totalCount(parseSpace({ methods: { lora: { r: [40, 60] }, prompt: { tokens: [4, 16] } } }, "s", 4)), 3);
});

test("unknown methods and fields are named", () => {
  assert.throws(
    () => parseSpace({ methods: { lorax: {} } }, "space.yaml", 4),
    /space\.yaml: methods\.lorax: unknown method "lorax" \(search methods: lora, /,
  );
  assert.throws(
    () => parseSpace({ methods: { lora: { rank: [1, 8] } } }, "space.yaml", 4),
    /methods\.lora\.rank: unknown field for lora \(fields: r, target_modules, layers\)/,
  );
  assert.throws(
    () => parseSpace({ methods: { prompt: { tokens: [1, 8], layers: true } } }, "space.yaml", 4),
    /methods\.prompt\.layers: unknown field for prompt \(fields: tokens\)/,
  );
  assert.throws(() => parseSpace({ methods: { lora: { r: [1, 8] } }, budget: 3 }, "space.yaml", 4), /space\.yaml: budget: unknown field/);
  assert.throws(() => parseSpace({ methods: { lora: {} } }, "space.yaml", 4), /methods\.lora\.r: missing/);
});

test("counting, sampling, neighbours and encoding", () => {
  const space = parseSpace(SYNTHETIC_SPACE, "s", 6);
  // lora 9 ranks × 3 targets × 63 masks; ia3 2; prompt 7; adapter 9 × 63.
  assert.equal(methodCount(space.methods[0], 6), 9 * 3 * 63);
  assert.equal(totalCount(space), 9 * 3 * 63 + 2 + 7 + 9 * 63);
  const rng = new Rng(3);
  for (let i = 0; i < 200; i++) {
    const c = sampleConfig(space, rng);
    const x = encode(space, c);
    assert.equal(x.length, encodedLength(space));
    assert.ok(x.every((v) => v >= 0 && v <= 1));
    for (const n of neighbours(space, c)) assert.notEqual(configKey(n), configKey(c));
  }
  const c = { method: "lora", size: 8, target: 0, layers: [2, 5] };
  assert.deepEqual(extraTrainArgs(space, c), ["--target", "q_proj,v_proj", "--layers-to-transform", "2,5"]);
  // Flipping a layer back to "all on" is the canonical null mask.
  const nb = neighbours(space, { method: "lora", size: 8, target: 2, layers: [0, 1, 2, 3, 4] });
  assert.ok(nb.some((n) => n.method === "lora" && n.layers === null));
});
