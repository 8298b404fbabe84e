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
 * Thin SVD: a (m×n) = U diag(S) Vᵀ with S sorted descending, U (m×k), V (n×k), k = min(m, n),
 * both with orthonormal columns (also for rank-deficient a). One-sided (Hestenes) Jacobi sets
 * the accuracy (relative, to float64 round-off).
 *
 * Why it is shaped this way (PiSSA decomposes every target weight, so speed matters):
 * - it works on the tall orientation T, so only k columns are rotated (k²/2 pairs per sweep);
 * - Jacobi starts from the eigenvectors X0 of TᵀT (Householder tridiagonalisation + implicit
 *   QL), so T·X0 has nearly orthogonal columns and Jacobi only polishes: 2–4 sweeps
 *   instead of ~11. The Gram matrix's squared condition number only slows that polish; it does
 *   not reach the result. If QL fails to converge, Jacobi starts from the identity;
 * - columns are stored contiguously (column-major), so dot products and rotations stream;
 * - a pair is left alone when its cosine is below √m·ε (LAPACK's dgesvj criterion), and the
 *   iteration stops after the first sweep that rotates nothing.
 */
export function svd(a: Matrix): { u: Matrix; s: Float64Array; v: Matrix } {
  const wide = a.cols > a.rows;
  const m = wide ? a.cols : a.rows;
  const n = wide ? a.rows : a.cols;
  // Column-major copy of the tall orientation: column j of T = Aᵀ (wide) is row j of A.
  const t = new Float64Array(m * n);
  if (wide) t.set(a.data);
  else for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a.data[i * n + j];
  const x = symmetricEigenvectors(gram(t, m, n), n) ?? identity(n);
  // W = T·X0, built column by column from axpys over T's contiguous columns.
  const w = new Float64Array(m * n);
  for (let j = 0; j < n; j++) {
    const o = j * m;
    // Two columns of T per pass halve the loads and stores of w's column.
    let l = 0;
    for (; l + 1 < n; l += 2) {
      const f = x[j * n + l];
      const g = x[j * n + l + 1];
      const to = l * m;
      const to2 = to + m;
      for (let i = 0; i < m; i++) w[o + i] += f * t[to + i] + g * t[to2 + i];
    }
    if (l < n) {
      const f = x[j * n + l];
      const to = l * m;
      for (let i = 0; i < m; i++) w[o + i] += f * t[to + i];
    }
  }
  // T·X = W = Y diag(σ) with Y orthonormal ⇒ T = Y diag(σ) Xᵀ.
  jacobi(w, x, m, n, Math.sqrt(m) * Number.EPSILON);
  const sv = new Float64Array(n);
  for (let j = 0; j < n; j++) sv[j] = Math.sqrt(dot(w, j * m, w, j * m, m));
  const order = Array.from(sv.keys()).sort((p, c) => sv[c] - sv[p]);
  // Y = normalised columns of W; exactly zero columns are completed to an orthonormal basis.
  const y = new Float64Array(m * n);
  const xs = new Float64Array(n * n);
  const s = new Float64Array(n);
  order.forEach((j, k) => {
    s[k] = sv[j];
    if (sv[j] > 0) for (let i = 0; i < m; i++) y[k * m + i] = w[j * m + i] / sv[j];
    xs.set(x.subarray(j * n, j * n + n), k * n);
  });
  completeBasis(y, m, n, s);
  // Back to row-major: T = L S Xᵀ; A = T (tall) or Tᵀ = X S Lᵀ (wide).
  const rowMajor = (cm: Float64Array, r: number): Matrix => {
    const out = matrix(r, n);
    for (let k = 0; k < n; k++) for (let i = 0; i < r; i++) out.data[i * n + k] = cm[k * r + i];
    return out;
  };
  const l = rowMajor(y, m);
  const rt = rowMajor(xs, n);
  return wide ? { u: rt, s, v: l } : { u: l, s, v: rt };
}

function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, len: number): number {
  // Two partial sums: the loop is bound by the latency of the additions, not by the loads.
  let d = 0;
  let d2 = 0;
  let i = 0;
  for (; i + 1 < len; i += 2) {
    d += a[ao + i] * b[bo + i];
    d2 += a[ao + i + 1] * b[bo + i + 1];
  }
  if (i < len) d += a[ao + i] * b[bo + i];
  return d + d2;
}

