// `postern backoffice ...`: set up and run the back office service (statistics ingest and reports over HTTPS).
import { tuneForLongRunning } from '../common/tiering.ts';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { RealClock } from '../common/clock.ts';
import { PosternError } from '../common/errors.ts';
import { writeJsonAtomic } from '../common/files.ts';
import { createLogger } from '../common/logger.ts';
import { NETWORK_FILE } from '../ops/index.ts';
import { openStatsStore } from '../stats/sql-stats-store.ts';
import {
  BACKOFFICE_CONFIG_FILE,
  BackofficeConfigSchema,
  backofficePaths,
  certificateNames,
  DEFAULT_LISTEN_ADDRESS,
  DEFAULT_LISTEN_PORT,
  ensureOperatorToken,
  ensureTlsIdentity,
  runBackoffice,
} from '../backoffice/index.ts';
import { untilSignal } from './client-run.ts';
import { collect, parseHostPort, printResult } from './output.ts';

function urlOf(host: string, port: number): string {
  return `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export function backofficeCommand(): Command {
  const cmd = new Command('backoffice').description(
    'the back office: statistics ingest and reports over HTTPS',
  );
  cmd
    .command('init')
    .description(`write DIR/${BACKOFFICE_CONFIG_FILE}, a self-signed TLS identity and the operator token`)
    .requiredOption('--data <DIR>', 'folder for the config, TLS identity, token and statistics database')
    .requiredOption(
      '--network <NET>',
      'the network folder (its stats-keys.json names the servers that may ship)',
    )
    .option(
      '--listen <HOST:PORT>',
      `address to serve on (default ${DEFAULT_LISTEN_ADDRESS}:${DEFAULT_LISTEN_PORT})`,
    )
    .option(
      '--tls-name <NAME>',
      'a DNS name or IP address servers use to reach it, put in the certificate (repeatable)',
      collect,
      [],
    )
    .option('--stats-database <TARGET>', 'a SQLite file or a postgres:// URL (default DIR/stats.sqlite)')
    .option('--json', 'print the result as JSON')
    .action(
      async (o: {
        data: string;
        network: string;
        listen?: string;
        tlsName: string[];
        statsDatabase?: string;
        json?: boolean;
      }) => {
        const dataDir = resolve(o.data);
        const networkDir = resolve(o.network);
        const configFile = join(dataDir, BACKOFFICE_CONFIG_FILE);
        if (!existsSync(join(networkDir, NETWORK_FILE))) {
          throw new PosternError(
            'BAD_ARGUMENT',
            `--network ${o.network} is not a network folder (no ${NETWORK_FILE}); make one with "postern network init"`,
          );
        }
        if (existsSync(configFile)) {
          throw new PosternError(
            'ALREADY_EXISTS',
            `${configFile} exists already; run it with "postern backoffice run --config ${configFile}"`,
          );
        }
        const listen = o.listen ? parseHostPort(o.listen, '--listen') : undefined;
        const config = BackofficeConfigSchema.parse({
          DataDirectory: '.',
          NetworkDirectory: networkDir,
          ...(listen ? { ListenAddress: listen.host, ListenPort: listen.port } : {}),
          ...(o.tlsName.length ? { TLSNames: o.tlsName } : {}),
          ...(o.statsDatabase ? { StatsDatabase: o.statsDatabase } : {}),
        });
        const paths = backofficePaths(config, dataDir);
        mkdirSync(dataDir, { recursive: true });
        const tls = ensureTlsIdentity({
          keyFile: paths.tlsKeyFile,
          certFile: paths.tlsCertFile,
          names: certificateNames(config.ListenAddress, config.TLSNames),
          clock: new RealClock(),
        });
        ensureOperatorToken(paths.operatorTokenFile);
        // Only what was chosen goes in the file: defaults stay defaults, so a later version can improve them.
        writeJsonAtomic(configFile, {
          ConfigVersion: 1,
          DataDirectory: '.',
          NetworkDirectory: networkDir,
          ListenAddress: config.ListenAddress,
          ListenPort: config.ListenPort,
          ...(o.tlsName.length ? { TLSNames: o.tlsName } : {}),
          ...(o.statsDatabase ? { StatsDatabase: o.statsDatabase } : {}),
        });
        const url = urlOf(config.ListenAddress, config.ListenPort);
        printResult(
          !!o.json,
          {
            configPath: configFile,
            url,
            certificatePath: paths.tlsCertFile,
            fingerprint256: tls.fingerprint256,
            operatorTokenFile: paths.operatorTokenFile,
          },
          () =>
            [
              `back office set up in ${dataDir}`,
              `  config: ${configFile}`,
              `  URL: ${url}`,
              `  TLS certificate (give it to servers: server generate --backoffice-cert): ${paths.tlsCertFile}`,
              `  certificate SHA-256: ${tls.fingerprint256}`,
              `  operator token (private, 0600): ${paths.operatorTokenFile}`,
              `run it with: postern backoffice run --config ${configFile}`,
            ].join('\n'),
        );
      },
    );
  cmd
    .command('run')
    .description('serve statistics ingest and reports; Ctrl-C stops it')
    .requiredOption('--config <FILE>', `the back office's ${BACKOFFICE_CONFIG_FILE}`)
    .option('--listen <HOST:PORT>', 'address to serve on (overrides the config)')
    .option('--data <DIR>', 'data folder (overrides the config)')
    .action(async (o: { config: string; listen?: string; data?: string }) => {
      tuneForLongRunning();
      const listen = o.listen ? parseHostPort(o.listen, '--listen') : undefined;
      const clock = new RealClock();
      const log = createLogger({ name: 'backoffice' });
      const running = await runBackoffice({
        configFile: o.config,
        flags: {
          ListenAddress: listen?.host,
          ListenPort: listen?.port,
          DataDirectory: o.data === undefined ? undefined : resolve(o.data),
        },
        clock,
        log,
        openStore: (target, so) =>
          openStatsStore(target, { clock: so.clock, retentionDays: so.retentionDays }),
      });
      // The address goes to stdout: the logger would (rightly) redact it as an IP address.
      log.info({ port: running.port, fingerprint256: running.fingerprint256 }, 'back office listening');
      process.stdout.write(
        `back office listening on ${running.url} certificate SHA-256 ${running.fingerprint256}\n`,
      );
      await untilSignal();
      await running.stop();
      log.info('back office stopped');
      process.exit(0);
    });
  return cmd;
}
