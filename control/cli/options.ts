/**
 * Options shared by the API clients (sql, top, status) and flag parsers
 * the CLI adds to control/agent/flags.ts's. Every parser throws FlagError
 * naming the flag; index.ts prints it as one line.
 */
import type { Command } from 'commander';
import { FlagError } from '../agent/flags.js';
import { ApiClient, DEFAULT_API, TOKEN_ENV } from './client.js';

export { FlagError };

/** A parser for a flag that takes one of `choices`: `--format must be one of table, json, csv, got "xml"`. */
export function choice<T extends string>(flag: string, choices: readonly T[]): (text: string) => T {
  return (text) => {
    if ((choices as readonly string[]).includes(text)) return text as T;
    throw new FlagError(flag, `must be one of ${choices.join(', ')}, got "${text}"`);
  };
}

/** An http(s) base URL of the agent's API. */
export function parseApiUrl(flag: string, text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new FlagError(flag, `must be a URL like ${DEFAULT_API}, got "${text}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new FlagError(flag, `must be an http:// or https:// URL, got "${text}"`);
  }
  if (url.username || url.password) throw new FlagError(flag, `must not hold credentials; set ${TOKEN_ENV} instead`);
  if (url.search || url.hash)
    throw new FlagError(flag, `must be a base URL without ?query or #fragment, got "${text}"`);
  return url.href.replace(/\/+$/, '');
}

/** An interface name for a filter (the same rule as the REST API's). */
export function parseIfaceName(flag: string, text: string): string {
  if (!/^(?!\.\.?$)[^\s/:]{1,15}$/.test(text)) throw new FlagError(flag, `"${text}" is not an interface name`);
  return text;
}

export interface ClientFlags {
  api: string;
}

/** Adds --api to a client command. */
export function addClientOptions(cmd: Command): Command {
  return cmd.option(
    '--api <url>',
    `the agent's API (token from $${TOKEN_ENV})`,
    (v: string) => parseApiUrl('--api', v),
    DEFAULT_API,
  );
}

export function clientFrom(flags: ClientFlags): ApiClient {
  const token = process.env[TOKEN_ENV]?.trim();
  return new ApiClient({ api: flags.api, token: token || undefined });
}
