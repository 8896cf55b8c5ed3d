// The back office HTTPS service: one fastify instance over the TLS identity, mounting the statistics routes and
// /healthz, with the scheduled rollup and retention jobs beside it. `startBackoffice` takes every dependency
// (store, key lookup, token, clock, logger) so tests run it on loopback with in-memory fakes; `runBackoffice`
// builds them from BO.json. Fastify's own logger stays off: it would log peer addresses and URLs.
import Fastify, { type FastifyInstance, type FastifyError } from 'fastify';
import type { AddressInfo } from 'node:net';
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { PosternError, isPosternError, describeError } from '../common/errors.ts';
import { BATCH_CONTENT_TYPE, MAX_BATCH_BYTES } from '../stats/ingest-protocol.ts';
import { DEFAULT_SPONSOR_K, type StatsStore } from '../stats/store.ts';
import type { HostKeyLookup } from './host-keys.ts';
import { StatsKeysFileLookup } from './host-keys.ts';
import { statsRoutes, refusal } from './stats-routes.ts';
import { StatsJobs } from './stats-jobs.ts';
import { sponsorRoute } from './sponsor-route.ts';
import {
  backofficePaths,
  configBase,
  loadBackofficeConfig,
  type BackofficeConfig,
  type BackofficePaths,
} from './config.ts';
import { certificateNames, ensureOperatorToken, ensureTlsIdentity } from './identity.ts';

export const HEALTH_PATH = '/healthz';
/** A request (headers and body) must arrive within this; a slow sender is cut off, not waited for. */
export const REQUEST_TIMEOUT_MS = 60_000;
export const KEEP_ALIVE_TIMEOUT_MS = 10_000;
export const MAX_HEADER_BYTES = 16 * 1024;
/** Connections held at once; Node closes any beyond this as soon as they are accepted. */
export const MAX_CONNECTIONS = 1024;

export interface BackofficeOptions {
  listen: { host: string; port: number };
  tls: { keyPem: string; certPem: string; fingerprint256: string };
  store: StatsStore;
  hostKeys: HostKeyLookup;
  operatorToken: string;
  clock: Clock;
  log: Logger;
  retentionDays: number;
  rollupIntervalMs: number;
  /** Sponsor reports never use a smaller k than this (DEFAULT_SPONSOR_K). */
  sponsorMinimumK?: number;
  /** When set, sponsor reports always carry noise with at most this epsilon. */
  sponsorMaximumEpsilon?: number;
  /** Run the scheduled rollup and retention jobs (default true). */
  jobs?: boolean;
}

