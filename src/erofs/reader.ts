/**
 * Low-level reader for composefs EROFS images (both the libcomposefs "v1" layout and the composefs-rs
 * "v2" layout: they differ only in choices the reader does not care about — inode order, compact vs
 * extended inodes, absolute vs relative shared-xattr ids — see composefs-format.md §2.1/§2.5).
 *
 * This module gives a faithful view of what is stored: inodes, their xattrs in on-disk order (inline
 * entries, then shared ones), directory entries, symlink targets and flat file data. The composefs
 * meaning of it all (metacopy/redirect, whiteouts, escaping) is in src/composefs/info.ts.
 *
 * The input is untrusted. Every offset and length is checked against the filesystem size declared by the
 * superblock before it is read; every violation is a FormatError carrying the byte offset of the bad
 * field. Work is bounded by a budget proportional to the image size, so overlapping or self-referencing
 * structures (many inodes sharing the same directory blocks, inodes overlapping each other...) cannot
 * make a small image cost quadratic time or memory.
 */
import { FormatError } from '../errors.js';
import { fileTypeOfMode, fromBytes, type ByteString, type FileType } from '../tree/model.js';
import {
  BLOCK_BITS,
  BLOCK_SIZE,
  COMPOSEFS_EROFS_VERSION,
  COMPOSEFS_MAGIC,
  EROFS_CHUNK_FORMAT_BLKBITS_MASK,
  EROFS_CHUNK_FORMAT_INDEXES,
  EROFS_DIRENT_SIZE,
  EROFS_FT_SYMLINK,
  EROFS_INODE_CHUNK_BASED,
  EROFS_INODE_COMPACT_SIZE,
  EROFS_INODE_EXTENDED_SIZE,
  EROFS_INODE_FLAT_INLINE,
  EROFS_INODE_FLAT_PLAIN,
  EROFS_INODES_START,
  EROFS_ISLOTBITS,
  EROFS_MAGIC,
  EROFS_SUPER_OFFSET,
  EROFS_SUPER_SIZE,
  EROFS_XATTR_ENTRY_SIZE,
  EROFS_XATTR_IBODY_HEADER_SIZE,
  XATTR_PREFIXES,
  erofsFileType,
  EROFS_NAME_MAX,
} from './format.js';


/** feature_incompat bits this reader understands: ZERO_PADDING (meaningless without compression) and CHUNKED_FILE. */
const SUPPORTED_INCOMPAT = 0x1 | 0x4;

export interface ImageHeader {
  /** composefs header `version` (LCFS_EROFS_VERSION, always 1). */
  version: number;
  /** composefs header flags (bit 0: the image has POSIX ACLs). */
  flags: number;
  /** Image format generation: 0 or 1 for libcomposefs images, 2 for composefs-rs native images. */
  composefsVersion: number;
  featureCompat: number;
  featureIncompat: number;
  blkszbits: number;
  rootNid: number;
  inos: number;
  buildTimeSec: number;
  buildTimeNsec: number;
  /** Filesystem size in 4096-byte blocks. */
  blocks: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
}

export type DataLayout = 'flat-plain' | 'flat-inline' | 'chunk-based';

export interface XattrEntry {
  /** Full name as a byte string: prefix (from the index) + stored suffix. */
  name: ByteString;
  value: Buffer;
  prefixIndex: number;
  /** Whether it came from the shared xattr table (via an id in the inode) or was stored inline. */
  shared: boolean;
  /** Byte offset of the entry header in the image. */
  offset: number;
  /** Byte offset of the first value byte. */
  valueOffset: number;
}

