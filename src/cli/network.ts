// `postern network ...`: create a network, its sponsors and channels, publish its server list.
import { Command } from 'commander';
import { RealClock } from '../common/clock.ts';
import {
  initNetwork,
  openNetwork,
  addSponsor,
  addPropagationChannel,
  publishServerList,
  validateListUrl,
  type Network,
} from '../ops/index.ts';
import { collect, printResult } from './output.ts';

async function withNetwork<T>(dir: string, fn: (net: Network) => Promise<T>): Promise<T> {
  const net = await openNetwork(dir);
  try {
    return await fn(net);
  } finally {
    await net.close();
  }
}

export function networkCommand(): Command {
  const clock = new RealClock();
  const cmd = new Command('network').description(
    'create and manage a network: keys, sponsors, channels, lists',
  );

  cmd
    .command('init')
    .description('create a new network: every key it needs (private keys 0600) and its registry')
    .requiredOption('--dir <NET>', 'folder of the new network')
    .option('--name <NAME>', 'a name for the network', 'postern')
    .option('--db <URL>', 'postgres:// URL of the registry (default: SQLite file in the folder)')
    .option('--json', 'print the result as JSON')
    .action(async (o: { dir: string; name: string; db?: string; json?: boolean }) => {
      const net = await initNetwork({ dir: o.dir, name: o.name, ...(o.db ? { database: o.db } : {}), clock });
      try {
        const f = net.file;
        printResult(
          !!o.json,
          {
            dir: net.dir,
            serverEntrySignaturePublicKey: f.ServerEntrySignaturePublicKey,
            defaultPropagationChannelId: f.DefaultPropagationChannelId,
          },
          () =>
            [
              `created network "${f.Name}" in ${net.dir}`,
              `  server entry signing key: ${f.ServerEntrySignaturePublicKey}`,
              `  default propagation channel: ${f.DefaultPropagationChannelId}`,
              `next: postern network sponsor add --dir ${o.dir} --name NAME`,
            ].join('\n'),
        );
      } finally {
        await net.close();
      }
    });

  const sponsor = cmd.command('sponsor').description('partners who distribute the client');
  sponsor
    .command('add')
    .description('add a sponsor with its home pages and the domain regexes used for per-domain byte counts')
    .requiredOption('--dir <NET>', 'the network folder')
    .requiredOption('--name <NAME>', 'the sponsor name')
    .option('--id <ID>', '16 hex digits (default: generated)')
    .option('--home-page <[RR=]URL>', 'a home page, for region RR or for all (repeatable)', collect, [])
    .option(
      '--domain-regex <REGEX=NAME>',
      'count bytes of matching hosts under NAME (repeatable)',
      collect,
      [],
    )
    .option('--json', 'print the result as JSON')
    .action(
      async (o: {
        dir: string;
        name: string;
        id?: string;
        homePage: string[];
        domainRegex: string[];
        json?: boolean;
      }) =>
        withNetwork(o.dir, async (net) => {
          const s = await addSponsor(
            net.store,
            {
              ...(o.id ? { id: o.id } : {}),
              name: o.name,
              homePages: o.homePage,
              domainRegexes: o.domainRegex,
            },
            clock,
          );
          printResult(!!o.json, s, () => `added sponsor ${s.id} (${s.name})`);
        }),
    );
  sponsor
    .command('list')
    .description('list sponsors')
    .requiredOption('--dir <NET>', 'the network folder')
    .option('--json', 'print the result as JSON')
    .action(async (o: { dir: string; json?: boolean }) =>
      withNetwork(o.dir, async (net) => {
        const list = await net.store.listSponsors();
        printResult(!!o.json, list, () =>
          list.length
            ? list
                .map(
                  (s) =>
                    `${s.id}  ${s.name}  home pages: ${s.homePages.length}  regexes: ${s.domainRegexes.length}`,
                )
                .join('\n')
            : 'no sponsors',
        );
      }),
    );

  const channel = cmd
    .command('channel')
    .description('propagation channels (how a client build reaches users)');
  channel
    .command('add')
    .description('add a propagation channel')
    .requiredOption('--dir <NET>', 'the network folder')
    .requiredOption('--name <NAME>', 'the channel name')
    .option('--id <ID>', '16 hex digits (default: generated)')
    .option('--json', 'print the result as JSON')
    .action(async (o: { dir: string; name: string; id?: string; json?: boolean }) =>
      withNetwork(o.dir, async (net) => {
        const c = await addPropagationChannel(
          net.store,
          { ...(o.id ? { id: o.id } : {}), name: o.name },
          clock,
        );
        printResult(!!o.json, c, () => `added propagation channel ${c.id} (${c.name})`);
      }),
    );
  channel
    .command('list')
    .description('list propagation channels')
    .requiredOption('--dir <NET>', 'the network folder')
    .option('--json', 'print the result as JSON')
    .action(async (o: { dir: string; json?: boolean }) =>
      withNetwork(o.dir, async (net) => {
        const list = await net.store.listPropagationChannels();
        printResult(!!o.json, list, () => list.map((c) => `${c.id}  ${c.name}`).join('\n'));
      }),
    );

  cmd
    .command('publish')
    .description('sign the remote server list and write it to a folder or to s3://BUCKET/PREFIX')
    .requiredOption('--dir <NET>', 'the network folder')
    .requiredOption('--out <DIR|s3://BUCKET/PREFIX>', 'where to write server_list and server_list_compressed')
    .option('--s3-endpoint <URL>', 'S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)')
    .option('--s3-region <REGION>', 'S3 region (default: AWS_REGION, else us-east-1)')
    .option('--url <URL>', 'record the URL clients fetch the compressed list from (repeatable)', collect, [])
    .option('--json', 'print the result as JSON')
    .action(
      async (o: {
        dir: string;
        out: string;
        s3Endpoint?: string;
        s3Region?: string;
        url: string[];
        json?: boolean;
      }) =>
        withNetwork(o.dir, async (net) => {
          const r = await publishServerList(net, o.out, clock, {
            ...(o.s3Endpoint ? { endpoint: o.s3Endpoint } : {}),
            ...(o.s3Region ? { region: o.s3Region } : {}),
          });
          if (o.url.length) {
            o.url.forEach(validateListUrl);
            net.saveFile({
              ...net.file,
              RemoteServerListURLs: [...new Set([...net.file.RemoteServerListURLs, ...o.url])],
            });
          }
          printResult(!!o.json, r, () =>
            [`published ${r.serverCount} server entries`, ...r.written.map((w) => `  ${w}`)].join('\n'),
          );
        }),
    );
  return cmd;
}
