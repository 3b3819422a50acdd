/**
 * Splitstream reader (composefs-rs format, current and legacy header layouts; see format.ts).
 *
 * `readSplitStream(buf, algorithm, { expectedContentType? })` parses and validates the whole file up
 * front — header, every range against the file size, ref arrays, named refs (indices in bounds, UTF-8,
 * unique names), and the chunk sequence of the decompressed stream (positive inline lengths inside the
 * data, object indices in bounds) — so that a value it returns never fails later. Every fault is a
 * FormatError whose offset is the file offset of the offending field (for faults inside a zstd section:
 * the section's start; the message then gives the position inside the decompressed data).
 *
 * `readSplitStreamFile(fileHandle, algorithm, opts)` is the same for a stream too large to hold: it reads
 * and validates everything but the chunk sequence at once, then decompresses and checks the chunks while
 * they are iterated (async), so memory stays at about one zstd block whatever the stream's size.
 *
 * `catSplitStream(ss, readObject)` reassembles the original byte stream given a function that reads an
 * object's bytes, checking the total against the recorded stream size.
 */
import { BootcfsError, FormatError } from '../errors.js';
import { DIGEST_SIZE, HASH_ALGORITHM_ID, type HashAlgorithm } from '../fsverity/index.js';
import { zstdDecompress, zstdDecompressStream } from '../util/zstd.js';
import { HEADER_SIZE, INFO_SIZE, SPLITSTREAM_LG_BLOCKSIZE, SPLITSTREAM_MAGIC, SPLITSTREAM_VERSION, toContentType } from './format.js';

export interface SplitStreamHeader {
  /** 'current' (magic at 0) or 'legacy' (bootc ≤ 1.15.x layout, magic at 18). */
  layout: 'current' | 'legacy';
  version: number;
  flags: number;
  algorithm: HashAlgorithm;
  lgBlocksize: number;
  info: { start: number; end: number };
}

export interface FileRange {
  start: number;
  end: number;
}

export type SplitStreamChunk = { inline: Buffer } | { object: Buffer };

export interface SplitStream {
  header: SplitStreamHeader;
  ranges: { streamRefs: FileRange; objectRefs: FileRange; stream: FileRange; namedRefs: FileRange };
  contentType: bigint;
  /** Size of the reassembled stream as recorded by the writer. */
  streamSize: number;
  /** Unique object digests in order of first reference. */
  objectRefs: Buffer[];
  /** Digests of other splitstreams this one refers to (by named refs). */
  streamRefs: Buffer[];
  /** Name → referenced splitstream digest, in file order (sorted by name). */
  namedRefs: Map<string, Buffer>;
  /** Total inline bytes in the stream. */
  inlineSize: number;
  /** Number of external chunks (object references, counting repeats). */
  externalChunks: number;
  chunks(): Iterable<SplitStreamChunk>;
}