export interface ErofsInode {
  nid: number;
  /** Byte offset of the inode header. */
  offset: number;
  extended: boolean;
  layout: DataLayout;
  mode: number;
  type: FileType;
  uid: number;
  gid: number;
  size: number;
  /** As the kernel reports it: compact inodes carry no mtime and get the superblock build time. */
  mtimeSec: number;
  mtimeNsec: number;
  nlink: number;
  /** Device number (Linux new dev_t encoding) for character/block devices, else 0. */
  rdev: number;
  /** i_ino as stored. */
  ino: number;
  /** Raw i_u field: first data block, rdev or chunk format depending on the type/layout. */
  rawU: number;
  /** xattr name filter as stored (bitwise NOT of the bloom bits). */
  nameFilter: number;
  xattrs: XattrEntry[];
  /** Size of the inode header (32 or 64) and of its xattr area. */
  headerSize: number;
  xattrAreaSize: number;
  /** flat layouts: out-of-line blocks (starting at rawU) and the inline tail (FLAT_INLINE only). */
  blockCount: number;
  tailOffset: number;
  tailSize: number;
  /** chunk-based layout: log2 of the chunk size and the number of chunks (see readChunkIndexes). */
  chunkBits: number;
  chunkCount: number;
}

export interface DirEntry {
  name: ByteString;
  nid: number;
  /** EROFS_FT_* value as stored in the dirent. */
  fileType: number;
  /** Byte offset of the dirent in the image. */
  offset: number;
}

export interface OpenOptions {
  /**
   * Work budget in bytes of structure parsed. Defaults to 4 × image size + 1 MiB: a well-formed image
   * never parses a byte of it more than once or twice, a hostile one with overlapping structures hits
   * the limit and gets a FormatError instead of quadratic time.
   */
  workBudget?: number;
}

/** Parses the composefs header and the superblock; everything else is read lazily. */
export function openImage(buf: Buffer, opts: OpenOptions = {}): ErofsImage {
  return new ErofsImage(buf, opts);
}

export class ErofsImage {
  readonly buf: Buffer;
  readonly header: ImageHeader;
  /** End of the filesystem (blocks × 4096): nothing beyond it is ever read. */
  readonly end: number;
  private readonly metaBase: number;
  private readonly xattrBase: number;
  private readonly inodes = new Map<number, ErofsInode>();
  /** Shared xattr entries by byte offset: parsed once however many inodes reference them. */
  private readonly sharedXattrs = new Map<number, XattrEntry>();
  private budget: number;

  constructor(buf: Buffer, opts: OpenOptions = {}) {
    this.buf = buf;
    if (buf.length < EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE) {
      throw new FormatError(`image is too small (${buf.length} bytes) to hold a composefs header and EROFS superblock`, buf.length);
    }
    if (buf.readUInt32LE(0) !== COMPOSEFS_MAGIC) throw new FormatError('not a composefs image: bad header magic', 0);
    const version = buf.readUInt32LE(4);
    if (version !== COMPOSEFS_EROFS_VERSION) throw new FormatError(`unsupported composefs header version ${version}`, 4);
    const sb = EROFS_SUPER_OFFSET;
    if (buf.readUInt32LE(sb) !== EROFS_MAGIC) throw new FormatError('bad EROFS superblock magic', sb);
    const blkszbits = buf[sb + 12]!;
    if (blkszbits !== BLOCK_BITS) throw new FormatError(`unsupported EROFS block size 2^${blkszbits} (only 4096 is used by composefs)`, sb + 12);
    const featureIncompat = buf.readUInt32LE(sb + 80);
    if ((featureIncompat & ~SUPPORTED_INCOMPAT) !== 0) {
      throw new FormatError(`unsupported EROFS incompatible features 0x${featureIncompat.toString(16)}`, sb + 80);
    }
    const blocks = buf.readUInt32LE(sb + 36);
    const end = blocks * BLOCK_SIZE;
    if (end < EROFS_INODES_START) throw new FormatError(`superblock block count ${blocks} is too small`, sb + 36);
    if (buf.length < end) {
      throw new FormatError(`image is truncated: the superblock declares ${end} bytes (${blocks} blocks) but the image has ${buf.length}`, buf.length);
    }
    const metaBlkaddr = buf.readUInt32LE(sb + 40);
    const xattrBlkaddr = buf.readUInt32LE(sb + 44);
    if (metaBlkaddr >= blocks) throw new FormatError(`meta_blkaddr ${metaBlkaddr} is past the end of the image`, sb + 40);
    if (xattrBlkaddr >= blocks) throw new FormatError(`xattr_blkaddr ${xattrBlkaddr} is past the end of the image`, sb + 44);
    this.header = {
      version,
      flags: buf.readUInt32LE(8),
      composefsVersion: buf.readUInt32LE(12),
      featureCompat: buf.readUInt32LE(sb + 8),
      featureIncompat,
      blkszbits,
      rootNid: buf.readUInt16LE(sb + 14),
      inos: this.safeU64(sb + 16, 'inode count'),
      buildTimeSec: this.safeI64(sb + 24, 'build time'),
      buildTimeNsec: buf.readUInt32LE(sb + 32),
      blocks,
      metaBlkaddr,
      xattrBlkaddr,
    };
    this.end = end;
    this.metaBase = metaBlkaddr * BLOCK_SIZE;
    this.xattrBase = xattrBlkaddr * BLOCK_SIZE;
    this.budget = opts.workBudget ?? 4 * end + (1 << 20);
  }

