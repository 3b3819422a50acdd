/**
 * The composefs object ("digest") store: a directory holding every external file's content under its
 * fs-verity digest, as `xx/<rest of hex>` (the layout `mkcomposefs --digest-store` writes and the
 * overlayfs data-only lower layer of a composefs mount expects). Objects are regular files, mode 0644
 * whatever the umask; fan-out directories are created with mode 0755 (umask applies), like mkcomposefs.
 *
 * Writing is crash-safe: content goes to a temporary file in the store root and only appears under its
 * object name after it is on disk. Two durability strategies:
 * - 'batch' (default): objects are staged under temporary names; `commit()` flushes the whole
 *   filesystem once with syncfs(2), then renames every staged object into place and fsyncs the
 *   directories. One flush instead of one per object — much faster for thousands of small files,
 *   with the same guarantee (nothing is visible under an object name before its bytes are durable).
 *   Objects become visible at commit().
 * - 'per-object': copy, fsync, rename immediately (what mkcomposefs does); visible at once.
 * Enabling fs-verity on each object is attempted (errors ignored, as mkcomposefs does); after the first
 * "not supported" answer it is not tried again for this store.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { BootcfsError, NotSupportedError, SystemError } from '../errors.js';
import { enableVerity, type HashAlgorithm } from '../fsverity/index.js';
import { getLibc } from '../sys/libc.js';
import { fsyncDir } from '../util/atomic-file.js';

export { objectPathForDigest } from '../erofs/format.js';
import { objectPathForDigest } from '../erofs/format.js';

export type StoreDurability = 'batch' | 'per-object';

export interface DigestStoreOptions {
  durability?: StoreDurability;
  /** Try FS_IOC_ENABLE_VERITY on new objects (default true; failures are ignored). */
  tryEnableVerity?: boolean;
  /** Hash algorithm used when enabling fs-verity (default sha256). */
  algorithm?: HashAlgorithm;
}

interface Staged {
  temp: string;
  final: string;
  dir: string;
}

/** Staged bytes after which a background flush of the filesystem is started. */
const BACKGROUND_FLUSH_BYTES = 32 * 1024 * 1024;

type SyncfsFn = { async: (fd: number, cb: (err: unknown, res: number) => void) => void };
let syncfsFn: SyncfsFn | null | undefined;
/** syncfs(2) through koffi; null when unavailable (then callers fall back to per-file fsync). */
function getSyncfs(): SyncfsFn | null {
  if (syncfsFn !== undefined) return syncfsFn;
  try {
    const { koffi } = getLibc();
    syncfsFn = koffi.load('libc.so.6').func('int syncfs(int fd)') as unknown as SyncfsFn;
  } catch {
    syncfsFn = null;
  }
  return syncfsFn;
}

function errnoOf(e: unknown): number | undefined {
  const n = (e as NodeJS.ErrnoException)?.errno;
  return typeof n === 'number' ? Math.abs(n) : undefined;
}

export class DigestStore {
  readonly root: string;
  readonly durability: StoreDurability;
  private readonly algorithm: HashAlgorithm;
  private verityUsable: boolean;
  /** Object paths (relative) already present, staged or being written in this session. */
  private readonly known = new Map<string, Promise<boolean>>();
  private readonly createdDirs = new Map<string, Promise<boolean>>();
  private readonly staged: Staged[] = [];
  /** Directories whose entries changed and must be fsynced at commit. */
  private readonly dirtyDirs = new Set<string>();
  private rootReady: Promise<void> | undefined;

  constructor(root: string, opts: DigestStoreOptions = {}) {
    this.root = root;
    this.durability = opts.durability ?? 'batch';
    this.algorithm = opts.algorithm ?? 'sha256';
    this.verityUsable = opts.tryEnableVerity ?? true;
  }

  /** Absolute path of an object. */
  objectPath(digest: Uint8Array): string {
    return path.join(this.root, objectPathForDigest(digest));
  }

  /** Whether an object is present on disk (committed). */
  async has(digest: Uint8Array): Promise<boolean> {
    try {
      await fsp.lstat(this.objectPath(digest));
      return true;
    } catch (e) {
      if (errnoOf(e) === 2) return false;
      throw e;
    }
  }

