/**
 * The built-in search space (Llama-style module names, e.g. the wordnet suite's models/wordnet-llama):
 * the four method families `peftkit compare` runs by default, their sizes on powers of two, two or
 * three target subsets and the per-layer mask where the method has layers_to_transform.
 */
export const DEFAULT_SPACE_YAML = `# peftkit search: the built-in space (docs/search.md)
methods:
  lora:
    r: [1, 64]                       # the powers of two from 1 to 64
    target_modules:
      - [q_proj, v_proj]
      - [q_proj, k_proj, v_proj, o_proj]
      - all-linear
    layers: true                     # one on/off bit per transformer layer
  ia3:
    target_modules:
      - [k_proj, v_proj, down_proj]  # PEFT's Llama default
      - all-linear
  prompt:
    tokens: [4, 64]
  adapter:
    bottleneck: [4, 256]
    layers: true
`;
