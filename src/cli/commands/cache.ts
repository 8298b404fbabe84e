import { cacheLocation, DiskCompileCache } from "../../io/compile-cache.js";
import { type CommandSpec, UsageError } from "../args.js";

const mb = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(1)} MB`;

export const cacheCommand: CommandSpec = {
  name: "cache",
  summary: "Show or clear the compile cache (ONNX Runtime's optimized models, reused across runs).",
  usage: "peftkit cache info|clear [--json]",
  flags: [
    {
      name: "what",
      type: "string",
      meta: "ACTION",
      help: "info: location, entries, size, cap; clear: delete every entry",
      choices: ["info", "clear"],
      required: true,
    },
    { name: "json", type: "boolean", help: "print one JSON object" },
  ],
  examples: ["peftkit cache info", "peftkit cache clear", "PEFTKIT_CACHE=/tmp/pk peftkit cache info --json"],
  async run(o) {
    let loc: ReturnType<typeof cacheLocation>;
    try {
      loc = cacheLocation();
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const json = Boolean(o.json);
    if (!loc.dir) {
      const msg = "the compile cache is off (PEFTKIT_CACHE=off)";
      console.log(json ? JSON.stringify({ enabled: false, location: null, entries: 0, bytes: 0, max_bytes: loc.maxBytes }) : msg);
      return 0;
    }
    const cache = new DiskCompileCache(loc.dir, loc.maxBytes);
    if (o.what === "clear") {
      const r = cache.clear();
      console.log(
        json
          ? JSON.stringify({ location: loc.dir, removed_files: r.files, removed_bytes: r.bytes })
          : `removed ${r.files} file(s), ${mb(r.bytes)}, from ${loc.dir}`,
      );
      return 0;
    }
    const entries = cache.entries();
    const bytes = entries.reduce((n, e) => n + e.bytes, 0);
    if (json) {
      console.log(JSON.stringify({ enabled: true, location: loc.dir, entries: entries.length, bytes, max_bytes: loc.maxBytes }));
      return 0;
    }
    console.log(
      [
        `location: ${loc.dir}${process.env.PEFTKIT_CACHE ? " (PEFTKIT_CACHE)" : ""}`,
        `entries: ${entries.length}`,
        `size: ${mb(bytes)} of ${mb(loc.maxBytes)} (cap: PEFTKIT_CACHE_MAX_MB)`,
        entries.length ? `oldest use: ${new Date(entries[0].mtimeMs).toISOString()}` : "",
      ]
        .filter(Boolean)
        .join("\n"),
    );
    return 0;
  },
};
