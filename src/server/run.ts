// Runs a tunnel server from its config file: GeoIP, the event spool, the listeners; stops cleanly on a signal.
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { loadServerConfig, type ServerConfig } from '../protocol/server-config.ts';
import { openGeoIp } from './geoip.ts';
import { EventSpoolWriter, type SpoolEvent } from './event-spool.ts';
import { TunnelServer } from './tunnel-server.ts';

export interface RunningServer {
  server: TunnelServer;
  config: ServerConfig;
  ports: Record<string, number>;
  stop(): Promise<void>;
}

export { loadServerConfig };

/** Something that runs beside the server while it runs (the stats shipper); layers above server/ supply it. */
export type ServerSidecar = (config: ServerConfig, configDir: string) => { stop(): Promise<void> } | null;

export async function runServer(opts: {
  configFile: string;
  allowDestinations?: string[];
  clock: Clock;
  log: Logger;
  sidecar?: ServerSidecar;
  /** How often bytes-per-domain buckets are written (`postern up` shortens it so reports fill quickly) */
  domainBytesPeriodMs?: number;
  /** How often a server_load event is written (`postern up` shortens it too) */
  loadPeriodMs?: number;
}): Promise<RunningServer> {
  const configFile = resolve(opts.configFile);
  const config = loadServerConfig(configFile);
  const configDir = dirname(configFile);
  const at = (p: string) => (isAbsolute(p) ? p : join(configDir, p));
  const geoip = await openGeoIp({
    files: config.GeoIPDatabaseFilenames.map(at),
    clock: opts.clock,
    logger: opts.log,
  });
  const spool = await EventSpoolWriter.open({
    dir: at(config.SpoolDirectory),
    clock: opts.clock,
    logger: opts.log,
  });
  const server = new TunnelServer({
    config,
    configDir,
    geoip,
    events: { record: (ev) => spool.record(ev as SpoolEvent) },
    clock: opts.clock,
    log: opts.log,
    ...(opts.allowDestinations ? { allowDestinations: opts.allowDestinations } : {}),
    ...(opts.domainBytesPeriodMs ? { domainBytesPeriodMs: opts.domainBytesPeriodMs } : {}),
    ...(opts.loadPeriodMs ? { loadPeriodMs: opts.loadPeriodMs } : {}),
  });
  let ports: Record<string, number>;
  try {
    ports = await server.start();
  } catch (e) {
    await spool.close();
    throw e;
  }
  let sidecar: { stop(): Promise<void> } | null = null;
  try {
    sidecar = opts.sidecar ? opts.sidecar(config, configDir) : null;
  } catch (e) {
    await server.stop();
    await spool.close();
    throw e;
  }
  return {
    server,
    config,
    ports,
    // The sidecar (the shipper) stops last, so it can send the events the shutdown itself wrote.
    stop: async () => {
      await server.stop();
      await spool.close();
      await sidecar?.stop();
    },
  };
}
