#!/usr/bin/env node
// The flowgate CLI. Runs the build (dist/control/cli/index.js) when there is
// one; from a checkout without a build it compiles the TypeScript on the fly
// with tsx. FLOWGATE_FROM_SOURCE=1 prefers the sources even when built.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';

// The agent's memory settings, applied before anything else loads (FLOWGATE_MEMORY_DEFAULTS=1: none of them).
if (process.argv[2] === 'run' && process.env.FLOWGATE_MEMORY_DEFAULTS !== '1') {
  // V8 grows the young generation to 2 × 16 MB under any burst of garbage
  // (startup, an API request) and keeps it: ~30 MB resident for an agent
  // whose objects are few and short-lived. Keep it at its initial 2 × 1 MB,
  // as --max-semi-space-size=1 would (a flag only the command line takes;
  // this one works at run time, so `node bin/flowgate.js run` needs none).
  v8.setFlagsFromString('--semi-space-growth-factor=1');
  // Bulk jobs (a million-rule PUT) lift the cap while they run: control/util/young-generation.ts.
  process.env.FLOWGATE_YOUNG_GENERATION_CAPPED = '1';
  // No baseline (Sparkplug) compiler: what it compiles and keeps for warm
  // functions (startup, API) measured ~1 MB of heap at idle; the hot paths
  // (drain, encode) still get TurboFan, and the CPU at 100k flows/s is the same.
  v8.setFlagsFromString('--no-sparkplug');
  // glibc malloc: at most two arenas (not one per thread that ever
  // allocated: libuv's pool, V8's workers), and blocks from 128 KiB on in
  // their own mappings, returned on free — by default glibc raises that
  // threshold as big blocks are freed, and the agent's per-drain buffers
  // then stay resident in the heap after they are gone.
  try {
    const native = createRequire(import.meta.url)(
      fileURLToPath(new URL('../native/build/Release/flowgate_native.node', import.meta.url)),
    );
    native.tuneMalloc({ arenaMax: 2, mmapThreshold: 128 * 1024 });
  } catch {
    // Not built: the agent stops with a clear error when it loads the addon.
  }
}

const root = new URL('../', import.meta.url);
const built = new URL('dist/control/cli/index.js', root);

let cli;
if (process.env.FLOWGATE_FROM_SOURCE !== '1' && existsSync(fileURLToPath(built))) {
  cli = await import(built.href);
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write('flowgate: not built and tsx is not installed: run `npm ci && npm run build:ts`\n');
    process.exit(1);
  }
  register();
  cli = await import(new URL('control/cli/index.ts', root).href);
}
process.exitCode = await cli.main(process.argv);
