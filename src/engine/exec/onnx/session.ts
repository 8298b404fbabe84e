/**
 * Runs IR graphs on onnxruntime-node. A graph is emitted once to an ONNX model and run in one
 * InferenceSession; sessions are shared between executors whose emitted model bytes and options
 * are identical (sha256 key), and released when the last executor using them is released.
 * Across processes, ORT's optimized model is kept in a CompileCache under the same key (plus the
 * ORT version and CPU), and loaded with graph optimisation disabled on a hit.
 */
import { createHash } from "node:crypto";
import { availableParallelism, cpus } from "node:os";
import * as ort from "onnxruntime-node";
import { BackendError, EngineUsageError } from "../../errors.js";
import type { DType, TypedArray } from "../../ir/dtype.js";
import type { Graph } from "../../ir/graph.js";
import type { HostTensor } from "../../ir/host.js";
import { dimFactors, shapeStr } from "../../ir/shape.js";
import { type CompileCache, defaultCompileCache } from "../compile-cache.js";
import { type EmitResult, emitOnnx } from "./emit.js";

export interface OrtOptions {
  /** Intra-op threads; default os.availableParallelism() (2 on the project's machines). */
  threads?: number;
  /** ORT graph optimization level; default "all". */
  optimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /**
   * Persistent store of optimized models; default: the installed default (a folder under
   * PEFTKIT_CACHE in Node). `null` compiles without one.
   */
  cache?: CompileCache | null;
  /**
   * Write the sizes of symbolic dims ("batch", "seq") into the model as numbers, so ORT plans every
   * shape statically: on the SmolLM2-135M train step this makes session creation several times
   * faster. The session is then created by the first run, and each new set of sizes compiles (or
   * loads from the compile cache) a model of its own: for graphs run at one or a few shapes.
   * Default false.
   */
  staticShapes?: boolean;
}

/** How sessions were obtained in this process (for tests and diagnostics). */
export interface OrtCompileStats {
  /** Sessions built from emitted ONNX, running ORT's graph optimizer. */
  optimized: number;
  /** Sessions loaded from a cached optimized model, graph optimizer off. */
  fromCache: number;
}

const stats: OrtCompileStats = { optimized: 0, fromCache: 0 };

export function ortCompileStats(): OrtCompileStats {
  return { ...stats };
}

/** Time spent in ORT session creation (cache read included) in this process, summed over sessions. */
const createTime = { wallMs: 0, cpuMs: 0 };

/**
 * Wall and process CPU milliseconds spent creating ORT sessions (reading cache entries included).
 * With staticShapes the sessions are created by the first run, so this tells them from the step.
 */
export function ortCreateTime(): { wallMs: number; cpuMs: number } {
  return { ...createTime };
}

/** What besides the model bytes decides the optimized model: ORT's version and the CPU it optimizes for. */
const RUNTIME_ID = `ort=${ort.env.versions.node ?? ort.env.versions.common}|arch=${process.arch}|cpu=${cpus()[0]?.model ?? "?"}`;

const ORT_TYPE: Readonly<Record<DType, ort.Tensor.Type>> = {
  f32: "float32",
  f64: "float64",
  f16: "float16",
  i64: "int64",
  i32: "int32",
  bool: "bool",
};

const FROM_ORT: Readonly<Record<string, DType>> = {
  float32: "f32",
  float64: "f64",
  float16: "f16",
  int64: "i64",
  int32: "i32",
  bool: "bool",
};

interface CachedSession {
  session: Promise<ort.InferenceSession>;
  refs: number;
}

const sessionCache = new Map<string, CachedSession>();
/** Graphs are immutable once traced, so their emitted form can be memoized per object. */
const emitCache = new WeakMap<Graph, EmitResult>();

/** Wrappers of tensors fed before: weights are fed on every decode step, and wrapping has a cost. */
const wrapped = new WeakMap<HostTensor, ort.Tensor>();

function toOrtTensor(t: HostTensor): ort.Tensor {
  let w = wrapped.get(t);
  // A HostTensor's fields may be reassigned; reuse the wrapper only while they are the same.
  if (
    !w ||
    w.data !== t.data ||
    w.type !== ORT_TYPE[t.dtype] ||
    w.dims.length !== t.shape.length ||
    w.dims.some((d, i) => d !== t.shape[i])
  ) {
    // The typed array is wrapped, not copied: ORT reads it in place during run().
    w = new ort.Tensor(ORT_TYPE[t.dtype], t.data as never, t.shape as number[]);
    wrapped.set(t, w);
  }
  return w;
}

