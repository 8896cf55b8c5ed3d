// The back office's statistics routes: batch ingest from tunnel servers (see src/stats/ingest-protocol.ts) and
// the operator's reports (JSON or CSV). Ingest is authenticated by the sending server's stats key before a byte
// of the body is read; a batch is checked whole (every line an event of the schema, from that host) before the
// store sees it, so a refused batch stores nothing. Nothing from a body is ever logged, nor any peer address.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../common/logger.ts';
import { isPosternError } from '../common/errors.ts';
import { parseEvent, type StatsEvent } from '../stats/events.ts';
import {
  INGEST_PATH,
  HOST_HEADER,
  FILE_HEADER,
  OFFSET_HEADER,
  BATCH_CONTENT_TYPE,
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
  BATCH_FILE_PATTERN,
  type IngestReply,
  type IngestResult,
} from '../stats/ingest-protocol.ts';
import { statsKeyDigest } from '../stats/stats-key.ts';
import type {
  DailyRollupRow,
  DomainRollupRow,
  FailureRollupRow,
  ReportQuery,
  StatsStore,
} from '../stats/store.ts';
import type { HostKeyLookup } from './host-keys.ts';
import { operatorTokenMatches } from './identity.ts';
import { toCsv } from './csv.ts';

export const DAILY_REPORT_PATH = '/v1/stats/daily';
export const DOMAINS_REPORT_PATH = '/v1/stats/domains';
export const FAILURES_REPORT_PATH = '/v1/stats/failures';
/** Longest span one report may cover, so one request cannot ask the store for years of rows. */
export const MAX_REPORT_DAYS = 366;
const DAY_MS = 86_400_000;
const HOST_ID_PATTERN = '^[A-Za-z0-9._-]{1,64}$';
const SPONSOR_ID_PATTERN = '^[A-Za-z0-9._-]{1,64}$';
const DATE_PATTERN = '^\\d{4}-\\d{2}-\\d{2}$';
/** Offsets are byte positions in a file: decimal, no sign, no leading zeros, within 2^53. */
const OFFSET_PATTERN = '^(?:0|[1-9][0-9]{0,15})$';
const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/;

export interface StatsRoutesOptions {
  store: StatsStore;
  hostKeys: HostKeyLookup;
  operatorToken: string;
  log: Logger;
}

export type ReportFormat = 'json' | 'csv';

export const DAILY_COLUMNS = [
  'date',
  'sponsorId',
  'region',
  'platform',
  'protocol',
  'uniqueUsers',
  'sessions',
  'durationSumMs',
  'durationP50Ms',
  'durationP90Ms',
  'bytesUp',
  'bytesDown',
  'bytes',
  'failures',
  'discoveries',
  'listDownloads',
  'upgrades',
] as const satisfies readonly (keyof DailyRollupRow)[];
export const DOMAIN_COLUMNS = [
  'date',
  'sponsorId',
  'region',
  'platform',
  'domain',
  'bytes',
] as const satisfies readonly (keyof DomainRollupRow)[];
export const FAILURE_COLUMNS = [
  'date',
  'sponsorId',
  'region',
  'platform',
  'protocol',
  'errorCode',
  'count',
] as const satisfies readonly (keyof FailureRollupRow)[];

const TEXT_COLUMNS = new Set(['date', 'sponsorId', 'region', 'platform', 'protocol', 'domain', 'errorCode']);

/** A response schema over exactly these columns: fields a row might carry beyond them are not sent. */
function rowsSchema(columns: readonly string[]) {
  return {
    type: 'object',
    properties: {
      report: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      sponsorId: { type: ['string', 'null'] },
      rows: {
        type: 'array',
        items: {
          type: 'object',
          properties: Object.fromEntries(
            columns.map((c) => [c, { type: TEXT_COLUMNS.has(c) ? 'string' : 'number' }]),
          ),
        },
      },
    },
  } as const;
}

const errorSchema = {
  type: 'object',
  properties: { status: { type: 'string' }, error: { type: 'string' } },
} as const;

