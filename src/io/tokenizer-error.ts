import { PeftkitError } from "../engine/errors.js";

/**
 * A tokenizer folder, file or field that peftkit cannot use, or a tokenizer call it cannot honour.
 * Lives in its own module so that tokenizer.ts and chat-template.ts can both throw it without an
 * import cycle; tokenizer.ts re-exports it.
 */
export class TokenizerError extends PeftkitError {}
