/**
 * Logging: pino JSON lines, pretty-printed when stderr is a terminal (and
 * pino-pretty is installed). FLOWGATE_LOG_LEVEL overrides the level.
 */
import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';

export type { Logger };

function prettyTransport(): pino.TransportSingleOptions | undefined {
  if (!process.stderr.isTTY) return undefined;
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l' } };
  } catch {
    return undefined;
  }
}

export function createLogger(name = 'flowgate'): Logger {
  const level = process.env.FLOWGATE_LOG_LEVEL ?? 'info';
  const transport = prettyTransport();
  if (transport) return pino({ name, level, transport });
  return pino({ name, level }, pino.destination(2));
}
