/**
 * A tiny Parquet writer for tests (hyparquet only reads): one row group, one uncompressed PLAIN
 * data page (v1) per column, metadata in Thrift's compact protocol. Columns are strings (UTF8
 * BYTE_ARRAY), 32-bit or 64-bit integers, or doubles; a column with a null in it is OPTIONAL.
 * Written from the Parquet format spec (parquet.thrift), not from any implementation.
 */

type Value = string | number | bigint | null;
export interface ParquetColumn {
  name: string;
  type: "string" | "int32" | "int64" | "double";
  values: Value[];
}

// Thrift compact protocol type ids.
const T = { i32: 5, i64: 6, binary: 8, list: 9, struct: 12 } as const;

class Compact {
  bytes: number[] = [];
  private lastField: number[] = [0];

  varint(v: bigint): void {
    let x = v;
    do {
      let b = Number(x & 0x7fn);
      x >>= 7n;
      if (x !== 0n) b |= 0x80;
      this.bytes.push(b);
    } while (x !== 0n);
  }
  zigzag(v: number | bigint): void {
    const x = BigInt(v);
    this.varint(x >= 0n ? x << 1n : (-x << 1n) - 1n);
  }
  private header(id: number, type: number): void {
    const delta = id - this.lastField[this.lastField.length - 1];
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type);
    else {
      this.bytes.push(type);
      this.zigzag(id);
    }
    this.lastField[this.lastField.length - 1] = id;
  }
  i32(id: number, v: number): void {
    this.header(id, T.i32);
    this.zigzag(v);
  }
  i64(id: number, v: number | bigint): void {
    this.header(id, T.i64);
    this.zigzag(v);
  }
  binary(id: number, s: string | Uint8Array): void {
    this.header(id, T.binary);
    this.rawBinary(s);
  }
  rawBinary(s: string | Uint8Array): void {
    const b = typeof s === "string" ? new TextEncoder().encode(s) : s;
    this.varint(BigInt(b.length));
    this.bytes.push(...b);
  }
  struct(id: number, body: () => void): void {
    this.header(id, T.struct);
    this.structBody(body);
  }
  structBody(body: () => void): void {
    this.lastField.push(0);
    body();
    this.bytes.push(0);
    this.lastField.pop();
  }
  list(id: number, elemType: number, items: (() => void)[]): void {
    this.header(id, T.list);
    if (items.length < 15) this.bytes.push((items.length << 4) | elemType);
    else {
      this.bytes.push(0xf0 | elemType);
      this.varint(BigInt(items.length));
    }
    for (const it of items) it();
  }
}

function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

/** Run-length/bit-packed hybrid levels (bit width 1) as runs of equal values, with the v1 length prefix. */
function definitionLevels(present: boolean[]): number[] {
  const out: number[] = [];
  let i = 0;
  while (i < present.length) {
    let j = i;
    while (j < present.length && present[j] === present[i]) j++;
    const run = new Compact();
    run.varint(BigInt((j - i) << 1));
    out.push(...run.bytes, present[i] ? 1 : 0);
    i = j;
  }
  return [...le32(out.length), ...out];
}

function plainValues(col: ParquetColumn): number[] {
  const out: number[] = [];
  for (const v of col.values) {
    if (v === null) continue;
    if (col.type === "string") {
      const b = new TextEncoder().encode(v as string);
      out.push(...le32(b.length), ...b);
    } else if (col.type === "int32") out.push(...le32(Number(v)));
    else if (col.type === "int64") {
      const dv = new DataView(new ArrayBuffer(8));
      dv.setBigInt64(0, BigInt(v), true);
      out.push(...new Uint8Array(dv.buffer));
    } else {
      const dv = new DataView(new ArrayBuffer(8));
      dv.setFloat64(0, Number(v), true);
      out.push(...new Uint8Array(dv.buffer));
    }
  }
  return out;
}

const PHYSICAL = { string: 6, int32: 1, int64: 2, double: 5 } as const;

export function writeParquet(columns: ParquetColumn[]): Uint8Array {
  const numRows = columns[0]?.values.length ?? 0;
  for (const c of columns) if (c.values.length !== numRows) throw new Error("columns differ in length");
  const file: number[] = [...new TextEncoder().encode("PAR1")];
  const chunks: { offset: number; size: number; optional: boolean; col: ParquetColumn }[] = [];
  for (const col of columns) {
    const optional = col.values.some((v) => v === null);
    const payload = [...(optional ? definitionLevels(col.values.map((v) => v !== null)) : []), ...plainValues(col)];
    const header = new Compact();
    header.structBody(() => {
      header.i32(1, 0); // DATA_PAGE
      header.i32(2, payload.length);
      header.i32(3, payload.length);
      header.struct(5, () => {
        header.i32(1, numRows);
        header.i32(2, 0); // PLAIN
        header.i32(3, 3); // RLE
        header.i32(4, 3); // RLE
      });
    });
    const offset = file.length;
    file.push(...header.bytes, ...payload);
    chunks.push({ offset, size: file.length - offset, optional, col });
  }
  const meta = new Compact();
  meta.structBody(() => {
    meta.i32(1, 1);
    meta.list(2, T.struct, [
      () =>
        meta.structBody(() => {
          meta.binary(4, "schema");
          meta.i32(5, columns.length);
        }),
      ...chunks.map(
        ({ col, optional }) =>
          () =>
            meta.structBody(() => {
              meta.i32(1, PHYSICAL[col.type]);
              meta.i32(3, optional ? 1 : 0);
              meta.binary(4, col.name);
              if (col.type === "string") meta.i32(6, 0); // UTF8
            }),
      ),
    ]);
    meta.i64(3, numRows);
    meta.list(4, T.struct, [
      () =>
        meta.structBody(() => {
          meta.list(
            1,
            T.struct,
            chunks.map(
              (c) => () =>
                meta.structBody(() => {
                  meta.i64(2, c.offset);
                  meta.struct(3, () => {
                    meta.i32(1, PHYSICAL[c.col.type]);
                    meta.list(2, T.i32, [() => meta.zigzag(0), () => meta.zigzag(3)]);
                    meta.list(3, T.binary, [() => meta.rawBinary(c.col.name)]);
                    meta.i32(4, 0); // UNCOMPRESSED
                    meta.i64(5, numRows);
                    meta.i64(6, c.size);
                    meta.i64(7, c.size);
                    meta.i64(9, c.offset);
                  });
                }),
            ),
          );
          meta.i64(
            2,
            chunks.reduce((a, c) => a + c.size, 0),
          );
          meta.i64(3, numRows);
        }),
    ]);
    meta.binary(6, "peftkit test writer");
  });
  file.push(...meta.bytes, ...le32(meta.bytes.length), ...new TextEncoder().encode("PAR1"));
  return Uint8Array.from(file);
}
