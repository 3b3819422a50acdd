/**
 * A streaming, byte-exact tar reader for OCI layers (ustar, GNU and PAX).
 *
 * Two views of the same parser:
 *
 * 1. `tarSegments(src)` — the raw archive as a sequence of segments whose `bytes` concatenate to exactly
 *    the input (this is what a splitstream writer needs):
 *      - `{ kind: 'header', bytes, offset, entry }` — ALL header blocks of one entry: any PAX `x`/`g`
 *        headers and GNU `L`/`K` long-name blocks (with their data and padding) and the entry's own
 *        512-byte header. `entry` is the parsed entry. A group of only global (`g`) headers right before
 *        the end of the archive is emitted with `entry: undefined`.
 *      - `{ kind: 'data', bytes, offset, entry, position }` — a piece of the entry's content (`position`
 *        = offset of this piece inside the content). Content is never buffered whole: pieces are views of
 *        the input chunks, so an entry's data arrives as any number of `data` segments totalling
 *        `entry.size` bytes.
 *      - `{ kind: 'padding', bytes, offset, entry }` — the zero fill after the content up to the next
 *        512-byte boundary (absent when the content is block-aligned).
 *      - `{ kind: 'end', bytes, offset }` — the end-of-archive zero blocks and everything after them
 *        (GNU tar pads to a 10 KiB record), in one or more segments.
 *    Every segment except `data` is small metadata; a splitstream writer stores those inline.
 *
 * 2. `tarEntries(src)` — `{ entry, content }` pairs; `content` is an async iterable of the entry's bytes
 *    which the caller may read or ignore (unread content is skipped before the next entry). `readContent`
 *    collects it into one Buffer (with a size limit).
 *
 * Parsing rules (as GNU tar / Go's archive/tar / tar-core agree; differences noted):
 * - path: PAX `path` > GNU long name (`L`) > global PAX `path` > ustar `prefix/name` (the prefix only for
 *   POSIX ustar magic). Link target: PAX `linkpath` > GNU `K` > global `linkpath` > `linkname`.
 * - numbers: octal (space/NUL padded) or GNU base-256 (first byte 0x80 positive / 0xff negative); PAX
 *   `size`, `uid`, `gid` are decimal, PAX `mtime` is `[-]sec[.fraction]` (nanoseconds kept, digits beyond
 *   9 truncated, negative values floored so that 0 ≤ nsec < 1e9). A PAX record with an empty value
 *   unsets that key (POSIX), except `SCHILY.xattr.*`, where an empty value is an empty xattr.
 * - xattrs: `SCHILY.xattr.NAME=VALUE` records; the name is the raw bytes after the prefix, the value the
 *   raw record bytes (NUL, newline and non-UTF-8 are preserved — records are length-prefixed).
 * - global headers (`g`) apply to all following entries until replaced (POSIX; Python's tarfile applies
 *   them only to the next member, Go returns them as entries). Local `x` records win over them.
 * - types: `0`, `\0`, `7` regular (`\0` with a name ending in `/` is a directory, as Go/Python/GNU do),
 *   `1` hardlink, `2` symlink, `3` chr, `4` blk, `5` dir, `6` fifo; anything else is reported as
 *   `other` (the layer builder rejects it). Sparse files (`S`, or PAX `GNU.sparse.*`) → TarSparseError.
 * - content size: the (PAX) size. Header-only types (hardlink, symlink, chr, blk, dir, fifo) with a
 *   non-zero size are an error, as in tar-core (Go and Python would ignore the size, GNU tar would skip
 *   data for all but directories — refusing avoids any disagreement on where the next header is).
 *   Deliberate difference from tar-core: `\0` with a trailing `/` is a directory (tar-core: a file).
 * - end: two zero blocks (a lone zero block at EOF is accepted, a zero block followed by a non-zero one
 *   is an error, as in tar-core, so no entry can hide behind it); EOF exactly at a header boundary
 *   without end blocks is accepted.
 * - limits: extension data (PAX + long names) ≤ 1 MiB per entry and ≤ 16 extension headers per entry
 *   (tar-core's defaults); sizes must be safe integers.
 * - paths are reported, not judged: `entry.path` is the raw byte string; `pathIsAbsolute` and
 *   `pathHasDotDot` flag what a consumer must treat with care (src/oci/layers.ts normalises and rejects).
 *
 * Errors: every malformed input is a FormatError (or TarSparseError) with the byte offset of the fault.
 */
