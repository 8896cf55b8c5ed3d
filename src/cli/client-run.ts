// `postern client run`: the end user's command. Loads client.json, starts the local SOCKS and HTTP proxies and
// the tunnel controller, prints one line per state change (and, on a terminal, a live status line with the
// byte counts), and stops cleanly on Ctrl-C or SIGTERM. Lines never carry a destination or a user's address.
import { resolve } from 'node:path';
import { loadConfig } from '../common/config.ts';
import { PosternError } from '../common/errors.ts';
import { createLogger } from '../common/logger.ts';
import { redactString } from '../common/redact.ts';
import { ClientConfigSchema, isKnownTunnelProtocol } from '../protocol/index.ts';
import {
  startHttpProxy,
  startSocksProxy,
  TunnelController,
  IMPLEMENTED_TUNNEL_PROTOCOLS,
  type ControllerStatus,
  type LocalProxy,
} from '../client/index.ts';
import { TransferStats, countingDialer } from '../client/transfer-stats.ts';
import { parseHostPort } from './output.ts';

export const DEFAULT_SOCKS_ADDRESS = '127.0.0.1:1080';
export const DEFAULT_HTTP_ADDRESS = '127.0.0.1:8118';
export const DEFAULT_CLIENT_DATA_DIR = 'postern-data/client';
/** How often the terminal status line is redrawn. */
export const STATUS_LINE_INTERVAL_MS = 1_000;
/** Clears the current terminal line (carriage return + erase to end of line). */
const CLEAR_LINE = '\r\x1b[K';

export interface ClientRunOptions {
  config: string;
  socks: string;
  http: string;
  protocols?: string[];
  data: string;
  json?: boolean;
  /** Milliseconds between status requests (bytes per domain), instead of Psiphon's 5 to 10 minutes */
  statusPeriodMs?: number;
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'] as const;

/** 1234567 → "1.2 MB" (powers of 1000, as network tools count). */
export function formatBytes(n: number): string {
  let v = n;
  let unit = 0;
  while (v >= 1000 && unit < UNITS.length - 1) {
    v /= 1000;
    unit++;
  }
  return unit === 0 ? `${v} B` : `${v.toFixed(1)} ${UNITS[unit]}`;
}

/** The line printed for a state change. */
export function describeState(status: ControllerStatus): string {
  switch (status.state) {
    case 'establishing':
      return 'establishing';
    case 'connected':
      return `connected via ${status.protocol} to ${status.serverRegion} (client region ${status.clientRegion})`;
    case 'reconnecting':
      return `reconnecting: ${redactString(status.reason ?? 'the tunnel ended')}`;
    case 'stopped':
      return 'stopped';
  }
}

function checkProtocols(protocols: readonly string[]): void {
  for (const p of protocols) {
    if (!isKnownTunnelProtocol(p)) {
      throw new PosternError(
        'BAD_ARGUMENT',
        `unknown tunnel protocol "${p}" in --protocols / LimitTunnelProtocols; this client speaks ${IMPLEMENTED_TUNNEL_PROTOCOLS.join(', ')}`,
      );
    }
  }
  if (protocols.length > 0 && !protocols.some((p) => IMPLEMENTED_TUNNEL_PROTOCOLS.includes(p))) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `--protocols / LimitTunnelProtocols allows only ${protocols.join(', ')}, none of which this client speaks (${IMPLEMENTED_TUNNEL_PROTOCOLS.join(', ')})`,
    );
  }
}

async function listenProxy(
  what: string,
  address: string,
  start: (host: string, port: number) => Promise<LocalProxy>,
): Promise<LocalProxy> {
  const { host, port } = parseHostPort(address, `--${what}`);
  try {
    return await start(host, port);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    const why = code === 'EADDRINUSE' ? 'the address is in use' : e instanceof Error ? e.message : String(e);
    throw new PosternError('IO', `cannot listen on ${address} for the ${what} proxy: ${why}`, { cause: e });
  }
}

