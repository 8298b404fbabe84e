import { describe } from "node:test";
import { runConformance } from "../conformance.js";

describe("LoHa", () => {
  runConformance({
    name: "LoHa on llama (q,v defaults)",
    model: "llama_basic",
    identityConfig: { peftType: "LOHA", r: 4, alpha: 8 },
    config: { peftType: "LOHA", r: 4, alpha: 8, initWeights: false },
  });
  runConformance({
    name: "LoHa all-linear with rank/alpha patterns on llama GQA",
    model: "llama_gqa_tied",
    config: {
      peft_type: "LOHA",
      r: 2,
      alpha: 4,
      target_modules: "all-linear",
      init_weights: false,
      rank_pattern: { o_proj: 3 },
      alpha_pattern: { "layers\\.1\\..*": 2 },
    },
  });
  runConformance({
    name: "LoHa on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    config: { peftType: "LOHA", taskType: "SEQ_CLS", r: 2, alpha: 4, initWeights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });
});
