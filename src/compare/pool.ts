/**
 * Runs items with at most `jobs` in flight, in order of start. `stopped()` is checked before each
 * launch, so an interrupt stops launching while the runs in flight end on their own. `work`
 * rejecting stops launching too, and the first such error is rethrown once the others are done.
 */
export async function runPool<T>(
  items: readonly T[],
  jobs: number,
  stopped: () => boolean,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | null = null;
  const lane = async (): Promise<void> => {
    while (next < items.length && !stopped() && failure === null) {
      const i = next++;
      try {
        await work(items[i], i);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, items.length)) }, lane));
  if (failure !== null) throw (failure as { error: unknown }).error;
}

/** ORT threads per run: all cores shared evenly between the runs in flight. */
export function threadsPerJob(cores: number, jobs: number): number {
  return Math.max(1, Math.floor(cores / jobs));
}
