/** --method oft / boft: the configs the CLI builds parse as PEFT's and name the flags that set them. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { configFlag, methodConfig } from "../../train/methods.js";
import { parsePeftConfig } from "../peft-model.js";

test("--method oft and boft build PEFT configs from their flags", () => {
  const oft = methodConfig("oft", { blockSize: 16, cayley: "exact", coftEps: 1e-3, blockShare: true, r: 8 });
  assert.deepEqual(
    { ...oft },
    {
      task_type: "CAUSAL_LM",
      peft_type: "OFT",
      r: 0,
      oft_block_size: 16,
      target_modules: "all-linear",
      use_cayley_neumann: false,
      coft: true,
      eps: 1e-3,
      block_share: true,
    },
  );
  assert.equal(parsePeftConfig(oft).tuner.peftType, "OFT");
  const plain = parsePeftConfig(methodConfig("oft", {})).config as unknown as Record<string, unknown>;
  assert.equal(plain.oftBlockSize, 32);
  assert.equal(plain.useCayleyNeumann, true);
  const boft = methodConfig("boft", { blockSize: 8, butterflyFactor: 2, target: ["q_proj"] });
  assert.deepEqual(boft, {
    task_type: "CAUSAL_LM",
    peft_type: "BOFT",
    boft_block_size: 8,
    boft_n_butterfly_factor: 2,
    target_modules: ["q_proj"],
  });
  assert.equal(parsePeftConfig(boft).tuner.peftType, "BOFT");
  assert.equal(configFlag("peft_type", "OFT"), "--method oft");
  assert.equal(configFlag("peft_type", "BOFT"), "--method boft");
  assert.equal(configFlag("oft_block_size", 16), "--block-size 16");
  assert.equal(configFlag("boft_n_butterfly_factor", 2), "--butterfly-factor 2");
  assert.equal(configFlag("use_cayley_neumann", false), "--cayley exact");
});
