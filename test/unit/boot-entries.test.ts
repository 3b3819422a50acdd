/**
 * kargs.d TOML subset, kernel command-line helpers and BLS Type 1 entries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { composefsArg, composefsKarg, kargsFromFiles, parseKargsToml, splitCmdline, lastKarg } from '../../src/boot/kargs.js';
import { compareEntries, entryFileName, parseBlsEntry, sortKey, writeBlsEntry, type BlsEntry } from '../../src/boot/bls.js';
import { ParseError } from '../../src/errors.js';
import { Rng } from '../helpers/rng.js';

test('kargs.d: arrays over several lines, comments, both string kinds, escapes', () => {
  const t = `# console settings\nkargs = [\n  "console=ttyS0,115200n8", # serial\n  'quiet',\n  "a=\\"b\\"",\n]\nmatch-architectures = ["x86_64"]\n`;
  assert.deepEqual(parseKargsToml(t), { kargs: ['console=ttyS0,115200n8', 'quiet', 'a="b"'], matchArchitectures: ['x86_64'] });
});

test('kargs.d: malformed files fail with the line number', () => {
  const bad: Array<[string, number]> = [
    ['kargs = ["a"\nfoo = 1\n', 2],
    ['kargs = "a"\n', 1],
    ['\n\n[install]\nkargs=["a"]\n', 3],
    ['kargs = ["a b"]\n', 0],
    ['kargs = ["a"]\nkargs = ["b"]\n', 2],
    ['other = ["x"]\n', 1],
    ['match-architectures = ["x86_64"]\n', 0],
    ['kargs = ["unterminated]\n', 1],
  ];
  for (const [text, line] of bad) {
    assert.throws(() => parseKargsToml(text, 'f.toml'), (e: unknown) => {
      assert.ok(e instanceof ParseError, String(e));
      if (line > 0) assert.equal(e.line, line, `${JSON.stringify(text)}: ${e.message}`);
      assert.match(e.message, /f\.toml/);
      return true;
    });
  }
});

test('kargs.d: files in name order, .toml only, architecture filter', async () => {
  const files = [
    { name: '20-b.toml', text: 'kargs = ["b"]' },
    { name: '10-a.toml', text: 'kargs = ["a"]' },
    { name: '15-arm.toml', text: 'kargs = ["arm"]\nmatch-architectures = ["aarch64"]' },
    { name: '30-c.conf', text: 'not toml at all' },
  ];
  assert.deepEqual(await kargsFromFiles(files, 'x86_64'), ['a', 'b']);
  assert.deepEqual(await kargsFromFiles(files, 'aarch64'), ['a', 'arm', 'b']);
});

test('command line: quotes, last composefs= wins, digest validation', () => {
  assert.deepEqual(splitCmdline(' a  b="c d" e\n'), ['a', 'b="c d"', 'e']);
  const d1 = 'a'.repeat(128);
  const d2 = 'b'.repeat(64);
  assert.deepEqual(composefsKarg(`initrd=\\EFI\\x composefs=${d1} rw composefs=?${d2}`), { digest: d2, verityOptional: true });
  assert.equal(composefsKarg('rw quiet'), undefined);
  assert.throws(() => composefsKarg('composefs=ABC'), /hex/);
  assert.throws(() => composefsKarg(`composefs=${'a'.repeat(100)}`), /hex/);
  assert.equal(composefsArg(d2, false), `composefs=${d2}`);
  assert.equal(lastKarg(['x=1', 'y=2', 'x=3'], 'x'), '3');
});

test('BLS: write → parse round trip for generated entries; serialisation order as bootc', () => {
  const rng = new Rng(7);
  for (let i = 0; i < 300; i++) {
    const type1 = rng.bool();
    const e: BlsEntry = {
      title: rng.bool() ? `Debian GNU/Linux ${rng.int(1, 99)}` : undefined,
      version: `${rng.int(0, 50)}.${rng.int(0, 9)}`,
      sortKey: rng.bool() ? sortKey('debian', rng.bool()) : undefined,
      machineId: rng.bool() ? 'f'.repeat(32) : undefined,
      linux: type1 ? `/EFI/Linux/bootc_composefs-${'c'.repeat(128)}/vmlinuz` : undefined,
      initrd: type1 ? [`/EFI/Linux/bootc_composefs-${'c'.repeat(128)}/initrd`] : [],
      uki: type1 ? undefined : `/EFI/Linux/bootc/bootc_composefs-${'d'.repeat(128)}.efi`,
      options: type1 ? [`root=UUID=1234 rw composefs=${'c'.repeat(128)}`] : [],
      extra: rng.bool() ? [['x-bootcfs', 'yes']] : [],
    };
    const text = writeBlsEntry(e);
    assert.deepEqual(parseBlsEntry(text), JSON.parse(JSON.stringify(e)));
    const keys = text.trim().split('\n').map((l) => l.split(' ')[0]);
    const order = ['title', 'version', 'linux', 'initrd', 'options', 'uki', 'machine-id', 'sort-key', 'x-bootcfs'];
    assert.deepEqual(keys, [...keys].sort((a, b) => order.indexOf(a!) - order.indexOf(b!)));
  }
  assert.throws(() => parseBlsEntry('title x\nversion 1\n'), /exactly one of linux, efi or uki/);
  assert.throws(() => parseBlsEntry('version 1\nlinux /a\nuki /b\n'), /exactly one/);
  assert.throws(() => writeBlsEntry({ initrd: [], options: ['a\nb'], extra: [], linux: '/x' }), /line break/);
});

test('BLS naming and ordering: primary before rollback', () => {
  assert.equal(entryFileName('fedora-coreos', '41.2', true), 'bootc_fedora_coreos-41.2-1.conf');
  const primary = parseBlsEntry(`version 2\nuki /a.efi\nsort-key ${sortKey('debian', true)}\n`);
  const secondary = parseBlsEntry(`version 3\nuki /b.efi\nsort-key ${sortKey('debian', false)}\n`);
  assert.ok(compareEntries(primary, secondary) < 0);
  const [v1, v2] = [parseBlsEntry('version 1.2\nlinux /a\nsort-key s\n'), parseBlsEntry('version 1.10\nlinux /a\nsort-key s\n')];
  assert.ok(compareEntries(v2, v1) < 0, 'same sort-key: higher version first');
});
