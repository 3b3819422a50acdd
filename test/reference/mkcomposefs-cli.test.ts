/**
 * `bin/bootcfs mkcomposefs` vs the real mkcomposefs 1.0.8, as processes: the same image bytes for the
 * fixture dumpfiles (file and stdin/stdout `-` forms), the same stdout for --print-digest(-only), the
 * same exit status and messages for usage errors and bad input, CFS_PARSE_STRICT honoured, and no
 * output file left behind on failure (where the C tool leaves an empty one).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BOOTCFS_BIN, FIXTURES, MKCOMPOSEFS, cases, requireTool, run, type RunResult } from '../helpers/ref.js';
import { generateDiskTree } from '../helpers/gen-disk-tree.js';
import { fsverityDigest } from '../../src/fsverity/index.js';

const FIX = path.join(FIXTURES, 'libcomposefs-1.0.8');

function scratch(): string {
  return fs.mkdtempSync(path.join(process.env.BOOTCFS_TEST_TMP ?? os.tmpdir(), 'bootcfs-mkcfs-cli-'));
}

function ours(args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): RunResult {
  return run(BOOTCFS_BIN, ['mkcomposefs', ...args], { input: opts.input, env: opts.env ?? process.env });
}
function ref(args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): RunResult {
  return run(MKCOMPOSEFS, args, { input: opts.input, env: opts.env ?? process.env });
}

/** The fixture as a plain dumpfile in `dir` (gunzipped when needed). */
function fixture(dir: string, name: string): string {
  const src = path.join(FIX, name);
  if (!name.endsWith('.gz')) return src;
  const out = path.join(dir, name.slice(0, -3));
  fs.writeFileSync(out, gunzipSync(fs.readFileSync(src)));
  return out;
}

/** First stderr line without the program-name prefix ("mkcomposefs: " / "bootcfs: "). */
function message(r: RunResult): string {
  return (r.stderr.toString().split('\n')[0] ?? '').replace(/^(mkcomposefs|bootcfs): /, '');
}

const GOOD_DUMPS = fs
  .readdirSync(FIX)
  .filter((f) => (f.endsWith('.dump') || f.endsWith('.dump.gz')) && !f.startsWith('should-fail-'))
  .sort();
const FAIL_DUMPS = fs
  .readdirSync(FIX)
  .filter((f) => f.startsWith('should-fail-'))
  .sort();

