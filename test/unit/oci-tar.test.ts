/**
 * The streaming tar reader (src/oci/tar.ts), the layer builder (src/oci/layers.ts) and the OCI root
 * transform (src/oci/transform.ts) on hand-built archives: every header variant, binary xattrs, byte
 * exactness under any input chunking, hostile archives (fixed cases and seeded mutations).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BootcfsError, FormatError } from '../../src/errors.js';
import { fsverityDigest } from '../../src/fsverity/index.js';
import { lookup, S_IFDIR, S_IFMT, S_IFREG, type Inode } from '../../src/tree/model.js';
import { readContent, tarEntries, tarSegments, TarSparseError, type TarEntry, type TarSegment } from '../../src/oci/tar.js';
import { buildTreeFromLayers, digestOnly, LayerTreeBuilder, makedev } from '../../src/oci/layers.js';
import { transformForOci, OciTransformError } from '../../src/oci/transform.js';
import { buildTar, paxRecord, type TarWriteEntry } from '../helpers/oci-layout.js';
import { cases } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

async function* chunked(buf: Buffer, sizes: number[] | number): AsyncGenerator<Uint8Array> {
  let i = 0;
  let k = 0;
  while (i < buf.length) {
    const n = Math.max(1, typeof sizes === 'number' ? sizes : sizes[k++ % sizes.length]!);
    yield buf.subarray(i, i + n);
    i += n;
  }
}

async function segmentsOf(buf: Buffer, chunk: number[] | number = 1 << 20): Promise<TarSegment[]> {
  const out: TarSegment[] = [];
  for await (const s of tarSegments(chunked(buf, chunk))) out.push(s);
  return out;
}

async function entriesOf(buf: Buffer): Promise<Array<TarEntry & { data: Buffer }>> {
  const out: Array<TarEntry & { data: Buffer }> = [];
  for await (const { entry, content } of tarEntries(chunked(buf, 4096))) out.push({ ...entry, data: await readContent(content) });
  return out;
}

async function rejects(buf: Buffer, re: RegExp, cls: new (...a: never[]) => Error = FormatError): Promise<void> {
  await assert.rejects(segmentsOf(buf), (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.match((e as Error).message, re);
    return true;
  });
}

/** Rewrites a header block's checksum after a test edited it. */
function fixChecksum(buf: Buffer, blockOffset: number): void {
  const h = buf.subarray(blockOffset, blockOffset + 512);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
}

const longName = `${'d'.repeat(90)}/${'e'.repeat(60)}/${'f'.repeat(80)}`;

test('ustar: prefix + name, modes, devices, all regular typeflags, old-style directory', async () => {
  const tar = buildTar([
    { path: `${'p'.repeat(120)}/name.txt`, type: 'reg', mode: 0o4755, uid: 12, gid: 34, mtimeSec: 1700000000, content: Buffer.from('hello') },
    { path: 'areg', type: 'areg', content: Buffer.from('x') },
    { path: 'contig', type: 'contiguous', content: Buffer.from('yz') },
    { path: 'olddir/', type: 'areg', mode: 0o755 },
    { path: 'tty', type: 'chr', devMajor: 4, devMinor: 1, mode: 0o620 },
    { path: 'sda', type: 'blk', devMajor: 8, devMinor: 0 },
    { path: 'pipe', type: 'fifo' },
  ], { format: 'ustar' });
  const es = await entriesOf(tar);
  assert.deepEqual(es.map((e) => [e.path, e.type, e.size]), [
    [`${'p'.repeat(120)}/name.txt`, 'reg', 5], ['areg', 'reg', 1], ['contig', 'reg', 2], ['olddir/', 'dir', 0],
    ['tty', 'chr', 0], ['sda', 'blk', 0], ['pipe', 'fifo', 0],
  ]);
  assert.equal(es[0]!.mode, 0o4755);
  assert.equal(es[0]!.uid, 12);
  assert.equal(es[0]!.gid, 34);
  assert.equal(es[0]!.mtimeSec, 1700000000);
  assert.equal(es[0]!.mtimeNsec, 0);
  assert.equal(es[0]!.data.toString(), 'hello');
  assert.equal(es[2]!.typeflag, 0x37);
  assert.deepEqual([es[4]!.devMajor, es[4]!.devMinor], [4, 1]);
  assert.deepEqual([es[5]!.devMajor, es[5]!.devMinor], [8, 0]);
});

