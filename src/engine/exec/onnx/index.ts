/** The ONNX Runtime backend: IR graph → one ONNX model → one cached InferenceSession. */
export { dumpOnnx, type EmitOptions, type EmitResult, emitOnnx, type HoistedConstant } from "./emit.js";
export { DTYPE_WORKAROUNDS, HOIST_BYTES, LOWERINGS } from "./lower.js";
export { cachedSessionCount, type OrtCompileStats, OrtExecutor, type OrtOptions, ortCompileStats } from "./session.js";
