/**
 * The in-memory filesystem tree that every composefs image is built from and read back into.
 *
 * Conventions (shared by every module — read this before touching names):
 * - File names, symlink targets, redirect payloads and xattr names are **byte strings**: JS strings in
 *   which every char code is one byte (0–255), i.e. `Buffer.toString('latin1')`. This keeps arbitrary
 *   non-UTF-8 names lossless, makes `Map` lookups cheap, and makes JS string comparison (`<`) equal to
 *   `memcmp`/`strcmp` order, which is the order composefs sorts by. Convert with `bytes()` / `fromBytes()`.
 * - xattr values are Buffers (binary-safe).
 * - `mode` is the full st_mode (file type bits | permission bits).
 * - Hardlinks are the same `Inode` object referenced from several directory entries. Directories are
 *   never hardlinked.
 */

export type ByteString = string;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export type FileType = 'dir' | 'reg' | 'lnk' | 'chr' | 'blk' | 'fifo' | 'sock';

export function fileTypeOfMode(mode: number): FileType | undefined {
  switch (mode & S_IFMT) {
    case S_IFDIR: return 'dir';
    case S_IFREG: return 'reg';
    case S_IFLNK: return 'lnk';
    case S_IFCHR: return 'chr';
    case S_IFBLK: return 'blk';
    case S_IFIFO: return 'fifo';
    case S_IFSOCK: return 'sock';
    default: return undefined;
  }
}

export function bytes(s: ByteString): Buffer {
  return Buffer.from(s, 'latin1');
}
export function fromBytes(b: Uint8Array): ByteString {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}
/** A byte string from a JS (Unicode) string, encoded as UTF-8. */
export function utf8(s: string): ByteString {
  return Buffer.from(s, 'utf8').toString('latin1');
}

/** Raw-byte order, as strcmp/memcmp. Valid because byte strings only hold chars 0–255. */
export function compareBytes(a: ByteString, b: ByteString): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface InodeInit {
  mode: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  mtimeNsec?: number;
  nlink?: number;
  xattrs?: Map<ByteString, Buffer>;
  rdev?: number;
  size?: number;
  content?: Buffer;
  payload?: ByteString;
  digest?: Buffer;
  target?: ByteString;
}

/**
 * One inode. Type-specific fields:
 * - dir: `entries` (name → child; iterate with `sortedEntries()`).
 * - reg: `size`; inline data in `content` (content.length === size), or external: `payload` (the
 *   redirect path relative to the object store, normally `xx/yyyy…`) and/or `digest` (raw fs-verity
 *   digest of the content). A regular file with neither content nor payload/digest and size 0 is empty.
 * - lnk: `target`.
 * - chr/blk: `rdev` (Linux dev_t, glibc makedev encoding).
 */
export class Inode {
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Link count as the source stated it (dumpfile NLINK, or 1 from a directory scan). */
  nlink: number;
  /** The xattr map; undefined until the inode has one (see `xattrs`). */
  private ownXattrs: Map<ByteString, Buffer> | undefined;
  rdev: number;
  size: number;
  content: Buffer | undefined;
  /** The payload when set explicitly (see `payload`). */
  private ownPayload: ByteString | undefined;
  /** setObjectDigest: the payload is `digestPath(digest)`, computed when read. */
  private payloadIsDigestPath = false;
  digest: Buffer | undefined;
  target: ByteString | undefined;
  entries: Map<ByteString, Inode> | undefined;

  constructor(init: InodeInit) {
    this.mode = init.mode;
    this.uid = init.uid ?? 0;
    this.gid = init.gid ?? 0;
    this.mtimeSec = init.mtimeSec ?? 0;
    this.mtimeNsec = init.mtimeNsec ?? 0;
    this.nlink = init.nlink ?? 1;
    this.ownXattrs = init.xattrs;
    this.rdev = init.rdev ?? 0;
    this.size = init.size ?? 0;
    this.content = init.content;
    this.ownPayload = init.payload;
    this.digest = init.digest;
    this.target = init.target;
    this.entries = (init.mode & S_IFMT) === S_IFDIR ? new Map() : undefined;
  }