test('GNU: long name and long link blocks, base-256 numbers (large uid, negative mtime, big size field)', async () => {
  const longTarget = 'T'.repeat(300);
  const tar = buildTar([
    { path: longName, type: 'reg', uid: 2 ** 40, gid: 3_000_000_000, mtimeSec: -86400 * 400, content: Buffer.from('abc') },
    { path: `${longName}.lnk`, type: 'symlink', linkTarget: longTarget, mode: 0o777 },
    { path: `${longName}.hard`, type: 'hardlink', linkTarget: longName },
  ], { format: 'gnu' });
  const es = await entriesOf(tar);
  assert.equal(es.length, 3);
  assert.equal(es[0]!.path, longName);
  assert.equal(es[0]!.uid, 2 ** 40);
  assert.equal(es[0]!.gid, 3_000_000_000);
  assert.equal(es[0]!.mtimeSec, -86400 * 400);
  assert.equal(es[1]!.linkTarget, longTarget);
  assert.equal(es[1]!.type, 'symlink');
  assert.equal(es[2]!.linkTarget, longName);
  assert.equal(es[2]!.type, 'hardlink');
  // the header segment of the long-named entry holds the L block, its data block and the header
  const segs = await segmentsOf(tar);
  assert.equal(segs[0]!.kind, 'header');
  assert.equal(segs[0]!.bytes.length, 512 * 3);
});

test('PAX: path, linkpath, size, uid, gid, fractional and negative mtimes, uname/gname', async () => {
  const tar = buildTar([
    { path: longName, type: 'reg', uid: 99_999_999, gid: 88_888_888, mtimeSec: 1234567890, mtimeNsec: 123456789, content: Buffer.from('data') },
    { path: 'neg', type: 'reg', mtimeSec: -2, mtimeNsec: 500_000_000 },
    { path: 'l', type: 'symlink', linkTarget: 'x'.repeat(4000) },
    { path: 'u', type: 'dir', uname: 'alice', gname: 'staff', pax: { uname: 'bob' } },
    { path: 'frac', type: 'reg', pax: { mtime: '17.5' } },
    { path: 'frac-long', type: 'reg', pax: { mtime: '17.1234567891234' } },
  ]);
  const es = await entriesOf(tar);
  assert.equal(es[0]!.path, longName);
  assert.equal(es[0]!.uid, 99_999_999);
  assert.equal(es[0]!.gid, 88_888_888);
  assert.deepEqual([es[0]!.mtimeSec, es[0]!.mtimeNsec], [1234567890, 123456789]);
  assert.deepEqual([es[1]!.mtimeSec, es[1]!.mtimeNsec], [-2, 500_000_000]);
  assert.equal(es[2]!.linkTarget.length, 4000);
  assert.equal(es[3]!.uname, 'bob');
  assert.equal(es[3]!.gname, 'staff');
  assert.deepEqual([es[4]!.mtimeSec, es[4]!.mtimeNsec], [17, 500_000_000]);
  assert.deepEqual([es[5]!.mtimeSec, es[5]!.mtimeNsec], [17, 123456789]);

  // PAX size overrides the header's size field (here: header says 0)
  const t2 = buildTar([{ path: 'big', type: 'reg', content: Buffer.from('0123456789'), pax: { size: '10' } }]);
  const hdr = 1024; // after the x header and its one data block
  assert.equal(t2.toString('latin1', hdr, hdr + 4), 'big\0');
  t2.write('00000000000\0', hdr + 124, 'latin1');
  fixChecksum(t2, hdr);
  const e2 = await entriesOf(t2);
  assert.equal(e2[0]!.size, 10);
  assert.equal(e2[0]!.data.toString(), '0123456789');
});

