/** The `flowgate` program without its commands (index.ts adds the ones a command line needs). */
import { Command } from 'commander';
import { flowgateVersion } from '../api/version.js';

export function newProgram(): Command {
  return (
    new Command('flowgate')
      .description('flowgate: XDP/TC flow monitor and packet filter')
      .version(flowgateVersion(), '-V, --version', 'print the version')
      .helpOption('-h, --help', 'show help')
      // Throw instead of exiting, and print errors ourselves (one line); help and
      // version still go to stdout. Subcommands inherit both settings.
      .exitOverride()
      .configureOutput({ outputError: () => undefined })
      .showSuggestionAfterError(true)
  );
}