function fromOrtTensor(t: ort.Tensor, name: string): HostTensor {
  const dtype = FROM_ORT[t.type];
  if (!dtype) throw new BackendError(`ORT returned output ${name} of unsupported type ${t.type}`);
  let data = t.data as unknown as TypedArray;
  // Float16Array (when the runtime has one) is converted back to our raw-bits storage.
  if (dtype === "f16" && !(data instanceof Uint16Array)) {
    const view = data as unknown as ArrayBufferView;
    data = new Uint16Array(view.buffer, view.byteOffset, view.byteLength / 2);
  }
  if (dtype === "bool" && !(data instanceof Uint8Array)) {
    const view = data as unknown as ArrayBufferView;
    data = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  }
  return { dtype, shape: t.dims.map(Number), data };
}

/** One emitted model and the session running it (an executor has one, or one per input shape). */
interface Compiled {
  session: ort.InferenceSession;
  emitted: EmitResult;
  key: string;
  hoistedFeeds: Record<string, ort.Tensor>;
}

export class OrtExecutor {
  private released = false;
  private inputNameSet: Set<string> | undefined;
  /** Static-shape sessions by their dim sizes ("batch=4,seq=256"), created at the first run with those sizes. */
  private readonly byShape = new Map<string, Promise<Compiled>>();
  private last: Compiled | undefined;

  private constructor(
    readonly graph: Graph,
    private readonly opts: OrtOptions,
    private readonly dynamic: Compiled | undefined,
    /** Milliseconds spent emitting and creating (or fetching from cache) the session; 0 until the first run with staticShapes. */
    public compileMs: number,
  ) {
    this.last = dynamic;
  }

  /** The ORT session (shared with other executors of the same model); with staticShapes, the one of the latest run. */
  get session(): ort.InferenceSession {
    if (!this.last) throw new EngineUsageError("OrtExecutor.session: with staticShapes the session is created by the first run");
    return this.last.session;
  }

  static async create(graph: Graph, opts: OrtOptions = {}): Promise<OrtExecutor> {
    if (opts.staticShapes && graphSymbols(graph).size > 0) return new OrtExecutor(graph, opts, undefined, 0);
    const t0 = performance.now();
    const c = await compile(graph, opts, undefined);
    return new OrtExecutor(graph, opts, c, performance.now() - t0);
  }

  /** Runs the graph; outputs come back in graph.outputs order. */
  async run(inputs: readonly HostTensor[] | Readonly<Record<string, HostTensor>>): Promise<HostTensor[]> {
    if (this.released) throw new EngineUsageError("OrtExecutor.run: the executor was released");
    const list = this.orderInputs(inputs);
    const dims = checkInputs(this.graph, list);
    const c = this.dynamic ?? (await this.forShape(dims));
    this.last = c;
    const feeds: Record<string, ort.Tensor> = { ...c.hoistedFeeds };
    list.forEach((t, k) => {
      const name = c.emitted.inputNames[k];
      if (name !== null) feeds[name] = toOrtTensor(t);
    });
    let res: ort.InferenceSession.ReturnType;
    try {
      res = await c.session.run(feeds);
    } catch (e) {
      throw new BackendError(`ONNX Runtime failed running the graph: ${wrapMessage(e, c.emitted)}`);
    }
    return c.emitted.outputNames.map((name, k) => {
      const t = res[name];
      if (!t) throw new BackendError(`ONNX Runtime returned no value for output "${this.graph.outputs[k].name}"`);
      return fromOrtTensor(t, this.graph.outputs[k].name);
    });
  }

