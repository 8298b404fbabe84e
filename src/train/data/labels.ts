/**
 * The classes of a classification training run, from the data and the base model's config.json.
 *
 * transformers takes num_labels/id2label from config.json unless told otherwise, and its
 * run_glue example keeps a fine-tuned model's own label→id map when the dataset's labels match
 * it. peftkit does the same, so a pretrained head keeps the meaning of its rows:
 * - string labels that are all among the model's id2label names use the model's ids;
 * - otherwise string labels get ids in sorted (code-unit) order, and num_labels is their count;
 * - integer labels are class ids; when they all fit the model's num_labels, the model's count
 *   and names are kept (data need not use every class), else num_labels is the largest + 1 with
 *   transformers' names LABEL_0, LABEL_1, ...
 * When the data decides a num_labels other than the model's, a pretrained head of the other size
 * cannot be loaded (as in transformers without ignore_mismatched_sizes).
 */
import { defaultLabelNames, hasDefaultNames, type LabelConfig, labelConfig } from "../../io/label-config.js";
import type { Example } from "./tokenize.js";

export interface TrainingLabels {
  labels: LabelConfig;
  /** The examples with class ids in `labels`' order (the same objects when nothing changed). */
  examples: Example[];
  /** Set when the model's own class names were set aside for the data's. */
  warning?: string;
}

/**
 * `data` is a loaded classification dataset: labelNames (string labels, sorted, as the loader
 * numbers them) or only numLabels (integer labels). `model` is what the base config.json declares.
 */
export function trainingLabels(
  data: { examples: Example[]; labelNames?: readonly string[]; numLabels?: number },
  model: LabelConfig | null,
  modelConfigPath: string,
): TrainingLabels {
  if (data.labelNames === undefined) {
    const n = data.numLabels ?? 1;
    if (model && n <= model.names.length) return { labels: model, examples: data.examples };
    return { labels: labelConfig(defaultLabelNames(n)), examples: data.examples };
  }
  const names = data.labelNames;
  if (model && names.every((l) => model.names.includes(l))) {
    const to = names.map((l) => model.names.indexOf(l));
    const same = to.every((id, i) => id === i);
    const examples = same ? data.examples : data.examples.map((e) => ({ ...e, label: to[e.label as number] }));
    return { labels: model, examples };
  }
  const warning =
    model && !hasDefaultNames(model)
      ? `the labels of ${modelConfigPath} (${model.names.join(", ")}) do not include all the data's labels (${names.join(", ")}); the data's labels are used, in sorted order`
      : undefined;
  return { labels: labelConfig(names), examples: data.examples, warning };
}
