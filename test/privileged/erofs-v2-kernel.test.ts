/**
 * The kernel as the oracle for the composefs-rs native (V2) writer: every image is mounted as erofs
 * (loop, ro) and everything the kernel shows is compared with the tree — lstat type/mode/uid/gid/size/
 * mtime/nlink/rdev, hardlinks (same inode number), readdir names, readlink, inline contents, the stub
 * zeroes of external files, and xattrs exactly as stored (metacopy/redirect, trusted.overlay.overlay.*
 * escapes). Then overlayfs is stacked on it with the object store as data-only lower layer and the
 * external files must read back their object's content, with the overlay xattrs unescaped one level.
 *
 * Golden cases (test/fixtures/v2-golden/cases.ts) are checked the same way and their image digests are
 * compared with digests.json. Run with BOOTCFS_RECORD_V2_GOLDEN=1 to (re)write digests.json — it is
 * only written when every golden case passed the kernel checks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  closeSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync,
  readlinkSync, rmSync, writeFileSync, type BigIntStats,
} from 'node:fs';
import path from 'node:path';
import { writeImageV2 } from '../../src/erofs/writer-v2.js';
import {
  Inode, newDir, S_IFBLK, S_IFCHR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, compareBytes, type FileSystem,
} from '../../src/tree/model.js';
import { fsverityDigest } from '../../src/fsverity/digest.js';
import { lgetxattrs } from '../../src/sys/libc.js';
import { FIXTURES, cases, isRoot } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { mountComposefs } from '../helpers/mount.js';
import { GOLDEN_CASES, patternContent } from '../fixtures/v2-golden/cases.js';

type Alg = 'sha256' | 'sha512';
const GOLDEN_FILE = path.join(FIXTURES, 'v2-golden', 'digests.json');
const RECORD = process.env.BOOTCFS_RECORD_V2_GOLDEN === '1';
/** External files up to this size get an object (and are read back through overlayfs). */
const MAX_OBJECT = 1 << 20;

function requireRoot(): void {
  assert.ok(isRoot, 'the privileged tier must run as root (it mounts erofs and overlayfs)');
}

/** Names the kernel exposes: erofs has handlers for user., trusted., security. and the POSIX ACLs. */
function kernelVisible(name: string): boolean {
  return /^(user|trusted|security)\./.test(name) || name === 'system.posix_acl_access' || name === 'system.posix_acl_default';
}

/** xattrs as composefs-rs stores them (metacopy + redirect for external files, trusted.overlay.* escaped). */
function storedXattrs(node: Inode, alg: Alg): Map<string, string> {
  const out = new Map<string, string>();
  if (node.isExternal) {
    const d = node.digest!;
    out.set('trusted.overlay.metacopy', Buffer.concat([Buffer.from([0, 4 + d.length, 0, alg === 'sha256' ? 1 : 2]), d]).toString('hex'));
    const hex = d.toString('hex');
    out.set('trusted.overlay.redirect', Buffer.from(`/${hex.slice(0, 2)}/${hex.slice(2)}`).toString('hex'));
  }
  for (const [k, v] of node.xattrs) {
    out.set(k.startsWith('trusted.overlay.') ? `trusted.overlay.overlay.${k.slice(16)}` : k, v.toString('hex'));
  }
  return new Map([...out].filter(([k]) => kernelVisible(k)));
}

/** What overlayfs shows: its own metacopy/redirect hidden, escaped names unescaped one level. */
function overlayXattrs(node: Inode): Map<string, string> {
  return new Map([...node.xattrs].filter(([k]) => kernelVisible(k)).map(([k, v]) => [k, v.toString('hex')]));
}

function typeOfStat(st: BigIntStats): number {
  return Number(st.mode) & S_IFMT;
}

