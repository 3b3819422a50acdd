/**
 * Splitstream writer (composefs-rs format, current header layout; see format.ts).
 *
 *   const w = new SplitStreamWriter(repo, { algorithm: 'sha512', contentType: 'ocilayer' });
 *   w.writeInline(tarHeader);               // coalesced with neighbouring inline writes
 *   await w.writeExternalData(fileContent); // stores the object (repo.ensureObject) and references it
 *   w.writeExternal(digest, size);          // reference an object already stored
 *   w.addNamedRef('config', streamDigest);  // GC edge to another splitstream
 *   const { bytes } = await w.finish();     // the splitstream file; repo.writeStream(name, w) stores it
 *
 * Chunks are compressed as they are written (one zstd frame, libzstd level 3, no checksum, no content
 * size — the parameters composefs-rs uses), so memory holds the compressed stream plus at most one
 * coalesced inline chunk. `writeExternalData` computes the digest synchronously and records the reference
 * at once, so callers may start several stores without awaiting each; `finish()` waits for all of them
 * and fails if any failed.
 */
import { BootcfsError } from '../errors.js';
import { DIGEST_SIZE, HASH_ALGORITHM_ID, fsverityDigest, type HashAlgorithm } from '../fsverity/index.js';
import { ZstdCompressStream, zstdCompress } from '../util/zstd.js';
import { HEADER_SIZE, INFO_SIZE, SPLITSTREAM_LG_BLOCKSIZE, SPLITSTREAM_MAGIC, SPLITSTREAM_VERSION, toContentType } from './format.js';

/** Where `writeExternalData` stores objects: a Repository or anything with the same method. */
export interface ObjectSink {
  ensureObject(data: Uint8Array): Promise<Buffer>;
  /** Optional: store bytes whose digest the writer has already computed (saves hashing them twice). */
  ensureObjectWithDigest?(data: Uint8Array, digest: Buffer): Promise<Buffer>;
}

export interface SplitStreamWriterOptions {
  algorithm: HashAlgorithm;
  /** u64 tag, or its 8-character ASCII spelling ('ocilayer', 'ociconfg', ...). */
  contentType: bigint | string;
  /** zstd level (default 3, libzstd's default, as composefs-rs). */
  level?: number;
}

export interface FinishedSplitStream {
  /** The splitstream file. */
  bytes: Buffer;
  streamSize: number;
  objectRefs: Buffer[];
  streamRefs: Buffer[];
}

/**
 * Unique digests in order of first use, with their indices. A layer stream refers to tens of thousands of
 * objects, so they are kept packed in one growing buffer (not one Buffer object and one hex key string
 * each, ~300 bytes of heap per object), looked up through a small-integer hash of their first bytes.
 */
class DigestList {
  private data: Buffer;
  private count = 0;
  /** hash → index of the most recent digest with that hash; older ones are chained through `next`. */
  private readonly head = new Map<number, number>();
  private next = new Int32Array(64);

  constructor(private readonly size: number) {
    this.data = Buffer.alloc(64 * size);
  }

  get length(): number {
    return this.count;
  }

  ensure(d: Uint8Array): number {
    const size = this.size;
    const key = ((d[0]! << 22) | (d[1]! << 14) | (d[2]! << 6) | (d[3]! >> 2)) >>> 0;
    for (let i = this.head.get(key) ?? -1; i >= 0; i = this.next[i]!) {
      if (this.data.compare(d, 0, size, i * size, (i + 1) * size) === 0) return i;
    }
    const i = this.count++;
    if (i * size + size > this.data.length) {
      const bigger = Buffer.alloc(this.data.length * 2);
      this.data.copy(bigger);
      this.data = bigger;
      const n = new Int32Array(this.next.length * 2);
      n.set(this.next);
      this.next = n;
    }
    this.data.set(d.subarray(0, size), i * size);
    this.next[i] = this.head.get(key) ?? -1;
    this.head.set(key, i);
    return i;
  }

  /** All digests, concatenated in index order. */
  bytes(): Buffer {
    return this.data.subarray(0, this.count * this.size);
  }

  /** The digests in index order (views of one buffer; do not modify). */
  items(): Buffer[] {
    const packed = Buffer.from(this.bytes());
    const out: Buffer[] = [];
    for (let o = 0; o < packed.length; o += this.size) out.push(packed.subarray(o, o + this.size));
    return out;
  }
}

export class SplitStreamWriter {
  readonly algorithm: HashAlgorithm;
  readonly contentType: bigint;
  private readonly sink: ObjectSink | undefined;
  private readonly zstd: ZstdCompressStream;
  private readonly compressed: Buffer[] = [];
  private inline: Buffer[] = [];
  private inlineLen = 0;
  private total = 0;
  private readonly objects: DigestList;
  private readonly streams: DigestList;
  private readonly named = new Map<string, number>();
  private readonly stores: Promise<unknown>[] = [];
  private finished = false;

  constructor(sink: ObjectSink | undefined, opts: SplitStreamWriterOptions) {
    this.sink = sink;
    this.algorithm = opts.algorithm;
    this.contentType = toContentType(opts.contentType);
    this.objects = new DigestList(DIGEST_SIZE[opts.algorithm] ?? 64);
    this.streams = new DigestList(DIGEST_SIZE[opts.algorithm] ?? 64);
    this.zstd = new ZstdCompressStream(opts.level);
  }

  /** Bytes of the reassembled stream written so far (inline + external). */
  get streamSize(): number {
    return this.total;
  }

  private checkOpen(): void {
    if (this.finished) throw new BootcfsError('EINTERNAL', 'SplitStreamWriter used after finish()');
  }

