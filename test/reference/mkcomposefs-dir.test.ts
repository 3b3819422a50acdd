/**
 * Differential tests of building images from directories on disk: for many seeded random trees,
 * real `mkcomposefs [flags] --digest-store=S1 TREE img1` vs our buildImage(TREE, {flags, digestStore:
 * S2}) must give identical image bytes and identical object stores (names, contents, modes). Runs as
 * root (trees contain devices, trusted.* xattrs, foreign owners).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { MKCOMPOSEFS, cases, isRoot, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { generateDiskTree } from '../helpers/gen-disk-tree.js';
import { buildImage, type MkcomposefsOptions } from '../../src/composefs/mkcomposefs.js';
import { readDirectoryTree } from '../../src/tree/from-directory.js';
import { DigestStore, objectPathForDigest } from '../../src/composefs/digest-store.js';
import { writeDumpfile } from '../../src/dumpfile/write.js';
import { writeImageV1 } from '../../src/erofs/writer-v1.js';
import { closeHashPool, fsverityDigest } from '../../src/fsverity/index.js';
import { lookup, type Inode } from '../../src/tree/model.js';

const SEED_BASE = Number(process.env.BOOTCFS_SEED ?? 0x6d6b6366);
/** Seeds that once found a bug: always run. */
const REGRESSION_SEEDS: number[] = [];

interface Variant {
  name: string;
  cArgs: string[];
  opts: MkcomposefsOptions;
}
const VARIANTS: Variant[] = [
  { name: 'default', cArgs: [], opts: {} },
  { name: 'use-epoch', cArgs: ['--use-epoch'], opts: { useEpoch: true } },
  { name: 'skip-xattrs', cArgs: ['--skip-xattrs'], opts: { skipXattrs: true } },
  { name: 'user-xattrs', cArgs: ['--user-xattrs'], opts: { userXattrs: true } },
  { name: 'skip-devices', cArgs: ['--skip-devices'], opts: { skipDevices: true } },
  { name: 'min-version=1', cArgs: ['--min-version=1'], opts: { minVersion: 1 } },
  { name: 'max-version=0', cArgs: ['--max-version=0'], opts: { maxVersion: 0 } },
  { name: 'min1-max1', cArgs: ['--min-version=1', '--max-version=1'], opts: { minVersion: 1, maxVersion: 1 } },
  { name: 'epoch+skip-devices+user-xattrs', cArgs: ['--use-epoch', '--skip-devices', '--user-xattrs'], opts: { useEpoch: true, skipDevices: true, userXattrs: true } },
];

function scratch(): string {
  return fs.mkdtempSync(path.join(process.env.BOOTCFS_TEST_TMP ?? os.tmpdir(), 'bootcfs-mkcfs-dir-'));
}

/** Every entry of a store: type, relative path, permission bits, and for files size + sha256. */
function storeListing(dir: string): string[] {
  const out: string[] = [];
  if (!fs.existsSync(dir)) return out;
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(dir, r));
      if (st.isDirectory()) {
        out.push(`d ${r} ${(st.mode & 0o7777).toString(8)}`);
        walk(r);
      } else {
        const sum = createHash('sha256').update(fs.readFileSync(path.join(dir, r))).digest('hex');
        out.push(`${st.isFile() ? 'f' : '?'} ${r} ${(st.mode & 0o7777).toString(8)} ${st.size} ${sum}`);
      }
    }
  };
  walk('');
  return out;
}

function firstDifference(a: Buffer, b: Buffer): string {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return `first difference at byte ${i} (sizes ${a.length} vs ${b.length})`;
  return `sizes ${a.length} vs ${b.length}`;
}