  /**
   * Add the content of file `src` (a path; Buffer for non-UTF-8 names) under `digest`, which the caller
   * computed from that content. Copies with reflink when the filesystem can, else copy_file_range.
   * Returns true if a new object was written (or staged), false if it already existed.
   */
  addFile(src: string | Buffer, digest: Uint8Array, hint: { mode?: number; size?: number } = {}): Promise<boolean> {
    // copyFile gives the copy the source's permission bits; a chmod is only needed when they differ.
    const mode = hint.mode === undefined ? undefined : hint.mode & 0o7777;
    return this.add(digest, (temp) => fsp.copyFile(src, temp, fs.constants.COPYFILE_FICLONE), mode, hint.size ?? 0);
  }

  /** Add an object from bytes in memory. */
  addBytes(data: Uint8Array, digest: Uint8Array): Promise<boolean> {
    return this.add(digest, (temp) => fsp.writeFile(temp, data, { mode: 0o644 }), undefined, data.length);
  }

  private add(digest: Uint8Array, write: (temp: string) => Promise<void>, writtenMode: number | undefined, size: number): Promise<boolean> {
    const rel = objectPathForDigest(digest);
    const inflight = this.known.get(rel);
    // Only the first caller for a digest can write it; later ones just wait for it to be there.
    if (inflight) return inflight.then(() => false);
    const p = this.addNew(rel, write, writtenMode, size);
    this.known.set(rel, p);
    p.catch(() => this.known.delete(rel));
    return p;
  }

  private async addNew(rel: string, write: (temp: string) => Promise<void>, writtenMode: number | undefined, size: number): Promise<boolean> {
    const final = path.join(this.root, rel);
    const dir = path.dirname(final);
    // A fan-out directory this session created holds nothing we did not put there ourselves.
    const fresh = await this.ensureDir(dir);
    if (!fresh) {
      try {
        await fsp.lstat(final);
        return false; // already present: same digest means same content
      } catch (e) {
        if (errnoOf(e) !== 2) throw this.storeError(e, final);
      }
    }
    // Per-object temporaries share the root with other writers: random names. The batch staging
    // directory is private to this store object: a counter suffices.
    const temp =
      this.durability === 'per-object'
        ? path.join(await this.tempDir(), `.tmp-${randomBytes(8).toString('hex')}`)
        : path.join(await this.tempDir(), `${this.tempCounter++}`);
    try {
      await write(temp);
      if (writtenMode !== 0o644) await fsp.chmod(temp, 0o644);
      if (this.durability === 'per-object') {
        const h = await fsp.open(temp, 'r');
        try {
          await h.sync();
        } finally {
          await h.close();
        }
        this.tryVerity(temp);
        await fsp.rename(temp, final);
        this.dirtyDirs.add(dir);
      } else {
        this.tryVerity(temp);
        this.staged.push({ temp, final, dir });
        this.noteStagedBytes(size);
      }
    } catch (e) {
      await fsp.rm(temp, { force: true });
      throw this.storeError(e, final);
    }
    return true;
  }

  /**
   * Where temporary files go: the store root for per-object writes (one at a time per caller, like
   * mkcomposefs), a private staging directory for batches (thousands of temporary names would
   * otherwise bloat the root directory for good: ext4 directories never shrink).
   */
  private tempDir(): Promise<string> {
    if (this.durability === 'per-object') return this.ensureRoot().then(() => this.root);
    this.stagingDir ??= this.ensureRoot().then(async () => {
      const d = path.join(this.root, `.staging-${randomBytes(6).toString('hex')}`);
      await fsp.mkdir(d, { mode: 0o700 });
      return d;
    });
    this.stagingDir.catch(() => (this.stagingDir = undefined));
    return this.stagingDir;
  }
  private stagingDir: Promise<string> | undefined;
  private tempCounter = 0;

  private async removeStagingDir(): Promise<void> {
    const d = this.stagingDir;
    this.stagingDir = undefined;
    if (d) await fsp.rm(await d, { recursive: true, force: true });
  }

  private tryVerity(file: string): void {
    if (!this.verityUsable) return;
    try {
      enableVerity(file, this.algorithm);
    } catch (e) {
      // Ignored like mkcomposefs does; a filesystem without verity will not grow it mid-run.
      if (e instanceof NotSupportedError) this.verityUsable = false;
    }
  }

  private ensureRoot(): Promise<void> {
    this.rootReady ??= fsp.mkdir(this.root, { recursive: true, mode: 0o755 }).then(
      () => undefined,
      (e) => {
        this.rootReady = undefined;
        throw this.storeError(e, this.root);
      },
    );
    return this.rootReady;
  }

