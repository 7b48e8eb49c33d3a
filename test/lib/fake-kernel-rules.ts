/**
 * A recording fake of the kernel's rule tables (KernelRules, see
 * control/rules/service.ts) for RuleService tests: the ids it enforces after
 * each switch, per-rule counters, and a failure to inject.
 */
import type { Rule } from '../../control/rules/rule.js';
import type { KernelRules } from '../../control/rules/service.js';

export class FakeKernel implements KernelRules {
  /** The rule ids the kernel enforces, after each switch. */
  loaded: number[] = [];
  switches = 0;
  failNext?: Error;
  counters = new Map<number, { packets: number; bytes: number }>();

  private take(rules: readonly Rule[]): void {
    if (this.failNext) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
    this.loaded = rules.map((r) => r.id).sort((a, b) => a - b);
    this.switches++;
  }

  load(rules: readonly Rule[]): Promise<void> {
    this.take(rules);
    return Promise.resolve();
  }

  change(_a: readonly Rule[], _r: readonly Rule[], all: () => Rule[]): Promise<void> {
    this.take(all());
    return Promise.resolve();
  }

  stats(id: number): { packets: number; bytes: number } {
    return this.counters.get(id) ?? { packets: 0, bytes: 0 };
  }

  resetStats(ids: readonly number[]): Promise<void> {
    for (const id of ids) this.counters.delete(id);
    return Promise.resolve();
  }
}
