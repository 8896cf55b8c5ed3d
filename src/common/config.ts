// One config loader for every service: a zod schema, read from a JSON file, then environment variables, then
// command-line flags, each overriding the one before. Errors name the file, the field and what was expected.
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { PosternError, describeError } from './errors.ts';

export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

export type ConfigLayer = Record<string, unknown>;

export interface LoadConfigOptions {
  /** Path of a JSON config file; omitted means no file layer. */
  file?: string;
  /** Environment variables with this prefix override file values: PREFIX_SOME_FIELD → someField. */
  envPrefix?: string;
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags; undefined entries are ignored. */
  flags?: ConfigLayer;
}

/** Reads a JSON file with a size cap, answering with BAD_CONFIG errors that say where the problem is. */
export function readJsonFile(file: string, maxBytes = MAX_CONFIG_BYTES): unknown {
  let text: string;
  try {
    const buf = readFileSync(file);
    if (buf.length > maxBytes) {
      throw new PosternError('TOO_LARGE', `${file}: ${buf.length} bytes is over the ${maxBytes}-byte limit`);
    }
    text = buf.toString('utf8');
  } catch (e) {
    if (e instanceof PosternError) throw e;
    throw new PosternError('BAD_CONFIG', `cannot read ${file}: ${describeError(e)}`, { cause: e });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new PosternError('BAD_CONFIG', `${file} is not valid JSON: ${describeError(e)}`, { cause: e });
  }
}

function camelFromEnv(name: string): string {
  return name.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Letters and digits only, lower case: PREFIX_SPONSOR_ID, sponsorId and SponsorId all meet at "sponsorid". */
function foldKey(k: string): string {
  return k.toLowerCase().replace(/[^a-z0-9]/g, '');
}

/** The schema's own key for an environment variable's name, when the schema is an object with such a key. */
function schemaKeyFor(schema: z.ZodType, envName: string): string {
  const shape = (schema as unknown as { shape?: Record<string, unknown> }).shape;
  if (shape && typeof shape === 'object') {
    const folded = foldKey(envName);
    for (const k of Object.keys(shape)) if (foldKey(k) === folded) return k;
  }
  return camelFromEnv(envName);
}

function fieldSchema(schema: z.ZodType, key: string): z.ZodType | undefined {
  const shape = (schema as unknown as { shape?: Record<string, z.ZodType> }).shape;
  return shape && typeof shape === 'object' ? shape[key] : undefined;
}

function envLayer(schema: z.ZodType, prefix: string, env: NodeJS.ProcessEnv): ConfigLayer {
  const out: ConfigLayer = {};
  const p = prefix.endsWith('_') ? prefix : `${prefix}_`;
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith(p) || v === undefined) continue;
    const key = schemaKeyFor(schema, k.slice(p.length));
    // A value the field takes as a string stays a string (IDs of hex digits are not numbers); otherwise values
    // that look like JSON (numbers, booleans, arrays, objects) are parsed.
    let value: unknown = v;
    const field = fieldSchema(schema, key);
    if (!field?.safeParse(v).success && /^(?:-?\d+(?:\.\d+)?|true|false|\[.*\]|\{.*\})$/s.test(v)) {
      try {
        value = JSON.parse(v);
      } catch {
        value = v;
      }
    }
    out[key] = value;
  }
  return out;
}

/** Formats zod issues as "field.path: message" lines. */
export function formatZodIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((i) => `  ${i.path.length ? i.path.map(String).join('.') : '(top level)'}: ${i.message}`)
    .join('\n');
}

export function parseWithSchema<S extends z.ZodType>(schema: S, value: unknown, where: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new PosternError('BAD_CONFIG', `${where} is not valid:\n${formatZodIssues(r.error.issues)}`);
  }
  return r.data;
}

export function loadConfig<S extends z.ZodType>(schema: S, opts: LoadConfigOptions = {}): z.infer<S> {
  let merged: ConfigLayer = {};
  if (opts.file) {
    const raw = readJsonFile(opts.file);
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      throw new PosternError('BAD_CONFIG', `${opts.file} must hold a JSON object`);
    }
    merged = { ...(raw as ConfigLayer) };
  }
  if (opts.envPrefix) merged = { ...merged, ...envLayer(schema, opts.envPrefix, opts.env ?? process.env) };
  if (opts.flags) {
    for (const [k, v] of Object.entries(opts.flags)) if (v !== undefined) merged[k] = v;
  }
  return parseWithSchema(schema, merged, opts.file ?? 'configuration');
}
