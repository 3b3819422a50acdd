/**
 * Build a tree (src/tree/model.ts) from a directory on disk, the way `mkcomposefs SOURCE_DIR` reads it
 * (libcomposefs 1.0.8 `lcfs_build` + the digest pass of tools/mkcomposefs.c):
 * - every entry is lstat'ed (symlinks are never followed); mode, uid, gid, rdev, size and the mtime
 *   with nanoseconds are taken as they are (`useEpoch` zeroes mtimes);
 * - xattrs are whatever the filesystem lists (`skipXattrs`: none; `userXattrs`: only `user.*`); an
 *   inode whose xattrs exceed composefs' per-inode budget is an error (ERANGE), as in C;
 * - regular files of 1..inlineMax bytes (64) are stored inline; larger ones are external: their
 *   fs-verity digest is computed and used as digest and as payload `xx/yyyy…`; empty files are
 *   neither;
 * - hardlinks: 'ignore' (default, what mkcomposefs 1.0.8 does) makes every name its own inode with
 *   nlink 1; 'preserve' maps names with the same (dev, ino) to one Inode whose nlink is the number of
 *   names found in the tree;
 * - `skipDevices` drops character and block devices; sockets and fifos are kept.
 *
 * Names and symlink targets are read as raw bytes. Metadata is read synchronously with statx(2) and
 * l*xattr(2) into reused buffers (cached and cheap: thread-pool round trips and Stats objects would
 * cost more than the syscalls). Contents: files up to 256 KiB are read whole into one reused buffer
 * and hashed on this thread; larger ones are streamed and hashed by the fs-verity worker pool,
 * biggest first, with bounded concurrency. Memory: the tree metadata plus bounded buffers.
 */
import * as fs from 'node:fs';
import { BootcfsError, SystemError, errnoName } from '../errors.js';
import { fsverityDigest, fsverityDigestFile, hashPool, type HashAlgorithm } from '../fsverity/index.js';
import { DIGEST_SIZE, FSVERITY_BLOCK_SIZE, digestFromRoot, hashBlock } from '../fsverity/digest.js';
import { getLibc, lgetxattrs } from '../sys/libc.js';
import { DigestStore, objectPathForDigest } from '../composefs/digest-store.js';
import { Inode, S_IFMT, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG, type FileSystem } from './model.js';

export interface ScanOptions {
  /** 'ignore' = mkcomposefs 1.0.8 behaviour (default); 'preserve' = same (dev,ino) → same Inode. */
  hardlinks?: 'ignore' | 'preserve';
  /** Files of 1..inlineMax bytes are stored inline (default 64). */
  inlineMax?: number;
  skipXattrs?: boolean;
  userXattrs?: boolean;
  skipDevices?: boolean;
  useEpoch?: boolean;
  /** Digest algorithm for external files (default sha256). */
  algorithm?: HashAlgorithm;
  /** Copy external files into this object store directory (`xx/<rest of hex>`). */
  digestStore?: string | DigestStore;
  /** Files digested/copied at the same time (default 16). */
  concurrency?: number;
}

/** mkcomposefs' LCFS_RECOMMENDED_INLINE_CONTENT_MAX. */
export const DEFAULT_INLINE_MAX = 64;
/** LCFS_INLINE_CONTENT_MAX: the most any composefs image inlines. */
const INLINE_CONTENT_LIMIT = 5000;
/**
 * libcomposefs' per-inode xattr budget for external input (LCFS_INODE_EXTERNAL_XATTR_MAX = 32767):
 * 12 bytes of header plus, per xattr, 7 + len(name) + len(value) (worst-case entry alignment).
 */
const XATTR_BUDGET = 0x7fff;
const XATTR_HEADER = 12;
const XATTR_ENTRY_OVERHEAD = 7;
/** Files up to this size are read whole into one reused buffer and hashed on the calling thread. */
const SMALL_FILE_MAX = 256 * 1024;
const ERANGE = 34;
const ENODATA = 61;
const ENOTSUP = 95;
const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
/** STATX_BASIC_STATS: type, mode, nlink, uid, gid, times, ino, size, blocks. */
const STATX_BASIC_STATS = 0x7ff;
/** Linux limits: the name list and one value each fit in 64 KiB. */
const XATTR_LIST_MAX = 65536;
const XATTR_SIZE_MAX = 65536;

