/**
 * privileged tier (root): the kernel's view of our C-compatible images. Random trees are generated on disk,
 * built with our mkcomposefs path (directory scan + digest store + v1 writer), mounted the way composefs is
 * mounted at boot (erofs + overlayfs with the object store as a data-only lower layer), and every path's
 * type, mode, owner, size, mtime (ns), rdev, symlink target, xattrs and content is compared with the source.
 *
 * Differences that overlayfs/composefs themselves introduce, and are therefore expected:
 * 1. hardlinks: mkcomposefs 1.0.8 does not detect them when reading a directory, so every name is its own
 *    inode with nlink 1 (regular files, symlinks, devices: nlink is not compared; directories are).
 * 2. whiteouts (char devices 0/0): the image stores them as empty regular files carrying
 *    trusted.overlay.overlay.whiteout + user.overlay.whiteout (overlayfs's "xwhiteout" form), and marks the
 *    parent directory with *.overlay.whiteouts (+ *.overlay.opaque=x in format version 1, which replaces an
 *    opaque xattr the source directory had). Through a single
 *    composefs mount they show as exactly that: an empty regular file (same permission bits, owner, mtime)
 *    with trusted.overlay.whiteout and user.overlay.whiteout (one escape level removed), and the parent
 *    shows the marker xattrs. They act as whiteouts only when the composefs mount is itself a lower layer
 *    of another overlayfs (as bootc's /etc and container storage use it).
 * 3. the root's trusted.overlay.opaque=y and the 256 00–ff whiteout stubs are consumed by overlayfs (hidden).
 * 4. directory st_size differs (erofs directory size vs the source filesystem's), and inode numbers,
 *    st_blocks, atime and ctime are not part of an image.
 * Everything else must be identical.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readDirectoryTree } from '../../src/tree/from-directory.js';
import { writeImageV1 } from '../../src/erofs/writer-v1.js';
import { generateDiskTree } from '../helpers/gen-disk-tree.js';
import { compareViews, snapshotMounted, snapshotTree } from '../helpers/mount.js';
import { cases, isRoot } from '../helpers/ref.js';

/** Our mkcomposefs path: scan SRC into WORK/objects, write WORK/image.cfs. */
async function buildV1Image(src: string, work: string): Promise<{ img: string; objects: string }> {
  const objects = path.join(work, 'objects');
  const tree = await readDirectoryTree(src, { digestStore: objects });
  const img = path.join(work, 'image.cfs');
  writeFileSync(img, writeImageV1(tree));
  return { img, objects };
}

test('v1 images of random on-disk trees: the kernel shows exactly the source tree', { timeout: 900_000 }, async (t) => {
  assert.ok(isRoot, 'the privileged tier must run as root (mounts)');
  const n = cases(12, 200);
  for (let i = 0; i < n; i++) {
    const seed = 7000 + i;
    const work = mkdtempSync('/var/tmp/bootcfs-v1k-');
    try {
      const src = path.join(work, 'src');
      const gen = await generateDiskTree(src, seed, { entries: 120 });
      const { img, objects } = await buildV1Image(src, work);
      const want = await snapshotTree(src);
      const got = await snapshotMounted(img, objects, path.join(work, 'mnt'));
      const diffs = compareViews(want, got);
      assert.deepEqual(diffs.slice(0, 20), [], `seed ${seed} (${JSON.stringify(gen.counts)}): ${diffs.length} differences`);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  t.diagnostic(`${n} generated trees compared through erofs + overlayfs`);
});

test('the comparison itself detects differences (a wrong byte in an object, a changed mode)', async () => {
  assert.ok(isRoot, 'the privileged tier must run as root (mounts)');
  const work = mkdtempSync('/var/tmp/bootcfs-v1k-');
  try {
    const src = path.join(work, 'src');
    await generateDiskTree(src, 99, { entries: 40 });
    const { img, objects } = await buildV1Image(src, work);
    const want = await snapshotTree(src);
    // corrupt one object: without verity=require (no fs-verity on this host) the kernel serves it
    const { readdirSync, openSync, writeSync, closeSync, chmodSync } = await import('node:fs');
    const d = readdirSync(objects)[0]!;
    const f = readdirSync(path.join(objects, d))[0]!;
    const fd = openSync(path.join(objects, d, f), 'r+');
    writeSync(fd, Buffer.from([0xde, 0xad]), 0, 2, 10);
    closeSync(fd);
    const got = await snapshotMounted(img, objects, path.join(work, 'mnt'));
    const some = [...want.entries()].find(([, e]) => e.type === 'reg' && e.mode & 0o777);
    assert.ok(some);
    chmodSync(path.join(src, some[0]), 0o700);
    const diffs = compareViews(await snapshotTree(src), got);
    assert.ok(diffs.some((x) => x.includes('contentSha256')), diffs.join('\n'));
    assert.ok(diffs.some((x) => x.includes('mode')), diffs.join('\n'));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
