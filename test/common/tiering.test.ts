import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { LONG_RUNNING_V8_FLAGS } from '../../src/common/tiering.ts';

// v8.setFlagsFromString ignores a flag V8 does not know, so a Node upgrade that renamed one would silently undo
// the tuning; on the command line an unknown flag is refused, which is what this checks.
test('the long-running V8 flags are flags this Node knows', () => {
  const r = spawnSync(process.execPath, [...LONG_RUNNING_V8_FLAGS, '-e', "process.stdout.write('ran')"], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'ran');
  assert.equal(r.stderr, '');
  const bad = spawnSync(process.execPath, ['--interrupt-budget-that-does-not-exist=1', '-e', '0'], {
    encoding: 'utf8',
  });
  assert.notEqual(bad.status, 0, 'an unknown V8 flag must be refused, or this test proves nothing');
});