test('PAX xattrs are binary-safe (NUL, newline, "=", high bytes, empty values, odd names)', async () => {
  const values = new Map<string, Buffer>([
    ['user.nul', Buffer.from([0, 1, 0, 2])],
    ['user.nl', Buffer.from('a\nb\n\n')],
    ['user.eq', Buffer.from('k=v=w')],
    ['user.high', Buffer.from([0xff, 0xfe, 0x80, 0xc3, 0x28])],
    ['user.empty', Buffer.alloc(0)],
    ['security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex')],
    ['user.\xe9t\xe9 name', Buffer.from('latin1 name')],
    ['trusted.big', Buffer.alloc(5000, 7)],
  ]);
  const tar = buildTar([{ path: 'f', type: 'reg', xattrs: values, content: Buffer.from('x') }]);
  const [e] = await entriesOf(tar);
  assert.deepEqual([...e!.xattrs.keys()], [...values.keys()]);
  for (const [k, v] of values) assert.ok(e!.xattrs.get(k)!.equals(v), k);
});

test('global PAX headers apply to all following entries; local records win; an empty value unsets', async () => {
  const tar = buildTar([
    { path: 'a', type: 'reg' },
    { path: 'b', type: 'reg', pax: { uid: '7' } },
    { path: 'c', type: 'reg', pax: { gname: '' } },
  ], { globalPax: { uid: '4242', gname: 'globalgroup', 'SCHILY.xattr.user.g': Buffer.from([1, 0, 2]) } });
  const segs = await segmentsOf(tar);
  const es = segs.filter((s) => s.kind === 'header').map((s) => s.entry!);
  assert.deepEqual(es.map((e) => [e.path, e.uid, e.gname]), [['a', 4242, 'globalgroup'], ['b', 7, 'globalgroup'], ['c', 4242, '']]);
  for (const e of es) assert.deepEqual([...e.xattrs.get('user.g')!], [1, 0, 2]);
  // the g header travels with the first entry's header segment
  assert.equal(segs[0]!.bytes.length, 512 * 3);

  // a global header right before the end of the archive is its own header segment
  const onlyGlobal = buildTar([], { globalPax: { comment: 'x' } });
  const s2 = await segmentsOf(onlyGlobal);
  assert.deepEqual(s2.map((s) => s.kind), ['header', 'end']);
  assert.equal(s2[0]!.kind === 'header' && s2[0]!.entry, undefined);
});

test('segments reproduce the archive byte for byte under any chunking, with GNU record padding and trailing data', async () => {
  const rng = new Rng(7);
  const entries: TarWriteEntry[] = [];
  for (let i = 0; i < 40; i++) {
    const size = rng.pick([0, 1, 63, 64, 65, 511, 512, 513, 4096, 70000]);
    entries.push({ path: `dir/file-${i}`, type: 'reg', content: rng.bytes(size), mtimeSec: 1e9 + i, mtimeNsec: i * 1000 });
  }
  const base = buildTar(entries);
  for (const tail of [Buffer.alloc(0), Buffer.alloc(10240 - (base.length % 10240)), Buffer.from('junk after the end')]) {
    const tar = Buffer.concat([base, tail]);
    for (const chunk of [7, 511, 512, 513, 65536, [3, 1000, 1, 17]]) {
      const segs = await segmentsOf(tar, chunk);
      assert.ok(Buffer.concat(segs.map((s) => s.bytes)).equals(tar), `chunk ${String(chunk)}`);
      let pos = 0;
      for (const s of segs) {
        assert.equal(s.offset, pos);
        pos += s.bytes.length;
      }
      const data = segs.filter((s) => s.kind === 'data');
      assert.equal(data.reduce((n, s) => n + s.bytes.length, 0), entries.reduce((n, e) => n + e.content!.length, 0));
    }
  }
  // one byte at a time (a smaller archive: this is slow by design)
  const small = buildTar(entries.slice(0, 6));
  assert.ok(Buffer.concat((await segmentsOf(small, 1)).map((s) => s.bytes)).equals(small));
  // an archive that just stops after an entry (no end blocks) is accepted
  const noEnd = base.subarray(0, base.length - 1024);
  const segs = await segmentsOf(noEnd, 333);
  assert.ok(Buffer.concat(segs.map((s) => s.bytes)).equals(noEnd));
  assert.equal(segs.filter((s) => s.kind === 'end').length, 0);
});

