/** The calibration pass: per-layer statistics of the frozen model over a few batches (see docs/calibration.md). */
export { CalibrationError, maskedGram, traceCalibrationGraph } from "./graph.js";
export { type CalibrationBatch, type CalibrationOptions, type CalibrationProgress, runCalibration } from "./run.js";
