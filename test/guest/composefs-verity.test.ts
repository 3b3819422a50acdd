/**
 * Runs inside the vm-tier guest (kernel with fs-verity, ext4 with 4 KiB blocks + verity): our digest store
 * enables fs-verity on every object, our images (both formats) mount as composefs with `verity=require`,
 * every file reads back exactly, and tampered or unverified objects are refused by the kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readDirectoryTree } from '../../src/tree/from-directory.js';
import { writeImageV1 } from '../../src/erofs/writer-v1.js';
import { writeImageV2 } from '../../src/erofs/writer-v2.js';
import { enableVerity, measureVerity, fsverityDigest, fsverityDigestFile, type HashAlgorithm } from '../../src/fsverity/index.js';
import { lsetxattr } from '../../src/sys/libc.js';
import { compareViews, mountComposefs, snapshotMounted, snapshotTree } from '../helpers/mount.js';
import { generateDiskTree } from '../helpers/gen-disk-tree.js';
import { Rng } from '../helpers/rng.js';

const scratch = process.env.BOOTCFS_GUEST_SCRATCH ?? '/var/tmp/scratch';

function makeSourceTree(dir: string, rng: Rng): void {
  mkdirSync(path.join(dir, 'usr/bin'), { recursive: true });
  mkdirSync(path.join(dir, 'etc/deep/er'), { recursive: true });
  const sizes = [0, 1, 64, 65, 4095, 4096, 4097, 100_000, 1_048_577];
  for (const s of sizes) writeFileSync(path.join(dir, 'usr/bin', `file-${s}`), rng.bytes(s));
  writeFileSync(path.join(dir, 'etc/deep/er/config'), 'key=value\n'.repeat(50));
  symlinkSync('../usr/bin/file-4096', path.join(dir, 'etc/link'));
  lsetxattr(path.join(dir, 'etc/deep/er/config'), 'user.demo', Buffer.from([0, 1, 2, 0xff]));
}

function objectFiles(objects: string): string[] {
  const out: string[] = [];
  for (const d of readdirSync(objects)) for (const f of readdirSync(path.join(objects, d))) out.push(`${d}/${f}`);
  return out;
}

function readFails(file: string): string | undefined {
  try {
    readFileSync(file);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
}

for (const [format, alg] of [['v1', 'sha256'], ['v2', 'sha256'], ['v2', 'sha512']] as Array<['v1' | 'v2', HashAlgorithm]>) {
  test(`${format} image (${alg} objects) mounts with verity=require and refuses tampered objects`, async () => {
    const work = mkdtempSync(path.join(scratch, `cfs-${format}-${alg}-`));
    const src = path.join(work, 'src');
    const objects = path.join(work, 'objects');
    const rng = new Rng(format === 'v1' ? 11 : alg === 'sha256' ? 12 : 13);
    makeSourceTree(src, rng);
    try {
      const tree = await readDirectoryTree(src, { digestStore: objects, algorithm: alg, hardlinks: format === 'v2' ? 'preserve' : 'ignore' });
      // every object in the store has fs-verity enabled, and its measured digest is its name
      const objs = objectFiles(objects);
      assert.ok(objs.length >= 6, `expected objects for the external files, got ${objs.length}`);
      for (const o of objs) {
        const m = measureVerity(path.join(objects, o));
        assert.equal(m.algorithm, alg);
        assert.equal(m.digest.toString('hex'), o.replace('/', ''), `object ${o}`);
      }
      const image = format === 'v1' ? writeImageV1(tree) : writeImageV2(tree, { algorithm: alg });
      const imgPath = path.join(work, 'image.cfs');
      writeFileSync(imgPath, image);
      enableVerity(imgPath, 'sha256');
      assert.equal(measureVerity(imgPath).digest.toString('hex'), fsverityDigest(image, 'sha256').toString('hex'));
      assert.equal((await fsverityDigestFile(imgPath, 'sha256')).toString('hex'), fsverityDigest(image, 'sha256').toString('hex'));

      // mount with verity required: every file reads back identical to the source
      const mnt = mountComposefs(imgPath, objects, path.join(work, 'mnt'), { verity: true });
      try {
        const seen = await snapshotTree(mnt.root);
        const want = await snapshotTree(src);
        for (const [p, e] of want) {
          const g = seen.get(p);
          assert.ok(g, `missing ${p}`);
          assert.equal(g.type, e.type, p);
          assert.equal(g.mode, e.mode, p);
          if (e.type === 'reg') assert.equal(g.contentSha256, e.contentSha256, `content of ${p}`);
          if (e.type === 'lnk') assert.equal(g.target, e.target, p);
        }
      } finally {
        mnt.unmount();
      }

      // objects without fs-verity (copied to tmpfs): the kernel refuses to serve external files
      const plain = mkdtempSync('/tmp/objs-');
      cpSync(objects, plain, { recursive: true });
      const m2 = mountComposefs(imgPath, plain, path.join(work, 'mnt2'), { verity: true });
      try {
        assert.equal(readFails(path.join(m2.root, 'usr/bin/file-100000')), 'EIO');
        assert.equal(readFails(path.join(m2.root, 'etc/deep/er/config')), 'EIO');
      } finally {
        m2.unmount();
        rmSync(plain, { recursive: true, force: true });
      }

      // an object replaced by other content that has fs-verity of its own: digest mismatch → EIO
      const victim = fsverityDigest(readFileSync(path.join(src, 'usr/bin/file-100000')), alg).toString('hex');
      const vpath = path.join(objects, victim.slice(0, 2), victim.slice(2));
      rmSync(vpath);
      writeFileSync(vpath, rng.bytes(100_000));
      enableVerity(vpath, alg);
      const m3 = mountComposefs(imgPath, objects, path.join(work, 'mnt3'), { verity: true });
      try {
        assert.equal(readFails(path.join(m3.root, 'usr/bin/file-100000')), 'EIO');
        // untouched objects still read fine
        const ok = readFileSync(path.join(m3.root, 'usr/bin/file-4097'));
        assert.equal(createHash('sha256').update(ok).digest('hex'), createHash('sha256').update(readFileSync(path.join(src, 'usr/bin/file-4097'))).digest('hex'));
      } finally {
        m3.unmount();
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
}

test('a verity-enabled image file cannot be modified (the guarantee composefs=<digest> relies on)', () => {
  const work = mkdtempSync(path.join(scratch, 'cfs-tamper-'));
  try {
    const img = path.join(work, 'x.cfs');
    writeFileSync(img, Buffer.alloc(8192, 1));
    enableVerity(img, 'sha256');
    // once fs-verity is enabled the kernel refuses to open the file for writing
    assert.throws(() => writeFileSync(img, 'x', { flag: 'r+' }), /EPERM|EACCES|ETXTBSY/);
    execFileSync('sync');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('generated tree, v1 image, objects with fs-verity, verity=require: the kernel shows exactly the source tree', async () => {
  const work = mkdtempSync(path.join(scratch, 'cfs-gen-'));
  try {
    const src = path.join(work, 'src');
    await generateDiskTree(src, 4242, { entries: 80, maxFileSize: 256 * 1024 });
    const objects = path.join(work, 'objects');
    const tree = await readDirectoryTree(src, { digestStore: objects });
    for (const o of objectFiles(objects)) {
      assert.equal(measureVerity(path.join(objects, o)).digest.toString('hex'), o.replace('/', ''), `object ${o} has fs-verity`);
    }
    const img = path.join(work, 'image.cfs');
    writeFileSync(img, writeImageV1(tree));
    enableVerity(img, 'sha256');
    const want = await snapshotTree(src);
    const got = await snapshotMounted(img, objects, path.join(work, 'mnt'), { verity: true });
    const diffs = compareViews(want, got);
    assert.deepEqual(diffs.slice(0, 20), [], `${diffs.length} differences`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
