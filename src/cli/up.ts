// `postern up`: a whole network on one machine on the embedded defaults. On first run it creates the data
// folder (network keys, a sponsor, a loopback server, the back office's TLS identity, a published list, a client
// config); every run then starts the back office (statistics on SQLite), the tunnel server with its stats
// shipper, serves the signed list, and runs the client with its SOCKS5 and HTTP proxies.
import { tuneForLongRunning } from '../common/tiering.ts';
import { DEFAULT_DATA_DIR } from './defaults.ts';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { collect, parseHostPort } from './output.ts';
import { RealClock } from '../common/clock.ts';
import { PosternError } from '../common/errors.ts';
import { createLogger } from '../common/logger.ts';
import { runServer } from '../server/run.ts';
import { startClient, untilSignal, DEFAULT_SOCKS_ADDRESS, DEFAULT_HTTP_ADDRESS } from './client-run.ts';
import { writeJsonAtomic, PRIVATE_FILE_MODE } from '../common/files.ts';
import { freePort } from '../common/free-port.ts';
import type { Clock } from '../common/clock.ts';
import {
  BACKOFFICE_CONFIG_FILE,
  backofficePaths,
  certificateNames,
  ensureTlsIdentity,
  loadBackofficeConfig,
  runBackoffice,
} from '../backoffice/index.ts';
import { openStatsStore } from '../stats/sql-stats-store.ts';
import { generateStatsKey, recordStatsKey } from '../stats/stats-key.ts';
import { startServerShipper } from './stats.ts';
import {
  initNetwork,
  openNetwork,
  addSponsor,
  generateServer,
  publishServerList,
  makeClientConfig,
  startListServer,
  NETWORK_FILE,
  SERVER_CONFIG_FILE,
} from '../ops/index.ts';

export { DEFAULT_DATA_DIR };
export const LOCAL_SPONSOR_ID = '0000000000000001';
export const LOCAL_SERVER_REGION = 'XX';
export const DEFAULT_BACKOFFICE_ADDRESS = '127.0.0.1:8443';
/** `postern up` rolls statistics up and writes domain buckets often, so a report shows a few curls at once. */
export const UP_ROLLUP_INTERVAL_MS = 10_000;
export const UP_DOMAIN_BYTES_PERIOD_MS = 10_000;
export const UP_LOAD_PERIOD_MS = 10_000;
/** The client's status requests (bytes per domain) under up: every 10 s rather than every 5 to 10 minutes. */
export const UP_STATUS_PERIOD_MS = 10_000;

interface UpOptions {
  data: string;
  lists: string;
  backoffice: string;
  socks: string;
  http: string;
  allowDestination: string[];
  json?: boolean;
}

export interface LocalBackoffice {
  configFile: string;
  url: string;
  certPem: string;
}

/**
 * The back office's config (listening where asked) and TLS identity under DATA/backoffice; made on first run,
 * the address updated on later ones.
 */
export function backofficeSetup(dataDir: string, listen: string, clock: Clock): LocalBackoffice {
  const { host, port } = parseHostPort(listen, '--backoffice');
  const dir = join(dataDir, 'backoffice');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const configFile = join(dir, BACKOFFICE_CONFIG_FILE);
  const previous: Record<string, unknown> = existsSync(configFile)
    ? (JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>)
    : { RollupIntervalMs: UP_ROLLUP_INTERVAL_MS };
  writeJsonAtomic(configFile, {
    ...previous,
    NetworkDirectory: '../network',
    ListenAddress: host,
    ListenPort: port,
  });
  const config = loadBackofficeConfig(configFile, {}, {});
  const paths = backofficePaths(config, dir);
  const tls = ensureTlsIdentity({
    keyFile: paths.tlsKeyFile,
    certFile: paths.tlsCertFile,
    names: certificateNames(host, []),
    clock,
  });
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return { configFile, url: `https://${urlHost}:${port}`, certPem: tls.certPem };
}

export async function firstRunSetup(
  dataDir: string,
  listUrl: string,
  backoffice?: LocalBackoffice,
): Promise<void> {
  const clock = new RealClock();
  const netDir = join(dataDir, 'network');
  const net = existsSync(join(netDir, NETWORK_FILE))
    ? await openNetwork(netDir)
    : await initNetwork({ dir: netDir, name: 'postern-local', clock });
  try {
    if (!(await net.store.getSponsor(LOCAL_SPONSOR_ID))) {
      await addSponsor(
        net.store,
        {
          id: LOCAL_SPONSOR_ID,
          name: 'Local',
          homePages: [],
          domainRegexes: ['^(.*\\.)?localhost$=localhost'],
        },
        clock,
      );
    }
    const serverDir = join(dataDir, 'server');
    if (!existsSync(join(serverDir, SERVER_CONFIG_FILE))) {
      const host = '127.0.0.1';
      await generateServer(
        net,
        {
          ip: host,
          out: serverDir,
          protocols: ['OSSH', 'SSH'],
          ports: { OSSH: await freePort(host), SSH: await freePort(host) },
          hostId: 'local-1',
          // ISO 3166's user-assigned code: a loopback server has no country.
          region: LOCAL_SERVER_REGION,
          ...(backoffice ? { backOfficeUrl: backoffice.url, backOfficeCertificate: backoffice.certPem } : {}),
        },
        clock,
      );
    } else if (backoffice) {
      pointServerAtBackoffice(join(serverDir, SERVER_CONFIG_FILE), net.dir, backoffice);
    }
    await publishServerList(net, join(dataDir, 'published'), clock);
    writeJsonAtomic(
      join(dataDir, 'client.json'),
      await makeClientConfig(net, { sponsorId: LOCAL_SPONSOR_ID, listUrls: [listUrl] }),
    );
  } finally {
    await net.close();
  }
}

