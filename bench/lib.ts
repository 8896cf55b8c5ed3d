// Shared pieces of the benchmarks: processes and their CPU/RSS from /proc, a throw-away network, a local
// OpenSSH server as the baseline. Everything listens on loopback only, and every run stops by itself.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
  chmodSync,
  existsSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ManualClock } from '../src/common/clock.ts';
import { writeJsonAtomic } from '../src/common/files.ts';
import { freePort } from '../src/common/free-port.ts';
import { initNetwork, addSponsor, generateServer, makeClientConfig } from '../src/ops/index.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const POSTERN_BIN = join(ROOT, 'bin', 'postern.js');
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

export function tempDir(prefix = 'postern-bench-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export { freePort };

function processTable(): Map<number, { ppid: number; ticks: number }> {
  const table = new Map<number, { ppid: number; ticks: number }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // f[1] = ppid; f[11..14] = utime, stime, cutime, cstime
      table.set(Number(name), {
        ppid: Number(f[1]),
        ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
      });
    } catch {
      // the process ended while we looked
    }
  }
  return table;
}

/** A process and its living descendants. */
export function treePids(rootPid: number): number[] {
  const table = processTable();
  const out: number[] = [];
  for (const pid of table.keys()) {
    let p: number | undefined = pid;
    while (p !== undefined && p > 1 && p !== rootPid) p = table.get(p)?.ppid;
    if (p === rootPid) out.push(pid);
  }
  return out;
}

/** CPU seconds (user + system) of a process and all its living descendants, plus reaped children. */
export function treeCpuSeconds(rootPid: number): number {
  const table = processTable();
  return treePids(rootPid).reduce((sum, pid) => sum + (table.get(pid)?.ticks ?? 0), 0) / CLK_TCK;
}

/** Resident memory of a process; 0 once it has ended. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export interface Proc {
  child: ChildProcess;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function startProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  process.once('exit', () => child.kill('SIGKILL'));
  return {
    child,
    output: () => out,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export async function waitForOutput(p: Proc, pattern: RegExp, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pattern.test(p.output())) {
    if (p.child.exitCode !== null) throw new Error(`process exited: ${p.output()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}: ${p.output()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const BENCH_SPONSOR = '0123456789ABCDEF';

/** A network with one OSSH+SSH server on loopback and a client config pointing at it. */
export async function makeLocalNetwork(dir: string): Promise<{ serverConfig: string; clientConfig: string }> {
  const clock = new ManualClock(Date.now());
  const net = await initNetwork({ dir: join(dir, 'net'), clock });
  await addSponsor(net.store, { id: BENCH_SPONSOR, name: 'bench', homePages: [], domainRegexes: [] }, clock);
  const g = await generateServer(
    net,
    {
      region: 'CA',
      ip: '127.0.0.1',
      out: join(dir, 'srv'),
      protocols: ['OSSH', 'SSH'],
      ports: { OSSH: await freePort(), SSH: await freePort() },
    },
    clock,
  );
  const clientConfig = join(dir, 'client.json');
  writeJsonAtomic(clientConfig, await makeClientConfig(net, { sponsorId: BENCH_SPONSOR }));
  await net.close();
  return { serverConfig: g.configPath, clientConfig };
}

