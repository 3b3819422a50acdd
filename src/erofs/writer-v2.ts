/**
 * The composefs-rs native ("V2") composefs EROFS image writer, byte-identical to composefs-rs
 * `erofs::writer::mkfs_erofs` as of commit 54d248f (the format composefs-rs repositories and bootc
 * sealed UKIs created with that version use; composefs_version = 2 in the header).
 *
 * How it differs from the libcomposefs (v1) writer — see composefs-format notes §2.4/§2.5:
 * - inodes in depth-first pre-order (a directory, then its entries in byte order, recursing into
 *   subdirectories at once); a hardlinked inode is placed at its first DFS occurrence;
 * - always 64-byte extended inodes, i_ino = nid, mtime seconds only, build_time 0;
 * - xattrs of an inode: for external files `trusted.overlay.metacopy` and `trusted.overlay.redirect`
 *   first, then the input xattrs in byte order of their ORIGINAL names, `trusted.overlay.X` being
 *   stored as `trusted.overlay.overlay.X`; prefixes matched from index 6 down (so `lustre.` = 5);
 * - xattr (index, suffix, value) triples used by ≥ 2 inodes are shared, the table sorted ascending by
 *   that triple, referenced by absolute byte offset / 4 (xattr_blkaddr = 0), no per-inode cap;
 * - external files are CHUNK_BASED with chunk format 31 and one null chunk (FF FF FF FF);
 * - inline data placement: a FLAT_INLINE inode is pushed towards the next block when the byte after
 *   its inline data (exclusive end) lies in another block than the last metadata byte;
 * - no whiteout conversion, no root opaque xattr, no 00..ff stubs, header flags 0.
 *
 * Layout is computed first (no sizes depend on nids, offsets or block numbers), then the image is
 * filled into one zeroed buffer.
 */
import { BootcfsError } from '../errors.js';
import {
  type ByteString, type FileSystem, type Inode, S_IFMT, compareBytes,
} from '../tree/model.js';
import {
  BLOCK_SIZE, BLOCK_BITS, COMPOSEFS_MAGIC, COMPOSEFS_EROFS_VERSION,
  EROFS_MAGIC, EROFS_FEATURE_COMPAT_MTIME, EROFS_FEATURE_COMPAT_XATTR_FILTER, EROFS_SUPER_OFFSET,
  EROFS_INODES_START, EROFS_INODE_EXTENDED_SIZE, EROFS_INODE_FLAT_PLAIN, EROFS_INODE_FLAT_INLINE,
  EROFS_INODE_CHUNK_BASED, EROFS_NULL_ADDR, EROFS_DIRENT_SIZE, EROFS_FT_DIR, EROFS_XATTR_IBODY_HEADER_SIZE,
  EROFS_XATTR_ENTRY_SIZE, XATTR_PREFIXES, XATTR_OVERLAY_METACOPY, XATTR_OVERLAY_REDIRECT,
  XATTR_TRUSTED_OVERLAY_PREFIX, XATTR_ESCAPED_OVERLAY_PREFIX, FSVERITY_HASH_ALG_SHA256,
  FSVERITY_HASH_ALG_SHA512, erofsFileType, iFormat, roundUp, xattrFilterBit,
  EROFS_NAME_MAX,
  objectPathForDigest,
} from './format.js';

/** The header's composefs_version for images of this format. */
export const COMPOSEFS_VERSION_V2 = 2;
/** composefs-rs SYMLINK_MAX (the XFS limit it enforces on symlink targets). */
export const V2_SYMLINK_MAX = 1024;
/** composefs-rs chunk format of every external file: one chunk of 2^(12+31) bytes. */
export const V2_EXTERNAL_CHUNK_FORMAT = 31;

export interface WriteV2Options {
  /** Digest algorithm of the metacopy xattr (1 = sha256, 2 = sha512) and of the redirect object path. */
  algorithm?: 'sha256' | 'sha512';
}

const DIGEST_LENGTH = { sha256: 32, sha512: 64 } as const;
const METACOPY_ALGORITHM_ID = { sha256: FSVERITY_HASH_ALG_SHA256, sha512: FSVERITY_HASH_ALG_SHA512 } as const;
/** Directory tails longer than this go to a full block instead of inline. */
const MAX_INLINE_DIR_TAIL = BLOCK_SIZE / 2;
/** The xattr area size is encoded as a u16 count of 4-byte words (minus the 12-byte header + 1). */
const MAX_XATTR_AREA = EROFS_XATTR_IBODY_HEADER_SIZE + (0xffff - 1) * 4;

