/**
 * Internal tree of the C-compatible ("v1") composefs writer: a private copy of the input model with the
 * rewrites libcomposefs 1.0.8 applies before laying out the EROFS image (lcfs-writer-erofs.c
 * `rewrite_tree_for_erofs`, lcfs-writer.c `lcfs_compute_tree`). The input `FileSystem` is never mutated.
 *
 * Steps, in the order the C writer performs them:
 *  1. version selection (`lcfs_write_update_version`),
 *  2. rewrite pass in pre-order over primary nodes: escape `trusted.overlay.*`, add metacopy/redirect
 *     to external files, convert 0/0 char devices to escaped whiteouts and mark their parent (`.` and
 *     `..` are sorted into every directory while copying); then `trusted.overlay.opaque=y` on the root
 *     and the 256 `00`–`ff` whiteout stubs,
 *  3. breadth-first ordering (inode numbers, directory nlink, sorted xattrs, minimum mtime, ACL flag).
 *
 * Hardlinks: libcomposefs writes an inode where its non-hardlink dumpfile line sits (its "primary"
 * name); the other names are dirents only. `FileSystem.hardlinkNames` (filled by the dumpfile parser)
 * says which names were `@` lines. Without it the first name in depth-first sorted order is the primary,
 * which is what canonical dumpfiles (composefs-info dump, composefs-rs) print in full.
 */
import { BootcfsError } from '../errors.js';
import {
  S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
  digestPath, type ByteString, type FileSystem, type Inode,
} from '../tree/model.js';
import {
  XATTR_ESCAPED_OVERLAY_PREFIX, XATTR_OVERLAY_METACOPY, XATTR_OVERLAY_OPAQUE, XATTR_OVERLAY_REDIRECT,
  XATTR_TRUSTED_OVERLAY_PREFIX, FSVERITY_HASH_ALG_SHA256, FSVERITY_HASH_ALG_SHA512,
  XATTR_NAME_MAX,
} from './format.js';

/** LCFS_INLINE_CONTENT_MAX: the largest inline file libcomposefs accepts. */
export const V1_INLINE_CONTENT_MAX = 5000;
/** LCFS_MAX_NONINLINE_CHUNKS: the chunk-index stub of an external file must fit in one block. */
export const V1_MAX_NONINLINE_CHUNKS = 1024;
/** LCFS_INODE_EXTERNAL_XATTR_MAX: per-inode xattr budget for xattrs added by `lcfs_node_set_xattr`. */
const EXTERNAL_XATTR_MAX = 0x7fff;
/** LCFS_INODE_XATTRMETA_SIZE */
const XATTR_META_SIZE = 4;
const XATTR_HEADER_SIZE = 12;
const PATH_MAX = 4096;
const NAME_MAX = 255;
// struct ovl_metacopy scratch buffers per digest length (sha256: 32 bytes, alg 1; sha512: 64 bytes,
// alg 2 — the kernel accepts either; libcomposefs only writes sha256, the repository defaults to sha512).
const METACOPY_SCRATCH: ReadonlyMap<number, Buffer> = new Map([
  [32, Buffer.from([0, 4 + 32, 0, FSVERITY_HASH_ALG_SHA256, ...new Array<number>(32).fill(0)])],
  [64, Buffer.from([0, 4 + 64, 0, FSVERITY_HASH_ALG_SHA512, ...new Array<number>(64).fill(0)])],
]);

const ESCAPED_WHITEOUT = 'trusted.overlay.overlay.whiteout';
const ESCAPED_WHITEOUTS = 'trusted.overlay.overlay.whiteouts';
const ESCAPED_OPAQUE = 'trusted.overlay.overlay.opaque';
const USER_WHITEOUT = 'user.overlay.whiteout';
const USER_WHITEOUTS = 'user.overlay.whiteouts';
const USER_OPAQUE = 'user.overlay.opaque';
const SELINUX = 'security.selinux';
const EMPTY = '';
/** Shared by every node without xattrs until one is added (saves one array per inode). */
const NO_XATTRS: WXattr[] = [];

/** One xattr; the value is a byte string too (cheap to hash, compare and dedupe). */
export interface WXattr {
  key: ByteString;
  value: ByteString;
}

export interface WDirent {
  name: ByteString;
  node: WNode;
  /** A hardlink, `.` or `..`: the inode is written where its primary entry is. */
  link: boolean;
}

