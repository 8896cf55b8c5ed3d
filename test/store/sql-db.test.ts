import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isPosternError } from '../../src/common/errors.ts';
import {
  migrate,
  openSqlDb,
  schemaVersion,
  type Migration,
  type SqlDb,
  type SqlExecutor,
} from '../../src/store/index.ts';
import { DATABASE_BACKENDS, PG_URL_ENV, withTestDatabase, type TestDatabase } from '../helpers/databases.ts';

const ITEMS_DDL = `CREATE TABLE items (name TEXT PRIMARY KEY, qty INTEGER, note TEXT)`;

async function countItems(db: SqlExecutor): Promise<number> {
  const rows = await db.query<{ n: unknown }>(`SELECT COUNT(*) AS n FROM items`);
  return Number(rows[0]?.n);
}

async function withItems(tdb: TestDatabase): Promise<SqlDb> {
  const db = await tdb.open();
  await db.exec(ITEMS_DDL);
  return db;
}

/** Runs a child process that opens the database, writes inside a transaction and is killed before commit. */
function killInsideTransaction(
  tdb: TestDatabase,
): Promise<{ signal: NodeJS.Signals | null; stdout: string }> {
  const storeUrl = pathToFileURL(join(import.meta.dirname, '../../src/store/index.ts')).href;
  const script = `
    const { openSqlDb } = await import(${JSON.stringify(storeUrl)});
    const db = await openSqlDb(process.env.T_TARGET, JSON.parse(process.env.T_OPTIONS));
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO items (name, qty) VALUES ('written-before-crash', 1)");
      await tx.run("UPDATE items SET qty = 99 WHERE name = 'committed'");
      process.stdout.write('inside\\n');
      process.kill(process.pid, 'SIGKILL');
      await new Promise(() => {});
    });`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, T_TARGET: tdb.target, T_OPTIONS: JSON.stringify(tdb.options) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', reject);
    child.on('close', (_code, signal) => resolve({ signal, stdout }));
  });
}

