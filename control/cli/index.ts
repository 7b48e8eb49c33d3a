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
import { CommanderError, type Command } from 'commander';
import { FlagError } from '../agent/flags.js';
import { CliError } from './client.js';
import { newProgram } from './program.js';

export const USAGE_EXIT = 2;

type Register = (program: Command) => void;

/**
 * Each command's module, imported only when the command line names it: the
 * agent (`run`) then loads none of the client commands, and they load none
 * of the agent (fastify, the store client, the data path).
 */
const COMMANDS: Readonly<Record<string, () => Promise<Register>>> = {
  run: async () => (await import('./run.js')).registerRun,
  sql: async () => (await import('./sql.js')).registerSql,
  top: async () => (await import('./top.js')).registerTop,
  status: async () => (await import('./status.js')).registerStatus,
  rules: async () => (await import('./rules.js')).registerRules,
};

/**
 * The program for `argv`: with the one command it names, or with all of them
 * (commands.ts) when it names none it has — help, --version, a mistyped
 * command (suggestions need every name).
 */
async function programFor(argv: readonly string[]): Promise<Command> {
  const name = argv[2];
  const load = name !== undefined && Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!load) return (await import('./commands.js')).buildProgram();
  const program = newProgram();
  (await load())(program);
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
    await (await programFor(argv)).parseAsync([...argv]);
    return 0;
  } catch (err) {
    return reportError(err);
  }
}