/** One inode as the C writer sees it after the rewrite pass, plus its layout results. */
export class WNode {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: number;
  /** st_size: regular files (content or external), devices/fifos as given; symlinks = target length. */
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  content: Buffer | undefined;
  target: ByteString | undefined;
  xattrs: WXattr[];
  /**
   * libcomposefs' `xattr_size` counter, which `lcfs_node_clone` does not copy: it starts at 0 for every
   * node of the clone the writer works on. Emulated so that the inputs 1.0.8 rejects with ERANGE while
   * adding overlay xattrs are rejected here too (mkcomposefs-quirks.md), instead of silently differing.
   * Kept as a signed number; C's size_t wrap-around is reproduced in `setXattr`.
   */
  xattrBudget = 0;
  /**
   * The overlay xattrs of an external file, kept implicit: `trusted.overlay.metacopy` (when
   * `implicitMetacopy`; value = metacopyValue(digest)) and `trusted.overlay.redirect` (when
   * `redirectPayload` is set; value = '/' + payload). Every external file has its own values, so holding
   * them as strings and records would cost several hundred bytes per file; the writer builds them only
   * while it lays out and writes the node (writer-v1.ts), in key order among `xattrs`.
   */
  implicitMetacopy = false;
  digest: Buffer | undefined = undefined;
  redirectPayload: ByteString | undefined = undefined;
  /** Instead of `redirectPayload`: the payload is the object path of this digest (Inode.payloadIsObjectPath). */
  redirectDigest: Buffer | undefined = undefined;
  parent: WNode;
  /** Name of the primary entry ('' for the root and the stubs' parent link); for error messages. */
  name: ByteString = '';
  dirents: WDirent[] | undefined;

  // compute_tree results
  inodeNum = 0;
  // layout results (filled by the writer)
  compact = false;
  nBlocks = 0;
  tail = 0;
  xattrSize = 0;
  nShared = 0;
  ipad = 0;
  nid = 0;
  chunkBits = 0;
  chunkCount = 0;

  constructor(mode: number, parent: WNode | undefined) {
    this.mode = mode;
    this.uid = 0;
    this.gid = 0;
    this.nlink = 1;
    this.rdev = 0;
    this.size = 0;
    this.mtimeSec = 0;
    this.mtimeNsec = 0;
    this.content = undefined;
    this.target = undefined;
    this.xattrs = NO_XATTRS;
    this.parent = parent ?? this;
    this.dirents = undefined; // set for directories when their entries are read
  }

  get fmt(): number { return this.mode & S_IFMT; }
  get isDir(): boolean { return (this.mode & S_IFMT) === S_IFDIR; }
  /** Regular file whose data lives outside the image (chunk-based hole stub). */
  get isExternal(): boolean {
    return (this.mode & S_IFMT) === S_IFREG && this.size > 0 && this.content === undefined;
  }

  /** Number of implicit overlay xattrs (0–2). */
  get implicitCount(): number {
    return (this.implicitMetacopy ? 1 : 0) + (this.hasImplicitRedirect ? 1 : 0);
  }

  get hasImplicitRedirect(): boolean {
    return this.redirectPayload !== undefined || this.redirectDigest !== undefined;
  }

  /** Length of the implicit redirect's payload (the value is '/' + payload). */
  get redirectPayloadLength(): number {
    return this.redirectDigest !== undefined ? 2 * this.redirectDigest.length + 1 : this.redirectPayload!.length;
  }

  /** The implicit redirect's value, '/' + payload, as a string. */
  redirectValue(): ByteString {
    return '/' + (this.redirectDigest !== undefined ? digestPath(this.redirectDigest) : this.redirectPayload!);
  }

  /** Turns the implicit overlay xattrs into ordinary entries of `xattrs` (same budget: nothing is re-added). */
  private materializeImplicit(): void {
    if (this.implicitCount === 0) return;
    if (this.xattrs === NO_XATTRS) this.xattrs = [];
    if (this.implicitMetacopy) this.xattrs.push({ key: XATTR_OVERLAY_METACOPY, value: metacopyValue(this.digest) });
    if (this.hasImplicitRedirect) this.xattrs.push({ key: XATTR_OVERLAY_REDIRECT, value: this.redirectValue() });
    this.implicitMetacopy = false;
    this.digest = undefined;
    this.redirectPayload = undefined;
    this.redirectDigest = undefined;
  }

