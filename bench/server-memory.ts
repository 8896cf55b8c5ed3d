// Server memory under load: COUNT concurrent 1 MiB downloads through Postern's SOCKS5 over one OSSH tunnel;
// samples the server's RSS every 10 ms and prints its growth over the idle tunnel per busy connection
// (target: at most 256 KiB). The same load through OpenSSH's sshd is printed for comparison.
//   node --import tsx bench/server-memory.ts [--count 200]
import { parseArgs } from 'node:util';
import { startBenchSetup, rssBytes, treePids, fmt } from './lib.ts';
import { socksConnect, httpGet } from './socks-client.ts';

const { values } = parseArgs({ options: { count: { type: 'string', default: '200' } } });
const COUNT = Number(values.count);
const SIZE = 1024 * 1024;

const setup = await startBenchSetup();
const { originPort, openssh } = setup;
const socks = setup.socksPort;
const { server } = setup;

/** Peak RSS growth of the processes `pids()` while COUNT downloads run at once. */
async function load(socksPort: number, pids: () => number[]): Promise<number> {
  // one round first, so lazily built code paths and pools are not counted as per-connection memory
  await Promise.all(
    Array.from({ length: 10 }, async () =>
      httpGet(await socksConnect(socksPort, '127.0.0.1', originPort), '127.0.0.1', `/bytes/${SIZE}`),
    ),
  );
  await new Promise((r) => setTimeout(r, 500));
  const sum = () => pids().reduce((s, p) => s + rssBytes(p), 0);
  const base = sum();
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, sum())), 10);
  const sizes = await Promise.all(
    Array.from({ length: COUNT }, async () =>
      httpGet(await socksConnect(socksPort, '127.0.0.1', originPort), '127.0.0.1', `/bytes/${SIZE}`),
    ),
  );
  clearInterval(timer);
  if (sizes.some((n) => n !== SIZE)) throw new Error('a download came back short');
  return (peak - base) / COUNT;
}

const serverPid = server.child.pid as number;
const postern = await load(socks, () => [serverPid]);
const opensshGrowth = await load(openssh.socksPort, () => treePids(openssh.sshd.child.pid as number));
await setup.stop();

console.log(`server memory, ${COUNT} concurrent 1 MiB downloads through one tunnel`);
console.log(`  Postern server: +${fmt(postern / 1024, 1)} KiB RSS per busy connection (target <= 256 KiB)`);
console.log(`  OpenSSH sshd (all its processes): +${fmt(opensshGrowth / 1024, 1)} KiB per connection`);
process.exit(0);
