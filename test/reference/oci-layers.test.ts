/**
 * The merged tree built from OCI layers (src/oci/layers.ts) against `umoci unpack` of the same image.
 *
 * Each case builds a three-layer image: layer 1 = GNU tar (`--format=pax --xattrs`) of a random disk
 * tree (gen-disk-tree: devices, fifos, hardlinks, binary user/trusted/security xattrs, odd names,
 * nanosecond and pre-1970 mtimes); layers 2 and 3 = hand-built PAX tars (test/helpers/oci-layout.ts)
 * derived from layer 1's listing: whiteouts, an opaque directory, a directory over a directory, a
 * directory replaced by a file and a file by a directory, hardlinks across layers (and the original
 * name whited out afterwards), new devices, fifo, symlinks, files at the inline boundary, binary
 * user.* and security.* xattrs. The image is written twice with the same layer tars (so the same
 * diff_ids): once gzip/plain for umoci and once gzip/zstd for bootcfs (decompressed with node:zlib
 * and fzstd after checking blob digests and diff_ids).
 *
 * Compared for every path: type, permission bits, uid, gid, mtime (seconds + nanoseconds), size,
 * symlink target, rdev, xattrs, contents (inline bytes, or the fs-verity digest of the unpacked file),
 * link counts and hardlink groups.
 *
 * Expected differences (asserted as such):
 * - the root directory: umoci gives rootfs/ its own metadata; bootcfs keeps the tar's `./` stat (and
 *   the OCI transform later replaces it with /usr's), so `/` is not compared.
 * - umoci refuses to set `security.selinux` and overlayfs's trusted.overlay.{opaque,redirect,origin,
 *   metacopy,...} ("ignoring forbidden xattr"); bootcfs keeps every `SCHILY.xattr.*` record, so those
 *   names are left out of the comparison (and umoci's log must not name any other).
 * - xattrs with an empty value: Go's archive/tar (umoci) skips every empty PAX value when it fills
 *   `Header.Xattrs`, so umoci never creates them; GNU tar, python and tar-core (composefs-rs) keep them,
 *   and so do we. Empty-valued xattrs are therefore left out of the comparison.
 * - symlink permission bits: always 0777 on a Linux filesystem; the model keeps the header's bits
 *   (layer 2 has symlinks with 0644), so they are not compared.
 * - umoci 0.4.7 cannot unpack zstd layers ("blob is not correct mediatype"), hence the second layout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from 'fzstd';
import { fsverityDigest } from '../../src/fsverity/index.js';
import { lgetxattrs } from '../../src/sys/libc.js';
import { walk, type FileSystem, type Inode } from '../../src/tree/model.js';
import { buildTreeFromLayers, digestOnly, normaliseTarPath } from '../../src/oci/layers.js';
import { tarEntries, type TarEntry } from '../../src/oci/tar.js';
import { buildTar, writeOciLayout, sha256Digest, type LayerCompressionKind, type TarWriteEntry } from '../helpers/oci-layout.js';
import { generateDiskTree } from '../helpers/gen-disk-tree.js';
import { cases, isRoot, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

async function* one(b: Buffer): AsyncGenerator<Uint8Array> { yield b; }

async function listTar(tar: Buffer): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  for await (const { entry } of tarEntries(one(tar))) out.push(entry);
  return out;
}

const norm = (p: string): string => `/${normaliseTarPath(p)!.join('/')}`;
const parentOf = (p: string): string => p.slice(0, p.lastIndexOf('/')) || '/';
const baseOf = (p: string): string => p.slice(p.lastIndexOf('/') + 1);
const related = (a: string, b: string): boolean => a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`);

/** Layers 2 and 3, derived from layer 1's entries. */
function derivedLayers(rng: Rng, l1: TarEntry[]): { l2: Buffer; l3: Buffer; notes: string[] } {
  const notes: string[] = [];
  const byPath = new Map<string, TarEntry>();
  for (const e of l1) if (norm(e.path) !== '/') byPath.set(norm(e.path), e);
  const files = [...byPath].filter(([, e]) => e.type === 'reg').map(([p]) => p);
  const dirs = [...byPath].filter(([, e]) => e.type === 'dir').map(([p]) => p);
  const used: string[] = [];
  const pick = (pool: string[]): string | undefined => {
    const free = pool.filter((p) => !used.some((u) => related(u, p) || related(parentOf(u), p)));
    if (free.length === 0) return undefined;
    const p = rng.pick(free);
    used.push(p);
    return p;
  };
  const T = 1_700_000_000;
  const l2: TarWriteEntry[] = [];
  const l3: TarWriteEntry[] = [];
  const dirOverDir = pick(dirs);
  if (dirOverDir) {
    l2.push({ path: `.${dirOverDir}/`, type: 'dir', mode: 0o1777, uid: 4321, gid: 1234, mtimeSec: T, mtimeNsec: 777, xattrs: { 'user.redone': Buffer.from([9, 0, 9]) } });
    notes.push(`dir over dir ${dirOverDir}`);
  }
  for (let i = 0; i < 3; i++) {
    const victim = pick(files);
    if (!victim) break;
    l2.push({ path: `.${parentOf(victim) === '/' ? '' : parentOf(victim)}/.wh.${baseOf(victim)}`, type: 'reg', mode: 0o600 });
    notes.push(`whiteout ${victim}`);
  }
  const opaque = pick(dirs);
  if (opaque) {
    l2.push({ path: `.${opaque}/.wh..wh..opq`, type: 'reg' });
    l2.push({ path: `.${opaque}/after-opaque`, type: 'reg', content: Buffer.from('new content after the opaque marker\n'.repeat(3)), mtimeSec: T + 1 });
    notes.push(`opaque ${opaque}`);
  }
  const linkTarget = pick(files);
  if (linkTarget) {
    l2.push({ path: './xlink-from-l2', type: 'hardlink', linkTarget: `.${linkTarget}` });
    // layer 3 removes the original name: only the cross-layer link keeps the inode
    l3.push({ path: `.${parentOf(linkTarget) === '/' ? '' : parentOf(linkTarget)}/.wh.${baseOf(linkTarget)}`, type: 'reg' });
    notes.push(`cross-layer hardlink to ${linkTarget}, original whited out in layer 3`);
  }
  const dirToFile = pick(dirs);
  if (dirToFile) {
    l2.push({ path: `.${dirToFile}`, type: 'reg', mode: 0o640, content: rng.bytes(100), mtimeSec: T + 2, mtimeNsec: 5 });
    notes.push(`dir replaced by file ${dirToFile}`);
  }
  const fileToDir = pick(files);
  if (fileToDir) {
    l2.push({ path: `.${fileToDir}/`, type: 'dir', mode: 0o711, mtimeSec: T + 3 });
    l2.push({ path: `.${fileToDir}/inside`, type: 'reg', content: Buffer.from('x'), mtimeSec: T + 4 });
    notes.push(`file replaced by dir ${fileToDir}`);
  }
  // new material in a new directory
  const xattrs = { 'user.bin': Buffer.from([0, 0x0a, 0xff, 0x3d]), 'security.capability': Buffer.from('0100000200200000000000000000000000000000', 'hex'), 'user.empty': Buffer.alloc(0) };
  l2.push(
    { path: './l2/', type: 'dir', mode: 0o755, uid: 7, gid: 8, mtimeSec: T, mtimeNsec: 123456789 },
    { path: './l2/inline64', type: 'reg', content: rng.bytes(64), mtimeSec: T, mtimeNsec: 1, xattrs },
    { path: './l2/external65', type: 'reg', content: rng.bytes(65), mtimeSec: -1000, mtimeNsec: 999_999_999 },
    { path: './l2/big', type: 'reg', content: rng.bytes(rng.int(100_000, 300_000)), mode: 0o4755, uid: 3_000_000, gid: 70_000 },
    { path: './l2/empty', type: 'reg', mode: 0o000 },
    { path: './l2/tty', type: 'chr', devMajor: 4, devMinor: 64, mode: 0o620, gid: 5 },
    { path: './l2/disk', type: 'blk', devMajor: 259, devMinor: 70_000, mode: 0o660 },
    { path: './l2/fifo', type: 'fifo', mode: 0o644 },
    { path: './l2/sym', type: 'symlink', linkTarget: '../does/not/exist', mtimeSec: T - 5 },
    { path: './l2/abs-sym', type: 'symlink', linkTarget: '/etc/passwd' },
    { path: './l2/long-name-' + 'n'.repeat(150), type: 'reg', content: Buffer.from('long'), xattrs: { 'user.k': Buffer.from('v') } },
  );
  l3.push(
    { path: './l2/hard-in-l3', type: 'hardlink', linkTarget: './l2/big' },
    { path: './l2/inline64', type: 'reg', content: Buffer.from('replaced in layer 3'), mtimeSec: T + 10 },
    { path: './l2/tty', type: 'symlink', linkTarget: 'fifo' },
  );
  if (opaque) l3.push({ path: `.${opaque}/after-opaque-l3`, type: 'reg', content: Buffer.from('l3') });
  return { l2: buildTar(l2), l3: buildTar(l3), notes };
}

