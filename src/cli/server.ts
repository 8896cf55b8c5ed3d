// `postern server ...`: generate a server's config and signed entry.
import { tuneForLongRunning } from '../common/tiering.ts';
import { Command } from 'commander';
import { RealClock } from '../common/clock.ts';
import { createLogger } from '../common/logger.ts';
import { runServer } from '../server/run.ts';
import { openNetwork, generateServer, parsePorts } from '../ops/index.ts';
import { collect, commaList, printResult } from './output.ts';
import { readFileSync } from 'node:fs';
import { PosternError, describeError } from '../common/errors.ts';
import { startServerShipper } from './stats.ts';

export function serverCommand(): Command {
  const clock = new RealClock();
  const cmd = new Command('server').description('tunnel servers');
  cmd
    .command('generate')
    .description(
      "a new server's keys, config (SRV/server.json, 0600) and signed entry (SRV/server-entry.dat)",
    )
    .requiredOption('--network <NET>', 'the network folder')
    .requiredOption('--ip <IP>', 'the address clients dial')
    .requiredOption('--out <SRV>', 'folder for the server files')
    .option('--protocols <P,...>', 'tunnel protocols to serve (default: OSSH)', commaList)
    .option('--port <PROTOCOL=PORT>', 'listening port of a protocol (repeatable)', collect, [])
    .requiredOption('--region <RR>', "two-letter country code of the server's host, e.g. CA")
    .option('--listen <ADDRESS>', 'address to bind (default: the --ip)')
    .option('--host-id <ID>', 'name of the server in the registry (default: generated)')
    .option('--unpublished', 'keep it out of published remote server lists')
    .option('--backoffice-url <URL>', 'https://HOST:PORT of the back office that takes its statistics')
    .option('--backoffice-cert <FILE>', "the back office's certificate (PEM), the only one the server trusts")
    .option('--json', 'print the result as JSON')
    .action(
      async (o: {
        network: string;
        ip: string;
        out: string;
        protocols?: string[];
        port: string[];
        region: string;
        listen?: string;
        hostId?: string;
        unpublished?: boolean;
        backofficeUrl?: string;
        backofficeCert?: string;
        json?: boolean;
      }) => {
        const backOfficeCertificate = o.backofficeCert ? readPemFile(o.backofficeCert) : undefined;
        const net = await openNetwork(o.network);
        try {
          const g = await generateServer(
            net,
            {
              ip: o.ip,
              out: o.out,
              region: o.region,
              ports: parsePorts(o.port),
              publish: !o.unpublished,
              ...(o.protocols ? { protocols: o.protocols } : {}),
              ...(o.listen ? { listenAddress: o.listen } : {}),
              ...(o.hostId ? { hostId: o.hostId } : {}),
              ...(o.backofficeUrl ? { backOfficeUrl: o.backofficeUrl } : {}),
              ...(backOfficeCertificate ? { backOfficeCertificate } : {}),
            },
            clock,
          );
          printResult(
            !!o.json,
            {
              hostId: g.hostId,
              configPath: g.configPath,
              entryPath: g.entryPath,
              ports: g.config.TunnelProtocolPorts,
            },
            () =>
              [
                `generated server ${g.hostId}`,
                `  config (private, 0600): ${g.configPath}`,
                `  signed entry: ${g.entryPath}`,
                `  stats key recorded in the network's stats-keys.json` +
                  (g.config.StatsBackOfficeURL ? '; ships statistics to the configured back office' : ''),
                `  ports: ${Object.entries(g.config.TunnelProtocolPorts)
                  .map(([p, n]) => `${p}=${n}`)
                  .join(' ')}`,
              ].join('\n'),
          );
        } finally {
          await net.close();
        }
      },
    );
  cmd
    .command('run')
    .description('run a tunnel server from its config; Ctrl-C stops it')
    .requiredOption('--config <FILE>', "the server's server.json")
    .option(
      '--allow-destination <CIDR>',
      'let port forwards reach this loopback/private range (repeatable)',
      collect,
      [],
    )
    .action(async (o: { config: string; allowDestination: string[] }) => {
      tuneForLongRunning();
      const log = createLogger({ name: 'server' });
      const running = await runServer({
        configFile: o.config,
        allowDestinations: o.allowDestination,
        clock,
        log,
        sidecar: (config, configDir) => startServerShipper(config, configDir, clock, log),
      });
      for (const [protocol, port] of Object.entries(running.ports)) {
        log.info({ protocol, port }, `listening for ${protocol}`);
      }
      process.stdout.write(
        `server ${running.config.HostID} running: ${Object.entries(running.ports)
          .map(([p, n]) => `${p}=${n}`)
          .join(' ')}\n`,
      );
      await new Promise<void>((res) => {
        process.once('SIGINT', () => res());
        process.once('SIGTERM', () => res());
      });
      await running.stop();
      log.info('stopped');
    });
  cmd
    .command('list')
    .description('list registered servers')
    .requiredOption('--network <NET>', 'the network folder')
    .option('--json', 'print the result as JSON')
    .action(async (o: { network: string; json?: boolean }) => {
      const net = await openNetwork(o.network);
      try {
        const list = await net.store.listServers();
        printResult(!!o.json, list, () =>
          list.length
            ? list
                .map(
                  (s) =>
                    `${s.id}  ${s.ipAddress}  ${s.region}  ${s.capabilities.join(',')}${s.published ? '' : '  (unpublished)'}`,
                )
                .join('\n')
            : 'no servers',
        );
      } finally {
        await net.close();
      }
    });
  return cmd;
}

/** A certificate file is a few kilobytes; anything this big is the wrong file. */
const MAX_PEM_FILE_BYTES = 1024 * 1024;

/** Reads a PEM file named on the command line, with a message that says which flag was wrong. */
function readPemFile(path: string): string {
  try {
    const text = readFileSync(path, 'utf8');
    if (text.length > MAX_PEM_FILE_BYTES) throw new Error(`the file is over ${MAX_PEM_FILE_BYTES} bytes`);
    return text;
  } catch (e) {
    throw new PosternError('BAD_ARGUMENT', `--backoffice-cert: cannot read ${path}: ${describeError(e)}`);
  }
}
