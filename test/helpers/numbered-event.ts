// A server_tunnel event that carries a number (in bytes_up_tcp and bytes), for tests and benchmarks that count
// events end to end: the exactly-once test's spool writer and the shipper memory benchmark.
import type { SpoolEvent } from '../../src/server/event-spool.ts';
import { EVENT_SCHEMA_VERSION } from '../../src/stats/events.ts';

/** Event number `seq` from `hostId` in the hour `timestamp` (an hourOf() value), lasting `durationMs`. */
export function numberedTunnelEvent(
  seq: number,
  hostId: string,
  timestamp: string,
  durationMs: number,
): SpoolEvent {
  return {
    event_name: 'server_tunnel',
    schema_version: EVENT_SCHEMA_VERSION,
    timestamp,
    host_id: hostId,
    sponsor_id: 'AAAA',
    propagation_channel_id: 'BBBB',
    client_version: '1',
    client_platform: 'Android',
    relay_protocol: 'OSSH',
    client_region: 'None',
    client_city: 'None',
    client_isp: 'None',
    client_asn: 'None',
    client_aso: 'None',
    session_id: null,
    handshake_completed: true,
    start_time: timestamp,
    duration_ms: durationMs,
    bytes_up_tcp: seq,
    bytes_down_tcp: 0,
    bytes: seq,
    port_forwards: 1,
    port_forwards_refused: 0,
    peak_concurrent_port_forwards: 1,
  };
}
