// The control plane end to end on the embedded store: init, sponsors, servers, publish, client config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ManualClock } from '../../src/common/clock.ts';
import { isPosternError } from '../../src/common/errors.ts';
import {
  initNetwork,
  openNetwork,
  addSponsor,
  addPropagationChannel,
  generateServer,
  publishServerList,
  makeClientConfig,
  buildPsinet,
  KEYS_DIR,
  SERVER_LIST_COMPRESSED_FILE,
  SERVER_LIST_FILE,
} from '../../src/ops/index.ts';
import { readAuthenticatedDataPackage } from '../../src/protocol/authenticated-package.ts';
import { decodeServerEntry, verifyServerEntrySignature } from '../../src/protocol/server-entry.ts';
import { ServerConfigSchema } from '../../src/protocol/server-config.ts';
import { ClientConfigSchema } from '../../src/protocol/client-config.ts';
import { tempDir } from '../helpers/tmp.ts';

const clock = new ManualClock(Date.UTC(2026, 10, 29, 12));
const SPONSOR = 'AAAABBBBCCCCDDDD';

async function makeNetwork(dir: string) {
  const net = await initNetwork({ dir: join(dir, 'net'), clock, rsaBits: 1024 });
  await addSponsor(
    net.store,
    {
      id: SPONSOR.toLowerCase(),
      name: 'Example Sponsor',
      homePages: ['https://example.org/welcome', 'IR=https://example.org/fa'],
      domainRegexes: ['^(.*\\.)?youtube\\.com$=youtube.com', '(^|\\.)dw\\.com$=dw.com'],
    },
    clock,
  );
  return net;
}

test('network init writes every key, private ones 0600, and refuses to overwrite a network', async (t) => {
  const dir = tempDir(t);
  const net = await makeNetwork(dir);
  t.after(() => net.close());
  const keysDir = join(net.dir, KEYS_DIR);
  assert.equal(statSync(keysDir).mode & 0o777, 0o700);
  const keyFiles = readdirSync(keysDir);
  assert.equal(keyFiles.length, 4);
  for (const f of keyFiles) assert.equal(statSync(join(keysDir, f)).mode & 0o777, 0o600, f);
  const keys = net.keys();
  assert.equal(keys.serverEntrySigning.publicKey, net.file.ServerEntrySignaturePublicKey);
  assert.equal(keys.remoteServerListSigning.publicKey, net.file.RemoteServerListSignaturePublicKey);
  assert.equal(keys.feedbackEncryption.publicKey, net.file.FeedbackEncryptionPublicKey);
  // network.json holds public material only
  const publicText = readFileSync(join(net.dir, 'network.json'), 'utf8');
  assert.ok(!publicText.includes(keys.serverEntrySigning.privateKey));
  assert.ok(!publicText.includes(keys.remoteServerListSigning.privateKey));
  await assert.rejects(initNetwork({ dir: net.dir, clock }), (e: unknown) =>
    isPosternError(e, 'ALREADY_EXISTS'),
  );
});