import { FormatError } from '../errors.js';
import type { ByteString } from '../tree/model.js';

export const TAR_BLOCK = 512;
/** tar-core's default aggregate limit for an entry's extension data (PAX records + long names). */
export const MAX_EXTENSION_BYTES = 1024 * 1024;
/** tar-core's default limit on extension headers before an entry. */
export const MAX_EXTENSION_HEADERS = 16;

export type TarEntryType = 'reg' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'blk' | 'fifo' | 'other';

export interface TarEntry {
  /** Raw path bytes as resolved from PAX / GNU / ustar fields (latin1 byte string). */
  path: ByteString;
  type: TarEntryType;
  /** The raw typeflag byte of the entry header. */
  typeflag: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  /** The mode field's full value (some writers include the S_IF* type bits). */
  headerMode: number;
  uid: number;
  gid: number;
  uname: ByteString;
  gname: ByteString;
  mtimeSec: number;
  /** Nanoseconds (only PAX mtime carries them; 0 otherwise). */
  mtimeNsec: number;
  /** Content bytes that follow the header (0 for header-only types). */
  size: number;
  /** Symlink / hardlink target (raw bytes); '' for other types. */
  linkTarget: ByteString;
  devMajor: number;
  devMinor: number;
  /** `SCHILY.xattr.*` records: name (byte string) → binary value. Insertion order = archive order. */
  xattrs: Map<ByteString, Buffer>;
  /** The effective PAX records of this entry (global, then local), key (byte string) → raw value. */
  pax: Map<ByteString, Buffer>;
  /** Byte offset of the first header block of this entry (including extension headers). */
  headerOffset: number;
  /** Byte offset of the content. */
  dataOffset: number;
  pathIsAbsolute: boolean;
  pathHasDotDot: boolean;
}

export type TarSegment =
  | { kind: 'header'; bytes: Buffer; offset: number; entry: TarEntry | undefined }
  | { kind: 'data'; bytes: Buffer; offset: number; entry: TarEntry; position: number }
  | { kind: 'padding'; bytes: Buffer; offset: number; entry: TarEntry }
  | { kind: 'end'; bytes: Buffer; offset: number };

/** A sparse tar entry (type `S` or PAX `GNU.sparse.*`): not supported, as in composefs-rs. */
export class TarSparseError extends FormatError {
  constructor(offset: number) {
    super('sparse tar entries are not supported', offset);
    this.name = 'TarSparseError';
  }
}

// ---------------------------------------------------------------------------------------------
// Input buffering

/** Pulls bytes from an async iterable with exact-size reads, tracking the absolute offset. */
class ByteSource {
  private readonly it: AsyncIterator<Uint8Array>;
  private cur: Buffer = Buffer.alloc(0);
  private eof = false;
  /** Absolute offset of the next unread byte. */
  offset = 0;

  constructor(src: AsyncIterable<Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    while (this.cur.length === 0) {
      if (this.eof) return false;
      const r = await this.it.next();
      if (r.done) {
        this.eof = true;
        return false;
      }
      const v = r.value;
      if (!(v instanceof Uint8Array)) throw new FormatError('tar input chunk is not a byte array', this.offset);
      this.cur = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    }
    return true;
  }

  /**
   * Exactly `n` bytes, or undefined at a clean EOF (no byte available). A partial read is a truncation
   * error described by `what`.
   */
  async readExact(n: number, what: string): Promise<Buffer | undefined> {
    if (!(await this.fill())) return undefined;
    if (this.cur.length >= n) {
      const out = this.cur.subarray(0, n);
      this.cur = this.cur.subarray(n);
      this.offset += n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (!(await this.fill())) throw new FormatError(`truncated tar archive: unexpected end of input in ${what}`, this.offset);
      const take = Math.min(n - got, this.cur.length);
      this.cur.copy(out, got, 0, take);
      this.cur = this.cur.subarray(take);
      got += take;
      this.offset += take;
    }
    return out;
  }

