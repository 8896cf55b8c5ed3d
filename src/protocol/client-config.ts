// The client's configuration file (client.json). Field names are psiphon-tunnel-core's client config names
// where the concept is the same, so the same file can be read by either client; Postern adds
// EmbeddedServerEntries (the reference keeps those in a separate file).
import { z } from 'zod';

export const RemoteServerListUrlSchema = z.object({
  URL: z.string().min(1),
  OnlyAfterAttempts: z.number().int().min(0).default(0),
  SkipVerify: z.boolean().default(false),
});

export const ClientConfigSchema = z.object({
  PropagationChannelId: z.string().regex(/^[0-9A-F]{16}$/, 'must be 16 upper-case hex digits'),
  SponsorId: z.string().regex(/^[0-9A-F]{16}$/, 'must be 16 upper-case hex digits'),
  ClientVersion: z.string().default('1'),
  ClientPlatform: z.string().default('Postern'),
  ServerEntrySignaturePublicKey: z.string().min(1),
  RemoteServerListURLs: z.array(RemoteServerListUrlSchema).default([]),
  RemoteServerListSignaturePublicKey: z.string().default(''),
  FeedbackEncryptionPublicKey: z.string().default(''),
  UpgradeDownloadURLs: z.array(RemoteServerListUrlSchema).default([]),
  /** Postern: signed, hex-encoded server entries the client starts from */
  EmbeddedServerEntries: z.array(z.string()).default([]),
  /** Postern: restricts the protocols the client will use (empty: all the entry allows) */
  LimitTunnelProtocols: z.array(z.string()).default([]),
});

export type ClientConfig = z.infer<typeof ClientConfigSchema>;