const SLASH = Buffer.from('/');

/**
 * A filesystem error while building a tree from a directory. `stage` says what failed, and the message
 * is worded like mkcomposefs': "error accessing PATH: reason" (reading metadata), "error computing
 * digest: PATH: reason" (reading content), "cannot fill store: PATH: reason" (writing an object).
 */
export class ScanError extends SystemError {
  readonly stage: 'metadata' | 'content' | 'store';
  constructor(syscall: string, errno: number, path: string, stage: ScanError['stage'] = 'metadata') {
    const reason = strerror(errno);
    const message =
      stage === 'metadata'
        ? `error accessing ${path}: ${reason}`
        : stage === 'content'
          ? `error computing digest: ${path}: ${reason}`
          : `cannot fill store: ${path}: ${reason}`;
    super(syscall, errno, path, message);
    this.name = 'ScanError';
    this.stage = stage;
  }
}

/** "No such file or directory" from "ENOENT (No such file or directory)". */
function strerror(errno: number): string {
  const m = /\((.*)\)$/.exec(errnoName(errno));
  return m ? m[1]! : errnoName(errno);
}

function errnoOf(e: unknown): number | undefined {
  if (e instanceof SystemError) return e.errno;
  const n = (e as NodeJS.ErrnoException)?.errno;
  return typeof n === 'number' ? Math.abs(n) : undefined;
}

/** The path as a JS string when it is valid UTF-8 (usable with every Node API), else undefined. */
function utf8Path(p: Buffer): string | undefined {
  const s = p.toString('utf8');
  return Buffer.from(s, 'utf8').equals(p) ? s : undefined;
}

/** A regular file whose content still has to be read (inline) or digested (external). */
interface ContentJob {
  inode: Inode;
  /** Full path (no NUL terminator). Shown to users as UTF-8 in messages. */
  path: Buffer;
}

/** The metadata of one directory entry, as lstat/statx report it. */
interface Meta {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** `dev:ino`, only computed when hardlinks are preserved. */
  key: string | undefined;
}

type NativeFn = (...args: unknown[]) => number;
/**
 * statx(2) and the xattr calls through koffi into reused buffers: per entry no Stats object, no
 * BigInts, no Dates and no temporary buffers — the scan of a root filesystem is dominated by
 * exactly this per-entry overhead. Falls back to Node's fs (and libc.ts) when koffi cannot be used.
 */
class NativeMeta {
  private readonly statx: NativeFn;
  private readonly llistxattr: NativeFn;
  private readonly lgetxattr: NativeFn;
  private readonly errno: () => number;
  private readonly stx = Buffer.alloc(256);
  private readonly list = Buffer.alloc(XATTR_LIST_MAX);
  private readonly value = Buffer.alloc(XATTR_SIZE_MAX);

  private constructor(statx: NativeFn, llistxattr: NativeFn, lgetxattr: NativeFn, errno: () => number) {
    this.statx = statx;
    this.llistxattr = llistxattr;
    this.lgetxattr = lgetxattr;
    this.errno = errno;
  }

  static create(): NativeMeta | undefined {
    try {
      const { koffi } = getLibc();
      const lib = koffi.load('libc.so.6');
      // Plain `void *` (not _Out_): koffi then hands the Buffer's memory to C without copying it back.
      const statx = lib.func('int statx(int dirfd, const char *path, int flags, unsigned int mask, void *buf)') as NativeFn;
      const llistxattr = lib.func('intptr_t llistxattr(const char *path, void *list, size_t size)') as NativeFn;
      const lgetxattr = lib.func('intptr_t lgetxattr(const char *path, const char *name, void *value, size_t size)') as NativeFn;
      return new NativeMeta(statx, llistxattr, lgetxattr, () => koffi.errno());
    } catch {
      return undefined;
    }
  }