  /** Account for `n` bytes of parsing work; throws once the image has cost far more than its size. */
  charge(n: number, offset: number): void {
    this.budget -= n;
    if (this.budget < 0) {
      throw new FormatError('image structures overlap or repeat so much that reading it exceeds the work limit', offset);
    }
  }

  /** Throws unless [off, off+len) lies inside the filesystem. */
  check(off: number, len: number, what: string): void {
    if (!(off >= 0 && len >= 0 && off + len <= this.end)) {
      throw new FormatError(`${what} (${len} bytes) extends past the end of the image (${this.end} bytes)`, off);
    }
  }

  private safeU64(off: number, what: string): number {
    const lo = this.buf.readUInt32LE(off);
    const hi = this.buf.readUInt32LE(off + 4);
    if (hi >= 0x200000) throw new FormatError(`${what} is too large`, off);
    return hi * 0x100000000 + lo;
  }

  /** Timestamps are signed (libcomposefs prints them with PRIi64). */
  private safeI64(off: number, what: string): number {
    const v = this.buf.readBigInt64LE(off);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new FormatError(`${what} is out of range`, off);
    return Number(v);
  }

  /** Byte offset of an inode slot. */
  inodeOffset(nid: number): number {
    return this.metaBase + nid * (1 << EROFS_ISLOTBITS);
  }

  /** Parse (once; cached) the inode `nid`. `refOffset` is where the reference to it was found. */
  inode(nid: number, refOffset = EROFS_SUPER_OFFSET + 14): ErofsInode {
    const cached = this.inodes.get(nid);
    if (cached) return cached;
    const ino = this.parseInode(nid, refOffset);
    this.inodes.set(nid, ino);
    return ino;
  }