  /**
   * `lcfs_node_set_xattr` for an implicit overlay xattr (a key the node does not have yet): the budget
   * check only. `valueLength` is the length the value will have.
   */
  private addImplicit(key: ByteString, valueLength: number): void {
    this.addBudget(key, valueLength);
  }

  /** Appending `key` with a value of `valueLength` bytes: lcfs_node_set_xattr's budget arithmetic. */
  private addBudget(key: ByteString, valueLength: number): void {
    let entry = 2 * XATTR_META_SIZE - 1 + key.length + valueLength;
    if (this.xattrs.length + this.implicitCount === 0) entry += XATTR_HEADER_SIZE;
    const sum = this.xattrBudget + entry;
    // In C the counter is a size_t: a negative value is a huge one, and the sum only becomes small
    // again if it wraps past zero.
    if (sum < 0 || sum > EXTERNAL_XATTR_MAX) {
      throw new BootcfsError('ELIMIT', `too many xattrs on an inode while adding ${key} (ERANGE in libcomposefs)`);
    }
    this.xattrBudget = sum;
  }

  /** Sets the implicit `trusted.overlay.metacopy` (value metacopyValue(digest)); the node must not have one. */
  setImplicitMetacopy(digest: Buffer | undefined): void {
    if (this.implicitMetacopy || this.xattrs.some((x) => x.key === XATTR_OVERLAY_METACOPY)) {
      this.setXattr(XATTR_OVERLAY_METACOPY, metacopyValue(digest));
      return;
    }
    this.addImplicit(XATTR_OVERLAY_METACOPY, digest === undefined ? 0 : 4 + digest.length);
    this.implicitMetacopy = true;
    this.digest = digest;
  }

  /**
   * Sets the implicit `trusted.overlay.redirect` = '/' + payload, the payload given as a string or as the
   * digest whose object path it is.
   */
  setImplicitRedirect(payload: ByteString | { digest: Buffer }): void {
    const length = typeof payload === 'string' ? payload.length : 2 * payload.digest.length + 1;
    if (this.hasImplicitRedirect || this.xattrs.some((x) => x.key === XATTR_OVERLAY_REDIRECT)) {
      this.setXattr(XATTR_OVERLAY_REDIRECT, '/' + (typeof payload === 'string' ? payload : digestPath(payload.digest)));
      return;
    }
    if (length + 1 > 0xffff) throw new BootcfsError('ELIMIT', `xattr ${XATTR_OVERLAY_REDIRECT} value too long`);
    this.addImplicit(XATTR_OVERLAY_REDIRECT, length + 1);
    if (typeof payload === 'string') this.redirectPayload = payload;
    else this.redirectDigest = payload.digest;
  }

  /** `lcfs_node_set_xattr(node, key, value)` including its budget check and replace semantics. */
  setXattr(key: ByteString, value: ByteString): void {
    if (value.length > 0xffff) throw new BootcfsError('ELIMIT', `xattr ${key} value too long`);
    // Replacing (or re-adding) an implicit one: make it an ordinary entry first.
    if ((key === XATTR_OVERLAY_METACOPY || key === XATTR_OVERLAY_REDIRECT) && this.implicitCount > 0) this.materializeImplicit();
    const idx = this.xattrs.findIndex((x) => x.key === key);
    if (idx >= 0) {
      const old = this.xattrs[idx]!;
      // C unsets by moving the last entry into the hole; order is irrelevant (sorted later).
      const last = this.xattrs.pop()!;
      if (idx < this.xattrs.length) this.xattrs[idx] = last;
      if (this.xattrs.length + this.implicitCount > 0) this.xattrBudget -= 2 * XATTR_META_SIZE - 1 + key.length + old.value.length;
      else this.xattrBudget = 0;
    }
    if (this.xattrs === NO_XATTRS) this.xattrs = [];
    let entry = 2 * XATTR_META_SIZE - 1 + key.length + value.length;
    if (this.xattrs.length + this.implicitCount === 0) entry += XATTR_HEADER_SIZE;
    const sum = this.xattrBudget + entry;
    // In C the counter is a size_t: a negative value is a huge one, and the sum only becomes small
    // again if it wraps past zero.
    if (sum < 0 || sum > EXTERNAL_XATTR_MAX) {
      throw new BootcfsError('ELIMIT', `too many xattrs on an inode while adding ${key} (ERANGE in libcomposefs)`);
    }
    this.xattrs.push({ key, value });
    this.xattrBudget = sum;
  }

