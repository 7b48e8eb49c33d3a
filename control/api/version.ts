/**
 * flowgate's version, from the package.json above this module (the same
 * lookup works from control/ in a checkout and from dist/control/ in a build).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function flowgateVersion(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'flowgate' && typeof pkg.version === 'string') return (cached = pkg.version);
    } catch {
      // no package.json here: keep looking upwards
    }
    const parent = dirname(dir);
    if (parent === dir) return (cached = '0.0.0-unknown');
    dir = parent;
  }
}