  private emit(b: Uint8Array): void {
    const out = this.zstd.write(b);
    if (out.length > 0) this.compressed.push(out);
  }

  private flushInline(): void {
    if (this.inlineLen === 0) return;
    const head = Buffer.alloc(8);
    head.writeBigInt64LE(-BigInt(this.inlineLen));
    this.emit(head);
    for (const b of this.inline) this.emit(b);
    this.inline = [];
    this.inlineLen = 0;
  }

  /** Append bytes stored inside the splitstream. */
  writeInline(b: Uint8Array): void {
    this.checkOpen();
    if (b.length === 0) return;
    // Coalesced until the next external reference (or the end), exactly as composefs-rs does, so the
    // decompressed stream is byte-identical to what it writes for the same input.
    this.inline.push(Buffer.from(b));
    this.inlineLen += b.length;
    this.total += b.length;
  }

  /** Append a reference to an object already in the repository (`size` = its length in bytes). */
  writeExternal(digest: Uint8Array, size: number): void {
    this.checkOpen();
    if (digest.length !== DIGEST_SIZE[this.algorithm]) {
      throw new BootcfsError('EINVAL', `object digest is ${digest.length} bytes, ${this.algorithm} digests are ${DIGEST_SIZE[this.algorithm]}`);
    }
    if (!Number.isSafeInteger(size) || size < 0) throw new BootcfsError('EINVAL', `invalid external object size ${size}`);
    this.flushInline();
    const idx = this.objects.ensure(digest);
    const head = Buffer.alloc(8);
    head.writeBigInt64LE(BigInt(idx));
    this.emit(head);
    this.total += size;
  }

  /** Store `data` as an object (through the sink) and reference it. Resolves to its digest. */
  writeExternalData(data: Uint8Array): Promise<Buffer> {
    this.checkOpen();
    if (!this.sink) throw new BootcfsError('EINVAL', 'SplitStreamWriter has no object store for writeExternalData');
    const digest = fsverityDigest(data, this.algorithm);
    this.writeExternal(digest, data.length);
    const store = this.sink.ensureObjectWithDigest ? this.sink.ensureObjectWithDigest(data, digest) : this.sink.ensureObject(data);
    const p = store.then((stored) => {
      if (!stored.equals(digest)) throw new BootcfsError('EINTERNAL', `object store returned digest ${stored.toString('hex')}, expected ${digest.toString('hex')}`);
      return digest;
    });
    this.stores.push(p);
    p.catch(() => undefined); // reported by finish(); avoid an unhandled rejection meanwhile
    return p;
  }

  /** Name a reference to another splitstream (by its digest); a later call with the same name replaces it. */
  addNamedRef(name: string, streamDigest: Uint8Array): void {
    this.checkOpen();
    if (name.includes('\0')) throw new BootcfsError('EINVAL', 'splitstream ref names cannot contain NUL');
    if (streamDigest.length !== DIGEST_SIZE[this.algorithm]) {
      throw new BootcfsError('EINVAL', `stream digest is ${streamDigest.length} bytes, ${this.algorithm} digests are ${DIGEST_SIZE[this.algorithm]}`);
    }
    this.named.set(name, this.streams.ensure(streamDigest));
  }

  /** Finish: waits for pending object stores and returns the splitstream file bytes. */
  async finish(): Promise<FinishedSplitStream> {
    this.checkOpen();
    this.flushInline();
    this.finished = true;
    const endOfFrame = this.zstd.end();
    await Promise.all(this.stores);
    const stream = Buffer.concat([...this.compressed, endOfFrame]);
    // Named refs sorted by the UTF-8 bytes of the name (Rust BTreeMap<Box<str>> order).
    const names = [...this.named.keys()].sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
    const namedRefs = zstdCompress(Buffer.from(names.map((n) => `${this.named.get(n)}:${n}\0`).join(''), 'utf8'));
    const streamRefs = this.streams.bytes();
    const objectRefs = this.objects.bytes();

    const infoStart = HEADER_SIZE;
    const streamRefsStart = infoStart + INFO_SIZE;
    const objectRefsStart = streamRefsStart + streamRefs.length;
    const namedRefsStart = objectRefsStart + objectRefs.length;
    const streamStart = namedRefsStart + namedRefs.length;
    const end = streamStart + stream.length;

    const head = Buffer.alloc(HEADER_SIZE + INFO_SIZE);
    SPLITSTREAM_MAGIC.copy(head, 0);
    head[11] = SPLITSTREAM_VERSION;
    head.writeUInt16LE(0, 12);
    head[14] = HASH_ALGORITHM_ID[this.algorithm];
    head[15] = SPLITSTREAM_LG_BLOCKSIZE;
    const u64 = (v: number, off: number) => head.writeBigUInt64LE(BigInt(v), off);
    u64(infoStart, 16);
    u64(streamRefsStart, 24);
    u64(streamRefsStart, infoStart + 0);
    u64(objectRefsStart, infoStart + 8);
    u64(objectRefsStart, infoStart + 16);
    u64(namedRefsStart, infoStart + 24);
    u64(streamStart, infoStart + 32);
    u64(end, infoStart + 40);
    u64(namedRefsStart, infoStart + 48);
    u64(streamStart, infoStart + 56);
    head.writeBigUInt64LE(this.contentType, infoStart + 64);
    u64(this.total, infoStart + 72);
    return {
      bytes: Buffer.concat([head, streamRefs, objectRefs, namedRefs, stream]),
      streamSize: this.total,
      objectRefs: this.objects.items(),
      streamRefs: this.streams.items(),
    };
  }
}
