import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isPosternError } from '../../src/common/errors.ts';
import {
  createOpsStore,
  openOpsStore,
  schemaVersion,
  OPS_MIGRATIONS,
  OPS_SERVICE,
  type OpsStore,
  type ServerRecord,
  type SponsorRecord,
} from '../../src/store/index.ts';
import { DATABASE_BACKENDS, withTestDatabase, type TestDatabase } from '../helpers/databases.ts';

const T0 = new Date('2026-03-01T10:20:30.456Z');
const T1 = new Date('2026-03-02T00:00:00.001Z');

const sponsor: Omit<SponsorRecord, 'createdAt'> = {
  id: 'ACME',
  name: 'Acme "Free" Net',
  homePages: [
    { region: '', url: 'https://acme.example/welcome' },
    { region: 'IR', url: 'https://acme.example/fa?x=1&y=2' },
  ],
  domainRegexes: [{ regex: '^(.*\\.)?youtube\\.com$', name: 'youtube.com' }],
};

const server: Omit<ServerRecord, 'createdAt'> = {
  id: 'srv-1',
  ipAddress: '192.0.2.10',
  region: 'NL',
  capabilities: ['OSSH', 'SSH', 'handshake'],
  encodedEntry: 'deadbeef'.repeat(40),
  published: true,
};

async function openStore(tdb: TestDatabase): Promise<OpsStore> {
  return createOpsStore(await tdb.open());
}

