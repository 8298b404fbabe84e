/**
 * A minimal protobuf *writer*. ONNX only needs us to serialise a handful of messages (model, graph,
 * node, attribute, tensor, value info), never to parse them, so ~100 lines of our own beat pulling in
 * a protobuf runtime plus generated code as dependencies.
 *
 * Layout: bytes accumulate in a small scratch block; length-delimited payloads that are already bytes
 * (raw tensor data) are kept as references, and nested messages hand over their chunk lists, so the
 * final model is assembled with exactly one copy in `finish()` rather than by repeated concatenation.
 */

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

const utf8 = new TextEncoder();
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private flushed = 0;
  private buf = new Uint8Array(256);
  private pos = 0;
  private view = new DataView(this.buf.buffer);

  /** Bytes written so far. */
  get length(): number {
    return this.flushed + this.pos;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flushScratch();
    // Scratch blocks grow so a big message does not produce thousands of tiny chunks.
    const size = Math.max(n, Math.min(65536, this.buf.length * 2));
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
  }

  private flushScratch(): void {
    if (this.pos === 0) return;
    this.chunks.push(this.buf.subarray(0, this.pos));
    this.flushed += this.pos;
    this.buf = this.buf.subarray(this.pos);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.pos = 0;
  }

  /** Unsigned varint; negative numbers/bigints are written as 64-bit two's complement (10 bytes). */
  varint(v: number | bigint): this {
    if (typeof v === "number" && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      this.ensure(10);
      while (v >= 0x80) {
        this.buf[this.pos++] = (v % 128) | 0x80;
        v = Math.floor(v / 128);
      }
      this.buf[this.pos++] = v;
      return this;
    }
    let b = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (b >= 0x80n) {
      this.buf[this.pos++] = Number(b & 0x7fn) | 0x80;
      b >>= 7n;
    }
    this.buf[this.pos++] = Number(b);
    return this;
  }

  tag(field: number, wire: number): this {
    return this.varint(field * 8 + wire);
  }

  int(field: number, v: number | bigint): this {
    return this.tag(field, WIRE_VARINT).varint(v);
  }

  fixed32Float(field: number, v: number): this {
    this.tag(field, WIRE_FIXED32).ensure(4);
    this.view.setFloat32(this.pos, v, true);
    this.pos += 4;
    return this;
  }

  fixed64Double(field: number, v: number): this {
    this.tag(field, WIRE_FIXED64).ensure(8);
    this.view.setFloat64(this.pos, v, true);
    this.pos += 8;
    return this;
  }

  /** Length-delimited bytes. The array is referenced, not copied, until `finish()`. */
  bytes(field: number, data: Uint8Array): this {
    this.tag(field, WIRE_LEN).varint(data.byteLength);
    if (data.byteLength <= 64) {
      this.ensure(data.byteLength);
      this.buf.set(data, this.pos);
      this.pos += data.byteLength;
    } else {
      this.flushScratch();
      this.chunks.push(data);
      this.flushed += data.byteLength;
    }
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, utf8.encode(s));
  }

  /** Embeds a finished sub-message; its chunks are adopted by reference. */
  message(field: number, sub: ProtoWriter): this {
    sub.flushScratch();
    this.tag(field, WIRE_LEN).varint(sub.flushed);
    this.flushScratch();
    for (const c of sub.chunks) this.chunks.push(c);
    this.flushed += sub.flushed;
    return this;
  }

  /** Packed repeated varints (int64/int32 fields). */
  packedVarints(field: number, values: readonly (number | bigint)[]): this {
    if (values.length === 0) return this;
    const sub = new ProtoWriter();
    for (const v of values) sub.varint(v);
    return this.message(field, sub);
  }

  /** Packed repeated float (fixed32). */
  packedFloats(field: number, values: readonly number[]): this {
    if (values.length === 0) return this;
    const f = new Float32Array(values);
    return this.bytes(field, littleEndianBytes(f));
  }

  /** All bytes in one buffer: the only full copy of the message. */
  finish(): Uint8Array {
    this.flushScratch();
    if (this.chunks.length === 1) return this.chunks[0];
    const out = new Uint8Array(this.flushed);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out;
  }
}

/** A byte view of a typed array in little-endian order (a view, no copy, on little-endian hosts). */
export function littleEndianBytes(a: ArrayBufferView & { BYTES_PER_ELEMENT?: number }): Uint8Array {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const w = (a as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
  if (LITTLE_ENDIAN || w === 1) return bytes;
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += w) for (let j = 0; j < w; j++) out[i + j] = bytes[i + w - 1 - j];
  return out;
}
