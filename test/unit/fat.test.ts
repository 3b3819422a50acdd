/**
 * FAT32 writer/reader: round trips of seeded random trees (long, unicode, colliding names, deep
 * directories, empty and multi-MiB files) through our reader; the geometry table; 8.3 short-name
 * generation; input validation; reproducibility; and hostile images (targeted corruptions plus seeded
 * random byte mutations of every metadata extent) that must fail with typed errors only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FAT32_MIN_CLUSTERS,
  buildFat32Image,
  fat32Geometry,
  fat32ImageToBuffer,
  fat32SectorsPerCluster,
  imageSource,
  makeShortName,
  readFat32,
  shortNameChecksum,
  type Fat32Extent,
  type Fat32File,
  type Fat32Image,
} from '../../src/install/fat.js';
import { BootcfsError, FormatError } from '../../src/errors.js';
import { Rng } from '../helpers/rng.js';
import { cases } from '../helpers/ref.js';

const MiB = 1024 * 1024;
/** Smallest convenient FAT32 size with 512-byte clusters (> 65525 clusters). */
const SMALL = 34 * MiB;

export interface RandomTree { files: Fat32File[]; directories: string[] }

const NAME_PIECES = ['a', 'B', 'readme', 'LOADER', 'vmlinuz-6.12.0', 'Ä', 'ü', '日本語', '😀', 'x y', '+,;=[]', '.cfg',
  'kernel', 'initrd.img', '~tilde', 'CamelCase', 'ends', 'long-name-that-goes-on-and-on', "it's", '#1', '(x)'];

function randomName(rng: Rng): string {
  for (;;) {
    let s = '';
    const n = rng.int(1, 4);
    for (let i = 0; i < n; i++) s += rng.pick(NAME_PIECES);
    if (rng.bool(0.3)) s += `.${rng.pick(['efi', 'conf', 'EFI', 'txt', 'tar.gz', 'a', 'LONGEXT'])}`;
    if (rng.bool(0.1)) s = `.${s}`;
    if (rng.bool(0.05)) s = 'x'.repeat(rng.int(100, 255));
    if (s.length > 255 || /[ .]$/.test(s)) continue;
    return s;
  }
}

/** A random tree with case-insensitively unique names per directory. */
export function randomTree(rng: Rng, opts: { maxFiles: number; maxBigBytes: number }): RandomTree {
  const dirs: string[] = [''];
  const used = new Map<string, Set<string>>([['', new Set()]]);
  const fresh = (parent: string, forceCollide: boolean): string => {
    const set = used.get(parent)!;
    for (;;) {
      const name = forceCollide ? `collide-${rng.int(0, 1_000_000)}.efi` : randomName(rng);
      if (!set.has(name.toUpperCase())) { set.add(name.toUpperCase()); return name; }
    }
  };
  const nDirs = rng.int(0, 12);
  for (let i = 0; i < nDirs; i++) {
    const parent = rng.bool(0.6) ? dirs[dirs.length - 1]! : rng.pick(dirs); // tends to build deep chains
    const p = parent ? `${parent}/${fresh(parent, false)}` : fresh(parent, false);
    dirs.push(p);
    used.set(p, new Set());
  }
  const files: Fat32File[] = [];
  const nFiles = rng.int(0, opts.maxFiles);
  let big = 0;
  for (let i = 0; i < nFiles; i++) {
    const parent = rng.pick(dirs);
    const name = fresh(parent, rng.bool(0.25));
    const kind = rng.int(0, 9);
    let size = kind === 0 ? 0 : kind < 7 ? rng.int(1, 3000) : rng.int(3000, 70_000);
    if (kind === 9 && big < opts.maxBigBytes) { size = rng.int(1 * MiB, 3 * MiB); big += size; }
    files.push({ path: parent ? `${parent}/${name}` : name, data: rng.bytes(size) });
  }
  return { files, directories: dirs.filter((d) => d !== '' && rng.bool(0.5)) };
}

