/**
 * The C-compatible ("v1") composefs EROFS image writer: byte-identical to `mkcomposefs` 1.0.8
 * (libcomposefs lcfs-writer-erofs.c). The image digest ends up in signed kernel command lines, so every
 * layout decision below mirrors the C writer exactly, including its quirks; see
 * reference/composefs-format.md §2.3 for the step-by-step description.
 *
 * Pipeline: buildV1Tree (private rewritten copy, BFS order) → shared xattr table → inode placement
 * (compact/extended, tail packing) → one pass writing into a preallocated buffer.
 * Cost: O(n log n) for sorting names/xattrs, otherwise linear; memory = the image (metadata only) plus
 * one small record per inode.
 */
import { BootcfsError } from '../errors.js';
import { S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK, writeDigestPath, type FileSystem } from '../tree/model.js';
import {
  BLOCK_SIZE, COMPOSEFS_EROFS_VERSION, COMPOSEFS_FLAGS_HAS_ACL, COMPOSEFS_MAGIC, EROFS_DIRENT_SIZE,
  EROFS_FEATURE_COMPAT_MTIME, EROFS_FEATURE_COMPAT_XATTR_FILTER, EROFS_INODE_CHUNK_BASED,
  EROFS_INODE_COMPACT_SIZE, EROFS_INODE_EXTENDED_SIZE, EROFS_INODE_FLAT_INLINE, EROFS_INODE_FLAT_PLAIN,
  EROFS_INODES_START, EROFS_MAGIC, EROFS_SUPER_OFFSET, EROFS_XATTR_IBODY_HEADER_SIZE,
  EROFS_XATTR_INDEX_NONE, EROFS_XATTR_INDEX_POSIX_ACL_ACCESS, EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT,
  EROFS_XATTR_INDEX_SECURITY, EROFS_XATTR_INDEX_TRUSTED, EROFS_XATTR_INDEX_USER, erofsFileType,
  iFormat, xattrFilterBit, XATTR_OVERLAY_METACOPY, XATTR_OVERLAY_REDIRECT,
} from './format.js';
import { buildV1Tree, chunkBitsOf, metacopyValue, writeMetacopyValue, type WNode } from './writer-v1-tree.js';

export interface WriteV1Options {
  /** `--min-version` (0 or 1). */
  minVersion?: number;
  /** `--max-version` (0 or 1). */
  maxVersion?: number;
}

/** LCFS_VERSION_MAX */
export const V1_VERSION_MAX = 1;

const SLOT = 32;
/** At most this many xattrs of one inode are referenced from the shared table (EROFS_XATTR_LONG_PREFIX). */
const MAX_SHARED_PER_INODE = 0x80;

/**
 * mkcomposefs semantics: with neither option given the range is 0..1; once either is given the other
 * one defaults to 0; max is raised to min. Versions above 1 are rejected.
 */
export function resolveV1Versions(opts: WriteV1Options = {}): { min: number; max: number } {
  let min: number;
  let max: number;
  if (opts.minVersion === undefined && opts.maxVersion === undefined) {
    min = 0;
    max = 1;
  } else {
    min = opts.minVersion ?? 0;
    max = opts.maxVersion ?? 0;
  }
  for (const v of [min, max]) {
    if (!Number.isInteger(v) || v < 0 || v > V1_VERSION_MAX) {
      throw new BootcfsError('EINVAL', `unsupported composefs format version ${v} (supported: 0..${V1_VERSION_MAX})`);
    }
  }
  if (max < min) max = min;
  return { min, max };
}

// ------------------------------------------------------------------------------------------- xattrs

/** xattr_erofs_entry_index: C checks these prefixes in this order and never uses `lustre.`. */
const PREFIXES: ReadonlyArray<readonly [string, number]> = [
  ['user.', EROFS_XATTR_INDEX_USER],
  ['system.posix_acl_access', EROFS_XATTR_INDEX_POSIX_ACL_ACCESS],
  ['system.posix_acl_default', EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT],
  ['trusted.', EROFS_XATTR_INDEX_TRUSTED],
  ['security.', EROFS_XATTR_INDEX_SECURITY],
];

