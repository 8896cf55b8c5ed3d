// Child process of the exactly-once test: plays the tunnel server's part, appending numbered server_tunnel
// events to the spool (bytes_up_tcp carries the number): those in the ranges listed in RANGES_FILE (JSON
// [[from, to], ...], what is not yet in the spool or the back office). Several batches are in flight; while the
// spool is full (a stalled shipper) it waits and retries. Prints "done" when every append has resolved.
import { readFileSync } from 'node:fs';
import { EventSpoolWriter, type SpoolEvent } from '../../src/server/event-spool.ts';
import { isPosternError } from '../../src/common/errors.ts';
import { EVENT_SCHEMA_VERSION, hourOf } from '../../src/stats/events.ts';

const [dir, rangesFile, hostId] = process.argv.slice(2);
if (!dir || !rangesFile || !hostId) throw new Error('usage: exactly-once-writer.ts DIR RANGES_FILE HOST');
const ranges = JSON.parse(readFileSync(rangesFile, 'utf8')) as [number, number][];
function* seqs(): Generator<number> {
  for (const [a, b] of ranges) for (let s = a; s <= b; s++) yield s;
}
const todo = seqs();
const IN_FLIGHT = 4096;

const timestamp = hourOf(new Date());
function event(seq: number): SpoolEvent {
  return {
    event_name: 'server_tunnel',
    schema_version: EVENT_SCHEMA_VERSION,
    timestamp,
    host_id: hostId!,
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
    duration_ms: seq % 1000,
    bytes_up_tcp: seq,
    bytes_down_tcp: 0,
    bytes: seq,
    port_forwards: 1,
    port_forwards_refused: 0,
    peak_concurrent_port_forwards: 1,
  };
}

const spool = await EventSpoolWriter.open({
  dir,
  maxFileBytes: 4 * 1024 * 1024,
  maxTotalBytes: 64 * 1024 * 1024,
});
async function worker(): Promise<void> {
  for (;;) {
    const n = todo.next();
    if (n.done) return;
    const seq = n.value;
    for (;;) {
      try {
        await spool.append(event(seq));
        break;
      } catch (e) {
        if (!isPosternError(e)) throw e;
        await new Promise((r) => setTimeout(r, 50)); // spool full or backlog: the shipper will make room
      }
    }
  }
}
await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
await spool.close();
process.stdout.write('done\n');