/** What a malformed or refused request gets: `status` as in the ingest protocol, and a reason. */
export function refusal(
  reply: FastifyReply,
  code: number,
  status: 'malformed' | 'unauthorized' | 'too-large',
  error: string,
): FastifyReply {
  if (code === 401) reply.header('www-authenticate', 'Bearer');
  return reply.code(code).send({ status, error } satisfies IngestReply);
}

function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  return typeof h === 'string' ? BEARER.exec(h)?.[1] : undefined;
}

/** Why a batch body was refused: 400 (malformed) or 413 (too many events or bytes), with the line and rule. */
export class BatchRefused extends Error {
  constructor(
    readonly httpStatus: 400 | 413,
    message: string,
  ) {
    super(message);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The slow path, only when the whole body failed to decode: which line holds the bad bytes. */
function firstInvalidUtf8Line(body: Buffer): number {
  let n = 1;
  let start = 0;
  for (let end = body.indexOf(0x0a); end !== -1; end = body.indexOf(0x0a, start), n++) {
    try {
      utf8.decode(body.subarray(start, end));
    } catch {
      return n;
    }
    start = end + 1;
  }
  return n;
}

/**
 * Splits and checks a batch body: whole lines, each an event of the schema from `hostId`. Throws BatchRefused
 * naming the first bad line and the rule it breaks (never its content).
 */
export function parseBatchBody(body: Buffer, hostId: string): StatsEvent[] {
  if (body.length === 0) throw new BatchRefused(400, 'the batch is empty');
  if (body.length > MAX_BATCH_BYTES)
    throw new BatchRefused(413, `a batch is at most ${MAX_BATCH_BYTES} bytes`);
  let lines = 0;
  for (let i = body.indexOf(0x0a); i !== -1; i = body.indexOf(0x0a, i + 1)) lines++;
  if (body[body.length - 1] !== 0x0a) throw new BatchRefused(400, `line ${lines + 1}: does not end in \\n`);
  if (lines > MAX_BATCH_EVENTS)
    throw new BatchRefused(413, `a batch holds at most ${MAX_BATCH_EVENTS} events`);
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw new BatchRefused(400, `line ${firstInvalidUtf8Line(body)}: not UTF-8`);
  }
  const events: StatsEvent[] = [];
  let start = 0;
  for (let n = 1; n <= lines; n++) {
    const end = text.indexOf('\n', start);
    const line = text.slice(start, end);
    start = end + 1;
    if (line.length === 0) throw new BatchRefused(400, `line ${n}: empty line`);
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new BatchRefused(400, `line ${n}: not JSON`);
    }
    let event: StatsEvent;
    try {
      event = parseEvent(value);
    } catch (e) {
      if (isPosternError(e, 'BAD_EVENT')) throw new BatchRefused(400, `line ${n}: ${e.message}`);
      throw e;
    }
    if (event.host_id !== hostId) {
      throw new BatchRefused(400, `line ${n}: host_id is not the host that sent the batch`);
    }
    events.push(event);
  }
  return events;
}

function isRealDate(s: string): boolean {
  const t = Date.parse(`${s}T00:00:00Z`);
  return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === s;
}

interface ReportQuerystring {
  from: string;
  to: string;
  sponsor?: string;
  format: ReportFormat;
}

const reportQuerySchema = {
  type: 'object',
  required: ['from', 'to'],
  additionalProperties: false,
  properties: {
    from: { type: 'string', pattern: DATE_PATTERN },
    to: { type: 'string', pattern: DATE_PATTERN },
    sponsor: { type: 'string', pattern: SPONSOR_ID_PATTERN },
    format: { type: 'string', enum: ['json', 'csv'], default: 'json' },
  },
} as const;