/**
 * One-sided Jacobi on the column-major rows×n matrix w, accumulating the rotations into the
 * column-major n×n x, until no pair of columns has |cos| above tol.
 */
function jacobi(w: Float64Array, x: Float64Array, rows: number, n: number, tol: number): void {
  // Squared column norms: recomputed at the start of each sweep and updated in closed form after
  // a rotation (α' = α − tγ, β' = β + tγ), so each pair needs only its dot product. They only
  // steer the angles and the stopping test; the singular values come from the final columns.
  const norm2 = new Float64Array(n);
  for (let sweep = 0; sweep < 60; sweep++) {
    for (let j = 0; j < n; j++) norm2[j] = dot(w, j * rows, w, j * rows, rows);
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      const po = p * rows;
      for (let q = p + 1; q < n; q++) {
        const qo = q * rows;
        const alpha = norm2[p];
        const beta = norm2[q];
        const gamma = dot(w, po, w, qo, rows);
        if (gamma === 0 || Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < rows; i++) {
          const a = w[po + i];
          const b = w[qo + i];
          w[po + i] = c * a - s * b;
          w[qo + i] = s * a + c * b;
        }
        norm2[p] = Math.max(alpha - t * gamma, 0);
        norm2[q] = Math.max(beta + t * gamma, 0);
        const xp = p * n;
        const xq = q * n;
        for (let i = 0; i < n; i++) {
          const a = x[xp + i];
          const b = x[xq + i];
          x[xp + i] = c * a - s * b;
          x[xq + i] = s * a + c * b;
        }
      }
    }
    if (!rotated) return;
  }
}

/** Fill the zero columns of the column-major rows×n y (where s is 0) so that y is orthonormal. */
function completeBasis(y: Float64Array, rows: number, n: number, s: Float64Array): void {
  let e = 0;
  for (let k = 0; k < n; k++) {
    if (s[k] > 0) continue;
    const o = k * rows;
    for (; e < rows; e++) {
      y.fill(0, o, o + rows);
      y[o + e] = 1;
      // Gram–Schmidt twice against every other column that is set (zero columns after k are not).
      for (let pass = 0; pass < 2; pass++)
        for (let l = 0; l < n; l++) {
          if (l === k || (s[l] === 0 && l > k)) continue;
          const d = dot(y, l * rows, y, o, rows);
          for (let i = 0; i < rows; i++) y[o + i] -= d * y[l * rows + i];
        }
      const norm = Math.sqrt(dot(y, o, y, o, rows));
      if (norm > 0.5) {
        for (let i = 0; i < rows; i++) y[o + i] /= norm;
        e++;
        break;
      }
    }
  }
}

function identity(n: number): Float64Array {
  const x = new Float64Array(n * n);
  for (let i = 0; i < n; i++) x[i * n + i] = 1;
  return x;
}

/** Gram matrix CᵀC of the column-major rows×n c, as a full symmetric n×n (row-major = column-major). */
function gram(c: Float64Array, rows: number, n: number): Float64Array {
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = i; j < n; j++) {
      const d = dot(c, i * rows, c, j * rows, rows);
      g[i * n + j] = d;
      g[j * n + i] = d;
    }
  return g;
}

/**
 * Eigenvectors (column-major n×n, orthonormal, unordered) of the symmetric n×n a, which is
 * overwritten: Householder reduction to tridiagonal T = Qᵀ·A·Q, then implicit QL with Wilkinson
 * shifts on T, rotating Q's columns. Returns undefined if QL needs more than 60 steps for one value.
 */