  /** Stops the underlying iterator (closes files/streams) when the reader is abandoned early. */
  async close(): Promise<void> {
    if (!this.eof) {
      this.eof = true;
      await this.it.return?.();
    }
  }

  /** Up to `max` bytes (at least 1) as a view of the current input chunk; undefined at EOF. */
  async readSome(max: number): Promise<Buffer | undefined> {
    if (!(await this.fill())) return undefined;
    const take = Math.min(max, this.cur.length);
    const out = this.cur.subarray(0, take);
    this.cur = this.cur.subarray(take);
    this.offset += take;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Header fields

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** A NUL-terminated string field (the whole field when it has no NUL). */
function cString(b: Buffer, start: number, len: number): ByteString {
  let end = start;
  const stop = start + len;
  while (end < stop && b[end] !== 0) end++;
  return b.toString('latin1', start, end);
}

/**
 * A numeric header field: octal digits with optional leading/trailing spaces and NULs, or GNU base-256
 * (bit 7 of the first byte set; 0xff introduces a negative two's-complement number). Returns a safe
 * integer; anything else is a FormatError at the field's offset.
 */
function numericField(b: Buffer, start: number, len: number, name: string, fieldOffset: number, allowNegative = false): number {
  const first = b[start]!;
  if (first & 0x80) {
    // Bit 7 marks base-256; the remaining 8*len-1 bits are a big-endian two's-complement number
    // (bit 6 of the first byte is its sign), as GNU tar and Go's archive/tar write it.
    let v = BigInt(first & 0x7f);
    for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(b[start + i]!);
    if (first & 0x40) v -= 1n << BigInt(8 * len - 1);
    if (v < 0n && !allowNegative) throw new FormatError(`negative ${name} in tar header`, fieldOffset);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new FormatError(`${name} out of range in tar header`, fieldOffset);
    }
    return Number(v);
  }
  let i = start;
  const end = start + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let j = end;
  while (j > i && (b[j - 1] === 0x20 || b[j - 1] === 0)) j--;
  let v = 0;
  for (let k = i; k < j; k++) {
    const c = b[k]!;
    if (c < 0x30 || c > 0x37) throw new FormatError(`invalid octal ${name} field in tar header`, fieldOffset);
    v = v * 8 + (c - 0x30);
  }
  if (!Number.isSafeInteger(v)) throw new FormatError(`${name} out of range in tar header`, fieldOffset);
  return v;
}

function checksumOk(b: Buffer, blockOffset: number): boolean {
  const stored = numericField(b, 148, 8, 'checksum', blockOffset + 148);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += c;
    signed += c >= 128 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');
const GNU_MAGIC = Buffer.from('ustar  \x00', 'latin1');

function headerFormat(b: Buffer): 'ustar' | 'gnu' | 'v7' {
  if (b.compare(USTAR_MAGIC, 0, 6, 257, 263) === 0) return 'ustar';
  if (b.compare(GNU_MAGIC, 0, 8, 257, 265) === 0) return 'gnu';
  return 'v7';
}

// ---------------------------------------------------------------------------------------------
// PAX records

/**
 * Parses PAX extended header data: records `LEN SP KEY=VALUE LF` where LEN counts the whole record.
 * Keys and values are raw bytes. NUL padding after the last record is tolerated.
 */
export function parsePaxRecords(data: Buffer, dataOffset: number): Array<[ByteString, Buffer]> {
  const out: Array<[ByteString, Buffer]> = [];
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) {
      for (let k = pos; k < data.length; k++) {
        if (data[k] !== 0) throw new FormatError('malformed PAX record: data after NUL padding', dataOffset + k);
      }
      break;
    }
    const recordOffset = dataOffset + pos;
    let i = pos;
    let len = 0;
    while (i < data.length && data[i]! >= 0x30 && data[i]! <= 0x39) {
      len = len * 10 + (data[i]! - 0x30);
      if (len > data.length) throw new FormatError('malformed PAX record: length beyond the header data', recordOffset);
      i++;
    }
    if (i === pos) throw new FormatError('malformed PAX record: missing decimal length', recordOffset);
    if (data[i] !== 0x20) throw new FormatError('malformed PAX record: length not followed by a space', recordOffset);
    const end = pos + len;
    if (len <= i - pos + 1 || end > data.length) throw new FormatError('malformed PAX record: bad length', recordOffset);
    if (data[end - 1] !== 0x0a) throw new FormatError('malformed PAX record: missing newline', recordOffset);
    const body = data.subarray(i + 1, end - 1);
    const eq = body.indexOf(0x3d);
    if (eq <= 0) throw new FormatError('malformed PAX record: missing key or "="', recordOffset);
    out.push([body.toString('latin1', 0, eq), Buffer.from(body.subarray(eq + 1))]);
    pos = end;
  }
  return out;
}

