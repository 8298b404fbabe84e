/**
 * A persistent store for compiled models, so a new process can skip ONNX Runtime's graph
 * optimisation for a graph an earlier process already compiled. The engine only defines the
 * interface: storage (files, IndexedDB, ...) is provided by the host, because the engine must not
 * import Node's fs. `src/io/compile-cache.ts` is the Node implementation; the library and the CLI
 * install it as the default (see `setDefaultCompileCache`).
 */

export interface CompileCache {
  /** Bytes stored under `key`, or undefined when absent (or found corrupt: the store drops it and warns). */
  get(key: string): Uint8Array | undefined;
  /** Stores `bytes` under `key` (atomically: a reader sees the whole entry or none). */
  put(key: string, bytes: Uint8Array): void;
  /**
   * A fresh path where the runtime may write a file (ORT writes its optimized model to a path, not
   * to memory); undefined when the store has no file system. Passed back to `putFile`, or removed
   * with `discardFile` when compilation fails.
   */
  scratchFile?(): string | undefined;
  /** Stores the contents of a scratch file under `key` and removes the file. */
  putFile?(key: string, path: string): void;
  /** Removes a scratch file that will not be stored. */
  discardFile?(path: string): void;
  /** Drops the entry under `key` after the runtime rejected it, warning once with the reason. */
  reject(key: string, reason: string): void;
}

/** Returns the cache to use, read when a graph is compiled (so environment changes take effect). */
export type CompileCacheProvider = () => CompileCache | undefined;

let defaultProvider: CompileCacheProvider | undefined;

/**
 * Sets the cache used by compileGraph when its options name none. The Node entry points install a
 * file-backed one; a host without a file system leaves it unset (no persistent cache).
 */
export function setDefaultCompileCache(provider: CompileCacheProvider | undefined): void {
  defaultProvider = provider;
}

export function defaultCompileCache(): CompileCache | undefined {
  return defaultProvider?.();
}