test('mkcomposefs from directories: identical images and object stores', { timeout: 30 * 60_000 }, async (t) => {
  assert.ok(isRoot, 'the reference tier runs as root (trees contain devices and trusted.* xattrs)');
  requireTool(MKCOMPOSEFS);
  const n = cases(40, 500);
  const seeds = [...REGRESSION_SEEDS, ...Array.from({ length: n }, (_, i) => (SEED_BASE + i) >>> 0)];
  const kinds: Record<string, number> = {};
  let images = 0;
  let objects = 0;
  try {
    for (const seed of seeds) {
      const rng = new Rng(seed ^ 0x5a5a5a5a);
      const variant = seed === seeds[0] ? VARIANTS[0]! : rng.pick(VARIANTS);
      const work = scratch();
      try {
        const small = rng.bool(0.7);
        const gen = await generateDiskTree(path.join(work, 'tree'), seed, {
          entries: small ? rng.int(5, 120) : rng.int(150, 500),
          maxFileSize: small ? 300_000 : 3 * 1024 * 1024,
        });
        for (const [k, v] of Object.entries(gen.counts)) kinds[k] = (kinds[k] ?? 0) + v;
        const s1 = path.join(work, 'store-c');
        const s2 = path.join(work, 'store-ours');
        const img1 = path.join(work, 'c.img');
        const r = run(MKCOMPOSEFS, [...variant.cArgs, `--digest-store=${s1}`, gen.dir, img1]);
        assert.equal(r.status, 0, `seed ${seed} (${variant.name}): mkcomposefs failed: ${r.stderr}`);
        const { image, digest } = await buildImage(gen.dir, { ...variant.opts, digestStore: s2 });
        const expected = fs.readFileSync(img1);
        assert.ok(image.equals(expected), `seed ${seed} (${variant.name}): images differ: ${firstDifference(image, expected)}`);
        assert.deepEqual(digest, fsverityDigest(expected), `seed ${seed}: image digest`);
        const l1 = storeListing(s1);
        const l2 = storeListing(s2);
        assert.deepEqual(l2, l1, `seed ${seed} (${variant.name}): object stores differ`);
        images++;
        objects += l1.filter((l) => l.startsWith('f ')).length;

        // A second run into the same store adds nothing and changes nothing.
        if (rng.bool(0.2)) {
          await buildImage(gen.dir, { ...variant.opts, digestStore: s2 });
          assert.deepEqual(storeListing(s2), l1, `seed ${seed}: store changed on a second run`);
        }
        // --print-digest-only prints exactly the image's digest.
        if (rng.bool(0.25)) {
          const p = run(MKCOMPOSEFS, [...variant.cArgs, '--print-digest-only', gen.dir]);
          assert.equal(p.status, 0);
          assert.equal(p.stdout.toString(), `${digest.toString('hex')}\n`, `seed ${seed}: --print-digest-only`);
        }
      } catch (e) {
        t.diagnostic(`failing seed: ${seed} (BOOTCFS_SEED=${seed} BOOTCFS_CASES=1 reproduces it)`);
        throw e;
      } finally {
        fs.rmSync(work, { recursive: true, force: true });
      }
    }
  } finally {
    await closeHashPool();
  }
  t.diagnostic(`${images} trees compared with mkcomposefs (${objects} store objects); entry kinds: ${JSON.stringify(kinds)}`);
  assert.equal(images, seeds.length);
});