/** Encoding of one xattr name: prefix index, stored suffix and its name-filter bit. */
interface XattrName {
  index: number;
  suffix: string;
  filterBit: number;
}

function encodeName(key: string): XattrName {
  let index = EROFS_XATTR_INDEX_NONE;
  let suffix = key;
  for (const [p, i] of PREFIXES) {
    if (key.startsWith(p)) {
      index = i;
      suffix = key.slice(p.length);
      break;
    }
  }
  return { index, suffix, filterBit: xattrFilterBit(index, Buffer.from(suffix, 'latin1')) };
}

/** One distinct (name, value) pair with its use count. */
interface XattrRec {
  key: string;
  value: string;
  name: XattrName;
  /** Size of the encoded entry, padded to 4 bytes. */
  entrySize: number;
  count: number;
  /** Byte offset in the shared table, or -1 if stored inline. */
  sharedOffset: number;
}

function roundUp4(x: number): number {
  return (x + 3) & ~3;
}
function roundUpTo(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/** xattrs_ht_sort: descending by name, then longer value first, then value bytes descending. */
function compareRecDesc(a: XattrRec, b: XattrRec): number {
  if (a.key !== b.key) return a.key < b.key ? 1 : -1;
  if (a.value.length !== b.value.length) return b.value.length - a.value.length;
  return a.value < b.value ? 1 : a.value > b.value ? -1 : 0;
}

interface SharedTable {
  /** The shared table, in on-disk order. */
  recs: XattrRec[];
  size: number;
  /** Every inode's explicit xattr records, flattened in BFS order; inode i owns [start[i], start[i+1]). */
  nodeRecs: XattrRec[];
  start: Uint32Array;
  /**
   * Implicit overlay xattrs (WNode.implicitMetacopy / redirectPayload): per inode the group of equal
   * values (-1: none), and per group its record when the value is shared (used more than once).
   */
  metacopyGroup: Int32Array;
  redirectGroup: Int32Array;
  sharedGroupRecs: { metacopy: Array<XattrRec | undefined>; redirect: Array<XattrRec | undefined> };
}

const METACOPY_NAME = encodeName(XATTR_OVERLAY_METACOPY);
const REDIRECT_NAME = encodeName(XATTR_OVERLAY_REDIRECT);

function implicitRec(key: string, name: XattrName, value: string, count: number): XattrRec {
  return { key, value, name, entrySize: roundUp4(4 + name.suffix.length + value.length), count, sharedOffset: -1 };
}

function sameDigest(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

/**
 * Groups of equal digests (undefined counts as one value), without a string per digest: members are
 * hashed on their first bytes and equal ones chained. `newGroup()` opens a group that is not a digest.
 */
class DigestGroups {
  private readonly head = new Map<number, number>();
  private readonly next: number[] = [];
  private readonly keys: Array<Buffer | undefined> = [];
  private readonly groupOf: number[] = [];
  readonly counts: number[] = [];

  newGroup(): number {
    this.counts.push(0);
    return this.counts.length - 1;
  }

  /** The group of digest `d` (counted once more). */
  add(d: Buffer | undefined): number {
    const key = d === undefined ? -1 : d.length >= 4 ? d.readUInt32LE(0) >>> 2 : d.length;
    for (let m = this.head.get(key) ?? -1; m >= 0; m = this.next[m]!) {
      if (sameDigest(this.keys[m], d)) {
        const g = this.groupOf[m]!;
        this.counts[g]!++;
        return g;
      }
    }
    const g = this.newGroup();
    this.counts[g] = 1;
    const m = this.keys.length;
    this.keys.push(d);
    this.groupOf.push(g);
    this.next.push(this.head.get(key) ?? -1);
    this.head.set(key, m);
    return g;
  }
}

const DIGEST_PATH = /^[0-9a-f]{2}\/(?:[0-9a-f]{2})*$/;

/**
 * Groups equal implicit overlay xattr values without building them: metacopy values are equal when the
 * digests are; redirects when the payloads are — a payload kept as a digest (WNode.redirectDigest) equals
 * a string payload exactly when that string is the digest's object path, so such strings join the digests.
 * Returns the group of every inode (-1: none) and each group's use count.
 */
function groupImplicit(bfs: WNode[]): { metacopyGroup: Int32Array; metacopyCount: number[]; redirectGroup: Int32Array; redirectCount: number[] } {
  const metacopyGroup = new Int32Array(bfs.length).fill(-1);
  const redirectGroup = new Int32Array(bfs.length).fill(-1);
  const metacopy = new DigestGroups();
  const redirect = new DigestGroups();
  const byPayload = new Map<string, number>();
  for (let i = 0; i < bfs.length; i++) {
    const n = bfs[i]!;
    if (n.implicitMetacopy) metacopyGroup[i] = metacopy.add(n.digest);
    if (n.redirectDigest !== undefined) {
      redirectGroup[i] = redirect.add(n.redirectDigest);
    } else if (n.redirectPayload !== undefined) {
      const p = n.redirectPayload;
      if (DIGEST_PATH.test(p)) {
        redirectGroup[i] = redirect.add(Buffer.from(p.slice(0, 2) + p.slice(3), 'hex'));
      } else {
        let g = byPayload.get(p);
        if (g === undefined) {
          g = redirect.newGroup();
          byPayload.set(p, g);
        }
        redirect.counts[g]!++;
        redirectGroup[i] = g;
      }
    }
  }
  return { metacopyGroup, metacopyCount: metacopy.counts, redirectGroup, redirectCount: redirect.counts };
}

/**
 * The xattrs of one inode in key order — its explicit records (sorted by buildV1Tree) merged with its
 * implicit overlay xattrs (metacopy, redirect) — addressed by position, without building anything: one
 * instance serves every inode in turn (`select(i)`), so laying out and writing 40 000 external files
 * allocates no record, string or array per file.
 */
class NodeXattrs {
  private n!: WNode;
  private from = 0;
  private explicit = 0;
  /** Merged positions of the implicit metacopy / redirect (-1: the inode has none). */
  private posM = -1;
  private posR = -1;
  private recM: XattrRec | undefined;
  private recR: XattrRec | undefined;
  /** Number of xattrs of the selected inode. */
  count = 0;

  constructor(private readonly table: SharedTable, private readonly bfs: WNode[]) {}

  select(i: number): void {
    const t = this.table;
    const n = this.bfs[i]!;
    this.n = n;
    this.from = t.start[i]!;
    this.explicit = t.start[i + 1]! - this.from;
    const mg = t.metacopyGroup[i]!;
    const rg = t.redirectGroup[i]!;
    this.recM = mg >= 0 ? t.sharedGroupRecs.metacopy[mg] : undefined;
    this.recR = rg >= 0 ? t.sharedGroupRecs.redirect[rg] : undefined;
    // Explicit keys never equal the implicit ones (buildV1Tree escapes every trusted.overlay.* key), and
    // XATTR_OVERLAY_METACOPY < XATTR_OVERLAY_REDIRECT.
    let belowM = 0;
    while (belowM < this.explicit && t.nodeRecs[this.from + belowM]!.key < XATTR_OVERLAY_METACOPY) belowM++;
    let belowR = belowM;
    while (belowR < this.explicit && t.nodeRecs[this.from + belowR]!.key < XATTR_OVERLAY_REDIRECT) belowR++;
    this.posM = mg >= 0 ? belowM : -1;
    this.posR = rg >= 0 ? belowR + (mg >= 0 ? 1 : 0) : -1;
    this.count = this.explicit + (mg >= 0 ? 1 : 0) + (rg >= 0 ? 1 : 0);
  }

  /** 1: implicit metacopy, 2: implicit redirect, 0: explicit (then `explicitRec(pos)`). */
  private kind(pos: number): number {
    return pos === this.posM ? 1 : pos === this.posR ? 2 : 0;
  }

  private explicitRec(pos: number): XattrRec {
    const skipped = (this.posM >= 0 && this.posM < pos ? 1 : 0) + (this.posR >= 0 && this.posR < pos ? 1 : 0);
    return this.table.nodeRecs[this.from + pos - skipped]!;
  }

  /** The record at `pos` when it is an explicit one or a shared implicit one, else undefined. */
  private rec(pos: number): XattrRec | undefined {
    const k = this.kind(pos);
    return k === 1 ? this.recM : k === 2 ? this.recR : this.explicitRec(pos);
  }

  sharedOffset(pos: number): number {
    return this.rec(pos)?.sharedOffset ?? -1;
  }

  filterBit(pos: number): number {
    const k = this.kind(pos);
    return k === 1 ? METACOPY_NAME.filterBit : k === 2 ? REDIRECT_NAME.filterBit : this.explicitRec(pos).name.filterBit;
  }

  /** Length of the value of an implicit xattr (kind 1 or 2). */
  private implicitValueLength(k: number): number {
    if (k === 1) return this.n.digest === undefined ? 0 : 4 + this.n.digest.length;
    return 1 + this.n.redirectPayloadLength;
  }

  entrySize(pos: number): number {
    const r = this.rec(pos);
    if (r !== undefined) return r.entrySize;
    const k = this.kind(pos);
    const name = k === 1 ? METACOPY_NAME : REDIRECT_NAME;
    return roundUp4(4 + name.suffix.length + this.implicitValueLength(k));
  }

  /** Writes the (inline) entry at `pos` at `off`; returns the offset after it (padded to 4). */
  writeEntry(buf: Buffer, off: number, pos: number): number {
    const r = this.rec(pos);
    if (r !== undefined) return writeXattrEntry(buf, off, r);
    const k = this.kind(pos);
    const name = k === 1 ? METACOPY_NAME : REDIRECT_NAME;
    const valueLength = this.implicitValueLength(k);
    buf[off] = name.suffix.length;
    buf[off + 1] = name.index;
    buf.writeUInt16LE(valueLength, off + 2);
    let v = off + 4 + buf.write(name.suffix, off + 4, 'latin1');
    if (k === 1) writeMetacopyValue(buf, v, this.n.digest);
    else {
      buf[v++] = 0x2f; // '/'
      if (this.n.redirectDigest !== undefined) writeDigestPath(buf, v, this.n.redirectDigest);
      else buf.write(this.n.redirectPayload!, v, 'latin1');
    }
    return off + roundUp4(4 + name.suffix.length + valueLength);
  }
}

/** Count identical (name, value) pairs; pairs used more than once go to the shared table. */
function computeSharedXattrs(bfs: WNode[]): SharedTable {
  // name → (value → record): few distinct names, so the outer map stays tiny.
  const byName = new Map<string, { name: XattrName; byValue: Map<string, XattrRec> }>();
  const nodeRecs: XattrRec[] = [];
  const start = new Uint32Array(bfs.length + 1);
  for (let i = 0; i < bfs.length; i++) {
    const xs = bfs[i]!.xattrs;
    start[i] = nodeRecs.length;
    for (let j = 0; j < xs.length; j++) {
      const x = xs[j]!;
      let slot = byName.get(x.key);
      if (slot === undefined) {
        slot = { name: encodeName(x.key), byValue: new Map() };
        byName.set(x.key, slot);
      }
      let r = slot.byValue.get(x.value);
      if (r === undefined) {
        r = {
          key: x.key, value: x.value, name: slot.name,
          entrySize: roundUp4(4 + slot.name.suffix.length + x.value.length), count: 0, sharedOffset: -1,
        };
        slot.byValue.set(x.value, r);
      }
      r.count++;
      nodeRecs.push(r);
    }
  }
  start[bfs.length] = nodeRecs.length;
  const shared: XattrRec[] = [];
  for (const slot of byName.values()) for (const r of slot.byValue.values()) if (r.count > 1) shared.push(r);
  // Implicit overlay xattrs: only the values used more than once get a record (and a table entry).
  const g = groupImplicit(bfs);
  const metacopyRecs = new Array<XattrRec | undefined>(g.metacopyCount.length);
  const redirectRecs = new Array<XattrRec | undefined>(g.redirectCount.length);
  for (let i = 0; i < bfs.length; i++) {
    const mg = g.metacopyGroup[i]!;
    if (mg >= 0 && g.metacopyCount[mg]! > 1 && metacopyRecs[mg] === undefined) {
      metacopyRecs[mg] = implicitRec(XATTR_OVERLAY_METACOPY, METACOPY_NAME, metacopyValue(bfs[i]!.digest), g.metacopyCount[mg]!);
      shared.push(metacopyRecs[mg]);
    }
    const rg = g.redirectGroup[i]!;
    if (rg >= 0 && g.redirectCount[rg]! > 1 && redirectRecs[rg] === undefined) {
      redirectRecs[rg] = implicitRec(XATTR_OVERLAY_REDIRECT, REDIRECT_NAME, bfs[i]!.redirectValue(), g.redirectCount[rg]!);
      shared.push(redirectRecs[rg]);
    }
  }
  shared.sort(compareRecDesc);
  let off = 0;
  for (const r of shared) {
    r.sharedOffset = off;
    off += r.entrySize;
  }
  return {
    recs: shared, size: off, nodeRecs, start,
    metacopyGroup: g.metacopyGroup, redirectGroup: g.redirectGroup,
    sharedGroupRecs: { metacopy: metacopyRecs, redirect: redirectRecs },
  };
}

// ------------------------------------------------------------------------------------------- layout

/** Greedy dirent chunking: number of full blocks and the size of the last chunk. */
function dirChunking(n: WNode): { blocks: number; last: number } {
  let blocks = 0;
  let size = 0;
  for (const e of n.dirents!) {
    const len = EROFS_DIRENT_SIZE + e.name.length;
    if (size + len > BLOCK_SIZE) {
      blocks++;
      size = 0;
    }
    size += len;
  }
  return { blocks, last: size };
}

/** compute_erofs_inode_size */
function sizeInodeData(n: WNode): void {
  const fmt = n.fmt;
  n.nBlocks = 0;
  n.tail = 0;
  if (fmt === S_IFDIR) {
    const { blocks, last } = dirChunking(n);
    // Never inline more than half a block.
    if (last > BLOCK_SIZE / 2) {
      n.nBlocks = blocks + 1;
      n.tail = 0;
    } else {
      n.nBlocks = blocks;
      n.tail = last;
    }
  } else if (fmt === S_IFLNK) {
    n.tail = n.target!.length;
  } else if (fmt === S_IFREG && n.size > 0) {
    if (n.content !== undefined) {
      n.nBlocks = Math.floor(n.size / BLOCK_SIZE);
      n.tail = n.size % BLOCK_SIZE;
      if (n.tail > BLOCK_SIZE / 2) {
        n.nBlocks++;
        n.tail = 0;
      }
    } else {
      n.chunkBits = chunkBitsOf(n.size);
      n.chunkCount = Math.ceil(n.size / 2 ** n.chunkBits);
      n.tail = 4 * n.chunkCount;
    }
  }
}

/** lcfs_fits_in_erofs_compact (dir size as sized, before any tail move). */
function fitsCompact(n: WNode, minSec: number, minNsec: number): boolean {
  if (n.mtimeSec !== minSec || n.mtimeNsec !== minNsec) return false;
  if (n.nlink > 0xffff || n.uid > 0xffff || n.gid > 0xffff) return false;
  const size = n.fmt === S_IFDIR ? n.nBlocks * BLOCK_SIZE + n.tail : n.size;
  return size <= 0xffffffff;
}

/** compute_erofs_inode_padding_for_tail: padding before the inode so its tail never straddles blocks. */
function paddingForTail(n: WNode, pos: number, inodeSize: number, xattrSize: number): number {
  const nonTail = inodeSize + xattrSize;
  const total = nonTail + n.tail;
  if (n.fmt === S_IFLNK) {
    // The inode and its target stay in one block; a target that cannot fit goes to a data block.
    if (Math.floor(total / BLOCK_SIZE) > 0) {
      n.nBlocks++;
      n.tail = 0;
    }
    if (Math.floor(pos / BLOCK_SIZE) !== Math.floor((pos + total - 1) / BLOCK_SIZE)) {
      return roundUpTo(pos, BLOCK_SIZE) - pos;
    }
    return 0;
  }
  let remainder = BLOCK_SIZE - ((pos + nonTail) % BLOCK_SIZE);
  if (remainder < n.tail) {
    const extra = roundUpTo(remainder, SLOT);
    remainder = BLOCK_SIZE - ((pos + nonTail + extra) % BLOCK_SIZE);
    if (n.tail <= remainder) return extra;
    n.nBlocks++;
    n.tail = 0;
    return roundUpTo(pos, BLOCK_SIZE) - pos;
  }
  return 0;
}

// ------------------------------------------------------------------------------------------- writing

function writeU64(buf: Buffer, off: number, v: number): void {
  if (v >= 0) {
    buf.writeUInt32LE(v % 0x100000000, off);
    buf.writeUInt32LE(Math.floor(v / 0x100000000), off + 4);
  } else {
    buf.writeBigInt64LE(BigInt(v), off);
  }
}

function writeXattrEntry(buf: Buffer, off: number, r: XattrRec): number {
  const suffix = r.name.suffix;
  buf[off] = suffix.length;
  buf[off + 1] = r.name.index;
  buf.writeUInt16LE(r.value.length, off + 2);
  if (suffix.length > 0) buf.write(suffix, off + 4, 'latin1');
  if (r.value.length > 0) buf.write(r.value, off + 4 + suffix.length, 'latin1');
  return off + r.entrySize;
}

/** Write dirents [first, end) of a directory as one chunk at `off`; returns the end offset. */
function writeDirentChunk(buf: Buffer, off: number, n: WNode, first: number, end: number): number {
  const d = n.dirents!;
  let nameoff = (end - first) * EROFS_DIRENT_SIZE;
  let p = off;
  for (let i = first; i < end; i++) {
    const e = d[i]!;
    writeU64(buf, p, e.node.nid);
    buf.writeUInt16LE(nameoff, p + 8);
    buf[p + 10] = erofsFileType(e.node.mode);
    nameoff += e.name.length;
    p += EROFS_DIRENT_SIZE;
  }
  for (let i = first; i < end; i++) {
    const name = d[i]!.name;
    p += buf.write(name, p, 'latin1');
  }
  return p;
}

/**
 * Write a directory's full blocks starting at `blockOff` (if any) and return the dirent range of the
 * inline tail chunk (write_erofs_dentries).
 */
function writeDirBlocks(buf: Buffer, blockOff: number, n: WNode): [number, number] {
  const d = n.dirents!;
  let size = 0;
  let first = 0;
  let written = 0;
  for (let i = 0; i < d.length; i++) {
    const len = EROFS_DIRENT_SIZE + d[i]!.name.length;
    if (size + len > BLOCK_SIZE) {
      writeDirentChunk(buf, blockOff + written * BLOCK_SIZE, n, first, i);
      written++;
      size = 0;
      first = i;
    }
    size += len;
  }
  if (written < n.nBlocks) {
    writeDirentChunk(buf, blockOff + written * BLOCK_SIZE, n, first, d.length);
    return [d.length, d.length];
  }
  return [first, d.length];
}

/** Build the composefs image (libcomposefs 1.0.8 format) of `fs`. Does not modify `fs`. */
export function writeImageV1(fs: FileSystem, opts: WriteV1Options = {}): Buffer {
  return writeImageV1Taking(() => fs, opts);
}

/**
 * writeImageV1 of a tree handed over by `take()` (called once): the writer holds it only while it builds
 * its own copy, so a caller that keeps no other reference lets it be collected while the image is laid out.
 */
export function writeImageV1Taking(take: () => FileSystem, opts: WriteV1Options = {}): Buffer {
  const { min, max } = resolveV1Versions(opts);
  const tree = buildV1Tree(take(), min, max);
  const { bfs, minMtimeSec, minMtimeNsec } = tree;
  const shared = computeSharedXattrs(bfs);
  const xattrs = new NodeXattrs(shared, bfs);

  // ---- inode placement (compute_erofs_inodes)
  let pos = EROFS_INODES_START;
  let nDataBlocks = 0;
  for (let i = 0; i < bfs.length; i++) {
    const n = bfs[i]!;
    sizeInodeData(n);
    n.compact = fitsCompact(n, minMtimeSec, minMtimeNsec);
    const inodeSize = n.compact ? EROFS_INODE_COMPACT_SIZE : EROFS_INODE_EXTENDED_SIZE;
    let nShared = 0;
    let unshared = 0;
    xattrs.select(i);
    for (let pos = 0; pos < xattrs.count; pos++) {
      if (xattrs.sharedOffset(pos) >= 0 && nShared < MAX_SHARED_PER_INODE) nShared++;
      else unshared += xattrs.entrySize(pos);
    }
    n.nShared = nShared;
    n.xattrSize = nShared === 0 && unshared === 0 ? 0 : roundUp4(EROFS_XATTR_IBODY_HEADER_SIZE + 4 * nShared + unshared);
    if (n.xattrSize > 0 && (n.xattrSize - EROFS_XATTR_IBODY_HEADER_SIZE) / 4 + 1 > 0xffff) {
      throw new BootcfsError('ELIMIT', `too many xattrs on inode ${i}`);
    }
    const aligned = roundUpTo(pos, SLOT);
    const extra = paddingForTail(n, aligned, inodeSize, n.xattrSize);
    n.ipad = aligned - pos + extra;
    pos = aligned + extra;
    n.nid = pos / SLOT;
    nDataBlocks += n.nBlocks;
    pos += inodeSize + n.xattrSize + n.tail;
  }
  const inodesEnd = roundUpTo(pos, SLOT);
  const dataBlockStart = roundUpTo(inodesEnd + shared.size, BLOCK_SIZE);
  const totalBlocks = dataBlockStart / BLOCK_SIZE + nDataBlocks;
  if (totalBlocks > 0xffffffff) throw new BootcfsError('ELIMIT', 'image too large');
  const buf = Buffer.alloc(totalBlocks * BLOCK_SIZE);

  // ---- composefs header
  buf.writeUInt32LE(COMPOSEFS_MAGIC, 0);
  buf.writeUInt32LE(COMPOSEFS_EROFS_VERSION, 4);
  buf.writeUInt32LE(tree.hasAcl ? COMPOSEFS_FLAGS_HAS_ACL : 0, 8);
  buf.writeUInt32LE(tree.version, 12);

  // ---- superblock
  const sb = EROFS_SUPER_OFFSET;
  buf.writeUInt32LE(EROFS_MAGIC, sb);
  buf.writeUInt32LE(EROFS_FEATURE_COMPAT_MTIME | EROFS_FEATURE_COMPAT_XATTR_FILTER, sb + 8);
  buf[sb + 12] = 12; // blkszbits
  buf.writeUInt16LE(tree.root.nid, sb + 14);
  writeU64(buf, sb + 16, bfs.length); // inos
  writeU64(buf, sb + 24, minMtimeSec); // build_time
  buf.writeUInt32LE(minMtimeNsec, sb + 32);
  buf.writeUInt32LE(totalBlocks, sb + 36);
  buf.writeUInt32LE(Math.floor(EROFS_INODES_START / BLOCK_SIZE), sb + 40); // meta_blkaddr
  buf.writeUInt32LE(Math.floor(inodesEnd / BLOCK_SIZE), sb + 44); // xattr_blkaddr

  // ---- inodes (and, in the same BFS order, their data blocks)
  const sharedIdBase = inodesEnd % BLOCK_SIZE;
  let nextBlock = dataBlockStart / BLOCK_SIZE;
  for (let i = 0; i < bfs.length; i++) {
    const n = bfs[i]!;
    const fmt = n.fmt;
    const p = n.nid * SLOT;
    let blkaddr = 0;
    if (n.nBlocks > 0) {
      blkaddr = nextBlock;
      nextBlock += n.nBlocks;
    }
    let layout = n.tail > 0 ? EROFS_INODE_FLAT_INLINE : EROFS_INODE_FLAT_PLAIN;
    let size: number;
    let iu = 0;
    if (fmt === S_IFDIR) {
      size = n.nBlocks * BLOCK_SIZE + n.tail;
      iu = blkaddr;
    } else if (fmt === S_IFREG) {
      size = n.size;
      iu = blkaddr;
      if (n.isExternal) {
        layout = EROFS_INODE_CHUNK_BASED;
        // i_u is a union: the chunk format overlays the low 16 bits of raw_blkaddr.
        iu = ((iu & 0xffff0000) | (n.chunkBits - 12)) >>> 0;
      }
    } else if (fmt === S_IFLNK) {
      size = n.target!.length;
      iu = blkaddr;
    } else {
      size = 0;
      if (fmt === S_IFCHR || fmt === S_IFBLK) iu = n.rdev;
    }
    const icount = n.xattrSize === 0 ? 0 : (n.xattrSize - EROFS_XATTR_IBODY_HEADER_SIZE) / 4 + 1;
    let q: number;
    if (n.compact) {
      buf.writeUInt16LE(iFormat(false, layout), p);
      buf.writeUInt16LE(icount, p + 2);
      buf.writeUInt16LE(n.mode & 0xffff, p + 4);
      buf.writeUInt16LE(n.nlink & 0xffff, p + 6);
      buf.writeUInt32LE(size >>> 0, p + 8);
      buf.writeUInt32LE(iu >>> 0, p + 16);
      buf.writeUInt32LE(n.inodeNum >>> 0, p + 20);
      buf.writeUInt16LE(n.uid & 0xffff, p + 24);
      buf.writeUInt16LE(n.gid & 0xffff, p + 26);
      q = p + EROFS_INODE_COMPACT_SIZE;
    } else {
      buf.writeUInt16LE(iFormat(true, layout), p);
      buf.writeUInt16LE(icount, p + 2);
      buf.writeUInt16LE(n.mode & 0xffff, p + 4);
      writeU64(buf, p + 8, size);
      buf.writeUInt32LE(iu >>> 0, p + 16);
      buf.writeUInt32LE(n.inodeNum >>> 0, p + 20);
      buf.writeUInt32LE(n.uid >>> 0, p + 24);
      buf.writeUInt32LE(n.gid >>> 0, p + 28);
      writeU64(buf, p + 32, n.mtimeSec);
      buf.writeUInt32LE(n.mtimeNsec >>> 0, p + 40);
      buf.writeUInt32LE(n.nlink >>> 0, p + 44);
      q = p + EROFS_INODE_EXTENDED_SIZE;
    }

    // xattr area: header (name filter, shared count), shared ids, inline entries
    if (n.xattrSize > 0) {
      xattrs.select(i);
      let filter = 0;
      for (let pos = 0; pos < xattrs.count; pos++) filter |= 1 << xattrs.filterBit(pos);
      buf.writeUInt32LE((~filter) >>> 0, q);
      buf[q + 4] = n.nShared;
      // Shared ids first (the first nShared shareable xattrs in name order), then inline entries.
      let ids = q + EROFS_XATTR_IBODY_HEADER_SIZE;
      let x = ids + 4 * n.nShared;
      let taken = 0;
      for (let pos = 0; pos < xattrs.count; pos++) {
        const sharedOffset = xattrs.sharedOffset(pos);
        if (sharedOffset >= 0 && taken < n.nShared) {
          buf.writeUInt32LE(((sharedIdBase + sharedOffset) / 4) >>> 0, ids);
          ids += 4;
          taken++;
        } else {
          x = xattrs.writeEntry(buf, x, pos);
        }
      }
      q += n.xattrSize;
    }

    // inline tail and data blocks
    const blockOff = blkaddr * BLOCK_SIZE;
    if (fmt === S_IFDIR) {
      const [first, end] = writeDirBlocks(buf, blockOff, n);
      if (n.tail > 0) writeDirentChunk(buf, q, n, first, end);
    } else if (fmt === S_IFLNK) {
      buf.write(n.target!, n.nBlocks === 0 ? q : blockOff, 'latin1');
    } else if (fmt === S_IFREG) {
      if (n.isExternal) {
        // Chunk indexes are all EROFS_NULL_ADDR (holes); a stub too big to inline gets a block of them.
        if (n.tail > 0) buf.fill(0xff, q, q + 4 * n.chunkCount);
        else if (n.nBlocks > 0) buf.fill(0xff, blockOff, blockOff + BLOCK_SIZE);
      } else if (n.content !== undefined) {
        if (n.tail > 0) n.content.copy(buf, q, n.size - n.tail);
        // libcomposefs writes only the first data block of inline content (at most one exists).
        if (n.nBlocks > 0) n.content.copy(buf, blockOff, 0, Math.min(n.size, BLOCK_SIZE));
      }
    }
  }

  // ---- shared xattr table right after the inodes
  let x = inodesEnd;
  for (const r of shared.recs) x = writeXattrEntry(buf, x, r);
  return buf;
}