  private parseInode(nid: number, refOffset: number): ErofsInode {
    const buf = this.buf;
    if (!Number.isSafeInteger(nid) || nid < 0) throw new FormatError(`invalid inode number ${nid}`, refOffset);
    const off = this.inodeOffset(nid);
    if (off < EROFS_INODES_START || off + EROFS_INODE_COMPACT_SIZE > this.end) {
      throw new FormatError(`inode nid ${nid} (byte ${off}) lies outside the inode area`, refOffset);
    }
    const iFormat = buf.readUInt16LE(off);
    if ((iFormat & ~0xf) !== 0) throw new FormatError(`inode ${nid}: unsupported i_format 0x${iFormat.toString(16)}`, off);
    const extended = (iFormat & 1) === 1;
    const datalayout = (iFormat >> 1) & 7;
    let layout: DataLayout;
    if (datalayout === EROFS_INODE_FLAT_PLAIN) layout = 'flat-plain';
    else if (datalayout === EROFS_INODE_FLAT_INLINE) layout = 'flat-inline';
    else if (datalayout === EROFS_INODE_CHUNK_BASED) layout = 'chunk-based';
    else throw new FormatError(`inode ${nid}: unsupported data layout ${datalayout} (compressed?)`, off);
    const headerSize = extended ? EROFS_INODE_EXTENDED_SIZE : EROFS_INODE_COMPACT_SIZE;
    this.check(off, headerSize, `inode ${nid}`);
    this.charge(headerSize, off);
    const xattrIcount = buf.readUInt16LE(off + 2);
    const mode = buf.readUInt16LE(off + 4);
    const type = fileTypeOfMode(mode);
    if (type === undefined) throw new FormatError(`inode ${nid}: invalid file type in mode 0${mode.toString(8)}`, off + 4);
    const rawU = buf.readUInt32LE(off + 16);
    const inoNum = buf.readUInt32LE(off + 20);
    let size: number, uid: number, gid: number, nlink: number, mtimeSec: number, mtimeNsec: number;
    if (extended) {
      size = this.safeU64(off + 8, `inode ${nid}: i_size`);
      uid = buf.readUInt32LE(off + 24);
      gid = buf.readUInt32LE(off + 28);
      mtimeSec = this.safeI64(off + 32, `inode ${nid}: i_mtime`);
      mtimeNsec = buf.readUInt32LE(off + 40);
      nlink = buf.readUInt32LE(off + 44);
    } else {
      nlink = buf.readUInt16LE(off + 6);
      size = buf.readUInt32LE(off + 8);
      uid = buf.readUInt16LE(off + 24);
      gid = buf.readUInt16LE(off + 26);
      mtimeSec = this.header.buildTimeSec;
      mtimeNsec = this.header.buildTimeNsec;
    }

    // xattr area: 12-byte header, shared ids, inline entries
    const xattrAreaSize = xattrIcount === 0 ? 0 : EROFS_XATTR_IBODY_HEADER_SIZE + (xattrIcount - 1) * EROFS_XATTR_ENTRY_SIZE;
    const xattrStart = off + headerSize;
    let nameFilter = 0xffffffff;
    const xattrs: XattrEntry[] = [];
    if (xattrAreaSize > 0) {
      this.check(xattrStart, xattrAreaSize, `inode ${nid}: xattr area`);
      this.charge(xattrAreaSize, xattrStart);
      nameFilter = buf.readUInt32LE(xattrStart);
      const sharedCount = buf[xattrStart + 4]!;
      const idsStart = xattrStart + EROFS_XATTR_IBODY_HEADER_SIZE;
      const inlineStart = idsStart + 4 * sharedCount;
      const areaEnd = xattrStart + xattrAreaSize;
      if (inlineStart > areaEnd) {
        throw new FormatError(`inode ${nid}: ${sharedCount} shared xattr ids do not fit in the ${xattrAreaSize}-byte xattr area`, xattrStart + 4);
      }
      let p = inlineStart;
      while (p < areaEnd) {
        const e = this.parseXattrEntry(p, areaEnd, false, nid);
        xattrs.push(e.entry);
        p = e.next;
      }
      for (let i = 0; i < sharedCount; i++) {
        const idOff = idsStart + 4 * i;
        const id = buf.readUInt32LE(idOff);
        const entryOff = this.xattrBase + 4 * id;
        if (entryOff + EROFS_XATTR_ENTRY_SIZE > this.end) {
          throw new FormatError(`inode ${nid}: shared xattr id ${id} points past the end of the image`, idOff);
        }
        let shared = this.sharedXattrs.get(entryOff);
        if (!shared) {
          shared = this.parseXattrEntry(entryOff, this.end, true, nid, idOff).entry;
          this.sharedXattrs.set(entryOff, shared);
        }
        xattrs.push(shared);
      }
    }

    const base = {
      nid, offset: off, extended, layout, mode, type, uid, gid, size, mtimeSec, mtimeNsec, nlink,
      rdev: type === 'chr' || type === 'blk' ? rawU : 0, ino: inoNum, rawU, nameFilter, xattrs, headerSize, xattrAreaSize,
      blockCount: 0, tailOffset: xattrStart + xattrAreaSize, tailSize: 0, chunkBits: 0, chunkCount: 0,
    };
    const dataTypes = type === 'dir' || type === 'reg' || type === 'lnk';
    if (!dataTypes) return base; // devices, fifos, sockets: no data is ever read (the kernel ignores i_size for them)

    if (layout === 'chunk-based') {
      if (type !== 'reg') throw new FormatError(`inode ${nid}: chunk-based layout on a ${type} inode`, off);
      const chunkFormat = rawU & 0xffff;
      if ((chunkFormat & EROFS_CHUNK_FORMAT_INDEXES) !== 0 || (chunkFormat & ~(EROFS_CHUNK_FORMAT_BLKBITS_MASK | EROFS_CHUNK_FORMAT_INDEXES)) !== 0) {
        throw new FormatError(`inode ${nid}: unsupported chunk format 0x${chunkFormat.toString(16)}`, off + 16);
      }
      const chunkBits = BLOCK_BITS + (chunkFormat & EROFS_CHUNK_FORMAT_BLKBITS_MASK);
      const chunkCount = Math.ceil(size / 2 ** chunkBits);
      // The chunk index array is not validated here: composefs stubs never point at data, and mkcomposefs
      // even writes files over 8 TiB with their 4096-byte index array moved out of the inode (so what
      // follows the inode is not an index array). readChunkIndexes() reads it, bounds-checked, on demand.
      return { ...base, chunkBits, chunkCount };
    }

    // flat layouts. Kernel semantics: FLAT_INLINE keeps the last (possibly full) block inline.
    const nBlocks = Math.ceil(size / BLOCK_SIZE);
    let blockCount = nBlocks;
    let tailSize = 0;
    if (layout === 'flat-inline' && size > 0) {
      blockCount = nBlocks - 1;
      tailSize = size - blockCount * BLOCK_SIZE;
      this.check(base.tailOffset, tailSize, `inode ${nid}: inline data`);
      if ((base.tailOffset % BLOCK_SIZE) + tailSize > BLOCK_SIZE) {
        throw new FormatError(`inode ${nid}: inline data crosses a block boundary`, base.tailOffset);
      }
    }
    if (blockCount > 0 && (rawU + blockCount) * BLOCK_SIZE > this.end) {
      throw new FormatError(`inode ${nid}: data blocks ${rawU}..${rawU + blockCount - 1} are past the end of the image`, off + 16);
    }
    if (blockCount > 0 && rawU * BLOCK_SIZE < EROFS_INODES_START) {
      throw new FormatError(`inode ${nid}: data block ${rawU} overlaps the superblock`, off + 16);
    }
    return { ...base, blockCount, tailSize };
  }