test('sponsors: IDs normalised, bad input refused, nothing partial stored', async (t) => {
  const dir = tempDir(t);
  const net = await makeNetwork(dir);
  t.after(() => net.close());
  const s = await net.store.getSponsor(SPONSOR);
  assert.ok(s);
  assert.deepEqual(s.homePages, [
    { region: '', url: 'https://example.org/welcome' },
    { region: 'IR', url: 'https://example.org/fa' },
  ]);
  assert.deepEqual(s.domainRegexes[0], { regex: '^(.*\\.)?youtube\\.com$', name: 'youtube.com' });
  const bad: [Parameters<typeof addSponsor>[1], RegExp][] = [
    [{ id: 'xyz', name: 'a', homePages: [], domainRegexes: [] }, /16 hex digits/],
    [{ name: 'a', homePages: ['not a url'], domainRegexes: [] }, /absolute URL/],
    [{ name: 'a', homePages: ['ftp://x/'], domainRegexes: [] }, /http or https/],
    [{ name: 'a', homePages: [], domainRegexes: ['(unclosed=x'] }, /does not compile/],
    [{ name: 'a', homePages: [], domainRegexes: ['(?<=a)b=x'] }, /RE2/],
    [{ name: 'a', homePages: [], domainRegexes: ['noname'] }, /REGEX=NAME/],
    [{ name: '', homePages: [], domainRegexes: [] }, /name/],
  ];
  for (const [input, msg] of bad) {
    await assert.rejects(
      addSponsor(net.store, input, clock),
      (e: unknown) => isPosternError(e) && msg.test(e.message),
    );
  }
  await assert.rejects(
    addSponsor(net.store, { id: SPONSOR, name: 'again', homePages: [], domainRegexes: [] }, clock),
    (e: unknown) => isPosternError(e, 'ALREADY_EXISTS'),
  );
  assert.equal((await net.store.listSponsors()).length, 1);
  const ch = await addPropagationChannel(net.store, { name: 'email' }, clock);
  assert.match(ch.id, /^[0-9A-F]{16}$/);
  assert.equal((await net.store.listPropagationChannels()).length, 2); // default + email
});

test('psinet in psiphond shape: default pages under "None", regexes as {regex, replace}', () => {
  const psinet = buildPsinet([
    {
      id: SPONSOR,
      name: 'x',
      homePages: [
        { region: '', url: 'https://a/' },
        { region: 'IR', url: 'https://b/' },
      ],
      domainRegexes: [{ regex: 'r', name: 'n' }],
      createdAt: new Date(0),
    },
  ]);
  assert.deepEqual(psinet.sponsors[SPONSOR]?.home_pages, {
    None: [{ region: 'None', url: 'https://a/' }],
    IR: [{ region: 'IR', url: 'https://b/' }],
  });
  assert.deepEqual(psinet.sponsors[SPONSOR]?.https_request_regexes, [{ regex: 'r', replace: 'n' }]);
});