test('tarEntries: unread content is skipped, content can be read once, pieces are bounded', async () => {
  const big = new Rng(3).bytes(3 * 1024 * 1024 + 5);
  const tar = buildTar([
    { path: 'skip', type: 'reg', content: big },
    { path: 'read', type: 'reg', content: Buffer.from('kept') },
    { path: 'partial', type: 'reg', content: big },
    { path: 'last', type: 'dir' },
  ]);
  const seen: string[] = [];
  for await (const { entry, content } of tarEntries(chunked(tar, 100000))) {
    seen.push(entry.path);
    if (entry.path === 'read') {
      assert.equal((await readContent(content)).toString(), 'kept');
      await assert.rejects(readContent(content), FormatError);
    }
    if (entry.path === 'partial') {
      for await (const piece of content) {
        assert.ok(piece.length <= 1024 * 1024);
        break;
      }
    }
  }
  assert.deepEqual(seen, ['skip', 'read', 'partial', 'last']);

  // a reader abandoned early closes its source
  let closed = false;
  async function* source(): AsyncGenerator<Uint8Array> {
    try {
      yield* chunked(tar, 1000);
    } finally {
      closed = true;
    }
  }
  for await (const { entry } of tarEntries(source())) if (entry.path === 'skip') break;
  assert.ok(closed);
});

