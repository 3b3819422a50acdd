/**
 * Splitstream on-disk constants shared by the reader and the writer (composefs-rs `splitstream.rs`,
 * doc/splitstream.md; /work/shared/reference/composefs-format.md §5).
 *
 * File layout (all integers little-endian):
 *   header (32 bytes): magic "SplitStream" @0, version u8 @11 (0), flags u16 @12 (0), algorithm u8 @14
 *     (1 = sha256, 2 = sha512), lg_blocksize u8 @15 (12), info range (start u64 @16, end u64 @24).
 *   legacy header (bootc ≤ 1.15.x, before composefs-rs made the struct repr(C)): info range @0/@8,
 *     flags u16 @16, magic @18, version @29, algorithm @30, lg_blocksize @31. Read, never written.
 *   info (≥ 80 bytes): ranges stream_refs @0, object_refs @16, stream @32, named_refs @48 (absolute file
 *     offsets, end exclusive), content_type u64 @64, stream_size u64 @72.
 *   stream_refs / object_refs: concatenated raw digests. named_refs: zstd("<index>:<name>\0"…) sorted by
 *   name. stream: zstd(chunks), each chunk an i64: −n → n inline bytes follow; k ≥ 0 → object_refs[k].
 */
import { BootcfsError } from '../errors.js';

export const SPLITSTREAM_MAGIC = Buffer.from('SplitStream', 'latin1');
export const SPLITSTREAM_VERSION = 0;
export const SPLITSTREAM_LG_BLOCKSIZE = 12;
export const HEADER_SIZE = 32;
export const INFO_SIZE = 80;

/** Content-type tag from its 8-character ASCII spelling (composefs-oci: `u64::from_le_bytes(*b"ocilayer")`). */
export function contentTypeFromString(tag: string): bigint {
  const b = Buffer.from(tag, 'latin1');
  if (b.length !== 8 || b.toString('latin1') !== tag) {
    throw new BootcfsError('EINVAL', `splitstream content type '${tag}' must be exactly 8 single-byte characters`);
  }
  return b.readBigUInt64LE(0);
}

/** The 8-byte ASCII spelling of a content type, or undefined if it is not printable ASCII. */
export function contentTypeToString(type: bigint): string | undefined {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, type));
  for (const c of b) if (c < 0x20 || c > 0x7e) return undefined;
  return b.toString('latin1');
}

/** Content types composefs-oci writes. */
export const CONTENT_TYPE = {
  ociLayer: contentTypeFromString('ocilayer'),
  ociConfig: contentTypeFromString('ociconfg'),
  ociManifest: contentTypeFromString('ocimanif'),
  ociBlob: contentTypeFromString('oci_blob'),
} as const;

export function toContentType(t: bigint | string): bigint {
  if (typeof t === 'string') return contentTypeFromString(t);
  if (t < 0n || t >= 1n << 64n) throw new BootcfsError('EINVAL', `splitstream content type ${t} is not a u64`);
  return t;
}