function paxDecimal(v: Buffer, key: string, offset: number): number {
  const s = v.toString('latin1');
  if (!/^[0-9]+$/.test(s)) throw new FormatError(`invalid PAX ${key} value`, offset);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new FormatError(`PAX ${key} value out of range`, offset);
  return n;
}

function paxTime(v: Buffer, key: string, offset: number): { sec: number; nsec: number } {
  const s = v.toString('latin1');
  const m = /^(-?)([0-9]+)(?:\.([0-9]*))?$/.exec(s);
  if (!m) throw new FormatError(`invalid PAX ${key} value`, offset);
  const whole = Number(m[2]);
  if (!Number.isSafeInteger(whole)) throw new FormatError(`PAX ${key} value out of range`, offset);
  const frac = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (m[1] === '-') {
    // -W.F = -(W+1) + (1 - .F)
    if (frac === 0) return { sec: whole === 0 ? 0 : -whole, nsec: 0 };
    return { sec: -whole - 1, nsec: 1_000_000_000 - frac };
  }
  return { sec: whole, nsec: frac };
}

const XATTR_PREFIX = 'SCHILY.xattr.';

// ---------------------------------------------------------------------------------------------
// The segment parser

const TYPE_BY_FLAG: Record<number, TarEntryType> = {
  0x30: 'reg', 0x00: 'reg', 0x37: 'reg',
  0x31: 'hardlink', 0x32: 'symlink', 0x33: 'chr', 0x34: 'blk', 0x35: 'dir', 0x36: 'fifo',
};
const HEADER_ONLY: ReadonlySet<TarEntryType> = new Set(['hardlink', 'symlink', 'chr', 'blk', 'dir', 'fifo']);

/** Largest `data` segment handed out (pieces are also bounded by the input chunks). */
const MAX_PIECE = 1024 * 1024;

/**
 * The raw segments of a tar archive, in order; their `bytes` concatenated equal the input exactly.
 * Memory is bounded by one input chunk plus one entry's extension headers (≤ 1 MiB).
 */
export async function* tarSegments(src: AsyncIterable<Uint8Array>): AsyncGenerator<TarSegment, void, undefined> {
  const input = new ByteSource(src);
  try {
    yield* segmentsOf(input);
  } finally {
    await input.close();
  }
}

