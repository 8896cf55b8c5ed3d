// A tunnel server's configuration file (SRV/server.json). Field names follow psiphond's config where the
// concept is the same (ServerIPAddress, TunnelProtocolPorts, SSHPrivateKey, ...), so operators of either
// recognise them; Postern's additions are marked below. The file holds private keys: it is written 0600.
import { z } from 'zod';
import { loadConfig } from '../common/config.ts';

const Port = z.number().int().min(1).max(65535);

export const ServerConfigSchema = z.object({
  /** Postern: format version of this file */
  ConfigVersion: z.literal(1),
  HostID: z.string().min(1),
  ServerIPAddress: z.string().min(1),
  /** Postern: address the listeners bind to (the server IP, or 0.0.0.0 / :: behind NAT) */
  ListenAddress: z.string().min(1),
  /** Postern: two-letter region of this server, as in its entry */
  Region: z.string(),
  TunnelProtocolPorts: z.record(z.string(), Port),
  /** PEM RSA private key (PKCS#1), as psiphond writes it */
  SSHPrivateKey: z.string().min(1),
  SSHServerVersion: z.string().default('SSH-2.0-Postern'),
  SSHUserName: z.string().min(1),
  SSHPassword: z.string().min(1),
  ObfuscatedSSHKey: z.string().min(1),
  /** Relative paths are resolved against the folder of the config file. */
  PsinetDatabaseFilename: z.string().default('psinet.json'),
  GeoIPDatabaseFilenames: z.array(z.string()).default([]),
  /** Postern: the signed, hex-encoded entry for this server, by tag (as psiphond's OwnEncodedServerEntries) */
  OwnEncodedServerEntries: z.record(z.string(), z.string()).default({}),
  /** Postern: CIDRs that port forwards may reach although they are loopback/private/reserved */
  AllowDestinations: z.array(z.string()).default([]),
  /** Postern: folder for the event spool; relative to the config file */
  SpoolDirectory: z.string().default('spool'),
  /** Postern: this server's stats key (base64url of 32 bytes), sent with every event batch; the network's
   * stats-keys.json holds only its SHA-256 */
  StatsShipperKey: z.string().optional(),
  /** Postern: https://HOST:PORT of the back office that takes this server's events; no shipping without it */
  StatsBackOfficeURL: z.string().optional(),
  /** Postern: the back office's TLS certificate (PEM), the only one the shipper trusts */
  StatsBackOfficeCertificate: z.string().optional(),
  /** The keys whose authorizations (e.g. speed boost) this server honours, as psiphond's config holds them */
  AccessControlVerificationKeyRing: z
    .object({
      Keys: z.array(z.object({ ID: z.string(), AccessType: z.string(), PublicKey: z.string() })).default([]),
    })
    .default({ Keys: [] }),
});

export type ServerConfig = z.infer<typeof ServerConfigSchema>;

/** Reads a server config file (POSTERN_SERVER_* environment variables and `flags` override its fields). */
export function loadServerConfig(file: string, flags: Record<string, unknown> = {}): ServerConfig {
  return loadConfig(ServerConfigSchema, { file, envPrefix: 'POSTERN_SERVER', flags });
}
