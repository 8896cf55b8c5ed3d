// New-connection overhead: COUNT sequential 1 KiB requests, each on a new connection: directly, through
// OpenSSH's `ssh -D`, and through Postern's SOCKS5 over an established OSSH tunnel. Prints the mean time per
// request and Postern's overhead over direct (target: at most +1.5 ms).
//
// Steady state is what is judged: a long-running client and server have their hot code optimised, while the
// first requests of a fresh Node process run in V8's slower tiers (the long-running commands ask V8 to optimise
// sooner, see common/tiering.ts, but it still takes a few hundred connections). So the first COUNT requests of
// the fresh processes are measured and shown as the cold figure; then every path is warmed up, and direct and
// Postern are measured in alternating rounds of COUNT requests so that drift on a shared machine hits both
// alike. The median round is the result; every round is printed.
//   node --import tsx bench/connection-overhead.ts [--count 200] [--rounds 5] [--warmup 2000]
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { startBenchSetup, fmt } from './lib.ts';
import { socksConnect, plainConnect, httpGet } from './socks-client.ts';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2000' },
  },
});
const COUNT = Number(values.count);
const ROUNDS = Number(values.rounds);
const WARMUP = Number(values.warmup);

const setup = await startBenchSetup();
const { originPort, openssh } = setup;
const socks = setup.socksPort;

type Open = () => Promise<import('node:net').Socket>;
const direct: Open = () => plainConnect('127.0.0.1', originPort);
const viaPostern: Open = () => socksConnect(socks, '127.0.0.1', originPort);
const viaOpenSsh: Open = () => socksConnect(openssh.socksPort, '127.0.0.1', originPort);

async function requests(open: Open, n: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const got = await httpGet(await open(), '127.0.0.1', '/bytes/1024');
    if (got !== 1024) throw new Error(`got ${got} bytes`);
  }
  return (performance.now() - t0) / n;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

// The first COUNT requests of the fresh processes, before any warm-up: shown, not judged.
const coldDirect = await requests(direct, COUNT);
const coldPostern = await requests(viaPostern, COUNT);
await requests(direct, WARMUP);
await requests(viaPostern, WARMUP);
// OpenSSH is native code with nothing to warm up, and each of its requests waits out a delayed ACK.
await requests(viaOpenSsh, 20);
const openSshMs = await requests(viaOpenSsh, COUNT);

const rounds: { direct: number; postern: number }[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const d = await requests(direct, COUNT);
  const p = await requests(viaPostern, COUNT);
  rounds.push({ direct: d, postern: p });
}
await setup.stop();

const mid = median(rounds.map((r) => r.postern - r.direct));
const midRound = rounds.find((r) => r.postern - r.direct === mid) as { direct: number; postern: number };
console.log(
  `new-connection overhead, ${COUNT} sequential 1 KiB requests per round, each on a new connection ` +
    `(after ${WARMUP} warm-up requests per path)`,
);
rounds.forEach((r, i) =>
  console.log(
    `  round ${i + 1}: direct ${fmt(r.direct, 3)} ms, Postern ${fmt(r.postern, 3)} ms (+${fmt(r.postern - r.direct, 3)})`,
  ),
);
console.log(
  `  cold (the first ${COUNT} requests of fresh processes): direct ${fmt(coldDirect, 3)} ms, ` +
    `Postern ${fmt(coldPostern, 3)} ms (+${fmt(coldPostern - coldDirect, 3)})`,
);
console.log(`  direct:          ${fmt(midRound.direct, 3)} ms per request (median round)`);
console.log(
  `  OpenSSH ssh -D:  ${fmt(openSshMs, 3)} ms per request (+${fmt(openSshMs - midRound.direct, 3)} ms)`,
);
console.log(
  `  Postern SOCKS5:  ${fmt(midRound.postern, 3)} ms per request (+${fmt(mid, 3)} ms, target <= +1.5 ms)`,
);
process.exit(0);