async function* segmentsOf(input: ByteSource): AsyncGenerator<TarSegment, void, undefined> {
  const global = new Map<ByteString, Buffer>();

  for (;;) {
    // One header group: extension headers, then the entry header.
    const groupOffset = input.offset;
    const parts: Buffer[] = [];
    let local: Map<ByteString, Buffer> | undefined;
    let localOffset = 0;
    let longName: ByteString | undefined;
    let longLink: ByteString | undefined;
    let extensionBytes = 0;
    let extensionHeaders = 0;
    let onlyGlobal = true;

    let block: Buffer | undefined;
    let blockOffset = 0;
    for (;;) {
      blockOffset = input.offset;
      block = await input.readExact(TAR_BLOCK, 'a header block');
      if (block === undefined || isZeroBlock(block)) break;
      if (!checksumOk(block, blockOffset)) throw new FormatError('tar header checksum mismatch', blockOffset);
      const flag = block[156]!;
      // 'x' local PAX, 'g' global PAX, 'L' GNU long name, 'K' GNU long link name
      if (flag !== 0x78 && flag !== 0x67 && flag !== 0x4c && flag !== 0x4b) break;
      if (++extensionHeaders > MAX_EXTENSION_HEADERS) {
        throw new FormatError(`more than ${MAX_EXTENSION_HEADERS} extension headers before a tar entry`, blockOffset);
      }
      const size = numericField(block, 124, 12, 'size', blockOffset + 124);
      extensionBytes += size;
      if (extensionBytes > MAX_EXTENSION_BYTES) {
        throw new FormatError(`tar extension headers larger than ${MAX_EXTENSION_BYTES} bytes`, blockOffset);
      }
      const dataOffset = input.offset;
      const padded = roundUpBlock(size);
      const data = padded === 0 ? Buffer.alloc(0) : await input.readExact(padded, 'an extension header');
      if (data === undefined) throw new FormatError('truncated tar archive: unexpected end of input in an extension header', dataOffset);
      parts.push(Buffer.from(block), padded === 0 ? data : Buffer.from(data));
      const payload = data.subarray(0, size);
      if (flag === 0x67) {
        for (const [k, v] of parsePaxRecords(payload, dataOffset)) {
          if (v.length === 0 && !k.startsWith(XATTR_PREFIX)) global.delete(k);
          else global.set(k, v);
        }
        continue;
      }
      onlyGlobal = false;
      if (flag === 0x78) {
        if (local) throw new FormatError('duplicate PAX extended header before one tar entry', blockOffset);
        local = new Map();
        localOffset = dataOffset;
        for (const [k, v] of parsePaxRecords(payload, dataOffset)) local.set(k, v);
      } else {
        const nul = payload.indexOf(0);
        const name = payload.toString('latin1', 0, nul < 0 ? payload.length : nul);
        if (flag === 0x4c) {
          if (longName !== undefined) throw new FormatError('duplicate GNU long name header', blockOffset);
          longName = name;
        } else {
          if (longLink !== undefined) throw new FormatError('duplicate GNU long link header', blockOffset);
          longLink = name;
        }
      }
    }

    if (block === undefined || isZeroBlock(block)) {
      if (!onlyGlobal) {
        throw new FormatError('tar extension header not followed by an entry', block === undefined ? input.offset : blockOffset);
      }
      if (parts.length > 0) yield { kind: 'header', bytes: Buffer.concat(parts), offset: groupOffset, entry: undefined };
      if (block === undefined) return;
      yield* endSegments(input, Buffer.from(block), blockOffset);
      return;
    }

    parts.push(Buffer.from(block));
    const entry = parseEntry(block, blockOffset, groupOffset, global, local, localOffset, longName, longLink);
    entry.dataOffset = input.offset;
    yield { kind: 'header', bytes: parts.length === 1 ? parts[0]! : Buffer.concat(parts), offset: groupOffset, entry };

    let position = 0;
    while (position < entry.size) {
      const offset = input.offset;
      const piece = await input.readSome(Math.min(MAX_PIECE, entry.size - position));
      if (piece === undefined) throw new FormatError(`truncated tar archive: content of '${printable(entry.path)}' ends early`, offset);
      yield { kind: 'data', bytes: piece, offset, entry, position };
      position += piece.length;
    }
    const pad = roundUpBlock(entry.size) - entry.size;
    if (pad > 0) {
      const offset = input.offset;
      const bytes = await input.readExact(pad, 'entry padding');
      if (bytes === undefined) throw new FormatError('truncated tar archive: missing padding after entry content', offset);
      yield { kind: 'padding', bytes, offset, entry };
    }
  }
}

