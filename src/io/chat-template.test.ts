import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { renderChatTemplate, selectChatTemplate } from "./chat-template.js";
import { TokenizerError } from "./tokenizer-error.js";

describe("selectChatTemplate", () => {
  test("string, list with default, list without default, absent", () => {
    assert.equal(selectChatTemplate("T", "cfg.json"), "T");
    assert.equal(
      selectChatTemplate(
        [
          { name: "rag", template: "R" },
          { name: "default", template: "D" },
        ],
        "cfg.json",
      ),
      "D",
    );
    assert.equal(selectChatTemplate([{ name: "rag", template: "R" }], "cfg.json"), null);
    assert.equal(selectChatTemplate(undefined, "cfg.json"), null);
    assert.equal(selectChatTemplate(null, "cfg.json"), null);
  });

  test("malformed values name the file and entry", () => {
    assert.throws(() => selectChatTemplate([1], "cfg.json"), /cfg\.json: chat_template\[0\]/);
    assert.throws(() => selectChatTemplate([{ name: "default", template: 3 }], "cfg.json"), /cfg\.json: chat_template\[0\]\.template/);
    assert.throws(() => selectChatTemplate({}, "cfg.json"), TokenizerError);
  });
});

describe("renderChatTemplate", () => {
  const base = { addGenerationPrompt: false, specialTokens: { bos_token: "<s>", eos_token: "</s>" } };

  test("variables, loop state and generation prompt", () => {
    const src =
      "{{ bos_token }}{% for m in messages %}{{ loop.index0 }}:{{ m.role|upper }}={{ m['content'] }}{% if not loop.last %}|{% endif %}{% endfor %}" +
      "{% if add_generation_prompt %}>>{% endif %}{{ eos_token }}";
    const msgs = [
      { role: "user", content: "a" },
      { role: "assistant", content: "b" },
    ];
    assert.equal(renderChatTemplate(src, msgs, base), "<s>0:USER=a|1:ASSISTANT=b</s>");
    assert.equal(renderChatTemplate(src, msgs, { ...base, addGenerationPrompt: true }), "<s>0:USER=a|1:ASSISTANT=b>></s>");
  });

  test("block tags trim their newline and leading indentation, as transformers configures Jinja", () => {
    const src = "{% for m in messages %}\n    {{ m.content }}\n{% endfor %}";
    assert.equal(renderChatTemplate(src, [{ role: "user", content: "x" }], base), "    x\n");
  });

  test("extra variables override the standard ones", () => {
    assert.equal(renderChatTemplate("{{ bos_token }}{{ flag }}", [], { ...base, extra: { bos_token: "B", flag: 7 } }), "B7");
  });

  test("raise_exception and template errors become TokenizerError", () => {
    assert.throws(() => renderChatTemplate("{{ raise_exception('nope') }}", [], base), /chat template raised: nope/);
    assert.throws(() => renderChatTemplate("{% for %}", [], base), TokenizerError);
  });
});
