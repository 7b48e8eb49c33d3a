/** The `flowgate` program with every command: for help, a mistyped command, and tests. */
import type { Command } from 'commander';
import { newProgram } from './program.js';
import { registerRules } from './rules.js';
import { registerRun } from './run.js';
import { registerSql } from './sql.js';
import { registerStatus } from './status.js';
import { registerTop } from './top.js';

export function buildProgram(): Command {
  const program = newProgram();
  registerRun(program);
  registerSql(program);
  registerTop(program);
  registerStatus(program);
  registerRules(program);
  return program;
}
