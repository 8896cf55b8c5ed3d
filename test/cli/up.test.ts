// `postern up` on a fresh data folder: it sets the network up, serves the signed list, and stops on Ctrl-C.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { posternSpawn, waitForOutput } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';
import { readAuthenticatedDataPackage } from '../../src/protocol/authenticated-package.ts';

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

async function runUp(data: string, port: number): Promise<void> {
  const child = posternSpawn(['up', '--data', data, '--lists', `127.0.0.1:${port}`]);
  await waitForOutput(child, 'press Ctrl-C to stop');
  const client = JSON.parse(readFileSync(join(data, 'client.json'), 'utf8')) as {
    RemoteServerListURLs: { URL: string }[];
    RemoteServerListSignaturePublicKey: string;
    EmbeddedServerEntries: string[];
  };
  const url = client.RemoteServerListURLs.find((u) => u.URL.includes(`:${port}/`))?.URL;
  assert.ok(url, 'the client config points at the served list');
  const res = await fetch(url);
  assert.equal(res.status, 200);
  const list = readAuthenticatedDataPackage(
    Buffer.from(await res.arrayBuffer()),
    client.RemoteServerListSignaturePublicKey,
  );
  assert.deepEqual(list.split('\n'), client.EmbeddedServerEntries);
  assert.equal(
    (await fetch(url.replace('server_list_compressed', '..%2Fnetwork%2Fnetwork.json'))).status,
    404,
  );
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGINT');
  assert.equal(await exited, 0);
}

test('postern up: first run creates the network, a second run reuses it', async (t) => {
  const data = join(tempDir(t), 'postern-data');
  await runUp(data, await freePort());
  const entry = readFileSync(join(data, 'server', 'server-entry.dat'), 'utf8');
  assert.ok(existsSync(join(data, 'network', 'network.json')));
  await runUp(data, await freePort());
  assert.equal(
    readFileSync(join(data, 'server', 'server-entry.dat'), 'utf8'),
    entry,
    'same server on the second run',
  );
});
