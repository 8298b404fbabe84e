import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { PeftkitError } from "../engine/errors.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import {
  bf16BitsToF32,
  f32ToBf16Bits,
  type RawTensor,
  readSafetensors,
  SafetensorsError,
  SafetensorsFile,
  serializeSafetensors,
  toBf16Raw,
  writeSafetensors,
} from "./safetensors.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "peftkit-st-"));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let counter = 0;
const tmp = (name = "t.safetensors") => path.join(root, `${counter++}-${name}`);

/** Builds a file from the spec by hand: u64 LE header length, header text, data bytes. */
function handFile(header: string, data: Uint8Array | number[] = [], lengthOverride?: bigint): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function writeBytes(bytes: Uint8Array, name?: string): string {
  const p = tmp(name);
  fs.writeFileSync(p, bytes);
  return p;
}

function entry(dtype: string, shape: unknown[], begin: unknown, end: unknown): string {
  return JSON.stringify({ dtype, shape, data_offsets: [begin, end] });
}

function expectFault(p: string, re: RegExp, readAll = false): void {
  assert.throws(
    () => {
      const f = SafetensorsFile.open(p);
      try {
        if (readAll) for (const e of f.entries) f.read(e.name);
      } finally {
        f.close();
      }
    },
    (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, `expected SafetensorsError, got ${e}`);
      assert.ok(e instanceof PeftkitError);
      assert.ok(e.message.startsWith(`${p}: `), `message should name the file: ${e.message}`);
      assert.match(e.message, re);
      return true;
    },
  );
}

const rnd = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo));

