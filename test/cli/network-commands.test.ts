// The README's example, run through the real binary: network init → sponsor add → server generate →
// network publish → client config; and what a user sees when a command is wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { postern } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';
import { readAuthenticatedDataPackage } from '../../src/protocol/authenticated-package.ts';
import { decodeServerEntryList } from '../../src/protocol/server-entry.ts';

function ok(args: string[]): string {
  const r = postern(args);
  assert.equal(r.status, 0, `postern ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

test('the README sequence works and its outputs fit together', (t) => {
  const dir = tempDir(t);
  const NET = join(dir, 'net');
  ok(['network', 'init', '--dir', NET]);
  const sponsor = JSON.parse(
    ok([
      'network',
      'sponsor',
      'add',
      '--dir',
      NET,
      '--name',
      'Example',
      '--home-page',
      'https://example.org/',
      '--domain-regex',
      '^(.*\\.)?example\\.com$=example.com',
      '--json',
    ]),
  ) as { id: string };
  ok([
    'server',
    'generate',
    '--network',
    NET,
    '--ip',
    '127.0.0.1',
    '--protocols',
    'OSSH,SSH',
    '--region',
    'CA',
    '--out',
    join(dir, 'srv'),
  ]);
  ok([
    'network',
    'publish',
    '--dir',
    NET,
    '--out',
    join(dir, 'www'),
    '--url',
    'http://127.0.0.1:8081/server_list_compressed',
  ]);
  ok(['client', 'config', '--network', NET, '--sponsor', sponsor.id, '--out', join(dir, 'client.json')]);

  const net = JSON.parse(readFileSync(join(NET, 'network.json'), 'utf8')) as {
    RemoteServerListSignaturePublicKey: string;
  };
  const client = JSON.parse(readFileSync(join(dir, 'client.json'), 'utf8')) as {
    EmbeddedServerEntries: string[];
    RemoteServerListURLs: { URL: string }[];
    RemoteServerListSignaturePublicKey: string;
  };
  assert.equal(client.RemoteServerListSignaturePublicKey, net.RemoteServerListSignaturePublicKey);
  assert.equal(client.RemoteServerListURLs[0]?.URL, 'http://127.0.0.1:8081/server_list_compressed');
  const list = readAuthenticatedDataPackage(
    readFileSync(join(dir, 'www', 'server_list_compressed')),
    client.RemoteServerListSignaturePublicKey,
  );
  const decoded = decodeServerEntryList(list);
  assert.equal(decoded.entries.length, 1);
  assert.deepEqual(list.split('\n'), client.EmbeddedServerEntries);
  const listing = JSON.parse(ok(['server', 'list', '--network', NET, '--json'])) as { ipAddress: string }[];
  assert.equal(listing[0]?.ipAddress, '127.0.0.1');
});

test('wrong usage: a clear message, a non-zero exit, no stack trace', (t) => {
  const dir = tempDir(t);
  const cases: [string[], number, RegExp][] = [
    [['network', 'init'], 1, /required option '--dir <NET>'/],
    [['network', 'frobnicate'], 1, /unknown command 'frobnicate'/],
    [['network', 'sponsor', 'add', '--dir', join(dir, 'none'), '--name', 'x'], 1, /network init --dir/],
    [
      [
        'server',
        'generate',
        '--network',
        join(dir, 'none'),
        '--ip',
        '1.2.3.4',
        '--region',
        'CA',
        '--out',
        join(dir, 's'),
      ],
      1,
      /does not exist/,
    ],
  ];
  for (const [args, status, msg] of cases) {
    const r = postern(args);
    assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  const NET = join(dir, 'net');
  ok(['network', 'init', '--dir', NET]);
  const again = postern(['network', 'init', '--dir', NET]);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /already exists/);
  const badId = postern(['network', 'sponsor', 'add', '--dir', NET, '--name', 'x', '--id', 'nothex']);
  assert.equal(badId.status, 2);
  assert.match(badId.stderr, /16 hex digits/);
  const badProto = postern([
    'server',
    'generate',
    '--network',
    NET,
    '--ip',
    '127.0.0.1',
    '--protocols',
    'NOPE',
    '--region',
    'CA',
    '--out',
    join(dir, 's'),
  ]);
  assert.equal(badProto.status, 2);
  assert.match(badProto.stderr, /unknown tunnel protocol "NOPE"/);
  const help = postern(['server', 'generate', '--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--protocols/);
});