  getXattr(key: ByteString): ByteString | undefined {
    for (const x of this.xattrs) if (x.key === key) return x.value;
    if (key === XATTR_OVERLAY_METACOPY && this.implicitMetacopy) return metacopyValue(this.digest);
    if (key === XATTR_OVERLAY_REDIRECT && this.hasImplicitRedirect) return this.redirectValue();
    return undefined;
  }
}

/**
 * The `trusted.overlay.metacopy` value of an external file: struct ovl_metacopy (version 0, len, flags 0,
 * digest algorithm, digest) as a byte string, or '' without a digest.
 */
export function metacopyValue(digest: Buffer | undefined): ByteString {
  if (digest === undefined) return EMPTY;
  const scratch = METACOPY_SCRATCH.get(digest.length);
  if (scratch === undefined) throw inval(`digest must be 32 (sha256) or 64 (sha512) bytes`);
  scratch.set(digest, 4);
  return scratch.toString('latin1');
}

/** Writes metacopyValue(digest) at `off` of `buf`; returns the number of bytes written. */
export function writeMetacopyValue(buf: Buffer, off: number, digest: Buffer | undefined): number {
  if (digest === undefined) return 0;
  buf[off] = 0;
  buf[off + 1] = 4 + digest.length;
  buf[off + 2] = 0;
  buf[off + 3] = digest.length === 32 ? FSVERITY_HASH_ALG_SHA256 : FSVERITY_HASH_ALG_SHA512;
  digest.copy(buf, off + 4);
  return 4 + digest.length;
}

export interface V1Tree {
  root: WNode;
  /** Breadth-first order: index = inode number. */
  bfs: WNode[];
  version: number;
  minMtimeSec: number;
  minMtimeNsec: number;
  hasAcl: boolean;
}

function inval(msg: string): BootcfsError {
  return new BootcfsError('EINVAL', msg);
}

/** Absolute path of `name` inside directory `dir` (for error messages only). */
function pathIn(dir: WNode | undefined, name?: ByteString): string {
  const parts: string[] = name !== undefined ? [name] : [];
  for (let p = dir; p !== undefined && p !== p.parent; p = p.parent) parts.push(p.name);
  return '/' + parts.reverse().join('/');
}

/** NUL, '/' or a char that is not a byte (the model requires latin1 byte strings). */
const BAD_NAME_CHAR = /[\0/\u0100-\uffff]/;

function checkName(name: ByteString, dir: WNode): void {
  if (name.length === 0 || name === '.' || name === '..' || BAD_NAME_CHAR.test(name)) {
    throw inval(`invalid file name ${JSON.stringify(name)} in ${pathIn(dir)}`);
  }
  if (name.length > NAME_MAX) {
    throw new BootcfsError('ELIMIT', `file name longer than ${NAME_MAX} bytes in ${pathIn(dir)}`);
  }
}

