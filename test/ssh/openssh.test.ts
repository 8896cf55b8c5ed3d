// Interoperability with OpenSSH's client: `ssh -W` through our server (password auth with the Psiphon payload,
// a direct-tcpip channel, EOF handling). Skipped when no `ssh` binary is installed.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../helpers/tmp.ts';
import { passwordPayload, sha256, startEcho, startServer, USER } from './harness.ts';

const sshAvailable = spawnSync('ssh', ['-V'], { encoding: 'utf8' }).status === 0;

test(
  'OpenSSH `ssh -W` authenticates with the password payload and forwards data both ways',
  { skip: sshAvailable ? false : 'OpenSSH client (ssh) not installed' },
  async (t) => {
    const dir = tempDir(t, 'postern-ssh-');
    const askpass = join(dir, 'askpass.sh');
    // SSH_ASKPASS_REQUIRE=force makes ssh read the password from this program instead of a terminal.
    writeFileSync(askpass, `#!/bin/sh\nprintf '%s\\n' '${passwordPayload()}'\n`);
    chmodSync(askpass, 0o700);
    const server = await startServer(t);
    const echoPort = await startEcho(t);
    const data = randomBytes(2 * 1024 * 1024);
    const child = spawn(
      'ssh',
      [
        '-F',
        '/dev/null',
        '-o',
        'StrictHostKeyChecking=no',
        '-o',
        `UserKnownHostsFile=${join(dir, 'known_hosts')}`,
        '-o',
        'PreferredAuthentications=password',
        '-o',
        'PubkeyAuthentication=no',
        '-o',
        'NumberOfPasswordPrompts=1',
        '-o',
        'LogLevel=ERROR',
        '-p',
        String(server.port),
        '-W',
        `127.0.0.1:${echoPort}`,
        `${USER}@127.0.0.1`,
      ],
      {
        env: { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: ':0', HOME: dir },
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    t.after(() => child.kill());
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(data);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 0, `ssh exited with ${code}: ${stderr}`);
    const back = Buffer.concat(out);
    assert.equal(back.length, data.length);
    assert.equal(sha256(back), sha256(data));
    assert.equal(server.connections[0]?.isAuthenticated, true);
  },
);
