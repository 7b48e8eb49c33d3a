/**
 * Poll until `check` returns a value (store writes are asynchronous), or fail
 * with the last error. `check` returns undefined (or throws) for "not yet";
 * it is called every 250 ms until `timeoutMs` has passed.
 */
export async function eventually<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${String(last ?? 'no result')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