/** Copy one primary inode's own data (validated like lcfs_node_* setters and lcfs_node_validate). */
function copyInode(src: Inode, parent: WNode | undefined, name: ByteString): WNode {
  const fmt = src.mode & S_IFMT;
  switch (fmt) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case 0o060000: case S_IFCHR: case 0o140000: case 0o010000:
      break;
    default:
      throw inval(`invalid file mode ${src.mode.toString(8)} at ${pathIn(parent, parent === undefined ? undefined : name)}`);
  }
  const n = new WNode(src.mode >>> 0, parent);
  n.name = name;
  // libcomposefs stores these as 32-bit fields.
  n.uid = src.uid >>> 0;
  n.gid = src.gid >>> 0;
  n.nlink = src.nlink >>> 0;
  n.rdev = src.rdev >>> 0;
  n.mtimeSec = src.mtimeSec;
  n.mtimeNsec = src.mtimeNsec >>> 0;
  n.size = src.size;
  if (fmt === S_IFLNK) {
    const t = src.target;
    if (t === undefined || t.length === 0) throw inval(`symlink without target at ${pathIn(parent, parent === undefined ? undefined : name)}`);
    if (t.length >= PATH_MAX) throw new BootcfsError('ELIMIT', `symlink target too long at ${pathIn(parent, parent === undefined ? undefined : name)}`);
    if (t.includes('\0')) throw inval(`symlink target contains NUL at ${pathIn(parent, parent === undefined ? undefined : name)}`);
    n.target = t;
    n.size = t.length;
  } else if (fmt === S_IFREG) {
    const c = src.content;
    if (c !== undefined && c.length > 0) {
      if (c.length > V1_INLINE_CONTENT_MAX) {
        throw new BootcfsError('ELIMIT', `inline content of ${c.length} bytes exceeds ${V1_INLINE_CONTENT_MAX} at ${pathIn(parent, parent === undefined ? undefined : name)}`);
      }
      if (c.length !== src.size) throw inval(`inline content length ${c.length} != size ${src.size} at ${pathIn(parent, parent === undefined ? undefined : name)}`);
      n.content = c;
    } else if (c !== undefined && src.size !== 0) {
      throw inval(`inline content length 0 != size ${src.size} at ${pathIn(parent, parent === undefined ? undefined : name)}`);
    }
  }
  if (!Number.isInteger(n.size) || n.size < 0) throw inval(`invalid size ${n.size} at ${pathIn(parent, parent === undefined ? undefined : name)}`);
  // Sizes beyond 2^53 are not exact as JS numbers; for regular files they exceed the 1024-chunk limit
  // anyway (the C writer fails with EFBIG) and other types do not store a size.
  if (n.size > Number.MAX_SAFE_INTEGER) {
    if (fmt === S_IFREG) throw new BootcfsError('ELIMIT', `file too big (${n.size} bytes) at ${pathIn(parent, parent === undefined ? undefined : name)}`);
    n.size = Number.MAX_SAFE_INTEGER;
  }
  if (!Number.isSafeInteger(n.mtimeSec)) throw inval(`invalid mtime ${n.mtimeSec} at ${pathIn(parent, parent === undefined ? undefined : name)}`);
  const srcXattrs = src.xattrsIfAny();
  if (srcXattrs !== undefined) n.xattrs = [];
  for (const [key, value] of srcXattrs ?? []) {
    if (key.length === 0 || key.length > XATTR_NAME_MAX || key.includes('\0')) {
      throw new BootcfsError('ELIMIT', `invalid xattr name ${JSON.stringify(key)} at ${pathIn(parent, parent === undefined ? undefined : name)}`);
    }
    if (value.length > 0xffff) throw new BootcfsError('ELIMIT', `xattr ${key} value too long at ${pathIn(parent, parent === undefined ? undefined : name)}`);
    n.xattrs.push({ key, value: value.toString('latin1') });
  }
  return n;
}

/** erofs_compute_chunk_bitsize: log2 of the chunk size of an external file's hole stub. */
export function chunkBitsOf(size: number): number {
  // ilog2(size - 1) + 1, exact for integers up to 2^53
  const m = size - 1;
  let log = 0;
  if (m >= 0x100000000) log = 32 + (31 - Math.clz32(Math.floor(m / 0x100000000)));
  else if (m >= 1) log = 31 - Math.clz32(m);
  let bits = log + 1;
  if (bits < 12) bits = 12;
  if (bits - 12 > 31) bits = 31 + 12;
  return bits;
}

/** Path of a node's primary entry (for error messages). */
function nodePath(n: WNode): string {
  return n.parent === n ? '/' : pathIn(n.parent, n.name);
}

