// New-connection overhead: COUNT sequential 1 KiB requests, each on a new connection: directly, through
// OpenSSH's `ssh -D`, and through Postern's SOCKS5 over an established OSSH tunnel. Prints the mean time per
// request and Postern's overhead over direct (target: at most +1.5 ms).
//   node --import tsx bench/connection-overhead.ts [--count 200]
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { startBenchSetup, fmt } from './lib.ts';
import { socksConnect, plainConnect, httpGet } from './socks-client.ts';

const { values } = parseArgs({ options: { count: { type: 'string', default: '200' } } });
const COUNT = Number(values.count);

const setup = await startBenchSetup();
const { originPort, openssh } = setup;
const socks = setup.socksPort;

async function run(open: () => Promise<import('node:net').Socket>): Promise<number> {
  for (let i = 0; i < 20; i++) await httpGet(await open(), '127.0.0.1', '/bytes/1024'); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < COUNT; i++) {
    const n = await httpGet(await open(), '127.0.0.1', '/bytes/1024');
    if (n !== 1024) throw new Error(`got ${n} bytes`);
  }
  return (performance.now() - t0) / COUNT;
}

const direct = await run(() => plainConnect('127.0.0.1', originPort));
const viaOpenSsh = await run(() => socksConnect(openssh.socksPort, '127.0.0.1', originPort));
const viaPostern = await run(() => socksConnect(socks, '127.0.0.1', originPort));
await setup.stop();

console.log(`new-connection overhead, ${COUNT} sequential 1 KiB requests, each on a new connection`);
console.log(`  direct:          ${fmt(direct, 3)} ms per request`);
console.log(`  OpenSSH ssh -D:  ${fmt(viaOpenSsh, 3)} ms per request (+${fmt(viaOpenSsh - direct, 3)} ms)`);
console.log(
  `  Postern SOCKS5:  ${fmt(viaPostern, 3)} ms per request (+${fmt(viaPostern - direct, 3)} ms, target <= +1.5 ms)`,
);
process.exit(0);