interface XAttrEntry {
  prefixIndex: number;
  suffix: ByteString;
  value: Buffer;
  /** Identity of the (index, suffix, value) triple, for sharing. */
  key: string;
}

interface DirEntry {
  name: ByteString;
  inode: number; // index into the inode list
  fileType: number;
}

interface V2Inode {
  source: Inode;
  /** Path of the first entry naming this inode, for error messages. */
  path: ByteString;
  mode: number; // on-disk i_mode (type | permission bits, 16 bits)
  fileType: number;
  local: XAttrEntry[];
  shared: number[]; // indices into the shared table
  filter: number;
  nlink: number;
  // data
  layout: number;
  size: number;
  /** i_u for leaves; directories compute it from their block address. */
  u: number;
  /** Bytes stored right after the xattr area (symlink target, inline content, chunk index). */
  inline: Buffer;
  /** Length of the inline part (for directories: of the tail chunk). */
  inlineLength: number;
  /** Directory entries: full blocks, then the tail (stored inline). */
  dirBlocks?: DirEntry[][];
  dirTail?: DirEntry[];
}

function fail(code: 'EINVAL' | 'ELIMIT', path: ByteString, what: string): never {
  throw new BootcfsError(code, `${JSON.stringify(Buffer.from(path, 'latin1').toString('utf8'))}: ${what}`);
}

/** Byte strings hold one byte per char; anything above 0xff would be silently truncated by latin1. */
function checkByteString(s: ByteString, path: ByteString, what: string): ByteString {
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\xff]/.test(s)) fail('EINVAL', path, `${what} is not a byte string (char code > 255)`);
  return s;
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

const EMPTY = Buffer.alloc(0);
/** The inline part of every external file: one chunk index entry, EROFS_NULL_ADDR (a hole). */
const NULL_CHUNK = Buffer.alloc(4);
NULL_CHUNK.writeUInt32LE(EROFS_NULL_ADDR, 0);

/** Splits an xattr name into (prefix index, suffix), trying the highest prefix index first as rs. */
function splitXattrName(name: ByteString): { prefixIndex: number; suffix: ByteString } {
  for (let idx = XATTR_PREFIXES.length - 1; idx > 0; idx--) {
    const prefix = XATTR_PREFIXES[idx]!;
    if (name.startsWith(prefix)) return { prefixIndex: idx, suffix: name.slice(prefix.length) };
  }
  return { prefixIndex: 0, suffix: name };
}

/** Writes a non-negative integer (or a negative one as two's complement) as u64 LE. */
function writeU64(img: Buffer, n: number, at: number): void {
  if (n >= 0 && n <= Number.MAX_SAFE_INTEGER) {
    img.writeUInt32LE(n % 0x100000000, at);
    img.writeUInt32LE(Math.floor(n / 0x100000000), at + 4);
  } else {
    img.writeBigUInt64LE(BigInt.asUintN(64, BigInt(n)), at);
  }
}

function xattrSize(x: XAttrEntry): number {
  return roundUp(EROFS_XATTR_ENTRY_SIZE + x.suffix.length + x.value.length, 4);
}

function xattrAreaSize(ino: V2Inode): number {
  if (ino.local.length === 0 && ino.shared.length === 0) return 0;
  let n = EROFS_XATTR_IBODY_HEADER_SIZE + 4 * ino.shared.length;
  for (const x of ino.local) n += xattrSize(x);
  return n;
}

class Collector {
  readonly inodes: V2Inode[] = [];
  /** Leaf inode object → its index (hardlinks are the same object under several names). */
  private readonly leafIndex = new Map<Inode, number>();
  private readonly dirsSeen = new Set<Inode>();
  /** Filter bit by prefix index + suffix: names repeat a lot, hashing them once is enough. */
  private readonly filterBits = new Map<string, number>();

  constructor(private readonly algorithm: 'sha256' | 'sha512') {}

