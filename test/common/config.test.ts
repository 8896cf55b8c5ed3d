import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { loadConfig, readJsonFile, MAX_CONFIG_BYTES } from '../../src/common/config.ts';
import { isPosternError } from '../../src/common/errors.ts';
import { tempDir } from '../helpers/tmp.ts';

const Schema = z.object({
  listenPort: z.number().int(),
  name: z.string().default('x'),
  debug: z.boolean().default(false),
});

test('file, then environment, then flags, each overriding the one before', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ listenPort: 1, name: 'file' }));
  assert.deepEqual(loadConfig(Schema, { file }), { listenPort: 1, name: 'file', debug: false });
  const env = { POSTERN_LISTEN_PORT: '2', POSTERN_DEBUG: 'true', OTHER: 'x' };
  assert.deepEqual(loadConfig(Schema, { file, envPrefix: 'POSTERN', env }), {
    listenPort: 2,
    name: 'file',
    debug: true,
  });
  assert.deepEqual(
    loadConfig(Schema, { file, envPrefix: 'POSTERN', env, flags: { listenPort: 3, name: undefined } }),
    {
      listenPort: 3,
      name: 'file',
      debug: true,
    },
  );
});

test('a bad config names the file and the field', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'bad.json');
  writeFileSync(file, JSON.stringify({ listenPort: 'eighty' }));
  assert.throws(
    () => loadConfig(Schema, { file }),
    (e: unknown) =>
      isPosternError(e, 'BAD_CONFIG') && e.message.includes(file) && e.message.includes('listenPort'),
  );
});

test('broken JSON, a non-object, a missing file and an oversized file are clear errors', (t) => {
  const dir = tempDir(t);
  const broken = join(dir, 'broken.json');
  writeFileSync(broken, '{"listenPort": 1');
  assert.throws(
    () => loadConfig(Schema, { file: broken }),
    (e: unknown) => isPosternError(e, 'BAD_CONFIG') && /not valid JSON/.test(e.message),
  );
  const arr = join(dir, 'arr.json');
  writeFileSync(arr, '[1,2]');
  assert.throws(
    () => loadConfig(Schema, { file: arr }),
    (e: unknown) => isPosternError(e, 'BAD_CONFIG') && /JSON object/.test(e.message),
  );
  assert.throws(
    () => loadConfig(Schema, { file: join(dir, 'none.json') }),
    (e: unknown) => isPosternError(e, 'BAD_CONFIG') && /cannot read/.test(e.message),
  );
  const big = join(dir, 'big.json');
  writeFileSync(big, Buffer.alloc(MAX_CONFIG_BYTES + 1, 0x20));
  assert.throws(
    () => readJsonFile(big),
    (e: unknown) => isPosternError(e, 'TOO_LARGE'),
  );
});

test('hostile config files: any bytes give a typed error or a valid config, never a crash', async (t) => {
  const fc = await import('fast-check');
  const { ServerConfigSchema } = await import('../../src/protocol/server-config.ts');
  const { ClientConfigSchema } = await import('../../src/protocol/client-config.ts');
  const dir = tempDir(t);
  const file = join(dir, 'fuzz.json');
  const jsonish = fc.oneof(
    fc.uint8Array({ maxLength: 256 }).map((b) => Buffer.from(b)),
    fc.json().map((s) => Buffer.from(s)),
    fc
      .record({
        PropagationChannelId: fc.string(),
        SponsorId: fc.string(),
        TunnelProtocolPorts: fc.anything(),
      })
      .map((o) => Buffer.from(JSON.stringify(o))),
  );
  fc.assert(
    fc.property(jsonish, (bytes) => {
      writeFileSync(file, bytes);
      for (const schema of [ServerConfigSchema, ClientConfigSchema]) {
        try {
          loadConfig(schema, { file });
        } catch (e) {
          assert.ok(isPosternError(e, 'BAD_CONFIG'), `unexpected ${String(e)}`);
        }
      }
    }),
    { numRuns: 300 },
  );
});

test('environment variables reach PascalCase fields (the client and server configs use them)', async () => {
  const { ClientConfigSchema } = await import('../../src/protocol/client-config.ts');
  const base = {
    PropagationChannelId: 'ABCDEF0123456789',
    SponsorId: '0000000000000001',
    ServerEntrySignaturePublicKey: 'k',
  };
  const c = loadConfig(ClientConfigSchema, {
    envPrefix: 'POSTERN_CLIENT',
    env: { POSTERN_CLIENT_SPONSOR_ID: '1111222233334444' },
    flags: base,
  });
  // flags win over the environment, so leave SponsorId out of them to see the environment's value
  const d = loadConfig(ClientConfigSchema, {
    envPrefix: 'POSTERN_CLIENT',
    env: { POSTERN_CLIENT_SPONSOR_ID: '1111222233334444' },
    flags: { ...base, SponsorId: undefined },
  });
  assert.equal(c.SponsorId, '0000000000000001');
  assert.equal(d.SponsorId, '1111222233334444');
});