  /** Create a fan-out directory if needed; resolves to true if this call created it. */
  private ensureDir(dir: string): Promise<boolean> {
    let p = this.createdDirs.get(dir);
    if (!p) {
      p = this.ensureRoot().then(async () => {
        try {
          await fsp.mkdir(dir, { mode: 0o755 });
          this.dirtyDirs.add(this.root);
          return true;
        } catch (e) {
          if (errnoOf(e) !== 17) throw this.storeError(e, dir);
          const st = await fsp.stat(dir);
          if (!st.isDirectory()) throw new SystemError('mkdir', 20, dir);
          return false;
        }
      });
      this.createdDirs.set(dir, p);
      p.catch(() => this.createdDirs.delete(dir));
    }
    return p;
  }

  private storeError(e: unknown, where: string): Error {
    if (e instanceof BootcfsError) return e;
    const errno = errnoOf(e);
    if (errno !== undefined) return new SystemError((e as NodeJS.ErrnoException).syscall ?? 'write', errno, where);
    return e as Error;
  }

  /** Number of objects staged and not yet committed. */
  get pending(): number {
    return this.staged.length;
  }

  /**
   * Make every added object durable and visible: flush (syncfs, or fsync per object where syncfs is
   * unavailable), rename staged objects into place, fsync changed directories.
   */
  async commit(): Promise<void> {
    const staged = this.staged.splice(0);
    await this.backgroundFlush;
    if (staged.length > 0) {
      await this.flush(staged);
      // Renames are metadata-only and the data is already durable: plain synchronous calls are
      // several times cheaper than thread-pool round trips for thousands of them.
      for (const s of staged) {
        try {
          fs.renameSync(s.temp, s.final);
        } catch (e) {
          await Promise.all(staged.map((x) => fsp.rm(x.temp, { force: true })));
          await this.removeStagingDir();
          throw this.storeError(e, s.final);
        }
        this.dirtyDirs.add(s.dir);
      }
    }
    await this.removeStagingDir();
    const dirs = [...this.dirtyDirs];
    this.dirtyDirs.clear();
    if (dirs.length === 0) return;
    // One more filesystem flush makes every rename durable at once; else fsync each directory.
    if (!(await this.syncFilesystem())) await Promise.all(dirs.map((d) => fsyncDir(d)));
  }

  /** syncfs(2) on the store's filesystem, on a thread-pool thread. false if unavailable. */
  private async syncFilesystem(): Promise<boolean> {
    const syncfs = getSyncfs();
    if (!syncfs) return false;
    const h = await fsp.open(this.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      const r = await new Promise<number>((resolve, reject) =>
        syncfs.async(h.fd, (err: unknown, res: number) => (err ? reject(err) : resolve(res))),
      );
      return r === 0;
    } finally {
      await h.close();
    }
  }

  /**
   * Start writing staged data back while more objects are being copied (at most one flush in
   * flight), so that the flush at commit() finds little left to do. Errors are ignored here: the
   * commit flush reports them.
   */
  private noteStagedBytes(bytes: number): void {
    this.unflushedBytes += bytes;
    if (this.unflushedBytes < BACKGROUND_FLUSH_BYTES || this.flushing) return;
    this.unflushedBytes = 0;
    this.flushing = true;
    this.backgroundFlush = this.syncFilesystem()
      .catch(() => false)
      .then(() => {
        this.flushing = false;
      });
  }
  private unflushedBytes = 0;
  private flushing = false;
  private backgroundFlush: Promise<void> = Promise.resolve();

  private async flush(staged: Staged[]): Promise<void> {
    if (await this.syncFilesystem()) return;
    // No syncfs: flush objects one by one (bounded parallelism).
    let next = 0;
    const worker = async () => {
      while (next < staged.length) {
        const s = staged[next++]!;
        const h = await fsp.open(s.temp, 'r');
        try {
          await h.sync();
        } finally {
          await h.close();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, staged.length) }, worker));
  }

  /** Drop staged (uncommitted) objects, removing their temporary files. */
  async abort(): Promise<void> {
    const staged = this.staged.splice(0);
    for (const s of staged) this.known.delete(path.relative(this.root, s.final));
    await Promise.all(staged.map((s) => fsp.rm(s.temp, { force: true })));
    await this.removeStagingDir();
    // Fan-out directories this session created and that stayed empty go too.
    const created = [...this.createdDirs];
    this.createdDirs.clear();
    await Promise.all(
      created.map(async ([dir, made]) => {
        if (await made.catch(() => false)) await fsp.rmdir(dir).catch(() => undefined);
      }),
    );
  }
}