/** Installs Debian's openssh-server when it is missing (the benchmarks' baseline). */
export function ensureOpenSsh(): void {
  if (existsSync('/usr/sbin/sshd') && spawnSync('which', ['ssh']).status === 0) return;
  console.log('installing openssh-server and openssh-client (baseline) ...');
  spawnSync('apt-get', ['update', '-q'], { stdio: 'inherit' });
  const r = spawnSync('apt-get', ['install', '-y', '-q', 'openssh-server', 'openssh-client'], {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (r.status !== 0) throw new Error('could not install openssh-server');
}

/**
 * A private sshd on a loopback port (its own host key, config and authorized key; nothing system-wide), and an
 * `ssh -D` SOCKS front through it with aes128-gcm@openssh.com. Returns the SOCKS port and both processes.
 */
export async function startOpenSshSocks(dir: string): Promise<{ socksPort: number; sshd: Proc; ssh: Proc }> {
  ensureOpenSsh();
  const d = join(dir, 'openssh');
  spawnSync('mkdir', ['-p', d]);
  chmodSync(d, 0o700);
  for (const k of ['host', 'user']) {
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(d, k)]);
  }
  writeFileSync(join(d, 'authorized_keys'), readFileSync(join(d, 'user.pub')));
  chmodSync(join(d, 'authorized_keys'), 0o600);
  const sshdPort = await freePort();
  const user = spawnSync('id', ['-un'], { encoding: 'utf8' }).stdout.trim();
  writeFileSync(
    join(d, 'sshd_config'),
    [
      `Port ${sshdPort}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(d, 'host')}`,
      `AuthorizedKeysFile ${join(d, 'authorized_keys')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'PermitRootLogin yes',
      'StrictModes no',
      'AllowTcpForwarding yes',
      `PidFile ${join(d, 'sshd.pid')}`,
      'Ciphers aes128-gcm@openssh.com',
      '',
    ].join('\n'),
  );
  spawnSync('mkdir', ['-p', '/run/sshd']);
  const sshd = startProcess('/usr/sbin/sshd', ['-D', '-e', '-f', join(d, 'sshd_config')]);
  await waitForPort(sshdPort);
  const socksPort = await freePort();
  const ssh = startProcess('ssh', [
    '-N',
    '-D',
    `127.0.0.1:${socksPort}`,
    '-p',
    String(sshdPort),
    '-i',
    join(d, 'user'),
    '-c',
    'aes128-gcm@openssh.com',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    `UserKnownHostsFile=${join(d, 'known_hosts')}`,
    '-o',
    'BatchMode=yes',
    `${user}@127.0.0.1`,
  ]);
  await waitForPort(socksPort);
  return { socksPort, sshd, ssh };
}

export function fmt(n: number, digits = 2): string {
  return n.toFixed(digits);
}

export interface BenchSetup {
  dir: string;
  originPort: number;
  /** Postern's client and server processes, connected over OSSH */
  client: Proc;
  server: Proc;
  socksPort: number;
  /** OpenSSH's `ssh -D` SOCKS port and its processes */
  openssh: { socksPort: number; sshd: Proc; ssh: Proc };
  stop(): Promise<void>;
}

/** Extra Node flags for the Postern client and server processes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof". */
const POSTERN_NODE_FLAGS = (process.env['POSTERN_BENCH_NODE_FLAGS'] ?? '').split(' ').filter(Boolean);

/** The three things every tunnel benchmark compares: an origin, Postern over OSSH, and OpenSSH's `ssh -D`. */
export async function startBenchSetup(): Promise<BenchSetup> {
  const dir = tempDir();
  const origin = startProcess(process.execPath, [
    '--import',
    'tsx',
    new URL('./origin-server.ts', import.meta.url).pathname,
  ]);
  await waitForOutput(origin, /origin port \d+/);
  const originPort = Number(/origin port (\d+)/.exec(origin.output())?.[1]);
  const { serverConfig, clientConfig } = await makeLocalNetwork(dir);
  const server = startProcess(process.execPath, [
    ...POSTERN_NODE_FLAGS,
    POSTERN_BIN,
    'server',
    'run',
    '--config',
    serverConfig,
    '--allow-destination',
    '127.0.0.0/8',
  ]);
  await waitForOutput(server, /running/);
  const socksPort = await freePort();
  const client = startProcess(process.execPath, [
    ...POSTERN_NODE_FLAGS,
    POSTERN_BIN,
    'client',
    'run',
    '--config',
    clientConfig,
    '--socks',
    `127.0.0.1:${socksPort}`,
    '--http',
    `127.0.0.1:${await freePort()}`,
    '--protocols',
    'OSSH',
    '--data',
    join(dir, 'client-data'),
  ]);
  await waitForOutput(client, /connected via OSSH/);
  await waitForPort(socksPort);
  const openssh = await startOpenSshSocks(dir);
  return {
    dir,
    originPort,
    client,
    server,
    socksPort,
    openssh,
    stop: async () => {
      await Promise.all([
        client.stop('SIGINT'),
        server.stop('SIGINT'),
        openssh.ssh.stop(),
        openssh.sshd.stop(),
        origin.stop(),
      ]);
    },
  };
}
