/**
 * A private datapath for one test: its own bpffs mount under /tmp (never the
 * host's /sys/fs/bpf), torn down with every pin and attachment it made.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { Datapath, type DatapathOptions } from '../../control/datapath/datapath.js';
import { requirePrivileges } from './privileges.js';

export interface TestDatapath {
  dp: Datapath;
  bpffs: string;
  /** Unpin everything, unmount and remove the directory. */
  destroy(): void;
}

export const TEST_LIMITS = { maxFlows: 4096, maxRules: 4096, maxPrefixes: 4096 };

export function tempBpffsDir(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'flowgate-bpffs-'));
}

export function removeBpffs(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'ignore' });
  } catch {
    // not mounted (the open failed early): nothing to unmount
  }
  rmSync(dir, { recursive: true, force: true });
}

export function openTestDatapath(opts: Partial<DatapathOptions> = {}): TestDatapath {
  const bpffs = opts.bpffs ?? tempBpffsDir();
  const dp = Datapath.open({ ...TEST_LIMITS, ...opts, bpffs });
  return {
    dp,
    bpffs,
    destroy() {
      try {
        dp.unpinAll();
      } finally {
        dp.close();
        removeBpffs(bpffs);
      }
    },
  };
}

/**
 * Run `fn` on a private datapath (openTestDatapath(opts)), destroyed after it.
 * Needs root and bpf(): without them the test is skipped (fails under CI) and
 * `fn` does not run.
 */
export async function withTestDatapath(
  t: TestContext,
  fn: (env: TestDatapath) => Promise<void>,
  opts: Partial<DatapathOptions> = {},
): Promise<void> {
  if (!requirePrivileges(t, ['root', 'bpf'])) return;
  const env = openTestDatapath(opts);
  try {
    await fn(env);
  } finally {
    env.destroy();
  }
}
