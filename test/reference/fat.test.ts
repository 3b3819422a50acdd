/**
 * FAT32 images against dosfstools and mtools:
 *  - geometry (sectors per cluster, FAT size) equals what `mkfs.fat -F 32 -a -R 32` picks;
 *  - `fsck.fat -n -v` finds no error in seeded random images and counts exactly our files and clusters;
 *  - `mdir -/ -b` lists exactly our paths, `mcopy -s` and `mtype` read back identical bytes;
 *  - our reader lists/reads an image made by mkfs.fat + mcopy (mtools' own LFN/8.3 generation);
 *  - a 1 GiB ESP is written in well under a second and stays sparse (allocated blocks measured).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  buildFat32Image,
  fat32Geometry,
  fdSource,
  readFat32,
  writeFat32Image,
  type Fat32File,
  type Fat32Image,
} from '../../src/install/fat.js';
import { Rng } from '../helpers/rng.js';
import { cases, requireTool, run } from '../helpers/ref.js';

const MiB = 1024 * 1024;
const FSCK = requireTool('/usr/sbin/fsck.fat');
const MKFS = requireTool('/usr/sbin/mkfs.fat');
const MDIR = requireTool('/usr/bin/mdir');
const MCOPY = requireTool('/usr/bin/mcopy');
const MTYPE = requireTool('/usr/bin/mtype');
const MMD = requireTool('/usr/bin/mmd');
const ENV = { ...process.env, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', MTOOLS_SKIP_CHECK: '1' };

const PIECES = ['a', 'B', 'readme', 'LOADER', 'vmlinuz-6.12.0', 'Ä', 'ü', '日本語', 'x y', '+,;=[]', '.cfg', 'kernel',
  'initrd.img', '~tilde', 'CamelCase', 'long-name-that-goes-on-and-on', "it's", '#1', '(x)', 'é', 'Ωmega', '😀'];

/** Seeded tree: long, unicode, colliding (~N) names, nested directories, empty to multi-MiB files. */
function randomTree(rng: Rng): { files: Fat32File[]; directories: string[] } {
  const dirs = [''];
  const used = new Map<string, Set<string>>([['', new Set()]]);
  const fresh = (parent: string): string => {
    for (;;) {
      let s = '';
      if (rng.bool(0.25)) s = `collide-${rng.int(0, 99999)}.efi`;
      else {
        for (let i = rng.int(1, 4); i > 0; i--) s += rng.pick(PIECES);
        if (rng.bool(0.3)) s += `.${rng.pick(['efi', 'conf', 'EFI', 'tar.gz', 'LONGEXT'])}`;
        if (rng.bool(0.1)) s = `.${s}`;
      }
      if (s.length > 255 || /[ .]$/.test(s) || used.get(parent)!.has(s.toUpperCase())) continue;
      used.get(parent)!.add(s.toUpperCase());
      return s;
    }
  };
  for (let i = rng.int(0, 10); i > 0; i--) {
    const parent = rng.bool(0.6) ? dirs[dirs.length - 1]! : rng.pick(dirs);
    const p = parent ? `${parent}/${fresh(parent)}` : fresh(parent);
    dirs.push(p);
    used.set(p, new Set());
  }
  const files: Fat32File[] = [];
  for (let i = rng.int(1, 30); i > 0; i--) {
    const parent = rng.pick(dirs);
    const k = rng.int(0, 19);
    const size = k === 0 ? 0 : k < 15 ? rng.int(1, 5000) : k < 19 ? rng.int(5000, 100_000) : rng.int(MiB, 3 * MiB);
    files.push({ path: parent ? `${parent}/${fresh(parent)}` : fresh(parent), data: rng.bytes(size) });
  }
  return { files, directories: dirs.filter((d) => d !== '' && rng.bool(0.5)) };
}

function allDirs(files: Fat32File[], directories: string[]): Set<string> {
  const out = new Set<string>();
  for (const p of [...directories, ...files.map((f) => f.path.split('/').slice(0, -1).join('/'))]) {
    const parts = p.split('/').filter((x) => x);
    for (let i = 1; i <= parts.length; i++) out.add(parts.slice(0, i).join('/'));
  }
  return out;
}

function writeImage(img: Fat32Image, file: string): void {
  writeFileSync(file, '');
  const fd = openSync(file, 'r+');
  try { writeFat32Image(img, fd); } finally { closeSync(fd); }
}

