/** Sparse deltas of base weights: the in-graph op, host-side arithmetic, the file format. */
export { composeDeltaSets, mergeDeltaSet, type NamedDeltaSet, weightedDeltaSum } from "./compose.js";
export {
  addDeltas,
  applyDelta,
  checkDelta,
  checkDensity,
  type SparseDelta,
  SparseDeltaError,
} from "./delta.js";
export { SPARSE_DELTA_FORMAT, SPARSE_DELTA_VERSION, type SparseDeltaSet, sparseDeltaSet, sparseDeltaTensors } from "./format.js";
export { addSparse, type SparseLinearOptions, sparseLinear } from "./linear.js";
