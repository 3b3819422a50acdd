/**
 * EROFS on-disk constants and small helpers shared by the composefs image writers (v1 = C-compatible,
 * v2 = composefs-rs native) and the reader. Layouts: docs/ARCHITECTURE.md and composefs-format notes.
 * All integers little-endian; 4096-byte blocks only.
 */
import { digestPath } from '../tree/model.js';

export const BLOCK_SIZE = 4096;
export const BLOCK_BITS = 12;

/** composefs header (32 bytes at offset 0, padded to 1024). */
export const COMPOSEFS_MAGIC = 0xd078629a;
export const COMPOSEFS_HEADER_SIZE = 32;
export const COMPOSEFS_EROFS_VERSION = 1; // header.version (LCFS_EROFS_VERSION)
export const COMPOSEFS_FLAGS_HAS_ACL = 1;

/** EROFS superblock at 1024, 128 bytes. */
export const EROFS_SUPER_OFFSET = 1024;
export const EROFS_SUPER_SIZE = 128;
export const EROFS_MAGIC = 0xe0f5e1e2;
export const EROFS_FEATURE_COMPAT_MTIME = 2;
export const EROFS_FEATURE_COMPAT_XATTR_FILTER = 4;
/** First byte after the superblock: where the inode area starts (nid 36 = 1152 / 32). */
export const EROFS_INODES_START = EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE;
export const EROFS_ISLOTBITS = 5; // inodes are 32-byte aligned; nid = offset / 32

export const EROFS_INODE_COMPACT_SIZE = 32;
export const EROFS_INODE_EXTENDED_SIZE = 64;

/** i_format: bit 0 = extended layout, bits 1..3 = data layout. */
export const EROFS_INODE_LAYOUT_COMPACT = 0;
export const EROFS_INODE_LAYOUT_EXTENDED = 1;
export const EROFS_INODE_FLAT_PLAIN = 0;
export const EROFS_INODE_FLAT_INLINE = 2;
export const EROFS_INODE_CHUNK_BASED = 4;
export function iFormat(extended: boolean, datalayout: number): number {
  return (extended ? EROFS_INODE_LAYOUT_EXTENDED : EROFS_INODE_LAYOUT_COMPACT) | (datalayout << 1);
}

export const EROFS_NULL_ADDR = 0xffffffff;
export const EROFS_CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
export const EROFS_CHUNK_FORMAT_INDEXES = 0x20;

/** Directory entries: 12-byte dirents followed by names. */
export const EROFS_DIRENT_SIZE = 12;
export const EROFS_FT_UNKNOWN = 0;
export const EROFS_FT_REG_FILE = 1;
export const EROFS_FT_DIR = 2;
export const EROFS_FT_CHRDEV = 3;
export const EROFS_FT_BLKDEV = 4;
export const EROFS_FT_FIFO = 5;
export const EROFS_FT_SOCK = 6;
export const EROFS_FT_SYMLINK = 7;

/** Xattr inode-body header (12 bytes) and entry header (4 bytes). */
export const EROFS_XATTR_IBODY_HEADER_SIZE = 12;
export const EROFS_XATTR_ENTRY_SIZE = 4;
export const EROFS_XATTR_FILTER_SEED = 0x25bbe08f;

/** xattr name prefix indices. */
export const EROFS_XATTR_INDEX_NONE = 0;
export const EROFS_XATTR_INDEX_USER = 1;
export const EROFS_XATTR_INDEX_POSIX_ACL_ACCESS = 2;
export const EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT = 3;
export const EROFS_XATTR_INDEX_TRUSTED = 4;
export const EROFS_XATTR_INDEX_LUSTRE = 5;
export const EROFS_XATTR_INDEX_SECURITY = 6;

/** Prefix strings by index (index 0 = no prefix, the full name is stored). */
export const XATTR_PREFIXES: readonly string[] = [
  '',
  'user.',
  'system.posix_acl_access',
  'system.posix_acl_default',
  'trusted.',
  'lustre.',
  'security.',
];

