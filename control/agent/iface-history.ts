/**
 * Interface counter history: the kernel keeps running totals per interface
 * and direction; the store keeps one row of deltas per drain interval.
 */
import type { IfaceStats } from '../datapath/layout.js';
import type { IfaceCounterRow } from '../store/types.js';

function key(s: IfaceStats): string {
  return `${s.ifindex}/${s.direction}`;
}

export class IfaceHistory {
  private last = new Map<string, IfaceStats>();
  private baselined = false;

  /**
   * Rows of what changed since the previous call. The first call only
   * records the baseline (totals from before this agent started are not
   * an interval of ours); a counter that went back (maps recreated) counts
   * from zero.
   */
  rows(stats: IfaceStats[], at: Date, host: string, ifaceName: (ifindex: number) => string): IfaceCounterRow[] {
    const rows: IfaceCounterRow[] = [];
    const first = !this.baselined;
    this.baselined = true;
    for (const s of stats) {
      const prev = this.last.get(key(s));
      if (!first) {
        const delta = (now: number, before: number | undefined): number =>
          now >= (before ?? 0) ? now - (before ?? 0) : now;
        const counters = { ...s.counters };
        for (const k of Object.keys(counters) as Array<keyof typeof counters>) {
          counters[k] = delta(s.counters[k], prev?.counters[k]);
        }
        const malformed: IfaceCounterRow['malformed'] = {};
        for (const [reason, n] of Object.entries(s.malformed) as Array<[keyof typeof s.malformed, number]>) {
          const d = delta(n, prev?.malformed[reason]);
          if (d) malformed[reason] = d;
        }
        if (counters.seen_packets > 0) {
          rows.push({ ts: at, host, iface: ifaceName(s.ifindex), direction: s.direction, counters, malformed });
        }
      }
      this.last.set(key(s), s);
    }
    return rows;
  }
}