test('hostile archives: typed errors with byte offsets', async () => {
  const good = buildTar([{ path: 'a', type: 'reg', content: Buffer.from('hello') }, { path: 'b', type: 'dir' }]);
  // bad checksum
  const badSum = Buffer.from(good);
  badSum[10] ^= 1;
  await assert.rejects(segmentsOf(badSum), (e: unknown) => e instanceof FormatError && /checksum/.test(e.message) && e.offset === 0);
  // truncated inside the content, inside a header, inside padding
  await rejects(good.subarray(0, 512 + 3), /truncated/);
  await rejects(good.subarray(0, 1024 + 100), /truncated/);
  await rejects(good.subarray(0, 512 + 200), /truncated/);
  // sparse
  const sparse = Buffer.from(good);
  sparse[156] = 0x53;
  fixChecksum(sparse, 0);
  await rejects(sparse, /sparse/, TarSparseError);
  await rejects(buildTar([{ path: 's', type: 'reg', pax: { 'GNU.sparse.major': '1', 'GNU.sparse.minor': '0' } }]), /sparse/, TarSparseError);
  // malformed PAX records
  const withPax = (data: Buffer): Buffer => {
    const t = buildTar([{ path: 'p', type: 'reg', pax: { comment: 'zz' } }]);
    const recOff = 512;
    const old = paxRecord('comment', Buffer.from('zz'));
    assert.equal(data.length, old.length, 'test records must keep the length');
    data.copy(t, recOff);
    return t;
  };
  await rejects(withPax(Buffer.from('99 comment=zz\n')), /PAX record/);
  await rejects(withPax(Buffer.from('14 commentxzz\n')), /PAX record/);
  await rejects(withPax(Buffer.from('1x comment=zz\n')), /PAX record/);
  await rejects(withPax(Buffer.from('14 comment=zz!')), /PAX record/);
  await rejects(withPax(Buffer.from('00 comment=zz\n')), /PAX record/);
  await rejects(buildTar([{ path: 'p', type: 'reg', pax: { uid: '-5' } }]), /PAX uid/);
  await rejects(buildTar([{ path: 'p', type: 'reg', pax: { size: '99999999999999999999' } }]), /PAX size/);
  await rejects(buildTar([{ path: 'p', type: 'reg', pax: { mtime: '1e9' } }]), /PAX mtime/);
  // negative / non-octal / overflowing header numbers
  const negSize = Buffer.from(good);
  negSize.fill(0xff, 124, 136);
  fixChecksum(negSize, 0);
  await rejects(negSize, /negative size/);
  const hugeSize = Buffer.from(good);
  hugeSize[124] = 0x80;
  hugeSize.fill(0x7f, 125, 136);
  fixChecksum(hugeSize, 0);
  await rejects(hugeSize, /out of range/);
  const badOctal = Buffer.from(good);
  badOctal.write('0000009', 108, 'latin1');
  fixChecksum(badOctal, 0);
  await rejects(badOctal, /octal uid/);
  // an absurd size is not buffered: it is a truncation
  const absurd = Buffer.from(good);
  absurd.write('77777777777\0', 124, 'latin1');
  fixChecksum(absurd, 0);
  await rejects(absurd, /truncated/);
  // stray zero block, orphaned extension header, duplicates, too many extension headers, empty path
  await rejects(Buffer.concat([Buffer.alloc(512), good]), /stray zero block/);
  const orphan = buildTar([{ path: 'x', type: 'reg', pax: { comment: 'c' } }]);
  await rejects(Buffer.concat([orphan.subarray(0, 1024), Buffer.alloc(1024)]), /not followed by an entry/);
  const gnuLong = buildTar([{ path: longName, type: 'reg' }], { format: 'gnu' });
  await rejects(Buffer.concat([gnuLong.subarray(0, 1024), gnuLong]), /duplicate GNU long name/);
  const manyX: Buffer[] = [];
  for (let i = 0; i < 17; i++) manyX.push(buildTar([{ path: 'g', type: 'reg' }], { globalPax: { comment: String(i) } }).subarray(0, 1024));
  await rejects(Buffer.concat([...manyX, good]), /more than 16 extension headers/);
  await rejects(buildTar([{ path: '', type: 'reg' }]), /empty path/);
  // header-only types must not claim content (tar-core refuses too)
  await rejects(buildTar([{ path: 'd/', type: 'dir', content: Buffer.from('hidden') }]), /dir entry with a non-zero size/);
  await rejects(buildTar([{ path: 'l', type: 'symlink', linkTarget: 't', pax: { size: '5' } }]), /symlink entry with a non-zero size/);
  // oversized extension data is refused before it is read
  const bigPax = buildTar([{ path: 'p', type: 'reg', pax: { comment: 'c' } }]);
  bigPax.write('00010000000\0', 124, 'latin1');
  fixChecksum(bigPax, 0);
  await rejects(bigPax, /larger than/);
  // not bytes
  await assert.rejects(async () => {
    for await (const _ of tarSegments((async function* () { yield 'text' as unknown as Uint8Array; })())) void _;
  }, FormatError);
});

test('paths with .. and absolute paths are reported by the reader', async () => {
  const es = await entriesOf(buildTar([
    { path: '/abs/file', type: 'reg' }, { path: 'a/../../etc/passwd', type: 'reg' }, { path: './ok/..x', type: 'reg' },
  ]));
  assert.deepEqual(es.map((e) => [e.pathIsAbsolute, e.pathHasDotDot]), [[true, false], [false, true], [false, false]]);
});

