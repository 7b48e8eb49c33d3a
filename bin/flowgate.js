#!/usr/bin/env node
// The flowgate CLI. Runs the build (dist/control/cli/index.js) when there is
// one; from a checkout without a build it compiles the TypeScript on the fly
// with tsx. FLOWGATE_FROM_SOURCE=1 prefers the sources even when built.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

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