  private forShape(dims: ReadonlyMap<string, number>): Promise<Compiled> {
    const sig = [...dims]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([d, n]) => `${d}=${n}`)
      .join(",");
    let p = this.byShape.get(sig);
    if (!p) {
      const t0 = performance.now();
      p = compile(this.graph, this.opts, dims).then((c) => {
        this.compileMs += performance.now() - t0;
        return c;
      });
      this.byShape.set(sig, p);
      // A failed compile is not remembered, so the next run with these sizes tries again.
      p.catch(() => this.byShape.get(sig) === p && this.byShape.delete(sig));
    }
    return p;
  }

  private orderInputs(inputs: readonly HostTensor[] | Readonly<Record<string, HostTensor>>): HostTensor[] {
    const want = this.graph.inputs;
    if (Array.isArray(inputs)) {
      if (inputs.length !== want.length) {
        throw new EngineUsageError(
          `OrtExecutor.run: expected ${want.length} inputs (${want.map((i) => i.name).join(", ")}), got ${inputs.length}`,
        );
      }
      return inputs as HostTensor[];
    }
    const rec = inputs as Readonly<Record<string, HostTensor>>;
    this.inputNameSet ??= new Set(want.map((i) => i.name));
    const names = this.inputNameSet;
    const extra = Object.keys(rec).filter((k) => !names.has(k));
    if (extra.length)
      throw new EngineUsageError(
        `OrtExecutor.run: unknown input(s) ${extra.join(", ")}; the graph takes ${want.map((i) => i.name).join(", ")}`,
      );
    return want.map((i) => {
      const t = rec[i.name];
      if (!t) throw new EngineUsageError(`OrtExecutor.run: missing input "${i.name}"`);
      return t;
    });
  }

  /** Drops this executor's hold on its shared sessions; the last holder frees each in ORT. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const all: Compiled[] = this.dynamic ? [this.dynamic] : [];
    for (const p of this.byShape.values()) {
      const c = await p.catch(() => undefined);
      if (c) all.push(c);
    }
    this.byShape.clear();
    for (const c of all) {
      const cached = sessionCache.get(c.key);
      if (!cached) continue;
      cached.refs--;
      if (cached.refs <= 0) {
        sessionCache.delete(c.key);
        await c.session.release();
      }
    }
  }
}

/** The symbolic dims of a graph's inputs. */
function graphSymbols(graph: Graph): Set<string> {
  const out = new Set<string>();
  for (const inp of graph.inputs)
    for (const d of graph.type(inp.id).shape) if (typeof d === "string") for (const s of dimFactors(d).symbols) out.add(s);
  return out;
}

/**
 * Emits `graph` (with `dims` written into its inputs and outputs when given) and gets a session
 * for it: shared with other executors of the same model bytes and options, loaded from the
 * compile cache, or created by ORT's optimizer.
 */
async function compile(graph: Graph, opts: OrtOptions, dims: ReadonlyMap<string, number> | undefined): Promise<Compiled> {
  let emitted: EmitResult | undefined;
  if (dims) emitted = emitOnnx(graph, { dims });
  else {
    emitted = emitCache.get(graph);
    if (!emitted) {
      emitted = emitOnnx(graph);
      emitCache.set(graph, emitted);
    }
  }
  const threads = opts.threads ?? availableParallelism();
  const level = opts.optimizationLevel ?? "all";
  // Concrete dims are part of the emitted bytes, so each shape has its own key.
  const key = createHash("sha256").update(emitted.model).update(`|threads=${threads}|opt=${level}|${RUNTIME_ID}`).digest("hex");
  let cached = sessionCache.get(key);
  if (!cached) {
    const store = opts.cache === null ? undefined : (opts.cache ?? defaultCompileCache());
    const sessOpts: ort.InferenceSession.SessionOptions = {
      executionProviders: ["cpu"],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      // ORT's memory pattern plans one block per input-shape set on the second run. On the
      // SmolLM2-135M train step it raised peak RSS from 3.9 to 5.4 GB and cost ~1.8 s of page
      // faults in step 2, for the same compute (7.2 s CPU per step either way, 1 thread).
      enableMemPattern: false,
      graphOptimizationLevel: level,
      logSeverityLevel: 3,
      // Debug aid: PEFTKIT_ORT_PROFILE=prefix writes ORT's per-node timings (chrome://tracing JSON) when the session is released.
      ...(process.env.PEFTKIT_ORT_PROFILE ? { enableProfiling: true, profileFilePrefix: process.env.PEFTKIT_ORT_PROFILE } : {}),
    };
    cached = { session: createSession(emitted.model, key, sessOpts, store), refs: 0 };
    sessionCache.set(key, cached);
  }
  cached.refs++;
  let session: ort.InferenceSession;
  try {
    session = await cached.session;
  } catch (e) {
    if (sessionCache.get(key) === cached) sessionCache.delete(key);
    throw new BackendError(`ONNX Runtime could not load the emitted model (${emitted.liveNodes} IR nodes): ${wrapMessage(e, emitted)}`);
  }
  const hoistedFeeds: Record<string, ort.Tensor> = {};
  for (const h of emitted.hoisted) hoistedFeeds[h.name] = toOrtTensor(h.tensor);
  return { session, emitted, key, hoistedFeeds };
}

/**
 * Loads the optimized model cached under `key`, or optimizes the emitted one and stores ORT's
 * result. A cached entry ORT cannot load is dropped (with a warning from the store) and rebuilt.
 */
async function createSession(
  model: Uint8Array,
  key: string,
  sessOpts: ort.InferenceSession.SessionOptions,
  store: CompileCache | undefined,
): Promise<ort.InferenceSession> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  try {
    return await createSessionUntimed(model, key, sessOpts, store);
  } finally {
    const c = process.cpuUsage(c0);
    createTime.wallMs += performance.now() - t0;
    createTime.cpuMs += (c.user + c.system) / 1000;
  }
}

