/**
 * `flowgate run`: parse the flags (each bad value is one line naming the
 * flag), start the agent and its API, and stop cleanly on SIGTERM/SIGINT.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { Agent, defaultHost, defaultSpoolDir, type AgentConfig } from '../agent/agent.js';
import {
  FlagError,
  parseClickHouseUrl,
  parseDuration,
  parseIfaces,
  parseListen,
  parsePositiveInt,
  parseXdpMode,
  type ListenAddress,
} from '../agent/flags.js';
import { buildApi, isLoopbackHost, listenApi } from '../api/server.js';
import { createLogger } from '../log.js';
import { Metrics } from '../metrics.js';
import { CLUSTER_NAME } from '../store/migrate.js';
import type { StoreTarget } from '../store/types.js';
import { releaseStartupPages } from '../util/startup-pages.js';

export const DEFAULTS = {
  store: '/var/lib/flowgate',
  bpffs: '/sys/fs/bpf/flowgate',
  listen: '127.0.0.1:7650',
  drainInterval: '5s',
  retention: '30d',
  maxFlows: 524_288,
  maxRules: 1_100_000,
  spoolMax: 1024 * 1024 * 1024,
  earlyDrainFill: 0.5,
  rulesSyncInterval: '10s',
};

interface RunOptions {
  iface: string[];
  xdpMode: 'auto' | 'native' | 'generic';
  egress: boolean;
  store: string;
  clickhouseUrl?: string;
  clickhousePasswordFile?: string;
  clickhouseCluster?: string;
  drainInterval: number;
  listen: ListenAddress;
  apiTokenFile?: string;
  maxFlows: number;
  maxRules: number;
  bpffs: string;
  retention: number;
  spoolDir?: string;
  spoolMax: number;
  host: string;
  unpin: boolean;
  tlsCert?: string;
  tlsKey?: string;
  rulesSource: 'local' | 'store';
  rulesSyncInterval: number;
}

/** Token from --api-token-file, else FLOWGATE_API_TOKEN; a file that cannot be read names the flag. */
function readToken(file: string | undefined): string | undefined {
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new FlagError('--api-token-file', `cannot be read: ${(err as Error).message}`);
    }
    const token = text.trim();
    if (!token) throw new FlagError('--api-token-file', `${file} is empty`);
    return token;
  }
  return process.env.FLOWGATE_API_TOKEN?.trim() || undefined;
}

/**
 * --clickhouse-password-file: the password of the --clickhouse-url user,
 * kept out of the command line (which every local user can read in ps).
 * The file's text without its final line break.
 */
export function readClickHousePassword(file: string, url: string | undefined): string {
  const flag = '--clickhouse-password-file';
  if (url === undefined) throw new FlagError(flag, 'needs --clickhouse-url (the embedded store has no password)');
  if (new URL(url).password)
    throw new FlagError(flag, '--clickhouse-url holds a password already: give it in one place');
  const password = readFlagFile(flag, file)
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (!password) throw new FlagError(flag, `${file} is empty`);
  return password;
}

function readFlagFile(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new FlagError(flag, `cannot be read: ${(err as Error).message}`);
  }
}

/**
 * --tls-cert and --tls-key: both or neither, readable, PEM, and a pair. Checked
 * here so a mistake is one line naming the flag, not a TLS error from deep
 * inside the server after the interfaces were attached.
 */