describe("safetensors round-trips", () => {
  test("every HostTensor dtype, with random values", () => {
    const f32 = Float32Array.from({ length: 6 }, () => Math.random() * 200 - 100);
    const f64 = Float64Array.from({ length: 5 }, () => Math.random() * 1e6 - 5e5);
    const f16 = Uint16Array.from({ length: 7 }, () => rnd(0, 0x7c00) | (Math.random() < 0.5 ? 0x8000 : 0));
    const i64 = BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 0n, BigInt(rnd(-1e9, 1e9)) * 1000003n]);
    const i32 = Int32Array.from([-(2 ** 31), 2 ** 31 - 1, rnd(-1e6, 1e6)]);
    const bool = Uint8Array.from({ length: 9 }, () => (Math.random() < 0.5 ? 1 : 0));
    const tensors: Record<string, HostTensor> = {
      f32: hostTensor("f32", [2, 3], f32),
      f64: hostTensor("f64", [5], f64),
      f16: hostTensor("f16", [7, 1], f16),
      i64: hostTensor("i64", [2, 2], i64),
      i32: hostTensor("i32", [3], i32),
      bool: hostTensor("bool", [3, 3], bool),
    };
    const p = tmp();
    writeSafetensors(p, tensors);
    const f = SafetensorsFile.open(p);
    try {
      const dtypes = Object.fromEntries(f.entries.map((e) => [e.name, e.dtype]));
      assert.deepEqual(dtypes, { bool: "BOOL", f16: "F16", f32: "F32", f64: "F64", i32: "I32", i64: "I64" });
      for (const name of ["f32", "f64", "i64", "i32", "bool"]) assert.deepEqual(f.read(name), tensors[name], name);
      assert.deepEqual(f.read("f16", { keepF16: true }), tensors.f16);
      const widened = f.read("f16");
      assert.equal(widened.dtype, "f32");
      assert.deepEqual(widened.shape, [7, 1]);
      for (let i = 0; i < f16.length; i++) {
        // independent decode: sign · 2^(e−15) · (1 + m/1024), subnormals 2^−14 · m/1024
        const h = f16[i];
        const e = (h >> 10) & 31;
        const m = h & 1023;
        const v = (h & 0x8000 ? -1 : 1) * (e === 0 ? 2 ** -14 * (m / 1024) : 2 ** (e - 15) * (1 + m / 1024));
        assert.equal((widened.data as Float32Array)[i], v, `f16 bits 0x${h.toString(16)}`);
      }
    } finally {
      f.close();
    }
  });

  test("BF16 raw bits read as f32 and write back byte-exact", () => {
    const n = 33;
    const bits = Uint16Array.from({ length: n }, () => rnd(0, 0x10000));
    for (let i = 0; i < n; i++) if ((bits[i] & 0x7f80) === 0x7f80) bits[i] &= 0xff00; // keep NaN out of the value check
    const bytes = new Uint8Array(bits.buffer);
    const p = tmp();
    writeSafetensors(p, { w: { dtype: "BF16", shape: [3, 11], data: bytes } });
    const f = SafetensorsFile.open(p);
    const t = f.read("w");
    assert.equal(t.dtype, "f32");
    const dv = new DataView(new ArrayBuffer(4));
    for (let i = 0; i < n; i++) {
      dv.setUint32(0, bits[i] * 65536, true);
      assert.equal((t.data as Float32Array)[i], dv.getFloat32(0, true));
    }
    assert.deepEqual(f.readRaw("w"), bytes);
    f.close();
  });

  test("integer file dtypes widen to i32 (U8, I8, I16, U16, U32) and U64 to i64", () => {
    const p = tmp();
    const raw = (dtype: RawTensor["dtype"], vals: number[], size: number, set: (dv: DataView, o: number, v: number) => void): RawTensor => {
      const b = new Uint8Array(vals.length * size);
      const dv = new DataView(b.buffer);
      vals.forEach((v, i) => {
        set(dv, i * size, v);
      });
      return { dtype, shape: [vals.length], data: b };
    };
    const u8 = [0, 1, 127, 128, 255];
    const i8 = [-128, -1, 0, 1, 127];
    const i16 = [-32768, -1, 0, 300, 32767];
    const u16 = [0, 1, 40000, 65535];
    const u32 = [0, 7, 2 ** 31 - 1];
    writeSafetensors(p, {
      u8: raw("U8", u8, 1, (d, o, v) => d.setUint8(o, v)),
      i8: raw("I8", i8, 1, (d, o, v) => d.setInt8(o, v)),
      i16: raw("I16", i16, 2, (d, o, v) => d.setInt16(o, v, true)),
      u16: raw("U16", u16, 2, (d, o, v) => d.setUint16(o, v, true)),
      u32: raw("U32", u32, 4, (d, o, v) => d.setUint32(o, v, true)),
      u64: raw("U64", [0, 2 ** 40 + 3], 8, (d, o, v) => d.setBigUint64(o, BigInt(v), true)),
    });
    const { tensors } = readSafetensors(p);
    assert.deepEqual(tensors.u8, { dtype: "i32", shape: [5], data: Int32Array.from(u8) });
    assert.deepEqual(tensors.i8, { dtype: "i32", shape: [5], data: Int32Array.from(i8) });
    assert.deepEqual(tensors.i16, { dtype: "i32", shape: [5], data: Int32Array.from(i16) });
    assert.deepEqual(tensors.u16, { dtype: "i32", shape: [4], data: Int32Array.from(u16) });
    assert.deepEqual(tensors.u32, { dtype: "i32", shape: [3], data: Int32Array.from(u32) });
    assert.deepEqual(tensors.u64, { dtype: "i64", shape: [2], data: BigInt64Array.from([0n, 2n ** 40n + 3n]) });
  });

  test("U32 above 2^31-1, U64 above 2^63-1 and BOOL bytes other than 0/1 are errors when read", () => {
    const b32 = new Uint8Array(8);
    new DataView(b32.buffer).setUint32(4, 2 ** 31, true);
    const b64 = new Uint8Array(8);
    new DataView(b64.buffer).setBigUint64(0, 2n ** 63n, true);
    const p = tmp();
    writeSafetensors(p, {
      u32: { dtype: "U32", shape: [2], data: b32 },
      u64: { dtype: "U64", shape: [1], data: b64 },
      bool: { dtype: "BOOL", shape: [2], data: Uint8Array.from([1, 2]) },
    });
    const f = SafetensorsFile.open(p);
    const check = (name: string, re: RegExp) =>
      assert.throws(
        () => f.read(name),
        (e: unknown) => e instanceof SafetensorsError && e.message.startsWith(p) && re.test(e.message),
      );
    check("u32", /element 1 is 2147483648, above the i32 maximum/);
    check("u64", /element 0 is 9223372036854775808, above the i64 maximum/);
    check("bool", /element 1 is byte 2; BOOL bytes must be 0 or 1/);
    f.close();
  });

  test("0-rank and empty tensors", () => {
    const p = tmp();
    const tensors: Record<string, HostTensor> = {
      scalar: hostTensor("f32", [], [Math.random()]),
      empty: hostTensor("f32", [0], []),
      empty2: hostTensor("i64", [3, 0, 2], new BigInt64Array(0)),
      scalarI: hostTensor("i32", [], [rnd(-100, 100)]),
    };
    writeSafetensors(p, tensors);
    const { tensors: back } = readSafetensors(p);
    assert.deepEqual(back, tensors);
    // a file holding only empty tensors has an empty data buffer
    const q = tmp();
    writeSafetensors(q, { e: hostTensor("f32", [0, 4], []) });
    assert.deepEqual(readSafetensors(q).tensors.e.shape, [0, 4]);
    const r = tmp();
    writeSafetensors(r, {});
    assert.deepEqual(readSafetensors(r), { tensors: {}, metadata: {} });
  });

  test("metadata round-trips, and files without it give {}", () => {
    const meta = { format: "pt", note: `ünïcødé ${Math.random()} "quoted" \\ \n`, empty: "" };
    const p = tmp();
    writeSafetensors(p, { a: hostTensor("f32", [1], [1]) }, meta);
    const f = SafetensorsFile.open(p);
    assert.deepEqual({ ...f.metadata }, meta);
    f.close();
    const q = tmp();
    writeSafetensors(q, { a: hostTensor("f32", [1], [1]) });
    assert.deepEqual(readSafetensors(q).metadata, {});
  });

  test("raw tensors round-trip byte-exact (readRaw)", () => {
    const data = Uint8Array.from({ length: 4 * 6 }, () => rnd(0, 256));
    const p = tmp();
    writeSafetensors(p, { r: { dtype: "F16", shape: [4, 3], data }, s: { dtype: "U8", shape: [2, 2, 3], data: data.slice(0, 12) } });
    const f = SafetensorsFile.open(p);
    assert.deepEqual(f.readRaw("r"), data);
    assert.deepEqual(f.readRaw("s"), data.slice(0, 12));
    // copying a file through readRaw reproduces it exactly
    const q = tmp();
    writeSafetensors(q, Object.fromEntries(f.entries.map((e) => [e.name, { dtype: e.dtype, shape: e.shape, data: f.readRaw(e.name) }])));
    f.close();
    assert.deepEqual(fs.readFileSync(q), fs.readFileSync(p));
  });

  test("header is padded with spaces to a multiple of 8, tensors sorted by name", () => {
    for (let trial = 0; trial < 12; trial++) {
      const name = "x".repeat(rnd(1, 30));
      const p = tmp();
      writeSafetensors(
        p,
        { [name]: hostTensor("f32", [1], [0]), b: hostTensor("i32", [2], [1, 2]) },
        trial % 2 ? { k: "v".repeat(trial) } : undefined,
      );
      const bytes = fs.readFileSync(p);
      const n = Number(bytes.readBigUInt64LE(0));
      assert.equal(n % 8, 0, `header length ${n}`);
      const text = bytes.subarray(8, 8 + n).toString("utf8");
      const body = text.trimEnd();
      assert.ok(/^ *$/.test(text.slice(body.length)), "padding is spaces");
      assert.ok(text.length - body.length < 8);
      assert.equal(bytes.length, 8 + n + 4 + 8);
    }
    const order = {
      b: hostTensor("f32", [1], [2]),
      "9": hostTensor("f32", [1], [9]),
      a: hostTensor("f32", [1], [1]),
      "10": hostTensor("f32", [1], [10]),
    };
    const p = tmp();
    writeSafetensors(p, order);
    const f = SafetensorsFile.open(p);
    assert.deepEqual(f.names(), ["10", "9", "a", "b"]);
    f.close();
    const reversed = Object.fromEntries(Object.entries(order).reverse());
    const q = tmp();
    writeSafetensors(q, reversed);
    assert.deepEqual(fs.readFileSync(q), fs.readFileSync(p), "same tensors, same bytes");
  });

  test("serializeSafetensors returns the file bytes as chunks that alias the inputs", () => {
    const data = Float32Array.from([1, 2, 3]);
    const chunks = serializeSafetensors({ a: hostTensor("f32", [3], data) });
    assert.equal(chunks.length, 2);
    assert.equal(chunks[1].buffer, data.buffer);
    const p = tmp();
    writeSafetensors(p, { a: hostTensor("f32", [3], data) });
    assert.deepEqual(fs.readFileSync(p), Buffer.concat(chunks));
  });

  test("toBf16Raw writes BF16 that reads back rounded", () => {
    const p = tmp();
    const t = hostTensor("f32", [4], [1, 3.3, 1.01171875, -2.5]);
    writeSafetensors(p, { w: toBf16Raw(t) });
    const f = SafetensorsFile.open(p);
    assert.equal(f.entries[0].dtype, "BF16");
    assert.deepEqual([...(f.read("w").data as Float32Array)], [1, 3.296875, 1.015625, -2.5]);
    f.close();
  });

  test("writer rejects inconsistent tensors with named errors", () => {
    const p = tmp();
    const bad: Array<[Record<string, HostTensor | RawTensor>, RegExp]> = [
      [{ a: { dtype: "f32", shape: [3], data: new Float32Array(2) } }, /tensor "a": 2 values do not fill shape \[3\]/],
      [{ a: { dtype: "f32", shape: [2], data: new Float64Array(2) } }, /must hold a Float32Array, got Float64Array/],
      [{ a: { dtype: "F32", shape: [2], data: new Uint8Array(7) } }, /7 bytes do not match shape \[2\] of F32 \(8 bytes\)/],
      [{ a: { dtype: "f32", shape: [-1], data: new Float32Array(0) } }, /invalid dimension -1/],
      [{ a: { dtype: "q4" as "f32", shape: [1], data: new Float32Array(1) } }, /unknown dtype "q4"/],
      [{ __metadata__: hostTensor("f32", [1], [1]) }, /reserved/],
      [{ a: hostTensor("bool", [2], Uint8Array.from([0, 3])) }, /bool element 1 is 3/],
    ];
    for (const [tensors, re] of bad) {
      assert.throws(
        () => writeSafetensors(p, tensors),
        (e: unknown) => e instanceof SafetensorsError && e.message.startsWith(p) && re.test(e.message),
        String(re),
      );
    }
    assert.throws(() => writeSafetensors(p, {}, { k: 1 as unknown as string }), /metadata "k" must be a string/);
    assert.ok(!fs.existsSync(p));
  });
});