for (const backend of DATABASE_BACKENDS) {
  describe(`SqlOpsStore on ${backend.name}`, { skip: backend.skip }, () => {
    it('keeps sponsors with their home pages and domain regexes exactly', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await openStore(tdb);
        await store.addSponsor(sponsor, T0);
        await store.addSponsor({ id: 'ABC', name: 'Abc', homePages: [], domainRegexes: [] }, T1);
        assert.deepEqual(await store.getSponsor('ACME'), { ...sponsor, createdAt: T0 });
        assert.equal(await store.getSponsor('nope'), undefined);
        assert.deepEqual(
          (await store.listSponsors()).map((s) => s.id),
          ['ABC', 'ACME'],
        );
      }));

    it('refuses a second sponsor with the same ID, naming it, and keeps the first', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await openStore(tdb);
        await store.addSponsor(sponsor, T0);
        await assert.rejects(store.addSponsor({ ...sponsor, name: 'Impostor' }, T1), (e) => {
          assert.ok(isPosternError(e, 'ALREADY_EXISTS'), String(e));
          assert.equal(e.message, "sponsor 'ACME' already exists");
          return true;
        });
        assert.equal((await store.getSponsor('ACME'))?.name, sponsor.name);
      }));

    it('updates a sponsor in place and says when there is none to update', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await openStore(tdb);
        await store.addSponsor(sponsor, T0);
        const changed = {
          ...sponsor,
          name: 'Acme 2',
          homePages: [],
          domainRegexes: [{ regex: 'x', name: 'y' }],
        };
        await store.updateSponsor(changed);
        assert.deepEqual(await store.getSponsor('ACME'), { ...changed, createdAt: T0 });
        await assert.rejects(store.updateSponsor({ ...changed, id: 'GHOST' }), (e) =>
          isPosternError(e, 'NOT_FOUND'),
        );
      }));

    it('does not store properties the record type does not have', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await openStore(tdb);
        const withExtra = {
          ...sponsor,
          homePages: [{ region: '', url: 'https://a.example', clientIp: '198.51.100.7' }],
        };
        await store.addSponsor(withExtra, T0);
        assert.deepEqual((await store.getSponsor('ACME'))?.homePages, [
          { region: '', url: 'https://a.example' },
        ]);
      }));

    it('keeps propagation channels', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await openStore(tdb);
        await store.addPropagationChannel({ id: 'PC2', name: 'Email' }, T1);
        await store.addPropagationChannel({ id: 'PC1', name: 'Website' }, T0);
        assert.deepEqual(await store.getPropagationChannel('PC1'), {
          id: 'PC1',
          name: 'Website',
          createdAt: T0,
        });
        assert.equal(await store.getPropagationChannel('PC3'), undefined);
        assert.deepEqual(
          (await store.listPropagationChannels()).map((c) => c.id),
          ['PC1', 'PC2'],
        );
        await assert.rejects(store.addPropagationChannel({ id: 'PC1', name: 'x' }, T1), (e) =>
          isPosternError(e, 'ALREADY_EXISTS'),
        );
      }));

    it('keeps servers, publishes and unpublishes them, and removes them', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await openStore(tdb);
        await store.addServer(server, T0);
        await store.addServer({ ...server, id: 'srv-0', ipAddress: '192.0.2.11', published: false }, T1);
        assert.deepEqual(await store.getServer('srv-1'), { ...server, createdAt: T0 });
        assert.deepEqual(
          (await store.listServers()).map((s) => [s.id, s.published]),
          [
            ['srv-0', false],
            ['srv-1', true],
          ],
        );
        await store.setServerPublished('srv-1', false);
        await store.setServerPublished('srv-0', true);
        assert.equal((await store.getServer('srv-1'))?.published, false);
        assert.equal((await store.getServer('srv-0'))?.published, true);
        await store.removeServer('srv-1');
        assert.equal(await store.getServer('srv-1'), undefined);
        await assert.rejects(store.removeServer('srv-1'), (e) => isPosternError(e, 'NOT_FOUND'));
        await assert.rejects(store.setServerPublished('srv-9', true), (e) => isPosternError(e, 'NOT_FOUND'));
        await assert.rejects(store.addServer({ ...server, id: 'srv-0' }, T0), (e) => {
          assert.ok(isPosternError(e, 'ALREADY_EXISTS'));
          assert.match(e.message, /server 'srv-0'/);
          return true;
        });
      }));

    it('records publications in order with increasing IDs', () =>
      withTestDatabase(backend, async (tdb) => {
        const store = await openStore(tdb);
        const p1 = await store.recordPublication({
          publishedAt: T0,
          serverCount: 3,
          target: 's3://bucket/prefix',
          sha256: 'a'.repeat(64),
        });
        const p2 = await store.recordPublication({
          publishedAt: T1,
          serverCount: 4,
          target: '/srv/lists',
          sha256: 'b'.repeat(64),
        });
        assert.ok(p2.id > p1.id);
        assert.deepEqual(await store.listPublications(), [p1, p2]);
        assert.equal(p1.serverCount, 3);
      }));

    it('keeps everything across close and reopen, and migrating again changes nothing', () =>
      withTestDatabase(backend, async (tdb) => {
        const first = await openOpsStore(tdb.target, tdb.options);
        await first.addSponsor(sponsor, T0);
        await first.addServer(server, T0);
        await first.close();
        const second = await openOpsStore(tdb.target, tdb.options);
        assert.deepEqual(await second.getSponsor('ACME'), { ...sponsor, createdAt: T0 });
        assert.deepEqual(await second.getServer('srv-1'), { ...server, createdAt: T0 });
        await second.close();
        const db = await tdb.open();
        assert.equal(await schemaVersion(db, OPS_SERVICE), OPS_MIGRATIONS.length);
      }));

    it('reports a damaged row as a STORE error instead of returning a bad record', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        const store = await createOpsStore(db);
        await store.addSponsor(sponsor, T0);
        await db.run(`UPDATE ops_sponsors SET home_pages = $1 WHERE id = 'ACME'`, ['{"not":"a list"']);
        await assert.rejects(store.getSponsor('ACME'), (e) => {
          assert.ok(isPosternError(e, 'STORE'), String(e));
          assert.match(e.message, /home_pages/);
          return true;
        });
        await db.run(`UPDATE ops_sponsors SET home_pages = $1 WHERE id = 'ACME'`, ['[{"region":1}]']);
        await assert.rejects(store.listSponsors(), (e) => isPosternError(e, 'STORE'));
        await db.run(`UPDATE ops_sponsors SET home_pages = '[]', created_at = 'yesterday' WHERE id = 'ACME'`);
        await assert.rejects(store.getSponsor('ACME'), (e) => isPosternError(e, 'STORE'));
      }));

    it('refuses an ops database that a newer version migrated further', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await createOpsStore(db);
        await db.run(`INSERT INTO schema_migrations (service, version, applied_at) VALUES ($1, $2, $3)`, [
          OPS_SERVICE,
          OPS_MIGRATIONS.length + 1,
          T1.toISOString(),
        ]);
        await assert.rejects(openOpsStore(tdb.target, tdb.options), (e) => {
          assert.ok(isPosternError(e, 'STORE'), String(e));
          assert.match(e.message, /newer Postern/);
          return true;
        });
      }));
  });
}