/** add_overlayfs_xattrs for one primary node (its parent has already been processed). */
function rewriteNode(n: WNode, src: Inode, version: number): void {
  for (const x of n.xattrs) {
    if (x.key.startsWith(XATTR_TRUSTED_OVERLAY_PREFIX)) {
      x.key = XATTR_ESCAPED_OVERLAY_PREFIX + x.key.slice(XATTR_TRUSTED_OVERLAY_PREFIX.length);
    }
  }
  if (n.isExternal) {
    if (Math.ceil(n.size / 2 ** chunkBitsOf(n.size)) > V1_MAX_NONINLINE_CHUNKS) {
      throw new BootcfsError('ELIMIT', `file too big (${n.size} bytes) at ${nodePath(n)}`);
    }
    if (src.digest !== undefined && !METACOPY_SCRATCH.has(src.digest.length)) {
      throw inval(`digest must be 32 (sha256) or 64 (sha512) bytes at ${nodePath(n)}`);
    }
    // struct ovl_metacopy: version 0, len, flags 0, digest algorithm, digest (metacopyValue)
    n.setImplicitMetacopy(src.digest);
    if (src.payloadIsObjectPath) {
      // The payload is the object path of the digest (2 × length + 1 < PATH_MAX bytes): kept as the digest.
      n.setImplicitRedirect({ digest: src.digest! });
    } else {
      const payload = src.payload;
      if (payload !== undefined && payload.length > 0) {
        if (payload.length >= PATH_MAX) throw new BootcfsError('ELIMIT', `payload too long at ${nodePath(n)}`);
        // maybe_join_path("/", payload): a payload that already starts with '/' gives "//…".
        n.setImplicitRedirect(payload);
      }
    }
  } else if (src.payload !== undefined && src.payload.length >= PATH_MAX && n.fmt !== S_IFLNK) {
    throw new BootcfsError('ELIMIT', `payload too long at ${nodePath(n)}`);
  }
  if (n.fmt === S_IFCHR && n.rdev === 0) {
    // An overlayfs whiteout becomes a plain file carrying escaped whiteout markers, so that the
    // image itself can be used as an overlay lower layer.
    n.size = 0;
    n.mode = S_IFREG | (n.mode & ~S_IFMT);
    n.setXattr(ESCAPED_WHITEOUT, EMPTY);
    n.setXattr(USER_WHITEOUT, EMPTY);
    const p = n.parent;
    p.setXattr(ESCAPED_WHITEOUTS, EMPTY);
    p.setXattr(USER_WHITEOUTS, EMPTY);
    if (version >= 1) {
      p.setXattr(ESCAPED_OPAQUE, 'x');
      p.setXattr(USER_OPAQUE, 'x');
    }
  }
}

const HEX = '0123456789abcdef';