  private addXattr(ino: V2Inode, name: ByteString, value: Buffer): void {
    if (name.length === 0) fail('EINVAL', ino.path, 'empty xattr name');
    const { prefixIndex, suffix } = splitXattrName(name);
    if (suffix.length > 0xff) fail('ELIMIT', ino.path, `xattr name ${name} is too long`);
    if (value.length > 0xffff) fail('ELIMIT', ino.path, `xattr ${name} value is longer than 65535 bytes`);
    // prefixIndex is a single digit, so it needs no separator from the suffix
    const nameKey = `${prefixIndex}${suffix}`;
    let bit = this.filterBits.get(nameKey);
    if (bit === undefined) {
      bit = xattrFilterBit(prefixIndex, Buffer.from(suffix, 'latin1'));
      this.filterBits.set(nameKey, bit);
    }
    ino.filter |= 1 << bit;
    ino.local.push({ prefixIndex, suffix, value, key: `${nameKey}\u0100${value.toString('latin1')}` });
  }

  private newInode(src: Inode, path: ByteString): V2Inode {
    const ino: V2Inode = {
      source: src,
      path,
      mode: (src.mode & S_IFMT) | (src.mode & 0o7777),
      fileType: erofsFileType(src.mode),
      local: [],
      shared: [],
      filter: 0,
      nlink: 1,
      layout: EROFS_INODE_FLAT_PLAIN,
      size: 0,
      u: 0,
      inline: EMPTY,
      inlineLength: 0,
    };
    if (ino.fileType === 0) fail('EINVAL', path, `invalid file mode 0${src.mode.toString(8)}`);
    if (!isU32(src.uid)) fail('EINVAL', path, `uid ${src.uid} does not fit in 32 bits`);
    if (!isU32(src.gid)) fail('EINVAL', path, `gid ${src.gid} does not fit in 32 bits`);
    if (!Number.isSafeInteger(src.mtimeSec)) fail('EINVAL', path, `invalid mtime ${src.mtimeSec}`);
    return ino;
  }

  /** metacopy/redirect first, then the stat xattrs by original name with trusted.overlay.* escaped. */
  private addXattrs(ino: V2Inode): void {
    const src = ino.source;
    if (ino.layout === EROFS_INODE_CHUNK_BASED) {
      const digest = src.digest!;
      const metacopy = Buffer.alloc(4 + digest.length);
      metacopy[0] = 0; // ovl_metacopy version
      metacopy[1] = metacopy.length; // len: the whole struct
      metacopy[2] = 0; // flags
      metacopy[3] = METACOPY_ALGORITHM_ID[this.algorithm];
      digest.copy(metacopy, 4);
      this.addXattr(ino, XATTR_OVERLAY_METACOPY, metacopy);
      this.addXattr(ino, XATTR_OVERLAY_REDIRECT, Buffer.from(`/${objectPathForDigest(digest)}`, 'latin1'));
    }
    const srcXattrs = src.xattrsIfAny();
    const names = srcXattrs === undefined ? [] : [...srcXattrs.keys()].sort(compareBytes);
    for (const name of names) {
      const value = srcXattrs!.get(name)!;
      if (!((value as unknown) instanceof Uint8Array)) fail('EINVAL', ino.path, `xattr ${name} value is not bytes`);
      const stored = name.startsWith(XATTR_TRUSTED_OVERLAY_PREFIX)
        ? XATTR_ESCAPED_OVERLAY_PREFIX + name.slice(XATTR_TRUSTED_OVERLAY_PREFIX.length)
        : name;
      checkByteString(stored, ino.path, 'xattr name');
      this.addXattr(ino, stored, Buffer.isBuffer(value) ? value : Buffer.from(value));
    }
  }