  /**
   * The redirect payload. After `setObjectDigest(d)` it is `xx/yyyy…` (the hex of `digest`, split after the
   * first byte) and follows `digest`; it is computed when read rather than stored (a string of 129 bytes per
   * file of a large tree). Assigning `payload` stores that value instead.
   */
  get payload(): ByteString | undefined {
    if (this.payloadIsDigestPath) return this.digest === undefined ? undefined : digestPath(this.digest);
    return this.ownPayload;
  }
  set payload(p: ByteString | undefined) {
    this.ownPayload = p;
    this.payloadIsDigestPath = false;
  }
  /** Whether `payload` is the object path of `digest` (set by setObjectDigest; digest defined). */
  get payloadIsObjectPath(): boolean {
    return this.payloadIsDigestPath && this.digest !== undefined;
  }
  /** An external file's object: `digest` = d, `payload` = its object path `xx/yyyy…` (see `payload`). */
  setObjectDigest(d: Buffer): void {
    this.digest = d;
    this.ownPayload = undefined;
    this.payloadIsDigestPath = true;
  }

  /**
   * xattr name → value. Most inodes have none, so no map is allocated for them (a tree of 40 000 files
   * would spend ~8 MiB on empty maps): until the inode has its own map, this returns a new empty map that
   * becomes the inode's map on its first `set()`. Reading, iterating, `delete` and `clear` on it are
   * side-effect free; a reference kept after `inode.xattrs = other` is detached, as with any map.
   * Readers that only look should prefer `hasXattrs` / `xattrsIfAny()`, which allocate nothing.
   */
  get xattrs(): Map<ByteString, Buffer> {
    return this.ownXattrs ?? new PendingXattrs(this);
  }
  set xattrs(m: Map<ByteString, Buffer>) {
    this.ownXattrs = m;
  }
  /** Whether the inode has at least one xattr. */
  get hasXattrs(): boolean {
    return this.ownXattrs !== undefined && this.ownXattrs.size > 0;
  }
  /** The inode's xattrs, or undefined when it has none (allocates nothing). Do not mutate. */
  xattrsIfAny(): ReadonlyMap<ByteString, Buffer> | undefined {
    return this.ownXattrs !== undefined && this.ownXattrs.size > 0 ? this.ownXattrs : undefined;
  }
  /** Drops every xattr (and the map). */
  clearXattrs(): void {
    this.ownXattrs = undefined;
  }
  /** @internal PendingXattrs: adopt `m` as the inode's map unless it got one meanwhile. */
  adoptXattrs(m: Map<ByteString, Buffer>): boolean {
    if (this.ownXattrs !== undefined) return false;
    this.ownXattrs = m;
    return true;
  }

  get type(): FileType {
    const t = fileTypeOfMode(this.mode);
    if (t === undefined) throw new Error(`inode has invalid mode ${this.mode.toString(8)}`);
    return t;
  }
  get isDir(): boolean { return (this.mode & S_IFMT) === S_IFDIR; }
  get isReg(): boolean { return (this.mode & S_IFMT) === S_IFREG; }
  get isSymlink(): boolean { return (this.mode & S_IFMT) === S_IFLNK; }
  get isChr(): boolean { return (this.mode & S_IFMT) === S_IFCHR; }
  get isBlk(): boolean { return (this.mode & S_IFMT) === S_IFBLK; }
  /** An overlayfs whiteout: a character device with rdev 0. */
  get isWhiteout(): boolean { return this.isChr && this.rdev === 0; }
  /** A regular file whose data lives in the object store (not inline, not empty). */
  get isExternal(): boolean { return this.isReg && this.content === undefined && this.size > 0; }

  /** Children in raw-byte name order. */
  sortedEntries(): Array<[ByteString, Inode]> {
    if (!this.entries) return [];
    return [...this.entries].sort((a, b) => compareBytes(a[0], b[0]));
  }

  /** Add or replace a child. Throws if this is not a directory. */
  setEntry(name: ByteString, child: Inode): void {
    if (!this.entries) throw new Error('setEntry on a non-directory');
    this.entries.set(name, child);
  }
}

