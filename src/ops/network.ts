// A network's home on the operator's disk: network.json (public keys, settings), keys/ (private keys, 0600)
// and the registry store (SQLite file in the folder by default, or a PostgreSQL URL).
import { existsSync, mkdirSync, readFileSync, chmodSync } from 'node:fs';
import { join, resolve, isAbsolute } from 'node:path';
import { z } from 'zod';
import { PosternError } from '../common/errors.ts';
import { readJsonFile, parseWithSchema } from '../common/config.ts';
import { writeJsonAtomic, PRIVATE_FILE_MODE } from '../common/files.ts';
import type { Clock } from '../common/clock.ts';
import {
  generateEd25519KeyPair,
  generateRsaKeyPair,
  type Ed25519KeyPair,
  type RsaKeyPair,
} from '../protocol/keys.ts';
import { generateAuthorizationSigningKey } from '../protocol/authorization.ts';
import { openOpsStore, type OpsStore } from '../store/index.ts';
import { newId } from './ids.ts';

export const NETWORK_FILE = 'network.json';
export const KEYS_DIR = 'keys';
export const DEFAULT_DATABASE_FILE = 'network.sqlite';
/** The access type of the network's authorizations (Psiphon's speed boost) */
export const DEFAULT_AUTHORIZATION_ACCESS_TYPE = 'speed-boost';

export const KEY_FILES = {
  serverEntrySigning: 'server-entry-signing.json',
  remoteServerListSigning: 'remote-server-list-signing.json',
  feedbackEncryption: 'feedback-encryption.json',
  authorizationSigning: 'authorization-signing.json',
} as const;

export const NetworkFileSchema = z.object({
  FormatVersion: z.literal(1),
  Name: z.string().min(1),
  CreatedAt: z.string(),
  /** A path (relative to the network folder) of the SQLite registry, or a postgres:// URL */
  Database: z.string().min(1),
  ServerEntrySignaturePublicKey: z.string().min(1),
  RemoteServerListSignaturePublicKey: z.string().min(1),
  FeedbackEncryptionPublicKey: z.string().min(1),
  /** base64 JSON of the authorization verification key in the reference's format */
  AuthorizationVerificationKey: z.string().min(1),
  DefaultPropagationChannelId: z.string().min(1),
  /** Where clients fetch the remote server list (set by `network publish --url` or by hand) */
  RemoteServerListURLs: z.array(z.string()).default([]),
});

export type NetworkFile = z.infer<typeof NetworkFileSchema>;

const Ed25519FileSchema = z.object({ publicKey: z.string(), privateKey: z.string() });
const RsaFileSchema = z.object({ publicKey: z.string(), privateKey: z.string() });

export interface NetworkKeys {
  serverEntrySigning: Ed25519KeyPair;
  remoteServerListSigning: RsaKeyPair;
  feedbackEncryption: RsaKeyPair;
  /** base64 JSON of the authorization signing key in the reference's format */
  authorizationSigningKey: string;
}

export interface Network {
  dir: string;
  file: NetworkFile;
  store: OpsStore;
  /** Loads the private keys; only commands that sign need them. */
  keys(): NetworkKeys;
  saveFile(next: NetworkFile): void;
  close(): Promise<void>;
}

export interface InitNetworkOptions {
  dir: string;
  name?: string;
  /** postgres:// URL; the default is a SQLite file in the folder */
  database?: string;
  clock: Clock;
  /** RSA modulus size for list signing and feedback keys (tests may use a smaller one) */
  rsaBits?: number;
}