/** Reads an image from an OCI layout the way a puller would (digests checked), as uncompressed tars. */
function readLayoutLayers(dir: string, tag: string): Buffer[] {
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)!;
  const blob = (d: string): Buffer => {
    const b = fs.readFileSync(path.join(dir, 'blobs', 'sha256', d.slice(7)));
    assert.equal(sha256Digest(b), d, 'blob digest');
    return b;
  };
  const manifest = JSON.parse(blob(desc.digest).toString()) as { config: { digest: string }; layers: Array<{ digest: string; mediaType: string }> };
  const config = JSON.parse(blob(manifest.config.digest).toString()) as { rootfs: { diff_ids: string[] } };
  return manifest.layers.map((l, i) => {
    const b = blob(l.digest);
    const tar = l.mediaType.endsWith('+gzip') ? gunzipSync(b) : l.mediaType.endsWith('+zstd') ? Buffer.from(zstdDecompress(b)) : b;
    assert.equal(sha256Digest(tar), config.rootfs.diff_ids[i], 'diff_id');
    return tar;
  });
}

interface DiskNode { path: string; st: fs.BigIntStats }

function walkDisk(root: string): DiskNode[] {
  const out: DiskNode[] = [];
  const stack: Array<[Buffer, string]> = [[Buffer.from(root), '']];
  while (stack.length > 0) {
    const [abs, rel] = stack.pop()!;
    for (const name of fs.readdirSync(abs, { encoding: 'buffer' })) {
      const p = Buffer.concat([abs, Buffer.from('/'), name]);
      const r = `${rel}/${name.toString('latin1')}`;
      const st = fs.lstatSync(p, { bigint: true });
      out.push({ path: r, st });
      if (st.isDirectory()) stack.push([p, r]);
    }
  }
  return out;
}