  private collectLeaf(src: Inode, path: ByteString): number {
    const known = this.leafIndex.get(src);
    if (known !== undefined) {
      this.inodes[known]!.nlink++;
      return known;
    }
    const ino = this.newInode(src, path);
    switch (src.mode & S_IFMT) {
      case 0o100000: { // regular
        if (src.content !== undefined) {
          if (src.content.length !== src.size) {
            fail('EINVAL', path, `inline content has ${src.content.length} bytes but size is ${src.size}`);
          }
          // rs stores all inline content in the inode's block; the kernel reads i_size / 4096 full
          // blocks from i_u first, so content of a block or more cannot be represented.
          if (src.content.length >= BLOCK_SIZE) {
            fail('ELIMIT', path, `inline content of ${src.content.length} bytes does not fit in one block`);
          }
          ino.size = src.content.length;
          ino.inline = src.content; // only read, never modified
          ino.layout = ino.size === 0 ? EROFS_INODE_FLAT_PLAIN : EROFS_INODE_FLAT_INLINE;
        } else if (src.size > 0) {
          if (!Number.isSafeInteger(src.size)) fail('EINVAL', path, `invalid size ${src.size}`);
          const want = DIGEST_LENGTH[this.algorithm];
          if (src.digest === undefined) fail('EINVAL', path, 'external file has no fs-verity digest');
          if (src.digest.length !== want) {
            fail('EINVAL', path, `${this.algorithm} digest must be ${want} bytes, got ${src.digest.length}`);
          }
          ino.size = src.size;
          ino.layout = EROFS_INODE_CHUNK_BASED;
          ino.u = V2_EXTERNAL_CHUNK_FORMAT;
          ino.inline = NULL_CHUNK;
        } else if (src.size !== 0) {
          fail('EINVAL', path, `invalid size ${src.size}`);
        }
        break;
      }
      case 0o120000: { // symlink
        const target = Buffer.from(checkByteString(src.target ?? '', path, 'symlink target'), 'latin1');
        if (target.length === 0) fail('EINVAL', path, 'empty symlink target');
        if (target.length > V2_SYMLINK_MAX) fail('ELIMIT', path, `symlink target is ${target.length} bytes (max ${V2_SYMLINK_MAX})`);
        ino.size = target.length;
        ino.inline = target;
        ino.layout = EROFS_INODE_FLAT_INLINE;
        break;
      }
      case 0o020000:
      case 0o060000:
        if (!Number.isSafeInteger(src.rdev) || src.rdev < 0) fail('EINVAL', path, `invalid rdev ${src.rdev}`);
        ino.u = src.rdev >>> 0; // rs truncates the u64 rdev to u32
        break;
      default: // fifo, socket: nothing
        break;
    }
    ino.inlineLength = ino.inline.length;
    this.addXattrs(ino);
    this.inodes.push(ino);
    const idx = this.inodes.length - 1;
    this.leafIndex.set(src, idx);
    return idx;
  }

  /** Depth-first pre-order, iterative so that deep trees cannot overflow the JS stack. */
  collect(root: Inode): void {
    if (!root.isDir) fail('EINVAL', '/', 'the root is not a directory');
    interface Frame { index: number; path: ByteString; kids: Array<[ByteString, Inode]>; next: number; entries: DirEntry[]; parent: number }
    const stack: Frame[] = [];
    const openDir = (dir: Inode, path: ByteString, parent: number | undefined): number => {
      if (this.dirsSeen.has(dir)) fail('EINVAL', path, 'directory is linked more than once (hardlinked directory or cycle)');
      this.dirsSeen.add(dir);
      const ino = this.newInode(dir, path);
      this.addXattrs(ino);
      this.inodes.push(ino);
      const index = this.inodes.length - 1;
      stack.push({ index, path, kids: dir.sortedEntries(), next: 0, entries: [], parent: parent ?? index });
      return index;
    };
    openDir(root, '/', undefined);
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      if (frame.next < frame.kids.length) {
        const [name, child] = frame.kids[frame.next++]!;
        const childPath = frame.path === '/' ? `/${name}` : `${frame.path}/${name}`;
        checkByteString(name, childPath, 'file name');
        if (name.length === 0 || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
          fail('EINVAL', childPath, 'invalid file name');
        }
        if (name.length > EROFS_NAME_MAX) fail('ELIMIT', childPath, `file name longer than ${EROFS_NAME_MAX} bytes`);
        const childIndex = child.isDir ? openDir(child, childPath, frame.index) : this.collectLeaf(child, childPath);
        frame.entries.push({ name, inode: childIndex, fileType: this.inodes[childIndex]!.fileType });
        continue;
      }
      stack.pop();
      frame.entries.push({ name: '.', inode: frame.index, fileType: EROFS_FT_DIR });
      frame.entries.push({ name: '..', inode: frame.parent, fileType: EROFS_FT_DIR });
      frame.entries.sort((a, b) => compareBytes(a.name, b.name));
      this.finishDir(this.inodes[frame.index]!, frame.entries);
    }
  }

  /** Greedy split into 4096-byte chunks; a last chunk over 2048 bytes becomes a block too. */
  private finishDir(ino: V2Inode, entries: DirEntry[]): void {
    const blocks: DirEntry[][] = [];
    let rest: DirEntry[] = [];
    let bytes = 0;
    let nlink = 0;
    for (const e of entries) {
      const size = EROFS_DIRENT_SIZE + e.name.length;
      if (e.fileType === EROFS_FT_DIR) nlink++;
      bytes += size;
      if (bytes <= BLOCK_SIZE) {
        rest.push(e);
      } else {
        blocks.push(rest);
        rest = [e];
        bytes = size;
      }
    }
    if (bytes > MAX_INLINE_DIR_TAIL) {
      blocks.push(rest);
      rest = [];
      bytes = 0;
    }
    ino.dirBlocks = blocks;
    ino.dirTail = rest;
    ino.nlink = nlink;
    ino.size = BLOCK_SIZE * blocks.length + bytes;
    ino.inlineLength = bytes;
    ino.layout = rest.length === 0 ? EROFS_INODE_FLAT_PLAIN : EROFS_INODE_FLAT_INLINE;
  }
}