/** A data folder from an older run, or a back office moved to another port: the server follows it. */
function pointServerAtBackoffice(configFile: string, netDir: string, bo: LocalBackoffice): void {
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  const hostId = String(config['HostID']);
  let changed = false;
  if (typeof config['StatsShipperKey'] !== 'string') {
    config['StatsShipperKey'] = generateStatsKey();
    recordStatsKey(netDir, hostId, config['StatsShipperKey'] as string);
    changed = true;
  }
  if (config['StatsBackOfficeURL'] !== bo.url || config['StatsBackOfficeCertificate'] !== bo.certPem) {
    config['StatsBackOfficeURL'] = bo.url;
    config['StatsBackOfficeCertificate'] = bo.certPem;
    changed = true;
  }
  if (changed) writeJsonAtomic(configFile, config, PRIVATE_FILE_MODE);
}

export function upCommand(): Command {
  return new Command('up')
    .description(
      'run a whole network on this machine on the embedded defaults (creates the data folder on first run)',
    )
    .option('--data <DIR>', 'data folder', DEFAULT_DATA_DIR)
    .option('--socks <HOST:PORT>', 'local SOCKS5 proxy', DEFAULT_SOCKS_ADDRESS)
    .option('--http <HOST:PORT>', 'local HTTP proxy', DEFAULT_HTTP_ADDRESS)
    .option('--lists <HOST:PORT>', 'where published server lists are served', '127.0.0.1:8081')
    .option(
      '--backoffice <HOST:PORT>',
      'the back office (statistics ingest and reports)',
      DEFAULT_BACKOFFICE_ADDRESS,
    )
    .option(
      '--allow-destination <CIDR>',
      'let the server forward to this loopback/private range (repeatable)',
      collect,
      [],
    )
    .option('--json', 'client state lines as JSON')
    .action(async (o: UpOptions) => {
      tuneForLongRunning();
      const log = createLogger({ name: 'up' });
      const clock = new RealClock();
      const dataDir = resolve(o.data);
      mkdirSync(dataDir, { recursive: true });
      parseHostPort(o.socks, '--socks');
      parseHostPort(o.http, '--http');
      const lists = parseHostPort(o.lists, '--lists');
      const listUrlHost = lists.host.includes(':') ? `[${lists.host}]` : lists.host;
      const bo = backofficeSetup(dataDir, o.backoffice, clock);
      await firstRunSetup(dataDir, `http://${listUrlHost}:${lists.port}/server_list_compressed`, bo);
      const backoffice = await runBackoffice({
        configFile: bo.configFile,
        clock,
        log,
        openStore: (target, opts) => openStatsStore(target, opts),
      });
      const server = await runServer({
        configFile: join(dataDir, 'server', SERVER_CONFIG_FILE),
        allowDestinations: o.allowDestination,
        clock,
        log,
        sidecar: (config, configDir) => startServerShipper(config, configDir, clock, log),
        domainBytesPeriodMs: UP_DOMAIN_BYTES_PERIOD_MS,
        loadPeriodMs: UP_LOAD_PERIOD_MS,
      }).catch(async (e: unknown) => {
        await backoffice.stop();
        throw e;
      });
      const listServer = await startListServer(join(dataDir, 'published'), lists.host, lists.port).catch(
        async (e: unknown) => {
          await server.stop();
          await backoffice.stop();
          throw e;
        },
      );
      const client = await startClient({
        config: join(dataDir, 'client.json'),
        socks: o.socks,
        http: o.http,
        data: join(dataDir, 'client'),
        statusPeriodMs: UP_STATUS_PERIOD_MS,
        ...(o.json ? { json: true } : {}),
      }).catch(async (e: unknown) => {
        await Promise.all([server.stop(), listServer.close()]);
        await backoffice.stop();
        throw e;
      });
      process.stdout.write(
        [
          `postern is up (data: ${dataDir})`,
          `  SOCKS5 proxy: ${client.socks}   HTTP proxy: ${client.http}`,
          `  tunnel server: ${Object.entries(server.ports)
            .map(([p, n]) => `${p} on 127.0.0.1:${n}`)
            .join(', ')}`,
          `  remote server list: ${listServer.url}server_list_compressed`,
          `  back office: ${bo.url} (statistics: postern stats report --data ${o.data} --date today)`,
          `  try: curl --socks5-hostname ${client.socks} http://example.org/  (the server refuses loopback and`,
          '       private destinations unless --allow-destination names them)',
          'press Ctrl-C to stop',
          '',
        ].join('\n'),
      );
      await untilSignal();
      // The client's last status report, then the server's closing events, shipped before the back office stops.
      await client.stop();
      await Promise.all([server.stop(), listServer.close()]);
      await backoffice.stop();
      log.info('stopped');
      process.exit(0);
    });
}
