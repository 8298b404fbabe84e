import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { TokenizerError } from "./tokenizer-error.js";

/** One turn of a conversation, as chat templates expect it. */
export interface ChatMessage {
  role: string;
  content: string;
  /** Templates may read more fields (e.g. `tool_calls`); they are passed through as given. */
  [field: string]: unknown;
}

/**
 * Picks the template string out of tokenizer_config.json's `chat_template`, which is either a string
 * or (newer files) a list of named templates; the one named "default" is what transformers renders
 * when no name is asked for. Returns null when the file has no usable default template.
 */
export function selectChatTemplate(raw: unknown, file: string): string | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw === "string") return raw;
  if (Array.isArray(raw)) {
    for (const [i, entry] of raw.entries()) {
      if (typeof entry !== "object" || entry === null) {
        throw new TokenizerError(`${file}: chat_template[${i}] must be an object {name, template}`);
      }
      const { name, template } = entry as { name?: unknown; template?: unknown };
      if (name === "default") {
        if (typeof template !== "string") {
          throw new TokenizerError(`${file}: chat_template[${i}].template (name "default") must be a string`);
        }
        return template;
      }
    }
    return null;
  }
  throw new TokenizerError(`${file}: chat_template must be a string or a list of {name, template}, got ${typeof raw}`);
}

/** Parsed templates are reused: parsing dominates the cost of rendering short conversations. */
const parsedCache = new Map<string, Template>();

function parse(source: string): Template {
  let t = parsedCache.get(source);
  if (t === undefined) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new TokenizerError(`chat template does not parse: ${(e as Error).message}`);
    }
    if (parsedCache.size > 32) parsedCache.clear();
    parsedCache.set(source, t);
  }
  return t;
}

/** Python's range(stop) / range(start, stop[, step]), which templates use for index loops. */
function pyRange(a: number, b?: number, step = 1): number[] {
  const [start, stop] = b === undefined ? [0, a] : [a, b];
  if (step === 0) throw new TokenizerError("chat template called range() with step 0");
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/** The strftime subset that chat templates use to print today's date (e.g. Llama 3.1's "%d %b %Y"). */
function strftimeNow(format: string): string {
  const d = new Date();
  const p2 = (n: number) => String(n).padStart(2, "0");
  return format.replace(/%[YmdbBHMSyaAj%]/g, (code) => {
    switch (code) {
      case "%Y":
        return String(d.getFullYear());
      case "%y":
        return p2(d.getFullYear() % 100);
      case "%m":
        return p2(d.getMonth() + 1);
      case "%d":
        return p2(d.getDate());
      case "%b":
        return MONTHS[d.getMonth()].slice(0, 3);
      case "%B":
        return MONTHS[d.getMonth()];
      case "%a":
        return DAYS[d.getDay()].slice(0, 3);
      case "%A":
        return DAYS[d.getDay()];
      case "%H":
        return p2(d.getHours());
      case "%M":
        return p2(d.getMinutes());
      case "%S":
        return p2(d.getSeconds());
      case "%j": {
        const day = Math.floor((Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()) - Date.UTC(d.getFullYear(), 0, 1)) / 86_400_000);
        return String(day + 1).padStart(3, "0");
      }
      default:
        return "%";
    }
  });
}

/**
 * Renders a chat template the way transformers does: the conversation as `messages`, the special
 * token strings, `add_generation_prompt`, and a `raise_exception` that templates call to reject a
 * conversation (its message becomes a TokenizerError). `extra` adds or overrides variables
 * (e.g. `tools`, `enable_thinking`).
 *
 * Template.render would install its own raise_exception (a plain Error) and refuses a second one, so
 * the parsed program runs in an environment built here with the same globals.
 */
export function renderChatTemplate(
  source: string,
  messages: readonly ChatMessage[],
  vars: { addGenerationPrompt: boolean; specialTokens: Record<string, unknown>; extra?: Record<string, unknown> },
): string {
  const template = parse(source);
  const context: Record<string, unknown> = {
    true: true,
    false: false,
    none: null,
    True: true,
    False: false,
    None: null,
    range: pyRange,
    strftime_now: strftimeNow,
    ...vars.specialTokens,
    messages: messages.map((m) => ({ ...m })),
    add_generation_prompt: vars.addGenerationPrompt,
    raise_exception: (message: unknown) => {
      throw new TokenizerError(`chat template raised: ${String(message)}`);
    },
    ...vars.extra,
  };
  try {
    const env = new Environment();
    for (const [name, value] of Object.entries(context)) env.set(name, value);
    const out = new Interpreter(env).run(template.parsed).value;
    if (typeof out !== "string") throw new TokenizerError(`chat template rendered a ${typeof out}, not text`);
    return out;
  } catch (e) {
    if (e instanceof TokenizerError) throw e;
    throw new TokenizerError(`chat template failed to render: ${(e as Error).message}`);
  }
}
