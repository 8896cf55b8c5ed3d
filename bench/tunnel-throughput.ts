// Throughput and CPU cost: curl downloads SIZE bytes from a loopback origin (a) directly, (b) through
// OpenSSH's `ssh -D` (aes128-gcm@openssh.com), (c) through Postern's SOCKS5 over OSSH. Prints MB/s, CPU
// seconds per GB of the tunnel's two processes (client + server), and Postern's ratios to OpenSSH.
//   node --import tsx bench/tunnel-throughput.ts [--size-mib 1024] [--rounds 3]
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { startBenchSetup, treeCpuSeconds, fmt, type Proc } from './lib.ts';

const { values } = parseArgs({
  options: { 'size-mib': { type: 'string', default: '1024' }, rounds: { type: 'string', default: '3' } },
});
const SIZE = Number(values['size-mib']) * 1024 * 1024;
const ROUNDS = Number(values.rounds);

interface Sample {
  mbps: number;
  cpuPerGb: number;
}

function curl(url: string, socksPort?: number): number {
  const args = ['-s', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', '--max-time', '300'];
  if (socksPort) args.push('--socks5-hostname', `127.0.0.1:${socksPort}`);
  const r = spawnSync('curl', [...args, url], { encoding: 'utf8' });
  const [bytes, secs] = r.stdout.trim().split(' ').map(Number);
  if (r.status !== 0 || bytes !== SIZE || !secs)
    throw new Error(`curl failed (${r.status}): ${r.stdout} ${r.stderr}`);
  return SIZE / secs / 1e6;
}

function measure(url: string, socksPort: number | undefined, procs: Proc[]): Sample {
  const cpu0 = procs.reduce((s, p) => s + treeCpuSeconds(p.child.pid as number), 0);
  const mbps = curl(url, socksPort);
  const cpu1 = procs.reduce((s, p) => s + treeCpuSeconds(p.child.pid as number), 0);
  return { mbps, cpuPerGb: (cpu1 - cpu0) / (SIZE / 1e9) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const setup = await startBenchSetup();
const { client, server, openssh } = setup;
const socks = setup.socksPort;
const url = `http://127.0.0.1:${setup.originPort}/bytes/${SIZE}`;

const results: Record<string, Sample[]> = { direct: [], openssh: [], postern: [] };
curl(url, socks); // warm-up
curl(url, openssh.socksPort);
for (let i = 0; i < ROUNDS; i++) {
  results['direct']?.push(measure(url, undefined, []));
  results['openssh']?.push(measure(url, openssh.socksPort, [openssh.ssh, openssh.sshd]));
  results['postern']?.push(measure(url, socks, [client, server]));
}
await setup.stop();

const m = (k: string, f: keyof Sample) => median((results[k] ?? []).map((s) => s[f]));
console.log(`tunnel throughput, ${SIZE / 1024 / 1024} MiB per download, median of ${ROUNDS} rounds`);
console.log(`  direct:            ${fmt(m('direct', 'mbps'), 0)} MB/s`);
console.log(
  `  OpenSSH ssh -D:    ${fmt(m('openssh', 'mbps'), 0)} MB/s, ${fmt(m('openssh', 'cpuPerGb'))} CPU-s/GB (ssh + sshd)`,
);
console.log(
  `  Postern OSSH:      ${fmt(m('postern', 'mbps'), 0)} MB/s, ${fmt(m('postern', 'cpuPerGb'))} CPU-s/GB (client + server)`,
);
const tput = m('postern', 'mbps') / m('openssh', 'mbps');
const cpu = m('postern', 'cpuPerGb') / m('openssh', 'cpuPerGb');
console.log(
  `  Postern / OpenSSH: ${fmt(tput)}x MB/s (target >= 0.75), ${fmt(cpu)}x CPU per GB (target <= 1.5)`,
);
for (const [k, xs] of Object.entries(results)) {
  console.log(
    `  ${k} rounds: ${xs.map((s) => `${fmt(s.mbps, 0)} MB/s ${fmt(s.cpuPerGb)} s/GB`).join(' | ')}`,
  );
}
process.exit(0);
