import { describe } from "node:test";
import { runConformance } from "../conformance.js";

describe("LoKr", () => {
  runConformance({
    name: "LoKr on llama (q,v defaults; full factors)",
    model: "llama_basic",
    identityConfig: { peftType: "LOKR", r: 4, alpha: 8 },
    config: { peftType: "LOKR", r: 4, alpha: 8, initWeights: false },
  });
  runConformance({
    name: "LoKr all-linear, decompose_both, r=1 (decomposed factors) on llama GQA",
    model: "llama_gqa_tied",
    identityConfig: { peftType: "LOKR", r: 1, targetModules: "all-linear", decomposeBoth: true, initWeights: "lycoris" },
    config: {
      peft_type: "LOKR",
      r: 1,
      alpha: 2,
      target_modules: "all-linear",
      decompose_both: true,
      init_weights: false,
      rank_pattern: { o_proj: 4 },
    },
  });
  runConformance({
    name: "LoKr with decompose_factor on BERT classification",
    model: "bert_seq_cls",
    config: {
      peftType: "LOKR",
      taskType: "SEQ_CLS",
      r: 1,
      alpha: 4,
      decomposeFactor: 4,
      initWeights: false,
      modulesToSave: ["classifier"],
    },
    mixedBatch: false,
  });
});
