// Establishment when most servers are blocked: the client starts with CANDIDATES signed entries, of which
// most lead to a listener that accepts and never answers (a blackholed server), a few to a closed port
// (refused), and one to a real Postern server. Prints the time from start to "connected" for several runs,
// each with a fresh client data folder (no remembered last-good server). Target: under 2 s.
//   node --import tsx bench/establishment.ts [--runs 5]
import { parseArgs } from 'node:util';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ManualClock } from '../src/common/clock.ts';
import { writeJsonAtomic } from '../src/common/files.ts';
import { initNetwork, addSponsor, generateServer, makeClientConfig } from '../src/ops/index.ts';
import { POSTERN_BIN, tempDir, freePort, startProcess, waitForOutput, fmt, BENCH_SPONSOR } from './lib.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const RUNS = Number(values.runs);
const SILENT = 45;
const REFUSING = 4;

const dir = tempDir();
const clock = new ManualClock(Date.now());
const net = await initNetwork({ dir: join(dir, 'net'), clock });
await addSponsor(net.store, { id: BENCH_SPONSOR, name: 'bench', homePages: [], domainRegexes: [] }, clock);

// Blackholed servers: distinct loopback addresses whose listener takes the connection and never speaks.
const held: Socket[] = [];
const silent = createServer((s) => {
  held.push(s);
  s.on('error', () => undefined);
});
const silentHosts: { ip: string; port: number }[] = [];
for (let i = 0; i < SILENT; i++) {
  const ip = `127.0.2.${i + 1}`;
  const l = createServer((s) => silent.emit('connection', s));
  const port = await new Promise<number>((r) =>
    l.listen(0, ip, () => {
      const a = l.address();
      r(typeof a === 'object' && a ? a.port : 0);
    }),
  );
  silentHosts.push({ ip, port });
}
let n = 0;
for (const h of silentHosts) {
  await generateServer(
    net,
    { region: 'CA', ip: h.ip, out: join(dir, `s${n++}`), ports: { OSSH: h.port }, hostKeyBits: 1024 },
    clock,
  );
}
for (let i = 0; i < REFUSING; i++) {
  await generateServer(
    net,
    {
      region: 'CA',
      ip: `127.0.3.${i + 1}`,
      out: join(dir, `s${n++}`),
      ports: { OSSH: await freePort() },
      hostKeyBits: 1024,
    },
    clock,
  );
}
const good = await generateServer(
  net,
  { region: 'CA', ip: '127.0.0.1', out: join(dir, 'good'), ports: { OSSH: await freePort() } },
  clock,
);
const config = await makeClientConfig(net, { sponsorId: BENCH_SPONSOR });
await net.close();
console.log(
  `${config.EmbeddedServerEntries.length} candidates: ${SILENT} never answer, ${REFUSING} refuse, 1 works`,
);

const server = startProcess(process.execPath, [POSTERN_BIN, 'server', 'run', '--config', good.configPath]);
await waitForOutput(server, /running/);

const times: number[] = [];
for (let run = 0; run < RUNS; run++) {
  const clientConfig = join(dir, `client-${run}.json`);
  // A different order each run, so the good entry is not always first.
  const entries = [...config.EmbeddedServerEntries].sort(() => Math.random() - 0.5);
  writeJsonAtomic(clientConfig, { ...config, EmbeddedServerEntries: entries });
  const t0 = performance.now();
  const client = startProcess(process.execPath, [
    POSTERN_BIN,
    'client',
    'run',
    '--config',
    clientConfig,
    '--socks',
    `127.0.0.1:${await freePort()}`,
    '--http',
    `127.0.0.1:${await freePort()}`,
    '--data',
    join(dir, `client-data-${run}`),
  ]);
  await waitForOutput(client, /connected via/, 60_000);
  times.push((performance.now() - t0) / 1000);
  await client.stop('SIGINT');
}
await server.stop('SIGINT');
for (const s of held) s.destroy();

const sorted = [...times].sort((a, b) => a - b);
console.log(
  `establishment, ${RUNS} runs (process start to "connected", seconds): ${times.map((t) => fmt(t)).join(' ')}`,
);
console.log(
  `  median ${fmt(sorted[Math.floor(sorted.length / 2)] as number)} s, worst ${fmt(sorted[sorted.length - 1] as number)} s (target < 2 s)`,
);
process.exit(0);
