import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  SplitStreamWriter, readSplitStream, readSplitStreamFile, catSplitStream, contentTypeFromString, contentTypeToString, CONTENT_TYPE,
  type SplitStreamChunk,
} from '../../src/splitstream/index.js';
import { zstdCompress, zstdDecompress, zstdDecompressStream, ZstdCompressStream } from '../../src/util/zstd.js';
import { fsverityDigest, DIGEST_SIZE, type HashAlgorithm } from '../../src/fsverity/index.js';
import { FormatError } from '../../src/errors.js';
import { Rng } from '../helpers/rng.js';
import { cases } from '../helpers/ref.js';

/** In-memory object store standing in for a repository. */
class MemStore {
  readonly objects = new Map<string, Buffer>();
  constructor(readonly alg: HashAlgorithm) {}
  async ensureObject(data: Uint8Array): Promise<Buffer> {
    const d = fsverityDigest(data, this.alg);
    this.objects.set(d.toString('hex'), Buffer.from(data));
    return d;
  }
  async read(d: Buffer): Promise<Buffer> {
    const o = this.objects.get(d.toString('hex'));
    if (!o) throw new Error(`missing object ${d.toString('hex')}`);
    return o;
  }
}

function formatErr(fn: () => unknown, what: string): FormatError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof FormatError, `${what}: expected FormatError, got ${(e as Error)?.stack ?? String(e)}`);
    return e;
  }
  assert.fail(`${what}: no error`);
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

/** Rewrite a current-layout splitstream header into the legacy (bootc ≤ 1.15) layout. */
function toLegacy(buf: Buffer): Buffer {
  const out = Buffer.from(buf);
  const h = Buffer.alloc(32);
  buf.copy(h, 0, 16, 32); // info range
  buf.copy(h, 16, 12, 14); // flags
  buf.copy(h, 18, 0, 11); // magic
  h[29] = buf[11]!;
  h[30] = buf[14]!;
  h[31] = buf[15]!;
  h.copy(out, 0);
  return out;
}

interface Built {
  bytes: Buffer;
  expectedStream: Buffer;
  expectedChunks: SplitStreamChunk[];
  expectedObjects: Buffer[];
  expectedStreamRefs: Buffer[];
  expectedNamed: [string, Buffer][];
  store: MemStore;
  contentType: bigint;
}

async function buildRandom(rng: Rng, alg: HashAlgorithm): Promise<Built> {
  const store = new MemStore(alg);
  const contentType = rng.bool() ? CONTENT_TYPE.ociLayer : BigInt.asUintN(64, BigInt(rng.u32()) * 0x1_0000_0001n);
  const w = new SplitStreamWriter(store, { algorithm: alg, contentType });
  const stream: Buffer[] = [];
  const chunks: SplitStreamChunk[] = [];
  const objects: Buffer[] = [];
  const objIndex = new Map<string, number>();
  const streamRefs: Buffer[] = [];
  const named = new Map<string, Buffer>();
  const reused: Buffer[] = [];
  const ops = rng.int(0, 30);
  for (let i = 0; i < ops; i++) {
    const kind = rng.int(0, 9);
    if (kind < 5) {
      const n = rng.bool(0.05) ? rng.int(20000, 70000) : rng.int(0, 300);
      const b = rng.bytes(n);
      w.writeInline(b);
      stream.push(b);
      if (n === 0) continue;
      const last = chunks[chunks.length - 1];
      if (last && 'inline' in last) chunks[chunks.length - 1] = { inline: Buffer.concat([last.inline, b]) };
      else chunks.push({ inline: b });
    } else if (kind < 8) {
      const data = reused.length > 0 && rng.bool(0.3) ? rng.pick(reused) : rng.bytes(rng.bool(0.1) ? rng.int(4096, 20000) : rng.int(0, 200));
      reused.push(data);
      const d = fsverityDigest(data, alg);
      if (rng.bool()) {
        await w.writeExternalData(data);
      } else {
        await store.ensureObject(data);
        w.writeExternal(d, data.length);
      }
      stream.push(data);
      chunks.push({ object: d });
      if (!objIndex.has(d.toString('hex'))) {
        objIndex.set(d.toString('hex'), objects.length);
        objects.push(d);
      }
    } else {
      const names = ['config', 'sha256:abc', 'ä-unicode', 'z', 'a:b:c', 'Ωmega', '0'];
      const name = rng.bool(0.7) ? rng.pick(names) : `n${rng.int(0, 5)}`;
      const d = streamRefs.length > 0 && rng.bool(0.3) ? rng.pick(streamRefs) : rng.bytes(DIGEST_SIZE[alg]);
      w.addNamedRef(name, d);
      if (!streamRefs.some((x) => x.equals(d))) streamRefs.push(d);
      named.set(name, d);
    }
  }
  const { bytes } = await w.finish();
  const expectedNamed = [...named.entries()].sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])));
  return { bytes, expectedStream: Buffer.concat(stream), expectedChunks: chunks, expectedObjects: objects, expectedStreamRefs: streamRefs, expectedNamed, store, contentType };
}