async function* endSegments(input: ByteSource, first: Buffer, firstOffset: number): AsyncGenerator<TarSegment, void, undefined> {
  const secondOffset = input.offset;
  const second = await input.readExact(TAR_BLOCK, 'the end-of-archive marker');
  if (second === undefined) {
    yield { kind: 'end', bytes: first, offset: firstOffset };
    return;
  }
  if (!isZeroBlock(second)) throw new FormatError('stray zero block in tar archive (a zero block followed by data)', secondOffset);
  yield { kind: 'end', bytes: Buffer.concat([first, second]), offset: firstOffset };
  // Whatever follows the end marker (GNU record padding, or anything else) is kept byte for byte.
  for (;;) {
    const offset = input.offset;
    const piece = await input.readSome(MAX_PIECE);
    if (piece === undefined) return;
    yield { kind: 'end', bytes: piece, offset };
  }
}

function roundUpBlock(n: number): number {
  const r = n % TAR_BLOCK;
  return r === 0 ? n : n + (TAR_BLOCK - r);
}

function printable(s: ByteString): string {
  const t = s.length > 200 ? `${s.slice(0, 200)}…` : s;
  return t.replace(/[^\x20-\x7e]/g, '?');
}

function parseEntry(
  b: Buffer,
  off: number,
  groupOffset: number,
  global: Map<ByteString, Buffer>,
  local: Map<ByteString, Buffer> | undefined,
  localOffset: number,
  longName: ByteString | undefined,
  longLink: ByteString | undefined,
): TarEntry {
  const format = headerFormat(b);
  const typeflag = b[156]!;
  if (typeflag === 0x53) throw new TarSparseError(off);

  // Effective PAX records: globals, then local ones (an empty local value unsets a global key).
  const pax = new Map(global);
  if (local) {
    for (const [k, v] of local) {
      if (v.length === 0 && !k.startsWith(XATTR_PREFIX)) pax.delete(k);
      else pax.set(k, v);
    }
  }
  const paxOffset = local ? localOffset : groupOffset;
  for (const k of pax.keys()) if (k.startsWith('GNU.sparse.')) throw new TarSparseError(paxOffset);
  const localValue = (k: string): Buffer | undefined => {
    const v = local?.get(k);
    return v !== undefined && v.length > 0 ? v : undefined;
  };
  const globalValue = (k: string): Buffer | undefined => (local?.has(k) ? undefined : global.get(k));

  // Path: PAX path > GNU long name > global PAX path > ustar prefix + name.
  let path: ByteString;
  const localPath = localValue('path');
  const globalPath = globalValue('path');
  if (localPath) path = localPath.toString('latin1');
  else if (longName !== undefined) path = longName;
  else if (globalPath) path = globalPath.toString('latin1');
  else {
    const name = cString(b, 0, 100);
    const prefix = format === 'ustar' ? cString(b, 345, 155) : '';
    path = prefix.length > 0 ? `${prefix}/${name}` : name;
  }
  if (path.length === 0) throw new FormatError('tar entry has an empty path', off);

  let type: TarEntryType = TYPE_BY_FLAG[typeflag] ?? 'other';
  if (typeflag === 0 && path.endsWith('/')) type = 'dir';

  let linkTarget = '';
  if (type === 'symlink' || type === 'hardlink') {
    const lp = localValue('linkpath');
    const glp = globalValue('linkpath');
    if (lp) linkTarget = lp.toString('latin1');
    else if (longLink !== undefined) linkTarget = longLink;
    else if (glp) linkTarget = glp.toString('latin1');
    else linkTarget = cString(b, 157, 100);
  }

  const headerMode = numericField(b, 100, 8, 'mode', off + 100);
  let uid = numericField(b, 108, 8, 'uid', off + 108);
  let gid = numericField(b, 116, 8, 'gid', off + 116);
  let size = numericField(b, 124, 12, 'size', off + 124);
  let mtimeSec = numericField(b, 136, 12, 'mtime', off + 136, true);
  let mtimeNsec = 0;
  let devMajor = 0;
  let devMinor = 0;
  if (format !== 'v7' && (type === 'chr' || type === 'blk')) {
    devMajor = numericField(b, 329, 8, 'devmajor', off + 329);
    devMinor = numericField(b, 337, 8, 'devminor', off + 337);
  }
  let uname = format !== 'v7' ? cString(b, 265, 32) : '';
  let gname = format !== 'v7' ? cString(b, 297, 32) : '';

  const xattrs = new Map<ByteString, Buffer>();
  for (const [k, v] of pax) {
    switch (k) {
      case 'size': size = paxDecimal(v, k, paxOffset); break;
      case 'uid': uid = paxDecimal(v, k, paxOffset); break;
      case 'gid': gid = paxDecimal(v, k, paxOffset); break;
      case 'mtime': {
        const t = paxTime(v, k, paxOffset);
        mtimeSec = t.sec;
        mtimeNsec = t.nsec;
        break;
      }
      case 'uname': uname = v.toString('latin1'); break;
      case 'gname': gname = v.toString('latin1'); break;
      case 'SCHILY.devmajor': if (type === 'chr' || type === 'blk') devMajor = paxDecimal(v, k, paxOffset); break;
      case 'SCHILY.devminor': if (type === 'chr' || type === 'blk') devMinor = paxDecimal(v, k, paxOffset); break;
      default:
        if (k.startsWith(XATTR_PREFIX)) {
          const name = k.slice(XATTR_PREFIX.length);
          if (name.length === 0) throw new FormatError('PAX xattr record with an empty name', paxOffset);
          xattrs.set(name, v);
        }
    }
  }
  // As tar-core (composefs-rs) does: a header-only type with a content size is refused, so no reader
  // can disagree with another about where the next header starts.
  if (HEADER_ONLY.has(type) && size !== 0) throw new FormatError(`tar ${type} entry with a non-zero size (${size})`, off);

  return {
    path,
    type,
    typeflag,
    mode: headerMode & 0o7777,
    headerMode,
    uid,
    gid,
    uname,
    gname,
    mtimeSec,
    mtimeNsec,
    size,
    linkTarget,
    devMajor,
    devMinor,
    xattrs,
    pax,
    headerOffset: groupOffset,
    dataOffset: 0,
    pathIsAbsolute: path.startsWith('/'),
    pathHasDotDot: path.split('/').includes('..'),
  };
}