test('--from-file: fixture dumps give identical images and digests (file and - forms)', { timeout: 10 * 60_000 }, () => {
  requireTool(MKCOMPOSEFS);
  assert.ok(GOOD_DUMPS.length >= 10, 'fixtures missing');
  const work = scratch();
  try {
    for (const name of GOOD_DUMPS) {
      const dump = fixture(work, name);
      const img1 = path.join(work, 'c.img');
      const img2 = path.join(work, 'ours.img');
      const a = ref(['--from-file', '--print-digest', dump, img1]);
      const b = ours(['--from-file', '--print-digest', dump, img2]);
      assert.equal(b.status, a.status, `${name}: exit status (ours: ${b.stderr})`);
      assert.equal(a.status, 0, `${name}: mkcomposefs failed: ${a.stderr}`);
      assert.ok(fs.readFileSync(img2).equals(fs.readFileSync(img1)), `${name}: images differ`);
      assert.equal(b.stdout.toString(), a.stdout.toString(), `${name}: --print-digest output`);
      assert.match(b.stdout.toString(), /^[0-9a-f]{64}\n$/);
      // stdin → stdout, digest line after the image bytes on the same stdout
      const input = fs.readFileSync(dump);
      const c = ref(['--from-file', '--print-digest', '-', '-'], { input });
      const d = ours(['--from-file', '--print-digest', '-', '-'], { input });
      assert.equal(d.status, 0, `${name} (-): ${d.stderr}`);
      assert.ok(d.stdout.equals(c.stdout), `${name}: '-' form stdout differs`);
      // --print-digest-only
      const e = ref(['--from-file', '--print-digest-only', dump]);
      const f = ours(['--from-file', '--print-digest-only', dump]);
      assert.equal(f.stdout.toString(), e.stdout.toString(), `${name}: --print-digest-only`);
      // version flags (on the fixtures whose version matters)
      if (!/^(special|special_v1|no-newline|bigfile)\.dump$/.test(name)) continue;
      for (const flags of [['--min-version=1'], ['--max-version=0'], ['--min-version=1', '--max-version=1']]) {
        const g = ref(['--from-file', ...flags, '--print-digest-only', dump]);
        const h = ours(['--from-file', ...flags, '--print-digest-only', dump]);
        assert.equal(h.status, g.status, `${name} ${flags}: status`);
        assert.equal(h.stdout.toString(), g.stdout.toString(), `${name} ${flags}: digest`);
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('should-fail dumps: strict (CFS_PARSE_STRICT) and default parsing agree with mkcomposefs; no output left', { timeout: 5 * 60_000 }, () => {
  requireTool(MKCOMPOSEFS);
  assert.ok(FAIL_DUMPS.length >= 10);
  const work = scratch();
  try {
    for (const strict of [true, false]) {
      const env = { ...process.env };
      if (strict) env.CFS_PARSE_STRICT = '1';
      else delete env.CFS_PARSE_STRICT;
      for (const name of FAIL_DUMPS) {
        const dump = fixture(work, name);
        const img1 = path.join(work, 'c.img');
        const img2 = path.join(work, 'ours.img');
        fs.rmSync(img1, { force: true });
        fs.rmSync(img2, { force: true });
        const a = ref(['--from-file', dump, img1], { env });
        const b = ours(['--from-file', dump, img2], { env });
        const what = `${name} (${strict ? 'strict' : 'default'})`;
        assert.equal(b.status === 0, a.status === 0, `${what}: C exit ${a.status} (${a.stderr}), ours ${b.status} (${b.stderr})`);
        if (strict) assert.notEqual(a.status, 0, `${what}: the C tool accepted it`);
        if (a.status === 0) {
          assert.ok(fs.readFileSync(img2).equals(fs.readFileSync(img1)), `${what}: images differ`);
        } else {
          assert.equal(b.status, 1, `${what}: exit status`);
          assert.equal(fs.existsSync(img2), false, `${what}: output file left behind`);
          assert.deepEqual(fs.readdirSync(work).filter((f) => f.startsWith('.ours.img')), [], `${what}: temporary left behind`);
          assert.match(b.stderr.toString(), /^bootcfs: .+\n$/, `${what}: one-line error`);
        }
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('usage errors: same exit status and messages as mkcomposefs', () => {
  requireTool(MKCOMPOSEFS);
  const work = scratch();
  try {
    const dir = path.join(work, 'd');
    fs.mkdirSync(dir);
    const img = path.join(work, 'x.img');
    const invocations: string[][] = [
      [],
      [dir],
      [dir, img, 'extra'],
      ['--print-digest-only', dir, img],
      ['--bogus', dir, img],
      ['--print-digest=1', dir, img],
      ['-C', dir, img],
      ['--min-version=abc', dir, img],
      ['--max-version=', dir, img],
      ['--threads=0', dir, img],
      ['--threads=-3', dir, img],
      ['--threads=x', dir, img],
      [dir, img, '--digest-store'],
      ['--digest-store', dir, img], // takes dir as the store: then IMAGE is missing
      ['', img],
      ['--min-version=2', dir, img],
      ['--max-version=5', dir, img],
      ['/nonexistent-bootcfs-src', img],
      ['--from-file', '/nonexistent-bootcfs-dump', img],
      ['--pri', dir, img], // ambiguous abbreviation
      ['--skip-x', dir, img], // unique abbreviation: accepted
      ['--skip-xattrs', '--user-xattrs', dir, img],
      [dir, work], // IMAGE is a directory
    ];
    for (const args of invocations) {
      fs.rmSync(img, { force: true });
      const a = ref(args);
      fs.rmSync(img, { force: true });
      const b = ours(args);
      const what = JSON.stringify(args);
      assert.equal(b.status, a.status, `${what}: exit status (C: ${a.stderr}; ours: ${b.stderr})`);
      if (a.status !== 0) {
        assert.equal(fs.existsSync(img), false, `${what}: output file left behind`);
        // The first line carries the reason (the usage text that may follow names the program).
        const cMsg = message(a);
        if (cMsg.startsWith('Usage:')) assert.match(message(b), /^Usage: /, `${what}: usage`);
        else if (/^(error accessing|open `)/.test(cMsg)) assert.equal(message(b), cMsg, `${what}: message`);
        else if (!/^cannot write file/.test(cMsg)) assert.equal(message(b), cMsg, `${what}: message`);
        assert.equal(b.stdout.length, 0, `${what}: nothing on stdout`);
      }
    }
    // --help is ours: exit 0, usage on stdout.
    const h = ours(['--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout.toString(), /^Usage: bootcfs mkcomposefs \[OPTIONS\] SOURCE IMAGE/);
    for (const opt of ['--digest-store', '--use-epoch', '--skip-devices', '--skip-xattrs', '--user-xattrs', '--print-digest-only', '--from-file', '--min-version', '--max-version', '--threads', '--format', '--preserve-hardlinks']) {
      assert.ok(h.stdout.toString().includes(opt), `--help mentions ${opt}`);
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('failure keeps an existing IMAGE untouched (atomic write)', () => {
  const work = scratch();
  try {
    const img = path.join(work, 'keep.img');
    fs.writeFileSync(img, 'previous image');
    const r = ours(['/nonexistent-bootcfs-src', img]);
    assert.equal(r.status, 1);
    assert.equal(fs.readFileSync(img, 'utf8'), 'previous image');
    assert.deepEqual(fs.readdirSync(work), ['keep.img']);
    const r2 = ours([path.join(FIX, 'special.dump'), path.join(work, 'missing-dir', 'x.img'), '--from-file']);
    assert.equal(r2.status, 1);
    assert.match(r2.stderr.toString(), /^bootcfs: failed to open output file: No such file or directory\n$/);
    // A device as IMAGE is written to, never replaced by a rename.
    const r3 = ours(['--from-file', path.join(FIX, 'special.dump'), '/dev/null']);
    assert.equal(r3.status, 0, r3.stderr.toString());
    assert.ok(fs.statSync('/dev/null').isCharacterDevice(), '/dev/null replaced');
    // A symlink as IMAGE: its target is (atomically) rewritten, the link stays.
    fs.symlinkSync('keep.img', path.join(work, 'link.img'));
    const r4 = ours(['--from-file', path.join(FIX, 'special.dump'), path.join(work, 'link.img')]);
    assert.equal(r4.status, 0, r4.stderr.toString());
    assert.ok(fs.lstatSync(path.join(work, 'link.img')).isSymbolicLink());
    assert.equal(fs.readFileSync(img).readUInt32LE(0), 0xd078629a, 'image written through the link');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('directory sources through the CLI: images, stores and digests as mkcomposefs', { timeout: 10 * 60_000 }, async () => {
  requireTool(MKCOMPOSEFS);
  const n = cases(6, 60);
  for (let i = 0; i < n; i++) {
    const seed = 0x636c6900 + i;
    const work = scratch();
    try {
      const gen = await generateDiskTree(path.join(work, 'tree'), seed, { entries: 80, maxFileSize: 1_000_000, longSymlinks: false });
      const flags = [[], ['--use-epoch'], ['--skip-devices', '--threads=1'], ['--user-xattrs', '--max-version=0']][i % 4]!;
      const s1 = path.join(work, 's1');
      const s2 = path.join(work, 's2');
      const a = ref([...flags, '--print-digest', `--digest-store=${s1}`, gen.dir, path.join(work, 'c.img')]);
      const b = ours([...flags, '--print-digest', `--digest-store=${s2}`, gen.dir, path.join(work, 'o.img')]);
      assert.equal(a.status, 0, `seed ${seed}: ${a.stderr}`);
      assert.equal(b.status, 0, `seed ${seed}: ${b.stderr}`);
      assert.equal(b.stdout.toString(), a.stdout.toString(), `seed ${seed}: digest line`);
      const image = fs.readFileSync(path.join(work, 'o.img'));
      assert.ok(image.equals(fs.readFileSync(path.join(work, 'c.img'))), `seed ${seed}: images differ`);
      assert.equal(b.stdout.toString(), `${fsverityDigest(image).toString('hex')}\n`);
      const list = (d: string) => fs.readdirSync(d, { recursive: true }).map(String).sort();
      assert.deepEqual(list(s2), list(s1), `seed ${seed}: stores differ`);
      // stdout image: same bytes as the file
      const c = ours([...flags, gen.dir, '-']);
      assert.equal(c.status, 0);
      assert.ok(c.stdout.equals(image), `seed ${seed}: '-' output differs`);
      // v2 format: builds, and --print-digest prints the image's digest
      const v2 = path.join(work, 'v2.img');
      const d = ours(['--format=v2', '--print-digest', gen.dir, v2]);
      assert.equal(d.status, 0, d.stderr.toString());
      assert.equal(d.stdout.toString(), `${fsverityDigest(fs.readFileSync(v2)).toString('hex')}\n`);
      // preserving hardlinks changes nothing for a tree without them, and works at all otherwise
      const e = ours(['--preserve-hardlinks', '--print-digest-only', gen.dir]);
      assert.equal(e.status, 0, e.stderr.toString());
      assert.match(e.stdout.toString(), /^[0-9a-f]{64}\n$/);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
});
