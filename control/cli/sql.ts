/** `flowgate sql "<SELECT…>"`: read-only SQL over the flow store, as a table, CSV or JSON. */
import type { Command } from 'commander';
import type { QueryResult } from '../store/types.js';
import { CliError } from './client.js';
import { cellText, formatCsv, type Align, formatJson, formatTable, isNumericType } from './format.js';
import { addClientOptions, choice, clientFrom, type ClientFlags } from './options.js';

export const SQL_FORMATS = ['table', 'json', 'csv'] as const;
export type SqlFormat = (typeof SQL_FORMATS)[number];

/** A query result in `format`, ready to print. */
export function renderResult(result: QueryResult, format: SqlFormat): string {
  const header = result.columns.map((c) => c.name);
  switch (format) {
    case 'csv':
      return formatCsv(header, result.rows);
    case 'json':
      return formatJson(header, result.rows);
    case 'table': {
      const align = result.columns.map((c): Align => (isNumericType(c.type) ? 'right' : 'left'));
      const rows = result.rows.map((r) => r.map(cellText));
      const n = result.rows.length;
      return `${formatTable(header, rows, align)}(${n} ${n === 1 ? 'row' : 'rows'})\n`;
    }
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function registerSql(program: Command): void {
  addClientOptions(
    program
      .command('sql')
      .description('run read-only SQL over the flow store (table flowgate.flows) and print the result')
      .argument('<query>', 'one SELECT; "-" reads it from stdin')
      .option('--format <format>', 'table, json or csv', choice('--format', SQL_FORMATS), 'table' as SqlFormat),
  ).action(async (query: string, flags: ClientFlags & { format: SqlFormat }) => {
    const sql = (query === '-' ? await readStdin() : query).trim();
    if (!sql) throw new CliError('sql: the query is empty', 2);
    const result = await clientFrom(flags).query(sql);
    process.stdout.write(renderResult(result, flags.format));
  });
}
