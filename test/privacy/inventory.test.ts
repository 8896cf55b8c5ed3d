import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  EVENT_INVENTORY,
  FILE_INVENTORY,
  TABLE_INVENTORY,
  describeRetention,
  findUndeclaredColumns,
  findUndeclaredEventFields,
  listLiveColumns,
  type FieldDeclaration,
} from '../../src/privacy/index.ts';
import { migrate, OPS_MIGRATIONS, OPS_SERVICE, type Migration, type SqlDb } from '../../src/store/index.ts';
import { STATS_MIGRATIONS, STATS_SERVICE } from '../../src/stats/sql-stats-store.ts';
import { DATABASE_BACKENDS, withTestDatabase } from '../helpers/databases.ts';
import { tempDir } from '../helpers/tmp.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Every service's migrations: a service that persists anything adds its list here. */
const ALL_SERVICE_MIGRATIONS: ReadonlyArray<readonly [string, readonly Migration[]]> = [
  [OPS_SERVICE, OPS_MIGRATIONS],
  [STATS_SERVICE, STATS_MIGRATIONS],
];

async function migrateEverything(db: SqlDb): Promise<void> {
  for (const [service, migrations] of ALL_SERVICE_MIGRATIONS) await migrate(db, service, migrations);
}

function allFields(): Array<[string, FieldDeclaration]> {
  return [
    ...TABLE_INVENTORY.flatMap((t) =>
      Object.entries(t.columns).map(([c, f]) => [`${t.table}.${c}`, f] as [string, FieldDeclaration]),
    ),
    ...EVENT_INVENTORY.flatMap((e) =>
      Object.entries(e.fields).map(([k, f]) => [`${e.event}.${k}`, f] as [string, FieldDeclaration]),
    ),
    ...FILE_INVENTORY.flatMap((d) =>
      Object.entries(d.fields).map(([k, f]) => [`${d.file}.${k}`, f] as [string, FieldDeclaration]),
    ),
  ];
}

describe('data inventory: declarations', () => {
  it('says for every field why it is kept, for how long, and who may see it', () => {
    const fields = allFields();
    assert.ok(fields.length > 0);
    for (const [name, f] of fields) {
      assert.ok(f.purpose.trim().length >= 10, `${name}: purpose is missing or too short`);
      assert.ok(
        ['nobody', 'operator', 'sponsor-aggregate', 'public'].includes(f.visibleTo),
        `${name}: visibleTo`,
      );
      assert.equal(typeof f.identifiesPerson, 'boolean', `${name}: identifiesPerson`);
      if (f.retention.kind === 'days') {
        assert.ok(Number.isInteger(f.retention.days) && f.retention.days > 0, `${name}: retention days`);
      }
      assert.ok(describeRetention(f.retention).length > 0);
    }
  });

  it('declares each table once and gives it a purpose', () => {
    const names = TABLE_INVENTORY.map((t) => t.table);
    assert.equal(new Set(names).size, names.length, 'a table is declared twice');
    for (const t of TABLE_INVENTORY) assert.ok(t.purpose.trim().length >= 10, `${t.table}: purpose`);
    assert.ok(names.includes('schema_migrations'));
  });

  it('publishes nothing that can identify a person', () => {
    for (const [name, f] of allFields()) {
      if (f.identifiesPerson) {
        assert.ok(
          f.visibleTo === 'operator' || f.visibleTo === 'nobody',
          `${name} identifies a person but is ${f.visibleTo}`,
        );
      }
    }
  });

  it('describes retention in words', () => {
    assert.equal(describeRetention({ kind: 'days', days: 60 }), '60 days');
    assert.equal(describeRetention({ kind: 'until-operator-deletes' }), 'until the operator deletes it');
  });

  it('finds event fields that are not declared', () => {
    const inventory = [
      {
        event: 'server_tunnel',
        purpose: 'Counts tunnels per region.',
        fields: {
          region: {
            purpose: 'Region of the tunnel.',
            retention: { kind: 'days' as const, days: 60 },
            visibleTo: 'sponsor-aggregate' as const,
            identifiesPerson: false,
          },
        },
      },
    ];
    assert.deepEqual(findUndeclaredEventFields('server_tunnel', { region: 'NL' }, inventory), []);
    assert.deepEqual(
      findUndeclaredEventFields('server_tunnel', { region: 'NL', client_ip: 'x' }, inventory),
      ['server_tunnel.client_ip'],
    );
    assert.deepEqual(findUndeclaredEventFields('unknown_event', { a: 1 }, inventory), ['unknown_event.a']);
  });
});