  private parseXattrEntry(p: number, limit: number, shared: boolean, nid: number, refOffset = p): { entry: XattrEntry; next: number } {
    const buf = this.buf;
    if (p + EROFS_XATTR_ENTRY_SIZE > limit) {
      throw new FormatError(`inode ${nid}: xattr entry header runs past the end of its area`, p);
    }
    const nameLen = buf[p]!;
    const prefixIndex = buf[p + 1]!;
    const valueSize = buf.readUInt16LE(p + 2);
    const total = EROFS_XATTR_ENTRY_SIZE + nameLen + valueSize;
    const next = p + ((total + 3) & ~3);
    if (p + total > limit) {
      throw new FormatError(`inode ${nid}: ${shared ? 'shared ' : ''}xattr entry (${total} bytes) runs past the end of its ${shared ? 'image' : 'xattr area'}`, p);
    }
    if (!shared && next > limit) throw new FormatError(`inode ${nid}: xattr entry padding runs past the end of the xattr area`, p);
    if (shared) this.charge(total, refOffset); // once per distinct shared entry (they are cached)
    if (prefixIndex >= XATTR_PREFIXES.length) {
      throw new FormatError(`inode ${nid}: unsupported xattr name prefix index ${prefixIndex}`, p + 1);
    }
    const suffix = buf.subarray(p + EROFS_XATTR_ENTRY_SIZE, p + EROFS_XATTR_ENTRY_SIZE + nameLen);
    if (suffix.includes(0)) throw new FormatError(`inode ${nid}: xattr name contains a NUL byte`, p + EROFS_XATTR_ENTRY_SIZE);
    const name = XATTR_PREFIXES[prefixIndex]! + fromBytes(suffix);
    if (name.length === 0) throw new FormatError(`inode ${nid}: empty xattr name`, p);
    const valueOffset = p + EROFS_XATTR_ENTRY_SIZE + nameLen;
    const value = buf.subarray(valueOffset, valueOffset + valueSize);
    return { entry: { name, value, prefixIndex, shared, offset: p, valueOffset }, next };
  }