export interface RunningBackoffice {
  app: FastifyInstance;
  /** Where it listens (the port the system chose when 0 was asked) */
  host: string;
  port: number;
  url: string;
  fingerprint256: string;
  jobs: StatsJobs;
  stop(): Promise<void>;
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

export async function startBackoffice(o: BackofficeOptions): Promise<RunningBackoffice> {
  const app = Fastify({
    https: { key: o.tls.keyPem, cert: o.tls.certPem, maxHeaderSize: MAX_HEADER_BYTES },
    logger: false,
    trustProxy: false,
    bodyLimit: MAX_BATCH_BYTES,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  app.server.maxConnections = MAX_CONNECTIONS;

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return refusal(reply, 413, 'too-large', `a batch is at most ${MAX_BATCH_BYTES} bytes`);
    }
    if (err.validation) return refusal(reply, 400, 'malformed', err.message);
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return refusal(reply, 400, 'malformed', `Content-Type must be ${BATCH_CONTENT_TYPE}`);
    }
    const code = err.statusCode ?? 500;
    if (code >= 400 && code < 500) return refusal(reply, 400, 'malformed', 'bad request');
    // Our own errors say nothing of the data; anything else might quote it, so only its kind is logged.
    o.log.error({ code: err.code }, `request failed: ${isPosternError(err) ? describeError(err) : err.name}`);
    return reply.code(500).send({ status: 'error', error: 'internal error' });
  });
  app.setNotFoundHandler((_req, reply) =>
    reply.code(404).send({ status: 'not-found', error: 'no such route' }),
  );

  app.get(HEALTH_PATH, async () => ({ status: 'ok' }));
  await app.register(statsRoutes, {
    store: o.store,
    hostKeys: o.hostKeys,
    operatorToken: o.operatorToken,
    log: o.log,
  });
  await app.register(sponsorRoute, {
    store: o.store,
    operatorToken: o.operatorToken,
    log: o.log,
    minimumK: o.sponsorMinimumK ?? DEFAULT_SPONSOR_K,
    ...(o.sponsorMaximumEpsilon !== undefined ? { maximumEpsilon: o.sponsorMaximumEpsilon } : {}),
  });

  try {
    await app.listen({ host: o.listen.host, port: o.listen.port });
  } catch (e) {
    await app.close();
    const why = (e as NodeJS.ErrnoException).code ?? describeError(e);
    throw new PosternError(
      'IO',
      `cannot listen on ${urlHost(o.listen.host)}:${o.listen.port} (${why}): choose another address with --listen or ListenAddress/ListenPort`,
      { cause: e },
    );
  }
  const addr = app.server.address() as AddressInfo;
  const jobs = new StatsJobs({
    store: o.store,
    clock: o.clock,
    log: o.log,
    retentionDays: o.retentionDays,
    rollupIntervalMs: o.rollupIntervalMs,
  });
  if (o.jobs !== false) jobs.start();

  let stopping: Promise<void> | undefined;
  return {
    app,
    host: addr.address,
    port: addr.port,
    url: `https://${urlHost(addr.address)}:${addr.port}`,
    fingerprint256: o.tls.fingerprint256,
    jobs,
    stop: () =>
      (stopping ??= (async () => {
        await jobs.stop();
        await app.close();
      })()),
  };
}

export type OpenStatsStore = (
  target: string,
  opts: { clock: Clock; log: Logger; retentionDays: number },
) => Promise<StatsStore>;

export interface RunBackofficeOptions {
  configFile?: string;
  /** Config values from command-line flags (highest precedence) */
  flags?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  clock: Clock;
  log: Logger;
  openStore: OpenStatsStore;
}

export interface RunningBackofficeService extends RunningBackoffice {
  config: BackofficeConfig;
  paths: BackofficePaths;
}

/** Loads BO.json, makes the TLS identity and operator token on first run, opens the store, starts serving. */
export async function runBackoffice(o: RunBackofficeOptions): Promise<RunningBackofficeService> {
  const config = loadBackofficeConfig(o.configFile, o.flags ?? {}, o.env);
  const paths = backofficePaths(config, configBase(o.configFile));
  const tls = ensureTlsIdentity({
    keyFile: paths.tlsKeyFile,
    certFile: paths.tlsCertFile,
    names: certificateNames(config.ListenAddress, config.TLSNames),
    clock: o.clock,
  });
  if (tls.created) o.log.info({ fingerprint256: tls.fingerprint256 }, 'created a self-signed TLS identity');
  const { token, created } = ensureOperatorToken(paths.operatorTokenFile);
  if (created) o.log.info(`created the operator token in ${paths.operatorTokenFile}`);
  const store = await o.openStore(paths.statsDatabase, {
    clock: o.clock,
    log: o.log,
    retentionDays: config.RetentionDays,
  });
  try {
    const hostKeys = new StatsKeysFileLookup(paths.networkDir, o.log);
    await hostKeys.hostCount(); // says at start whether the registry is there and how many servers it names
    const running = await startBackoffice({
      listen: { host: config.ListenAddress, port: config.ListenPort },
      tls,
      store,
      hostKeys,
      operatorToken: token,
      clock: o.clock,
      log: o.log,
      retentionDays: config.RetentionDays,
      rollupIntervalMs: config.RollupIntervalMs,
      sponsorMinimumK: config.SponsorK,
      ...(config.SponsorEpsilon !== undefined ? { sponsorMaximumEpsilon: config.SponsorEpsilon } : {}),
    });
    const stop = running.stop;
    let closing: Promise<void> | undefined;
    return {
      ...running,
      config,
      paths,
      stop: () =>
        (closing ??= (async () => {
          await stop();
          await store.close();
        })()),
    };
  } catch (e) {
    await store.close();
    throw e;
  }
}
