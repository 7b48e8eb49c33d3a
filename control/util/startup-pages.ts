/**
 * Starting up runs code and reads constants that the running process hardly
 * touches again (node's module loader and compiler over a few hundred
 * modules; the embedded engine registering every function, format and
 * table engine it has). Once started, drop this process's mappings of those
 * pages (native releaseFilePages): they stay in the page cache, and what
 * the process goes on to use comes back as minor faults.
 * FLOWGATE_MEMORY_DEFAULTS=1 keeps them, like the agent's other memory
 * settings (bin/flowgate.js).
 */
import { loadNative } from '../../native/index.js';
import type { Logger } from '../log.js';

/** Release the startup pages of the mapped files whose path contains `pathFragment`; `what` names them in the log. */
export function releaseStartupPages(pathFragment: string, what: string, log: Logger): void {
  if (process.env.FLOWGATE_MEMORY_DEFAULTS === '1') return;
  try {
    const bytes = loadNative().releaseFilePages(pathFragment);
    log.debug({ releasedMB: Math.round(bytes / 2 ** 20) }, `released ${what}'s startup pages`);
  } catch (err) {
    log.warn({ err }, `cannot release ${what}'s startup pages (the native addon)`);
  }
}