function expectedEntries(t: RandomTree): Map<string, number | 'dir'> {
  const m = new Map<string, number | 'dir'>();
  const addDirs = (p: string) => {
    const parts = p.split('/');
    for (let i = 1; i <= parts.length; i++) m.set(parts.slice(0, i).join('/'), 'dir');
  };
  for (const d of t.directories) addDirs(d);
  for (const f of t.files) {
    const parts = f.path.split('/');
    if (parts.length > 1) addDirs(parts.slice(0, -1).join('/'));
    m.set(f.path, f.data.length);
  }
  return m;
}

function checkRoundTrip(img: Fat32Image, t: RandomTree): void {
  for (const vol of [readFat32(imageSource(img)), readFat32(fat32ImageToBuffer(img))]) {
    assert.equal(vol.label, img.label);
    assert.equal(vol.volumeId, img.volumeId);
    assert.deepEqual(vol.geometry, img.geometry);
    const got = new Map(vol.entries.map((e) => [e.path, e.isDirectory ? 'dir' as const : e.size]));
    assert.deepEqual(got, expectedEntries(t));
    for (const f of t.files) assert.ok(vol.readFile(f.path).equals(f.data), f.path);
    // short names: valid 8.3 and unique per directory
    const perDir = new Map<string, Set<string>>();
    for (const e of vol.entries) {
      assert.match(e.shortName, /^[A-Z0-9!#$%&'()\-@^_`{}~]{1,8}(\.[A-Z0-9!#$%&'()\-@^_`{}~]{1,3})?$/, e.shortName);
      const dir = e.path.split('/').slice(0, -1).join('/');
      const s = perDir.get(dir) ?? new Set<string>();
      assert.ok(!s.has(e.shortName), `duplicate short name ${e.shortName} in '${dir}'`);
      s.add(e.shortName);
      perDir.set(dir, s);
    }
  }
}

test('geometry follows the mkfs.fat cluster-size table and FAT sizing', () => {
  assert.equal(fat32SectorsPerCluster((260 * MiB) / 512), 1);
  assert.equal(fat32SectorsPerCluster((260 * MiB) / 512 + 1), 8);
  assert.equal(fat32SectorsPerCluster((1024 * MiB) / 512), 8);
  assert.equal(fat32SectorsPerCluster((8192 * MiB) / 512 + 1), 16);
  assert.equal(fat32SectorsPerCluster((16384 * MiB) / 512 + 1), 32);
  assert.equal(fat32SectorsPerCluster((65536 * MiB) / 512), 64);
  for (const size of [SMALL, 100 * MiB, 512 * MiB, 1024 * MiB, 2048 * MiB, 10000 * MiB]) {
    const g = fat32Geometry(size);
    assert.ok(g.clusterCount >= FAT32_MIN_CLUSTERS);
    assert.ok((g.clusterCount + 2) * 4 <= g.fatSectors * 512, 'FAT maps every cluster');
    assert.ok((g.clusterCount + 2) * 4 > (g.fatSectors - 1) * 512, 'FAT is minimal');
    assert.ok(g.dataOffset + g.clusterCount * g.clusterSize <= size);
    assert.ok(g.dataOffset + (g.clusterCount + 1) * g.clusterSize > size, 'no whole cluster wasted');
  }
  assert.equal(fat32Geometry(1024 * MiB).clusterSize, 4096);
  assert.throws(() => fat32Geometry(16 * MiB), (e: unknown) => e instanceof BootcfsError && e.code === 'ELIMIT');
  assert.throws(() => fat32Geometry(SMALL + 1), (e: unknown) => e instanceof BootcfsError && e.code === 'EINVAL');
});

test('short names: lossless names kept, others get ~N tails (shortening the base from ~10 on)', () => {
  const taken = new Set<string>();
  const take = (n: string) => { const b = makeShortName(n, taken); taken.add(b.toString('latin1')); return b.toString('latin1'); };
  assert.equal(take('BOOTX64.EFI'), 'BOOTX64 EFI');
  assert.equal(take('bootx64.efi'), 'BOOTX6~1EFI'); // basis taken
  assert.equal(take('loader.conf'), 'LOADER~1CON');
  assert.equal(take('Loader.Conf2'), 'LOADER~2CON');
  assert.equal(take('.bashrc'), 'BASHRC~1   ');
  assert.equal(take('a b+c.tar.gz'), 'AB_CTA~1GZ ');
  const t2 = new Set<string>();
  const names: string[] = [];
  for (let i = 0; i < 12; i++) { const b = makeShortName(`verylongname-${i}.efi`, t2); t2.add(b.toString('latin1')); names.push(b.toString('latin1')); }
  assert.deepEqual(names.slice(0, 3), ['VERYLO~1EFI', 'VERYLO~2EFI', 'VERYLO~3EFI']);
  assert.deepEqual(names.slice(9), ['VERYL~10EFI', 'VERYL~11EFI', 'VERYL~12EFI']);
  // checksum from the FAT specification's algorithm, checked against a hand-computed value
  let sum = 0;
  for (const c of Buffer.from('BOOTX64 EFI', 'latin1')) sum = ((sum >> 1) + ((sum & 1) ? 0x80 : 0) + c) & 0xff;
  assert.equal(shortNameChecksum(Buffer.from('BOOTX64 EFI', 'latin1')), sum);
});

test('seeded random trees round-trip through the reader', () => {
  const n = cases(25, 200);
  const t0 = Date.now();
  for (let i = 0; i < n; i++) {
    const rng = new Rng(0xfa7000 + i);
    const tree = randomTree(rng, { maxFiles: 40, maxBigBytes: i % 5 === 0 ? 6 * MiB : 0 });
    const size = rng.bool(0.7) ? SMALL : 300 * MiB; // 512-byte and 4 KiB clusters
    const img = buildFat32Image({ sizeBytes: size, files: tree.files, directories: tree.directories });
    checkRoundTrip(img, tree);
  }
  console.log(`# ${n} random trees round-tripped in ${Date.now() - t0} ms`);
});

test('deep directories, directory spanning several clusters, and full-volume files', () => {
  const deep = Array.from({ length: 60 }, (_, i) => `level-${i}`).join('/');
  const many: Fat32File[] = Array.from({ length: 300 }, (_, i) => ({ path: `many/a-rather-long-file-name-number-${i}.conf`, data: Buffer.from(`${i}`) }));
  const tree: RandomTree = { files: [{ path: `${deep}/leaf.txt`, data: Buffer.from('leaf') }, ...many], directories: [deep + '/empty'] };
  const img = buildFat32Image({ sizeBytes: SMALL, files: tree.files, directories: tree.directories });
  checkRoundTrip(img, tree);
  // a file that fills the data region exactly fits; one byte more does not
  const g = fat32Geometry(SMALL);
  const room = (g.clusterCount - 1) * g.clusterSize; // minus the root directory
  const fill = { path: 'fill.bin', data: Buffer.alloc(room, 7) };
  checkRoundTrip(buildFat32Image({ sizeBytes: SMALL, files: [fill] }), { files: [fill], directories: [] });
  assert.throws(() => buildFat32Image({ sizeBytes: SMALL, files: [{ path: 'fill.bin', data: Buffer.alloc(room + 1) }] }),
    (e: unknown) => e instanceof BootcfsError && e.code === 'ELIMIT');
});

test('images are reproducible and independent of input order', () => {
  const rng = new Rng(77);
  const tree = randomTree(rng, { maxFiles: 30, maxBigBytes: 0 });
  const a = buildFat32Image({ sizeBytes: SMALL, files: tree.files, directories: tree.directories });
  const b = buildFat32Image({ sizeBytes: SMALL, files: [...tree.files].reverse(), directories: [...tree.directories].reverse() });
  assert.ok(fat32ImageToBuffer(a).equals(fat32ImageToBuffer(b)));
  const c = buildFat32Image({ sizeBytes: SMALL, files: tree.files, volumeId: 0xdeadbeef, label: 'ESP' });
  const vc = readFat32(imageSource(c));
  assert.equal(vc.volumeId, 0xdeadbeef);
  assert.equal(vc.label, 'ESP');
});

test('bad input is rejected with typed errors', () => {
  const bad = (files: Fat32File[], directories: string[] = [], extra: object = {}) =>
    assert.throws(() => buildFat32Image({ sizeBytes: SMALL, files, directories, ...extra }), (e: unknown) => e instanceof BootcfsError);
  const d = Buffer.from('x');
  bad([{ path: 'a/b', data: d }, { path: 'A/B', data: d }]);
  bad([{ path: 'a', data: d }, { path: 'a/b', data: d }]);
  bad([{ path: 'a/b', data: d }], ['A']);
  bad([{ path: 'x', data: d }, { path: 'X', data: d }]);
  for (const name of ['a:b', 'a*', 'q?', 'trailing.', 'trailing ', '..', '.', 'a\u0001', 'x'.repeat(256), '\ud800x']) bad([{ path: name, data: d }]);
  bad([{ path: '', data: d }]);
  bad([], [], { label: 'lower case' });
  bad([], [], { label: 'TWELVE CHARS' });
  bad([], [], { timestamp: new Date(Date.UTC(1970, 0, 1)) });
});

function mutateExtents(img: Fat32Image, f: (extents: Fat32Extent[]) => void): Fat32Image {
  const extents = img.extents.map((e) => ({ offset: e.offset, data: Buffer.from(e.data) }));
  f(extents);
  return { ...img, extents };
}

function typedOnly(img: Fat32Image): 'ok' | 'error' {
  try {
    const vol = readFat32(imageSource(img));
    for (const e of vol.entries) if (!e.isDirectory) vol.readFile(e.path);
    return 'ok';
  } catch (e) {
    if (!(e instanceof BootcfsError)) throw e;
    return 'error';
  }
}

test('hostile images: targeted corruptions give FormatError with an offset', () => {
  const files: Fat32File[] = [
    { path: 'EFI/BOOT/BOOTX64.EFI', data: Buffer.alloc(5000, 1) },
    { path: 'EFI/Linux/uki.efi', data: Buffer.alloc(2000, 2) },
  ];
  const img = buildFat32Image({ sizeBytes: SMALL, files });
  const vol = readFat32(imageSource(img));
  const boot = vol.entries.find((e) => e.name === 'BOOTX64.EFI')!;
  const efi = vol.entries.find((e) => e.path === 'EFI')!;
  const linux = vol.entries.find((e) => e.path === 'EFI/Linux')!;
  const fatOff = 32 * 512;
  const fatExt = (x: Fat32Extent[]) => x.find((e) => e.offset === fatOff)!.data;
  const dirExt = (x: Fat32Extent[], cluster: number) => x.find((e) => e.offset === img.geometry.dataOffset + (cluster - 2) * 512)!.data;
  const expectFormat = (name: string, m: Fat32Image, readPath?: string) => {
    assert.throws(() => {
      const v = readFat32(imageSource(m));
      if (readPath) v.readFile(readPath);
    }, (e: unknown) => e instanceof FormatError && e.offset >= 0, name);
  };
  expectFormat('signature', mutateExtents(img, (x) => { x[0]!.data[510] = 0; }));
  expectFormat('bytes per sector', mutateExtents(img, (x) => { x[0]!.data.writeUInt16LE(300, 11); }));
  expectFormat('sectors per cluster', mutateExtents(img, (x) => { x[0]!.data[13] = 3; }));
  expectFormat('huge FAT', mutateExtents(img, (x) => { x[0]!.data.writeUInt32LE(0x7fffffff, 36); }));
  expectFormat('total sectors beyond source', mutateExtents(img, (x) => { x[0]!.data.writeUInt32LE(0xffffffff, 32); }));
  expectFormat('root cluster', mutateExtents(img, (x) => { x[0]!.data.writeUInt32LE(0x0fffff00, 44); }));
  expectFormat('FAT loop', mutateExtents(img, (x) => { fatExt(x).writeUInt32LE(boot.firstCluster, (boot.firstCluster + 3) * 4); }), 'EFI/BOOT/BOOTX64.EFI');
  expectFormat('chain into free', mutateExtents(img, (x) => { fatExt(x).writeUInt32LE(0, (boot.firstCluster + 3) * 4); fatExt(x).writeUInt32LE(0x0fffffff, (boot.firstCluster + 2) * 4); }), 'EFI/BOOT/BOOTX64.EFI');
  expectFormat('chain too short', mutateExtents(img, (x) => { fatExt(x).writeUInt32LE(0x0fffffff, (boot.firstCluster + 2) * 4); }), 'EFI/BOOT/BOOTX64.EFI');
  expectFormat('out-of-range next cluster', mutateExtents(img, (x) => { fatExt(x).writeUInt32LE(0x0ffffff0, boot.firstCluster * 4); }), 'EFI/BOOT/BOOTX64.EFI');
  // directory cycle: EFI/Linux's entry in EFI points back at EFI's own cluster
  expectFormat('directory cycle', mutateExtents(img, (x) => {
    const d = dirExt(x, efi.firstCluster);
    for (let off = 0; off < d.length; off += 32) {
      if (d.readUInt16LE(off + 26) === linux.firstCluster && d[off + 11] === 0x10) d.writeUInt16LE(efi.firstCluster, off + 26);
    }
  }));
  // truncated source
  assert.throws(() => readFat32(fat32ImageToBuffer(img).subarray(0, 1 << 20)), (e: unknown) => e instanceof FormatError);
  assert.throws(() => readFat32(Buffer.alloc(100)), (e: unknown) => e instanceof FormatError);
  assert.throws(() => vol.readFile('EFI/nope'), (e: unknown) => e instanceof BootcfsError && e.code === 'ENOENT');
  assert.throws(() => vol.readFile('EFI'), (e: unknown) => e instanceof BootcfsError && e.code === 'EINVAL');
});

test('hostile images: seeded random mutations of metadata never escape as untyped errors', () => {
  const n = cases(300, 3000);
  const rng = new Rng(0xbadfa7);
  const tree = randomTree(new Rng(5), { maxFiles: 25, maxBigBytes: 0 });
  const img = buildFat32Image({ sizeBytes: SMALL, files: tree.files, directories: tree.directories });
  // metadata extents: reserved sectors, FATs (only their used prefix is interesting), directory clusters
  // (the writer emits reserved, FAT, FAT, then one extent per directory, then the files)
  const nDirs = readFat32(imageSource(img)).entries.filter((e) => e.isDirectory).length + 1;
  const metaIdx = Array.from({ length: 3 + nDirs }, (_, i) => i);
  let errors = 0;
  for (let k = 0; k < n; k++) {
    const m = mutateExtents(img, (x) => {
      const flips = rng.int(1, 8);
      for (let j = 0; j < flips; j++) {
        const ext = x[rng.pick(metaIdx)]!;
        const limit = ext.offset === 0 ? 1024 : Math.min(ext.data.length, 4096);
        const at = rng.int(0, limit - 1);
        ext.data[at] = rng.bool(0.5) ? rng.int(0, 255) : ext.data[at]! ^ (1 << rng.int(0, 7));
      }
    });
    if (typedOnly(m) === 'error') errors++;
  }
  console.log(`# ${n} mutated images: ${errors} rejected with typed errors, ${n - errors} still readable`);
  assert.ok(errors > 0);
});
