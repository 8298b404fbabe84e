/** Base class of every error peftkit throws on purpose, so callers can tell ours from bugs. */
export class PeftkitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A shape, dtype or attribute that an op cannot accept, found while tracing. */
export class ShapeError extends PeftkitError {}

/** A dtype that an op, backend or file format does not support. */
export class DTypeError extends PeftkitError {}

/** Misuse of the engine API (wrong number of inputs, tracing outside a trace, ...). */
export class EngineUsageError extends PeftkitError {}

/** A backend (ONNX Runtime or the interpreter) failed or cannot run a graph. */
export class BackendError extends PeftkitError {}
