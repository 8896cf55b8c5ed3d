// `postern client config`: a client's configuration for one sponsor and propagation channel, with the
// network's public keys, its signed server entries embedded, and where to fetch the remote server list.
import { PosternError } from '../common/errors.ts';
import type { ClientConfig } from '../protocol/client-config.ts';
import { parseId } from './ids.ts';
import type { Network } from './network.ts';

/** Enough entries for a client to find a working server when many are blocked, without a huge config. */
export const DEFAULT_MAX_EMBEDDED_ENTRIES = 100;

export function validateListUrl(u: string): void {
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    throw new PosternError('BAD_ARGUMENT', `remote server list URL "${u}" is not an absolute URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new PosternError('BAD_ARGUMENT', `remote server list URL "${u}" must be http or https`);
  }
}

export interface ClientConfigInput {
  sponsorId: string;
  propagationChannelId?: string;
  listUrls?: string[];
  maxEmbeddedEntries?: number;
  clientVersion?: string;
}

export async function makeClientConfig(net: Network, input: ClientConfigInput): Promise<ClientConfig> {
  const sponsorId = parseId(input.sponsorId, 'sponsor ID');
  if (!(await net.store.getSponsor(sponsorId))) {
    throw new PosternError(
      'NOT_FOUND',
      `sponsor ${sponsorId} is not in this network; add it with \`postern network sponsor add\``,
    );
  }
  const channelId = parseId(
    input.propagationChannelId ?? net.file.DefaultPropagationChannelId,
    'propagation channel ID',
  );
  if (!(await net.store.getPropagationChannel(channelId))) {
    throw new PosternError('NOT_FOUND', `propagation channel ${channelId} is not in this network`);
  }
  const urls = [...net.file.RemoteServerListURLs, ...(input.listUrls ?? [])];
  urls.forEach(validateListUrl);
  const max = input.maxEmbeddedEntries ?? DEFAULT_MAX_EMBEDDED_ENTRIES;
  const entries = (await net.store.listServers())
    .filter((s) => s.published)
    .slice(0, max)
    .map((s) => s.encodedEntry);
  return {
    PropagationChannelId: channelId,
    SponsorId: sponsorId,
    ClientVersion: input.clientVersion ?? '1',
    ClientPlatform: 'Postern',
    ServerEntrySignaturePublicKey: net.file.ServerEntrySignaturePublicKey,
    RemoteServerListURLs: [...new Set(urls)].map((URL) => ({ URL, OnlyAfterAttempts: 0, SkipVerify: false })),
    RemoteServerListSignaturePublicKey: net.file.RemoteServerListSignaturePublicKey,
    FeedbackEncryptionPublicKey: net.file.FeedbackEncryptionPublicKey,
    UpgradeDownloadURLs: [],
    EmbeddedServerEntries: entries,
    LimitTunnelProtocols: [],
  };
}
