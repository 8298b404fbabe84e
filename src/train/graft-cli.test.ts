/**
 * `peftkit graft` end to end on models/wordnet-llama with a LoRA adapter fine-tuned on 8 records
 * (merged into the base first): with sparsity 1 the graft applied by `peftkit delta apply` is θ_ft
 * (the merged model) on every weight and scores the same; a run killed by SIGKILL after an epoch
 * resumes to the uninterrupted result bit for bit (scores S, the graft, the record); bad flags
 * are refused in one line naming the flag.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import type { HostTensor } from "../engine/ir/host.js";
import { readSafetensors } from "../io/safetensors.js";
import { runCli, writeJsonl } from "../testing/cli.js";
import { MODEL, tempDir, writeKindOfData } from "../testing/train-cli.js";

const tmp = tempDir("peftkit-graft-cli-");

const rows = (pairs: string[]) =>
  pairs.map((s) => {
    const [w, k] = s.split(" ");
    return { prompt: `a ${w} is a kind of`, completion: ` ${k}` };
  });
const train = writeKindOfData(tmp);
const dev = writeJsonl(tmp, "dev.jsonl", rows(["horse animal", "pine tree", "lily flower", "apple fruit"]));
const adapter = join(tmp, "lora");
const merged = join(tmp, "merged");

const GRAFT = [
  ...["graft", "--model", MODEL, "--finetuned", adapter, "--data", train, "--eval-data", dev],
  ...["--batch-size", "4", "--accumulation", "2", "--exact-match-limit", "8", "--threads", "1"],
];
const weights = (dir: string): Record<string, HostTensor> => readSafetensors(join(dir, "model.safetensors")).tensors;

describe("peftkit graft", () => {
  before(() => {
    const r = runCli([
      ...["train", "--model", MODEL, "--data", train, "--method", "lora", "--target", "all-linear", "--r", "4"],
      ...["--lr", "1e-2", "--max-steps", "6", "--batch-size", "4", "--eval-fraction", "0", "--threads", "1", "--output-dir", adapter],
    ]);
    assert.equal(r.code, 0, r.stderr);
    const m = runCli(["merge", "--model", MODEL, "--adapter", adapter, "--output-dir", merged]);
    assert.equal(m.code, 0, m.stderr);
  });

  test("sparsity 1: the applied graft is θ_ft on every weight and scores the same", () => {
    const out = join(tmp, "g-all");
    const r = runCli([...GRAFT, "--sparsity", "1", "--epochs", "2", "--output-dir", out]);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(out, "graft_config.json"), "utf8"));
    const res = cfg.result;
    assert.equal(res.entries, res.graftable, "every graftable entry is in the graft");
    assert.equal(res.metric, "exact_match");
    const best = res.history.find((h: { epoch: number }) => h.epoch === res.best_epoch);
    assert.deepEqual([best.train_score, best.dev_score], [res.finetuned.train, res.finetuned.dev]);

    const applied = join(tmp, "applied");
    const a = runCli(["delta", "apply", "--model", MODEL, "--input", join(out, "graft.safetensors"), "--output-dir", applied]);
    assert.equal(a.code, 0, a.stderr);
    const ft = weights(merged);
    const got = weights(applied);
    const base = weights(MODEL);
    // τ is stored in F32, so θ_pre + τ is θ_ft up to the rounding of one f32 addition: exact where
    // θ_pre and θ_ft are within a factor 2 (Sterbenz), else within half an ulp of the sum.
    let changed = 0;
    let inexact = 0;
    let total = 0;
    for (const [n, t] of Object.entries(ft)) {
      const g = got[n].data as Float32Array;
      const w = t.data as Float32Array;
      const p = base[n].data as Float32Array;
      for (let i = 0; i < w.length; i++) {
        assert.equal(g[i], Math.fround(p[i] + Math.fround(w[i] - p[i])), `${n}[${i}]`);
        const ulp = 2 ** (Math.floor(Math.log2(Math.max(Math.abs(p[i]), Math.abs(w[i]), 1e-38))) - 23);
        assert.ok(Math.abs(g[i] - w[i]) <= ulp, `${n}[${i}]: ${g[i]} vs θ_ft ${w[i]}`);
        if (g[i] !== w[i]) inexact++;
        total++;
      }
      if (p[0] !== w[0]) changed++;
    }
    assert.ok(changed >= 20, `the adapter changed the linear weights (${changed})`);
    assert.ok(inexact < total / 20, `${inexact} of ${total} entries differ from θ_ft by rounding`);
    // The same score as θ_ft by `peftkit eval` too.
    const e1 = runCli(["eval", "--model", merged, "--data", dev, "--threads", "1"]);
    const e2 = runCli(["eval", "--model", applied, "--data", dev, "--threads", "1"]);
    assert.equal(e1.code, 0, e1.stderr);
    assert.equal(e2.code, 0, e2.stderr);
    const metric = (out: string, name: string) => Number(new RegExp(`${name}\\s+(\\S+)`).exec(out)?.[1]);
    assert.equal(metric(e2.stdout, "eval_exact_match"), metric(e1.stdout, "eval_exact_match"));
    assert.ok(Math.abs(metric(e2.stdout, "eval_loss") - metric(e1.stdout, "eval_loss")) < 1e-4, `${e1.stdout}\n${e2.stdout}`);
  });

  test("a run killed by SIGKILL after an epoch resumes exactly", () => {
    const flags = ["--sparsity", "0.05", "--epochs", "3", "--mask-lr", "1e9", "--sigmoid-bias", "1", "--seed", "7"];
    const straight = join(tmp, "g-straight");
    const s = runCli([...GRAFT, ...flags, "--output-dir", straight]);
    assert.equal(s.code, 0, s.stderr);
    const killed = join(tmp, "g-killed");
    const k = runCli([...GRAFT, ...flags, "--output-dir", killed], { PEFTKIT_FAULT_AT: "graft:epoch#2" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    const again = runCli([...GRAFT, ...flags, "--output-dir", killed]);
    assert.equal(again.code, 2, "refuses to overwrite without --resume");
    assert.match(again.stderr, /pass --resume/);
    const resumed = runCli([...GRAFT, ...flags, "--output-dir", killed, "--resume"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, /resuming after epoch 2 of 3/);
    // Killed before the first update too (the state holds the initial S and no kept mask yet).
    const early = join(tmp, "g-early");
    const k0 = runCli([...GRAFT, ...flags, "--output-dir", early], { PEFTKIT_FAULT_AT: "graft:start" });
    assert.equal(k0.signal, "SIGKILL", k0.stderr);
    const r0 = runCli([...GRAFT, ...flags, "--output-dir", early, "--resume"]);
    assert.equal(r0.code, 0, r0.stderr);
    assert.match(r0.stdout, /resuming after epoch 0 of 3/);
    for (const dir of [killed, early])
      for (const f of ["graft_state.safetensors", "graft.safetensors", "graft_config.json"])
        assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(straight, f))), `${dir}: ${f} is bit-identical`);
    const other = runCli([...GRAFT, ...flags, "--seed", "8", "--output-dir", killed, "--resume"]);
    assert.equal(other.code, 2, "a resume with other settings is refused");
    assert.match(other.stderr, /graft_state\.safetensors: made with other settings/);
    // The scores moved: the mask changed during the run, so resuming had something to get right.
    const st = readSafetensors(join(straight, "graft_state.safetensors"));
    const hist = JSON.parse(st.metadata.result).history as { entries: number }[];
    assert.ok(
      new Set(hist.map((h) => h.entries)).size > 1 ||
        hist[0].entries !== Math.floor(0.05 * JSON.parse(readFileSync(join(straight, "graft_config.json"), "utf8")).result.graftable),
      JSON.stringify(hist),
    );
  });

  test("bad flags: one line naming the flag", () => {
    const out = join(tmp, "g-bad");
    const zero = runCli([...GRAFT, "--sparsity", "0", "--output-dir", out]);
    assert.equal(zero.code, 2);
    assert.match(zero.stderr, /--sparsity/);
    const tiny = runCli([...GRAFT, "--sparsity", "1e-9", "--output-dir", out]);
    assert.equal(tiny.code, 2);
    assert.match(tiny.stderr, /--sparsity 1e-9 keeps no entry of the \d+ graftable ones/);
    const nf = runCli([...GRAFT.map((a) => (a === adapter ? join(tmp, "nope") : a)), "--output-dir", out]);
    assert.equal(nf.code, 2);
    assert.match(nf.stderr, /--finetuned .*nope: no such folder/);
  });
});
