/**
 * PyTorch's default CPU generator, reproduced bit for bit, for formats that store a seed instead
 * of the tensors it made (VeRA's projection_prng_key; randperm-based methods). torch's CPU
 * generator is a standard 32-bit Mersenne Twister (at::mt19937, seeded with the low 32 bits of
 * the seed through the usual init_genrand). Checked against torch 1.13 in torch-rng.test.ts
 * (test/golden/torch-rng.json, scripts/goldens/make_torch_rng_goldens.py).
 */

const N = 624;
const M = 397;

export class TorchGenerator {
  private readonly mt = new Uint32Array(N);
  private index = N;

  /** torch.Generator(device="cpu").manual_seed(seed): a non-negative integer. */
  constructor(seed: number | bigint) {
    const s = typeof seed === "bigint" ? seed : BigInt(seed);
    if (s < 0n) throw new RangeError(`torch generator seed must be >= 0, got ${seed}`);
    this.mt[0] = Number(s & 0xffffffffn);
    for (let i = 1; i < N; i++) {
      const prev = this.mt[i - 1] ^ (this.mt[i - 1] >>> 30);
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  private twist(): void {
    const mt = this.mt;
    for (let k = 0; k < N; k++) {
      const y = (mt[k] & 0x80000000) | (mt[(k + 1) % N] & 0x7fffffff);
      mt[k] = mt[(k + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }

  /** CPUGeneratorImpl::random(): the next 32-bit draw. */
  random(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /**
   * Tensor.uniform_(lo, hi, generator) on a float32 tensor of n elements, in storage order:
   * at::uniform_real_distribution<float> takes 24 bits of one draw, x = (v & 0xFFFFFF)·2⁻²⁴,
   * and returns x·(hi − lo) + lo computed in double (the CPU accumulate type) from lo and hi
   * rounded to float, then rounded to float once. (Float arithmetic differs in the last bit for
   * about one value in three: the goldens tell the two apart.)
   */
  uniform(n: number, lo: number, hi: number): Float32Array {
    const from = Math.fround(lo);
    const range = Math.fround(hi) - from;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = (this.random() & 0xffffff) / 16777216;
      out[i] = x * range + from;
    }
    return out;
  }

  /**
   * torch.randperm(n, generator) on the CPU (n < 2³²/20, where torch keeps this algorithm): the
   * identity permuted by swapping position i with i + (draw mod (n − i)), for i = 0 … n − 2.
   */
  randperm(n: number): Int32Array {
    if (!Number.isInteger(n) || n < 0 || n >= 0xffffffff / 20) throw new RangeError(`randperm: n = ${n} is out of range`);
    const p = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < n - 1; i++) {
      const z = i + (this.random() % (n - i));
      const t = p[i];
      p[i] = p[z];
      p[z] = t;
    }
    return p;
  }
}

/**
 * nn.init-style Kaiming-uniform as PEFT's VeRA writes it (tuners/vera/model.py _kaiming_init):
 * fan_in = shape[1], bound = √3·(√2/√fan_in), uniform_(−bound, bound) from `g`.
 */
export function kaimingUniformVera(g: TorchGenerator, rows: number, cols: number): Float32Array {
  const bound = Math.sqrt(3) * (Math.SQRT2 / Math.sqrt(cols));
  return g.uniform(rows * cols, -bound, bound);
}
