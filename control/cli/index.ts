/**
 * The `flowgate` command line (DESIGN.md "Public contracts"):
 *   flowgate run …          the agent (run.ts)
 *   flowgate sql "<SELECT…>" [--format table|json|csv]
 *   flowgate top [--window 60s] [--interval 2s] [--limit 20] [--iface eth0] [--once]
 *   flowgate status [--format table|json]
 *   flowgate rules list|add|delete|import … (rules.ts)
 * Clients take --api http://host:port (default http://127.0.0.1:7650) and the
 * token from FLOWGATE_API_TOKEN.
 *
 * Errors print ONE line, `flowgate: <what>`, on stderr: a bad flag or value
 * names the flag and exits 2; an unreachable agent, an API error or a failed
 * command exits 1. FLOWGATE_DEBUG=1 adds the stack of unexpected errors.
 */
import { Command, CommanderError } from 'commander';
import { FlagError } from '../agent/flags.js';
import { flowgateVersion } from '../api/version.js';
import { CliError } from './client.js';
import { registerRules } from './rules.js';
import { registerRun } from './run.js';
import { registerSql } from './sql.js';
import { registerStatus } from './status.js';
import { registerTop } from './top.js';

export const USAGE_EXIT = 2;

export function buildProgram(): Command {
  const program = new Command('flowgate')
    .description('flowgate: XDP/TC flow monitor and packet filter')
    .version(flowgateVersion(), '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    // Throw instead of exiting, and print errors ourselves (one line); help and
    // version still go to stdout. Subcommands inherit both settings.
    .exitOverride()
    .configureOutput({ outputError: () => undefined })
    .showSuggestionAfterError(true);
  registerRun(program);
  registerSql(program);
  registerTop(program);
  registerStatus(program);
  registerRules(program);
  return program;
}

function oneLine(s: string): string {
  return s.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/** Print `flowgate: <message>` and return the exit code for `err`. */
export function reportError(err: unknown, stderr: (s: string) => void = (s) => process.stderr.write(s)): number {
  if (err instanceof CommanderError) {
    // Help and version were printed already; `flowgate` alone prints help and exits 1.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
      return err.exitCode;
    }
    stderr(`flowgate: ${oneLine(err.message.replace(/^error: /, ''))}\n`);
    return USAGE_EXIT;
  }
  if (err instanceof FlagError) {
    stderr(`flowgate: ${oneLine(err.message)}\n`);
    return USAGE_EXIT;
  }
  if (err instanceof CliError) {
    stderr(`flowgate: ${oneLine(err.message)}\n`);
    return err.exitCode;
  }
  const message = err instanceof Error ? err.message : String(err);
  stderr(`flowgate: ${oneLine(message) || 'failed'}\n`);
  if (process.env.FLOWGATE_DEBUG && err instanceof Error && err.stack) stderr(`${err.stack}\n`);
  return 1;
}

/** Run the CLI; resolves to the exit code (bin/flowgate.js sets process.exitCode). */
export async function main(argv: readonly string[] = process.argv): Promise<number> {
  // `flowgate sql … | head`: a closed pipe is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  try {
    await buildProgram().parseAsync([...argv]);
    return 0;
  } catch (err) {
    return reportError(err);
  }
}