test('seeded mutations of valid archives: each parses or throws a BootcfsError, quickly', async () => {
  const seed = Number(process.env.BOOTCFS_SEED ?? 20261126);
  const rng = new Rng(seed);
  const corpus: Buffer[] = [
    buildTar([
      { path: longName, type: 'reg', content: rng.bytes(700), uid: 70_000_000, mtimeSec: 5, mtimeNsec: 9, xattrs: { 'user.a': rng.bytes(30) } },
      { path: 'l', type: 'symlink', linkTarget: 'T'.repeat(150) },
      { path: 'h', type: 'hardlink', linkTarget: longName },
      { path: 'd/', type: 'dir' },
      { path: 'c', type: 'chr', devMajor: 1, devMinor: 3 },
    ], { globalPax: { comment: 'g' } }),
    buildTar([
      { path: longName, type: 'reg', content: rng.bytes(100), uid: 2 ** 33 },
      { path: 'k', type: 'hardlink', linkTarget: 'K'.repeat(200) },
    ], { format: 'gnu' }),
    buildTar([{ path: `${'q'.repeat(130)}/w`, type: 'reg', content: rng.bytes(1000) }, { path: 'f', type: 'fifo' }], { format: 'ustar' }),
  ];
  const n = cases(2000, 20000);
  let parsed = 0;
  let rejected = 0;
  const started = Date.now();
  for (let i = 0; i < n; i++) {
    const base = rng.pick(corpus);
    const m = Buffer.from(base);
    const kind = rng.int(0, 5);
    if (kind === 0) {
      for (let k = rng.int(1, 8); k > 0; k--) m[rng.int(0, m.length - 1)] = rng.int(0, 255);
    } else if (kind === 1) {
      // mutate then repair checksums so the header parser itself is exercised
      for (let k = rng.int(1, 4); k > 0; k--) m[rng.int(0, m.length - 1)] = rng.pick([0, 0x20, 0x30, 0x37, 0x39, 0x80, 0xff, 0x0a, 0x3d, rng.int(0, 255)]);
      for (let off = 0; off + 512 <= m.length; off += 512) if (m.subarray(off + 257, off + 262).toString('latin1') === 'ustar') fixChecksum(m, off);
    } else if (kind === 2) {
      const cut = rng.int(0, m.length);
      m.fill(0, cut);
    } else if (kind === 3) {
      const sub = m.subarray(0, rng.int(0, m.length));
      await check(sub);
      continue;
    } else if (kind === 4) {
      // numeric field scramble with a valid checksum
      const off = 512 * rng.int(0, Math.floor(m.length / 512) - 1);
      const field = rng.pick([[100, 8], [108, 8], [116, 8], [124, 12], [136, 12], [329, 8], [337, 8]] as const);
      for (let k = 0; k < field[1]; k++) m[off + field[0] + k] = rng.pick([0x30, 0x37, 0x20, 0, 0xff, 0x80, 0x38]);
      fixChecksum(m, off);
    } else {
      // PAX record length scramble
      const at = m.indexOf(Buffer.from(' comment='));
      if (at > 0) m[at - 1] = rng.pick([0x30, 0x31, 0x39, 0x20, 0x0a]);
      else m[rng.int(0, m.length - 1)] ^= 0xff;
      for (let off = 0; off + 512 <= m.length; off += 512) if (m.subarray(off + 257, off + 262).toString('latin1') === 'ustar') fixChecksum(m, off);
    }
    await check(m);
  }
  async function check(buf: Buffer): Promise<void> {
    const t0 = Date.now();
    try {
      const segs = await segmentsOf(buf, rng.int(1, 2048));
      assert.ok(Buffer.concat(segs.map((s) => s.bytes)).equals(buf), `seed ${seed}: segments differ from input`);
      parsed++;
    } catch (e) {
      if (!(e instanceof BootcfsError)) throw new Error(`seed ${seed}: non-typed error ${String(e)}`, { cause: e });
      rejected++;
    }
    assert.ok(Date.now() - t0 < 2000, `seed ${seed}: a case took too long`);
  }
  assert.ok(parsed > 0 && rejected > 0, `seed ${seed}: parsed ${parsed}, rejected ${rejected}`);
  console.log(`# tar mutations: ${n} cases (seed ${seed}): ${parsed} parsed, ${rejected} rejected, ${Date.now() - started} ms`);
});

// ---------------------------------------------------------------------------------------------
// Layer builder and transform

async function* one(b: Buffer): AsyncGenerator<Uint8Array> { yield b; }