function fsckClean(file: string, expectEntries: number, img: Fat32Image): void {
  const r = run(FSCK, ['-n', '-v', file], { env: ENV });
  const out = r.stdout.toString() + r.stderr.toString();
  assert.equal(r.status, 0, out);
  const m = /: (\d+) files, (\d+)\/(\d+) clusters/.exec(out);
  assert.ok(m, out);
  // fsck.fat counts the root directory too
  assert.equal(Number(m[1]), expectEntries + 1, out);
  assert.equal(Number(m[2]), img.usedClusters, out);
  assert.equal(Number(m[3]), img.geometry.clusterCount, out);
  assert.doesNotMatch(out, /differ|invalid|bad |corrupt|lost|free cluster summary wrong/i, out);
}

/**
 * mtools 4 converts each UTF-16 unit on its own, so a surrogate pair (a character beyond U+FFFF, stored
 * as two units as Windows and Linux do) shows as two '_'. Our reader round-trips these (unit tests).
 */
function asMtoolsShows(p: string): string {
  return p.replace(/[\u{10000}-\u{10FFFF}]/gu, '__');
}

function mtoolsCheck(file: string, files: Fat32File[], dirs: Set<string>, tmp: string): void {
  const r = run(MDIR, ['-/', '-b', '-i', file, '::/'], { env: ENV });
  assert.equal(r.status, 0, r.stderr.toString());
  const listed = r.stdout.toString().split('\n').filter((l) => l !== '').sort();
  const expected = [...files.map((f) => `::/${f.path}`), ...[...dirs].map((d) => `::/${d}/`)].map(asMtoolsShows).sort();
  assert.deepEqual(listed, expected);
  const out = path.join(tmp, 'mcopy-out');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out);
  const c = run(MCOPY, ['-s', '-n', '-i', file, '::/*', out], { env: ENV });
  assert.equal(c.status, 0, c.stderr.toString());
  for (const f of files) assert.ok(readFileSync(path.join(out, asMtoolsShows(f.path))).equals(f.data), `mcopy ${f.path}`);
  // (mtype takes wildcards: read back files whose paths have none)
  for (const f of files.filter((x) => !/[*?[\]]/.test(x.path) && asMtoolsShows(x.path) === x.path).slice(0, 3)) {
    const t = run(MTYPE, ['-i', file, `::/${f.path}`], { env: ENV });
    assert.equal(t.status, 0, t.stderr.toString());
    assert.ok(t.stdout.equals(f.data), `mtype ${f.path}`);
  }
}

test('geometry equals mkfs.fat -F 32 -a -R 32 for sizes across the cluster-size table', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'fat-geo-'));
  try {
    for (const mib of [34, 100, 260, 261, 1024, 4000, 8193]) {
      const file = path.join(tmp, `m${mib}.img`);
      const r = run(MKFS, ['-F', '32', '-a', '-R', '32', '-C', file, String(mib * 1024)], { env: ENV });
      assert.equal(r.status, 0, r.stderr.toString());
      const bs = Buffer.alloc(512);
      const fd = openSync(file, 'r');
      try { readFd(fd, bs); } finally { closeSync(fd); }
      const g = fat32Geometry(mib * MiB);
      assert.equal(g.sectorsPerCluster, bs[13], `${mib} MiB sectors/cluster`);
      assert.equal(g.fatSectors, bs.readUInt32LE(36), `${mib} MiB FAT sectors`);
      rmSync(file);
    }
  } finally { rmSync(tmp, { recursive: true, force: true }); }
});

function readFd(fd: number, buf: Buffer): void {
  const src = fdSource(fd, 0, buf.length);
  src.read(0, buf.length).copy(buf);
}

test('random images: fsck.fat -n finds no error; mdir/mcopy/mtype see exactly our files', () => {
  const n = cases(6, 40);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'fat-ref-'));
  const t0 = Date.now();
  try {
    for (let i = 0; i < n; i++) {
      const rng = new Rng(0xe5f000 + i);
      const tree = randomTree(rng);
      const img = buildFat32Image({ sizeBytes: i % 3 === 2 ? 300 * MiB : 34 * MiB, files: tree.files, directories: tree.directories });
      const file = path.join(tmp, 'esp.img');
      writeImage(img, file);
      const dirs = allDirs(tree.files, tree.directories);
      fsckClean(file, tree.files.length + dirs.size, img);
      mtoolsCheck(file, tree.files, dirs, tmp);
    }
  } finally { rmSync(tmp, { recursive: true, force: true }); }
  console.log(`# ${n} random images checked by fsck.fat and mtools in ${Date.now() - t0} ms`);
});

