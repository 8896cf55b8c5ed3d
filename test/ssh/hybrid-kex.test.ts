// mlkem768x25519-sha256: both halves agree on the secret, bad peer values are refused, and the KEXINIT
// handling picks the hybrid exactly when RFC 4253 negotiation would. (Interoperability with Go's crypto/ssh,
// whose crypto/mlkem is independent of ours, was checked by hand in both directions; see the README.)

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  HYBRID_KEX,
  HybridClientExchange,
  HybridServerExchange,
  negotiateKex,
  readKexList,
} from '../../src/ssh/hybrid-kex.ts';
import { connectClient, startServer } from './harness.ts';

test('client and server halves derive the same 32-byte secret from values of the specified sizes', () => {
  const client = new HybridClientExchange();
  const server = new HybridServerExchange();
  const qc = client.publicValue();
  assert.equal(qc.length, 1184 + 32);
  const k1 = server.computeSecret(qc);
  assert.ok(Buffer.isBuffer(k1));
  const qs = server.publicValue();
  assert.equal(qs.length, 1088 + 32);
  const k2 = client.computeSecret(qs);
  assert.ok(Buffer.isBuffer(k2));
  assert.equal(k1.length, 32);
  assert.deepEqual(k1, k2);
});

test('wrong lengths and invalid keys are errors; a tampered ciphertext yields a different secret', () => {
  const server = new HybridServerExchange();
  assert.ok(server.computeSecret(Buffer.alloc(100)) instanceof Error);
  // Coefficients of 0xfff are not reduced modulo q: FIPS 203's encapsulation key check refuses them.
  assert.ok(server.computeSecret(Buffer.alloc(1216, 0xff)) instanceof Error);
  assert.throws(() => new HybridServerExchange().publicValue());

  const client = new HybridClientExchange();
  const good = new HybridServerExchange();
  const k = good.computeSecret(client.publicValue()) as Buffer;
  const tampered = Buffer.from(good.publicValue());
  tampered[10]! ^= 1;
  const k2 = client.computeSecret(tampered);
  assert.ok(Buffer.isBuffer(k2));
  assert.notDeepEqual(k2, k);
  assert.ok(client.computeSecret(Buffer.alloc(5)) instanceof Error);
});

function kexinit(kex: string[]): Buffer {
  const list = Buffer.from(kex.join(','), 'latin1');
  const rest = Buffer.alloc(9 * 4 + 5);
  const out = Buffer.concat([Buffer.from([20]), randomBytes(16), Buffer.alloc(4), list, rest]);
  out.writeUInt32BE(list.length, 17);
  return out;
}

test('KEXINIT lists are read safely and negotiation follows the client order, skipping extension names', () => {
  assert.deepEqual(readKexList(kexinit(['a', 'b']))?.names, ['a', 'b']);
  assert.equal(readKexList(Buffer.from([20, 1, 2])), null);
  const truncated = kexinit(['abc']);
  assert.equal(readKexList(truncated.subarray(0, 22)), null);
  assert.equal(
    negotiateKex(['ext-info-c', HYBRID_KEX, 'curve25519-sha256'], ['curve25519-sha256', HYBRID_KEX]),
    HYBRID_KEX,
  );
  assert.equal(negotiateKex(['kex-strict-c-v00@openssh.com'], ['kex-strict-c-v00@openssh.com']), null);
  assert.equal(
    negotiateKex(['x', 'ecdh-sha2-nistp256'], [HYBRID_KEX, 'ecdh-sha2-nistp256']),
    'ecdh-sha2-nistp256',
  );
});

test('a client without the hybrid negotiates a classical exchange with our server', async (t) => {
  const server = await startServer(t);
  const client = await connectClient(t, server, {
    algorithms: { kex: ['curve25519-sha256', 'ecdh-sha2-nistp256'] },
  });
  assert.equal(client.negotiated?.kex, 'curve25519-sha256');
  assert.equal(client.hybridKex.used, 0);
  const hybridClient = await connectClient(t, server, {
    algorithms: { kex: ['ecdh-sha2-nistp384', HYBRID_KEX] },
  });
  assert.equal(hybridClient.negotiated?.kex, 'ecdh-sha2-nistp384', 'the client order decides');
  const pq = await connectClient(t, server, { algorithms: { kex: [HYBRID_KEX] } });
  assert.equal(pq.negotiated?.kex, HYBRID_KEX);
  assert.equal(pq.hybridKex.used, 1);
  assert.deepEqual(await pq.request('echo', Buffer.from('pq')), Buffer.from('pq'));
});