describe("atomic writes", () => {
  const leftovers = (dir: string) => fs.readdirSync(dir).filter((f) => f.includes(".tmp-"));

  test("overwriting leaves no temp file and replaces the content", () => {
    const dir = fs.mkdtempSync(path.join(root, "atomic-"));
    const p = path.join(dir, "m.safetensors");
    writeSafetensors(p, { a: hostTensor("f32", [1], [1]) });
    writeSafetensors(p, { a: hostTensor("f32", [2], [5, 6]) });
    assert.deepEqual([...(readSafetensors(p).tensors.a.data as Float32Array)], [5, 6]);
    assert.deepEqual(fs.readdirSync(dir), ["m.safetensors"]);
  });

  test("a failing write leaves the old file intact and no temp file", () => {
    const dir = fs.mkdtempSync(path.join(root, "atomic-"));
    const p = path.join(dir, "m.safetensors");
    writeSafetensors(p, { a: hostTensor("f32", [1], [1]) });
    const before = fs.readFileSync(p);
    // fails while validating (before any byte is written)
    assert.throws(() => writeSafetensors(p, { a: { dtype: "f32", shape: [4], data: new Float32Array(1) } }), SafetensorsError);
    assert.deepEqual(fs.readFileSync(p), before);
    assert.deepEqual(leftovers(dir), []);
  });

  test("a failing rename (target is a non-empty folder) removes the temp file and keeps the target", () => {
    const dir = fs.mkdtempSync(path.join(root, "atomic-"));
    const target = path.join(dir, "m.safetensors");
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, "keep"), "old");
    assert.throws(
      () => writeSafetensors(target, { a: hostTensor("f32", [1], [1]) }),
      (e: unknown) => e instanceof SafetensorsError && e.message.startsWith(`${target}: cannot write`),
    );
    assert.deepEqual(leftovers(dir), []);
    assert.equal(fs.readFileSync(path.join(target, "keep"), "utf8"), "old");
  });

  test("a missing folder is a SafetensorsError naming the path", () => {
    const p = path.join(root, "no-such-dir", "m.safetensors");
    assert.throws(
      () => writeSafetensors(p, {}),
      (e: unknown) => e instanceof SafetensorsError && e.message.startsWith(p),
    );
  });
});

