/** Sparse-delta files (format.ts) on disk, written atomically. Node only. */
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { type SparseDeltaSet, sparseDeltaSet, sparseDeltaTensors } from "./format.js";

export function saveSparseDeltas(path: string, set: SparseDeltaSet): void {
  const { tensors, metadata } = sparseDeltaTensors(set);
  writeSafetensors(path, tensors, metadata);
}

export function loadSparseDeltas(path: string): SparseDeltaSet {
  const { tensors, metadata } = readSafetensors(path);
  return sparseDeltaSet(tensors, metadata, path);
}
