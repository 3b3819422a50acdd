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
  xattrs: Map<ByteString, Buffer>;
  rdev: number;
  size: number;
  content: Buffer | undefined;
  payload: ByteString | undefined;
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
    this.xattrs = init.xattrs ?? new Map();
    this.rdev = init.rdev ?? 0;
    this.size = init.size ?? 0;
    this.content = init.content;
    this.payload = init.payload;
    this.digest = init.digest;
    this.target = init.target;
    this.entries = (init.mode & S_IFMT) === S_IFDIR ? new Map() : undefined;
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