const T0 = 1600000000;
const dir = (path: string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path, type: 'dir', mode: 0o755, mtimeSec: T0, ...extra });
const file = (path: string, content: string | Buffer, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({
  path, type: 'reg', mode: 0o644, mtimeSec: T0, content: typeof content === 'string' ? Buffer.from(content) : content, ...extra,
});

test('layers: whiteouts, opaque dirs, dir-over-dir, replacements, hardlinks across layers, inline/external', async () => {
  const bigA = Buffer.alloc(100, 'a');
  const l1 = buildTar([
    dir('./'), dir('usr', { mtimeSec: 1234, mtimeNsec: 5678, uid: 3, xattrs: { 'user.u': Buffer.from([0]) } }),
    dir('etc'), file('etc/keep', 'k'), file('etc/gone', 'g'), dir('opq'), file('opq/old', 'o'),
    dir('sub', { mode: 0o700 }), file('sub/child', 'c'), file('usr/big', bigA), file('becomes-dir', 'x'),
    dir('was-dir'), file('was-dir/inner', 'i'), { path: 'dev', type: 'dir', mode: 0o755 },
    { path: 'dev/null', type: 'chr', devMajor: 1, devMinor: 3, mode: 0o666 },
    { path: 'dev/big', type: 'blk', devMajor: 259, devMinor: 300000 }, { path: 'fifo', type: 'fifo' },
    dir('run'), file('run/pid', '1'),
  ]);
  const l2 = buildTar([
    file('etc/.wh.gone', ''), file('opq/early-same-layer', 'e'), file('opq/.wh..wh..opq', ''), file('opq/new', 'n'),
    dir('sub', { mode: 0o750, uid: 9 }),
    { path: 'usr/link-to-big', type: 'hardlink', linkTarget: 'usr/big' },
    { path: 'etc/hl', type: 'hardlink', linkTarget: '/etc/keep' },
    dir('becomes-dir'), file('was-dir', 'now a file'), { path: 'sym', type: 'symlink', linkTarget: '../x', mode: 0o777 },
  ]);
  const l3 = buildTar([file('etc/keep', 'replaced'), file('usr/.wh.big', '')]);
  const fs = await buildTreeFromLayers([one(l1), one(l2), one(l3)], { external: digestOnly('sha256') });
  const get = (p: string): Inode | undefined => lookup(fs.root, p);

  assert.equal(get('/etc/gone'), undefined);
  assert.equal(get('/etc/.wh.gone'), undefined);
  // the opaque marker clears the merged directory, including what this layer put there before it
  assert.deepEqual([...get('/opq')!.entries!.keys()], ['new']);
  const sub = get('/sub')!;
  assert.equal(sub.mode, S_IFDIR | 0o750);
  assert.equal(sub.uid, 9);
  assert.ok(get('/sub/child'), 'dir over dir keeps children');
  assert.ok(get('/becomes-dir')!.isDir);
  assert.ok(get('/was-dir')!.isReg);
  assert.equal(get('/was-dir')!.content!.toString(), 'now a file');
  // hardlink in layer 2 to a file of layer 1, then the original name whited out in layer 3
  const link = get('/usr/link-to-big')!;
  assert.equal(get('/usr/big'), undefined);
  assert.equal(link.size, 100);
  assert.ok(link.digest!.equals(fsverityDigest(bigA, 'sha256')));
  assert.equal(link.payload, `${link.digest!.toString('hex').slice(0, 2)}/${link.digest!.toString('hex').slice(2)}`);
  assert.equal(link.nlink, 1);
  // the hardlink shares the inode that was later replaced by name: /etc/keep is a new inode
  assert.equal(get('/etc/hl')!.content!.toString(), 'k');
  assert.equal(get('/etc/keep')!.content!.toString(), 'replaced');
  assert.notEqual(get('/etc/hl'), get('/etc/keep'));
  assert.equal(get('/dev/null')!.rdev, makedev(1, 3));
  assert.equal(get('/dev/null')!.rdev, 0x103);
  assert.equal(get('/dev/big')!.rdev, makedev(259, 300000));
  assert.equal(get('/sym')!.target, '../x');
  assert.equal(get('/sym')!.size, 4);
  assert.equal(get('/fifo')!.type, 'fifo');

  transformForOci(fs);
  assert.equal(fs.root.mode, S_IFDIR | 0o755);
  assert.equal(fs.root.uid, 3);
  assert.deepEqual([fs.root.mtimeSec, fs.root.mtimeNsec], [1234, 5678]);
  assert.deepEqual([...fs.root.xattrs.get('user.u')!], [0]);
  assert.equal(get('/run')!.entries!.size, 0);
  assert.deepEqual([get('/run')!.mtimeSec, get('/run')!.mtimeNsec], [1234, 5678]);
});

test('layers: hardlink groups get nlink = names; external handler receives exact content', async () => {
  const content = new Rng(11).bytes(200_000);
  const seen: Buffer[] = [];
  const tar = buildTar([dir('d'), file('d/a', content), { path: 'd/b', type: 'hardlink', linkTarget: 'd/a' }, { path: 'd/c', type: 'hardlink', linkTarget: './d/b' }]);
  const b = new LayerTreeBuilder();
  const stats = await b.applyLayer(chunked(tar, 9999), {
    external: async (c) => {
      const buf = await readContent(c);
      seen.push(buf);
      return fsverityDigest(buf, 'sha512');
    },
  });
  const fs = b.finish();
  assert.equal(seen.length, 1);
  assert.ok(seen[0]!.equals(content));
  assert.deepEqual([stats.externalFiles, stats.hardlinks, stats.entries], [1, 2, 4]);
  const a = lookup(fs.root, '/d/a')!;
  assert.equal(a, lookup(fs.root, '/d/c'));
  assert.equal(a.nlink, 3);
  assert.equal(a.mode & S_IFMT, S_IFREG);
});

test('layers: hostile and invalid layers are rejected with typed errors', async () => {
  const bad: Array<[TarWriteEntry[], RegExp]> = [
    [[dir('a'), file('a/../../etc/passwd', 'x')], /'\.\.'/],
    [[file('../escape', 'x')], /'\.\.'/],
    [[dir('a'), { path: 'a/h', type: 'hardlink', linkTarget: '../../etc/shadow' }], /'\.\.'/],
    [[file('missing/child', 'x')], /parent directory 'missing' does not exist/],
    [[file('f', 'x'), file('f/child', 'y')], /'f' is not a directory/],
    [[{ path: 'h', type: 'hardlink', linkTarget: 'nowhere' }], /does not exist/],
    [[dir('d'), { path: 'h', type: 'hardlink', linkTarget: 'd' }], /is a directory/],
    [[{ path: 'h', type: 'hardlink', linkTarget: '/' }], /root/],
    [[file('./', 'x')], /root must be a directory/],
    [[{ path: 's', type: 'symlink', linkTarget: '' }], /empty target/],
    [[file('.wh.x/child', 'x')], /does not exist/],
    [[dir('a'), file('a/big', Buffer.alloc(5000)), file('../b', Buffer.alloc(5000))], /'\.\.'/],
  ];
  for (const [entries, re] of bad) {
    await assert.rejects(buildTreeFromLayers([one(buildTar(entries))], { external: digestOnly() }), (e: unknown) => {
      assert.ok(e instanceof FormatError, String(e));
      assert.match((e as Error).message, re);
      return true;
    });
  }
  // unknown entry types
  const odd = buildTar([file('v', 'x')]);
  odd[156] = 0x56; // 'V' volume label
  fixChecksum(odd, 0);
  await assert.rejects(buildTreeFromLayers([one(odd)], { external: digestOnly() }), /unsupported tar entry type 'V'/);
  // leading '/' and './' normalise to the same names
  const fs = await buildTreeFromLayers([one(buildTar([dir('/usr'), file('./usr/a', '1'), file('usr//b', '2'), dir('usr/./c/')]))], { external: digestOnly() });
  assert.deepEqual([...lookup(fs.root, '/usr')!.entries!.keys()].sort(), ['a', 'b', 'c']);
  // the transform needs /usr
  assert.throws(() => transformForOci({ root: new LayerTreeBuilder().fs.root }), OciTransformError);
  const noRunDir = await buildTreeFromLayers([one(buildTar([dir('usr'), file('run', 'x')]))], { external: digestOnly() });
  assert.throws(() => transformForOci(noRunDir), /\/run is not a directory/);
});