export function readTls(certFile?: string, keyFile?: string): { cert: Buffer; key: Buffer } | undefined {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (keyFile === undefined) throw new FlagError('--tls-key', 'is needed with --tls-cert');
  if (certFile === undefined) throw new FlagError('--tls-cert', 'is needed with --tls-key');
  const cert = readFlagFile('--tls-cert', certFile);
  const key = readFlagFile('--tls-key', keyFile);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new FlagError('--tls-cert', `${certFile} is not a PEM certificate: ${(err as Error).message}`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new FlagError('--tls-key', `${keyFile} is not a PEM private key: ${(err as Error).message}`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new FlagError('--tls-key', `${keyFile} is not the key of the certificate in ${certFile}`);
  }
  return { cert, key };
}

/** --rules-source: local (this agent's own set) or store (the fleet's, in the ClickHouse server). */
export function parseRulesSource(flag: string, text: string): 'local' | 'store' {
  if (text === 'local' || text === 'store') return text;
  throw new FlagError(flag, `must be local or store, got "${text}"`);
}

/** --clickhouse-cluster: a cluster name of the server's remote_servers (it goes into ON CLUSTER '<name>'). */
export function parseClusterName(flag: string, text: string): string {
  if (!CLUSTER_NAME.test(text)) {
    throw new FlagError(flag, `must be a cluster name (letters, digits, '_', '-', '.'), got "${text}"`);
  }
  return text;
}

function listenText(l: ListenAddress): string {
  return l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run the agent: attach the interfaces, count and filter flows, store them, serve the API')
    .requiredOption('--iface <nic[,nic…]>', 'interfaces to attach', (v: string) => parseIfaces('--iface', v))
    .option('--xdp-mode <mode>', 'auto, native or generic', (v: string) => parseXdpMode('--xdp-mode', v), 'auto')
    .option('--egress', 'also count and filter what the host sends (TC egress)', true)
    .option('--no-egress', 'ingress only')
    .option('--store <dir>', 'embedded ClickHouse (chDB) directory, also holds the spool', DEFAULTS.store)
    .option('--clickhouse-url <url>', 'a ClickHouse server instead of the embedded store', (v: string) =>
      parseClickHouseUrl('--clickhouse-url', v),
    )
    .option(
      '--clickhouse-password-file <file>',
      'file holding the password of the --clickhouse-url user (instead of in the URL, which ps shows)',
    )
    .option(
      '--clickhouse-cluster <name>',
      'the --clickhouse-url server is a node of this cluster: replicated, distributed schema (schema/cluster)',
      (v: string) => parseClusterName('--clickhouse-cluster', v),
    )
    .option(
      '--drain-interval <duration>',
      'how often flows are drained (also early when the map fills)',
      (v: string) => parseDuration('--drain-interval', v),
      parseDuration('--drain-interval', DEFAULTS.drainInterval),
    )
    .option(
      '--listen <host:port>',
      'REST API address (loopback only without a token)',
      (v: string) => parseListen('--listen', v),
      parseListen('--listen', DEFAULTS.listen),
    )
    .option('--api-token-file <file>', 'file holding the API bearer token (or env FLOWGATE_API_TOKEN)')
    .option('--tls-cert <file>', 'serve the API over HTTPS with this PEM certificate (chain); needs --tls-key')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option(
      '--max-flows <n>',
      'entries per flow map (two maps: one written, one drained)',
      (v: string) => parsePositiveInt('--max-flows', v, 1024, 1 << 26),
      DEFAULTS.maxFlows,
    )
    .option(
      '--max-rules <n>',
      'rule ids, and prefixes per LPM table: the kernel keeps 16 B of counters per id per possible CPU',
      (v: string) => parsePositiveInt('--max-rules', v, 1024, 1 << 24),
      DEFAULTS.maxRules,
    )
    .option('--bpffs <dir>', 'bpffs directory for pins (mounted if needed)', DEFAULTS.bpffs)
    .option(
      '--retention <duration>',
      'how long flows are kept (rollups keep longer)',
      (v: string) => Math.max(1, Math.round(parseDuration('--retention', v) / 86_400_000)),
      30,
    )
    .option('--spool-dir <dir>', 'where drained batches wait for the store (default <store>/spool)')
    .option(
      '--spool-max <bytes>',
      'spool size bound; past it the oldest batches are dropped, loudly',
      (v: string) => parsePositiveInt('--spool-max', v, 1 << 20),
      DEFAULTS.spoolMax,
    )
    .option('--host <name>', 'host name stored with every flow', defaultHost())
    .option('--unpin', 'detach and remove the pins on exit (enforcement stops)', false)
    .option(
      '--rules-source <local|store>',
      "local: this agent's own rule set; store: the set every agent sharing the --clickhouse-url store enforces",
      (v: string) => parseRulesSource('--rules-source', v),
      'local',
    )
    .option(
      '--rules-sync-interval <duration>',
      'with --rules-source store: how often the shared rule set is checked for changes',
      (v: string) => parseDuration('--rules-sync-interval', v),
      parseDuration('--rules-sync-interval', DEFAULTS.rulesSyncInterval),
    )
    .action(async (opts: RunOptions) => {
      if (opts.clickhouseCluster !== undefined && opts.clickhouseUrl === undefined) {
        throw new FlagError('--clickhouse-cluster', 'needs --clickhouse-url (the embedded store is a single node)');
      }
      if (opts.rulesSource === 'store' && opts.clickhouseUrl === undefined) {
        throw new FlagError(
          '--rules-source',
          'store needs --clickhouse-url: the agents share the rule set through one ClickHouse server',
        );
      }
      const tls = readTls(opts.tlsCert, opts.tlsKey);
      const token = readToken(opts.apiTokenFile);
      if (!token && !isLoopbackHost(opts.listen.host)) {
        throw new FlagError(
          '--listen',
          `${opts.listen.host} is not loopback: set --api-token-file (or FLOWGATE_API_TOKEN) first`,
        );
      }
      const password =
        opts.clickhousePasswordFile === undefined
          ? undefined
          : readClickHousePassword(opts.clickhousePasswordFile, opts.clickhouseUrl);
      const log = createLogger();
      const store: StoreTarget = opts.clickhouseUrl
        ? {
            kind: 'server',
            url: opts.clickhouseUrl,
            ...(opts.clickhouseCluster === undefined ? {} : { cluster: opts.clickhouseCluster }),
            ...(password === undefined ? {} : { password }),
          }
        : { kind: 'embedded', dir: path.resolve(opts.store) };
      const config: AgentConfig = {
        ifaces: opts.iface,
        xdpMode: opts.xdpMode,
        egress: opts.egress,
        store,
        spoolDir: path.resolve(opts.spoolDir ?? defaultSpoolDir(opts.store)),
        // The rule set is state of this host, kept under --store whichever flow store is used.
        rulesDir: path.resolve(opts.store, 'rules'),
        spoolMaxBytes: opts.spoolMax,
        retentionDays: opts.retention,
        drainIntervalMs: opts.drainInterval,
        earlyDrainFill: DEFAULTS.earlyDrainFill,
        maxFlows: opts.maxFlows,
        maxRules: opts.maxRules,
        // A prefix table holds at most one entry per rule.
        maxPrefixes: opts.maxRules,
        bpffs: path.resolve(opts.bpffs),
        host: opts.host,
        unpinOnExit: opts.unpin,
        rules:
          opts.rulesSource === 'store'
            ? { source: 'store', syncIntervalMs: opts.rulesSyncInterval }
            : { source: 'local' },
      };
      const metrics = new Metrics();
      const agent = await Agent.start(config, { log, metrics });
      let app: Awaited<ReturnType<typeof buildApi>> | undefined;
      try {
        app = await buildApi({
          agent,
          metrics,
          token,
          logger: log.child({ part: 'api' }),
          ...(tls ? { https: tls } : {}),
        });
        const url = await listenApi(app, listenText(opts.listen), token);
        log.info({ url }, 'API listening');
        releaseStartupPages(process.execPath, 'node', log);
      } catch (err) {
        await agent.stop();
        throw err;
      }
      await new Promise<void>((resolve) => {
        const onSignal = (signal: NodeJS.Signals): void => {
          log.info({ signal }, 'stopping: final drain and flush');
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
          void (async () => {
            await app?.close();
            await agent.stop();
            resolve();
          })();
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
    });
}