function databaseTarget(dir: string, database: string): string {
  if (/^postgres(ql)?:\/\//.test(database)) return database;
  return isAbsolute(database) ? database : join(dir, database);
}

export async function initNetwork(opts: InitNetworkOptions): Promise<Network> {
  const dir = resolve(opts.dir);
  if (existsSync(join(dir, NETWORK_FILE))) {
    throw new PosternError(
      'ALREADY_EXISTS',
      `${join(dir, NETWORK_FILE)} already exists; choose another --dir or remove it first (its keys would be lost)`,
    );
  }
  mkdirSync(join(dir, KEYS_DIR), { recursive: true, mode: 0o700 });
  chmodSync(join(dir, KEYS_DIR), 0o700);

  const rsaBits = opts.rsaBits ?? 2048;
  const entry = generateEd25519KeyPair();
  const list = generateRsaKeyPair(rsaBits);
  const feedback = generateRsaKeyPair(rsaBits);
  const auth = generateAuthorizationSigningKey(DEFAULT_AUTHORIZATION_ACCESS_TYPE);

  const keysDir = join(dir, KEYS_DIR);
  writeJsonAtomic(join(keysDir, KEY_FILES.serverEntrySigning), entry, PRIVATE_FILE_MODE);
  writeJsonAtomic(join(keysDir, KEY_FILES.remoteServerListSigning), list, PRIVATE_FILE_MODE);
  writeJsonAtomic(join(keysDir, KEY_FILES.feedbackEncryption), feedback, PRIVATE_FILE_MODE);
  writeJsonAtomic(
    join(keysDir, KEY_FILES.authorizationSigning),
    { signingKey: auth.signingKey },
    PRIVATE_FILE_MODE,
  );

  const database = opts.database ?? DEFAULT_DATABASE_FILE;
  const store = await openOpsStore(databaseTarget(dir, database));
  const channelId = newId();
  await store.addPropagationChannel({ id: channelId, name: 'default' }, opts.clock.now());

  const file: NetworkFile = {
    FormatVersion: 1,
    Name: opts.name ?? 'postern',
    CreatedAt: opts.clock.now().toISOString(),
    Database: database,
    ServerEntrySignaturePublicKey: entry.publicKey,
    RemoteServerListSignaturePublicKey: list.publicKey,
    FeedbackEncryptionPublicKey: feedback.publicKey,
    AuthorizationVerificationKey: auth.verificationKey,
    DefaultPropagationChannelId: channelId,
    RemoteServerListURLs: [],
  };
  writeJsonAtomic(join(dir, NETWORK_FILE), file);
  return makeNetwork(dir, file, store);
}

export async function openNetwork(dirArg: string): Promise<Network> {
  const dir = resolve(dirArg);
  const path = join(dir, NETWORK_FILE);
  if (!existsSync(path)) {
    throw new PosternError(
      'NOT_FOUND',
      `${path} does not exist: create the network first with \`postern network init --dir ${dirArg}\``,
    );
  }
  const file = parseWithSchema(NetworkFileSchema, readJsonFile(path), path);
  const store = await openOpsStore(databaseTarget(dir, file.Database));
  return makeNetwork(dir, file, store);
}

function makeNetwork(dir: string, initial: NetworkFile, store: OpsStore): Network {
  let file = initial;
  return {
    dir,
    get file() {
      return file;
    },
    store,
    keys() {
      const k = (name: string) => join(dir, KEYS_DIR, name);
      const auth = z
        .object({ signingKey: z.string() })
        .parse(readJsonFile(k(KEY_FILES.authorizationSigning)));
      return {
        serverEntrySigning: parseWithSchema(
          Ed25519FileSchema,
          readJsonFile(k(KEY_FILES.serverEntrySigning)),
          k(KEY_FILES.serverEntrySigning),
        ),
        remoteServerListSigning: parseWithSchema(
          RsaFileSchema,
          readJsonFile(k(KEY_FILES.remoteServerListSigning)),
          k(KEY_FILES.remoteServerListSigning),
        ),
        feedbackEncryption: parseWithSchema(
          RsaFileSchema,
          readJsonFile(k(KEY_FILES.feedbackEncryption)),
          k(KEY_FILES.feedbackEncryption),
        ),
        authorizationSigningKey: auth.signingKey,
      };
    },
    saveFile(next: NetworkFile) {
      writeJsonAtomic(join(dir, NETWORK_FILE), next);
      file = next;
    },
    close: () => store.close(),
  };
}

/** For tests and diagnostics: the raw text of a key file. */
export function readKeyFileText(dir: string, name: string): string {
  return readFileSync(join(dir, KEYS_DIR, name), 'utf8');
}
