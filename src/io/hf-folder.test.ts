import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import type { PeftkitError } from "../engine/errors.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { CheckpointError, loadConfig, openCheckpoint, readJsonFile } from "./hf-folder.js";
import { f32ToBf16Bits, SafetensorsError, writeSafetensors } from "./safetensors.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "peftkit-hf-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));
const newDir = () => fs.mkdtempSync(path.join(root, "m-"));

const randT = (shape: number[]): HostTensor =>
  hostTensor(
    "f32",
    shape,
    Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => Math.random() * 2 - 1),
  );

function expectError(fn: () => unknown, cls: typeof PeftkitError, ...patterns: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    for (const p of patterns) {
      if (typeof p === "string") assert.ok(e.message.includes(p), `message ${JSON.stringify(e.message)} should mention ${p}`);
      else assert.match(e.message, p);
    }
    return true;
  });
}

/** A sharded folder: three tensors over two shards plus an index written by hand. */
function shardedFolder(): { dir: string; tensors: Record<string, HostTensor>; weightMap: Record<string, string> } {
  const dir = newDir();
  const tensors = {
    "model.embed_tokens.weight": randT([4, 3]),
    "model.layers.0.mlp.up_proj.weight": randT([2, 3]),
    "model.norm.weight": randT([3]),
  };
  const weightMap = {
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00002-of-00002.safetensors",
  };
  writeSafetensors(path.join(dir, "model-00001-of-00002.safetensors"), {
    "model.embed_tokens.weight": tensors["model.embed_tokens.weight"],
    "model.layers.0.mlp.up_proj.weight": tensors["model.layers.0.mlp.up_proj.weight"],
  });
  writeSafetensors(path.join(dir, "model-00002-of-00002.safetensors"), { "model.norm.weight": tensors["model.norm.weight"] });
  writeIndex(dir, weightMap);
  return { dir, tensors, weightMap };
}

function writeIndex(dir: string, weightMap: unknown): void {
  fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 84 }, weight_map: weightMap }));
}

