// Runs the real `postern` binary as a user would.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const POSTERN_BIN = fileURLToPath(new URL('../../bin/postern.js', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function postern(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r = spawnSync(process.execPath, [POSTERN_BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function posternSpawn(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [POSTERN_BIN, ...args], { env: { ...process.env, ...env } });
}

/** Resolves with everything printed on stdout once `marker` has appeared; rejects on exit or timeout. */
export function waitForOutput(
  child: ChildProcessWithoutNullStreams,
  marker: string,
  ms = 30_000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => reject(new Error(`timed out waiting for "${marker}"; stderr: ${err}`)),
      ms,
    );
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(marker)) {
        clearTimeout(timer);
        resolve(out);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited ${code} before "${marker}"; stderr: ${err}`));
    });
  });
}