function readPrefix(p: Buffer, n: number): Buffer {
  const fd = openSync(p, 'r');
  try {
    const buf = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const r = readSync(fd, buf, got, n - got, got);
      if (r === 0) break;
      got += r;
    }
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function join(dir: Buffer, name: string): Buffer {
  return Buffer.concat([dir, Buffer.from('/'), Buffer.from(name, 'latin1')]);
}

function referenceCounts(root: Inode): Map<Inode, number> {
  const counts = new Map<Inode, number>();
  const stack = [root];
  while (stack.length) {
    const d = stack.pop()!;
    for (const [, c] of d.sortedEntries()) {
      counts.set(c, (counts.get(c) ?? 0) + 1);
      if (c.isDir) stack.push(c);
    }
  }
  return counts;
}

interface CheckOptions { alg: Alg; overlay: boolean; objects: Map<Inode, Buffer> }

/**
 * Compares a mounted tree with the model. `overlay` selects what overlayfs shows instead of the raw
 * erofs view (whiteouts vanish, external files have their object's content, xattrs unescaped).
 */
function compareMounted(fs: FileSystem, mnt: string, opts: CheckOptions): number {
  const counts = referenceCounts(fs.root);
  const inoOf = new Map<Inode, bigint>();
  let checked = 0;
  const stack: Array<[Inode, Buffer, string]> = [[fs.root, Buffer.from(mnt), '/']];
  while (stack.length) {
    const [node, p, shown] = stack.pop()!;
    const where = `${opts.overlay ? 'overlay' : 'erofs'} ${JSON.stringify(shown)}`;
    const st = lstatSync(p, { bigint: true });
    checked++;
    assert.equal(typeOfStat(st), node.mode & S_IFMT, `${where}: type`);
    assert.equal(Number(st.mode) & 0o7777, node.mode & 0o7777, `${where}: permission bits`);
    assert.equal(Number(st.uid), node.uid, `${where}: uid`);
    assert.equal(Number(st.gid), node.gid, `${where}: gid`);
    assert.equal(st.mtimeNs, BigInt(node.mtimeSec) * 1_000_000_000n, `${where}: mtime (seconds, no nsec)`);
    if (!opts.overlay) {
      // overlayfs may report its own nlink/ino for directories; erofs shows the stored values
      const want = node.isDir ? 2 + node.sortedEntries().filter(([, c]) => c.isDir).length : counts.get(node)!;
      assert.equal(Number(st.nlink), want, `${where}: nlink`);
      const seen = inoOf.get(node);
      if (seen !== undefined) assert.equal(st.ino, seen, `${where}: hardlink shares the inode`);
      inoOf.set(node, st.ino);
    }
    const xattrs = lgetxattrs(p);
    const gotX = new Map([...xattrs].map(([k, v]) => [k, v.toString('hex')]));
    const wantX = opts.overlay ? overlayXattrs(node) : storedXattrs(node, opts.alg);
    assert.deepEqual(new Map([...gotX].sort()), new Map([...wantX].sort()), `${where}: xattrs`);
    switch (node.mode & S_IFMT) {
      case S_IFREG: {
        assert.equal(st.size, BigInt(node.size), `${where}: size`);
        if (!node.isExternal) {
          assert.deepEqual(readFileSync(p), node.content ?? Buffer.alloc(0), `${where}: inline content`);
        } else if (!opts.overlay) {
          const head = readPrefix(p, Math.min(node.size, 3 * 4096));
          assert.equal(head.length, Math.min(node.size, 3 * 4096), `${where}: readable stub`);
          assert.ok(head.every((b) => b === 0), `${where}: stub reads as zeroes`);
        } else if (opts.objects.has(node)) {
          assert.deepEqual(readFileSync(p), opts.objects.get(node), `${where}: object content through overlayfs`);
        }
        break;
      }
      case S_IFLNK:
        assert.equal(readlinkSync(p, { encoding: 'buffer' }).toString('latin1'), node.target, `${where}: target`);
        assert.equal(st.size, BigInt(Buffer.byteLength(node.target!, 'latin1')), `${where}: symlink size`);
        break;
      case S_IFCHR:
      case S_IFBLK:
        assert.equal(Number(st.rdev), node.rdev >>> 0, `${where}: rdev`);
        break;
      default:
        break;
    }
    if (node.isDir) {
      const kids = node.sortedEntries().filter(([, c]) => !(opts.overlay && c.isWhiteout));
      const whiteouts = new Set(node.sortedEntries().filter(([, c]) => opts.overlay && c.isWhiteout).map(([n]) => n));
      // overlayfs passes readdir of a single-layer ("pure") directory through, so a 0/0 char device
      // stored verbatim may still be listed there; it can never be looked up (checked below).
      const names = (readdirSync(p, { encoding: 'buffer' }) as Buffer[]).map((b) => b.toString('latin1')).filter((n) => !whiteouts.has(n)).sort(compareBytes);
      assert.deepEqual(names, kids.map(([n]) => n), `${where}: directory listing`);
      for (const [name, child] of kids) stack.push([child, join(p, name), shown === '/' ? `/${name}` : `${shown}/${name}`]);
      for (const name of whiteouts) assert.equal(existsSync(join(p, name)), false, `${where}/${name}: whiteout hidden`);
    }
  }
  return checked;
}

/** Writes the image and the object store, mounts both views, compares, always cleans up. */
function checkWithKernel(
  fs: FileSystem, alg: Alg, objects: Map<Inode, Buffer>, image = writeImageV2(fs, { algorithm: alg }), expectObjects = objects,
): { image: Buffer; checked: number } {
  const work = mkdtempSync('/var/tmp/bootcfs-v2-kernel-');
  try {
    const imgPath = path.join(work, 'image.cfs');
    writeFileSync(imgPath, image);
    const objDir = path.join(work, 'objects');
    mkdirSync(objDir);
    for (const [node, content] of objects) {
      const hex = node.digest!.toString('hex');
      mkdirSync(path.join(objDir, hex.slice(0, 2)), { recursive: true });
      writeFileSync(path.join(objDir, hex.slice(0, 2), hex.slice(2)), content);
    }
    const m = mountComposefs(imgPath, objDir, work);
    try {
      const a = compareMounted(fs, m.erofs, { alg, overlay: false, objects: expectObjects });
      const b = compareMounted(fs, m.root, { alg, overlay: true, objects: expectObjects });
      return { image, checked: a + b };
    } finally {
      m.unmount();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Objects for external files of a golden tree: deterministic content of the file's size. */
function goldenObjects(fs: FileSystem): Map<Inode, Buffer> {
  const out = new Map<Inode, Buffer>();
  const stack = [fs.root];
  while (stack.length) {
    for (const [, c] of stack.pop()!.sortedEntries()) {
      if (c.isDir) stack.push(c);
      else if (c.isExternal && c.size <= MAX_OBJECT && !out.has(c)) out.set(c, patternContent(c.digest![0]!, c.size));
    }
  }
  return out;
}

// ------------------------------------------------------------------------------ generated trees
const NAME_CHARS = ['a', 'b', 'Z', '-', '.', '_', '\xe9', '\xff', '\x01', ' ', '+'];

/**
 * A random tree: regular inline / external (with real fs-verity digests of real objects), symlinks,
 * devices, fifos, sockets, xattrs (user., trusted., trusted.overlay.*, security.), hardlinks, nested
 * dirs, and sometimes one directory with many entries.
 */
function randomTree(rng: Rng, alg: Alg): { fs: FileSystem; objects: Map<Inode, Buffer> } {
  const root = newDir({ perm: 0o755, mtimeSec: rng.int(0, 2 ** 32) });
  const dirs = [root];
  const leaves: Inode[] = [];
  const objects = new Map<Inode, Buffer>();
  const userish: Array<[string, Buffer]> = [
    ['user.mime', Buffer.from('text/plain')], ['user.empty', Buffer.alloc(0)], ['trusted.overlay.opaque', Buffer.from('y')],
    ['trusted.overlay.redirect', Buffer.from('/x')], ['trusted.foo', Buffer.from('bar')],
    ['security.selinux', Buffer.from('system_u:object_r:usr_t:s0\0')], ['user.overlay.x', Buffer.from('1')],
  ];
  const addX = (n: Inode) => {
    const regOrDir = n.isReg || n.isDir; // the VFS refuses user.* on other file types
    for (const [k, v] of userish) if (rng.bool(0.25) && (regOrDir || !k.startsWith('user.'))) n.xattrs.set(k, v);
    if (regOrDir && rng.bool(0.2)) n.xattrs.set(`user.r${rng.int(0, 3)}`, rng.bytes(rng.int(0, 300)));
  };
  const name = () => {
    let s = '';
    const len = rng.bool(0.05) ? rng.int(200, 255) : rng.int(1, 12);
    for (let i = 0; i < len; i++) s += rng.pick(NAME_CHARS);
    return s === '.' || s === '..' ? `${s}x` : s;
  };
  const common = () => ({ uid: rng.bool(0.3) ? rng.int(0, 70000) : 0, gid: rng.bool(0.3) ? rng.int(0, 70000) : 0, mtimeSec: rng.bool(0.1) ? -rng.int(1, 1e9) : rng.int(0, 2 ** 34), mtimeNsec: rng.int(0, 999999999) });
  const n = rng.int(20, 150);
  for (let i = 0; i < n; i++) {
    const parent = rng.pick(dirs);
    const nm = name();
    if (parent.entries!.has(nm)) continue;
    let child: Inode;
    const kind = rng.int(0, 11);
    if (kind === 0) {
      child = newDir({ perm: rng.pick([0o755, 0o700, 0o1777, 0o2755]), ...common() });
      dirs.push(child);
    } else if (kind === 1 && leaves.length > 0) {
      parent.setEntry(nm, rng.pick(leaves)); // hardlink
      continue;
    } else if (kind <= 4) {
      const c = rng.bytes(rng.bool(0.15) ? rng.int(1000, 3900) : rng.int(0, 64));
      child = new Inode({ mode: S_IFREG | rng.pick([0o644, 0o600, 0o755, 0o4755]), size: c.length, content: c, ...common() });
    } else if (kind <= 6) {
      const c = rng.bytes(rng.pick([1, 4095, 4096, 4097, rng.int(1, 100000)]));
      child = new Inode({ mode: S_IFREG | 0o644, size: c.length, digest: fsverityDigest(c, alg), ...common() });
      objects.set(child, c);
    } else if (kind === 7) {
      let t = '';
      const len = rng.bool(0.1) ? rng.int(900, 1024) : rng.int(1, 40);
      for (let k = 0; k < len; k++) t += rng.pick(['a', '/', '.', '\xe9']);
      child = new Inode({ mode: S_IFLNK | 0o777, target: t, ...common() });
    } else if (kind === 8) {
      const rdev = rng.bool(0.2) ? 0 : rng.int(1, 0xffffffff);
      child = new Inode({ mode: rng.pick([S_IFCHR, S_IFBLK]) | 0o640, rdev, ...common() });
    } else {
      child = new Inode({ mode: rng.pick([S_IFIFO, S_IFSOCK]) | 0o644, ...common() });
    }
    // Large inline files stay without xattrs so their tail always fits in a block (see writer's ELIMIT).
    if (!(child.isReg && child.size > 2000)) addX(child);
    if (!child.isWhiteout && !child.isDir) leaves.push(child);
    parent.setEntry(nm, child);
  }
  for (const d of dirs) if (rng.bool(0.3)) addX(d);
  if (rng.bool(0.3)) {
    // many entries: a directory spanning several blocks
    const big = newDir({ perm: 0o755 });
    const count = rng.int(300, 2500);
    for (let i = 0; i < count; i++) big.setEntry(`entry-${i}-${'x'.repeat(i % 50)}`, new Inode({ mode: S_IFIFO | 0o600, mtimeSec: i }));
    root.setEntry('many', big);
  }
  return { fs: { root }, objects };
}

test('golden V2 images: the kernel shows the tree (erofs and overlayfs), digests as recorded', () => {
  requireRoot();
  const recorded = existsSync(GOLDEN_FILE) ? JSON.parse(readFileSync(GOLDEN_FILE, 'utf8')) as Record<string, { sha256: string; size: number }> : {};
  const result: Record<string, { sha256: string; size: number }> = {};
  for (const c of GOLDEN_CASES) {
    const fs = c.build();
    const { image } = checkWithKernel(fs, c.algorithm, goldenObjects(fs));
    result[c.name] = { sha256: fsverityDigest(image, 'sha256').toString('hex'), size: image.length };
    if (!RECORD) assert.deepEqual(result[c.name], recorded[c.name], `golden ${c.name}: image digest (re-record with BOOTCFS_RECORD_V2_GOLDEN=1 after review)`);
  }
  if (RECORD) writeFileSync(GOLDEN_FILE, `${JSON.stringify(result, null, 2)}\n`);
});

test('the kernel comparison detects a wrong tree and a wrong object (it can fail)', () => {
  requireRoot();
  const c = GOLDEN_CASES.find((x) => x.name === 'hardlinks')!;
  const fs = c.build();
  const image = writeImageV2(fs, { algorithm: c.algorithm });
  const objects = goldenObjects(fs);
  assert.ok(checkWithKernel(fs, c.algorithm, objects, image).checked > 20);
  const shared = fs.root.entries!.get('b-two')!;
  const wrongUid = c.build();
  wrongUid.root.entries!.get('b-two')!.uid = 99;
  assert.throws(() => checkWithKernel(wrongUid, c.algorithm, goldenObjects(wrongUid), image), /uid/);
  const wrongX = c.build();
  wrongX.root.entries!.get('z-single')!.xattrs.set('user.extra', Buffer.from('1'));
  assert.throws(() => checkWithKernel(wrongX, c.algorithm, goldenObjects(wrongX), image), /xattrs/);
  const badObjects = new Map([...objects].map(([k, v]) => [k, Buffer.concat([v.subarray(0, v.length - 1), Buffer.from([v[v.length - 1]! ^ 1])])] as const));
  assert.equal(badObjects.size, 1);
  assert.throws(() => checkWithKernel(fs, c.algorithm, objects, image, badObjects), /object content through overlayfs/);
  assert.equal(shared.uid, 7);
});

test('generated V2 images: the kernel shows the tree (erofs and overlayfs)', () => {
  requireRoot();
  const n = cases(15, 100);
  const base = Number(process.env.BOOTCFS_SEED ?? 20261126);
  for (let i = 0; i < n; i++) {
    const seed = base + i;
    const rng = new Rng(seed);
    const alg: Alg = rng.bool() ? 'sha256' : 'sha512';
    const { fs, objects } = randomTree(rng, alg);
    try {
      checkWithKernel(fs, alg, objects);
    } catch (e) {
      throw new Error(`seed ${seed} (${alg}): ${(e as Error).message}`, { cause: e });
    }
  }
});