  /** lstat of a NUL-terminated path; returns the errno on failure. */
  stat(pathz: Buffer, wantKey: boolean): Meta | number {
    const b = this.stx;
    if (this.statx(AT_FDCWD, pathz, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, b) !== 0) return this.errno();
    const type = b.readUInt16LE(28) & S_IFMT;
    const isDev = type === S_IFCHR || type === S_IFBLK;
    return {
      mode: b.readUInt16LE(28),
      nlink: b.readUInt32LE(16),
      uid: b.readUInt32LE(20),
      gid: b.readUInt32LE(24),
      size: b.readUInt32LE(40) + b.readUInt32LE(44) * 0x1_0000_0000,
      mtimeSec: b.readUInt32LE(112) + b.readInt32LE(116) * 0x1_0000_0000,
      mtimeNsec: b.readUInt32LE(120),
      rdev: isDev ? makedev(b.readUInt32LE(128), b.readUInt32LE(132)) : 0,
      key: wantKey ? `${b.readUInt32LE(136)}:${b.readUInt32LE(140)}:${b.readBigUInt64LE(32)}` : undefined,
    };
  }

  /** All xattrs of a NUL-terminated path (not following symlinks); returns the errno on failure. */
  xattrs(pathz: Buffer, userOnly: boolean): Map<string, Buffer> | number {
    const out = new Map<string, Buffer>();
    const n = this.llistxattr(pathz, this.list, this.list.length);
    if (n < 0) {
      const e = this.errno();
      return e === ENOTSUP ? out : e;
    }
    let start = 0;
    for (let i = 0; i < n; i++) {
      if (this.list[i] !== 0) continue;
      const nameLen = i - start;
      const cname = this.list.subarray(start, i + 1); // NUL-terminated, as the C API wants
      const name = this.list.toString('latin1', start, i);
      start = i + 1;
      if (nameLen === 0 || (userOnly && !name.startsWith('user.'))) continue;
      const m = this.lgetxattr(pathz, cname, this.value, this.value.length);
      if (m < 0) {
        const e = this.errno();
        if (e === ENODATA) continue; // removed meanwhile
        return e;
      }
      out.set(name, Buffer.from(this.value.subarray(0, m)));
    }
    return out;
  }
}

/** glibc's makedev(): the dev_t encoding the tree model (and Node's stat) use. */
function makedev(major: number, minor: number): number {
  // Up to 44 significant bits for realistic majors; exact in a double.
  return (
    (Math.floor(major / 0x1000) * 0x1000) * 0x1_0000_0000 +
    (minor - (minor & 0xff)) * 0x1000 +
    ((major & 0xfff) << 8) +
    (minor & 0xff)
  );
}

function metaFromNode(p: Buffer, wantKey: boolean): Meta | number {
  let st: fs.BigIntStats;
  try {
    st = fs.lstatSync(p, { bigint: true });
  } catch (e) {
    return errnoOf(e) ?? 5;
  }
  // Floor division: pre-1970 times have a negative second and a positive nanosecond part.
  let sec = st.mtimeNs / 1_000_000_000n;
  let nsec = st.mtimeNs % 1_000_000_000n;
  if (nsec < 0n) {
    nsec += 1_000_000_000n;
    sec -= 1n;
  }
  return {
    mode: Number(st.mode),
    nlink: Number(st.nlink),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    rdev: Number(st.rdev),
    mtimeSec: Number(sec),
    mtimeNsec: Number(nsec),
    key: wantKey ? `${st.dev}:${st.ino}` : undefined,
  };
}

const NUL = Buffer.alloc(1);

class Scanner {
  readonly inlineMax: number;
  readonly inodesByDevIno = new Map<string, Inode>();
  readonly jobs: ContentJob[] = [];
  /** Names referencing each preserved-hardlink inode. */
  readonly linkCounts = new Map<Inode, number>();
  private readonly native = NativeMeta.create();

  constructor(readonly opts: ScanOptions) {
    this.inlineMax = opts.inlineMax ?? DEFAULT_INLINE_MAX;
    if (!Number.isInteger(this.inlineMax) || this.inlineMax < 0 || this.inlineMax > INLINE_CONTENT_LIMIT) {
      throw new BootcfsError('EINVAL', `inlineMax must be an integer between 0 and ${INLINE_CONTENT_LIMIT}`);
    }
    if (opts.skipXattrs && opts.userXattrs) {
      throw new BootcfsError('EINVAL', 'skipXattrs and userXattrs are mutually exclusive');
    }
  }