// ---------------------------------------------------------------------------------------------
// Entry view

export interface TarEntryWithContent {
  entry: TarEntry;
  /**
   * The entry's content, in pieces (views of the input; copy them to keep them). May be iterated at
   * most once, and only before the next entry is requested; unread content is skipped.
   */
  content: AsyncIterable<Buffer>;
}

/** Entries with their content streams (see the file comment). */
export async function* tarEntries(src: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntryWithContent, void, undefined> {
  const it = tarSegments(src)[Symbol.asyncIterator]();
  try {
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      const seg = r.value;
      if (seg.kind !== 'header' || seg.entry === undefined) continue;
      const entry = seg.entry;
      let remaining = entry.size;
      let started = false;
      let active = true;
      const content: AsyncIterable<Buffer> = {
        [Symbol.asyncIterator]: async function* () {
          if (started) throw new FormatError('tar entry content can be read only once', entry.dataOffset);
          if (!active) throw new FormatError('tar entry content read after the next entry was requested', entry.dataOffset);
          started = true;
          while (remaining > 0) {
            const n = await it.next();
            // tarSegments always yields exactly entry.size data bytes or throws.
            if (n.done || n.value.kind !== 'data') throw new FormatError('tar content ended early', entry.dataOffset);
            remaining -= n.value.bytes.length;
            yield n.value.bytes;
          }
        },
      };
      yield { entry, content };
      active = false;
      while (remaining > 0) {
        const n = await it.next();
        if (n.done || n.value.kind !== 'data') throw new FormatError('tar content ended early', entry.dataOffset);
        remaining -= n.value.bytes.length;
      }
    }
  } finally {
    await it.return?.();
  }
}

/** Collects an entry's content into one Buffer; more than `limit` bytes is an error. */
export async function readContent(content: AsyncIterable<Buffer>, limit = 64 * 1024 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const piece of content) {
    n += piece.length;
    if (n > limit) throw new FormatError(`tar entry content larger than ${limit} bytes`, 0);
    parts.push(Buffer.from(piece));
  }
  return Buffer.concat(parts, n);
}

/** A buffer (or several) as the async iterable the readers take. */
export async function* bytesSource(...chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}
