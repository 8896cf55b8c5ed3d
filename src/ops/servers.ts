// `postern server generate`: a new tunnel server's keys, config and signed entry, registered in the network.
import { randomBytes, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { PosternError } from '../common/errors.ts';
import type { Clock } from '../common/clock.ts';
import { writeFileAtomic, writeJsonAtomic, PRIVATE_FILE_MODE } from '../common/files.ts';
import { generateSshHostKey } from '../protocol/keys.ts';
import {
  encodeServerEntry,
  signServerEntry,
  serverEntryTag,
  type ServerEntryFields,
} from '../protocol/server-entry.ts';
import {
  capabilityForTunnelProtocol,
  isKnownTunnelProtocol,
  CAPABILITY_SSH_API_REQUESTS,
} from '../protocol/tunnel-protocols.ts';
import type { ServerConfig } from '../protocol/server-config.ts';
import { parseAuthorizationVerificationKey } from '../protocol/authorization.ts';
import { generateStatsKey, recordStatsKey } from '../stats/stats-key.ts';
import { buildPsinet } from './sponsors.ts';
import type { Network } from './network.ts';

export const SERVER_CONFIG_FILE = 'server.json';
export const SERVER_ENTRY_FILE = 'server-entry.dat';
export const PSINET_FILE = 'psinet.json';

/** The protocols this release can serve, and the ports used when none is given. */
export const SERVABLE_PROTOCOLS: Record<string, number> = { SSH: 2222, OSSH: 4443 };
export const DEFAULT_PROTOCOLS = ['OSSH'];

/** Lengths as psiphond generates them (hex of this many random bytes). */
const SSH_USERNAME_SUFFIX_BYTES = 8;
const SSH_PASSWORD_BYTES = 32;
const OBFUSCATED_KEY_BYTES = 32;
const WEB_SERVER_SECRET_BYTES = 32;

export interface GenerateServerInput {
  ip: string;
  protocols?: string[];
  /** Port per protocol, overriding SERVABLE_PROTOCOLS' defaults */
  ports?: Record<string, number>;
  /** Two-letter country code of the server's host */
  region: string;
  listenAddress?: string;
  hostId?: string;
  out: string;
  /** RSA modulus size of the SSH host key (tests may use a smaller one) */
  hostKeyBits?: number;
  /** Publish this server in remote server lists (default true) */
  publish?: boolean;
  /** https://HOST:PORT of the back office the server ships its events to */
  backOfficeUrl?: string;
  /** The back office's certificate (PEM) the server pins; required with backOfficeUrl */
  backOfficeCertificate?: string;
}

export interface GeneratedServer {
  hostId: string;
  configPath: string;
  entryPath: string;
  encodedEntry: string;
  config: ServerConfig;
}

export function parsePorts(args: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of args) {
    const m = /^([A-Z0-9-]+)=(\d{1,5})$/.exec(a);
    const port = m ? Number(m[2]) : NaN;
    if (!m || port < 1 || port > 65535) {
      throw new PosternError('BAD_ARGUMENT', `--port "${a}" must be PROTOCOL=PORT, e.g. OSSH=443`);
    }
    out[m[1] as string] = port;
  }
  return out;
}