  /**
   * The data of a flat (plain or inline) inode as (offset, length) pieces: out-of-line blocks then the
   * inline tail. The last out-of-line block of a FLAT_PLAIN inode is partial.
   */
  dataPieces(ino: ErofsInode): Array<{ offset: number; length: number }> {
    if (ino.layout === 'chunk-based') throw new FormatError(`inode ${ino.nid}: chunk-based data is not stored in the image`, ino.offset);
    const pieces: Array<{ offset: number; length: number }> = [];
    let remaining = ino.size;
    for (let b = 0; b < ino.blockCount; b++) {
      const length = Math.min(BLOCK_SIZE, remaining);
      pieces.push({ offset: (ino.rawU + b) * BLOCK_SIZE, length });
      remaining -= length;
    }
    if (ino.tailSize > 0) pieces.push({ offset: ino.tailOffset, length: ino.tailSize });
    return pieces;
  }

  /** Full content of a flat inode (regular file with inline data, symlink, directory). */
  readData(nid: number, maxSize = Infinity): Buffer {
    const ino = this.inode(nid);
    if (ino.size > maxSize) throw new FormatError(`inode ${nid}: size ${ino.size} exceeds the limit of ${maxSize} bytes`, ino.offset + 8);
    const pieces = this.dataPieces(ino);
    this.charge(ino.size, ino.offset);
    if (pieces.length === 1) return this.buf.subarray(pieces[0]!.offset, pieces[0]!.offset + pieces[0]!.length);
    return Buffer.concat(pieces.map((p) => this.buf.subarray(p.offset, p.offset + p.length)));
  }

  /** Inline tail bytes of an inode (the FLAT_INLINE data tail; empty for other layouts). */
  readInline(nid: number): Buffer {
    const ino = this.inode(nid);
    return this.buf.subarray(ino.tailOffset, ino.tailOffset + ino.tailSize);
  }

  /**
   * Block addresses (u32, 0xffffffff = hole) of a chunk-based inode, read from right after its xattr
   * area as the kernel does. composefs stubs are all holes.
   */
  readChunkIndexes(nid: number): number[] {
    const ino = this.inode(nid);
    if (ino.layout !== 'chunk-based') throw new FormatError(`inode ${nid} is not chunk-based`, ino.offset);
    this.check(ino.tailOffset, 4 * ino.chunkCount, `inode ${nid}: chunk index array`);
    this.charge(4 * ino.chunkCount, ino.tailOffset);
    const out: number[] = [];
    for (let i = 0; i < ino.chunkCount; i++) out.push(this.buf.readUInt32LE(ino.tailOffset + 4 * i));
    return out;
  }

  /** Symlink target as stored (all `i_size` bytes). */
  readLink(nid: number): ByteString {
    const ino = this.inode(nid);
    if (ino.type !== 'lnk') throw new FormatError(`inode ${nid} is not a symlink`, ino.offset + 4);
    return fromBytes(this.readData(nid));
  }