const typeOfStat = (st: fs.BigIntStats): string =>
  st.isDirectory() ? 'dir' : st.isFile() ? 'reg' : st.isSymbolicLink() ? 'lnk' : st.isCharacterDevice() ? 'chr' : st.isBlockDevice() ? 'blk' : st.isFIFO() ? 'fifo' : 'sock';

/**
 * xattrs umoci refuses to set ("ignoring forbidden xattr", observed with umoci 0.4.7): the SELinux
 * label and overlayfs's own trusted.overlay.* control attributes. bootcfs keeps what the layer says.
 */
const UMOCI_IGNORED_XATTRS = new Set([
  'security.selinux',
  ...['opaque', 'redirect', 'origin', 'metacopy', 'impure', 'nlink', 'upper', 'uuid', 'protattr'].map((n) => `trusted.overlay.${n}`),
]);

function compareWithUmoci(tree: FileSystem, rootfs: string, label: string): number {
  const ours = new Map<string, Inode>();
  for (const [p, inode] of walk(tree.root)) if (p !== '/') ours.set(p, inode);
  const disk = walkDisk(rootfs);
  const diskPaths = disk.map((d) => d.path).sort();
  assert.deepEqual(diskPaths, [...ours.keys()].sort(), `${label}: path sets`);
  const groupsDisk = new Map<bigint, string[]>();
  const groupsOurs = new Map<Inode, string[]>();
  for (const { path: p, st } of disk) {
    const inode = ours.get(p)!;
    const where = `${label}: ${JSON.stringify(p)}`;
    const absPath = Buffer.concat([Buffer.from(rootfs), Buffer.from(p, 'latin1')]);
    assert.equal(typeOfStat(st), inode.type, `${where}: type`);
    // Linux symlinks are always 0777 on disk; the model keeps the tar header's bits.
    if (!inode.isSymlink) assert.equal(Number(st.mode & 0o7777n), inode.mode & 0o7777, `${where}: mode`);
    assert.equal(Number(st.uid), inode.uid, `${where}: uid`);
    assert.equal(Number(st.gid), inode.gid, `${where}: gid`);
    const ns = st.mtimeNs;
    const sec = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n);
    assert.deepEqual([Number(sec), Number(ns - sec * 1_000_000_000n)], [inode.mtimeSec, inode.mtimeNsec], `${where}: mtime`);
    const diskX = [...lgetxattrs(absPath)].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, v.toString('hex')]);
    const ourX = [...inode.xattrs].filter(([k, v]) => !UMOCI_IGNORED_XATTRS.has(k) && v.length > 0).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, v.toString('hex')]);
    assert.deepEqual(diskX, ourX, `${where}: xattrs`);
    if (inode.isSymlink) assert.equal(fs.readlinkSync(absPath, { encoding: 'buffer' }).toString('latin1'), inode.target, `${where}: target`);
    if (inode.isChr || inode.isBlk) assert.equal(Number(st.rdev), inode.rdev, `${where}: rdev`);
    if (inode.isReg) {
      assert.equal(Number(st.size), inode.size, `${where}: size`);
      if (inode.content) assert.ok(fs.readFileSync(absPath).equals(inode.content), `${where}: inline content`);
      else if (inode.size > 0) assert.ok(fsverityDigest(fs.readFileSync(absPath), 'sha256').equals(inode.digest!), `${where}: content digest`);
    }
    if (!inode.isDir) {
      assert.equal(Number(st.nlink), inode.nlink, `${where}: nlink`);
      groupsDisk.set(st.ino, [...(groupsDisk.get(st.ino) ?? []), p]);
      groupsOurs.set(inode, [...(groupsOurs.get(inode) ?? []), p]);
    }
  }
  const canon = (g: Iterable<string[]>) => [...g].filter((x) => x.length > 1).map((x) => x.sort().join('\0')).sort();
  assert.deepEqual(canon(groupsDisk.values()), canon(groupsOurs.values()), `${label}: hardlink groups`);
  return disk.length;
}

