// Shipper memory whatever the spool size: `postern stats ship --once` (its own process) sends a small spool and a
// large one to a back office; its peak RSS is read from /proc for each, beside an idle Node process running the
// same way (the baseline). Bounded memory means the large spool costs no more than the small one.
//   node --import tsx bench/shipper-memory.ts [--small-mb 8] [--large-mb 256]
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RealClock } from '../src/common/clock.ts';
import { silentLogger } from '../src/common/logger.ts';
import { initNetwork, generateServer } from '../src/ops/index.ts';
import { runBackoffice, certificateNames, ensureTlsIdentity } from '../src/backoffice/index.ts';
import { openStatsStore } from '../src/stats/sql-stats-store.ts';
import { spoolFileName } from '../src/server/event-spool.ts';
import { hourOf } from '../src/stats/events.ts';
import { numberedTunnelEvent } from '../test/helpers/numbered-event.ts';
import { POSTERN_BIN, tempDir, fmt } from './lib.ts';

const { values } = parseArgs({
  options: { 'small-mb': { type: 'string', default: '8' }, 'large-mb': { type: 'string', default: '256' } },
});
const FILE_BYTES = 8 * 1024 * 1024;

/** Peak RSS (VmHWM) of a child process, sampled until it exits. */
function peakRss(args: string[]): Promise<{ peak: number; code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  let peak = 0;
  const timer = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch {
      // exited
    }
  }, 20);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearInterval(timer);
      resolve({ peak, code, out, err });
    }),
  );
}

function writeSpool(dir: string, mb: number, hostId: string): number {
  mkdirSync(dir, { recursive: true });
  const timestamp = hourOf(new Date());
  let events = 0;
  let file = 0;
  let text = '';
  const flush = () => {
    writeFileSync(join(dir, spoolFileName(1_764_000_000_000 + file, file)), text, { mode: 0o600 });
    file++;
    text = '';
  };
  while ((file * FILE_BYTES + text.length) / 1024 / 1024 < mb) {
    text += JSON.stringify(numberedTunnelEvent(events, hostId, timestamp, events % 100_000)) + '\n';
    events++;
    if (text.length >= FILE_BYTES) flush();
  }
  flush();
  // The newest file stays (the writer might still append): an empty one, as after a rotation.
  writeFileSync(join(dir, spoolFileName(1_764_000_000_000 + file, file)), '', { mode: 0o600 });
  return events;
}

const dir = tempDir();
const clock = new RealClock();
const boDir = join(dir, 'backoffice');
mkdirSync(boDir);
const boConfig = join(boDir, 'BO.json');
writeFileSync(
  boConfig,
  JSON.stringify({ NetworkDirectory: join(dir, 'net'), ListenAddress: '127.0.0.1', ListenPort: 0 }),
);
const tls = ensureTlsIdentity({
  keyFile: join(boDir, 'backoffice-tls-key.pem'),
  certFile: join(boDir, 'backoffice-tls-cert.pem'),
  names: certificateNames('127.0.0.1', []),
  clock,
});
const net = await initNetwork({ dir: join(dir, 'net'), clock, rsaBits: 1024 });
const backoffice = await runBackoffice({
  configFile: boConfig,
  clock,
  log: silentLogger(),
  openStore: (target, o) => openStatsStore(target, o),
});

const rows: string[] = [];
const baseline = await peakRss(['--import', 'tsx', '-e', 'setTimeout(() => {}, 1500)']);
rows.push(`  idle Node process (baseline):       peak RSS ${fmt(baseline.peak / 2 ** 20, 1)} MiB`);
const peaks: number[] = [];
for (const [label, mb] of [
  ['small', Number(values['small-mb'])],
  ['large', Number(values['large-mb'])],
] as const) {
  const g = await generateServer(
    net,
    {
      region: 'CA',
      ip: '127.0.0.1',
      out: join(dir, `srv-${label}`),
      protocols: ['OSSH'],
      hostKeyBits: 1024,
      hostId: `bench-${label}`,
      backOfficeUrl: backoffice.url,
      backOfficeCertificate: tls.certPem,
    },
    clock,
  );
  const events = writeSpool(join(dir, `srv-${label}`, 'spool'), mb, `bench-${label}`);
  const t0 = performance.now();
  const r = await peakRss([
    '--import',
    'tsx',
    POSTERN_BIN,
    'stats',
    'ship',
    '--once',
    '--json',
    '--config',
    g.configPath,
  ]);
  const seconds = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`stats ship failed: ${r.out} ${r.err}`);
  const shipped = (JSON.parse(r.out) as { events: number }).events;
  if (shipped !== events) throw new Error(`shipped ${shipped} of ${events} events`);
  peaks.push(r.peak);
  rows.push(
    `  ${label} spool ${String(mb).padStart(4)} MB (${events.toLocaleString('en')} events): peak RSS ${fmt(r.peak / 2 ** 20, 1)} MiB, ` +
      `shipped in ${fmt(seconds, 1)} s (${fmt(events / seconds / 1000, 0)}k events/s into SQLite over HTTPS)`,
  );
}
await backoffice.stop();
await net.close();
console.log('stats shipper memory (postern stats ship --once, its own process)');
for (const r of rows) console.log(r);
console.log(`  large / small spool peak RSS: ${fmt(peaks[1]! / peaks[0]!, 2)}x`);
process.exit(0);
