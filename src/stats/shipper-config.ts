// From a tunnel server's config (server.json) to a running stats shipper: the shipper runs when the config
// names a back office; a config that names one but lacks the key or the certificate is an error, not a silent
// "no statistics".
import { isAbsolute, join } from 'node:path';
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { PosternError } from '../common/errors.ts';
import type { ServerConfig } from '../protocol/server-config.ts';
import { StatsShipper } from './shipper.ts';

/** True when the config asks for shipping (names a back office). */
export function statsShippingConfigured(config: ServerConfig): boolean {
  return !!config.StatsBackOfficeURL;
}

/** A shipper for this server, or null when its config names no back office. */
export function shipperForServer(
  config: ServerConfig,
  configDir: string,
  deps: { clock: Clock; log: Logger },
): StatsShipper | null {
  if (!statsShippingConfigured(config)) return null;
  const missing = [
    config.StatsShipperKey ? null : 'StatsShipperKey',
    config.StatsBackOfficeCertificate ? null : 'StatsBackOfficeCertificate',
  ].filter((x): x is string => x !== null);
  if (missing.length > 0) {
    throw new PosternError(
      'BAD_CONFIG',
      `the server config sets StatsBackOfficeURL but not ${missing.join(' or ')}; ` +
        'regenerate the server with --backoffice-url and --backoffice-cert, or add the field(s)',
    );
  }
  const spoolDir = isAbsolute(config.SpoolDirectory)
    ? config.SpoolDirectory
    : join(configDir, config.SpoolDirectory);
  try {
    return new StatsShipper({
      spoolDir,
      backOfficeUrl: config.StatsBackOfficeURL as string,
      hostId: config.HostID,
      key: config.StatsShipperKey as string,
      backOfficeCertificate: config.StatsBackOfficeCertificate as string,
      clock: deps.clock,
      logger: deps.log,
    });
  } catch (e) {
    if (e instanceof PosternError && (e.code === 'BAD_KEY' || e.code === 'BAD_CONFIG')) {
      throw new PosternError('BAD_CONFIG', `server config: ${e.message}`, { cause: e });
    }
    throw e;
  }
}
