// The back office's configuration file (BO.json), read like every service's: file, then POSTERN_BACKOFFICE_*
// environment variables, then command-line flags. Relative paths in the file are resolved against the file's
// folder (DataDirectory, NetworkDirectory) and then against the data folder (the files the service keeps).
import { isAbsolute, dirname, resolve } from 'node:path';
import { z } from 'zod';
import { loadConfig } from '../common/config.ts';
import { DEFAULT_RETENTION_DAYS, DEFAULT_SPONSOR_K } from '../stats/store.ts';
import { MAX_EPSILON, MAX_K } from '../stats/sponsor-view.ts';

export const BACKOFFICE_CONFIG_FILE = 'BO.json';
export const BACKOFFICE_ENV_PREFIX = 'POSTERN_BACKOFFICE';
export const DEFAULT_LISTEN_ADDRESS = '127.0.0.1';
export const DEFAULT_LISTEN_PORT = 8443;
export const DEFAULT_ROLLUP_INTERVAL_MS = 5 * 60 * 1000;
export const MIN_ROLLUP_INTERVAL_MS = 1000;
export const MAX_ROLLUP_INTERVAL_MS = 24 * 60 * 60 * 1000;
/** Ten years: longer than any policy would keep raw activity, short enough to catch a typo of extra digits. */
export const MAX_RETENTION_DAYS = 3650;
export const DEFAULT_TLS_KEY_FILE = 'backoffice-tls-key.pem';
export const DEFAULT_TLS_CERT_FILE = 'backoffice-tls-cert.pem';
export const DEFAULT_OPERATOR_TOKEN_FILE = 'operator-token';
export const DEFAULT_STATS_DATABASE = 'stats.sqlite';
export const MAX_TLS_NAMES = 32;

const Port = z.number().int().min(0).max(65535);

export const BackofficeConfigSchema = z.object({
  ConfigVersion: z.literal(1).default(1),
  /** Where the service keeps its files; relative to the config file's folder. */
  DataDirectory: z.string().min(1).default('.'),
  /** The network folder (for stats-keys.json, the per-server stats key digests); relative to the config file. */
  NetworkDirectory: z.string().min(1),
  ListenAddress: z.string().min(1).default(DEFAULT_LISTEN_ADDRESS),
  ListenPort: Port.default(DEFAULT_LISTEN_PORT),
  /** PEM files of the TLS identity; created (self-signed, key 0600) on first run when missing. */
  TLSKeyFile: z.string().min(1).default(DEFAULT_TLS_KEY_FILE),
  TLSCertificateFile: z.string().min(1).default(DEFAULT_TLS_CERT_FILE),
  /** DNS names and IP addresses put in a certificate made on first run, beside localhost and loopback. */
  TLSNames: z.array(z.string().min(1).max(253)).max(MAX_TLS_NAMES).default([]),
  /** A SQLite file (relative to DataDirectory) or a postgres:// URL. */
  StatsDatabase: z.string().min(1).default(DEFAULT_STATS_DATABASE),
  RetentionDays: z.number().int().min(1).max(MAX_RETENTION_DAYS).default(DEFAULT_RETENTION_DAYS),
  RollupIntervalMs: z
    .number()
    .int()
    .min(MIN_ROLLUP_INTERVAL_MS)
    .max(MAX_ROLLUP_INTERVAL_MS)
    .default(DEFAULT_ROLLUP_INTERVAL_MS),
  /** Sponsor reports suppress cells with fewer unique users than this; a request may only raise it. */
  SponsorK: z.number().int().min(1).max(MAX_K).default(DEFAULT_SPONSOR_K),
  /** When set, sponsor reports carry Laplace noise with this epsilon; a request may only lower it. */
  SponsorEpsilon: z.number().positive().max(MAX_EPSILON).optional(),
  /** The bearer token of the report APIs; created (0600) on first run when missing. */
  OperatorTokenFile: z.string().min(1).default(DEFAULT_OPERATOR_TOKEN_FILE),
});

export type BackofficeConfig = z.infer<typeof BackofficeConfigSchema>;

/** Every path the service touches, absolute; the database as a path or a postgres:// URL. */
export interface BackofficePaths {
  dataDir: string;
  networkDir: string;
  tlsKeyFile: string;
  tlsCertFile: string;
  operatorTokenFile: string;
  statsDatabase: string;
}

export function isPostgresUrl(target: string): boolean {
  return /^postgres(?:ql)?:\/\//i.test(target);
}

export function loadBackofficeConfig(
  file: string | undefined,
  flags: Record<string, unknown> = {},
  env: NodeJS.ProcessEnv = process.env,
): BackofficeConfig {
  return loadConfig(BackofficeConfigSchema, {
    ...(file ? { file } : {}),
    envPrefix: BACKOFFICE_ENV_PREFIX,
    env,
    flags,
  });
}

/** Resolves the config's paths: against the config file's folder (or `base`), then against the data folder. */
export function backofficePaths(config: BackofficeConfig, base: string): BackofficePaths {
  const from = (dir: string, p: string) => (isAbsolute(p) ? p : resolve(dir, p));
  const dataDir = from(base, config.DataDirectory);
  return {
    dataDir,
    networkDir: from(base, config.NetworkDirectory),
    tlsKeyFile: from(dataDir, config.TLSKeyFile),
    tlsCertFile: from(dataDir, config.TLSCertificateFile),
    operatorTokenFile: from(dataDir, config.OperatorTokenFile),
    statsDatabase: isPostgresUrl(config.StatsDatabase)
      ? config.StatsDatabase
      : from(dataDir, config.StatsDatabase),
  };
}

/** The folder relative config paths start from. */
export function configBase(configFile: string | undefined): string {
  return configFile ? dirname(resolve(configFile)) : process.cwd();
}