function symmetricEigenvectors(a: Float64Array, n: number): Float64Array | undefined {
  const d = new Float64Array(n);
  const e = new Float64Array(n); // e[i] = T[i][i+1]
  const vs: (Float64Array | undefined)[] = [];
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    const base = k + 1;
    const len = n - base;
    d[k] = a[k * n + k];
    let norm = 0;
    for (let i = 0; i < len; i++) norm += a[k * n + base + i] ** 2;
    norm = Math.sqrt(norm);
    const x0 = a[k * n + base];
    const alpha = x0 > 0 ? -norm : norm;
    e[k] = alpha;
    if (norm === 0) {
      e[k] = 0;
      vs.push(undefined);
      continue;
    }
    const v = new Float64Array(len);
    for (let i = 0; i < len; i++) v[i] = a[k * n + base + i];
    v[0] -= alpha;
    let vtv = 0;
    for (let i = 0; i < len; i++) vtv += v[i] * v[i];
    const beta = 2 / vtv;
    // A22 ← H·A22·H with H = I − β·v·vᵀ: p = β·A22·v, w = p − (β/2)(pᵀv)·v, A22 −= v·wᵀ + w·vᵀ.
    let ptv = 0;
    for (let i = 0; i < len; i++) {
      const ro = (base + i) * n + base;
      let sum = 0;
      for (let j = 0; j < len; j++) sum += a[ro + j] * v[j];
      p[i] = beta * sum;
      ptv += p[i] * v[i];
    }
    const kk = (beta / 2) * ptv;
    for (let i = 0; i < len; i++) p[i] -= kk * v[i];
    for (let i = 0; i < len; i++) {
      const ro = (base + i) * n + base;
      const vi = v[i];
      const pi = p[i];
      for (let j = 0; j < len; j++) a[ro + j] -= vi * p[j] + pi * v[j];
    }
    vs.push(v);
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2];
    e[n - 2] = a[(n - 2) * n + n - 1];
  }
  d[n - 1] = a[(n - 1) * n + n - 1];
  e[n - 1] = 0;
  // Q = H_0 H_1 … H_{n-3} (column-major); H_k leaves columns 0..k alone.
  const z = identity(n);
  for (let k = vs.length - 1; k >= 0; k--) {
    const v = vs[k];
    if (!v) continue;
    const base = k + 1;
    let vtv = 0;
    for (let i = 0; i < v.length; i++) vtv += v[i] * v[i];
    const beta = 2 / vtv;
    for (let c = base; c < n; c++) {
      const o = c * n + base;
      let s = 0;
      for (let i = 0; i < v.length; i++) s += v[i] * z[o + i];
      s *= beta;
      if (s !== 0) for (let i = 0; i < v.length; i++) z[o + i] -= s * v[i];
    }
  }
  // Implicit QL on the tridiagonal (d, e), accumulating the plane rotations into z's columns.
  for (let l = 0; l < n; l++) {
    let iter = 0;
    for (;;) {
      let m = l;
      for (; m < n - 1; m++) {
        const dd = Math.abs(d[m]) + Math.abs(d[m + 1]);
        if (Math.abs(e[m]) <= Number.EPSILON * dd) break;
      }
      if (m === l) break;
      if (iter++ === 60) return undefined;
      let g = (d[l + 1] - d[l]) / (2 * e[l]);
      let r = Math.hypot(g, 1);
      g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let pp = 0;
      let i = m - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * e[i];
        const b = c * e[i];
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1] -= pp;
          e[m] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - pp;
        r = (d[i] - g) * s + 2 * c * b;
        pp = s * r;
        d[i + 1] = g + pp;
        g = c * r - b;
        const o0 = i * n;
        const o1 = (i + 1) * n;
        for (let k = 0; k < n; k++) {
          const zf = z[o1 + k];
          const zi = z[o0 + k];
          z[o1 + k] = s * zi + c * zf;
          z[o0 + k] = c * zi - s * zf;
        }
      }
      if (underflow) continue;
      d[l] -= pp;
      e[l] = g;
      e[m] = 0;
    }
  }
  return z;
}
