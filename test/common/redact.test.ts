import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { redactString, redactValue } from '../../src/common/redact.ts';
import { createLogger } from '../../src/common/logger.ts';

test('IPv4, IPv6 and email addresses are redacted wherever they stand', () => {
  const cases: [string, string][] = [
    ['client 203.0.113.7 connected', 'client [ip] connected'],
    ['from 127.0.0.1:443', 'from [ip]:443'],
    ['v6 2001:db8::1 and ::1 and fe80::1%eth0', 'v6 [ip] and [ip] and [ip]%eth0'],
    ['full 2001:0db8:0000:0000:0000:ff00:0042:8329 end', 'full [ip] end'],
    ['mapped ::ffff:192.0.2.1 end', 'mapped [ip] end'],
    ['mail from alice.smith+tag@mail.example.org', 'mail from [email]'],
    ['peer 2001:db8::1. Then 10.1.2.3.', 'peer [ip]. Then [ip].'],
  ];
  for (const [input, want] of cases) assert.equal(redactString(input), want, input);
});

test('things that are not addresses are left alone', () => {
  for (const s of [
    'version 1.2.3',
    'at 12:30:45',
    'took 3.5ms',
    'region CA',
    'sha 0xdeadbeef',
    'port 8080',
  ]) {
    assert.equal(redactString(s), s);
  }
});

test('nested values and errors are redacted', () => {
  const v = redactValue({
    a: ['x 10.0.0.1'],
    b: { c: 'bob@example.com' },
    e: new Error('dial 192.0.2.9 failed'),
  });
  assert.deepEqual(v, {
    a: ['x [ip]'],
    b: { c: '[email]' },
    e: {
      type: 'Error',
      message: 'dial [ip] failed',
      code: undefined,
      stack: (v as { e: { stack: string } }).e.stack,
    },
  });
});

test('the logger never writes an address, in the message or in any field', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger({ destination: sink, level: 'debug' });
  log.info(
    { peer: '198.51.100.23', nested: { who: 'carol@example.net' } },
    'accepted 198.51.100.23 for dave@example.com',
  );
  log.error(new Error('connect ECONNREFUSED 192.0.2.1:443'));
  const text = lines.join('');
  assert.ok(text.includes('[ip]'));
  for (const secret of ['198.51.100.23', 'carol@example.net', 'dave@example.com', '192.0.2.1']) {
    assert.ok(!text.includes(secret), `log contains ${secret}: ${text}`);
  }
});
