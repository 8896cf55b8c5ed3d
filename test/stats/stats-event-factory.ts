// Valid statistics events for store and sponsor-view tests, checked against the event schema so a test can
// never pass on an event a real server could not write.
import { parseEvent, type StatsEvent, type StatsEventOf } from '../../src/stats/events.ts';
import type { IngestBatch } from '../../src/stats/ingest-protocol.ts';

export interface Where {
  sponsor?: string | null;
  region?: string;
  platform?: 'Android' | 'iOS' | 'Windows' | 'Other' | null;
  protocol?: string | null;
}

function base(date: string, w: Where, hour = 10) {
  return {
    schema_version: 1 as const,
    timestamp: `${date}T${String(hour).padStart(2, '0')}:00:00Z`,
    host_id: 'host-1',
    sponsor_id: w.sponsor === undefined ? 'SPONSOR1' : w.sponsor,
    propagation_channel_id: 'CHANNEL1',
    client_version: '170',
    client_platform: w.platform === undefined ? 'Android' : w.platform,
    relay_protocol: w.protocol === undefined ? 'OSSH' : w.protocol,
    client_region: w.region ?? 'US',
    client_city: 'Springfield',
    client_isp: 'Example ISP',
    client_asn: '64500',
    client_aso: 'Example AS',
  };
}

function checked<T extends StatsEvent>(e: T): T {
  return parseEvent(e) as T;
}

export function tunnel(
  date: string,
  w: Where = {},
  m: { durationMs?: number; up?: number; down?: number } = {},
): StatsEventOf<'server_tunnel'> {
  const up = m.up ?? 1000;
  const down = m.down ?? 5000;
  return checked({
    ...base(date, w),
    event_name: 'server_tunnel',
    session_id: 'abcdef0123456789',
    handshake_completed: true,
    start_time: `${date}T09:00:00Z`,
    duration_ms: m.durationMs ?? 60_000,
    bytes_up_tcp: up,
    bytes_down_tcp: down,
    bytes: up + down,
    port_forwards: 3,
    port_forwards_refused: 0,
    peak_concurrent_port_forwards: 2,
  });
}

export function uniqueUser(date: string, w: Where = {}): StatsEventOf<'unique_user'> {
  return checked({ ...base(date, w), event_name: 'unique_user' });
}

export function failed(
  date: string,
  w: Where = {},
  code: StatsEventOf<'failed_tunnel'>['tunnel_error'] = 'timeout',
): StatsEventOf<'failed_tunnel'> {
  return checked({ ...base(date, w), event_name: 'failed_tunnel', tunnel_error: code });
}

export function domainBytes(
  date: string,
  domain: string,
  bytes: number,
  w: Where = {},
): StatsEventOf<'domain_dest_bytes'> {
  const b = base(date, w);
  return checked({
    schema_version: 1,
    timestamp: b.timestamp,
    host_id: b.host_id,
    event_name: 'domain_dest_bytes',
    sponsor_id: b.sponsor_id,
    client_platform: b.client_platform,
    client_region: b.client_region,
    client_asn: b.client_asn,
    domain,
    bytes,
  });
}

export function discovery(date: string, servers: number, w: Where = {}): StatsEventOf<'discovery'> {
  return checked({ ...base(date, w), event_name: 'discovery', discovered_servers: servers });
}

export function listDownload(date: string, w: Where = {}): StatsEventOf<'remote_server_list'> {
  return checked({
    ...base(date, w),
    event_name: 'remote_server_list',
    tunneled: false,
    authenticated: true,
    bytes: 4096,
    duration_ms: 300,
  });
}

export function upgrade(date: string, w: Where = {}): StatsEventOf<'upgrade'> {
  return checked({ ...base(date, w), event_name: 'upgrade', upgrade_version: '171' });
}

export function serverLoad(date: string): StatsEventOf<'server_load'> {
  return checked({
    schema_version: 1,
    event_name: 'server_load',
    timestamp: `${date}T10:00:00Z`,
    host_id: 'host-1',
    established_tunnels: 4,
    open_port_forwards: 9,
    bytes_since_last: 12345,
    rss_bytes: 50_000_000,
  });
}

/** A batch as the shipper would send it: byte offsets advance by each event's JSON line length. */
export function batchOf(
  events: StatsEvent[],
  offset: number,
  file = 'events-0000000000001-0000000001.jsonl',
  hostId = 'host-1',
): IngestBatch {
  const bytes = events.reduce((n, e) => n + Buffer.byteLength(JSON.stringify(e)) + 1, 0);
  return { hostId, file, offset, endOffset: offset + bytes, events };
}

/** Splits events into consecutive batches of `size`, offsets continuing one from the other. */
export function batchesOf(events: StatsEvent[], size: number, file?: string, hostId?: string): IngestBatch[] {
  const out: IngestBatch[] = [];
  let offset = 0;
  for (let i = 0; i < events.length; i += size) {
    const b = batchOf(events.slice(i, i + size), offset, file, hostId);
    out.push(b);
    offset = b.endOffset;
  }
  return out;
}