for (const backend of DATABASE_BACKENDS) {
  describe(`SqlDb on ${backend.name}`, { skip: backend.skip }, () => {
    it('binds $n placeholders by number, reused and out of order, and leaves $n inside literals alone', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        assert.equal(db.dialect, backend.name);
        const r = await db.run(`INSERT INTO items (qty, name, note) VALUES ($2, $1, '$1 stays text')`, [
          'a',
          3,
        ]);
        assert.equal(r.changes, 1);
        await db.run(`INSERT INTO items (name, qty, note) VALUES ($1, $2, $3)`, ['b', 5, null]);
        const rows = await db.query(
          `SELECT name, qty, note FROM items WHERE qty >= $2 OR name = $1 ORDER BY name`,
          ['a', 5],
        );
        assert.deepEqual(
          rows.map((x) => [x['name'], Number(x['qty']), x['note']]),
          [
            ['a', 3, '$1 stays text'],
            ['b', 5, null],
          ],
        );
        const same = await db.query(`SELECT name FROM items WHERE name = $1 OR note = $1`, ['b']);
        assert.deepEqual(
          same.map((x) => x['name']),
          ['b'],
        );
        const upd = await db.run(`UPDATE items SET qty = qty + 1`);
        assert.equal(upd.changes, 2);
      }));

    it('round-trips text exactly, including quotes, unicode and NUL-free control characters', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        const odd = `it's "quoted" ; DROP TABLE items; -- 日本語 \u{1F600} \t\n`;
        await db.run(`INSERT INTO items (name, qty, note) VALUES ($1, $2, $3)`, ['x', true, odd]);
        const [row] = await db.query(`SELECT qty, note FROM items WHERE name = $1`, ['x']);
        assert.equal(row?.['note'], odd);
        assert.equal(Number(row?.['qty']), 1, 'booleans are stored as 1/0 on both dialects');
        assert.equal(await countItems(db), 1);
      }));

    it('commits a transaction that succeeds and returns its value', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        const value = await db.transaction(async (tx) => {
          await tx.run(`INSERT INTO items (name, qty) VALUES ($1, $2)`, ['a', 1]);
          await tx.run(`INSERT INTO items (name, qty) VALUES ($1, $2)`, ['b', 2]);
          return (await tx.query(`SELECT COUNT(*) AS n FROM items`)).length;
        });
        assert.equal(value, 1);
        const other = await tdb.open();
        assert.equal(await countItems(other), 2, 'another connection sees the committed rows');
      }));

    it('a failed transaction leaves nothing: rows, updates and new tables are all rolled back', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        await db.run(`INSERT INTO items (name, qty) VALUES ('kept', 1)`);
        await assert.rejects(
          db.transaction(async (tx) => {
            await tx.run(`INSERT INTO items (name, qty) VALUES ('a', 1)`);
            await tx.run(`UPDATE items SET qty = 42 WHERE name = 'kept'`);
            await tx.exec(`CREATE TABLE scratch (x INTEGER)`);
            throw new Error('boom');
          }),
          /boom/,
        );
        const rows = await db.query(`SELECT name, qty FROM items`);
        assert.deepEqual(
          rows.map((r) => [r['name'], Number(r['qty'])]),
          [['kept', 1]],
        );
        await assert.rejects(db.query(`SELECT * FROM scratch`), (e) => isPosternError(e, 'STORE'));
        // The connection is usable again afterwards.
        await db.transaction(async (tx) => {
          await tx.run(`INSERT INTO items (name, qty) VALUES ('after', 2)`);
        });
        assert.equal(await countItems(db), 2);
      }));

    it('a failing statement inside a transaction rolls back the statements before it', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        await db.run(`INSERT INTO items (name) VALUES ('dup')`);
        await assert.rejects(
          db.transaction(async (tx) => {
            await tx.run(`INSERT INTO items (name) VALUES ('first')`);
            await tx.run(`INSERT INTO items (name) VALUES ('dup')`);
          }),
          (e) => isPosternError(e, 'ALREADY_EXISTS'),
        );
        assert.equal(await countItems(db), 1);
      }));

    it('a process killed inside a transaction leaves nothing of it', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        await db.run(`INSERT INTO items (name, qty) VALUES ('committed', 1)`);
        const { signal, stdout } = await killInsideTransaction(tdb);
        assert.equal(stdout, 'inside\n', 'the child reached the middle of its transaction');
        assert.equal(signal, 'SIGKILL');
        const reopened = await tdb.open();
        const rows = await reopened.query(`SELECT name, qty FROM items ORDER BY name`);
        assert.deepEqual(
          rows.map((r) => [r['name'], Number(r['qty'])]),
          [['committed', 1]],
        );
        // Nothing is left locked: the same key can be written now.
        await reopened.run(`INSERT INTO items (name, qty) VALUES ('written-before-crash', 2)`);
        assert.equal(await countItems(reopened), 2);
      }));

    it('maps a duplicate key to ALREADY_EXISTS and other failures to STORE with the statement', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        await db.run(`INSERT INTO items (name) VALUES ('a')`);
        await assert.rejects(db.run(`INSERT INTO items (name) VALUES ('a')`), (e) => {
          assert.ok(isPosternError(e, 'ALREADY_EXISTS'), String(e));
          assert.match(e.message, /items/);
          return true;
        });
        await assert.rejects(db.query(`SELEC nothing FROM items`), (e) => {
          assert.ok(isPosternError(e, 'STORE'), String(e));
          assert.match(e.message, /SELEC nothing FROM items/);
          return true;
        });
        await assert.rejects(db.query(`SELECT * FROM no_such_table`), (e) => isPosternError(e, 'STORE'));
      }));

    it('enforces foreign keys', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        await db.exec(
          `CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL REFERENCES items (name))`,
        );
        await assert.rejects(db.run(`INSERT INTO orders (id, item) VALUES (1, 'missing')`), (e) => {
          assert.ok(isPosternError(e, 'STORE'), String(e));
          assert.match(e.message, /refers to/);
          return true;
        });
      }));

    it('fails clearly, instead of hanging, when the database is called inside its own transaction', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await withItems(tdb);
        await assert.rejects(
          db.transaction(async () => {
            await db.run(`INSERT INTO items (name) VALUES ('wrong handle')`);
          }),
          (e) => isPosternError(e, 'STORE') && /use the transaction's handle/.test(e.message),
        );
        assert.equal(await countItems(db), 0);
        let leaked: SqlExecutor | undefined;
        await db.transaction(async (tx) => {
          leaked = tx;
        });
        await assert.rejects(leaked!.query(`SELECT 1 AS one`), /already finished/);
      }));

    it('two connections opened on the same database at once interleave transactions and see each other', () =>
      withTestDatabase(backend, async (tdb) => {
        const [a, b] = await Promise.all([tdb.open(), tdb.open()]);
        await a!.exec(ITEMS_DDL);
        const writes: Promise<void>[] = [];
        for (let i = 0; i < 20; i++) {
          const db = i % 2 === 0 ? a! : b!;
          writes.push(
            db.transaction(async (tx) => {
              await tx.run(`INSERT INTO items (name, qty) VALUES ($1, $2)`, [`n${i}`, i]);
              await tx.run(`UPDATE items SET qty = qty + 0 WHERE name = $1`, [`n${i}`]);
            }),
          );
          writes.push(
            db.run(`INSERT INTO items (name, qty) VALUES ($1, $2)`, [`plain${i}`, i]).then(() => {}),
          );
        }
        await Promise.all(writes);
        assert.equal(await countItems(a!), 40);
        assert.equal(await countItems(b!), 40);
      }));

    it('refuses calls once closed, and closing twice is harmless', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await db.close();
        await db.close();
        await assert.rejects(
          db.query(`SELECT 1 AS one`),
          (e) => isPosternError(e, 'STORE') && /closed/.test(e.message),
        );
      }));
  });

  describe(`migrate on ${backend.name}`, { skip: backend.skip }, () => {
    const m1: Migration = { version: 1, description: 'items', up: ITEMS_DDL };
    const m2: Migration = {
      version: 2,
      description: 'item colour',
      up: {
        sqlite: `ALTER TABLE items ADD COLUMN colour TEXT`,
        postgres: `ALTER TABLE items ADD COLUMN colour TEXT`,
      },
    };
    const m3: Migration = {
      version: 3,
      description: 'seed row',
      up: async (tx) => {
        await tx.run(`INSERT INTO items (name, colour) VALUES ($1, $2)`, ['seed', 'red']);
      },
    };

    it('applies migrations in order, once, and records them per service', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        const first = await migrate(db, 'shop', [m1, m2]);
        assert.deepEqual(first, { service: 'shop', from: 0, to: 2, applied: [1, 2] });
        const again = await migrate(db, 'shop', [m1, m2]);
        assert.deepEqual(again, { service: 'shop', from: 2, to: 2, applied: [] });
        const upgrade = await migrate(db, 'shop', [m1, m2, m3]);
        assert.deepEqual(upgrade.applied, [3]);
        assert.equal(await countItems(db), 1, 'the seed migration ran exactly once');
        assert.equal(await schemaVersion(db, 'shop'), 3);
        assert.equal(await schemaVersion(db, 'other'), 0);
        const rows = await db.query(
          `SELECT service, version, applied_at FROM schema_migrations ORDER BY version`,
        );
        assert.deepEqual(
          rows.map((r) => [r['service'], Number(r['version'])]),
          [
            ['shop', 1],
            ['shop', 2],
            ['shop', 3],
          ],
        );
        assert.ok(!Number.isNaN(Date.parse(String(rows[0]?.['applied_at']))));
      }));

    it('keeps services apart in one database', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await migrate(db, 'shop', [m1]);
        const other = await migrate(db, 'depot', [
          { version: 1, description: 'crates', up: `CREATE TABLE crates (id INTEGER PRIMARY KEY)` },
        ]);
        assert.deepEqual(other.applied, [1]);
        assert.equal(await schemaVersion(db, 'shop'), 1);
      }));

    it('refuses a database that a newer version migrated further, with a message saying so', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await migrate(db, 'shop', [m1, m2]);
        await assert.rejects(migrate(db, 'shop', [m1]), (e) => {
          assert.ok(isPosternError(e, 'STORE'), String(e));
          assert.match(e.message, /'shop'.*schema version 2.*only up to 1/);
          assert.match(e.message, /newer Postern/);
          return true;
        });
        assert.equal(await schemaVersion(db, 'shop'), 2, 'nothing was changed');
      }));

    it('rolls back a failing migration whole and applies it once it is fixed', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        const broken: Migration = {
          version: 2,
          description: 'half done',
          up: `CREATE TABLE extra (id INTEGER); INSERT INTO no_such_table VALUES (1)`,
        };
        await assert.rejects(migrate(db, 'shop', [m1, broken]), (e) => {
          assert.ok(isPosternError(e, 'STORE'), String(e));
          assert.match(e.message, /migration 2 of 'shop' \(half done\) failed and was rolled back/);
          return true;
        });
        assert.equal(await schemaVersion(db, 'shop'), 1, 'migration 1 stayed applied');
        await assert.rejects(db.query(`SELECT * FROM extra`), (e) => isPosternError(e, 'STORE'));
        const fixed = await migrate(db, 'shop', [m1, { ...broken, up: `CREATE TABLE extra (id INTEGER)` }]);
        assert.deepEqual(fixed.applied, [2]);
      }));

    it('applies each migration once when several connections migrate at the same time', () =>
      withTestDatabase(backend, async (tdb) => {
        const dbs = await Promise.all([tdb.open(), tdb.open(), tdb.open()]);
        const results = await Promise.all(dbs.map((db) => migrate(db, 'shop', [m1, m2, m3])));
        const applied = results.flatMap((r) => r.applied).sort();
        assert.deepEqual(applied, [1, 2, 3]);
        assert.equal(await countItems(dbs[0]!), 1);
        const rows = await dbs[1]!.query(`SELECT version FROM schema_migrations WHERE service = 'shop'`);
        assert.equal(rows.length, 3);
      }));
  });
}

