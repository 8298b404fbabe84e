/**
 * Record formats: which fields each needs, detection from the fields present, and validation
 * that turns a raw record into a typed one or a message naming the offending field.
 */
import type { ChatMessage } from "../../io/tokenizer.js";
import { DatasetError, typeName } from "./errors.js";
import type { RawRecord } from "./readers.js";

export type DataFormat = "text" | "prompt_completion" | "chat" | "classification" | "pair_classification" | "token_classification";
export const DATA_FORMATS: readonly DataFormat[] = [
  "text",
  "prompt_completion",
  "chat",
  "classification",
  "pair_classification",
  "token_classification",
];

/** Formats whose examples carry one class id per record (a sequence classification head). */
export const SEQUENCE_CLASSIFICATION_FORMATS: readonly DataFormat[] = ["classification", "pair_classification"];

export type TypedRecord =
  | { format: "text"; text: string }
  | { format: "prompt_completion"; prompt: string; completion: string }
  | { format: "chat"; messages: ChatMessage[] }
  | { format: "classification"; text: string; label: number | string }
  | { format: "pair_classification"; text: string; textPair: string; label: number | string }
  | { format: "token_classification"; tokens: string[]; tags: (number | string)[] };

/** A record with one class label (classification and pair_classification). */
export type LabelledRecord = Extract<TypedRecord, { label: number | string }>;

/**
 * The format the fields of a record imply: `messages` → chat, `prompt` + `completion` →
 * prompt_completion, `tokens` + `tags` → token_classification, `text` + `text_pair` + `label` →
 * pair_classification, `text` + `label` → classification, `text` → text. Null when none fits.
 */
export function formatOfFields(value: Record<string, unknown>): DataFormat | null {
  if ("messages" in value) return "chat";
  if ("prompt" in value && "completion" in value) return "prompt_completion";
  if ("tokens" in value && "tags" in value) return "token_classification";
  if ("text" in value && "text_pair" in value && "label" in value) return "pair_classification";
  if ("text" in value && "label" in value) return "classification";
  if ("text" in value) return "text";
  return null;
}

/** Detects the format from the first record that parsed; the others are then checked against it. */
export function detectFormat(records: readonly RawRecord[], sourceName: string): DataFormat {
  const first = records.find((r) => r.value !== undefined);
  if (first === undefined) {
    const bad = records[0];
    throw new DatasetError(
      bad
        ? `${bad.where}: ${bad.error} (and no record of ${sourceName} could be read, so its format cannot be detected)`
        : `${sourceName}: no records`,
    );
  }
  const f = formatOfFields(first.value!);
  if (f === null) {
    throw new DatasetError(
      `${first.where}: cannot tell the record format from fields ${JSON.stringify(Object.keys(first.value!))}; expected "text", "prompt" + "completion", "messages" (chat), "text" + "label" (classification), "text" + "text_pair" + "label" (pair_classification) or "tokens" + "tags" (token_classification), or name the format explicitly`,
    );
  }
  return f;
}

function needString(v: Record<string, unknown>, field: string): string {
  if (!(field in v) || v[field] === undefined) throw new RecordError(`missing field "${field}"`);
  const x = v[field];
  if (typeof x !== "string") throw new RecordError(`field "${field}" must be a string, got ${typeName(x)}`);
  return x;
}

function needList(v: Record<string, unknown>, field: string): unknown[] {
  if (!(field in v) || v[field] === undefined) throw new RecordError(`missing field "${field}"`);
  const x = v[field];
  if (!Array.isArray(x)) throw new RecordError(`field "${field}" must be a list, got ${typeName(x)}`);
  return x;
}

/** A problem with one record; the loader prefixes its location and decides to stop or skip. */
export class RecordError extends Error {}

const INTEGER_TEXT = /^(0|[1-9][0-9]*)$/;

/** A class label: a non-negative integer (class id) or a string (class name). */
function classLabel(value: unknown, field: string, fromText?: boolean): number | string {
  if (value === undefined) throw new RecordError(`missing field "${field}"`);
  let label = value;
  // CSV cells are text: a label written as a plain integer means that class id.
  if (fromText && typeof label === "string" && INTEGER_TEXT.test(label)) label = Number(label);
  if (typeof label === "number") {
    if (!Number.isSafeInteger(label) || label < 0)
      throw new RecordError(`field "${field}" must be a non-negative integer or a string, got ${label}`);
    return label;
  }
  if (typeof label !== "string") throw new RecordError(`field "${field}" must be an integer or a string, got ${typeName(label)}`);
  return label;
}

/** Validates one record for `format`; throws RecordError with a field-level message. */
export function typeRecord(rec: RawRecord, format: DataFormat): TypedRecord {
  if (rec.value === undefined) throw new RecordError(rec.error ?? "unreadable record");
  const v = rec.value;
  switch (format) {
    case "text":
      return { format, text: needString(v, "text") };
    case "prompt_completion":
      return { format, prompt: needString(v, "prompt"), completion: needString(v, "completion") };
    case "classification":
      return { format, text: needString(v, "text"), label: classLabel(v.label, "label", rec.fromText) };
    case "pair_classification":
      return {
        format,
        text: needString(v, "text"),
        textPair: needString(v, "text_pair"),
        label: classLabel(v.label, "label", rec.fromText),
      };
    case "token_classification": {
      const tokens = needList(v, "tokens");
      const tags = needList(v, "tags");
      if (tokens.length === 0) throw new RecordError('field "tokens" is an empty list');
      if (tags.length !== tokens.length)
        throw new RecordError(
          `field "tags" has ${tags.length} entries, but "tokens" has ${tokens.length}; they must have one tag per token`,
        );
      const words = tokens.map((t, i) => {
        if (typeof t !== "string") throw new RecordError(`field "tokens[${i}]" must be a string, got ${typeName(t)}`);
        if (t.length === 0 || /\s/u.test(t))
          throw new RecordError(`field "tokens[${i}]" must be one word (non-empty, no whitespace), got ${JSON.stringify(t)}`);
        return t;
      });
      return { format, tokens: words, tags: tags.map((t, i) => classLabel(t, `tags[${i}]`, rec.fromText)) };
    }
    case "chat": {
      if (!("messages" in v) || v.messages === undefined) throw new RecordError('missing field "messages"');
      const m = v.messages;
      if (!Array.isArray(m)) throw new RecordError(`field "messages" must be a list of {role, content}, got ${typeName(m)}`);
      if (m.length === 0) throw new RecordError('field "messages" is an empty list');
      const messages: ChatMessage[] = m.map((x, i) => {
        if (typeName(x) !== "object") throw new RecordError(`field "messages[${i}]" must be an object {role, content}, got ${typeName(x)}`);
        const o = x as Record<string, unknown>;
        if (typeof o.role !== "string") throw new RecordError(`field "messages[${i}].role" must be a string, got ${typeName(o.role)}`);
        if (typeof o.content !== "string")
          throw new RecordError(`field "messages[${i}].content" must be a string, got ${typeName(o.content)}`);
        return { ...o, role: o.role, content: o.content } as ChatMessage;
      });
      if (!messages.some((x) => x.role === "assistant")) {
        throw new RecordError('field "messages" has no "assistant" message, so the record has no tokens to learn from');
      }
      return { format, messages };
    }
  }
}
