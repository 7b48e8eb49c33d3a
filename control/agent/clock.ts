/**
 * The programs stamp flows with CLOCK_MONOTONIC (bpf_ktime_get_ns); Node's
 * hrtime reads the same clock. The offset to wall time is measured again at
 * every drain so NTP steps are followed.
 */
export class MonotonicClock {
  private offsetNs = 0n;

  constructor() {
    this.resync();
  }

  resync(): void {
    const mono = process.hrtime.bigint();
    const wallNs = BigInt(Date.now()) * 1_000_000n;
    this.offsetNs = wallNs - mono;
  }

  /** Wall clock minus monotonic clock, ns. */
  offset(): bigint {
    return this.offsetNs;
  }

  toEpochNs(monoNs: bigint): bigint {
    return monoNs + this.offsetNs;
  }
}