describe('migrate: the list of migrations', () => {
  it('rejects gaps, disorder, empty descriptions and odd service names before touching the database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-migrate-'));
    const db = await openSqlDb(join(dir, 'm.sqlite'));
    try {
      const ok = { version: 1, description: 'x', up: 'SELECT 1' };
      await assert.rejects(migrate(db, 'svc', [{ ...ok, version: 2 }]), (e) =>
        isPosternError(e, 'BAD_ARGUMENT'),
      );
      await assert.rejects(migrate(db, 'svc', [ok, ok]), (e) => isPosternError(e, 'BAD_ARGUMENT'));
      await assert.rejects(migrate(db, 'svc', [{ ...ok, description: ' ' }]), (e) =>
        isPosternError(e, 'BAD_ARGUMENT'),
      );
      await assert.rejects(migrate(db, 'Bad Name', [ok]), (e) => isPosternError(e, 'BAD_ARGUMENT'));
      const tables = await db.query(`SELECT name FROM sqlite_master WHERE name = 'schema_migrations'`);
      assert.equal(tables.length, 0);
    } finally {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('openSqlDb on SQLite files', () => {
  it('creates missing folders, uses WAL mode and keeps data across reopen', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-open-'));
    try {
      const path = join(dir, 'a', 'b', 'ops.sqlite');
      const db = await openSqlDb(path);
      assert.equal(db.dialect, 'sqlite');
      assert.ok(existsSync(path));
      const [mode] = await db.query(`PRAGMA journal_mode`);
      assert.equal(mode?.['journal_mode'], 'wal');
      const [fk] = await db.query(`PRAGMA foreign_keys`);
      assert.equal(fk?.['foreign_keys'], 1);
      await db.exec(ITEMS_DDL);
      await db.run(`INSERT INTO items (name) VALUES ('kept')`);
      await db.close();
      const again = await openSqlDb(path);
      assert.equal(await countItems(again), 1);
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says so when the path is a folder or a file that is not a database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'postern-open-'));
    try {
      mkdirSync(join(dir, 'folder'));
      await assert.rejects(openSqlDb(join(dir, 'folder')), (e) => {
        assert.ok(isPosternError(e, 'STORE'), String(e));
        assert.match(e.message, /cannot open the SQLite database .*folder/);
        return true;
      });
      const junk = join(dir, 'junk.sqlite');
      writeFileSync(
        junk,
        'this is not a database, just text that is long enough to have a header'.repeat(20),
      );
      await assert.rejects(openSqlDb(junk), (e) => {
        assert.ok(isPosternError(e, 'STORE'), String(e));
        assert.match(e.message, /junk\.sqlite is not a SQLite database/);
        return true;
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an empty target and URL schemes it does not know', async () => {
    await assert.rejects(openSqlDb(''), (e) => isPosternError(e, 'BAD_CONFIG'));
    await assert.rejects(openSqlDb('mysql://u:secret@127.0.0.1/db'), (e) => {
      assert.ok(isPosternError(e, 'BAD_CONFIG'));
      assert.doesNotMatch(e.message, /secret/);
      return true;
    });
  });
});

describe('openSqlDb on PostgreSQL: failures', () => {
  it('says which host and port it cannot reach, without the password', async () => {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    await assert.rejects(openSqlDb('postgres://postern:s3cret-pw@127.0.0.1:1/postern_test'), (e) => {
      assert.ok(isPosternError(e, 'STORE'), String(e));
      assert.match(e.message, /cannot connect to PostgreSQL at 127\.0\.0\.1:1: connection refused/);
      assert.doesNotMatch(e.message, /s3cret-pw/);
      return true;
    });
  });

  it('refuses a malformed URL without echoing it, and a schema name it would have to quote', async () => {
    await assert.rejects(openSqlDb('postgres://user:pa ss@[bad/db'), (e) => {
      assert.ok(isPosternError(e, 'BAD_CONFIG'), String(e));
      assert.doesNotMatch(e.message, /pa ss/);
      return true;
    });
    await assert.rejects(openSqlDb('postgres://u:p@127.0.0.1:1/db', { schema: 'x"; DROP' }), (e) =>
      isPosternError(e, 'BAD_ARGUMENT'),
    );
  });

  const pgUrl = process.env[PG_URL_ENV];
  const skip = pgUrl ? false : `${PG_URL_ENV} is not set`;

  it('says the password was refused, without printing it', { skip }, async () => {
    const u = new URL(pgUrl!);
    u.password = 'definitely-wrong-pw';
    await assert.rejects(openSqlDb(u.href), (e) => {
      assert.ok(isPosternError(e, 'STORE'), String(e));
      assert.match(e.message, new RegExp(`refused the password for user '${u.username}'`));
      assert.doesNotMatch(e.message, /definitely-wrong-pw/);
      return true;
    });
  });

  it('says the database does not exist', { skip }, async () => {
    const u = new URL(pgUrl!);
    u.pathname = '/postern_no_such_db';
    await assert.rejects(openSqlDb(u.href), (e) => {
      assert.ok(isPosternError(e, 'STORE'), String(e));
      assert.match(e.message, /database 'postern_no_such_db' does not exist/);
      return true;
    });
  });
});
