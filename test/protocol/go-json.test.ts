// Go-compatible JSON: the text a server entry's signature covers must be byte-for-byte what Go writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { isPosternError } from '../../src/common/errors.ts';
import {
  MAX_JSON_NESTING_DEPTH,
  decodeUtf8LikeGo,
  goJsonFormatNumber,
  goJsonMarshal,
  goJsonQuote,
  goJsonUnmarshal,
  toWellFormedString,
  type JsonValue,
} from '../../src/protocol/go-json.ts';

interface ReferenceJsonFixture {
  jsonCases: Array<{ name: string; input?: string; inputHex?: string; output?: string; error: boolean }>;
  nestingCases: Array<{ kind: 'array' | 'object'; depth: number; error: boolean }>;
}
const reference = JSON.parse(
  readFileSync(new URL('../fixtures/psiphon-formats/reference-made-entries.json', import.meta.url), 'utf8'),
) as ReferenceJsonFixture;

/** Structural equality that ignores prototypes (fast-check may build null-prototype objects) and keeps -0. */
function sameJson(a: unknown, b: unknown): boolean {
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return Object.is(a, b);
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  if (ka.length !== kb.length || ka.some((k, i) => k !== kb[i])) return false;
  return ka.every((k) => sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

function throwsCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => isPosternError(e) && e.code === code);
}

test('every reference JSON case: Go Unmarshal then Marshal is reproduced exactly', () => {
  assert.ok(reference.jsonCases.length > 50);
  for (const c of reference.jsonCases) {
    const input =
      c.inputHex !== undefined ? Buffer.from(c.inputHex, 'hex') : Buffer.from(c.input ?? '', 'utf8');
    if (c.error) {
      throwsCode(() => goJsonUnmarshal(input), 'BAD_JSON');
    } else {
      assert.equal(goJsonMarshal(goJsonUnmarshal(input)), c.output, `case ${JSON.stringify(c.name)}`);
    }
  }
});

test("Go's nesting limit applies to reading, and writing stops at the same depth", () => {
  for (const c of reference.nestingCases) {
    const text =
      c.kind === 'array'
        ? '['.repeat(c.depth) + ']'.repeat(c.depth)
        : '{"a":'.repeat(c.depth - 1) + '[]' + '}'.repeat(c.depth - 1);
    if (c.error) throwsCode(() => goJsonUnmarshal(text), 'BAD_JSON');
    else assert.equal(goJsonMarshal(goJsonUnmarshal(text)), text);
  }
  let deep: JsonValue = [];
  for (let i = 0; i < MAX_JSON_NESTING_DEPTH; i++) deep = [deep];
  throwsCode(() => goJsonMarshal(deep), 'BAD_JSON');
  const cyclic: Record<string, unknown> = {};
  cyclic['self'] = cyclic;
  throwsCode(() => goJsonMarshal(cyclic), 'BAD_JSON');
});

test('strings are escaped as Go 1.22+ escapes them', () => {
  assert.equal(goJsonQuote('plain é 日本 😀'), '"plain é 日本 😀"');
  assert.equal(goJsonQuote('<a href="x">&</a>'), '"\\u003ca href=\\"x\\"\\u003e\\u0026\\u003c/a\\u003e"');
  assert.equal(
    goJsonQuote('\b\f\n\r\t\u0000\u0001\u001f\u007f'),
    '"\\b\\f\\n\\r\\t\\u0000\\u0001\\u001f\u007f"',
  );
  assert.equal(goJsonQuote('\u2028\u2029\\/'), '"\\u2028\\u2029\\\\/"');
  // Unpaired surrogates become U+FFFD itself (what Go holds after decoding "\ud800"), not an escape.
  assert.equal(goJsonQuote('a\ud800b\udc00c\ud83d'), '"a\ufffdb\ufffdc\ufffd"');
  assert.equal(goJsonQuote('\ud83d\ude00'), '"😀"');
});