/** Checks what a JSON schema cannot: real dates, in order, within MAX_REPORT_DAYS. */
export function reportQuery(q: ReportQuerystring): ReportQuery | string {
  if (!isRealDate(q.from)) return 'from is not a date';
  if (!isRealDate(q.to)) return 'to is not a date';
  const days = (Date.parse(q.to) - Date.parse(q.from)) / DAY_MS + 1;
  if (days < 1) return 'from is after to';
  if (days > MAX_REPORT_DAYS) return `a report covers at most ${MAX_REPORT_DAYS} days`;
  return { from: q.from, to: q.to, ...(q.sponsor !== undefined ? { sponsorId: q.sponsor } : {}) };
}

/** Sends report rows as JSON ({report, from, to, sponsorId, rows}) or as CSV with a header line. */
export function sendReport(
  reply: FastifyReply,
  name: string,
  q: ReportQuery,
  format: ReportFormat,
  columns: readonly string[],
  rows: readonly object[],
): FastifyReply {
  if (format === 'csv') {
    const file = `${name}-${q.from}-${q.to}${q.sponsorId ? `-${q.sponsorId}` : ''}.csv`;
    return reply
      .type('text/csv; charset=utf-8; header=present')
      .header('content-disposition', `attachment; filename="${file}"`)
      .send(toCsv(columns, rows));
  }
  return reply.send({ report: name, from: q.from, to: q.to, sponsorId: q.sponsorId ?? null, rows });
}

/** An onRequest hook that lets only the operator's bearer token through. */
export function requireOperator(operatorToken: string) {
  // Returning the reply tells fastify the request was answered here (its way for async hooks).
  return async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    const presented = bearer(req);
    if (presented === undefined || !operatorTokenMatches(presented, operatorToken)) {
      return refusal(reply, 401, 'unauthorized', 'an operator bearer token is required');
    }
    return undefined;
  };
}

interface IngestHeaders {
  [HOST_HEADER]: string;
  [FILE_HEADER]: string;
  [OFFSET_HEADER]: string;
}