/** Moves every (index, suffix, value) triple used by ≥ 2 inodes to the shared table. */
function shareXattrs(inodes: V2Inode[]): XAttrEntry[] {
  const counts = new Map<string, { x: XAttrEntry; n: number }>();
  for (const ino of inodes) {
    for (const x of ino.local) {
      const c = counts.get(x.key);
      if (c) c.n++;
      else counts.set(x.key, { x, n: 1 });
    }
  }
  const table = [...counts.values()].filter((c) => c.n > 1).map((c) => c.x);
  table.sort((a, b) => a.prefixIndex - b.prefixIndex || compareBytes(a.suffix, b.suffix) || Buffer.compare(a.value, b.value));
  const indexOf = new Map(table.map((x, i) => [x.key, i] as const));
  for (const ino of inodes) {
    const kept: XAttrEntry[] = [];
    for (const x of ino.local) {
      const i = indexOf.get(x.key);
      if (i === undefined) kept.push(x);
      else ino.shared.push(i);
    }
    ino.local = kept;
  }
  return table;
}

function writeDirChunk(img: Buffer, at: number, chunk: DirEntry[], nids: number[]): void {
  let nameOff = EROFS_DIRENT_SIZE * chunk.length;
  let p = at;
  for (const e of chunk) {
    writeU64(img, nids[e.inode]!, p);
    img.writeUInt16LE(nameOff, p + 8);
    img[p + 10] = e.fileType;
    nameOff += e.name.length;
    p += EROFS_DIRENT_SIZE;
  }
  for (const e of chunk) p += img.write(e.name, p, 'latin1');
}

function writeXattrEntry(img: Buffer, at: number, x: XAttrEntry): number {
  img[at] = x.suffix.length;
  img[at + 1] = x.prefixIndex;
  img.writeUInt16LE(x.value.length, at + 2);
  img.write(x.suffix, at + 4, 'latin1');
  x.value.copy(img, at + 4 + x.suffix.length);
  return at + xattrSize(x);
}

