/**
 * Encoders for the ONNX messages we emit, field numbers as in onnx/onnx.proto3.
 * Only the write path exists (see protobuf.ts).
 */
import { DTypeError } from "../../errors.js";
import type { DType, TypedArray } from "../../ir/dtype.js";
import type { Dim } from "../../ir/shape.js";
import { littleEndianBytes, ProtoWriter } from "./protobuf.js";

export const IR_VERSION = 8;
export const OPSET_VERSION = 18;
export const PRODUCER = "peftkit";

/** TensorProto.DataType codes. */
export const ONNX_DTYPE: Readonly<Record<DType, number>> = {
  f32: 1,
  i32: 6,
  i64: 7,
  bool: 9,
  f16: 10,
  f64: 11,
};

export function onnxDType(d: DType): number {
  const c = ONNX_DTYPE[d];
  if (c === undefined) throw new DTypeError(`ONNX export: unsupported dtype ${d}`);
  return c;
}

export interface TensorSpec {
  name: string;
  dtype: DType;
  dims: readonly number[];
  /** Storage as in HostTensor (f16 as raw bits, bool as one byte per element). */
  data: TypedArray;
}

export type AttrSpec =
  | { name: string; type: "int"; i: number | bigint }
  | { name: string; type: "float"; f: number }
  | { name: string; type: "string"; s: string }
  | { name: string; type: "ints"; ints: readonly (number | bigint)[] }
  | { name: string; type: "floats"; floats: readonly number[] }
  | { name: string; type: "tensor"; t: TensorSpec };

export interface NodeSpec {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  attrs?: readonly AttrSpec[];
}

export interface ValueInfoSpec {
  name: string;
  dtype: DType;
  shape: readonly Dim[];
}

export interface GraphSpec {
  name: string;
  nodes: readonly NodeSpec[];
  initializers: readonly TensorSpec[];
  inputs: readonly ValueInfoSpec[];
  outputs: readonly ValueInfoSpec[];
  valueInfo?: readonly ValueInfoSpec[];
}

// AttributeProto.AttributeType
const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7 } as const;

export function encodeTensor(t: TensorSpec): ProtoWriter {
  const w = new ProtoWriter();
  w.packedVarints(1, t.dims); // dims
  w.int(2, onnxDType(t.dtype)); // data_type
  w.string(8, t.name); // name
  if (t.data.byteLength > 0) w.bytes(9, littleEndianBytes(t.data)); // raw_data
  return w;
}

export function encodeAttribute(a: AttrSpec): ProtoWriter {
  const w = new ProtoWriter();
  w.string(1, a.name);
  switch (a.type) {
    case "float":
      w.fixed32Float(2, a.f);
      break;
    case "int":
      w.int(3, a.i);
      break;
    case "string":
      w.string(4, a.s);
      break;
    case "tensor":
      w.message(5, encodeTensor(a.t));
      break;
    case "floats":
      w.packedFloats(7, a.floats);
      break;
    case "ints":
      w.packedVarints(8, a.ints);
      break;
  }
  w.int(20, ATTR_TYPE[a.type]);
  return w;
}

export function encodeNode(n: NodeSpec): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name) w.string(3, n.name);
  w.string(4, n.opType);
  for (const a of n.attrs ?? []) w.message(5, encodeAttribute(a));
  return w;
}

export function encodeValueInfo(v: ValueInfoSpec): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) {
    const dim = new ProtoWriter();
    if (typeof d === "number")
      dim.int(1, d); // dim_value
    else dim.string(2, d); // dim_param
    shape.message(1, dim);
  }
  const tensorType = new ProtoWriter();
  tensorType.int(1, onnxDType(v.dtype)); // elem_type
  tensorType.message(2, shape); // shape (present even for scalars: rank 0)
  const type = new ProtoWriter();
  type.message(1, tensorType); // TypeProto.tensor_type
  const w = new ProtoWriter();
  w.string(1, v.name);
  w.message(2, type);
  return w;
}

export function encodeGraph(g: GraphSpec): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.message(1, encodeNode(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, encodeTensor(t));
  for (const v of g.inputs) w.message(11, encodeValueInfo(v));
  for (const v of g.outputs) w.message(12, encodeValueInfo(v));
  for (const v of g.valueInfo ?? []) w.message(13, encodeValueInfo(v));
  return w;
}

export function encodeModel(g: GraphSpec): Uint8Array {
  const opset = new ProtoWriter();
  opset.string(1, ""); // default domain
  opset.int(2, OPSET_VERSION);
  const w = new ProtoWriter();
  w.int(1, IR_VERSION);
  w.string(2, PRODUCER);
  w.message(7, encodeGraph(g));
  w.message(8, opset);
  return w.finish();
}