  /**
   * Read one inode's metadata (no content) from a NUL-terminated path. Returns undefined for
   * devices when skipping them.
   */
  loadNode(pathz: Buffer, isRoot: boolean): Inode | undefined {
    const path = pathz.subarray(0, pathz.length - 1);
    const preserve = this.opts.hardlinks === 'preserve';
    const meta = this.native ? this.native.stat(pathz, preserve) : metaFromNode(path, preserve);
    if (typeof meta === 'number') throw new ScanError('lstat', meta, path.toString('utf8'));
    const type = meta.mode & S_IFMT;
    if (!isRoot && this.opts.skipDevices && (type === S_IFCHR || type === S_IFBLK)) return undefined;

    if (preserve && type !== S_IFDIR && meta.nlink > 1) {
      const seen = this.inodesByDevIno.get(meta.key!);
      if (seen) {
        this.linkCounts.set(seen, (this.linkCounts.get(seen) ?? 1) + 1);
        return seen;
      }
      const inode = this.makeInode(pathz, path, meta, type);
      this.inodesByDevIno.set(meta.key!, inode);
      this.linkCounts.set(inode, 1);
      return inode;
    }
    return this.makeInode(pathz, path, meta, type);
  }

  private makeInode(pathz: Buffer, path: Buffer, meta: Meta, type: number): Inode {
    const epoch = this.opts.useEpoch === true;
    const inode = new Inode({
      mode: meta.mode,
      uid: meta.uid,
      gid: meta.gid,
      mtimeSec: epoch ? 0 : meta.mtimeSec,
      mtimeNsec: epoch ? 0 : meta.mtimeNsec,
      nlink: 1,
      rdev: type === S_IFCHR || type === S_IFBLK ? meta.rdev : 0,
      size: type === S_IFREG ? meta.size : 0,
    });
    if (type === S_IFLNK) {
      let target: Buffer;
      try {
        target = fs.readlinkSync(path, { encoding: 'buffer' });
      } catch (e) {
        throw new ScanError('readlink', errnoOf(e) ?? 5, path.toString('utf8'));
      }
      if (target.length === 0) throw new ScanError('readlink', 22, path.toString('utf8'));
      inode.target = target.toString('latin1');
      inode.size = target.length;
    }
    if (!this.opts.skipXattrs) inode.xattrs = this.readXattrs(pathz, path);
    if (type === S_IFREG && inode.size > 0) this.jobs.push({ inode, path });
    return inode;
  }

  private readXattrs(pathz: Buffer, path: Buffer): Map<string, Buffer> {
    const userOnly = this.opts.userXattrs === true;
    let out: Map<string, Buffer> | number;
    if (this.native) {
      out = this.native.xattrs(pathz, userOnly);
    } else {
      try {
        out = lgetxattrs(path);
        if (userOnly) out = new Map([...out].filter(([k]) => k.startsWith('user.')));
      } catch (e) {
        out = errnoOf(e) ?? 5;
      }
    }
    if (typeof out === 'number') throw new ScanError('getxattr', out, path.toString('utf8'));
    let budget = 0;
    for (const [k, v] of out) {
      budget += XATTR_ENTRY_OVERHEAD + k.length + v.length;
      if (v.length > 0xffff || k.length > 255 || budget + XATTR_HEADER > XATTR_BUDGET) {
        throw new ScanError('getxattr', ERANGE, path.toString('utf8'));
      }
    }
    return out;
  }

  /** Scan a directory tree below `dirInode` (whose NUL-terminated path is `dirPathz`). */
  scanDir(dirInode: Inode, dirPathz: Buffer): void {
    const stack: Array<[Inode, Buffer]> = [[dirInode, dirPathz]];
    while (stack.length > 0) {
      const [node, pz] = stack.pop()!;
      const p = pz.subarray(0, pz.length - 1);
      let names: Buffer[];
      try {
        names = fs.readdirSync(p, { encoding: 'buffer' });
      } catch (e) {
        throw new ScanError('opendir', errnoOf(e) ?? 5, p.toString('utf8'));
      }
      const prefix = p.length > 0 && p[p.length - 1] === 0x2f ? p : Buffer.concat([p, SLASH]);
      for (const nameBuf of names) {
        const childz = Buffer.concat([prefix, nameBuf, NUL], prefix.length + nameBuf.length + 1);
        const child = this.loadNode(childz, false);
        if (!child) continue;
        node.setEntry(nameBuf.toString('latin1'), child);
        if (child.isDir) stack.push([child, childz]);
      }
    }
  }

