/** Errors for bad input to the dense linear algebra: one line naming the function and what is wrong. */
import { PeftkitError } from "../engine/errors.js";

/** A shape, size or value a linear algebra function cannot accept (non-square, mismatched, rank too large, NaN). */
export class LinalgError extends PeftkitError {}

/** A square system has no unique solution: an exactly (or numerically) zero pivot. */
export class SingularMatrixError extends LinalgError {}

/** Cholesky met a pivot that is not positive: the matrix is not symmetric positive definite. */
export class NotPositiveDefiniteError extends LinalgError {}
