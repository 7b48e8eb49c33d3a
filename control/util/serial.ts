/**
 * Run async jobs one at a time, in call order. Slot flips and rule-table
 * writes must never interleave: each assumes it owns the idle slot.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const result = this.tail.then(job, job);
    // Keep the chain alive whatever this job does; callers see its own outcome.
    this.tail = result.catch(() => undefined);
    return result;
  }
}
