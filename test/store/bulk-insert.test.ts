import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isPosternError } from '../../src/common/errors.ts';
import {
  BULK_INSERT_CHUNK_ROWS,
  type BulkColumn,
  type BulkRow,
  type SqlExecutor,
} from '../../src/store/index.ts';
import { DATABASE_BACKENDS, withTestDatabase } from '../helpers/databases.ts';

const DDL = `CREATE TABLE bulk_items (name TEXT NOT NULL UNIQUE, qty BIGINT, ratio DOUBLE PRECISION, flag INTEGER)`;
const COLUMNS: readonly BulkColumn[] = [
  { name: 'name', type: 'text' },
  { name: 'qty', type: 'integer' },
  { name: 'ratio', type: 'real' },
  { name: 'flag', type: 'integer' },
];

async function rowsOf(
  db: SqlExecutor,
): Promise<Array<[string, number | null, number | null, number | null]>> {
  const rows = await db.query(`SELECT name, qty, ratio, flag FROM bulk_items ORDER BY name`);
  const num = (v: unknown): number | null => (v === null ? null : Number(v));
  return rows.map((r) => [String(r['name']), num(r['qty']), num(r['ratio']), num(r['flag'])]);
}

async function count(db: SqlExecutor): Promise<number> {
  const rows = await db.query(`SELECT COUNT(*) AS n FROM bulk_items`);
  return Number(rows[0]?.['n']);
}

for (const backend of DATABASE_BACKENDS) {
  describe(`SqlDb.insertMany on ${backend.name}`, { skip: backend.skip }, () => {
    it('inserts every row with text that needs quoting, nulls, big integers, reals and booleans', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await db.exec(DDL);
        const rows: BulkRow[] = [
          ['plain', 1, 0.5, true],
          ['quote " and \\ backslash', null, null, false],
          ['{braces}, commas', 2 ** 53 - 1, -1.25, null],
          ['NULL', 0, 1e-9, null],
          ['', -7, 3, 1],
          ['ünïcødé ✓', 9007199254740991n, 0, 0],
        ];
        const r = await db.insertMany('bulk_items', COLUMNS, rows);
        assert.equal(r.changes, rows.length);
        assert.deepEqual(await rowsOf(db), [
          ['', -7, 3, 1],
          ['NULL', 0, 1e-9, null],
          ['plain', 1, 0.5, 1],
          ['quote " and \\ backslash', null, null, 0],
          ['{braces}, commas', 2 ** 53 - 1, -1.25, null],
          ['ünïcødé ✓', 2 ** 53 - 1, 0, 0],
        ]);
        assert.deepEqual(await db.insertMany('bulk_items', COLUMNS, []), { changes: 0 });
      }));

    it('is all or nothing: a duplicate in the last row leaves none of the rows, inside or outside a transaction', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await db.exec(DDL);
        await db.insertMany('bulk_items', COLUMNS, [['existing', 1, null, null]]);
        const rows: BulkRow[] = Array.from({ length: 500 }, (_, i) => [`n${i}`, i, null, null]);
        rows.push(['existing', 2, null, null]);
        await assert.rejects(db.insertMany('bulk_items', COLUMNS, rows), (e) =>
          isPosternError(e, 'ALREADY_EXISTS'),
        );
        assert.equal(await count(db), 1);
        await assert.rejects(
          db.transaction(async (tx) => {
            await tx.run(`INSERT INTO bulk_items (name) VALUES ('inside')`);
            await tx.insertMany('bulk_items', COLUMNS, rows);
          }),
          (e) => isPosternError(e, 'ALREADY_EXISTS'),
        );
        assert.deepEqual(await rowsOf(db), [['existing', 1, null, null]]);
      }));

    it('splits very long lists into chunks and still takes them all', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await db.exec(DDL);
        const n = BULK_INSERT_CHUNK_ROWS * 2 + 17;
        const rows: BulkRow[] = Array.from({ length: n }, (_, i) => [`r${i}`, i, i / 2, i % 2 === 0]);
        assert.equal((await db.insertMany('bulk_items', COLUMNS, rows)).changes, n);
        const sums = await db.query(`SELECT COUNT(*) AS n, SUM(qty) AS q, SUM(flag) AS f FROM bulk_items`);
        assert.equal(Number(sums[0]?.['n']), n);
        assert.equal(Number(sums[0]?.['q']), (n * (n - 1)) / 2);
        assert.equal(Number(sums[0]?.['f']), Math.ceil(n / 2));
      }));

    it('refuses bad names, wrong row widths and values of the wrong type before writing anything', () =>
      withTestDatabase(backend, async (tdb) => {
        const db = await tdb.open();
        await db.exec(DDL);
        const bad = (p: Promise<unknown>): Promise<void> =>
          assert.rejects(p, (e) => isPosternError(e, 'BAD_ARGUMENT'));
        await bad(db.insertMany('bulk_items; DROP TABLE bulk_items', COLUMNS, [['a', 1, 1, 1]]));
        await bad(db.insertMany('bulk_items', [{ name: 'name"', type: 'text' }], [['a']]));
        await bad(db.insertMany('bulk_items', [...COLUMNS, COLUMNS[0]!], [['a', 1, 1, 1, 'a']]));
        await bad(
          db.insertMany('bulk_items', COLUMNS, [
            ['ok', 1, 1, 1],
            ['short', 1],
          ]),
        );
        await bad(
          db.insertMany('bulk_items', COLUMNS, [
            ['ok', 1, 1, 1],
            ['x', 'not a number', 1, 1],
          ]),
        );
        await bad(db.insertMany('bulk_items', COLUMNS, [['x', 1.5, 1, 1]]));
        await bad(db.insertMany('bulk_items', COLUMNS, [['x', 2 ** 60, 1, 1]]));
        await bad(db.insertMany('bulk_items', COLUMNS, [['x', 2n ** 63n, 1, 1]]));
        await bad(db.insertMany('bulk_items', COLUMNS, [[7, 1, 1, 1]]));
        await bad(db.insertMany('bulk_items', COLUMNS, [['x', 1, Number.NaN, 1]]));
        assert.equal(await count(db), 0);
      }));
  });
}
