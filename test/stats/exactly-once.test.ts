// Crash safety of the statistics pipeline: a 1,000,000-event run through three real processes (the writer
// playing the tunnel server's spool, `postern stats ship`, `postern backoffice run`), each killed with SIGKILL
// at random points and restarted. Afterwards every event is in the back office exactly once.
//
// After a writer is killed, what it must still write is worked out from what exists: the spool (read first)
// and the back office's rows (read second; a file the shipper deletes in between was acknowledged, so its events
// are in the rows by then). Events torn by the kill are absent from both and are written again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { RealClock } from '../../src/common/clock.ts';
import { freePort } from '../../src/common/free-port.ts';
import { initNetwork, generateServer } from '../../src/ops/index.ts';
import { certificateNames, ensureTlsIdentity } from '../../src/backoffice/index.ts';
import { listSpoolFiles, readSpoolFile } from '../../src/server/event-spool.ts';
import { openSqlDb, type SqlDb } from '../../src/store/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { DATABASE_BACKENDS, type DatabaseBackend } from '../helpers/databases.ts';

const EVENTS = Number(process.env['POSTERN_EXACTLY_ONCE_EVENTS'] ?? 1_000_000);
const KILLS = 9;
const MAIN = join(import.meta.dirname, '../../src/cli/main.ts');
const WRITER = join(import.meta.dirname, 'exactly-once-writer.ts');

interface Child {
  name: string;
  proc: ChildProcess;
  exited: Promise<number | null>;
  output: () => string;
}

function start(name: string, args: string[]): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  proc.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { name, proc, exited, output: () => out };
}

async function kill9(c: Child): Promise<void> {
  c.proc.kill('SIGKILL');
  await c.exited;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitForPort(port: number, child: Child): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (child.proc.exitCode !== null) throw new Error(`${child.name} exited: ${child.output()}`);
    const ok = await new Promise<boolean>((r) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`${child.name} never listened: ${child.output()}`);
}

/** Ranges [a, b] of 1..n whose flag is not set. */
function missingRanges(present: Uint8Array, n: number): [number, number][] {
  const out: [number, number][] = [];
  for (let s = 1; s <= n; s++) {
    if (present[s]) continue;
    const a = s;
    while (s + 1 <= n && !present[s + 1]) s++;
    out.push([a, s]);
  }
  return out;
}