function addressOf(p: LocalProxy): string {
  const a = p.address;
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

export interface RunningClient {
  controller: TunnelController;
  socks: string;
  http: string;
  /** Closes the proxies, then the tunnel (with its last status report). */
  stop(): Promise<void>;
}

/** Starts the proxies and the controller; `postern client run` and `postern up` both use it. */
export async function startClient(o: ClientRunOptions): Promise<RunningClient> {
  // Flags first: a typo should not wait behind a config problem.
  parseHostPort(o.socks, '--socks');
  parseHostPort(o.http, '--http');
  const configFile = resolve(o.config);
  const config = loadConfig(ClientConfigSchema, {
    file: configFile,
    envPrefix: 'POSTERN_CLIENT',
    flags: { LimitTunnelProtocols: o.protocols },
  });
  checkProtocols(config.LimitTunnelProtocols);
  const json = o.json === true;
  const log = createLogger({ name: 'client' });
  // Bytes per domain for the status requests: the sponsor's regexes from each handshake name the domains.
  const transferStats = new TransferStats({ logger: log });
  const controller = new TunnelController({
    config,
    dataDir: resolve(o.data),
    logger: log,
    statusReporter: transferStats,
    ...(o.statusPeriodMs
      ? { timing: { statusPeriodMinMs: o.statusPeriodMs, statusPeriodMaxMs: o.statusPeriodMs } }
      : {}),
  });
  controller.on('handshake', (result) => transferStats.setRegexes(result.domainRegexes));
  const dialer = countingDialer(controller, transferStats);
  const report = controller.store.report;
  if (report.rejectedEmbedded > 0) {
    log.warn(`${report.rejectedEmbedded} of ${report.embedded} embedded server entries failed verification`);
  }
  if (controller.store.size === 0) {
    throw new PosternError(
      'BAD_CONFIG',
      `${o.config} holds no usable server entries (${report.embedded} embedded, ${report.rejectedEmbedded} rejected); make a new one with \`postern client config\``,
    );
  }

  const tty = !json && process.stdout.isTTY === true;
  let statusLineShown = false;
  const out = (line: string): void => {
    process.stdout.write((statusLineShown ? CLEAR_LINE : '') + line + '\n');
    statusLineShown = false;
  };
  const emit = (fields: Record<string, unknown>, human: string): void => {
    out(json ? JSON.stringify({ time: new Date().toISOString(), ...fields }) : human);
  };

  const proxies: LocalProxy[] = [];
  try {
    const socks = await listenProxy('socks', o.socks, (host, port) =>
      startSocksProxy({ dialer, host, port }),
    );
    proxies.push(socks);
    const http = await listenProxy('http', o.http, (host, port) => startHttpProxy({ dialer, host, port }));
    proxies.push(http);
    emit(
      { event: 'listening', socks: addressOf(socks), http: addressOf(http) },
      `SOCKS5 proxy on ${addressOf(socks)}, HTTP proxy on ${addressOf(http)}`,
    );
  } catch (e) {
    await Promise.all(proxies.map((p) => p.close()));
    throw e;
  }

  controller.on('state', (status) => {
    const totals = controller.totalBytes();
    emit({ event: 'state', ...status, ...totals }, describeState(status));
  });

  let statusTimer: NodeJS.Timeout | undefined;
  if (tty) {
    statusTimer = setInterval(() => {
      const s = controller.status;
      const t = controller.totalBytes();
      const where = s.state === 'connected' ? ` ${s.protocol} ${s.serverRegion}` : '';
      process.stdout.write(
        `${CLEAR_LINE}[${s.state}${where}] up ${formatBytes(t.bytesUp)} down ${formatBytes(t.bytesDown)}`,
      );
      statusLineShown = true;
    }, STATUS_LINE_INTERVAL_MS);
  }

  controller.start();
  return {
    controller,
    socks: addressOf(proxies[0] as LocalProxy),
    http: addressOf(proxies[1] as LocalProxy),
    stop: async () => {
      if (statusTimer) clearInterval(statusTimer);
      await Promise.all(proxies.map((p) => p.close()));
      await controller.stop();
    },
  };
}

/** Resolves on the first SIGINT or SIGTERM; a second one while stopping exits at once. */
export function untilSignal(): Promise<void> {
  return new Promise<void>((done) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      const force = (): void => process.exit(130);
      process.once('SIGINT', force);
      process.once('SIGTERM', force);
      done();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

export async function runClient(o: ClientRunOptions): Promise<void> {
  const running = await startClient(o);
  await untilSignal();
  await running.stop();
  process.exit(0);
}