  finishHardlinks(): void {
    for (const [inode, n] of this.linkCounts) inode.nlink = n;
  }
}

/**
 * Read exactly `size` bytes of a file (ENODATA if it is shorter, like libcomposefs' read_content) into
 * `into` (reused between calls by the caller: this runs synchronously, so one buffer suffices).
 */
function readWhole(job: ContentJob, size: number, into: Buffer): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(job.path, 'r');
  } catch (e) {
    throw new ScanError('open', errnoOf(e) ?? 5, job.path.toString('utf8'), 'content');
  }
  try {
    const buf = into.subarray(0, size);
    let got = 0;
    while (got < size) {
      const n = fs.readSync(fd, buf, got, size - got, got);
      if (n === 0) throw new ScanError('read', 61, job.path.toString('utf8'), 'content');
      got += n;
    }
    return buf;
  } catch (e) {
    if (e instanceof ScanError) throw e;
    throw new ScanError('read', errnoOf(e) ?? 5, job.path.toString('utf8'), 'content');
  } finally {
    fs.closeSync(fd);
  }
}

/** One reusable buffer for the synchronous small-file reads (room for the last block's zero padding). */
let smallReadBuffer: Buffer | undefined;
function smallBuffer(): Buffer {
  smallReadBuffer ??= Buffer.allocUnsafeSlow(SMALL_FILE_MAX);
  return smallReadBuffer;
}
/** Level-0 hashes of a small file: at most SMALL_FILE_MAX / 4096 = 64 of them, one level-1 block. */
const leafScratch = Buffer.alloc(FSVERITY_BLOCK_SIZE);

/**
 * fs-verity digest of a file of at most SMALL_FILE_MAX bytes read into the small read buffer. Such a
 * file has at most 64 level-0 hashes — one level-1 block for sha256 and sha512 alike — so the root is
 * the single block's hash or the hash of the zero-padded block of leaf hashes. Computed without any
 * per-file allocation, which matters for the thousands of small files of a root filesystem.
 */
function smallFileDigest(data: Buffer, alg: HashAlgorithm): Buffer {
  const size = data.length;
  const ds = DIGEST_SIZE[alg];
  const blocks = Math.ceil(size / FSVERITY_BLOCK_SIZE);
  const base = smallBuffer();
  if (data.buffer !== base.buffer || data.byteOffset !== base.byteOffset || blocks * ds > FSVERITY_BLOCK_SIZE) {
    return fsverityDigest(data, alg);
  }
  base.fill(0, size, blocks * FSVERITY_BLOCK_SIZE);
  for (let i = 0; i < blocks; i++) {
    hashBlock(alg, base.subarray(i * FSVERITY_BLOCK_SIZE, (i + 1) * FSVERITY_BLOCK_SIZE)).copy(leafScratch, i * ds);
  }
  if (blocks === 1) return digestFromRoot(alg, size, leafScratch.subarray(0, ds));
  leafScratch.fill(0, blocks * ds);
  return digestFromRoot(alg, size, hashBlock(alg, leafScratch));
}

/**
 * Files up to SMALL_FILE_MAX are read and hashed right here (a worker round trip costs more than
 * hashing them); larger ones go to the fs-verity worker pool so that hashing uses every core while
 * this thread keeps reading small files and driving the object store.
 */
