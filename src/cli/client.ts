// `postern client ...`: make a client's configuration.
import { tuneForLongRunning } from '../common/tiering.ts';
import { Command } from 'commander';
import { writeJsonAtomic } from '../common/files.ts';
import { openNetwork, makeClientConfig } from '../ops/index.ts';
import { collect, commaList, printResult } from './output.ts';
import {
  DEFAULT_CLIENT_DATA_DIR,
  DEFAULT_HTTP_ADDRESS,
  DEFAULT_SOCKS_ADDRESS,
  runClient,
  type ClientRunOptions,
} from './client-run.ts';

export function clientCommand(): Command {
  const cmd = new Command('client').description(
    'the client: its configuration, and the tunnel with local proxies',
  );
  cmd
    .command('config')
    .description("a client's config for one sponsor: network keys, embedded signed entries, list URLs")
    .requiredOption('--network <NET>', 'the network folder')
    .requiredOption('--sponsor <ID>', 'sponsor ID')
    .option('--channel <ID>', 'propagation channel ID (default: the network default)')
    .option('--list-url <URL>', 'where the client fetches the remote server list (repeatable)', collect, [])
    .option('--max-entries <N>', 'embed at most N server entries', (v) => Number.parseInt(v, 10))
    .requiredOption('--out <FILE>', 'where to write client.json')
    .option('--json', 'print the result as JSON')
    .action(
      async (o: {
        network: string;
        sponsor: string;
        channel?: string;
        listUrl: string[];
        maxEntries?: number;
        out: string;
        json?: boolean;
      }) => {
        const net = await openNetwork(o.network);
        try {
          const config = await makeClientConfig(net, {
            sponsorId: o.sponsor,
            listUrls: o.listUrl,
            ...(o.channel ? { propagationChannelId: o.channel } : {}),
            ...(o.maxEntries !== undefined ? { maxEmbeddedEntries: o.maxEntries } : {}),
          });
          writeJsonAtomic(o.out, config);
          printResult(
            !!o.json,
            { out: o.out, embeddedEntries: config.EmbeddedServerEntries.length },
            () => `wrote ${o.out} with ${config.EmbeddedServerEntries.length} embedded server entries`,
          );
        } finally {
          await net.close();
        }
      },
    );
  cmd
    .command('run')
    .description('connect to the network and serve local SOCKS5 and HTTP proxies through the tunnel')
    .requiredOption('--config <FILE>', 'the client config (client.json)')
    .option('--socks <HOST:PORT>', 'where the SOCKS5 proxy listens', DEFAULT_SOCKS_ADDRESS)
    .option('--http <HOST:PORT>', 'where the HTTP proxy listens', DEFAULT_HTTP_ADDRESS)
    .option('--protocols <P,...>', 'use only these tunnel protocols (e.g. OSSH,SSH)', commaList)
    .option('--data <DIR>', 'where the client keeps its server list', DEFAULT_CLIENT_DATA_DIR)
    .option('--json', 'print state changes as JSON lines')
    .action((o: ClientRunOptions) => {
      tuneForLongRunning();
      return runClient(o);
    });
  return cmd;
}
