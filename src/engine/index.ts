/** The engine's public surface: tracing, autodiff, backends, in-graph optimizers. */

export { backward, grad, valueAndGrad, vjp } from "./autodiff/grad.js";
export { gradCheck } from "./autodiff/gradcheck.js";
export * from "./errors.js";
export { type CompileOptions, compileGraph, type Executor } from "./exec/backend.js";
export { type CompileCache, type CompileCacheProvider, setDefaultCompileCache } from "./exec/compile-cache.js";
export { interpret } from "./exec/reference/interpreter.js";
export type { DType, TypedArray } from "./ir/dtype.js";
export { Graph } from "./ir/graph.js";
export { f16ToF32, f32ToF16, type HostTensor, hostTensor, readNumber, scalarHost, toFloat64Array } from "./ir/host.js";
export { ALL_OPS, type OpName } from "./ir/ops.js";
export type { Dim, Shape } from "./ir/shape.js";
export { type AdamWConfig, clipByGlobalNorm, type OptimizerConfig, type SgdConfig } from "./optim/optimizers.js";
export { type LossContext, type TensorDecl, TrainStep, type TrainStepDefinition, traceTrainStep } from "./optim/train-step.js";
export * as F from "./trace/composites.js";
export { arange, concat, constant, full, iota, randomNormal, randomUniform, scalar, stack, Tensor, where, zeros } from "./trace/tensor.js";
export { customVjp, type InputSpec, spec, trace } from "./trace/trace.js";
