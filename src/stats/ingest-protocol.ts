// How a tunnel server's shipper hands spool batches to the back office, and what the back office's store does
// with them. A batch is a byte range [offset, offset + body length) of one spool file, made of whole JSON lines,
// sent as is: the back office keeps, per (host, file), the offset up to which it has ingested, so a batch is
// taken exactly once however often it is sent, and nothing is taken out of order.
//
//   POST /v1/stats/batches
//   Authorization: Bearer <the server's stats key>
//   Content-Type: application/x-ndjson
//   Postern-Host: <host id>            must be the host the key belongs to
//   Postern-File: <spool file name>    events-<13 digits>-<10 digits>.jsonl
//   Postern-Offset: <byte offset of the body's first byte in that file>
//   <body: whole lines, each one event, each ending in \n>
//
// Answers (JSON bodies, `status` always present):
//   200 {status:'ingested', events, expired, nextOffset}   taken; `expired` events were past retention, dropped
//   200 {status:'duplicate', nextOffset}                   already taken before; nothing changed
//   409 {status:'out-of-order', nextOffset}                the back office expects the file from nextOffset
//   400 {status:'malformed', error}                        nothing of the batch was stored
//   401 {status:'unauthorized', error}                     bad key, or key of another host
//   413 {status:'too-large', error}                        over MAX_BATCH_BYTES or MAX_BATCH_EVENTS
import type { StatsEvent } from './events.ts';

export const INGEST_PATH = '/v1/stats/batches';
export const HOST_HEADER = 'postern-host';
export const FILE_HEADER = 'postern-file';
export const OFFSET_HEADER = 'postern-offset';
export const BATCH_CONTENT_TYPE = 'application/x-ndjson';

/** Largest body the back office reads; the shipper sends at most this. */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;
/** Most events in one batch. */
export const MAX_BATCH_EVENTS = 20_000;
/** Spool file names the back office accepts (the spool writer's names). */
export const BATCH_FILE_PATTERN = /^events-\d{13}-\d{10}\.jsonl$/;

export interface IngestBatch {
  hostId: string;
  file: string;
  offset: number;
  /** offset + the body's length in bytes */
  endOffset: number;
  /** Every line of the body, parsed and checked against the event schema. */
  events: StatsEvent[];
}

export type IngestResult =
  | { status: 'ingested'; events: number; expired: number; nextOffset: number }
  | { status: 'duplicate'; nextOffset: number }
  | { status: 'out-of-order'; nextOffset: number };

export type IngestReply =
  IngestResult | { status: 'malformed' | 'unauthorized' | 'too-large'; error: string };