for (const backend of DATABASE_BACKENDS) {
  describe(`data inventory against a live ${backend.name} database`, { skip: backend.skip }, () => {
    it('declares every table and column the migrations create', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await migrateEverything(db);
        const live = await listLiveColumns(db);
        assert.ok(live.includes('ops_sponsors.home_pages'), 'the live schema was read');
        assert.ok(live.includes('schema_migrations.applied_at'));
        assert.deepEqual(await findUndeclaredColumns(db), [], 'declare these in src/privacy/inventory.ts');
      }));

    it('catches a column added without a declaration, and a whole undeclared table', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await migrateEverything(db);
        await db.exec(`ALTER TABLE ops_sponsors ADD COLUMN contact_email TEXT`);
        await db.exec(`CREATE TABLE visitor_log (id INTEGER PRIMARY KEY, client_ip TEXT)`);
        assert.deepEqual(
          (await findUndeclaredColumns(db)).sort(),
          ['ops_sponsors.contact_email', 'visitor_log.client_ip', 'visitor_log.id'].sort(),
        );
      }));

    it('catches a column that the inventory passed in leaves out', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await migrateEverything(db);
        const withoutRegion = TABLE_INVENTORY.map((t) =>
          t.table === 'ops_servers'
            ? { ...t, columns: Object.fromEntries(Object.entries(t.columns).filter(([c]) => c !== 'region')) }
            : t,
        );
        assert.deepEqual(await findUndeclaredColumns(db, withoutRegion), ['ops_servers.region']);
      }));
  });
}

describe('data inventory: files', () => {
  const declared = (file: string): string[] => {
    const d = FILE_INVENTORY.find((f) => f.file === file);
    assert.ok(d, `${file} is not in FILE_INVENTORY`);
    return Object.keys(d.fields).sort();
  };

  it("declares every field of the client's server store as the client writes it", async (t) => {
    const { ServerStore, SERVER_STORE_FILE } = await import('../../src/client/server-store.ts');
    const dir = tempDir(t);
    const store = ServerStore.open({ embeddedEntries: [], signaturePublicKey: 'AAAA', dataDir: dir });
    store.setLastConnected('2026-11-29T18:00:00Z');
    const written = JSON.parse(readFileSync(join(dir, SERVER_STORE_FILE), 'utf8')) as object;
    assert.deepEqual(Object.keys(written).sort(), declared(`client/${SERVER_STORE_FILE}`));
  });

  it("declares every field of the shipper's state and of the network's stats key file", async (t) => {
    const { harness, writeSpool } = await import('../stats/shipper-fixtures.ts');
    const { SHIPPER_STATE_FILE } = await import('../../src/stats/shipper.ts');
    const { recordStatsKey, generateStatsKey, STATS_KEYS_FILE } =
      await import('../../src/stats/stats-key.ts');
    const dir = tempDir(t);
    writeSpool(dir, [3, 2]);
    const h = await harness(t, dir);
    const s = h.shipper();
    await s.shipOnce();
    await s.stop();
    const state = JSON.parse(readFileSync(join(dir, SHIPPER_STATE_FILE), 'utf8')) as object;
    assert.deepEqual(Object.keys(state).sort(), declared(`server/spool/${SHIPPER_STATE_FILE}`));
    const net = tempDir(t);
    recordStatsKey(net, 'host-1', generateStatsKey());
    const keys = JSON.parse(readFileSync(join(net, STATS_KEYS_FILE), 'utf8')) as object;
    assert.deepEqual(Object.keys(keys).sort(), declared(`network/${STATS_KEYS_FILE}`));
  });
});
