/**
 * BLS entry ordering depends on the UAPI version comparison; ours against systemd-analyze compare-versions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareVersions } from '../../src/boot/bls.js';
import { cases, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

test('compareVersions equals systemd-analyze compare-versions on generated versions', () => {
  const rng = new Rng(42);
  const alphabet = ['0', '1', '2', '9', '10', '007', 'a', 'b', 'rc', '~', '-', '.', '^', '_', '+'];
  const gen = (): string => {
    let s = '';
    const n = rng.int(1, 6);
    for (let i = 0; i < n; i++) s += alphabet[rng.int(0, alphabet.length - 1)];
    return s;
  };
  const n = cases(300, 3000);
  const fixed: Array<[string, string]> = [['1.2', '1.10'], ['6.12.0-1', '6.12.0'], ['1~rc1', '1'], ['1^git', '1'], ['1.0', '1.0.0'], ['a', '1'], ['', '0']];
  const pairs = [...fixed];
  while (pairs.length < n) pairs.push([gen(), gen()]);
  let diffs = 0;
  for (const [a, b] of pairs) {
    const r = run('systemd-analyze', ['compare-versions', '--', a, b]);
    // systemd 252: exit 0 when equal, 11 when a > b, 12 when a < b
    const want = r.status === 12 ? -1 : r.status === 0 ? 0 : r.status === 11 ? 1 : NaN;
    assert.ok(!Number.isNaN(want), `systemd-analyze failed for ${a} ${b}: ${r.stderr}`);
    const got = Math.sign(compareVersions(a, b));
    if (got !== want) {
      diffs++;
      assert.equal(got, want, `compareVersions(${JSON.stringify(a)}, ${JSON.stringify(b)})`);
    }
  }
  assert.equal(diffs, 0);
});