test('preserve hardlinks: one inode per (dev, ino), nlink = names, same image as mkcomposefs --from-file', { timeout: 10 * 60_000 }, async (t) => {
  requireTool(MKCOMPOSEFS);
  const n = cases(6, 60);
  let linked = 0;
  try {
    for (let i = 0; i < n; i++) {
      const seed = (SEED_BASE ^ 0x4841524c) + i;
      const work = scratch();
      try {
        const gen = await generateDiskTree(path.join(work, 'tree'), seed, { entries: 120, maxFileSize: 100_000 });
        const tree = await readDirectoryTree(gen.dir, { hardlinks: 'preserve' });
        // Every name of a multiply-linked inode resolves to the same Inode object with nlink = names.
        const names = new Map<Inode, number>();
        const stack: Inode[] = [tree.root];
        while (stack.length) {
          const d = stack.pop()!;
          for (const [, c] of d.entries!) {
            if (c.isDir) stack.push(c);
            else names.set(c, (names.get(c) ?? 0) + 1);
          }
        }
        for (const [inode, count] of names) {
          assert.equal(inode.nlink, count, `seed ${seed}: nlink`);
          if (count > 1) linked++;
        }
        // The C tool keeps hardlinks given in a dumpfile: our image of the preserved tree must equal it.
        const dump = path.join(work, 'tree.dump');
        fs.writeFileSync(dump, writeDumpfile(tree));
        const img = path.join(work, 'c.img');
        const r = run(MKCOMPOSEFS, ['--from-file', dump, img]);
        assert.equal(r.status, 0, `seed ${seed}: ${r.stderr}`);
        const ours = writeImageV1(tree, { minVersion: 0, maxVersion: 1 });
        assert.ok(ours.equals(fs.readFileSync(img)), `seed ${seed}: preserved-hardlink image differs from mkcomposefs --from-file`);
        // And the default ('ignore') tree has no shared inodes at all, like mkcomposefs 1.0.8.
        const plain = await readDirectoryTree(gen.dir);
        const seen = new Set<Inode>();
        const st2: Inode[] = [plain.root];
        while (st2.length) {
          const d = st2.pop()!;
          for (const [, c] of d.entries!) {
            assert.ok(!seen.has(c), `seed ${seed}: inode shared in 'ignore' mode`);
            seen.add(c);
            assert.equal(c.isDir ? true : c.nlink === 1, true);
            if (c.isDir) st2.push(c);
          }
        }
      } finally {
        fs.rmSync(work, { recursive: true, force: true });
      }
    }
  } finally {
    await closeHashPool();
  }
  t.diagnostic(`${n} trees, ${linked} multiply-linked inodes checked`);
  assert.ok(linked > 0, 'the generator produced no hardlinks');
});

test('digest store: objects are named by digest, mode 0644, identical copies; abort leaves nothing', async () => {
  const work = scratch();
  try {
    const src = path.join(work, 'src');
    fs.mkdirSync(src);
    const data = Buffer.alloc(10_000, 3);
    fs.writeFileSync(path.join(src, 'f'), data, { mode: 0o4755 });
    const digest = fsverityDigest(data);
    const store = new DigestStore(path.join(work, 'store'));
    assert.equal(await store.addFile(path.join(src, 'f'), digest), true);
    assert.equal(await store.addFile(path.join(src, 'f'), digest), false, 'second add of the same digest');
    assert.equal(await store.has(digest), false, 'batch objects appear only at commit');
    await store.commit();
    const obj = path.join(work, 'store', objectPathForDigest(digest));
    assert.equal(fs.statSync(obj).mode & 0o7777, 0o644);
    assert.ok(fs.readFileSync(obj).equals(data));
    assert.deepEqual(fs.readdirSync(path.join(work, 'store')), [objectPathForDigest(digest).slice(0, 2)], 'no temporaries left');
    // Aborted batches leave no trace.
    const other = Buffer.alloc(5000, 9);
    fs.writeFileSync(path.join(src, 'g'), other);
    const d2 = fsverityDigest(other);
    await store.addFile(path.join(src, 'g'), d2);
    await store.abort();
    assert.equal(await store.has(d2), false);
    assert.deepEqual(fs.readdirSync(path.join(work, 'store')), [objectPathForDigest(digest).slice(0, 2)]);
    // per-object durability: visible immediately.
    const s2 = new DigestStore(path.join(work, 'store2'), { durability: 'per-object' });
    await s2.addBytes(other, d2);
    assert.equal(await s2.has(d2), true);
    await s2.commit();
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('scan errors name the path like mkcomposefs', async () => {
  await assert.rejects(readDirectoryTree('/nonexistent-bootcfs-dir'), /error accessing \/nonexistent-bootcfs-dir: No such file or directory/);
  const work = scratch();
  try {
    fs.writeFileSync(path.join(work, 'file'), 'x');
    await assert.rejects(readDirectoryTree(path.join(work, 'file')), /Not a directory/);
    // sha512 digests for v2: payload is the object path of a 64-byte digest.
    fs.mkdirSync(path.join(work, 'd'));
    fs.writeFileSync(path.join(work, 'd', 'big'), Buffer.alloc(70_000, 1));
    const tree = await readDirectoryTree(path.join(work, 'd'), { algorithm: 'sha512' });
    const big = lookup(tree.root, '/big')!;
    assert.equal(big.digest?.length, 64);
    assert.equal(big.payload, objectPathForDigest(fsverityDigest(Buffer.alloc(70_000, 1), 'sha512')));
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
    await closeHashPool();
  }
});
