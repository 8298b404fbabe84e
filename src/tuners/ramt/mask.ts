/**
 * R-AMT's pieces as graph functions (the straight-through mask, the gradient dropout, the
 * distillation term) and the host bit-packing of saved masks. Graph code only: no Node imports.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { logSumExp } from "../../engine/trace/composites.js";
import { randomUniform, type Tensor } from "../../engine/trace/tensor.js";
import { customVjp } from "../../engine/trace/trace.js";

/** The authors' ε in graddrop_backward_and_update's keep probability. */
export const KEEP_EPS = 1e-8;

/**
 * M = 1[S > τ] (the authors' Binarizer: S ≤ τ → 0) whose backward passes the cotangent through
 * unchanged (∂L/∂S = ∂L/∂M), as Binarizer.backward does.
 */
export function straightThroughMask(scores: Tensor, threshold: number): Tensor {
  const [m] = customVjp(
    "ramt_mask",
    (s) => [s.gt(threshold).cast(s.dtype)],
    (_primals, _outs, [g]) => [g],
  )(scores);
  return m;
}

/** The mask of inference (no gradient): 1[S > τ]. */
export function hardMask(scores: Tensor, threshold: number): Tensor {
  return scores.gt(threshold).cast(scores.dtype);
}

/**
 * P = (sign(a)·(a + b)/(|a| + |b| + ε) + 1)/2: 1 where a and b agree in sign, |a|/(|a| + |b|)
 * (up to ε) where they disagree.
 */
export function keepProbability(a: Tensor, b: Tensor): Tensor {
  return a.sign().mul(a.add(b)).div(a.abs().add(b.abs()).add(KEEP_EPS)).add(1).mul(0.5);
}

/**
 * The gradient dropout: ((1 − λ) + λ·1[P > U])·a with U ~ U[0, 1) drawn from `seed` (element i of
 * a row-major counter), so a step's draw is reproducible and a resumed run draws the same.
 */
export function gradientDropout(a: Tensor, b: Tensor, seed: Tensor, lambda: number): Tensor {
  if (lambda === 0) return a;
  const u = randomUniform(seed, [...a.shape], a.dtype);
  const kept = keepProbability(a, b).gt(u).cast(a.dtype);
  return a.mul(kept.mul(lambda).add(1 - lambda));
}

/**
 * The authors' KLLoss with α = 1: −Σ_c softmax(z_t/T)_c · log softmax(z_s/T)_c · T², averaged over
 * the scored positions (labels ≠ −100; every row of a classifier). `student`/`teacher` are
 * [..., C] logits, `labels` their leading shape. Per row that is T²·(lse(z_s/T) − Σ_c p_c·z_s,c/T)
 * (Σ p = 1), whose gradient T·(softmax(z_s/T) − p) is written by hand, as crossEntropy's is: the
 * autodiff of log-softmax would keep several vocabulary-sized temporaries per position.
 */
export function softCrossEntropy(student: Tensor, teacher: Tensor, labels: Tensor, temperature: number): Tensor {
  const t = temperature;
  const p = teacher.div(t).softmax(-1).cast(student.dtype);
  const valid = labels.ne(-100).cast(student.dtype);
  const [perRow] = customVjp(
    "soft_cross_entropy",
    (z) => {
      const zt = z.div(t);
      const lse = logSumExp(zt, -1, true);
      return [
        lse
          .squeeze(-1)
          .sub(p.mul(zt).sum(-1))
          .mul(t * t)
          .mul(valid),
        lse,
      ];
    },
    ([z], [, lse], [g]) => {
      if (!g) return [null];
      const w = g.mul(valid).mul(t).unsqueeze(-1);
      return [z.div(t).sub(lse).exp().sub(p).mul(w)];
    },
  )(student);
  return perRow.sum().div(valid.sum().maximum(1));
}

/** Bytes of a packed mask of n entries: ⌈n/8⌉. */
export const packedLength = (n: number): number => Math.ceil(n / 8);

/**
 * The on/off bits of 1[S > τ], row-major, 8 per byte, the first entry in the most significant
 * bit, the last byte padded with 0 bits: the authors' save_model layout ('{:08b}' strings), and
 * numpy.packbits' default (bitorder "big").
 */
export function packMask(scores: HostTensor, threshold: number): Uint8Array {
  const s = scores.data as Float32Array;
  const out = new Uint8Array(packedLength(s.length));
  for (let i = 0; i < s.length; i++) if (s[i] > threshold) out[i >> 3] |= 0x80 >> (i & 7);
  return out;
}

/** A packed mask back as scores 0.0/1.0 of `shape` (the authors' load_model: 1 > τ is on, 0 is off). */
export function unpackMask(bytes: ArrayLike<number>, shape: readonly number[], where: string): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== packedLength(n))
    throw new RangeError(`${where}: ${bytes.length} bytes for ${n} mask bits (expected ${packedLength(n)})`);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const b = Number(bytes[i >> 3]);
    if (!(b >= 0 && b <= 255)) throw new RangeError(`${where}: byte ${i >> 3} is ${b}, not in 0..255`);
    out[i] = (b >> (7 - (i & 7))) & 1;
  }
  return hostTensor("f32", [...shape], out);
}