/** Overlayfs / composefs xattr names (byte strings). */
export const XATTR_OVERLAY_METACOPY = 'trusted.overlay.metacopy';
export const XATTR_OVERLAY_REDIRECT = 'trusted.overlay.redirect';
export const XATTR_OVERLAY_OPAQUE = 'trusted.overlay.opaque';
export const XATTR_TRUSTED_OVERLAY_PREFIX = 'trusted.overlay.';
export const XATTR_ESCAPED_OVERLAY_PREFIX = 'trusted.overlay.overlay.';

/** fs-verity hash algorithm ids as used in ovl_metacopy and fsverity_descriptor. */
export const FSVERITY_HASH_ALG_SHA256 = 1;
export const FSVERITY_HASH_ALG_SHA512 = 2;

/** Longest file name a dirent can carry (EROFS_NAME_LEN, as Linux NAME_MAX). */
export const EROFS_NAME_MAX = 255;
/** Longest xattr name Linux allows (XATTR_NAME_MAX). */
export const XATTR_NAME_MAX = 255;

/**
 * `xx/yyyy…`: where an object lives in a composefs object store, relative to its root, named by its
 * fs-verity digest (lowercase hex, first byte as the directory). Also the redirect payload of external files.
 */
export function objectPathForDigest(digest: Uint8Array): string {
  return digestPath(digest);
}

export { roundUp } from '../util/align.js';

// ---------------------------------------------------------------- xxHash32 (the EROFS xattr name filter)
const P1 = 0x9e3779b1;
const P2 = 0x85ebca77;
const P3 = 0xc2b2ae3d;
const P4 = 0x27d4eb2f;
const P5 = 0x165667b1;

function rotl(x: number, r: number): number {
  return ((x << r) | (x >>> (32 - r))) >>> 0;
}
function round(acc: number, lane: number): number {
  acc = (acc + Math.imul(lane, P2)) >>> 0;
  acc = rotl(acc, 13);
  return Math.imul(acc, P1) >>> 0;
}

/** Standard 32-bit xxHash of `data` with `seed`. */
export function xxh32(data: Uint8Array, seed: number): number {
  const len = data.length;
  let i = 0;
  let h: number;
  const u32 = (o: number) => (data[o]! | (data[o + 1]! << 8) | (data[o + 2]! << 16) | (data[o + 3]! << 24)) >>> 0;
  if (len >= 16) {
    let v1 = (seed + P1 + P2) >>> 0;
    let v2 = (seed + P2) >>> 0;
    let v3 = seed >>> 0;
    let v4 = (seed - P1) >>> 0;
    while (i + 16 <= len) {
      v1 = round(v1, u32(i));
      v2 = round(v2, u32(i + 4));
      v3 = round(v3, u32(i + 8));
      v4 = round(v4, u32(i + 12));
      i += 16;
    }
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) >>> 0;
  } else {
    h = (seed + P5) >>> 0;
  }
  h = (h + len) >>> 0;
  while (i + 4 <= len) {
    h = (h + Math.imul(u32(i), P3)) >>> 0;
    h = Math.imul(rotl(h, 17), P4) >>> 0;
    i += 4;
  }
  while (i < len) {
    h = (h + Math.imul(data[i]!, P5)) >>> 0;
    h = Math.imul(rotl(h, 11), P1) >>> 0;
    i++;
  }
  h ^= h >>> 15;
  h = Math.imul(h, P2) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, P3) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** Bloom bit for one xattr: xxh32(suffix, seed + prefix index) mod 32. */
export function xattrFilterBit(prefixIndex: number, suffix: Uint8Array): number {
  return xxh32(suffix, (EROFS_XATTR_FILTER_SEED + prefixIndex) >>> 0) & 31;
}

/** EROFS file type of a mode. */
export function erofsFileType(mode: number): number {
  switch (mode & 0o170000) {
    case 0o100000: return EROFS_FT_REG_FILE;
    case 0o040000: return EROFS_FT_DIR;
    case 0o020000: return EROFS_FT_CHRDEV;
    case 0o060000: return EROFS_FT_BLKDEV;
    case 0o010000: return EROFS_FT_FIFO;
    case 0o140000: return EROFS_FT_SOCK;
    case 0o120000: return EROFS_FT_SYMLINK;
    default: return EROFS_FT_UNKNOWN;
  }
}