describe("hand-written reference file", () => {
  test("reads a file built byte by byte from the spec", () => {
    // Header order differs from data order, a name looks like an integer, padding is 3 spaces,
    // and there is metadata: each a place where a reader could go wrong.
    const header =
      '{"__metadata__":{"format":"pt","b":"2"},' +
      '"w":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},' +
      '"0":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
      '"h":{"dtype":"F16","shape":[3],"data_offsets":[22,28]},' +
      '"n":{"dtype":"I64","shape":[],"data_offsets":[8,16]},' +
      '"m":{"dtype":"BOOL","shape":[2,1],"data_offsets":[28,30]}}   ';
    const data = new Uint8Array(30);
    const dv = new DataView(data.buffer);
    dv.setFloat32(0, 1.5, true);
    dv.setFloat32(4, -0.25, true);
    dv.setBigInt64(8, -1234567890123n, true);
    dv.setUint16(16, 0x3f80, true); // bf16 1.0
    dv.setUint16(18, 0xc000, true); // bf16 -2.0
    dv.setUint16(20, 0x4049, true); // bf16 3.140625
    dv.setUint16(22, 0x3c00, true); // f16 1.0
    dv.setUint16(24, 0x7bff, true); // f16 65504
    dv.setUint16(26, 0x0001, true); // f16 2^-24
    data[28] = 1;
    data[29] = 0;
    const p = writeBytes(handFile(header, data));
    const f = SafetensorsFile.open(p);
    assert.deepEqual({ ...f.metadata }, { format: "pt", b: "2" });
    assert.deepEqual(f.names(), ["0", "n", "w", "h", "m"]);
    assert.equal(f.dataStart, 8 + new TextEncoder().encode(header).length);
    assert.deepEqual(f.entry("w"), { name: "w", dtype: "BF16", shape: [3], dataOffsets: [16, 22], byteLength: 6 });
    assert.deepEqual(f.read("0"), { dtype: "f32", shape: [2], data: Float32Array.from([1.5, -0.25]) });
    assert.deepEqual(f.read("n"), { dtype: "i64", shape: [], data: BigInt64Array.from([-1234567890123n]) });
    assert.deepEqual(f.read("w"), { dtype: "f32", shape: [3], data: Float32Array.from([1, -2, 3.140625]) });
    assert.deepEqual(f.read("h"), { dtype: "f32", shape: [3], data: Float32Array.from([1, 65504, 2 ** -24]) });
    assert.deepEqual(f.read("h", { keepF16: true }), { dtype: "f16", shape: [3], data: Uint16Array.from([0x3c00, 0x7bff, 0x0001]) });
    assert.deepEqual(f.read("m"), { dtype: "bool", shape: [2, 1], data: Uint8Array.from([1, 0]) });
    assert.deepEqual([...f.readRaw("w")], [0x80, 0x3f, 0x00, 0xc0, 0x49, 0x40]);
    f.close();
    assert.throws(() => f.read("0"), /is closed/);
    f.close(); // idempotent
  });
});

