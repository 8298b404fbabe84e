/**
 * Small dense linear algebra on the host in float64, for adapter initialisation and merging
 * (PiSSA's SVD, OLoRA's QR, LoLDU's LU, CorDA's damped inverse, …). Row-major matrices.
 * The code lives in src/linalg/ (one file per factorisation); this module is the one entry point.
 * See docs/dev/linalg.md for the algorithms, their accuracy and their speed.
 */

export { cholesky, choleskySolve } from "../linalg/cholesky.js";
export { eighSym, type SymmetricEigen } from "../linalg/eigh.js";
export { LinalgError, NotPositiveDefiniteError, SingularMatrixError } from "../linalg/errors.js";
export { lu } from "../linalg/lu.js";
export { type Matrix, matmul, matrix, transpose } from "../linalg/matrix.js";
export { qr } from "../linalg/qr.js";
export { type RandomizedSvdOptions, randomizedSvd } from "../linalg/randomized-svd.js";
export { damped, dampedInverse, inverse, inverseResidual, solve } from "../linalg/solve.js";
export { svd } from "../linalg/svd.js";
