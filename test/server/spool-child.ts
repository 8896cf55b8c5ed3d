// Child process for the spool's crash test: appends numbered events as fast as it can, several in flight at
// once, and prints "ack N" on stdout as soon as append() resolves for event N. The parent kills it with
// SIGKILL and then checks that every acknowledged event is in the spool.
import { EventSpoolWriter } from '../../src/server/event-spool.ts';

const dir = process.argv[2];
if (!dir) throw new Error('usage: spool-child.ts DIR');
const IN_FLIGHT = 16;

const spool = await EventSpoolWriter.open({ dir, batchWindowMs: 2, maxFileBytes: 16 * 1024 });
let next = 0;
async function worker(): Promise<void> {
  for (;;) {
    const n = next++;
    await spool.append({ event_name: 'crash_test', n, region: 'CA', padding: 'x'.repeat(n % 200) });
    process.stdout.write(`ack ${n}\n`);
  }
}
process.stdout.write('ready\n');
await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