describe("openCheckpoint", () => {
  test("single model.safetensors, float dtypes as f32 by default", () => {
    const dir = newDir();
    const w = randT([3, 2]);
    const bits = Uint16Array.from([0x3f80, 0xc000]);
    writeSafetensors(path.join(dir, "model.safetensors"), {
      "lm_head.weight": w,
      "b.bf16": { dtype: "BF16", shape: [2], data: new Uint8Array(bits.buffer) },
      "c.f64": hostTensor("f64", [2], [0.1, -3]),
      "d.f16": hostTensor("f16", [1], Uint16Array.from([0x3c00])),
      "e.i64": hostTensor("i64", [1], [5]),
    });
    const store = openCheckpoint(dir);
    try {
      assert.deepEqual(store.names(), ["b.bf16", "c.f64", "d.f16", "e.i64", "lm_head.weight"]);
      assert.ok(store.has("lm_head.weight"));
      assert.ok(!store.has("nope"));
      assert.deepEqual(store.info("b.bf16"), { dtype: "BF16", shape: [2], file: path.join(dir, "model.safetensors") });
      assert.deepEqual(store.get("lm_head.weight"), w);
      assert.deepEqual(store.get("b.bf16"), hostTensor("f32", [2], [1, -2]));
      assert.deepEqual(store.get("c.f64"), hostTensor("f32", [2], Float32Array.from([0.1, -3])));
      assert.deepEqual(store.get("c.f64", { keepF64: true }), hostTensor("f64", [2], [0.1, -3]));
      assert.deepEqual(store.get("d.f16"), hostTensor("f32", [1], [1]));
      assert.deepEqual(store.get("d.f16", { keepF16: true }), hostTensor("f16", [1], Uint16Array.from([0x3c00])));
      assert.deepEqual(store.get("e.i64"), hostTensor("i64", [1], [5]));
      expectError(() => store.get("nope"), CheckpointError, dir, 'no tensor named "nope"');
    } finally {
      store.close();
    }
    expectError(() => store.get("lm_head.weight"), CheckpointError, "closed");
    assert.equal(f32ToBf16Bits(-2), 0xc000);
  });

  test("sharded checkpoint through model.safetensors.index.json", () => {
    const { dir, tensors, weightMap } = shardedFolder();
    const store = openCheckpoint(dir);
    try {
      assert.deepEqual(store.names(), Object.keys(tensors).sort());
      for (const [name, t] of Object.entries(tensors)) {
        assert.deepEqual(store.get(name), t, name);
        assert.equal(store.info(name).file, path.join(dir, weightMap[name]));
      }
    } finally {
      store.close();
    }
  });

  test("model.safetensors wins over an index (as in transformers)", () => {
    const { dir } = shardedFolder();
    writeSafetensors(path.join(dir, "model.safetensors"), { only: randT([1]) });
    const store = openCheckpoint(dir);
    assert.deepEqual(store.names(), ["only"]);
    store.close();
  });

  test("shard file missing", () => {
    const { dir } = shardedFolder();
    fs.rmSync(path.join(dir, "model-00002-of-00002.safetensors"));
    expectError(() => openCheckpoint(dir), CheckpointError, "model.safetensors.index.json", "missing", "model-00002-of-00002.safetensors");
  });

  test("tensor listed in the index but absent from its shard", () => {
    const { dir, weightMap } = shardedFolder();
    writeIndex(dir, { ...weightMap, "model.extra.weight": "model-00002-of-00002.safetensors" });
    expectError(
      () => openCheckpoint(dir),
      CheckpointError,
      /listed for model-00002-of-00002.safetensors are not in it: "model.extra.weight"/,
    );
  });

  test("tensor listed under the wrong shard", () => {
    const { dir, weightMap } = shardedFolder();
    writeIndex(dir, { ...weightMap, "model.norm.weight": "model-00001-of-00002.safetensors" });
    // the first shard does not hold model.norm.weight; the index points there
    expectError(() => openCheckpoint(dir), CheckpointError, /are not in it: "model.norm.weight"/);
  });

  test("shard holds a tensor the index does not list, or assigns to another shard", () => {
    const { dir, weightMap, tensors } = shardedFolder();
    const { "model.layers.0.mlp.up_proj.weight": _gone, ...rest } = weightMap;
    writeIndex(dir, rest);
    expectError(
      () => openCheckpoint(dir),
      CheckpointError,
      /shard model-00001-of-00002.safetensors holds 1 tensor\(s\) the index does not assign to it: "model.layers.0.mlp.up_proj.weight" \(not in the index\)/,
    );
    writeIndex(dir, weightMap);
    writeSafetensors(path.join(dir, "model-00002-of-00002.safetensors"), {
      "model.norm.weight": tensors["model.norm.weight"],
      "model.embed_tokens.weight": tensors["model.embed_tokens.weight"],
    });
    expectError(
      () => openCheckpoint(dir),
      CheckpointError,
      /shard model-00002-of-00002.safetensors .*"model.embed_tokens.weight" \(index says model-00001-of-00002.safetensors\)/,
    );
  });

  test("index faults: not JSON, no weight_map, wrong types, escaping paths, empty", () => {
    const { dir, weightMap } = shardedFolder();
    const idx = path.join(dir, "model.safetensors.index.json");
    fs.writeFileSync(idx, '{"weight_map": {');
    expectError(() => openCheckpoint(dir), CheckpointError, idx, "weight index is not valid JSON");
    fs.writeFileSync(idx, "[]");
    expectError(() => openCheckpoint(dir), CheckpointError, idx, "must be a JSON object");
    fs.writeFileSync(idx, '{"metadata": {}}');
    expectError(() => openCheckpoint(dir), CheckpointError, idx, 'has no "weight_map"');
    writeIndex(dir, ["a"]);
    expectError(() => openCheckpoint(dir), CheckpointError, idx, '"weight_map" must be an object');
    writeIndex(dir, { ...weightMap, x: 3 });
    expectError(() => openCheckpoint(dir), CheckpointError, idx, 'weight_map["x"] must be a shard file name, got 3');
    writeIndex(dir, { ...weightMap, x: "../elsewhere.safetensors" });
    expectError(() => openCheckpoint(dir), CheckpointError, idx, "outside the folder");
    writeIndex(dir, { ...weightMap, x: "/etc/passwd" });
    expectError(() => openCheckpoint(dir), CheckpointError, idx, "outside the folder");
    writeIndex(dir, {});
    expectError(() => openCheckpoint(dir), CheckpointError, idx, "lists no tensors");
  });

  test("a corrupt shard is a SafetensorsError naming the shard", () => {
    const { dir } = shardedFolder();
    const shard = path.join(dir, "model-00002-of-00002.safetensors");
    fs.writeFileSync(shard, fs.readFileSync(shard).subarray(0, 20));
    expectError(() => openCheckpoint(dir), SafetensorsError, shard);
  });

  test("folder without weights; PyTorch-only folder; missing folder; a file instead of a folder", () => {
    const dir = newDir();
    expectError(() => openCheckpoint(dir), CheckpointError, dir, "no weights found", "model.safetensors", "model.safetensors.index.json");
    fs.writeFileSync(path.join(dir, "pytorch_model.bin"), "not really");
    expectError(() => openCheckpoint(dir), CheckpointError, dir, "PyTorch .bin checkpoints are not supported; convert to safetensors");
    expectError(() => openCheckpoint(path.join(dir, "nope")), CheckpointError, "nope", "not found");
    expectError(() => openCheckpoint(path.join(dir, "pytorch_model.bin")), CheckpointError, "not a folder");
  });
});

describe("config and JSON files", () => {
  test("loadConfig reads config.json with model_type", () => {
    const dir = newDir();
    const cfg = { model_type: "llama", hidden_size: 64, rope_theta: 10000.5, tie_word_embeddings: false };
    fs.writeFileSync(path.join(dir, "config.json"), `\ufeff${JSON.stringify(cfg)}`);
    assert.deepEqual(loadConfig(dir), cfg);
  });

  test("loadConfig faults", () => {
    const dir = newDir();
    const p = path.join(dir, "config.json");
    expectError(() => loadConfig(dir), CheckpointError, p, "cannot read model config: file not found");
    fs.writeFileSync(p, '{"model_type": "llama",}');
    expectError(() => loadConfig(dir), CheckpointError, p, "model config is not valid JSON", /JSON at position|Expected/);
    fs.writeFileSync(p, '{"hidden_size": 4}');
    expectError(() => loadConfig(dir), CheckpointError, p, 'has no "model_type"');
    fs.writeFileSync(p, '{"model_type": 4}');
    expectError(() => loadConfig(dir), CheckpointError, p, 'invalid (4) "model_type"');
    fs.writeFileSync(p, '"llama"');
    expectError(() => loadConfig(dir), CheckpointError, p, "must be a JSON object");
  });

  test("readJsonFile names the file and its role", () => {
    const p = path.join(newDir(), "tokenizer_config.json");
    fs.writeFileSync(p, "{\n  'single': 1\n}");
    expectError(() => readJsonFile(p, "tokenizer config"), CheckpointError, p, "tokenizer config is not valid JSON");
    fs.writeFileSync(p, '{"a": [1, 2]}');
    assert.deepEqual(readJsonFile(p, "tokenizer config"), { a: [1, 2] });
  });
});