export async function statsRoutes(app: FastifyInstance, o: StatsRoutesOptions): Promise<void> {
  // The batch arrives as bytes, and only as ndjson (fastify's JSON and text parsers are removed in this
  // plugin's scope); parseBatchBody reads it after the headers have been checked.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    BATCH_CONTENT_TYPE,
    { parseAs: 'buffer', bodyLimit: MAX_BATCH_BYTES },
    (_req: FastifyRequest, body: Buffer, done: (err: null, body: Buffer) => void) => done(null, body),
  );

  const hostOf = new WeakMap<FastifyRequest, string>();

  app.post<{ Headers: IngestHeaders; Body: Buffer | undefined }>(
    INGEST_PATH,
    {
      bodyLimit: MAX_BATCH_BYTES,
      schema: {
        headers: {
          type: 'object',
          required: [HOST_HEADER, FILE_HEADER, OFFSET_HEADER],
          properties: {
            [HOST_HEADER]: { type: 'string', pattern: HOST_ID_PATTERN },
            [FILE_HEADER]: { type: 'string', pattern: BATCH_FILE_PATTERN.source },
            [OFFSET_HEADER]: { type: 'string', pattern: OFFSET_PATTERN },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              status: { type: 'string' },
              events: { type: 'integer' },
              expired: { type: 'integer' },
              nextOffset: { type: 'integer' },
            },
          },
          409: {
            type: 'object',
            properties: { status: { type: 'string' }, nextOffset: { type: 'integer' } },
          },
          '4xx': errorSchema,
        },
      },
      // Authentication comes before the body is read: an unknown sender costs one small answer.
      onRequest: async (req, reply) => {
        const key = bearer(req);
        let host: string | undefined;
        if (key !== undefined) {
          let digest: string | undefined;
          try {
            digest = statsKeyDigest(key);
          } catch {
            digest = undefined;
          }
          if (digest !== undefined) host = await o.hostKeys.hostForKey(digest);
        }
        if (host === undefined) {
          o.log.warn({ status: 'unauthorized' }, 'ingest refused: unknown stats key');
          return refusal(reply, 401, 'unauthorized', 'unknown stats key');
        }
        if (req.headers[HOST_HEADER] !== host) {
          o.log.warn({ host, status: 'unauthorized' }, 'ingest refused: the key belongs to another host');
          return refusal(reply, 401, 'unauthorized', `the key does not belong to host in ${HOST_HEADER}`);
        }
        hostOf.set(req, host);
        return undefined;
      },
    },
    async (req, reply) => {
      const host = hostOf.get(req);
      if (host === undefined) return refusal(reply, 401, 'unauthorized', 'unknown stats key');
      const file = req.headers[FILE_HEADER];
      const offset = Number(req.headers[OFFSET_HEADER]);
      if (req.body !== undefined && !Buffer.isBuffer(req.body)) {
        return refusal(reply, 400, 'malformed', `Content-Type must be ${BATCH_CONTENT_TYPE}`);
      }
      const body = req.body ?? Buffer.alloc(0);
      if (!Number.isSafeInteger(offset + body.length)) {
        return refusal(reply, 400, 'malformed', `${OFFSET_HEADER} is out of range`);
      }
      let events: StatsEvent[];
      try {
        events = parseBatchBody(body, host);
      } catch (e) {
        if (!(e instanceof BatchRefused)) throw e;
        const status = e.httpStatus === 413 ? 'too-large' : 'malformed';
        o.log.warn({ host, status, bytes: body.length }, `ingest refused: ${status}`);
        return refusal(reply, e.httpStatus, status, e.message);
      }
      let result: IngestResult;
      try {
        result = await o.store.ingest({
          hostId: host,
          file,
          offset,
          endOffset: offset + body.length,
          events,
        });
      } catch (e) {
        // The store's own refusals of a batch, if it has any: nothing was stored.
        if (isPosternError(e, 'BAD_BATCH') || isPosternError(e, 'BAD_EVENT')) {
          o.log.warn({ host, status: 'malformed', events: events.length }, 'ingest refused by the store');
          return refusal(reply, 400, 'malformed', e.message);
        }
        if (isPosternError(e, 'OUT_OF_ORDER'))
          result = { status: 'out-of-order', nextOffset: await o.store.nextOffset(host, file) };
        else throw e;
      }
      const fields = { host, status: result.status, nextOffset: result.nextOffset };
      if (result.status === 'ingested') {
        o.log.debug({ ...fields, events: result.events, expired: result.expired }, 'batch ingested');
      } else {
        o.log.info(fields, `batch ${result.status}`);
      }
      return reply.code(result.status === 'out-of-order' ? 409 : 200).send(result satisfies IngestReply);
    },
  );

  const operator = requireOperator(o.operatorToken);
  const reports: Array<{
    path: string;
    name: string;
    columns: readonly string[];
    query: (q: ReportQuery) => Promise<readonly object[]>;
  }> = [
    { path: DAILY_REPORT_PATH, name: 'daily', columns: DAILY_COLUMNS, query: (q) => o.store.daily(q) },
    { path: DOMAINS_REPORT_PATH, name: 'domains', columns: DOMAIN_COLUMNS, query: (q) => o.store.domains(q) },
    {
      path: FAILURES_REPORT_PATH,
      name: 'failures',
      columns: FAILURE_COLUMNS,
      query: (q) => o.store.failures(q),
    },
  ];
  for (const r of reports) {
    app.get<{ Querystring: ReportQuerystring }>(
      r.path,
      {
        onRequest: operator,
        schema: {
          querystring: reportQuerySchema,
          response: { 200: rowsSchema(r.columns), '4xx': errorSchema },
        },
      },
      async (req, reply) => {
        const q = reportQuery(req.query);
        if (typeof q === 'string') return refusal(reply, 400, 'malformed', q);
        const rows = await r.query(q);
        o.log.info({ report: r.name, rows: rows.length, format: req.query.format }, 'report served');
        return sendReport(reply, r.name, q, req.query.format, r.columns, rows);
      },
    );
  }
}