test('our reader reads an image written by mkfs.fat + mtools', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'fat-mt-'));
  try {
    const file = path.join(tmp, 'mt.img');
    assert.equal(run(MKFS, ['-F', '32', '-n', 'MTOOLS', '-C', file, String(64 * 1024)], { env: ENV }).status, 0);
    const rng = new Rng(4242);
    const host = path.join(tmp, 'src');
    const names = ['BOOTX64.EFI', 'loader.conf', 'a-long-name-with-ünïcode.efi', 'a-long-name-with-other.efi', 'x y z.txt', 'empty'];
    mkdirSync(path.join(host, 'EFI', 'Linux'), { recursive: true });
    const expect = new Map<string, Buffer>();
    for (const [k, n] of names.entries()) {
      const data = k === 5 ? Buffer.alloc(0) : rng.bytes(rng.int(1, 200_000));
      writeFileSync(path.join(host, 'EFI', 'Linux', n), data);
      expect.set(`EFI/Linux/${n}`, data);
    }
    assert.equal(run(MMD, ['-i', file, '::/EFI'], { env: ENV }).status, 0);
    const c = run(MCOPY, ['-s', '-i', file, path.join(host, 'EFI', 'Linux'), '::/EFI/'], { env: ENV });
    assert.equal(c.status, 0, c.stderr.toString());
    const fd = openSync(file, 'r');
    try {
      const vol = readFat32(fdSource(fd, 0, statSync(file).size));
      assert.equal(vol.label, 'MTOOLS');
      const listed = vol.entries.filter((e) => !e.isDirectory).map((e) => e.path).sort();
      assert.deepEqual(listed, [...expect.keys()].sort());
      for (const [p, data] of expect) assert.ok(vol.readFile(p).equals(data), p);
    } finally { closeSync(fd); }
  } finally { rmSync(tmp, { recursive: true, force: true }); }
});

test('a 1 GiB ESP is written quickly and sparsely, and checks clean', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'fat-1g-'));
  try {
    const rng = new Rng(1);
    const files: Fat32File[] = [
      { path: 'EFI/BOOT/BOOTX64.EFI', data: rng.bytes(150_000) },
      { path: 'EFI/systemd/systemd-bootx64.efi', data: rng.bytes(150_000) },
      { path: 'EFI/Linux/bootcfs-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.efi', data: rng.bytes(4 * MiB) },
      { path: 'loader/loader.conf', data: Buffer.from('timeout 3\n') },
    ];
    const file = path.join(tmp, 'esp.img');
    const t0 = process.hrtime.bigint();
    const img = buildFat32Image({ sizeBytes: 1024 * MiB, files, directories: ['loader/keys'] });
    writeImage(img, file);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const st = statSync(file);
    const allocated = st.blocks * 512;
    console.log(`# 1 GiB ESP: built+written in ${ms.toFixed(1)} ms, ${allocated} bytes allocated, cluster ${img.geometry.clusterSize}`);
    assert.equal(st.size, 1024 * MiB);
    assert.equal(img.geometry.clusterSize, 4096);
    assert.ok(ms < 3000, `took ${ms} ms`);
    // 2 FATs of 1 MiB each + reserved + directories + ~4.3 MiB of files
    assert.ok(allocated < 8 * MiB, `allocated ${allocated}`);
    const dirs = allDirs(files, ['loader/keys']);
    fsckClean(file, files.length + dirs.size, img);
    mtoolsCheck(file, files, dirs, tmp);
    // and our reader through a file descriptor
    const fd = openSync(file, 'r');
    try {
      const vol = readFat32(fdSource(fd, 0, st.size));
      for (const f of files) assert.ok(vol.readFile(f.path).equals(f.data), f.path);
    } finally { closeSync(fd); }
    // at an offset inside a larger disk image (as install writes the ESP partition)
    const disk = path.join(tmp, 'disk.img');
    writeFileSync(disk, '');
    const dfd = openSync(disk, 'r+');
    try {
      writeFat32Image(img, dfd, MiB);
      const vol = readFat32(fdSource(dfd, MiB, img.sizeBytes));
      assert.ok(vol.readFile(files[2]!.path).equals(files[2]!.data));
    } finally { closeSync(dfd); }
    const m = run(MDIR, ['-/', '-b', '-i', `${disk}@@${MiB}`, '::/'], { env: ENV });
    assert.equal(m.status, 0, m.stderr.toString());
    assert.match(m.stdout.toString(), /::\/EFI\/BOOT\/BOOTX64\.EFI/);
  } finally { rmSync(tmp, { recursive: true, force: true }); }
});