  /**
   * Directory entries in on-disk order, including `.` and `..`. Validates every dirent (name offsets in
   * range and increasing, names non-empty, ≤255 bytes, without '/' or NUL, strictly sorted across the
   * whole directory, nids 64-bit values that fit, file types known).
   */
  readDir(nid: number): DirEntry[] {
    const ino = this.inode(nid);
    if (ino.type !== 'dir') throw new FormatError(`inode ${nid} is not a directory`, ino.offset + 4);
    const out: DirEntry[] = [];
    let prev: ByteString | undefined;
    for (const piece of this.dataPieces(ino)) {
      this.charge(piece.length, piece.offset);
      for (const e of this.parseDirChunk(nid, piece.offset, piece.length)) {
        if (prev !== undefined && !(prev < e.name)) {
          throw new FormatError(`directory ${nid}: entry '${printable(e.name)}' is out of order or duplicated`, e.offset);
        }
        prev = e.name;
        out.push(e);
      }
    }
    return out;
  }

  private parseDirChunk(dirNid: number, start: number, size: number): DirEntry[] {
    const buf = this.buf;
    if (size < EROFS_DIRENT_SIZE) throw new FormatError(`directory ${dirNid}: ${size}-byte directory block is too small for a dirent`, start);
    const firstNameoff = buf.readUInt16LE(start + 8);
    if (firstNameoff < EROFS_DIRENT_SIZE || firstNameoff % EROFS_DIRENT_SIZE !== 0 || firstNameoff >= size) {
      throw new FormatError(`directory ${dirNid}: invalid first name offset ${firstNameoff} in a ${size}-byte block`, start + 8);
    }
    const n = firstNameoff / EROFS_DIRENT_SIZE;
    const out: DirEntry[] = [];
    for (let i = 0; i < n; i++) {
      const d = start + i * EROFS_DIRENT_SIZE;
      const nameoff = buf.readUInt16LE(d + 8);
      let nameEnd: number;
      if (i + 1 < n) {
        nameEnd = buf.readUInt16LE(d + EROFS_DIRENT_SIZE + 8);
        if (nameEnd > size) throw new FormatError(`directory ${dirNid}: name offset ${nameEnd} past the end of the block`, d + EROFS_DIRENT_SIZE + 8);
      } else {
        if (nameoff >= size) throw new FormatError(`directory ${dirNid}: name offset ${nameoff} past the end of the block`, d + 8);
        // the last name runs to the first NUL (block padding) or the end of the block
        const z = buf.subarray(start + nameoff, start + size).indexOf(0);
        nameEnd = z === -1 ? size : nameoff + z;
      }
      if (nameoff < firstNameoff || nameEnd <= nameoff) {
        throw new FormatError(`directory ${dirNid}: name offsets out of order or out of range (${nameoff}..${nameEnd})`, d + 8);
      }
      const nameBytes = buf.subarray(start + nameoff, start + nameEnd);
      if (nameBytes.length > EROFS_NAME_MAX) throw new FormatError(`directory ${dirNid}: name longer than ${EROFS_NAME_MAX} bytes`, start + nameoff);
      if (nameBytes.includes(0) || nameBytes.includes(0x2f)) {
        throw new FormatError(`directory ${dirNid}: name contains a NUL or '/' byte`, start + nameoff);
      }
      const lo = buf.readUInt32LE(d);
      const hi = buf.readUInt32LE(d + 4);
      if (hi !== 0) throw new FormatError(`directory ${dirNid}: dirent nid is out of range`, d);
      const fileType = buf[d + 10]!;
      if (fileType > EROFS_FT_SYMLINK) throw new FormatError(`directory ${dirNid}: unknown dirent file type ${fileType}`, d + 10);
      out.push({ name: fromBytes(nameBytes), nid: lo, fileType, offset: d });
    }
    return out;
  }

  /** Checks that a dirent's file type agrees with the inode it points to. */
  checkDirentType(e: DirEntry, ino: ErofsInode): void {
    if (erofsFileType(ino.mode) !== e.fileType) {
      throw new FormatError(`dirent '${printable(e.name)}' has file type ${e.fileType} but inode ${e.nid} is a ${ino.type}`, e.offset + 10);
    }
  }
}

/** A byte-string name made safe for an error message. */
export function printable(s: ByteString): string {
  return s.replace(/[^\x21-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