/** Writes a composefs-rs V2 image of `fs`. Throws BootcfsError for trees it cannot represent. */
export function writeImageV2(fs: FileSystem, opts: WriteV2Options = {}): Buffer {
  const algorithm = opts.algorithm ?? 'sha256';
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new BootcfsError('EINVAL', `unknown digest algorithm '${String(algorithm)}'`);
  }
  const collector = new Collector(algorithm);
  collector.collect(fs.root);
  const inodes = collector.inodes;
  const shared = shareXattrs(inodes);

  // ---- layout
  const xattrSizes = inodes.map((ino) => {
    const n = xattrAreaSize(ino);
    if (n > MAX_XATTR_AREA) fail('ELIMIT', ino.path, `xattrs need ${n} bytes (max ${MAX_XATTR_AREA})`);
    if (ino.shared.length > 0xff) fail('ELIMIT', ino.path, `${ino.shared.length} shared xattrs (max 255)`);
    return n;
  });
  const offsets: number[] = [];
  let pos = EROFS_INODES_START;
  inodes.forEach((ino, i) => {
    pos = roundUp(pos, 32);
    const meta = EROFS_INODE_EXTENDED_SIZE + xattrSizes[i]!;
    if (ino.layout === EROFS_INODE_FLAT_INLINE) {
      // rs: the last metadata byte and the EXCLUSIVE end of the inline data must share a block.
      const inlineStart = pos + meta;
      const lastMeta = inlineStart - 1;
      const inlineEnd = inlineStart + (ino.size % BLOCK_SIZE);
      if (Math.floor(lastMeta / BLOCK_SIZE) !== Math.floor(inlineEnd / BLOCK_SIZE)) {
        pos = roundUp(pos + (BLOCK_SIZE - (lastMeta % BLOCK_SIZE)), 32);
      }
      // The kernel refuses inline data that crosses a block boundary; rs does not re-check after
      // padding, so large inline files (~4 KiB) with unlucky placement would give a corrupt image.
      const start = pos + meta;
      const len = ino.inlineLength;
      if ((start % BLOCK_SIZE) + len > BLOCK_SIZE) {
        fail('ELIMIT', ino.path, `inline data of ${len} bytes would cross a block boundary`);
      }
    }
    offsets.push(pos);
    pos += meta + ino.inlineLength;
    pos = roundUp(pos, 32);
  });
  const nids = offsets.map((o) => o / 32);
  if (nids.length > 0 && nids[nids.length - 1]! > 0xffffffff) {
    throw new BootcfsError('ELIMIT', 'too many inodes: nid does not fit in 32 bits');
  }
  const sharedOffsets: number[] = [];
  for (const x of shared) {
    sharedOffsets.push(pos);
    pos += xattrSize(x);
  }
  pos = roundUp(pos, BLOCK_SIZE);
  const blockOffsets: number[] = [];
  for (const ino of inodes) {
    blockOffsets.push(pos);
    pos += BLOCK_SIZE * (ino.dirBlocks?.length ?? 0);
  }
  const end = pos;
  if (end / BLOCK_SIZE > 0xffffffff || (sharedOffsets.length > 0 && sharedOffsets[sharedOffsets.length - 1]! / 4 > 0xffffffff)) {
    throw new BootcfsError('ELIMIT', 'image too large');
  }

  // ---- emit
  const img = Buffer.alloc(end);
  img.writeUInt32LE(COMPOSEFS_MAGIC, 0);
  img.writeUInt32LE(COMPOSEFS_EROFS_VERSION, 4);
  img.writeUInt32LE(0, 8); // flags
  img.writeUInt32LE(COMPOSEFS_VERSION_V2, 12);

  const sb = EROFS_SUPER_OFFSET;
  img.writeUInt32LE(EROFS_MAGIC, sb);
  img.writeUInt32LE(EROFS_FEATURE_COMPAT_MTIME | EROFS_FEATURE_COMPAT_XATTR_FILTER, sb + 8);
  img[sb + 12] = BLOCK_BITS;
  img.writeUInt16LE(nids[0]!, sb + 14);
  writeU64(img, inodes.length, sb + 16);
  img.writeUInt32LE(end / BLOCK_SIZE, sb + 36);

  inodes.forEach((ino, i) => {
    const at = offsets[i]!;
    const xsize = xattrSizes[i]!;
    let u = ino.u;
    if (ino.dirBlocks) u = ino.dirBlocks.length > 0 ? blockOffsets[i]! / BLOCK_SIZE : 0;
    img.writeUInt16LE(iFormat(true, ino.layout), at);
    img.writeUInt16LE(xsize === 0 ? 0 : (xsize - EROFS_XATTR_IBODY_HEADER_SIZE) / 4 + 1, at + 2);
    img.writeUInt16LE(ino.mode & 0xffff, at + 4);
    writeU64(img, ino.size, at + 8);
    img.writeUInt32LE(u >>> 0, at + 16);
    img.writeUInt32LE(nids[i]!, at + 20);
    img.writeUInt32LE(ino.source.uid, at + 24);
    img.writeUInt32LE(ino.source.gid, at + 28);
    writeU64(img, ino.source.mtimeSec, at + 32); // rs: st_mtim_sec as u64
    // i_mtime_nsec stays 0: composefs-rs' Stat has no nanoseconds.
    img.writeUInt32LE(ino.nlink, at + 44);
    let p = at + EROFS_INODE_EXTENDED_SIZE;
    if (xsize > 0) {
      img.writeUInt32LE(~ino.filter >>> 0, p);
      img[p + 4] = ino.shared.length;
      p += EROFS_XATTR_IBODY_HEADER_SIZE;
      for (const s of ino.shared) {
        img.writeUInt32LE(sharedOffsets[s]! / 4, p);
        p += 4;
      }
      for (const x of ino.local) p = writeXattrEntry(img, p, x);
    }
    if (ino.dirTail) writeDirChunk(img, p, ino.dirTail, nids);
    else ino.inline.copy(img, p);
  });

  shared.forEach((x, i) => writeXattrEntry(img, sharedOffsets[i]!, x));

  inodes.forEach((ino, i) => {
    ino.dirBlocks?.forEach((chunk, k) => writeDirChunk(img, blockOffsets[i]! + k * BLOCK_SIZE, chunk, nids));
  });
  return img;
}