test('splitstream: random inline/external sequences round-trip (seeded)', async () => {
  const n = cases(40, 400);
  for (let i = 0; i < n; i++) {
    const seed = 0x5151 + i;
    const rng = new Rng(seed);
    const alg: HashAlgorithm = rng.bool() ? 'sha256' : 'sha512';
    const b = await buildRandom(rng, alg);
    const msg = `seed ${seed} (${alg})`;
    for (const bytes of [b.bytes, toLegacy(b.bytes)]) {
      const ss = readSplitStream(bytes, alg, { expectedContentType: b.contentType });
      assert.equal(ss.contentType, b.contentType, msg);
      assert.equal(ss.streamSize, b.expectedStream.length, msg);
      assert.deepEqual(ss.objectRefs, b.expectedObjects, msg);
      assert.deepEqual(ss.streamRefs, b.expectedStreamRefs, msg);
      assert.deepEqual([...ss.namedRefs.entries()], b.expectedNamed, msg);
      assert.deepEqual([...ss.chunks()], b.expectedChunks, msg);
      assert.ok((await collect(catSplitStream(ss, (d) => b.store.read(d)))).equals(b.expectedStream), msg);
    }
    assert.equal(readSplitStream(toLegacy(b.bytes), alg).header.layout, 'legacy', msg);
    assert.equal(readSplitStream(b.bytes, alg).header.layout, 'current', msg);
  }
});

test('splitstream: exact layout of a small stream (header, info, sections)', async () => {
  const store = new MemStore('sha256');
  const w = new SplitStreamWriter(store, { algorithm: 'sha256', contentType: 'ociconfg' });
  w.writeInline(Buffer.from('ab'));
  w.writeInline(Buffer.from('cd'));
  const obj = Buffer.from('external object');
  const d = await w.writeExternalData(obj);
  w.writeExternal(d, obj.length);
  w.addNamedRef('zeta', Buffer.alloc(32, 0xbb));
  w.addNamedRef('alpha', Buffer.alloc(32, 0xaa));
  w.addNamedRef('beta', Buffer.alloc(32, 0xbb));
  const { bytes } = await w.finish();
  assert.equal(bytes.subarray(0, 11).toString(), 'SplitStream');
  assert.deepEqual([...bytes.subarray(11, 16)], [0, 0, 0, 1, 12]);
  assert.equal(bytes.readBigUInt64LE(16), 32n);
  assert.equal(bytes.readBigUInt64LE(24), 112n);
  // stream_refs: 0xbb (first added), then 0xaa; object_refs: one digest
  assert.equal(bytes.readBigUInt64LE(32), 112n);
  assert.equal(bytes.readBigUInt64LE(40), 176n);
  assert.equal(bytes.readBigUInt64LE(48), 176n);
  assert.equal(bytes.readBigUInt64LE(56), 208n);
  assert.ok(bytes.subarray(112, 144).equals(Buffer.alloc(32, 0xbb)));
  assert.ok(bytes.subarray(144, 176).equals(Buffer.alloc(32, 0xaa)));
  assert.ok(bytes.subarray(176, 208).equals(d));
  const namedStart = Number(bytes.readBigUInt64LE(80));
  const namedEnd = Number(bytes.readBigUInt64LE(88));
  assert.equal(namedStart, 208);
  assert.equal(zstdDecompress(bytes.subarray(namedStart, namedEnd)).toString(), '1:alpha\x000:beta\x000:zeta\x00');
  const streamStart = Number(bytes.readBigUInt64LE(64));
  assert.equal(streamStart, namedEnd);
  assert.equal(Number(bytes.readBigUInt64LE(72)), bytes.length);
  assert.equal(bytes.subarray(96, 104).toString('latin1'), 'ociconfg');
  assert.equal(bytes.readBigUInt64LE(104), BigInt(4 + 2 * obj.length));
  const raw = zstdDecompress(bytes.subarray(streamStart));
  const expect = Buffer.alloc(8 + 4 + 16);
  expect.writeBigInt64LE(-4n, 0);
  expect.write('abcd', 8, 'latin1');
  expect.writeBigInt64LE(0n, 12);
  expect.writeBigInt64LE(0n, 20);
  assert.ok(raw.equals(expect), raw.toString('hex'));
});

