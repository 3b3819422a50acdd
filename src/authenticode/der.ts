/**
 * Minimal DER for the Authenticode structures: an exact encoder (so the bytes we sign are the bytes we write,
 * in the order OpenSSL writes them) and a bounds-checked tree view over asn1js's BER decoder for parsing
 * hostile input. Every parse fault is a FormatError with the offset within the blob being parsed.
 */
import * as asn1js from 'asn1js';
import { FormatError } from '../errors.js';

// ---- encoder ----

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV with a single-byte tag. */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), lengthBytes(body.length), body]);
}

export const seq = (...c: Buffer[]): Buffer => tlv(0x30, ...c);
/** SET OF in DER order (elements sorted by their encodings). */
export const setOf = (...c: Buffer[]): Buffer => tlv(0x31, ...[...c].sort(Buffer.compare));
export const octets = (b: Buffer): Buffer => tlv(0x04, b);
export const nullValue = (): Buffer => Buffer.from([0x05, 0x00]);
export const explicit = (n: number, ...c: Buffer[]): Buffer => tlv(0xa0 | n, ...c);

export function integer(n: number | Buffer): Buffer {
  if (typeof n === 'number') {
    const bytes: number[] = [];
    let v = n;
    do {
      bytes.unshift(v & 0xff);
      v = Math.floor(v / 256);
    } while (v > 0);
    if (bytes[0]! & 0x80) bytes.unshift(0);
    return tlv(0x02, Buffer.from(bytes));
  }
  let b = n;
  let i = 0;
  while (i < b.length - 1 && b[i] === 0 && !(b[i + 1]! & 0x80)) i++;
  b = b.subarray(i);
  if (b.length === 0) b = Buffer.from([0]);
  if (b[0]! & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [];
    let v = p;
    do {
      chunk.unshift(v & 0x7f);
      v = Math.floor(v / 128);
    } while (v > 0);
    for (let i = 0; i < chunk.length - 1; i++) chunk[i]! |= 0x80;
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime for 1950..2049, GeneralizedTime otherwise (RFC 5652 §11.3), seconds precision, UTC. */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const p2 = (n: number): string => String(n).padStart(2, '0');
  const rest = `${p2(d.getUTCMonth() + 1)}${p2(d.getUTCDate())}${p2(d.getUTCHours())}${p2(d.getUTCMinutes())}${p2(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(0x17, Buffer.from(`${p2(y % 100)}${rest}`, 'latin1'));
  return tlv(0x18, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'latin1'));
}

// ---- decoder ----

export interface DerNode {
  /** Identifier octet (tag class, constructed bit, low tag number); tags ≥ 31 are rejected. */
  tag: number;
  /** Offset of the TLV within the parsed blob. */
  offset: number;
  /** The whole TLV. */
  raw: Buffer;
  /** The value octets. */
  content: Buffer;
  children: DerNode[];
}

/**
 * Parses one complete BER/DER element that must span exactly `buf`, or, with `maxZeroPadding`, be followed
 * by at most that many zero bytes (WIN_CERTIFICATE lengths that include the 8-byte alignment padding).
 */
export function parseDer(buf: Buffer, what: string, maxZeroPadding = 0): DerNode {
  let result: ReturnType<typeof asn1js.fromBER>;
  try {
    result = asn1js.fromBER(new Uint8Array(buf.buffer, buf.byteOffset, buf.length));
  } catch (e) {
    // asn1js throws (RangeError, TypeError) on some malformed encodings instead of reporting them
    throw new FormatError(`${what}: malformed ASN.1 (${(e as Error).message})`, 0);
  }
  if (result.offset === -1) throw new FormatError(`${what}: malformed ASN.1 (${result.result.error || 'decoding failed'})`, 0);
  const rest = buf.length - result.offset;
  if (rest > 0 && rest <= maxZeroPadding && buf.subarray(result.offset).every((b) => b === 0)) buf = buf.subarray(0, result.offset);
  if (result.offset !== buf.length) throw new FormatError(`${what}: ${buf.length - result.offset} bytes of garbage after the ASN.1 data`, result.offset);
  try {
    return convert(result.result, buf, 0, what, 0);
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError(`${what}: malformed ASN.1 (${(e as Error).message})`, 0);
  }
}

function convert(node: asn1js.AsnType, blob: Buffer, offset: number, what: string, depth: number): DerNode {
  if (depth > 64) throw new FormatError(`${what}: ASN.1 nesting too deep`, offset);
  const id = node?.idBlock;
  if (id === undefined || node.lenBlock === undefined) throw new FormatError(`${what}: malformed ASN.1 element`, offset);
  if (id.tagNumber >= 31 || id.isHexOnly) throw new FormatError(`${what}: unsupported ASN.1 tag`, offset);
  const lenBlock = node.lenBlock;
  if (lenBlock.isIndefiniteForm) throw new FormatError(`${what}: indefinite-length ASN.1 encoding is not DER`, offset);
  const tag = (id.tagClass - 1) << 6 | (id.isConstructed ? 0x20 : 0) | id.tagNumber;
  const headerLen = id.blockLength + lenBlock.blockLength;
  const total = headerLen + lenBlock.length;
  if (offset + total > blob.length) throw new FormatError(`${what}: ASN.1 element extends past the end`, offset);
  const raw = blob.subarray(offset, offset + total);
  const content = raw.subarray(headerLen);
  const children: DerNode[] = [];
  if (id.isConstructed) {
    const values = (node.valueBlock as unknown as { value?: asn1js.AsnType[] }).value ?? [];
    let childOff = offset + headerLen;
    for (const v of values) {
      if (v instanceof asn1js.EndOfContent) continue;
      const c = convert(v, blob, childOff, what, depth + 1);
      children.push(c);
      childOff += c.raw.length;
    }
    if (childOff !== offset + total) throw new FormatError(`${what}: inconsistent ASN.1 lengths`, offset);
  }
  return { tag, offset, raw, content, children };
}

export function expectTag(n: DerNode | undefined, tag: number, what: string, parentOffset = 0): DerNode {
  if (n === undefined) throw new FormatError(`${what}: missing`, parentOffset);
  if (n.tag !== tag) throw new FormatError(`${what}: expected ASN.1 tag 0x${tag.toString(16)}, found 0x${n.tag.toString(16)}`, n.offset);
  return n;
}

export function decodeOid(n: DerNode, what: string): string {
  expectTag(n, 0x06, what);
  const b = n.content;
  if (b.length === 0) throw new FormatError(`${what}: empty OBJECT IDENTIFIER`, n.offset);
  const out: number[] = [];
  let v = 0;
  for (let i = 0; i < b.length; i++) {
    v = v * 128 + (b[i]! & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 256) throw new FormatError(`${what}: OBJECT IDENTIFIER arc too large`, n.offset);
    if (!(b[i]! & 0x80)) {
      if (out.length === 0) out.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else out.push(v);
      v = 0;
    } else if (i === b.length - 1) throw new FormatError(`${what}: truncated OBJECT IDENTIFIER`, n.offset);
  }
  return out.join('.');
}

export function decodeTime(n: DerNode, what: string): Date {
  const s = n.content.toString('latin1');
  let m: RegExpExecArray | null;
  if (n.tag === 0x17 && (m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    const yy = Number(m[1]);
    return new Date(Date.UTC(yy < 50 ? 2000 + yy : 1900 + yy, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  }
  if (n.tag === 0x18 && (m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    return new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  }
  throw new FormatError(`${what}: unsupported time encoding`, n.offset);
}