async function createSessionUntimed(
  model: Uint8Array,
  key: string,
  sessOpts: ort.InferenceSession.SessionOptions,
  store: CompileCache | undefined,
): Promise<ort.InferenceSession> {
  if (!store) {
    stats.optimized++;
    return ort.InferenceSession.create(model, sessOpts);
  }
  const hit = store.get(key);
  if (hit) {
    try {
      const s = await ort.InferenceSession.create(hit, { ...sessOpts, graphOptimizationLevel: "disabled" });
      stats.fromCache++;
      return s;
    } catch (e) {
      store.reject(key, `ONNX Runtime could not load it: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const scratch = store.putFile ? store.scratchFile?.() : undefined;
  stats.optimized++;
  if (!scratch) return ort.InferenceSession.create(model, sessOpts);
  let s: ort.InferenceSession;
  try {
    s = await ort.InferenceSession.create(model, { ...sessOpts, optimizedModelFilePath: scratch });
  } catch (e) {
    store.discardFile?.(scratch);
    throw e;
  }
  store.putFile?.(key, scratch);
  return s;
}

/**
 * Checks dtypes, ranks, fixed dims and the consistency of symbolic dims across inputs before ORT
 * sees them, so errors name the graph input rather than an ONNX node. Plain symbols are bound first;
 * product dims ("batch*seq") are then checked against their factors, or against each other.
 */
function checkInputs(graph: Graph, list: readonly HostTensor[]): Map<string, number> {
  const bound = new Map<string, { size: number; where: string }>();
  const products: { d: string; got: number; where: string }[] = [];
  const bind = (d: string, got: number, where: string) => {
    const prev = bound.get(d);
    if (prev && prev.size !== got) throw new EngineUsageError(`${where} gives ${d}=${got}, but ${prev.where} gives ${d}=${prev.size}`);
    if (!prev) bound.set(d, { size: got, where });
  };
  graph.inputs.forEach((inp, k) => {
    const t = list[k];
    const want = graph.type(inp.id);
    // Messages are built only on failure: this runs for every input of every decode step.
    const where = () => `OrtExecutor.run: input "${inp.name}"`;
    if (!t?.data || !Array.isArray(t.shape)) throw new EngineUsageError(`${where()} is missing or not a HostTensor`);
    const expected = () => `expects ${want.dtype}${shapeStr(want.shape)}, got ${t.dtype}${shapeStr(t.shape)}`;
    if (t.dtype !== want.dtype) throw new EngineUsageError(`${where()} ${expected()} (dtype differs)`);
    if (t.shape.length !== want.shape.length) throw new EngineUsageError(`${where()} ${expected()} (rank differs)`);
    let n = 1;
    want.shape.forEach((d, i) => {
      const got = t.shape[i];
      n *= got;
      if (!Number.isInteger(got) || got < 0) throw new EngineUsageError(`${where()} has a bad size ${got} on axis ${i}`);
      if (typeof d === "number") {
        if (got !== d) throw new EngineUsageError(`${where()} ${expected()} (axis ${i})`);
        return;
      }
      const f = dimFactors(d);
      const at = `input "${inp.name}" axis ${i}`;
      if (f.fixed === 1 && f.symbols.length === 1) bind(d, got, at);
      else products.push({ d, got, where: at });
    });
    if (t.data.length !== n) throw new EngineUsageError(`${where()}: ${t.data.length} values do not fill shape ${shapeStr(t.shape)}`);
  });
  for (const p of products) {
    const f = dimFactors(p.d);
    if (f.symbols.every((s) => bound.has(s))) {
      let v = f.fixed;
      for (const s of f.symbols) v *= bound.get(s)?.size ?? 0;
      if (v !== p.got) {
        const parts = f.symbols.map((s) => `${s}=${bound.get(s)?.size} (from ${bound.get(s)?.where})`).join(", ");
        throw new EngineUsageError(`OrtExecutor.run: ${p.where} has size ${p.got} for "${p.d}", but ${parts} make it ${v}`);
      }
    } else bind(p.d, p.got, p.where);
  }
  const sizes = new Map<string, number>();
  for (const [d, b] of bound) sizes.set(d, b.size);
  return sizes;
}

/** ORT's message plus the IR node it came from, found through the node names we emitted. */
function wrapMessage(e: unknown, emitted: EmitResult): string {
  const msg = e instanceof Error ? e.message : String(e);
  for (const [ctx, desc] of emitted.nodeContext) {
    if (msg.includes(`${ctx}/`)) return `${msg} [while running IR ${desc}]`;
  }
  return msg;
}

/** Number of ORT sessions currently cached (for tests and diagnostics). */
export function cachedSessionCount(): number {
  return sessionCache.size;
}