describe("bf16 helpers", () => {
  test("f32ToBf16Bits rounds to nearest even; bf16BitsToF32 is exact", () => {
    const f32 = (bits: number) => {
      const dv = new DataView(new ArrayBuffer(4));
      dv.setUint32(0, bits);
      return dv.getFloat32(0);
    };
    const cases: Array<[number, number]> = [
      [1, 0x3f80],
      [-2, 0xc000],
      [0, 0x0000],
      [-0, 0x8000],
      [f32(0x40490fdb), 0x4049], // pi: below half, truncates
      [f32(0x3f808000), 0x3f80], // exact tie, even stays
      [f32(0x3f818000), 0x3f82], // exact tie, odd rounds up to even
      [f32(0x3f808001), 0x3f81], // just above tie
      [f32(0x3f807fff), 0x3f80], // just below tie
      [f32(0x7f7fffff), 0x7f80], // largest f32 rounds to +inf
      [Number.POSITIVE_INFINITY, 0x7f80],
      [Number.NEGATIVE_INFINITY, 0xff80],
      [f32(0x00000001), 0x0000], // smallest subnormal rounds to 0
      [f32(0x00018000), 0x0002], // subnormal tie, odd → even
    ];
    for (const [v, bits] of cases) assert.equal(f32ToBf16Bits(v), bits, `f32ToBf16Bits(${v}) = 0x${f32ToBf16Bits(v).toString(16)}`);
    const nan = f32ToBf16Bits(Number.NaN);
    assert.equal(nan & 0x7f80, 0x7f80);
    assert.ok((nan & 0x7f) !== 0, "NaN stays NaN");
    assert.equal(f32ToBf16Bits(f32(0xff800001)) & 0x8000, 0x8000, "NaN sign kept");
    assert.equal(bf16BitsToF32(0x3f80), 1);
    assert.equal(bf16BitsToF32(0xc049), -3.140625);
    assert.equal(bf16BitsToF32(0x0001), 2 ** -133);
    assert.ok(Number.isNaN(bf16BitsToF32(0x7fc0)));
    for (let i = 0; i < 200; i++) {
      const b = rnd(0, 0x10000);
      if ((b & 0x7f80) === 0x7f80 && b & 0x7f) continue;
      assert.equal(f32ToBf16Bits(bf16BitsToF32(b)), b, `bits 0x${b.toString(16)}`);
    }
  });
});