async function digestFile(job: ContentJob, alg: HashAlgorithm): Promise<Buffer> {
  const size = job.inode.size;
  if (size <= SMALL_FILE_MAX) return smallFileDigest(readWhole(job, size, smallBuffer()), alg);
  try {
    const asString = utf8Path(job.path);
    if (asString !== undefined) return await fsverityDigestFile(asString, alg, { parallel: true });
    // A name that is not valid UTF-8 cannot be passed as a JS string: go through our own descriptor.
    const fd = fs.openSync(job.path, 'r');
    try {
      return await fsverityDigestFile(`/proc/self/fd/${fd}`, alg, { parallel: true });
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    const errno = errnoOf(e);
    if (errno !== undefined) throw new ScanError('read', errno, job.path.toString('utf8'), 'content');
    throw e;
  }
}

/**
 * Read a directory into a tree. Throws ScanError ("error accessing PATH: reason") for unreadable
 * entries, and the store's SystemError when an object cannot be written. When `digestStore` is a
 * path, the store is committed (durable, visible) before this returns; a DigestStore object passed in
 * is left for the caller to commit.
 */
export async function readDirectoryTree(dir: string, opts: ScanOptions = {}): Promise<FileSystem> {
  const scanner = new Scanner(opts);
  const alg = opts.algorithm ?? 'sha256';
  const rootPathz = Buffer.concat([Buffer.from(dir, 'utf8'), NUL]);
  const root = scanner.loadNode(rootPathz, true)!;
  if (!root.isDir) throw new ScanError('opendir', 20, dir);
  scanner.scanDir(root, rootPathz);
  scanner.finishHardlinks();

  const ownStore = typeof opts.digestStore === 'string';
  const store =
    opts.digestStore === undefined
      ? undefined
      : typeof opts.digestStore === 'string'
        ? new DigestStore(opts.digestStore, { algorithm: alg })
        : opts.digestStore;

  // With preserved hardlinks one inode may have several jobs: do the work once.
  const jobs = opts.hardlinks === 'preserve' ? dedupeJobs(scanner.jobs) : scanner.jobs;
  const inlineMax = scanner.inlineMax;
  let failed = false;
  const processJob = async (job: ContentJob): Promise<void> => {
    const inode = job.inode;
    if (inode.size <= inlineMax) {
      inode.content = Buffer.from(readWhole(job, inode.size, smallBuffer()));
      return;
    }
    const digest = await digestFile(job, alg);
    inode.digest = digest;
    inode.payload = objectPathForDigest(digest);
    if (store) {
      try {
        await store.addFile(job.path, digest, { mode: inode.mode, size: inode.size });
      } catch (e) {
        const errno = errnoOf(e);
        if (errno === undefined) throw e;
        throw new ScanError('copy', errno, e instanceof SystemError && e.path !== undefined ? e.path : job.path.toString('utf8'), 'store');
      }
    }
  };
  /** `runners` loops taking jobs from `queue` in order; they yield to the event loop now and then. */
  const drain = (queue: ContentJob[], runners: number): Array<Promise<void>> => {
    let next = 0;
    const runner = async (): Promise<void> => {
      let sinceYield = 0;
      while (!failed && next < queue.length) {
        await processJob(queue[next++]!);
        // Small jobs complete synchronously; let I/O completions (worker results, copies) run.
        if (++sinceYield >= 8) {
          sinceYield = 0;
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      }
    };
    return Array.from({ length: Math.min(runners, queue.length) }, () =>
      runner().catch((e) => {
        failed = true;
        throw e;
      }),
    );
  };
  // Large files go to the hashing workers, biggest first so that no big file is left for the end;
  // meanwhile this thread works through the small files.
  const large = jobs.filter((j) => j.inode.size > SMALL_FILE_MAX).sort((a, b) => b.inode.size - a.inode.size);
  const small = jobs.filter((j) => j.inode.size <= SMALL_FILE_MAX);
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 16));
  const workers = [...drain(large, Math.max(1, Math.min(concurrency, 2 * hashPool().size))), ...drain(small, concurrency)];
  const results = await Promise.allSettled(workers);
  const firstError = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (firstError) {
    if (store && ownStore) await store.abort();
    throw firstError.reason;
  }
  if (store && ownStore) {
    try {
      await store.commit();
    } catch (e) {
      const errno = errnoOf(e);
      if (errno === undefined) throw e;
      throw new ScanError('commit', errno, e instanceof SystemError && e.path !== undefined ? e.path : store.root, 'store');
    }
  }
  return { root };
}

function dedupeJobs(jobs: ContentJob[]): ContentJob[] {
  const seen = new Set<Inode>();
  return jobs.filter((j) => (seen.has(j.inode) ? false : (seen.add(j.inode), true)));
}
