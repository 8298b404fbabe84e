/**
 * How many token positions a model can take, from its config.json. Longer inputs index past the
 * position table (an out-of-range Gather in ORT), so callers clamp or refuse before that.
 */
import type { RawConfig } from "./config.js";

export interface PositionLimit {
  /** Usable positions, e.g. 128. */
  limit: number;
  /** The config field(s) it comes from, for messages: "max_position_embeddings 130 − padding_idx 1 − 1". */
  source: string;
}

const int = (raw: RawConfig, key: string, fallback: number): number => {
  const v = raw[key];
  return typeof v === "number" && Number.isInteger(v) ? v : fallback;
};

/** The model's usable positions, or null when its config declares no limit (e.g. ViT). */
export function usablePositions(raw: RawConfig): PositionLimit | null {
  const type = raw.model_type;
  if (type === "roberta") {
    // RoBERTa counts positions from padding_idx + 1 (= pad_token_id + 1), so two rows are never used.
    const table = int(raw, "max_position_embeddings", 514);
    const pad = int(raw, "pad_token_id", 1);
    return { limit: table - pad - 1, source: `max_position_embeddings ${table} − padding_idx ${pad} − 1` };
  }
  if (type === "bert") {
    const table = int(raw, "max_position_embeddings", 512);
    return { limit: table, source: `max_position_embeddings ${table}` };
  }
  if (type === "gpt2") {
    const n = int(raw, "n_positions", 1024);
    return { limit: n, source: `n_positions ${n}` };
  }
  if (typeof raw.max_position_embeddings === "number" && Number.isInteger(raw.max_position_embeddings)) {
    const n = raw.max_position_embeddings;
    return { limit: n, source: `max_position_embeddings ${n}` };
  }
  return null;
}