export interface ReadSplitStreamOptions {
  /** Reject the stream unless its content type equals this (bigint or 8-character tag). */
  expectedContentType?: bigint | string;
  /** Bound on the decompressed stream section (default 4 GiB). */
  maxDecompressed?: number;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function readU64(buf: Buffer, off: number, what: string): number {
  const v = buf.readBigUInt64LE(off);
  if (v > MAX_SAFE) throw new FormatError(`splitstream ${what} ${v} is implausibly large`, off);
  return Number(v);
}

/** `buf` holds the file from offset 0 (possibly only a prefix of it); `fileSize` is the whole file's size. */
function readRange(buf: Buffer, off: number, what: string, fileSize: number): FileRange {
  const start = readU64(buf, off, `${what} start`);
  const end = readU64(buf, off + 8, `${what} end`);
  if (end < start) throw new FormatError(`splitstream ${what} range ends (${end}) before it starts (${start})`, off);
  if (end > fileSize) throw new FormatError(`splitstream ${what} range ${start}..${end} exceeds the file size ${fileSize}`, off);
  return { start, end };
}

function parseHeader(buf: Buffer, algorithm: HashAlgorithm, fileSize: number): SplitStreamHeader {
  if (fileSize < HEADER_SIZE) throw new FormatError(`splitstream is ${fileSize} bytes, shorter than its ${HEADER_SIZE}-byte header`, fileSize);
  let layout: 'current' | 'legacy';
  let at: { version: number; flags: number; algorithm: number; lg: number; info: number };
  if (buf.subarray(0, 11).equals(SPLITSTREAM_MAGIC)) {
    layout = 'current';
    at = { version: 11, flags: 12, algorithm: 14, lg: 15, info: 16 };
  } else if (buf.subarray(18, 29).equals(SPLITSTREAM_MAGIC)) {
    layout = 'legacy';
    at = { version: 29, flags: 16, algorithm: 30, lg: 31, info: 0 };
  } else {
    throw new FormatError('not a splitstream: bad magic', 0);
  }
  const version = buf[at.version]!;
  if (version !== SPLITSTREAM_VERSION) throw new FormatError(`unsupported splitstream version ${version}`, at.version);
  const algId = buf[at.algorithm]!;
  if (algId !== HASH_ALGORITHM_ID[algorithm]) {
    throw new FormatError(`splitstream uses fs-verity algorithm id ${algId}, the repository uses ${algorithm} (${HASH_ALGORITHM_ID[algorithm]})`, at.algorithm);
  }
  const lg = buf[at.lg]!;
  if (lg !== SPLITSTREAM_LG_BLOCKSIZE) throw new FormatError(`unsupported splitstream fs-verity block size 2^${lg}`, at.lg);
  const info = readRange(buf, at.info, 'info', fileSize);
  if (info.end - info.start < INFO_SIZE) throw new FormatError(`splitstream info section is ${info.end - info.start} bytes, expected at least ${INFO_SIZE}`, at.info);
  return { layout, version, flags: buf.readUInt16LE(at.flags), algorithm, lgBlocksize: lg, info };
}

function digestArray(buf: Buffer, r: FileRange, size: number, what: string): Buffer[] {
  const len = r.end - r.start;
  if (len % size !== 0) throw new FormatError(`splitstream ${what} section is ${len} bytes, not a multiple of the ${size}-byte digest size`, r.start);
  // One copy of the whole section (not one pooled Buffer per digest): the digests stay compact in memory
  // and never pin the file buffer or pool slabs shared with unrelated short-lived data.
  const all = Buffer.from(buf.subarray(r.start, r.end));
  const out: Buffer[] = [];
  for (let o = 0; o < len; o += size) out.push(all.subarray(o, o + size));
  return out;
}

function decompressSection(buf: Buffer, r: FileRange, what: string, max: number): Buffer {
  try {
    return zstdDecompress(buf.subarray(r.start, r.end), { maxOutput: max });
  } catch (e) {
    if (e instanceof FormatError) throw new FormatError(`splitstream ${what} section: ${e.message}`, r.start + e.offset);
    const msg = e instanceof Error ? e.message : String(e);
    throw new FormatError(`splitstream ${what} section: ${msg}`, r.start);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function parseNamedRefs(data: Buffer, streamRefs: Buffer[], sectionStart: number): Map<string, Buffer> {
  const map = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    const nul = data.indexOf(0, pos);
    if (nul < 0) throw new FormatError(`named refs: trailing bytes without a NUL terminator at decompressed byte ${pos}`, sectionStart);
    let rec: string;
    try {
      rec = utf8.decode(data.subarray(pos, nul));
    } catch {
      throw new FormatError(`named refs: record at decompressed byte ${pos} is not UTF-8`, sectionStart);
    }
    const colon = rec.indexOf(':');
    const idxText = colon < 0 ? '' : rec.slice(0, colon);
    if (colon < 0 || !/^[0-9]+$/.test(idxText)) throw new FormatError(`named refs: record '${rec}' is not "<index>:<name>"`, sectionStart);
    const idx = Number(idxText);
    const name = rec.slice(colon + 1);
    const target = streamRefs[idx];
    if (!Number.isSafeInteger(idx) || target === undefined) {
      throw new FormatError(`named refs: '${name}' refers to stream ref ${idxText}, but there are ${streamRefs.length}`, sectionStart);
    }
    if (map.has(name)) throw new FormatError(`named refs: duplicate name '${name}'`, sectionStart);
    map.set(name, target);
    pos = nul + 1;
  }
  return map;
}

interface ChunkIndex {
  /** inline: start offset in the decompressed data (length in `len`); object: -1 - object index */
  at: number;
  len: number;
}

function parseChunks(data: Buffer, objectCount: number, sectionStart: number): { index: ChunkIndex[]; inline: number; external: number } {
  const index: ChunkIndex[] = [];
  let pos = 0;
  let inline = 0;
  let external = 0;
  while (pos < data.length) {
    if (data.length - pos < 8) throw new FormatError(`splitstream stream: truncated chunk header at decompressed byte ${pos}`, sectionStart);
    const v = data.readBigInt64LE(pos);
    if (v < 0n) {
      const n = -v;
      if (n > BigInt(data.length - pos - 8)) {
        throw new FormatError(`splitstream stream: inline chunk of ${n} bytes at decompressed byte ${pos} runs past the end (${data.length})`, sectionStart);
      }
      index.push({ at: pos + 8, len: Number(n) });
      inline += Number(n);
      pos += 8 + Number(n);
    } else {
      if (v >= BigInt(objectCount)) {
        throw new FormatError(`splitstream stream: object reference ${v} at decompressed byte ${pos} is out of range (${objectCount} objects)`, sectionStart);
      }
      index.push({ at: -1 - Number(v), len: 0 });
      external++;
      pos += 8;
    }
  }
  return { index, inline, external };
}

/** Everything of a splitstream but its chunk sequence (the stream section is not touched). */
type SplitStreamMeta = Omit<SplitStream, 'inlineSize' | 'externalChunks' | 'chunks'>;

/** Bytes of the file, from offset 0, that parseMeta reads: everything up to the end of the info section. */
function infoEnd(buf: Buffer, algorithm: HashAlgorithm, fileSize: number): number {
  const header = parseHeader(buf, algorithm, fileSize);
  return header.info.start + INFO_SIZE;
}

/** Bytes of the file, from offset 0, that parseMeta needs beyond the info section (every range but the stream's). */
function metaEnd(buf: Buffer, algorithm: HashAlgorithm, fileSize: number): number {
  const i = parseHeader(buf, algorithm, fileSize).info.start;
  let end = i + INFO_SIZE;
  for (const [off, what] of [[i, 'stream_refs'], [i + 16, 'object_refs'], [i + 48, 'named_refs']] as const) {
    end = Math.max(end, readRange(buf, off, what, fileSize).end);
  }
  return end;
}

/**
 * Header, info section, ref arrays and named refs, validated. `buf` holds the file from offset 0 at least
 * up to metaEnd(); `fileSize` is the size of the whole file.
 */
function parseMeta(buf: Buffer, algorithm: HashAlgorithm, fileSize: number, opts: ReadSplitStreamOptions): SplitStreamMeta {
  const header = parseHeader(buf, algorithm, fileSize);
  const i = header.info.start;
  const ranges = {
    streamRefs: readRange(buf, i, 'stream_refs', fileSize),
    objectRefs: readRange(buf, i + 16, 'object_refs', fileSize),
    stream: readRange(buf, i + 32, 'stream', fileSize),
    namedRefs: readRange(buf, i + 48, 'named_refs', fileSize),
  };
  const contentType = buf.readBigUInt64LE(i + 64);
  if (opts.expectedContentType !== undefined && contentType !== toContentType(opts.expectedContentType)) {
    throw new FormatError(`splitstream content type 0x${contentType.toString(16)} is not the expected 0x${toContentType(opts.expectedContentType).toString(16)}`, i + 64);
  }
  const streamSize = readU64(buf, i + 72, 'stream_size');
  const size = DIGEST_SIZE[algorithm];
  const streamRefs = digestArray(buf, ranges.streamRefs, size, 'stream_refs');
  const objectRefs = digestArray(buf, ranges.objectRefs, size, 'object_refs');
  const namedRefs = parseNamedRefs(decompressSection(buf, ranges.namedRefs, 'named_refs', 1 << 26), streamRefs, ranges.namedRefs.start);
  return { header, ranges, contentType, streamSize, objectRefs, streamRefs, namedRefs };
}

function checkTotals(meta: SplitStreamMeta, inline: number, external: number): void {
  const at = meta.header.info.start + 72;
  if (inline > meta.streamSize) {
    throw new FormatError(`splitstream holds ${inline} inline bytes but records a stream size of only ${meta.streamSize}`, at);
  }
  if (external === 0 && inline !== meta.streamSize) {
    throw new FormatError(`splitstream has no external chunks, ${inline} inline bytes, but records a stream size of ${meta.streamSize}`, at);
  }
}

/** Parse and validate a splitstream file held in memory. */
export function readSplitStream(buf: Buffer, algorithm: HashAlgorithm, opts: ReadSplitStreamOptions = {}): SplitStream {
  const meta = parseMeta(buf, algorithm, buf.length, opts);
  const { ranges, objectRefs } = meta;
  const data = decompressSection(buf, ranges.stream, 'stream', opts.maxDecompressed ?? 4 * 1024 ** 3);
  const { index, inline, external } = parseChunks(data, objectRefs.length, ranges.stream.start);
  checkTotals(meta, inline, external);
  return {
    ...meta,
    inlineSize: inline,
    externalChunks: external,
    *chunks(): Iterable<SplitStreamChunk> {
      for (const c of index) {
        if (c.at >= 0) yield { inline: data.subarray(c.at, c.at + c.len) };
        else yield { object: objectRefs[-1 - c.at]! };
      }
    },
  };
}

/** Where readSplitStreamFile reads: a file handle (fs/promises) or anything with the same `read` and `stat`. */
export interface SplitStreamFileSource {
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  stat(): Promise<{ size: number }>;
}

/**
 * A splitstream read from a file piece by piece (readSplitStreamFile): header, ref arrays and named refs
 * as in SplitStream; the chunk sequence is decompressed and checked while `chunks()` is iterated.
 */
export interface SplitStreamReader extends SplitStreamMeta {
  /**
   * The chunks in stream order, read from the file as they are consumed (iterate once). An inline chunk
   * may arrive as several consecutive `inline` pieces (split where the decompressed data is); each piece is
   * a view of a decompressed block — copy what you keep. A fault is a FormatError thrown by the iteration
   * (offset as for readSplitStream), after the chunks before it have been yielded.
   */
  chunks(): AsyncGenerator<SplitStreamChunk, void, undefined>;
}

/** Compressed bytes read from the stream section per file read. */
const READ_PIECE = 256 * 1024;

async function readAt(file: SplitStreamFileSource, start: number, end: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(end - start);
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await file.read(buf, got, buf.length - got, start + got);
    if (bytesRead === 0) throw new FormatError(`splitstream file ended at ${start + got} while reading up to ${end}`, start + got);
    got += bytesRead;
  }
  return buf;
}

/**
 * Parse a splitstream from a file without holding it (or its decompressed stream) in memory: the bytes up
 * to the end of the named refs (normally a few KiB: header, info, ref arrays) are read and validated at
 * once, the stream section only while `chunks()` is iterated, READ_PIECE compressed bytes at a time. Memory:
 * the ref arrays plus about one decompressed zstd block. Same validation as readSplitStream, but faults in
 * the chunk sequence surface during the iteration. The caller keeps `file` open until the iteration ends.
 */
export async function readSplitStreamFile(file: SplitStreamFileSource, algorithm: HashAlgorithm, opts: ReadSplitStreamOptions = {}): Promise<SplitStreamReader> {
  const fileSize = (await file.stat()).size;
  let prefix = await readAt(file, 0, Math.min(fileSize, 4096));
  const grow = async (n: number): Promise<void> => {
    if (n > prefix.length) prefix = await readAt(file, 0, n);
  };
  // Each step reads only fields the previous one showed to be inside the file.
  await grow(Math.min(fileSize, HEADER_SIZE));
  await grow(infoEnd(prefix, algorithm, fileSize));
  await grow(metaEnd(prefix, algorithm, fileSize));
  const meta = parseMeta(prefix, algorithm, fileSize, opts);
  prefix = Buffer.alloc(0);
  const { ranges, objectRefs } = meta;
  const sectionStart = ranges.stream.start;
  const max = opts.maxDecompressed ?? 4 * 1024 ** 3;
  let iterated = false;

  async function* compressed(): AsyncGenerator<Buffer> {
    for (let pos = ranges.stream.start; pos < ranges.stream.end; pos += READ_PIECE) {
      yield await readAt(file, pos, Math.min(ranges.stream.end, pos + READ_PIECE));
    }
  }

  async function* chunks(): AsyncGenerator<SplitStreamChunk, void, undefined> {
    if (iterated) throw new BootcfsError('EINTERNAL', 'SplitStreamReader.chunks() iterated twice');
    iterated = true;
    const blocks = zstdDecompressStream(compressed(), { maxOutput: max })[Symbol.asyncIterator]();
    let cur: Buffer = Buffer.alloc(0);
    /** Decompressed position of cur[0]. */
    let pos = 0;
    let eof = false;
    const next = async (): Promise<boolean> => {
      while (cur.length === 0) {
        if (eof) return false;
        let r: IteratorResult<Buffer>;
        try {
          r = await blocks.next();
        } catch (e) {
          if (e instanceof FormatError) throw new FormatError(`splitstream stream section: ${e.message}`, sectionStart + e.offset);
          throw e;
        }
        if (r.done) eof = true;
        else cur = r.value;
      }
      return true;
    };
    const head = Buffer.alloc(8);
    let inline = 0;
    let external = 0;
    try {
      for (;;) {
        if (!(await next())) break;
        const at = pos;
        // chunk header (i64), possibly split across blocks
        let got = 0;
        while (got < 8) {
          if (!(await next())) throw new FormatError(`splitstream stream: truncated chunk header at decompressed byte ${at}`, sectionStart);
          const take = Math.min(8 - got, cur.length);
          cur.copy(head, got, 0, take);
          cur = cur.subarray(take);
          got += take;
          pos += take;
        }
        const v = head.readBigInt64LE(0);
        if (v < 0n) {
          if (-v > MAX_SAFE) throw new FormatError(`splitstream stream: inline chunk of ${-v} bytes at decompressed byte ${at} runs past the end`, sectionStart);
          const n = Number(-v);
          let left = n;
          while (left > 0) {
            if (!(await next())) {
              throw new FormatError(`splitstream stream: inline chunk of ${n} bytes at decompressed byte ${at} runs past the end (${pos})`, sectionStart);
            }
            const take = Math.min(left, cur.length);
            const piece = cur.subarray(0, take);
            cur = cur.subarray(take);
            left -= take;
            pos += take;
            yield { inline: piece };
          }
          inline += n;
        } else {
          if (v >= BigInt(objectRefs.length)) {
            throw new FormatError(`splitstream stream: object reference ${v} at decompressed byte ${at} is out of range (${objectRefs.length} objects)`, sectionStart);
          }
          external++;
          yield { object: objectRefs[Number(v)]! };
        }
      }
      checkTotals(meta, inline, external);
    } finally {
      await blocks.return?.(undefined);
    }
  }

  return { ...meta, chunks };
}

/**
 * Reassemble the original stream: inline bytes as stored, each external chunk replaced by the object's
 * bytes from `readObject`. Yields pieces in order; throws FormatError if the total differs from the
 * recorded stream size.
 */
export async function* catSplitStream(ss: SplitStream, readObject: (digest: Buffer) => Promise<Buffer>): AsyncGenerator<Buffer> {
  let total = 0;
  for (const c of ss.chunks()) {
    const piece = 'inline' in c ? c.inline : await readObject(c.object);
    total += piece.length;
    if (total > ss.streamSize) break;
    yield piece;
  }
  if (total !== ss.streamSize) {
    throw new FormatError(`splitstream reassembles to ${total > ss.streamSize ? 'more than' : ''} ${total} bytes, but records ${ss.streamSize}`, ss.header.info.start + 72);
  }
}