test('server generate, publish, client config: a list that verifies, and fails after one flipped byte', async (t) => {
  const dir = tempDir(t);
  const net = await makeNetwork(dir);
  t.after(() => net.close());
  const a = await generateServer(
    net,
    {
      region: 'CA',
      ip: '127.0.0.1',
      out: join(dir, 'srv-a'),
      protocols: ['OSSH', 'SSH'],
      ports: { OSSH: 4000 },
      hostKeyBits: 1024,
    },
    clock,
  );
  const b = await generateServer(
    net,
    { ip: '127.0.0.2', out: join(dir, 'srv-b'), region: 'CA', hostKeyBits: 1024, publish: false },
    clock,
  );
  assert.equal(statSync(a.configPath).mode & 0o777, 0o600);
  const cfg = ServerConfigSchema.parse(JSON.parse(readFileSync(a.configPath, 'utf8')));
  assert.deepEqual(cfg.TunnelProtocolPorts, { OSSH: 4000, SSH: 2222 });
  assert.match(cfg.SSHPrivateKey, /BEGIN RSA PRIVATE KEY/);

  const entry = decodeServerEntry(readFileSync(a.entryPath, 'utf8').trim());
  verifyServerEntrySignature(entry, net.file.ServerEntrySignaturePublicKey);
  assert.equal(entry['ipAddress'], '127.0.0.1');
  assert.equal(entry['sshObfuscatedPort'], 4000);
  assert.deepEqual([...(entry['capabilities'] as string[])].sort(), ['OSSH', 'SSH', 'ssh-api-requests']);
  assert.equal(entry['sshObfuscatedKey'], cfg.ObfuscatedSSHKey);

  await assert.rejects(
    generateServer(
      net,
      { region: 'CA', ip: '127.0.0.3', out: join(dir, 'x'), protocols: ['QUIC-OSSH'] },
      clock,
    ),
    (e: unknown) => isPosternError(e, 'BAD_ARGUMENT') && /not served by this release/.test(e.message),
  );
  await assert.rejects(
    generateServer(net, { region: 'CA', ip: 'not-an-ip', out: join(dir, 'y') }, clock),
    (e: unknown) => isPosternError(e, 'BAD_ARGUMENT'),
  );

  const out = join(dir, 'published');
  const r = await publishServerList(net, out, clock);
  assert.equal(r.serverCount, 1, 'the unpublished server stays out');
  const compressed = readFileSync(join(out, SERVER_LIST_COMPRESSED_FILE));
  const data = readAuthenticatedDataPackage(compressed, net.file.RemoteServerListSignaturePublicKey);
  assert.deepEqual(data.split('\n'), [a.encodedEntry]);
  assert.ok(!data.includes(b.encodedEntry));
  const plain = readFileSync(join(out, SERVER_LIST_FILE));
  assert.equal(
    readAuthenticatedDataPackage(plain, net.file.RemoteServerListSignaturePublicKey, { compressed: false }),
    data,
  );
  // One flipped byte anywhere in the plain package's signed data is caught by the signature.
  const at = plain.indexOf('7b22'); // hex of '{"' inside the entry's data
  const flipped = Buffer.from(plain);
  flipped[at] = flipped[at] === 0x37 ? 0x38 : 0x37;
  assert.throws(() =>
    readAuthenticatedDataPackage(flipped, net.file.RemoteServerListSignaturePublicKey, { compressed: false }),
  );
  for (const i of [10, Math.floor(compressed.length / 2), compressed.length - 5]) {
    const c = Buffer.from(compressed);
    c[i] = (c[i] ?? 0) ^ 0x01;
    assert.throws(
      () => readAuthenticatedDataPackage(c, net.file.RemoteServerListSignaturePublicKey),
      (e: unknown) => isPosternError(e),
      `flip at ${i}`,
    );
  }
  // Another network's key refuses the list.
  const other = await initNetwork({ dir: join(dir, 'other'), clock, rsaBits: 1024 });
  t.after(() => other.close());
  assert.throws(
    () => readAuthenticatedDataPackage(compressed, other.file.RemoteServerListSignaturePublicKey),
    (e: unknown) => isPosternError(e, 'BAD_SIGNATURE'),
  );
  assert.equal((await net.store.listPublications()).length, 1);

  const cc = ClientConfigSchema.parse(
    await makeClientConfig(net, {
      sponsorId: SPONSOR,
      listUrls: ['https://lists.example.org/server_list_compressed'],
    }),
  );
  assert.deepEqual(cc.EmbeddedServerEntries, [a.encodedEntry]);
  assert.equal(cc.SponsorId, SPONSOR);
  assert.equal(cc.PropagationChannelId, net.file.DefaultPropagationChannelId);
  assert.equal(cc.RemoteServerListURLs[0]?.URL, 'https://lists.example.org/server_list_compressed');
  await assert.rejects(makeClientConfig(net, { sponsorId: '0123456789ABCDEF' }), (e: unknown) =>
    isPosternError(e, 'NOT_FOUND'),
  );
});

test('a network reopens with its registry and keys intact', async (t) => {
  const dir = tempDir(t);
  const net = await makeNetwork(dir);
  await generateServer(
    net,
    { region: 'CA', ip: '127.0.0.1', out: join(dir, 'srv'), hostKeyBits: 1024 },
    clock,
  );
  await net.close();
  const again = await openNetwork(join(dir, 'net'));
  t.after(() => again.close());
  assert.equal((await again.store.listServers()).length, 1);
  assert.equal((await again.store.listSponsors())[0]?.id, SPONSOR);
  await assert.rejects(openNetwork(join(dir, 'missing')), (e: unknown) => isPosternError(e, 'NOT_FOUND'));
});