test('merged tree from OCI layers = umoci unpack (whiteouts, opaque dirs, hardlinks across layers, xattrs, devices, gzip/zstd)', { timeout: 600_000 }, async () => {
  assert.ok(isRoot, 'umoci unpack of devices and ownership needs root');
  const n = cases(6, 40);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bootcfs-layers-ref-'));
  let compared = 0;
  try {
    for (let k = 0; k < n; k++) {
      const seed = 5300 + k;
      const label = `seed ${seed}`;
      const rng = new Rng(seed);
      const src = path.join(tmp, `src-${k}`);
      await generateDiskTree(src, seed, { entries: 100, maxFileSize: 200_000, sockets: false });
      const l1Path = path.join(tmp, `l1-${k}.tar`);
      const r = run('tar', ['--format=pax', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-cf', l1Path, '-C', src, '.']);
      assert.equal(r.status, 0, r.stderr.toString());
      const l1 = fs.readFileSync(l1Path);
      const { l2, l3, notes } = derivedLayers(rng, await listTar(l1));
      assert.ok(notes.length >= 5, `${label}: too few layer operations: ${notes.join('; ')}`);

      const layout = path.join(tmp, `layout-${k}`);
      const plan = (c2: LayerCompressionKind, c3: LayerCompressionKind) => [
        { tar: l1, compression: 'gzip' as const }, { tar: l2, compression: c2 }, { tar: l3, compression: c3 },
      ];
      const forUmoci = writeOciLayout(layout, { tag: 'umoci', layers: plan('gzip', 'none') });
      const forUs = writeOciLayout(layout, { tag: 'bootcfs', layers: plan('zstd', 'zstd') });
      assert.deepEqual(forUs.diffIds, forUmoci.diffIds);
      assert.notDeepEqual(forUs.layerDigests, forUmoci.layerDigests);

      const bundle = path.join(tmp, `bundle-${k}`);
      const u = run('umoci', ['unpack', '--image', `${layout}:umoci`, bundle]);
      assert.equal(u.status, 0, `${label}: umoci unpack failed: ${u.stderr.toString()}`);
      for (const m of u.stderr.toString('latin1').matchAll(/ignoring forbidden xattr: "([^"]*)"/g)) {
        assert.ok(UMOCI_IGNORED_XATTRS.has(m[1]!), `${label}: umoci ignored an unexpected xattr ${m[1]}`);
      }

      const tree = await buildTreeFromLayers(readLayoutLayers(layout, 'bootcfs').map(one), { external: digestOnly('sha256') });
      compared += compareWithUmoci(tree, path.join(bundle, 'rootfs'), `${label} (${notes.join('; ')})`);
      fs.rmSync(bundle, { recursive: true, force: true });
      fs.rmSync(src, { recursive: true, force: true });
      fs.rmSync(layout, { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`# layers reference: ${n} three-layer images, ${compared} paths compared with umoci unpack`);
});
