// `postern up`: a whole network on one machine on the embedded defaults. On first run it creates the data
// folder (network keys, a sponsor, a loopback server, a published list, a client config); every run then
// starts the tunnel server, serves the signed list, and runs the client with its SOCKS5 and HTTP proxies.
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { collect, parseHostPort } from './output.ts';
import { RealClock } from '../common/clock.ts';
import { PosternError } from '../common/errors.ts';
import { createLogger } from '../common/logger.ts';
import { runServer } from '../server/run.ts';
import { startClient, untilSignal, DEFAULT_SOCKS_ADDRESS, DEFAULT_HTTP_ADDRESS } from './client-run.ts';
import { writeJsonAtomic } from '../common/files.ts';
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

export const DEFAULT_DATA_DIR = 'postern-data';
export const LOCAL_SPONSOR_ID = '0000000000000001';
export const LOCAL_SERVER_REGION = 'XX';

async function freePort(host: string): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, host, () => {
      const a = s.address();
      const p = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(p));
    });
  });
}

interface UpOptions {
  data: string;
  lists: string;
  socks: string;
  http: string;
  allowDestination: string[];
  json?: boolean;
}

export async function firstRunSetup(dataDir: string, listUrl: string): Promise<void> {
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
        },
        clock,
      );
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
      '--allow-destination <CIDR>',
      'let the server forward to this loopback/private range (repeatable)',
      collect,
      [],
    )
    .option('--json', 'client state lines as JSON')
    .action(async (o: UpOptions) => {
      const log = createLogger({ name: 'up' });
      const clock = new RealClock();
      const dataDir = resolve(o.data);
      mkdirSync(dataDir, { recursive: true });
      parseHostPort(o.socks, '--socks');
      parseHostPort(o.http, '--http');
      const lists = parseHostPort(o.lists, '--lists');
      const listUrlHost = lists.host.includes(':') ? `[${lists.host}]` : lists.host;
      await firstRunSetup(dataDir, `http://${listUrlHost}:${lists.port}/server_list_compressed`);
      const server = await runServer({
        configFile: join(dataDir, 'server', SERVER_CONFIG_FILE),
        allowDestinations: o.allowDestination,
        clock,
        log,
      });
      const listServer = await startListServer(join(dataDir, 'published'), lists.host, lists.port).catch(
        async (e: unknown) => {
          await server.stop();
          throw e;
        },
      );
      const client = await startClient({
        config: join(dataDir, 'client.json'),
        socks: o.socks,
        http: o.http,
        data: join(dataDir, 'client'),
        ...(o.json ? { json: true } : {}),
      }).catch(async (e: unknown) => {
        await Promise.all([server.stop(), listServer.close()]);
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
          `  try: curl --socks5-hostname ${client.socks} http://example.org/  (the server refuses loopback and`,
          '       private destinations unless --allow-destination names them)',
          'press Ctrl-C to stop',
          '',
        ].join('\n'),
      );
      await untilSignal();
      await client.stop();
      await Promise.all([server.stop(), listServer.close()]);
      log.info('stopped');
      process.exit(0);
    });
}