describe("malformed files", () => {
  const ok = entry("F32", [2], 0, 8);
  const eight = new Uint8Array(8);

  test("file shorter than 8 bytes", () =>
    expectFault(writeBytes(Uint8Array.from([1, 0, 0]), "short"), /file is 3 bytes, shorter than the 8-byte/));
  test("header length 0", () => expectFault(writeBytes(handFile("", [], 0n)), /header length is 0/));
  test("header length above 100,000,000", () =>
    expectFault(writeBytes(handFile("{}", [], 100_000_001n)), /header length 100000001 exceeds the limit of 100000000/));
  test("header length 2^64-1", () => expectFault(writeBytes(handFile("{}", [], 2n ** 64n - 1n)), /exceeds the limit/));
  test("header length past the end of the file", () =>
    expectFault(writeBytes(handFile("{}", [], 50n)), /header length 50 runs past the end of the file \(10 bytes\)/));
  test("header not UTF-8", () => {
    const b = handFile('{"a":1}');
    b[10] = 0xff;
    expectFault(writeBytes(b), /header is not valid UTF-8/);
  });
  test("header not JSON", () => expectFault(writeBytes(handFile('{"a": {"dtype": "F32",')), /header is not valid JSON/));
  test("header not a JSON object", () => expectFault(writeBytes(handFile("[1, 2]")), /header must start with '\{'/));
  test("header with leading space", () => expectFault(writeBytes(handFile(" {}")), /header must start with '\{'/));
  test("entry not an object", () =>
    expectFault(writeBytes(handFile('{"a": [1, 2]}')), /tensor "a" must be an object with dtype, shape and data_offsets, got an array/));
  test("missing dtype", () =>
    expectFault(writeBytes(handFile('{"a":{"shape":[2],"data_offsets":[0,8]}}', eight)), /tensor "a" has no "dtype"/));
  test("missing shape", () =>
    expectFault(writeBytes(handFile('{"a":{"dtype":"F32","data_offsets":[0,8]}}', eight)), /tensor "a" has no "shape"/));
  test("missing data_offsets", () =>
    expectFault(writeBytes(handFile('{"a":{"dtype":"F32","shape":[2]}}', eight)), /tensor "a" has no "data_offsets"/));
  test("dtype not a string", () =>
    expectFault(
      writeBytes(handFile(`{"a":${entry(7 as unknown as string, [2], 0, 8)}}`, eight)),
      /tensor "a" dtype must be a string, got number 7/,
    ));
  test("shape not an array", () =>
    expectFault(writeBytes(handFile('{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}', eight)), /tensor "a" shape must be an array/));
  test("data_offsets not a pair", () => {
    expectFault(
      writeBytes(handFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}', eight)),
      /data_offsets must be an array \[begin, end\]/,
    );
    expectFault(
      writeBytes(handFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":"0-8"}}', eight)),
      /data_offsets must be an array \[begin, end\]/,
    );
  });
  test("negative dimension", () =>
    expectFault(writeBytes(handFile(`{"a":${entry("F32", [-2], 0, 8)}}`, eight)), /shape \[-2\] has an invalid dimension -2/));
  test("non-integer dimension", () => {
    expectFault(writeBytes(handFile(`{"a":${entry("F32", [1.5], 0, 6)}}`, eight.subarray(0, 6))), /invalid dimension 1.5/);
    expectFault(writeBytes(handFile(`{"a":${entry("F32", ["2"], 0, 8)}}`, eight)), /invalid dimension "2"/);
  });
  test("offsets not integers", () =>
    expectFault(
      writeBytes(handFile(`{"a":${entry("F32", [2], 0, 8.5)}}`, eight)),
      /data_offsets \[0, 8.5\] must be non-negative integers/,
    ));
  test("negative offset", () =>
    expectFault(writeBytes(handFile(`{"a":${entry("F32", [0], -4, -4)}}`)), /data_offsets \[-4, -4\] must be non-negative integers/));
  test("begin > end", () =>
    expectFault(writeBytes(handFile(`{"a":${entry("F32", [2], 8, 0)}}`, eight)), /tensor "a" data_offsets \[8, 0\] have begin > end/));
  test("offsets out of the data buffer", () =>
    expectFault(
      writeBytes(handFile(`{"a":${ok},"b":${entry("F32", [2], 1000, 1008)}}`, new Uint8Array(16))),
      /tensor "b" data_offsets \[1000, 1008\] lie outside the data buffer \(16 bytes\)/,
    ));
  test("overlapping entries", () =>
    expectFault(
      writeBytes(handFile(`{"a":${ok},"b":${entry("F32", [2], 4, 12)}}`, new Uint8Array(12))),
      /tensor "b" data_offsets \[4, 12\] overlap tensor "a" data_offsets \[0, 8\]/,
    ));
  test("duplicate offsets (two names, same bytes)", () =>
    expectFault(writeBytes(handFile(`{"a":${ok},"b":${ok}}`, eight)), /data_offsets \[0, 8\] overlap tensor "[ab]" data_offsets \[0, 8\]/));
  test("hole between entries", () =>
    expectFault(
      writeBytes(handFile(`{"a":${entry("F32", [1], 0, 4)},"b":${entry("F32", [1], 8, 12)}}`, new Uint8Array(12))),
      /data buffer has a hole after tensor "a" \(ends at 4\): tensor "b" data_offsets \[8, 12\]/,
    ));
  test("hole at the start", () =>
    expectFault(
      writeBytes(handFile(`{"a":${entry("F32", [1], 4, 8)}}`, eight)),
      /hole at the start of the data buffer: tensor "a" data_offsets \[4, 8\]/,
    ));
  test("bytes after the last tensor", () =>
    expectFault(
      writeBytes(handFile(`{"a":${ok}}`, new Uint8Array(12))),
      /4 bytes at the end of the data buffer \(from offset 8\) belong to no tensor/,
    ));
  test("byte count differs from numel × element size", () =>
    expectFault(
      writeBytes(handFile(`{"a":${entry("F32", [2, 2], 0, 12)}}`, new Uint8Array(12))),
      /tensor "a" data_offsets \[0, 12\] do not match shape \[2, 2\] of F32 \(16 bytes\)/,
    ));
  test("shape whose size overflows", () =>
    expectFault(
      writeBytes(handFile(`{"a":${entry("F32", [1e10, 1e10], 0, 8)}}`, eight)),
      /do not match shape \[10000000000, 10000000000\] of F32 \(too many bytes\)/,
    ));
  test("duplicate names", () => {
    expectFault(writeBytes(handFile(`{"a":${ok},"a":${ok}}`, eight)), /header lists "a" twice/);
    // the same name spelled with an escape is still the same name
    expectFault(writeBytes(handFile(`{"a":${ok}, "\\u0061" :${ok}}`, eight)), /header lists "a" twice/);
    expectFault(writeBytes(handFile(`{"__metadata__":{},"a":${ok},"__metadata__":{}}`, eight)), /header lists "__metadata__" twice/);
  });
  test("duplicate key inside an entry", () =>
    expectFault(
      writeBytes(handFile('{"a":{"dtype":"F64","shape":[2],"dtype":"F32","data_offsets":[0,8]}}', eight)),
      /entry "a" has the key "dtype" twice/,
    ));
  test("__metadata__ not a string map", () => {
    expectFault(
      writeBytes(handFile('{"__metadata__":"pt"}')),
      /__metadata__ must be an object mapping strings to strings, got string "pt"/,
    );
    expectFault(writeBytes(handFile('{"__metadata__":["pt"]}')), /__metadata__ must be an object .* got an array/);
    expectFault(
      writeBytes(handFile('{"__metadata__":{"format":"pt","n":3}}')),
      /__metadata__ must map strings to strings, but "n" is number 3/,
    );
    expectFault(writeBytes(handFile('{"__metadata__":{"x":null}}')), /"x" is null/);
  });
  test("unknown dtypes, listing the supported ones", () => {
    for (const d of ["F8_E4M3", "C64", "garbage", "f32", ""]) {
      expectFault(
        writeBytes(handFile(`{"a":${entry(d, [2], 0, 8)}}`, eight)),
        new RegExp(`tensor "a" has unsupported dtype "${d}"; supported dtypes are BOOL, U8, .*F32, F64, I64`),
      );
    }
  });
  test("truncated file", () => {
    const p = tmp();
    writeSafetensors(p, { a: hostTensor("f32", [4], [1, 2, 3, 4]), b: hostTensor("f32", [2], [5, 6]) });
    const bytes = fs.readFileSync(p);
    const cut = bytes.subarray(0, bytes.length - rnd(1, 24));
    expectFault(writeBytes(cut), /file is truncated: the header describes 24 data bytes but only \d+ follow the header/);
  });
  test("opening a missing file or a folder", () => {
    expectFault(path.join(root, "missing.safetensors"), /cannot open: .*ENOENT/);
    expectFault(root, /not a regular file/);
  });
  test("reading an unknown tensor", () => {
    const p = writeBytes(handFile(`{"a":${ok}}`, eight));
    const f = SafetensorsFile.open(p);
    assert.throws(
      () => f.read("b"),
      (e: unknown) => e instanceof SafetensorsError && /no tensor named "b"/.test(e.message),
    );
    f.close();
  });
});
