import { availableParallelism } from 'node:os';

/**
 * Run jobs a few at a time (each is a node process compiling TypeScript):
 * as many at once as the machine has cores, at least two. Results come back
 * in the jobs' order.
 */
export async function pool<T>(jobs: Array<() => Promise<T>>): Promise<T[]> {
  const out: T[] = new Array<T>(jobs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.max(2, availableParallelism()) }, worker));
  return out;
}
