// `postern stats ...`: the statistics side of a tunnel server. `stats ship` runs the shipper as its own process
// (the spool's events go to the back office named in server.json); `server run` runs the same shipper in
// process through startServerShipper.
import { tuneForLongRunning } from '../common/tiering.ts';
import { dirname, resolve } from 'node:path';
import { Command } from 'commander';
import { RealClock, type Clock } from '../common/clock.ts';
import { PosternError } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/logger.ts';
import { loadServerConfig, type ServerConfig } from '../protocol/server-config.ts';
import { shipperForServer } from '../stats/shipper-config.ts';
import type { StatsShipper } from '../stats/shipper.ts';
import { printResult } from './output.ts';
import { statsReportCommand } from './stats-report.ts';
import { statsPurgeCommand } from './stats-purge.ts';

/**
 * Starts the shipper beside a running server when its config names a back office (else null). Stopping it
 * drains: one last pass after the server has closed its spool, so a clean shutdown leaves nothing behind.
 */
export function startServerShipper(
  config: ServerConfig,
  configDir: string,
  clock: Clock,
  log: Logger,
): { shipper: StatsShipper; stop(): Promise<void> } | null {
  const shipper = shipperForServer(config, configDir, { clock, log });
  if (!shipper) {
    log.info('no StatsBackOfficeURL in the server config: events stay in the local spool');
    return null;
  }
  shipper.start();
  log.info('stats shipper started');
  return {
    shipper,
    stop: async () => {
      const r = await shipper.drain();
      if (r.failure)
        log.warn(
          `stats shipper stopped with events left in the spool (${r.failure}); they ship on the next start`,
        );
    },
  };
}

export function statsCommand(): Command {
  const cmd = new Command('stats').description('usage statistics');
  cmd.addCommand(statsReportCommand());
  cmd.addCommand(statsPurgeCommand());
  cmd
    .command('ship')
    .description("send a tunnel server's event spool to the back office named in its config; Ctrl-C stops it")
    .requiredOption('--config <FILE>', "the server's server.json")
    .option(
      '--once',
      'ship what is in the spool now, then exit (non-zero if the back office could not take it)',
    )
    .option('--json', 'with --once, print the result as JSON')
    .action(async (o: { config: string; once?: boolean; json?: boolean }) => {
      if (!o.once) tuneForLongRunning();
      const clock = new RealClock();
      const log = createLogger({ name: 'stats-ship' });
      const configFile = resolve(o.config);
      const config = loadServerConfig(configFile);
      const shipper = shipperForServer(config, dirname(configFile), { clock, log });
      if (!shipper) {
        throw new PosternError(
          'BAD_CONFIG',
          `${configFile} names no back office: set StatsBackOfficeURL and StatsBackOfficeCertificate ` +
            '(or generate the server with --backoffice-url and --backoffice-cert)',
        );
      }
      if (o.once) {
        let report;
        try {
          report = await shipper.shipOnce();
        } finally {
          await shipper.stop();
        }
        printResult(
          !!o.json,
          report,
          () =>
            `shipped ${report.events} events in ${report.batches} batches; ` +
            `${report.filesDeleted} files done, ${report.filesRejected} set aside` +
            (report.failure ? `; stopped: ${report.failure}` : ''),
        );
        if (report.failure) process.exitCode = 1;
        return;
      }
      shipper.start();
      process.stdout.write(`stats shipper for ${config.HostID} running\n`);
      await new Promise<void>((res) => {
        process.once('SIGINT', () => res());
        process.once('SIGTERM', () => res());
      });
      await shipper.stop();
      const m = shipper.metrics();
      log.info(
        { batches: m.batchesSent, events: m.eventsSent, bytes: m.bytesSent, retries: m.retries },
        'stats shipper stopped',
      );
    });
  return cmd;
}
