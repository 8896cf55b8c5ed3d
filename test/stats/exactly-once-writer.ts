// Child process of the exactly-once test: plays the tunnel server's part, appending numbered server_tunnel
// events to the spool (bytes_up_tcp carries the number): those in the ranges listed in RANGES_FILE (JSON
// [[from, to], ...], what is not yet in the spool or the back office). Several batches are in flight; while the
// spool is full (a stalled shipper) it waits and retries. Prints "done" when every append has resolved.
import { readFileSync } from 'node:fs';
import { EventSpoolWriter, type SpoolEvent } from '../../src/server/event-spool.ts';
import { isPosternError } from '../../src/common/errors.ts';
import { hourOf } from '../../src/stats/events.ts';
import { numberedTunnelEvent } from '../helpers/numbered-event.ts';

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
  return numberedTunnelEvent(seq, hostId!, timestamp, seq % 1000);
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