async function run(
  t: { after(fn: () => void | Promise<void>): void },
  backend: DatabaseBackend,
): Promise<void> {
  {
    const dir = tempDir(t);
    const clock = new RealClock();
    const netDir = join(dir, 'network');
    const boDir = join(dir, 'backoffice');
    mkdirSync(boDir);
    const port = await freePort();
    // SQLite: the back office's own file. PostgreSQL: a fresh schema, named to the child process in the URL.
    const tdb = await backend.create();
    t.after(() => tdb.cleanup());
    let target = join(boDir, 'stats.sqlite');
    if (backend.name === 'postgres') {
      await tdb.open(); // creates the schema
      const u = new URL(tdb.target);
      u.searchParams.set('options', `-c search_path=${tdb.options.schema}`);
      target = u.toString();
    }
    writeFileSync(
      join(boDir, 'BO.json'),
      JSON.stringify({
        NetworkDirectory: netDir,
        ListenAddress: '127.0.0.1',
        ListenPort: port,
        RollupIntervalMs: 60_000,
        StatsDatabase: target,
      }),
    );
    const tls = ensureTlsIdentity({
      keyFile: join(boDir, 'backoffice-tls-key.pem'),
      certFile: join(boDir, 'backoffice-tls-cert.pem'),
      names: certificateNames('127.0.0.1', []),
      clock,
    });
    const net = await initNetwork({ dir: netDir, clock, rsaBits: 1024 });
    const g = await generateServer(
      net,
      {
        region: 'CA',
        ip: '127.0.0.1',
        out: join(dir, 'server'),
        protocols: ['OSSH'],
        hostKeyBits: 1024,
        hostId: 'eo-host',
        backOfficeUrl: `https://127.0.0.1:${port}`,
        backOfficeCertificate: tls.certPem,
      },
      clock,
    );
    await net.close();
    const spoolDir = join(dir, 'server', 'spool');
    mkdirSync(spoolDir, { recursive: true });

    const children = new Map<string, Child>();
    t.after(async () => {
      for (const c of children.values()) if (c.proc.exitCode === null) await kill9(c);
    });
    const startBackoffice = async () => {
      const c = start('backoffice', [MAIN, 'backoffice', 'run', '--config', join(boDir, 'BO.json')]);
      children.set('backoffice', c);
      await waitForPort(port, c);
    };
    const startShipper = () =>
      children.set('shipper', start('shipper', [MAIN, 'stats', 'ship', '--config', g.configPath]));
    let writerRuns = 0;
    const startWriter = (ranges: [number, number][]) => {
      const file = join(dir, `ranges-${writerRuns++}.json`);
      writeFileSync(file, JSON.stringify(ranges));
      children.set('writer', start('writer', [WRITER, spoolDir, file, 'eo-host']));
    };

    let db: SqlDb | undefined;
    const rows = async (): Promise<SqlDb> => (db ??= await openSqlDb(target));
    t.after(() => db?.close());

    /** Which event numbers exist: in the spool (read first), then in the back office. */
    const present = async (): Promise<Uint8Array> => {
      const seen = new Uint8Array(EVENTS + 1);
      for (const f of await listSpoolFiles(spoolDir)) {
        let r;
        try {
          r = await readSpoolFile(f.path);
        } catch {
          continue; // acknowledged and deleted meanwhile: its events are in the rows
        }
        for (const e of r.events) seen[Number((e as { bytes_up_tcp: number }).bytes_up_tcp)] = 1;
      }
      if (backend.name === 'postgres' || existsSync(target)) {
        for (const r of await (
          await rows()
        ).query<{ n: number }>(
          `SELECT bytes_up_tcp AS n FROM stats_events WHERE event_name = 'server_tunnel'`,
        )) {
          seen[Number(r.n)] = 1;
        }
      }
      return seen;
    };

    await startBackoffice();
    startShipper();
    startWriter([[1, EVENTS]]);

    const killed: string[] = [];
    for (let k = 0; k < KILLS; k++) {
      await sleep(700 + Math.floor(Math.random() * 2500));
      const writer = children.get('writer')!;
      const writerDone = writer.proc.exitCode !== null;
      if (writerDone && writer.proc.exitCode !== 0) throw new Error(`writer failed: ${writer.output()}`);
      const choices = writerDone ? ['shipper', 'backoffice'] : ['writer', 'shipper', 'backoffice'];
      const victim = choices[Math.floor(Math.random() * choices.length)]!;
      killed.push(victim);
      await kill9(children.get(victim)!);
      if (victim === 'backoffice') await startBackoffice();
      else if (victim === 'shipper') startShipper();
      else {
        const missing = missingRanges(await present(), EVENTS);
        if (missing.length > 0) startWriter(missing);
      }
    }
    assert.ok(new Set(killed).size >= 2, `kills hit more than one process: ${killed.join(', ')}`);

    // Let the writer finish, then the shipper drain into the back office.
    const writer = children.get('writer')!;
    assert.equal(await writer.exited, 0, writer.output());
    const count = async () =>
      Number((await (await rows()).query<{ c: number }>(`SELECT count(*) AS c FROM stats_events`))[0]!.c);
    let last = -1;
    for (let i = 0; i < 600; i++) {
      const c = await count();
      assert.ok(c <= EVENTS, `more rows (${c}) than events: something was counted twice`);
      if (c === EVENTS) break;
      if (c === last && i > 100) break;
      last = c;
      await sleep(500);
    }
    const [r] = await (
      await rows()
    ).query<{ c: number; d: number; lo: number; hi: number }>(
      `SELECT count(*) AS c, count(DISTINCT bytes_up_tcp) AS d, min(bytes_up_tcp) AS lo, max(bytes_up_tcp) AS hi
     FROM stats_events WHERE event_name = 'server_tunnel'`,
    );
    assert.deepEqual(
      { count: Number(r!.c), distinct: Number(r!.d), min: Number(r!.lo), max: Number(r!.hi) },
      { count: EVENTS, distinct: EVENTS, min: 1, max: EVENTS },
      `kills: ${killed.join(', ')}; writer runs: ${writerRuns}`,
    );
    assert.deepEqual(
      existsSync(join(spoolDir, 'rejected')) ? readdirSync(join(spoolDir, 'rejected')) : [],
      [],
      'no spool file was refused',
    );
    for (const c of children.values()) if (c.proc.exitCode === null) await kill9(c);
    await db?.close();
    db = undefined;
  }
}

for (const backend of DATABASE_BACKENDS) {
  test(
    `${EVENTS.toLocaleString('en')} events, processes killed with SIGKILL at random: each counted exactly once (${backend.name})`,
    { timeout: 900_000, skip: backend.skip },
    (t) => run(t, backend),
  );
}
