/**
 * Small dense linear algebra on the host in float64, for adapter initialisation and merging
 * (PiSSA's SVD, OLoRA's QR, SVD-based adapter combination). Row-major matrices.
 */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

export function matrix(rows: number, cols: number, data?: ArrayLike<number>): Matrix {
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
  if (a.cols !== b.rows) throw new Error(`matmul: ${a.rows}x${a.cols} · ${b.rows}x${b.cols}`);
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

/**
 * Thin QR by Householder reflections: a (m×n) = Q (m×k) · R (k×n), k = min(m, n), with R's
 * diagonal made non-negative is NOT enforced (matching LAPACK/torch.linalg.qr signs).
 */
export function qr(a: Matrix): { q: Matrix; r: Matrix } {
  const m = a.rows;
  const n = a.cols;
  const k = Math.min(m, n);
  const r = matrix(m, n, a.data);
  const vs: Float64Array[] = [];
  for (let j = 0; j < k; j++) {
    let norm = 0;
    for (let i = j; i < m; i++) norm += r.data[i * n + j] ** 2;
    norm = Math.sqrt(norm);
    const v = new Float64Array(m);
    if (norm === 0) {
      vs.push(v);
      continue;
    }
    const x0 = r.data[j * n + j];
    const alpha = x0 > 0 ? -norm : norm;
    for (let i = j; i < m; i++) v[i] = r.data[i * n + j];
    v[j] -= alpha;
    let vn = 0;
    for (let i = j; i < m; i++) vn += v[i] ** 2;
    if (vn === 0) {
      vs.push(new Float64Array(m));
      continue;
    }
    for (let c = j; c < n; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i] * r.data[i * n + c];
      const f = (2 * dot) / vn;
      for (let i = j; i < m; i++) r.data[i * n + c] -= f * v[i];
    }
    vs.push(Float64Array.from(v, (x) => x / Math.sqrt(vn)));
  }
  // Q = H_0 H_1 ... H_{k-1} applied to the first k columns of the identity.
  const q = matrix(m, k);
  for (let i = 0; i < k; i++) q.data[i * k + i] = 1;
  for (let j = k - 1; j >= 0; j--) {
    const v = vs[j];
    for (let c = 0; c < k; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i] * q.data[i * k + c];
      for (let i = j; i < m; i++) q.data[i * k + c] -= 2 * dot * v[i];
    }
  }
  const rt = matrix(k, n);
  for (let i = 0; i < k; i++) for (let c = i; c < n; c++) rt.data[i * n + c] = r.data[i * n + c];
  return { q, r: rt };
}

/**
 * Thin SVD by one-sided Jacobi: a (m×n) = U diag(S) Vᵀ with S sorted descending,
 * U (m×k), V (n×k), k = min(m, n). Accurate to ~1e-12 for the small matrices adapters use.
 */
export function svd(a: Matrix): { u: Matrix; s: Float64Array; v: Matrix } {
  const wide = a.cols > a.rows;
  const w = wide ? transpose(a) : matrix(a.rows, a.cols, a.data);
  const m = w.rows;
  const n = w.cols;
  const v = matrix(n, n);
  for (let i = 0; i < n; i++) v.data[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < m; i++) {
          const x = w.data[i * n + p];
          const y = w.data[i * n + q];
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) < 1e-15 * Math.sqrt(alpha * beta)) continue;
        off = Math.max(off, Math.abs(gamma) / Math.sqrt(alpha * beta));
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < m; i++) {
          const x = w.data[i * n + p];
          const y = w.data[i * n + q];
          w.data[i * n + p] = c * x - s * y;
          w.data[i * n + q] = s * x + c * y;
        }
        for (let i = 0; i < n; i++) {
          const x = v.data[i * n + p];
          const y = v.data[i * n + q];
          v.data[i * n + p] = c * x - s * y;
          v.data[i * n + q] = s * x + c * y;
        }
      }
    }
    if (off < 1e-14) break;
  }
  const sv = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += w.data[i * n + j] ** 2;
    sv[j] = Math.sqrt(s);
  }
  const order = Array.from(sv.keys()).sort((x, y) => sv[y] - sv[x]);
  const u = matrix(m, n);
  const vv = matrix(n, n);
  const s = new Float64Array(n);
  order.forEach((j, k) => {
    s[k] = sv[j];
    for (let i = 0; i < m; i++) u.data[i * n + k] = sv[j] > 0 ? w.data[i * n + j] / sv[j] : 0;
    for (let i = 0; i < n; i++) vv.data[i * n + k] = v.data[i * n + j];
  });
  return wide ? { u: vv, s, v: u } : { u, s, v: vv };
}
