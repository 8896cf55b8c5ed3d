// GET /v1/stats/sponsor: a sponsor's share of the statistics (src/stats/sponsor-view.ts: date x region only,
// cells under k unique users suppressed, optional Laplace noise), for the operator to hand over. A request may
// only make the report more private than the service's settings: a higher k, a smaller epsilon.
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../common/logger.ts';
import { isPosternError } from '../common/errors.ts';
import type { StatsStore } from '../stats/store.ts';
import { MAX_EPSILON, MAX_K, sponsorReport, type SponsorReport } from '../stats/sponsor-view.ts';
import { toCsv } from './csv.ts';
import { refusal, reportQuery, requireOperator, type ReportFormat } from './stats-routes.ts';

export const SPONSOR_REPORT_PATH = '/v1/stats/sponsor';
export const SPONSOR_CELL_COLUMNS = ['date', 'region', 'uniqueUsers', 'sessions', 'bytes'] as const;
export const SPONSOR_DOMAIN_COLUMNS = ['date', 'region', 'domain', 'bytes'] as const;
/** Headers that carry, beside a CSV, what the JSON says about suppression and noise. */
export const SUPPRESSED_CELLS_HEADER = 'postern-suppressed-cells';
export const SUPPRESSED_DOMAIN_ROWS_HEADER = 'postern-suppressed-domain-rows';
export const K_HEADER = 'postern-k';
export const EPSILON_HEADER = 'postern-epsilon';

export interface SponsorRouteOptions {
  store: StatsStore;
  operatorToken: string;
  log: Logger;
  /** The smallest k any report uses. */
  minimumK: number;
  /** When set, every report has noise with at most this epsilon. */
  maximumEpsilon?: number;
  /** Uniform in [0, 1) (tests pass a seeded one); crypto randomness by default. */
  random?: () => number;
}

interface SponsorQuerystring {
  sponsor: string;
  from: string;
  to: string;
  format: ReportFormat;
  part: 'cells' | 'domains';
  k?: number;
  epsilon?: number;
}

const cellSchema = {
  type: 'object',
  properties: Object.fromEntries(
    SPONSOR_CELL_COLUMNS.map((c) => [c, { type: c === 'date' || c === 'region' ? 'string' : 'number' }]),
  ),
};
const domainSchema = {
  type: 'object',
  properties: Object.fromEntries(
    SPONSOR_DOMAIN_COLUMNS.map((c) => [c, { type: c === 'bytes' ? 'number' : 'string' }]),
  ),
};

export async function sponsorRoute(app: FastifyInstance, o: SponsorRouteOptions): Promise<void> {
  app.get<{ Querystring: SponsorQuerystring }>(
    SPONSOR_REPORT_PATH,
    {
      onRequest: requireOperator(o.operatorToken),
      schema: {
        querystring: {
          type: 'object',
          required: ['sponsor', 'from', 'to'],
          additionalProperties: false,
          properties: {
            sponsor: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' },
            from: { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}$' },
            to: { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}$' },
            format: { type: 'string', enum: ['json', 'csv'], default: 'json' },
            part: { type: 'string', enum: ['cells', 'domains'], default: 'cells' },
            k: { type: 'integer', minimum: 1, maximum: MAX_K },
            epsilon: { type: 'number', exclusiveMinimum: 0, maximum: MAX_EPSILON },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              sponsorId: { type: 'string' },
              from: { type: 'string' },
              to: { type: 'string' },
              k: { type: 'integer' },
              noise: {
                type: ['object', 'null'],
                properties: {
                  epsilon: { type: 'number' },
                  uniqueUsersScale: { type: 'number' },
                  sessionsScale: { type: 'number' },
                  sessionsPerUserDayCap: { type: 'number' },
                  bytesUnit: { type: 'number' },
                },
              },
              cells: { type: 'array', items: cellSchema },
              domains: { type: 'array', items: domainSchema },
              suppressed: {
                type: 'object',
                properties: { cells: { type: 'integer' }, domainRows: { type: 'integer' } },
              },
            },
          },
          '4xx': {
            type: 'object',
            properties: { status: { type: 'string' }, error: { type: 'string' } },
          },
        },
      },
    },
    async (req, reply) => {
      const q = req.query;
      const range = reportQuery({ from: q.from, to: q.to, format: q.format });
      if (typeof range === 'string') return refusal(reply, 400, 'malformed', range);
      const k = q.k ?? o.minimumK;
      if (k < o.minimumK) {
        return refusal(
          reply,
          400,
          'malformed',
          `k may only be raised: the service's minimum is ${o.minimumK}`,
        );
      }
      const epsilon = q.epsilon ?? o.maximumEpsilon;
      if (o.maximumEpsilon !== undefined && epsilon !== undefined && epsilon > o.maximumEpsilon) {
        return refusal(
          reply,
          400,
          'malformed',
          `epsilon may only be lowered: the service's maximum is ${o.maximumEpsilon}`,
        );
      }
      let report: SponsorReport;
      try {
        report = await sponsorReport(o.store, {
          sponsorId: q.sponsor,
          from: range.from,
          to: range.to,
          k,
          ...(epsilon !== undefined ? { epsilon } : {}),
          ...(o.random ? { random: o.random } : {}),
        });
      } catch (e) {
        if (isPosternError(e, 'BAD_ARGUMENT')) return refusal(reply, 400, 'malformed', e.message);
        throw e;
      }
      o.log.info(
        {
          report: 'sponsor',
          cells: report.cells.length,
          suppressedCells: report.suppressed.cells,
          noise: report.noise !== null,
          format: q.format,
        },
        'sponsor report served',
      );
      if (q.format === 'csv') {
        const file = `sponsor-${q.sponsor}-${q.part}-${range.from}-${range.to}.csv`;
        reply
          .type('text/csv; charset=utf-8; header=present')
          .header('content-disposition', `attachment; filename="${file}"`)
          .header(SUPPRESSED_CELLS_HEADER, String(report.suppressed.cells))
          .header(SUPPRESSED_DOMAIN_ROWS_HEADER, String(report.suppressed.domainRows))
          .header(K_HEADER, String(report.k));
        if (report.noise) reply.header(EPSILON_HEADER, String(report.noise.epsilon));
        return q.part === 'domains'
          ? reply.send(toCsv(SPONSOR_DOMAIN_COLUMNS, report.domains))
          : reply.send(toCsv(SPONSOR_CELL_COLUMNS, report.cells));
      }
      return reply.send(report);
    },
  );
}
