/**
 * Test helper for exact-resume checks: a run stopped after some steps (a checkpoint is saved
 * there) and continued with `resume: true` must end where an uninterrupted run does.
 */
import type { HostTensor } from "../engine/ir/host.js";
import { Progress } from "../train/progress.js";
import { type BatchSource, Trainer, type TrainerArgs, type TrainTarget } from "../train/trainer.js";

/** A progress sink that prints nothing. */
export const quietProgress = (): Progress => new Progress({ write: () => true, isTTY: false }, 1000);

/**
 * Trains a fresh target from `make()` with `args`, asking it to stop after `stopAfter` steps,
 * then a second fresh target resumed from that run's checkpoint. Returns both (release them).
 */
export async function stopThenResume<T extends TrainTarget>(
  make: () => Promise<T>,
  source: BatchSource,
  args: TrainerArgs,
  stopAfter: number,
): Promise<{ cut: T; resumed: T }> {
  const cut = await make();
  const first = new Trainer(cut, source, null, args, quietProgress());
  const train = cut.trainer.train.bind(cut.trainer);
  let steps = 0;
  cut.trainer.train = async (batch, o) => {
    const r = await train(batch, o);
    if (++steps === stopAfter) first.requestStop();
    return r;
  };
  await first.run();
  const resumed = await make();
  await new Trainer(resumed, source, null, { ...args, resume: true }, quietProgress()).run();
  return { cut, resumed };
}

/** The largest |a − b| over the tensors of two targets' adapters "default", by key. */
export function adapterDiffs(a: TrainTarget, b: TrainTarget): [string, number][] {
  const other = b.peft.adapter("default").tensors;
  return [...a.peft.adapter("default").tensors].map(([k, t]) => {
    const u = (other.get(k) as HostTensor).data as Float32Array;
    let worst = 0;
    (t.data as Float32Array).forEach((v, i) => {
      worst = Math.max(worst, Math.abs(v - u[i]));
    });
    return [k, worst];
  });
}