/** Build the rewritten, BFS-ordered internal tree. */
export function buildV1Tree(fs: FileSystem, minVersion: number, maxVersion: number): V1Tree {
  const srcRoot = fs.root;
  if ((srcRoot.mode & S_IFMT) !== S_IFDIR) throw inval('the root of the tree must be a directory');

  // ---- pass 1: depth-first (pre-order, sorted) walk; the first name of an inode is its primary.
  // The pending stack is kept in parallel arrays to avoid one object per entry.
  const primaries = new Map<Inode, WNode>();
  const preNodes: WNode[] = [];
  const preSrc: Inode[] = [];
  const root = copyInode(srcRoot, undefined, '');
  primaries.set(srcRoot, root);
  preNodes.push(root);
  preSrc.push(srcRoot);

  const stParent: WNode[] = [];
  const stParentSrc: Inode[] = [];
  const stSlot: number[] = [];
  const stName: ByteString[] = [];
  const stInode: Inode[] = [];
  const secondaryNames = fs.hardlinkNames;
  // Dirents of names known to be secondary hardlinks, resolved once every primary exists.
  const deferred: Array<{ parent: WNode; slot: number; name: ByteString; inode: Inode }> = [];
  const expand = (dir: WNode, src: Inode) => {
    const entries = src.entries;
    if (!entries || entries.size === 0) {
      dir.dirents = [{ name: '.', node: dir, link: true }, { name: '..', node: dir.parent, link: true }];
      return;
    }
    const keys = [...entries.keys()];
    // `.` and `..` are sorted in among the children (names such as "-x" or ".!" sort before "..").
    keys.push('.', '..');
    keys.sort(); // byte strings: UTF-16 code unit order == byte order (strcmp)
    const dirents = new Array<WDirent>(keys.length);
    dir.dirents = dirents;
    for (let i = keys.length - 1; i >= 0; i--) {
      const name = keys[i]!;
      if (name === '.' || name === '..') {
        dirents[i] = { name, node: name === '.' ? dir : dir.parent, link: true };
        continue;
      }
      checkName(name, dir);
      stParent.push(dir);
      stParentSrc.push(src);
      stSlot.push(i);
      stName.push(name);
      stInode.push(entries.get(name)!);
    }
  };
  expand(root, srcRoot);
  while (stInode.length > 0) {
    const parent = stParent.pop()!;
    const parentSrc = stParentSrc.pop()!;
    const slot = stSlot.pop()!;
    const name = stName.pop()!;
    const inode = stInode.pop()!;
    if (secondaryNames !== undefined && secondaryNames.get(parentSrc)?.has(name) === true) {
      deferred.push({ parent, slot, name, inode });
      continue;
    }
    const existing = primaries.get(inode);
    if (existing !== undefined) {
      if (existing.isDir || (inode.mode & S_IFMT) === S_IFDIR) {
        throw inval(`directory hardlink at ${pathIn(parent, name)}`);
      }
      parent.dirents![slot] = { name, node: existing, link: true };
      continue;
    }
    const n = copyInode(inode, parent, name);
    primaries.set(inode, n);
    parent.dirents![slot] = { name, node: n, link: false };
    preNodes.push(n);
    preSrc.push(inode);
    if (n.isDir) expand(n, inode);
  }
  for (const { parent, slot, name, inode } of deferred) {
    const target = primaries.get(inode);
    if (target === undefined) throw inval(`hardlink ${pathIn(parent, name)} has no primary entry in the tree`);
    if (target.isDir) throw inval(`directory hardlink at ${pathIn(parent, name)}`);
    parent.dirents![slot] = { name, node: target, link: true };
  }

  // ---- version selection: any (primary) 0/0 char device bumps the version to 1 if allowed.
  let version = minVersion;
  if (version < 1 && maxVersion >= 1) {
    for (const n of preNodes) {
      if (n.fmt === S_IFCHR && n.rdev === 0) {
        version = 1;
        break;
      }
    }
  }

  // ---- pass 2: rewrite, in the same pre-order (parents before children).
  for (let i = 0; i < preNodes.length; i++) rewriteNode(preNodes[i]!, preSrc[i]!, version);
  root.setXattr(XATTR_OVERLAY_OPAQUE, 'y');
  addWhiteoutStubs(root);

  // ---- compute_tree: breadth-first order.
  const bfs: WNode[] = [root];
  let minSec = root.mtimeSec;
  let minNsec = root.mtimeNsec;
  let hasAcl = false;
  for (let qi = 0; qi < bfs.length; qi++) {
    const n = bfs[qi]!;
    n.inodeNum = qi;
    if (n.dirents !== undefined) {
      let nlink = 2;
      for (const e of n.dirents) {
        if (e.link) continue;
        if (e.node.isDir) nlink++;
        bfs.push(e.node);
      }
      n.nlink = nlink;
    }
    if (n.xattrs.length > 1) n.xattrs.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (n.mtimeSec < minSec || (n.mtimeSec === minSec && n.mtimeNsec < minNsec)) {
      minSec = n.mtimeSec;
      minNsec = n.mtimeNsec;
    }
    if (!hasAcl) {
      for (const x of n.xattrs) {
        if (x.key === 'system.posix_acl_access' || x.key === 'system.posix_acl_default') hasAcl = true;
      }
    }
  }
  return { root, bfs, version, minMtimeSec: minSec, minMtimeNsec: minNsec, hasAcl };
}

/** The 256 `00`–`ff` char-device whiteouts hiding the object store's fan-out dirs (add_overlay_whiteouts). */
function addWhiteoutStubs(root: WNode): void {
  const selinux = root.getXattr(SELINUX);
  const stubs: WDirent[] = [];
  const existing = new Set(root.dirents!.map((e) => e.name));
  for (let i = 0; i < 256; i++) {
    const name = HEX[i >> 4]! + HEX[i & 15]!;
    if (existing.has(name)) continue;
    const s = new WNode(S_IFCHR | 0o644, root);
    s.uid = root.uid;
    s.gid = root.gid;
    s.mtimeSec = root.mtimeSec;
    s.mtimeNsec = root.mtimeNsec;
    if (selinux !== undefined) s.setXattr(SELINUX, selinux);
    stubs.push({ name, node: s, link: false });
  }
  // Merge two sorted lists.
  const a = root.dirents!;
  const out: WDirent[] = new Array(a.length + stubs.length);
  let i = 0, j = 0, k = 0;
  while (i < a.length && j < stubs.length) out[k++] = a[i]!.name < stubs[j]!.name ? a[i++]! : stubs[j++]!;
  while (i < a.length) out[k++] = a[i++]!;
  while (j < stubs.length) out[k++] = stubs[j++]!;
  root.dirents = out;
}
