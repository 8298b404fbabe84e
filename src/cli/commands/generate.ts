import { createInterface } from "node:readline/promises";
import type { ChatMessage } from "../../io/chat-template.js";
import { type CommandSpec, UsageError } from "../args.js";
import { loadModelAndAdapter } from "../load.js";
import { applyTask, TASK_FLAG } from "../task-flag.js";

export const generateCommand: CommandSpec = {
  name: "generate",
  summary:
    "Generate text from a prompt, or chat interactively on a terminal when no --prompt is given; a classifier prints the predicted label.",
  usage:
    "peftkit generate --model DIR [--adapter DIR] [--prompt TEXT] [--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]",
  flags: [
    { name: "model", type: "string", meta: "DIR", help: "model folder (with tokenizer.json)", required: true },
    {
      name: "adapter",
      type: "string",
      meta: "DIR",
      help: "PEFT adapter folder to apply, or the output of a run that trains base tensors in place (lisa, hft, gradnorm_lorp, full-weight mezo)",
    },
    { name: "prompt", type: "string", meta: "TEXT", help: "the prompt; without it, an interactive chat starts on a terminal" },
    { name: "max-new-tokens", type: "int", meta: "N", help: "tokens to generate", default: 64, min: 1 },
    { name: "temperature", type: "number", meta: "T", help: "0 = greedy", default: 0, min: 0 },
    { name: "top-p", type: "number", meta: "P", help: "nucleus sampling threshold", default: 1, exclusiveMin: 0, max: 1 },
    { name: "top-k", type: "int", meta: "K", help: "sample among the K most likely tokens (0 = all)", default: 0, min: 0 },
    { name: "seed", type: "int", meta: "S", help: "sampling seed", default: 0, min: 0, max: 2 ** 32 - 1 },
    { name: "chat", type: "boolean", help: "wrap --prompt in the model's chat template" },
    TASK_FLAG,
  ],
  examples: [
    'peftkit generate --model models/wordnet-llama --prompt "a poodle is a kind of"',
    "peftkit generate --model models/wordnet-llama --adapter runs/demo",
  ],
  async run(o) {
    const { model, peft, tokenizer, labels } = await loadModelAndAdapter(o.model as string, {
      adapter: o.adapter as string | undefined,
      threads: o.threads as number | undefined,
      needTokenizer: true,
      trainedTensors: true,
    });
    if (!tokenizer) throw new UsageError("the model folder has no tokenizer.json");
    applyTask(peft, o.adapter as string | undefined, o.task as string | undefined);
    const runner = peft ?? model;
    // A classifier has nothing to generate: it names the class of the text, as `peftkit eval` scores it.
    const classify = async (text: string): Promise<string> => {
      const ids = tokenizer.encode(text);
      const out = await runner.forward({ inputIds: [ids] });
      const z = out.logits?.data;
      if (!z || !labels) throw new UsageError(`the ${model.head} model gives no class logits`);
      const n = labels.names.length;
      const argmax = (from: number) => {
        let best = 0;
        for (let j = 1; j < n; j++) if (z[from + j] > z[from + best]) best = j;
        return labels.names[best];
      };
      if (model.head !== "token_classification") return argmax(0);
      // A token classifier tags every sub-token (the soft tokens of prompt tuning come first): token/TAG.
      const lead = z.length / n - ids.length;
      const special = new Set(tokenizer.allSpecialIds);
      return ids
        .map((id, i) => (special.has(id) ? null : `${tokenizer.convertIdsToTokens(id)}/${argmax((lead + i) * n)}`))
        .filter((x) => x !== null)
        .join(" ");
    };
    const gen = async (ids: number[]) => {
      const [out] = await runner.generate([ids], {
        maxNewTokens: o.maxNewTokens as number,
        temperature: o.temperature as number,
        topP: o.topP as number,
        topK: o.topK as number,
        seed: o.seed as number,
        eosTokenId: tokenizer.eosTokenId ?? undefined,
      });
      return tokenizer.decode(out.slice(ids.length), { skipSpecialTokens: true });
    };
    try {
      if (labels && typeof o.prompt === "string") {
        process.stdout.write(`${await classify(o.prompt)}\n`);
        return 0;
      }
      if (typeof o.prompt === "string") {
        const ids = o.chat
          ? (tokenizer.applyChatTemplate([{ role: "user", content: o.prompt }], { addGenerationPrompt: true, tokenize: true }) as number[])
          : tokenizer.encode(o.prompt);
        process.stdout.write(`${o.chat ? "" : o.prompt}${await gen(ids)}\n`);
        return 0;
      }
      if (!process.stdin.isTTY) throw new UsageError("--prompt is required when standard input is not a terminal");
      const rl = createInterface({ input: process.stdin, output: process.stdout });
      const history: ChatMessage[] = [];
      const chat = !labels && tokenizer.chatTemplate !== null;
      console.log(`${labels ? "classification" : chat ? "chat" : "completion"} mode; an empty line or Ctrl-D quits.`);
      for (;;) {
        let line: string;
        try {
          line = await rl.question("> ");
        } catch {
          break;
        }
        if (!line.trim()) break;
        if (labels) console.log(await classify(line));
        else if (chat) {
          history.push({ role: "user", content: line });
          const ids = tokenizer.applyChatTemplate(history, { addGenerationPrompt: true, tokenize: true }) as number[];
          const reply = (await gen(ids)).trim();
          history.push({ role: "assistant", content: reply });
          console.log(reply);
        } else console.log(line + (await gen(tokenizer.encode(line))));
      }
      rl.close();
      return 0;
    } finally {
      await model.release();
    }
  },
};