test('numbers are formatted as Go formats a float64', () => {
  const cases: Array<[number, string]> = [
    [0, '0'],
    [-0, '-0'],
    [1, '1'],
    [-1.5, '-1.5'],
    [1e21, '1e+21'],
    [1e20, '100000000000000000000'],
    [123456789012345678901, '123456789012345680000'],
    [1e-6, '0.000001'],
    [1e-7, '1e-7'],
    [-2.5e-10, '-2.5e-10'],
    [5e-324, '5e-324'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [0.1 + 0.2, '0.30000000000000004'],
  ];
  for (const [n, s] of cases) assert.equal(goJsonFormatNumber(n), s, String(n));
  for (const bad of [NaN, Infinity, -Infinity]) throwsCode(() => goJsonMarshal({ n: bad }), 'BAD_JSON');
});

test('object keys are sorted by UTF-8 bytes, not UTF-16 code units', () => {
  // U+E000 is EE 80 80 and sorts before 😀 (F0 9F 98 80); JS's default sort puts 😀 (D83D DE00) first.
  const out = goJsonMarshal({ '😀': 1, '\ue000': 2, Z: 3, a: 4, '': 5, '10': 6, '9': 7 });
  assert.equal(out, '{"":5,"10":6,"9":7,"Z":3,"a":4,"\ue000":2,"😀":1}');
  throwsCode(() => goJsonMarshal({ '\ud800': 1, '\ud801': 2 }), 'BAD_JSON');
});

test('only JSON values are marshalled; undefined properties are left out', () => {
  assert.equal(goJsonMarshal({ a: undefined, b: 1 }), '{"b":1}');
  assert.equal(
    goJsonMarshal(Object.assign(Object.create(null) as object, { x: [true, null] })),
    '{"x":[true,null]}',
  );
  for (const bad of [undefined, 1n, Symbol('s'), () => 1, new Date(0), new Map(), [undefined], [1, , 2]]) {
    throwsCode(() => goJsonMarshal(bad), 'BAD_JSON');
  }
});

test('reading: "__proto__" is an ordinary key, later duplicates win, bad UTF-8 is replaced per byte', () => {
  const v = goJsonUnmarshal('{"__proto__":{"polluted":true},"a":1,"a":2}') as Record<string, JsonValue>;
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  assert.deepEqual(Object.keys(v), ['__proto__', 'a']);
  assert.equal(v['a'], 2);
  assert.equal(goJsonMarshal(v), '{"__proto__":{"polluted":true},"a":2}');
  // E2 82 41: Go's DecodeRune yields two U+FFFD then "A" (a WHATWG decoder would give one).
  assert.equal(decodeUtf8LikeGo(Buffer.from([0xe2, 0x82, 0x41])), '\ufffd\ufffdA');
  assert.equal(decodeUtf8LikeGo(Buffer.from([0xed, 0xa0, 0x80])), '\ufffd\ufffd\ufffd');
  assert.equal(decodeUtf8LikeGo(Buffer.from('é😀', 'utf8')), 'é😀');
  // A byte-order mark is not JSON whitespace in Go.
  throwsCode(() => goJsonUnmarshal(Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d])), 'BAD_JSON');
});

const wellFormedJson = fc.jsonValue({ stringUnit: 'grapheme', maxDepth: 4 });

test('property: what goJsonMarshal writes, JSON.parse reads back as the same value', () => {
  fc.assert(
    fc.property(wellFormedJson, (v) => {
      const out = goJsonMarshal(v);
      assert.ok(sameJson(JSON.parse(out), v), out);
      assert.ok(sameJson(goJsonUnmarshal(out), v), out);
    }),
    { numRuns: 300 },
  );
});

test('property: any string survives as its well-formed version, and re-marshalling is stable', () => {
  const anyUnits = fc.string({
    unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
  });
  fc.assert(
    fc.property(fc.dictionary(anyUnits, anyUnits, { maxKeys: 5 }), (obj) => {
      let out: string;
      try {
        out = goJsonMarshal(obj);
      } catch (e) {
        // Only when two keys collide once their unpaired surrogates are replaced.
        assert.ok(isPosternError(e, 'BAD_JSON'));
        const keys = Object.keys(obj).map(toWellFormedString);
        assert.notEqual(new Set(keys).size, keys.length);
        return;
      }
      const back = goJsonUnmarshal(out) as Record<string, JsonValue>;
      for (const [k, v] of Object.entries(obj))
        assert.equal(back[toWellFormedString(k)], toWellFormedString(v));
      assert.equal(goJsonMarshal(back), out);
    }),
    { numRuns: 300 },
  );
});

test('property: goJsonUnmarshal accepts exactly the texts JSON.parse accepts (numbers in range)', () => {
  const mutated = fc
    .tuple(
      wellFormedJson.map((v) => JSON.stringify(v)),
      fc.nat(),
      fc.constantFrom('', ',', ']', '}', '"', '\\', ' ', '0', '-', 'e', '.', ':', '\u0001', 'x', '\ud800'),
      fc.nat({ max: 2 }),
    )
    .map(([s, at, insert, cut]) => {
      const i = s.length === 0 ? 0 : at % (s.length + 1);
      return s.slice(0, i) + insert + s.slice(i + cut);
    });
  fc.assert(
    fc.property(fc.oneof(mutated, fc.string()), (text) => {
      let expected: unknown;
      let parses = true;
      try {
        expected = JSON.parse(text);
      } catch {
        parses = false;
      }
      let got: JsonValue | undefined;
      try {
        got = goJsonUnmarshal(text);
      } catch (e) {
        assert.ok(isPosternError(e, 'BAD_JSON'), String(e));
        assert.ok(!parses || /\d[eE]/.test(text), `rejected valid JSON ${JSON.stringify(text)}`);
        return;
      }
      assert.ok(parses, `accepted invalid JSON ${JSON.stringify(text)}`);
      assert.equal(goJsonMarshal(got), goJsonMarshal(goJsonUnmarshal(goJsonMarshal(got))));
      if (!/[\ud800-\udfff]/.test(text) && !/\\u[dD][89a-fA-F]/.test(text))
        assert.ok(sameJson(got, expected));
    }),
    { numRuns: 500 },
  );
});