test('splitstream: empty stream', async () => {
  for (const alg of ['sha256', 'sha512'] as const) {
    const w = new SplitStreamWriter(undefined, { algorithm: alg, contentType: 0n });
    const { bytes } = await w.finish();
    const ss = readSplitStream(bytes, alg);
    assert.equal(ss.streamSize, 0);
    assert.deepEqual([...ss.chunks()], []);
    assert.equal(ss.namedRefs.size, 0);
    // Both compressed sections are real (empty-content) zstd frames, as composefs-rs writes them.
    assert.ok(ss.ranges.namedRefs.end > ss.ranges.namedRefs.start);
    assert.ok(ss.ranges.stream.end > ss.ranges.stream.start);
    assert.equal(bytes.length, ss.ranges.stream.end);
  }
});

test('splitstream: writer rejects misuse', async () => {
  const w = new SplitStreamWriter(undefined, { algorithm: 'sha256', contentType: 'ocilayer' });
  assert.throws(() => w.writeExternal(Buffer.alloc(64), 1), /digest is 64 bytes/);
  assert.throws(() => w.addNamedRef('x', Buffer.alloc(31)), /digest is 31 bytes/);
  assert.throws(() => w.writeExternalData(Buffer.from('x')), /no object store/);
  assert.throws(() => new SplitStreamWriter(undefined, { algorithm: 'sha256', contentType: 'short' }), /8 single-byte/);
  await w.finish();
  assert.throws(() => w.writeInline(Buffer.from('x')), /after finish/);
});

test('splitstream: content type tags', () => {
  assert.equal(contentTypeFromString('ocilayer'), Buffer.from('ocilayer').readBigUInt64LE(0));
  assert.equal(contentTypeToString(CONTENT_TYPE.ociManifest), 'ocimanif');
  assert.equal(contentTypeToString(CONTENT_TYPE.ociBlob), 'oci_blob');
  assert.equal(contentTypeToString(1n), undefined);
});

// ------------------------------------------------------------------------------ hostile input

/** A valid stream with inline and external chunks and named refs, plus its section offsets. */
async function sample(): Promise<Buffer> {
  const w = new SplitStreamWriter(new MemStore('sha256'), { algorithm: 'sha256', contentType: 'ocilayer' });
  w.writeInline(Buffer.from('header'));
  await w.writeExternalData(Buffer.alloc(100, 1));
  w.writeInline(Buffer.from('trailer'));
  w.addNamedRef('config', Buffer.alloc(32, 9));
  return (await w.finish()).bytes;
}

/** Replace the named-refs and stream sections of `base` with the given compressed bytes. */
function withSections(base: Buffer, named: Buffer, stream: Buffer, objectRefs?: Buffer): Buffer {
  const head = Buffer.from(base.subarray(0, 112));
  const sr = base.subarray(Number(base.readBigUInt64LE(32)), Number(base.readBigUInt64LE(40)));
  const or = objectRefs ?? base.subarray(Number(base.readBigUInt64LE(48)), Number(base.readBigUInt64LE(56)));
  let off = 112;
  const put = (at: number, len: number) => {
    head.writeBigUInt64LE(BigInt(off), at);
    off += len;
    head.writeBigUInt64LE(BigInt(off), at + 8);
  };
  put(32, sr.length);
  put(48, or.length);
  put(80, named.length);
  put(64, stream.length);
  return Buffer.concat([head, sr, or, named, stream]);
}