/** `xx/yyyy…`: the object path of a digest (the hex digits, split after the first byte), as one flat string. */
export function digestPath(digest: Uint8Array): ByteString {
  if (digest.byteLength === 0) return '/';
  const d = Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength);
  const out = Buffer.allocUnsafe(2 * d.length + 1);
  writeDigestPath(out, 0, d);
  return out.toString('latin1');
}

const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');

/**
 * Writes digestPath(digest) into `buf` at `off` (2 × length + 1 bytes, nothing allocated; the digest must
 * not be empty); returns the end.
 */
export function writeDigestPath(buf: Buffer, off: number, digest: Uint8Array): number {
  let p = off;
  for (let i = 0; i < digest.length; i++) {
    buf[p++] = HEX_DIGITS[digest[i]! >> 4]!;
    buf[p++] = HEX_DIGITS[digest[i]! & 15]!;
    if (i === 0) buf[p++] = 0x2f; // '/'
  }
  return p;
}

/** The map `Inode.xattrs` returns for an inode without one: attaches itself to the inode on its first set(). */
class PendingXattrs extends Map<ByteString, Buffer> {
  private owner: Inode | undefined;
  constructor(owner: Inode) {
    super();
    this.owner = owner;
  }
  override set(name: ByteString, value: Buffer): this {
    // First write: this map becomes the inode's (unless the inode was given another map meanwhile, in
    // which case this one is as detached as a replaced map would be).
    if (this.owner !== undefined) {
      this.owner.adoptXattrs(this);
      this.owner = undefined;
    }
    return super.set(name, value);
  }
}

export function newDir(init: Omit<InodeInit, 'mode'> & { perm?: number } = {}): Inode {
  return new Inode({ ...init, mode: S_IFDIR | (init.perm ?? 0o755) });
}

/** A filesystem tree: its root directory. */
export interface FileSystem {
  root: Inode;
  /**
   * Optional, per directory: names that are secondary names of a hardlinked inode (dumpfile `@` lines).
   * The C-compatible image writer places an inode at its primary (non-`@`) name, as libcomposefs does;
   * without this hint the first name in depth-first sorted order counts as the primary.
   */
  hardlinkNames?: Map<Inode, Set<ByteString>>;
}

/** Split an absolute byte-string path into components; '/' → []. */
export function pathComponents(path: ByteString): ByteString[] {
  return path.split('/').filter((c) => c.length > 0);
}

/** Look up an absolute path in a tree. Does not follow symlinks. */
export function lookup(root: Inode, path: ByteString): Inode | undefined {
  let cur: Inode | undefined = root;
  for (const c of pathComponents(path)) {
    if (!cur?.entries) return undefined;
    cur = cur.entries.get(c);
  }
  return cur;
}

/**
 * Depth-first walk in sorted order, parents before children. `path` is absolute ('/' for the root).
 * Hardlinked inodes are visited once per name.
 */
export function* walk(root: Inode, path: ByteString = '/'): Generator<[ByteString, Inode, Inode | undefined]> {
  const stack: Array<[ByteString, Inode, Inode | undefined]> = [[path, root, undefined]];
  while (stack.length > 0) {
    const item = stack.pop()!;
    yield item;
    const [p, node] = item;
    if (node.entries) {
      const kids = node.sortedEntries();
      for (let i = kids.length - 1; i >= 0; i--) {
        const [name, child] = kids[i]!;
        stack.push([p === '/' ? `/${name}` : `${p}/${name}`, child, node]);
      }
    }
  }
}

/** Every inode of the tree once (hardlinked inodes once), parents before children; order otherwise unspecified. */
export function* uniqueInodes(root: Inode): Generator<Inode> {
  const seen = new Set<Inode>();
  const stack: Inode[] = [root];
  while (stack.length > 0) {
    const inode = stack.pop()!;
    if (seen.has(inode)) continue;
    seen.add(inode);
    yield inode;
    if (inode.entries !== undefined) for (const child of inode.entries.values()) stack.push(child);
  }
}
