/** Row-major float64 matrices and the products every factorisation needs. */
import { LinalgError } from "./errors.js";

export interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

export function matrix(rows: number, cols: number, data?: ArrayLike<number>): Matrix {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0)
    throw new LinalgError(`matrix: shape ${rows}x${cols} is not a pair of non-negative integers`);
  if (data && data.length !== rows * cols)
    throw new LinalgError(`matrix: ${data.length} values do not fill a ${rows}x${cols} matrix (${rows * cols})`);
  const d = new Float64Array(rows * cols);
  if (data) for (let i = 0; i < d.length; i++) d[i] = data[i];
  return { rows, cols, data: d };
}

export function transpose(a: Matrix): Matrix {
  const t = matrix(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) t.data[j * a.rows + i] = a.data[i * a.cols + j];
  return t;
}

export function matmul(a: Matrix, b: Matrix): Matrix {
  if (a.cols !== b.rows) throw new LinalgError(`matmul: inner dimensions differ: ${a.rows}x${a.cols} · ${b.rows}x${b.cols}`);
  const c = matrix(a.rows, b.cols);
  for (let i = 0; i < a.rows; i++) {
    for (let k = 0; k < a.cols; k++) {
      const v = a.data[i * a.cols + k];
      if (v === 0) continue;
      const bo = k * b.cols;
      const co = i * b.cols;
      for (let j = 0; j < b.cols; j++) c.data[co + j] += v * b.data[bo + j];
    }
  }
  return c;
}