function chunkBytes(...items: (bigint | Buffer)[]): Buffer {
  return Buffer.concat(
    items.map((x) => {
      if (Buffer.isBuffer(x)) return x;
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(x);
      return b;
    }),
  );
}

test('splitstream: hostile files are rejected with FormatError', async () => {
  const good = await sample();
  readSplitStream(good, 'sha256');
  const noNames = zstdCompress(Buffer.alloc(0));
  // Truncation at every length.
  for (let len = 0; len < good.length; len++) formatErr(() => readSplitStream(good.subarray(0, len), 'sha256'), `truncated to ${len}`);
  const mutate = (fn: (b: Buffer) => void) => {
    const b = Buffer.from(good);
    fn(b);
    return b;
  };
  const cases: [string, Buffer, RegExp][] = [
    ['bad magic', mutate((b) => (b[0] = 0x73)), /bad magic/],
    ['version 1', mutate((b) => (b[11] = 1)), /version 1/],
    ['algorithm', mutate((b) => (b[14] = 2)), /algorithm id 2/],
    ['block size', mutate((b) => (b[15] = 16)), /block size/],
    ['info end < start', mutate((b) => b.writeBigUInt64LE(8n, 24)), /before it starts/],
    ['info too small', mutate((b) => b.writeBigUInt64LE(100n, 24)), /at least 80/],
    ['info past end', mutate((b) => b.writeBigUInt64LE(1n << 40n, 24)), /exceeds the file size/],
    ['huge u64', mutate((b) => b.writeBigUInt64LE(1n << 63n, 16)), /implausibly large/],
    ['ref array not digest multiple', mutate((b) => b.writeBigUInt64LE(b.readBigUInt64LE(40) - 1n, 40)), /not a multiple/],
    ['stream range past end', mutate((b) => b.writeBigUInt64LE(BigInt(good.length + 1), 72)), /exceeds/],
    ['content type', good, /content type/],
    ['inline bytes exceed stream size', mutate((b) => b.writeBigUInt64LE(3n, 104)), /stream size/],
    ['garbage zstd', withSections(good, noNames, Buffer.from('definitely not zstd data')), /zstd/],
    ['truncated zstd frame', withSections(good, noNames, zstdCompress(chunkBytes(-5n, Buffer.from('hello'))).subarray(0, 10)), /zstd/],
    ['named ref index out of bounds', withSections(good, zstdCompress(Buffer.from('7:x\0')), zstdCompress(Buffer.alloc(0))), /stream ref 7/],
    ['named ref without colon', withSections(good, zstdCompress(Buffer.from('config\0')), zstdCompress(Buffer.alloc(0))), /not "<index>:<name>"/],
    ['named ref non-numeric', withSections(good, zstdCompress(Buffer.from('-1:x\0')), zstdCompress(Buffer.alloc(0))), /not "<index>:<name>"/],
    ['named ref unterminated', withSections(good, zstdCompress(Buffer.from('0:x')), zstdCompress(Buffer.alloc(0))), /NUL/],
    ['named ref not UTF-8', withSections(good, zstdCompress(Buffer.from([0x30, 0x3a, 0xff, 0])), zstdCompress(Buffer.alloc(0))), /UTF-8/],
    ['named ref duplicate', withSections(good, zstdCompress(Buffer.from('0:x\x000:x\0')), zstdCompress(Buffer.alloc(0))), /duplicate/],
    ['object index out of range', withSections(good, noNames, zstdCompress(chunkBytes(1n))), /out of range/],
    ['inline overrun', withSections(good, noNames, zstdCompress(chunkBytes(-100n, Buffer.from('short')))), /runs past the end/],
    ['truncated chunk header', withSections(good, noNames, zstdCompress(Buffer.from([1, 2, 3]))), /truncated chunk header/],
    ['i64 min inline', withSections(good, noNames, zstdCompress(chunkBytes(-(1n << 63n)))), /runs past the end/],
  ];
  for (const [what, bytes, re] of cases) {
    const opts = what === 'content type' ? { expectedContentType: 'ociconfg' } : {};
    const e = formatErr(() => readSplitStream(bytes, 'sha256', opts), what);
    assert.match(e.message, re, what);
  }
  // A stream whose recorded size disagrees with its objects fails at reassembly.
  const lying = mutate((b) => b.writeBigUInt64LE(b.readBigUInt64LE(104) + 1n, 104));
  const ss = readSplitStream(lying, 'sha256');
  await assert.rejects(collect(catSplitStream(ss, async () => Buffer.alloc(100, 1))), FormatError);
});