export async function generateServer(
  net: Network,
  input: GenerateServerInput,
  clock: Clock,
): Promise<GeneratedServer> {
  if (!isIP(input.ip))
    throw new PosternError('BAD_ARGUMENT', `--ip "${input.ip}" is not an IPv4 or IPv6 address`);
  const protocols = input.protocols?.length ? input.protocols : DEFAULT_PROTOCOLS;
  const ports: Record<string, number> = {};
  const used = new Set<number>();
  for (const p of protocols) {
    if (!isKnownTunnelProtocol(p)) {
      throw new PosternError(
        'BAD_ARGUMENT',
        `unknown tunnel protocol "${p}"; known: ${Object.keys(SERVABLE_PROTOCOLS).join(', ')}`,
      );
    }
    const dflt = SERVABLE_PROTOCOLS[p];
    if (dflt === undefined) {
      throw new PosternError(
        'BAD_ARGUMENT',
        `protocol ${p} is not served by this release; it serves ${Object.keys(SERVABLE_PROTOCOLS).join(', ')}`,
      );
    }
    const port = input.ports?.[p] ?? dflt;
    if (used.has(port)) throw new PosternError('BAD_ARGUMENT', `port ${port} is given to two protocols`);
    used.add(port);
    ports[p] = port;
  }
  for (const p of Object.keys(input.ports ?? {})) {
    if (!protocols.includes(p))
      throw new PosternError('BAD_ARGUMENT', `--port names ${p}, which is not in --protocols`);
  }
  // Clients send the entry's region in the handshake, and servers accept only a two-letter code there.
  const region = input.region.trim();
  if (!/^[A-Z]{2}$/.test(region)) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `--region "${region}" must be the two-letter upper-case country code of the server's host (e.g. CA)`,
    );
  }
  const hostId = input.hostId ?? `postern-${randomBytes(4).toString('hex')}`;
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(hostId)) {
    throw new PosternError(
      'BAD_ARGUMENT',
      `host ID "${hostId}" may hold only letters, digits, '.', '_' and '-'`,
    );
  }
  if (await net.store.getServer(hostId)) {
    throw new PosternError('ALREADY_EXISTS', `a server with host ID ${hostId} is already registered`);
  }
  const statsFields = backOfficeFields(input);
  const out = resolve(input.out);
  if (existsSync(join(out, SERVER_CONFIG_FILE))) {
    throw new PosternError(
      'ALREADY_EXISTS',
      `${join(out, SERVER_CONFIG_FILE)} already exists; choose another --out`,
    );
  }

  const hostKey = generateSshHostKey(input.hostKeyBits ?? 2048);
  const sshUserName = `psiphon_${randomBytes(SSH_USERNAME_SUFFIX_BYTES).toString('hex')}`;
  const sshPassword = randomBytes(SSH_PASSWORD_BYTES).toString('hex');
  const obfuscatedKey = randomBytes(OBFUSCATED_KEY_BYTES).toString('hex');
  const webServerSecret = randomBytes(WEB_SERVER_SECRET_BYTES).toString('hex');

  const fields: ServerEntryFields = {
    ipAddress: input.ip,
    webServerPort: '0',
    webServerSecret: '0',
    webServerCertificate: '0',
    sshPort: ports['SSH'] ?? 0,
    sshUsername: sshUserName,
    sshPassword,
    sshHostKey: hostKey.publicKeyBlobB64,
    sshObfuscatedPort: ports['OSSH'] ?? 0,
    sshObfuscatedKey: obfuscatedKey,
    capabilities: [CAPABILITY_SSH_API_REQUESTS, ...protocols.map(capabilityForTunnelProtocol)],
    region,
    configurationVersion: 0,
    tag: serverEntryTag(webServerSecret, input.ip),
  };
  const keys = net.keys();
  const signed = signServerEntry(
    fields,
    keys.serverEntrySigning.publicKey,
    keys.serverEntrySigning.privateKey,
  );
  const encodedEntry = encodeServerEntry(signed);

  const config: ServerConfig = {
    ConfigVersion: 1,
    HostID: hostId,
    ServerIPAddress: input.ip,
    ListenAddress: input.listenAddress ?? input.ip,
    Region: region,
    TunnelProtocolPorts: ports,
    SSHPrivateKey: hostKey.privateKeyPem,
    SSHServerVersion: 'SSH-2.0-Postern',
    SSHUserName: sshUserName,
    SSHPassword: sshPassword,
    ObfuscatedSSHKey: obfuscatedKey,
    PsinetDatabaseFilename: PSINET_FILE,
    GeoIPDatabaseFilenames: [],
    OwnEncodedServerEntries: { [String(fields['tag'])]: encodedEntry },
    AllowDestinations: [],
    SpoolDirectory: 'spool',
    StatsShipperKey: generateStatsKey(),
    ...statsFields,
    AccessControlVerificationKeyRing: {
      Keys: [parseAuthorizationVerificationKey(net.file.AuthorizationVerificationKey)],
    },
  };
  const configPath = join(out, SERVER_CONFIG_FILE);
  const entryPath = join(out, SERVER_ENTRY_FILE);
  writeJsonAtomic(configPath, config, PRIVATE_FILE_MODE);
  writeFileAtomic(entryPath, encodedEntry + '\n');
  await writePsinet(net, join(out, PSINET_FILE));
  // The back office learns only the key's digest, by host ID.
  recordStatsKey(net.dir, hostId, config.StatsShipperKey as string);

  await net.store.addServer(
    {
      id: hostId,
      ipAddress: input.ip,
      region,
      capabilities: fields['capabilities'] as string[],
      encodedEntry,
      published: input.publish ?? true,
    },
    clock.now(),
  );
  return { hostId, configPath, entryPath, encodedEntry, config };
}

/** The config fields naming the back office, checked: an https URL and a certificate that parses. */
function backOfficeFields(
  input: GenerateServerInput,
): Pick<ServerConfig, 'StatsBackOfficeURL' | 'StatsBackOfficeCertificate'> {
  const out: Pick<ServerConfig, 'StatsBackOfficeURL' | 'StatsBackOfficeCertificate'> = {};
  if (input.backOfficeUrl !== undefined) {
    let u: URL | null = null;
    try {
      u = new URL(input.backOfficeUrl);
    } catch {
      // reported below
    }
    if (!u || u.protocol !== 'https:' || u.username || u.password || u.search || u.hash) {
      throw new PosternError(
        'BAD_ARGUMENT',
        `--backoffice-url "${input.backOfficeUrl}" must be https://HOST:PORT (no credentials or query)`,
      );
    }
    if (input.backOfficeCertificate === undefined) {
      throw new PosternError(
        'BAD_ARGUMENT',
        '--backoffice-url needs --backoffice-cert FILE: the server trusts only that certificate',
      );
    }
    out.StatsBackOfficeURL = input.backOfficeUrl;
  }
  if (input.backOfficeCertificate !== undefined) {
    try {
      new X509Certificate(input.backOfficeCertificate);
    } catch {
      throw new PosternError('BAD_ARGUMENT', '--backoffice-cert is not a PEM certificate');
    }
    out.StatsBackOfficeCertificate = input.backOfficeCertificate;
  }
  return out;
}

/** Writes the psinet file a server reads; run again after sponsors change. */
export async function writePsinet(net: Network, path: string): Promise<void> {
  const sponsors = await net.store.listSponsors();
  writeJsonAtomic(path, buildPsinet(sponsors));
}
