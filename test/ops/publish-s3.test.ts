// Publishing the signed list to S3-compatible object storage, and reading it back as a client would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ManualClock } from '../../src/common/clock.ts';
import { isPosternError } from '../../src/common/errors.ts';
import {
  initNetwork,
  generateServer,
  publishServerList,
  parseS3Url,
  SERVER_LIST_COMPRESSED_FILE,
} from '../../src/ops/index.ts';
import { readAuthenticatedDataPackage } from '../../src/protocol/authenticated-package.ts';
import { tempDir } from '../helpers/tmp.ts';
import { startObjectStore, S3_ACCESS_KEY, S3_SECRET_KEY } from '../helpers/object-store.ts';

const clock = new ManualClock();

test('s3:// targets are parsed strictly', () => {
  assert.deepEqual(parseS3Url('s3://my-bucket/a/b/'), { bucket: 'my-bucket', prefix: 'a/b' });
  assert.deepEqual(parseS3Url('s3://my-bucket'), { bucket: 'my-bucket', prefix: '' });
  for (const bad of ['s3://', 's3://A_B/x', 'http://bucket/x', 's3://-x/']) {
    assert.throws(
      () => parseS3Url(bad),
      (e: unknown) => isPosternError(e, 'BAD_ARGUMENT'),
      bad,
    );
  }
});

test('publish to an S3-compatible endpoint; a client fetches the object over HTTP and verifies it', async (t) => {
  const { endpoint } = await startObjectStore(t, ['lists']);
  process.env['AWS_ACCESS_KEY_ID'] = S3_ACCESS_KEY;
  process.env['AWS_SECRET_ACCESS_KEY'] = S3_SECRET_KEY;
  const dir = tempDir(t);
  const net = await initNetwork({ dir: join(dir, 'net'), clock, rsaBits: 1024 });
  t.after(() => net.close());
  const srv = await generateServer(
    net,
    { region: 'CA', ip: '127.0.0.1', out: join(dir, 'srv'), hostKeyBits: 1024 },
    clock,
  );

  const r = await publishServerList(net, 's3://lists/net1', clock, { endpoint });
  assert.deepEqual(r.written, ['s3://lists/net1/server_list', 's3://lists/net1/server_list_compressed']);

  const res = await fetch(`${endpoint}/lists/net1/${SERVER_LIST_COMPRESSED_FILE}`);
  assert.equal(res.status, 200);
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(
    readAuthenticatedDataPackage(body, net.file.RemoteServerListSignaturePublicKey),
    srv.encodedEntry,
  );

  await assert.rejects(
    publishServerList(net, 's3://no-such-bucket/x', clock, { endpoint }),
    (e: unknown) => isPosternError(e, 'UPLOAD') && /no-such-bucket/.test(e.message),
  );
  // A failed upload records no publication.
  assert.equal((await net.store.listPublications()).length, 1);
});