test('splitstream: random corruption never escapes as anything but FormatError (seeded)', async () => {
  const good = await sample();
  const n = cases(300, 3000);
  const rng = new Rng(0xbad5);
  for (let i = 0; i < n; i++) {
    const b = Buffer.from(good);
    const flips = rng.int(1, 4);
    for (let k = 0; k < flips; k++) b[rng.int(0, b.length - 1)] = rng.u32() & 0xff;
    try {
      const ss = readSplitStream(b, 'sha256');
      [...ss.chunks()];
    } catch (e) {
      assert.ok(e instanceof FormatError, `case ${i} (seed 0xbad5): ${(e as Error).stack}`);
    }
  }
});

/** A SplitStreamFileSource over a buffer that serves short reads (at most `piece` bytes) to exercise re-reading. */
function bufferFile(b: Buffer, piece: number) {
  return {
    async read(buffer: Buffer, offset: number, length: number, position: number) {
      const n = Math.max(0, Math.min(length, piece, b.length - position));
      b.copy(buffer, offset, position, position + n);
      return { bytesRead: n };
    },
    async stat() { return { size: b.length }; },
  };
}

/** Chunks with consecutive inline pieces joined (the file reader may split an inline chunk). */
function joinInline(chunks: SplitStreamChunk[]): SplitStreamChunk[] {
  const out: SplitStreamChunk[] = [];
  for (const c of chunks) {
    const last = out[out.length - 1];
    if ('inline' in c && last && 'inline' in last) out[out.length - 1] = { inline: Buffer.concat([last.inline, c.inline]) };
    else out.push('inline' in c ? { inline: Buffer.from(c.inline) } : c);
  }
  return out.filter((c) => !('inline' in c) || c.inline.length > 0);
}

async function fileChunks(b: Buffer, alg: HashAlgorithm, piece: number): Promise<SplitStreamChunk[]> {
  const r = await readSplitStreamFile(bufferFile(b, piece), alg);
  const out: SplitStreamChunk[] = [];
  for await (const c of r.chunks()) out.push('inline' in c ? { inline: Buffer.from(c.inline) } : c);
  return out;
}

test('splitstream: the incremental file reader yields what the buffer reader does, and fails where it fails (seeded)', async () => {
  const n = cases(30, 300);
  let corruptBoth = 0;
  for (let i = 0; i < n; i++) {
    const seed = 0xf11e + i;
    const rng = new Rng(seed);
    const alg: HashAlgorithm = rng.bool() ? 'sha256' : 'sha512';
    const b = await buildRandom(rng, alg);
    const msg = `seed ${seed} (${alg})`;
    for (const bytes of [b.bytes, toLegacy(b.bytes)]) {
      const whole = readSplitStream(bytes, alg);
      const r = await readSplitStreamFile(bufferFile(bytes, rng.int(1, 5000)), alg);
      assert.equal(r.contentType, whole.contentType, msg);
      assert.deepEqual(r.objectRefs, whole.objectRefs, msg);
      assert.deepEqual([...r.namedRefs.entries()], [...whole.namedRefs.entries()], msg);
      assert.deepEqual(joinInline(await fileChunks(bytes, alg, rng.int(1, 70000))), joinInline([...whole.chunks()]), msg);
    }
    // a corrupted copy: both readers reject it with FormatError, or both read the same chunks
    const bad = Buffer.from(b.bytes);
    for (let k = rng.int(1, 3); k > 0; k--) bad[rng.int(0, bad.length - 1)] ^= 1 + rng.int(0, 254);
    let wholeChunks: SplitStreamChunk[] | Error;
    let fileResult: SplitStreamChunk[] | Error;
    try { wholeChunks = joinInline([...readSplitStream(bad, alg).chunks()]); } catch (e) { wholeChunks = e as Error; }
    try { fileResult = joinInline(await fileChunks(bad, alg, 4096)); } catch (e) { fileResult = e as Error; }
    if (wholeChunks instanceof Error || fileResult instanceof Error) {
      assert.ok(wholeChunks instanceof FormatError && fileResult instanceof FormatError, `${msg}: corrupt stream: buffer reader ${String(wholeChunks instanceof Error ? wholeChunks.message : 'ok')}, file reader ${String(fileResult instanceof Error ? fileResult.message : 'ok')}`);
      corruptBoth++;
    } else {
      assert.deepEqual(fileResult, wholeChunks, msg);
    }
  }
  assert.ok(corruptBoth > 0, 'some corruptions were detected');
});

