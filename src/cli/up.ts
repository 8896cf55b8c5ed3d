// `postern up`: a whole network on one machine on the embedded defaults. On first run it creates the data
// folder (network keys, a sponsor, a loopback server, a published list, a client config); every run then
// serves what exists. The tunnel server and client proxies join here as they land.
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { RealClock } from '../common/clock.ts';
import { PosternError } from '../common/errors.ts';
import { createLogger } from '../common/logger.ts';
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

export function parseHostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535)
    throw new PosternError('BAD_ARGUMENT', `${flag} "${value}" must be HOST:PORT, e.g. 127.0.0.1:1080`);
  return { host: (m[1] ?? m[2]) as string, port };
}

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
    .option('--lists <HOST:PORT>', 'where published server lists are served', '127.0.0.1:8081')
    .option('--json', 'log as JSON lines')
    .action(async (o: UpOptions) => {
      const log = createLogger({ name: 'up' });
      const dataDir = resolve(o.data);
      mkdirSync(dataDir, { recursive: true });
      const lists = parseHostPort(o.lists, '--lists');
      const listUrlHost = lists.host.includes(':') ? `[${lists.host}]` : lists.host;
      await firstRunSetup(dataDir, `http://${listUrlHost}:${lists.port}/server_list_compressed`);
      const listServer = await startListServer(join(dataDir, 'published'), lists.host, lists.port);
      process.stdout.write(
        [
          `postern is up (data: ${dataDir})`,
          `  remote server list: ${listServer.url}server_list_compressed`,
          `  network: ${join(dataDir, 'network')}`,
          `  server config: ${join(dataDir, 'server', SERVER_CONFIG_FILE)}`,
          `  client config: ${join(dataDir, 'client.json')}`,
          '  tunnel server and client proxies: not in this release yet',
          'press Ctrl-C to stop',
          '',
        ].join('\n'),
      );
      await new Promise<void>((res) => {
        const stop = () => res();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await listServer.close();
      log.info('stopped');
    });
}