// -------------------------------------------------------------------------------------------- zstd

test('zstd: multi-frame input and skippable frames (built with the zstd CLI and by hand)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'bootcfs-zstd-'));
  try {
    const rng = new Rng(77);
    const a = Buffer.concat([rng.bytes(3000), Buffer.alloc(50000, 0x41)]);
    const b = rng.bytes(70000);
    writeFileSync(path.join(dir, 'a'), a);
    writeFileSync(path.join(dir, 'b'), b);
    // zstd CLI: with checksum and content size (its defaults), and without either
    const fa = spawnSync('zstd', ['-q', '-c', path.join(dir, 'a')]);
    const fb = spawnSync('zstd', ['-q', '-c', '--no-check', '--no-content-size', '-19', path.join(dir, 'b')]);
    assert.equal(fa.status, 0, String(fa.stderr));
    assert.equal(fb.status, 0, String(fb.stderr));
    const skippable = (magicLow: number, payload: Buffer) => {
      const h = Buffer.alloc(8);
      h.writeUInt32LE(0x184d2a50 + magicLow, 0);
      h.writeUInt32LE(payload.length, 4);
      return Buffer.concat([h, payload]);
    };
    // zstd:chunked puts its table of contents in a skippable frame after the data frames.
    const input = Buffer.concat([skippable(0, Buffer.from('leading')), fa.stdout, fb.stdout, skippable(15, rng.bytes(1000)), zstdCompress(Buffer.from('tail'))]);
    const expected = Buffer.concat([a, b, Buffer.from('tail')]);
    assert.ok(zstdDecompress(input).equals(expected));
    for (const piece of [1, 7, 4096, 100000]) {
      async function* src() {
        for (let o = 0; o < input.length; o += piece) yield input.subarray(o, o + piece);
      }
      assert.ok((await collect(zstdDecompressStream(src()))).equals(expected), `piece ${piece}`);
    }
    // Our frames decode with the reference CLI.
    const ours = zstdCompress(expected);
    const back = spawnSync('zstd', ['-q', '-d', '-c'], { input: ours, maxBuffer: 1 << 24 });
    assert.equal(back.status, 0, String(back.stderr));
    assert.ok(Buffer.from(back.stdout).equals(expected));
    // Truncated and corrupt input → FormatError (one-shot and streaming).
    formatErr(() => zstdDecompress(ours.subarray(0, ours.length - 3)), 'truncated');
    formatErr(() => zstdDecompress(Buffer.from('not zstd at all')), 'garbage');
    await assert.rejects(collect(zstdDecompressStream((async function* () { yield ours.subarray(0, 20); })())), FormatError);
    assert.throws(() => zstdDecompress(zstdCompress(Buffer.alloc(5000)), { maxOutput: 4000 }), /more than 4000 bytes/);
    assert.equal(zstdDecompress(Buffer.alloc(0)).length, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('zstd: streaming compression equals one-shot compression (no content size, no checksum)', () => {
  const rng = new Rng(5);
  const data = Buffer.concat([rng.bytes(10000), Buffer.alloc(200000, 7), rng.bytes(300)]);
  const s = new ZstdCompressStream();
  const parts: Buffer[] = [];
  for (let o = 0; o < data.length; o += 3333) parts.push(s.write(data.subarray(o, o + 3333)));
  parts.push(s.end());
  const streamed = Buffer.concat(parts);
  assert.ok(streamed.equals(zstdCompress(data)));
  assert.ok(zstdDecompress(streamed).equals(data));
  // Frame header descriptor: no checksum flag (bit 2), no content-size field (bits 6-7 zero, single-segment off).
  const fhd = streamed[4]!;
  assert.equal(fhd & 0x04, 0);
  assert.equal(fhd & 0xe0, 0);
  assert.throws(() => s.end(), /twice/);
});
