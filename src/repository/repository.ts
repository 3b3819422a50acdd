/**
 * A composefs repository (composefs-rs layout; /work/shared/reference/composefs-format.md §4):
 *
 *   meta.json                 version, algorithm, features, EROFS format (meta.ts)
 *   objects/xx/<rest of hex>  content-addressed files named by their fs-verity digest
 *   images/<hex>              -> ../objects/xx/…   composefs EROFS images we created
 *   images/refs/<name…>       -> ../<hex> (relative)
 *   streams/<name>            -> ../objects/xx/…   splitstreams (e.g. oci-layer-sha256:…)
 *   streams/refs/<name…>      -> ../../<name> (relative)
 *
 * API (all async unless noted):
 *   Repository.init(path, { algorithm = 'sha512', insecure = false, erofsFormat = 1 })  create (idempotent
 *     for the same configuration; a different one is refused) and open
 *   Repository.open(path, { requireVerity?, readOnly?, insecure? })
 *   .path .algorithm .insecure .erofsFormat .readOnly .meta                          (properties)
 *   ensureObject(bytes | AsyncIterable<Uint8Array>) → digest;  ensureObjectFromFile(file) → digest
 *   ensureObjectWithDigest(bytes, digest) → digest  (digest already computed by the caller, not re-hashed)
 *   hasObject(digest) → boolean;  objectPath(digest) (sync);  openObject(digest) → FileHandle (kernel
 *     verity measured against the name in secure mode);  readObject(digest, { verify? }) → Buffer
 *   sync()  make every object written so far durable (syncfs)
 *   writeImage(erofsBytes, refName?) → image id;  nameImageRef(ref, id);  removeImageRef(ref)
 *   openImage(name) → bytes (hex names are verified);  imagePath(name);  listImages();  imageRefs()
 *   writeStream(name, SplitStreamWriter | FinishedSplitStream, refName?) → stream digest
 *   hasStream(name) → digest | undefined;  openStream(name) → SplitStream;  catStream(name) → bytes…
 *   nameStreamRef(ref, streamName);  removeStreamRef(ref);  listStreams();  streamRefs()
 *   gc({ extraRoots, dryRun }) → GcResult (gc.ts);  fsck({ repair }) → FsckResult (fsck.ts);  close()
 *
 * Durability: an object is written to a temporary file inside objects/ (`.tmp-*`), fs-verity is enabled on
 * it (secure mode: required, and the kernel's measurement must equal the userspace digest), then it is
 * renamed into place — an object name never holds partial content. Objects are not fsynced one by one:
 * before any symlink (stream, image, ref) is published, `sync()` flushes the filesystem with syncfs(2), so
 * a visible name implies everything it refers to is on disk; the symlink itself is created atomically and
 * its directory fsynced before a ref to it is made.
 *
 * Locking: the repository directory is flock()ed LOCK_SH while open (readers and writers); gc takes
 * LOCK_EX (waits for every other opener), then returns to LOCK_SH. Two Repository objects in one process
 * are two lock holders: a gc in one waits for the other to close. The lock does not protect a process
 * from its own gc: objects this instance stored but has not yet referenced from a stream or image are
 * garbage to `gc()` on the same instance (as in composefs-rs): publish them before collecting.
 *
 * Secure mode: meta.json carries fs-verity (composefs-rs's rule) and no `insecure` feature. Opening a repo
 * that is not declared insecure on a filesystem without fs-verity fails with NotSupportedError instead of
 * downgrading; `open(path, { insecure: true })` opts out explicitly (like cfsctl's --insecure).
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { BootcfsError, NotSupportedError, SystemError } from '../errors.js';
import {
  DIGEST_SIZE,
  FsVerityHasher,
  enableVerity,
  fsverityDigest,
  fsverityDigestFile,
  measureVerity,
  VerityAlreadyEnabledError,
  VerityNotEnabledError,
  type HashAlgorithm,
} from '../fsverity/index.js';
import { listObjects } from '../composefs/info.js';
import { flock, LOCK_EX, LOCK_SH, LOCK_UN, syncfs } from '../sys/libc.js';
import { fsyncDir } from '../util/atomic-file.js';
import { readSplitStream, catSplitStream, type SplitStream } from '../splitstream/reader.js';
import { SplitStreamWriter, type FinishedSplitStream } from '../splitstream/writer.js';
import {
  DEFAULT_EROFS_FORMAT,
  checkRepoMeta,
  effectiveErofsFormat,
  isDeclaredInsecure,
  newRepoMeta,
  parseRepoMeta,
  serializeRepoMeta,
  type ErofsFormatVersion,
  type RepoMeta,
} from './meta.js';
import { relativeLinkTarget, replaceSymlink } from './symlinks.js';
import { runGc, type GcOptions, type GcResult } from './gc.js';
import { runFsck, type FsckOptions, type FsckResult } from './fsck.js';

export const META_FILE = 'meta.json';
/** Prefix of temporary object files (stale ones are removed by gc). */
export const OBJECT_TEMP_PREFIX = '.tmp-';

export interface RepositoryInitOptions {
  /** fs-verity hash (default sha512, as bootc uses). */
  algorithm?: HashAlgorithm;
  /** Do not require fs-verity (filesystems without it); recorded in meta.json. */
  insecure?: boolean;
  /** EROFS format new images are written in (default 1, the C-compatible format). */
  erofsFormat?: ErofsFormatVersion;
}

export interface RepositoryOpenOptions {
  /** Fail unless the repository is in secure (fs-verity) mode. */
  requireVerity?: boolean;
  /** Refuse every write. */
  readOnly?: boolean;
  /** Open without fs-verity even if the repository is not declared insecure (explicit downgrade). */
  insecure?: boolean;
}

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

function sysError(e: unknown, where: string): Error {
  if (e instanceof BootcfsError) return e;
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.errno === 'number') return new SystemError(err.syscall ?? 'io', Math.abs(err.errno), where);
  return e as Error;
}

/** true if the process umask would remove bits of mode 0644 from a newly created file. */
function umaskNarrows0644(): boolean {
  return (process.umask() & 0o644) !== 0;
}

async function exists(p: string): Promise<boolean> {
  try {
    // synchronous: one lstat is microseconds, while a promise round trip through the thread pool costs
    // ~100 µs — and writeImage/gc/fsck ask this for every object of an image (10k+)
    fs.lstatSync(p);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return false;
    throw sysError(e, p);
  }
}

const HEX = /^[0-9a-f]+$/;

/** Ref names: relative paths of non-empty components, none `.`/`..`, none starting with '.'. */
export function checkRefName(name: string): void {
  const parts = name.split('/');
  if (name.length === 0 || name.includes('\0') || parts.some((p) => p === '' || p === '.' || p === '..' || p.startsWith('.'))) {
    throw new BootcfsError('EINVAL', `invalid ref name '${name}': use relative path components without '.', '..' or leading dots`);
  }
}

/** Stream names: one path component, not `refs`, not hidden. */
export function checkStreamName(name: string): void {
  if (name.length === 0 || name.length > 255 || name.includes('/') || name.includes('\0') || name.startsWith('.') || name === 'refs') {
    throw new BootcfsError('EINVAL', `invalid stream name '${name}'`);
  }
}

export class Repository {
  readonly path: string;
  readonly meta: RepoMeta;
  readonly algorithm: HashAlgorithm;
  readonly insecure: boolean;
  readonly erofsFormat: ErofsFormatVersion;
  readonly readOnly: boolean;
  private readonly lockHandle: fsp.FileHandle;
  private closed = false;
  /** Objects renamed into place since the last sync(). */
  private unsynced: string[] = [];
  private readonly inflight = new Map<string, Promise<Buffer>>();
  /** objects/xx directories known to exist (nothing ever removes them; cleared by gc/fsck anyway). */
  private readonly knownDirs = new Set<string>();
  /**
   * Hex digests of objects this instance stored or found since the last gc/fsck: writeStream skips the
   * existence check for them (only this instance's gc or fsck --repair can remove an object while the
   * repository is open: another process's gc needs LOCK_EX, which waits for us to close).
   */
  private readonly ensured = new Set<string>();
  /** Insecure mode still tries to enable verity on objects until the filesystem says it cannot. */
  private verityUsable: boolean;
  /** Temporary object names: a random per-instance part and a counter (O_EXCL catches any clash). */
  private readonly tempBase = `${OBJECT_TEMP_PREFIX}${randomBytes(8).toString('hex')}-`;
  private tempSeq = 0;
  /** Whether new files need an explicit chmod 0644 (the umask, read once: it is process-wide state). */
  private readonly fixMode = umaskNarrows0644();

  private constructor(p: string, meta: RepoMeta, insecure: boolean, readOnly: boolean, lock: fsp.FileHandle) {
    this.path = p;
    this.meta = meta;
    this.algorithm = meta.algorithm;
    this.insecure = insecure;
    this.erofsFormat = effectiveErofsFormat(meta);
    this.readOnly = readOnly;
    this.lockHandle = lock;
    this.verityUsable = true;
  }

  // ------------------------------------------------------------------------------- init / open

  /** Create a repository (mode 0700, parents as needed) and open it. */
  static async init(repoPath: string, opts: RepositoryInitOptions = {}): Promise<Repository> {
    const algorithm = opts.algorithm ?? 'sha512';
    if (algorithm !== 'sha256' && algorithm !== 'sha512') throw new BootcfsError('EINVAL', `unsupported algorithm '${algorithm as string}'`);
    const erofsFormat = opts.erofsFormat ?? DEFAULT_EROFS_FORMAT;
    if (erofsFormat !== 0 && erofsFormat !== 1 && erofsFormat !== 2) throw new BootcfsError('EINVAL', `unsupported EROFS format ${erofsFormat as number}`);
    const insecure = opts.insecure ?? false;
    const abs = path.resolve(repoPath);
    try {
      await fsp.mkdir(abs, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw sysError(e, abs);
    }
    const meta = newRepoMeta({ algorithm, erofsFormat, insecure });
    const bytes = serializeRepoMeta(meta);
    const metaPath = path.join(abs, META_FILE);
    let existing: Buffer | undefined;
    try {
      existing = await fsp.readFile(metaPath);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw sysError(e, metaPath);
    }
    if (existing !== undefined) {
      if (!existing.equals(bytes)) {
        const cur = parseRepoMeta(existing);
        throw new BootcfsError(
          'EINVAL',
          `repository ${abs} is already initialized with a different configuration (algorithm ${cur.algorithm}, EROFS format ${effectiveErofsFormat(cur)}, ${isDeclaredInsecure(cur) ? 'insecure' : 'secure'}); cannot re-initialize it as (${algorithm}, ${erofsFormat}, ${insecure ? 'insecure' : 'secure'})`,
        );
      }
      return Repository.open(abs, { insecure });
    }
    await writeMeta(abs, bytes, insecure ? undefined : algorithm);
    for (const d of ['objects', 'images', 'streams']) await fsp.mkdir(path.join(abs, d), { mode: 0o755 }).catch((e) => {
      if (errnoCode(e) !== 'EEXIST') throw sysError(e, d);
    });
    await fsyncDir(abs);
    return Repository.open(abs, { insecure });
  }

  static async open(repoPath: string, opts: RepositoryOpenOptions = {}): Promise<Repository> {
    const abs = path.resolve(repoPath);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(abs, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new BootcfsError('ENOENT', `no composefs repository at ${abs}`);
      throw sysError(e, abs);
    }
    try {
      await flock(handle.fd, LOCK_SH);
      const metaPath = path.join(abs, META_FILE);
      let bytes: Buffer;
      try {
        bytes = await fsp.readFile(metaPath);
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') {
          throw new BootcfsError('ENOENT', `${abs} is not a composefs repository (no meta.json; repositories without it are not supported — initialize one)`);
        }
        throw sysError(e, metaPath);
      }
      const meta = parseRepoMeta(bytes);
      const check = checkRepoMeta(meta);
      let insecure: boolean;
      if (opts.insecure) insecure = true;
      else {
        const state = metaVerityState(metaPath);
        if (state === 'enabled') insecure = false;
        else if (isDeclaredInsecure(meta)) insecure = true;
        else if (state === 'unsupported') {
          throw new NotSupportedError(
            `repository ${abs} is a secure repository (fs-verity required: meta.json does not declare it insecure), but its filesystem does not support fs-verity; refusing to use it without verification (open it insecure explicitly, or move it to a filesystem with fs-verity)`,
            95,
          );
        } else {
          throw new BootcfsError(
            'EVERITY',
            `repository ${abs} is a secure repository (not declared insecure), but fs-verity is not enabled on its meta.json; refusing to use it without verification`,
          );
        }
      }
      if (opts.requireVerity && insecure) {
        throw new BootcfsError('EVERITY', `repository ${abs} is insecure (no fs-verity), but verity was required`);
      }
      const readOnly = (opts.readOnly ?? false) || check.access === 'read-only';
      return new Repository(abs, meta, insecure, readOnly, handle);
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e;
    }
  }

  /** Release the lock. Further calls fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await flock(this.lockHandle.fd, LOCK_UN).catch(() => undefined);
    await this.lockHandle.close();
  }

  private checkUsable(write: boolean): void {
    if (this.closed) throw new BootcfsError('EINVAL', `repository ${this.path} is closed`);
    if (write && this.readOnly) {
      const why = checkRepoMeta(this.meta).unknownReadOnly;
      throw new BootcfsError('EINVAL', `repository ${this.path} is open read-only${why.length ? ` (unknown read-only-compatible features: ${why.join(', ')})` : ''}`);
    }
  }

  /** Internal for gc: take / drop the exclusive lock. */
  async lockExclusive(): Promise<void> {
    await flock(this.lockHandle.fd, LOCK_EX);
  }
  async lockShared(): Promise<void> {
    await flock(this.lockHandle.fd, LOCK_SH);
  }

  // ------------------------------------------------------------------------------------ objects

  get digestSize(): number {
    return DIGEST_SIZE[this.algorithm];
  }

  /** Repo-relative path of an object: `objects/xx/rest`. */
  objectRelPath(digest: Uint8Array | string): string {
    const hex = typeof digest === 'string' ? digest : Buffer.from(digest).toString('hex');
    if (hex.length !== this.digestSize * 2 || !HEX.test(hex)) throw new BootcfsError('EINVAL', `'${hex}' is not a ${this.algorithm} digest`);
    return `objects/${hex.slice(0, 2)}/${hex.slice(2)}`;
  }

  objectPath(digest: Uint8Array | string): string {
    return path.join(this.path, this.objectRelPath(digest));
  }

  async hasObject(digest: Uint8Array | string): Promise<boolean> {
    this.checkUsable(false);
    return exists(this.objectPath(digest));
  }

  /**
   * Store `data` (bytes, or a stream of chunks) as an object; returns its digest. Idempotent: an existing
   * object is reused (in secure mode after checking its verity).
   */
  async ensureObject(data: Uint8Array | AsyncIterable<Uint8Array>): Promise<Buffer> {
    this.checkUsable(true);
    if (!(data instanceof Uint8Array)) return this.ensureObjectFromStream(data);
    return this.ensureObjectWithDigest(data, fsverityDigest(data, this.algorithm));
  }

  /**
   * ensureObject for bytes whose digest the caller has just computed with `fsverityDigest(data,
   * repo.algorithm)` (SplitStreamWriter.writeExternalData does), so they are not hashed twice. In secure
   * mode the kernel's measurement is still compared with `digest` before the object is published.
   */
  async ensureObjectWithDigest(data: Uint8Array, digest: Buffer): Promise<Buffer> {
    this.checkUsable(true);
    if (digest.length !== this.digestSize) throw new BootcfsError('EINVAL', `object digest is ${digest.length} bytes, ${this.algorithm} digests are ${this.digestSize}`);
    const hex = digest.toString('hex');
    const pending = this.inflight.get(hex);
    if (pending) return pending;
    const p = (async () => {
      const final = this.objectPath(digest);
      if (await this.existingObjectOk(final, digest)) {
        this.ensured.add(hex);
        return digest;
      }
      const dir = path.dirname(final);
      await this.mkdirObjectDir(dir);
      const temp = path.join(dir, this.tempName());
      try {
        // One open+write+close; the mode is fixed up only when the umask would have narrowed it.
        await fsp.writeFile(temp, data, { mode: 0o644, flag: 'wx' });
        if (this.fixMode) await fsp.chmod(temp, 0o644);
      } catch (e) {
        await fsp.rm(temp, { force: true });
        throw sysError(e, temp);
      }
      await this.publishObject(temp, final, digest);
      this.ensured.add(hex);
      return digest;
    })();
    this.inflight.set(hex, p);
    try {
      return await p;
    } finally {
      this.inflight.delete(hex);
    }
  }

  private async ensureObjectFromStream(src: AsyncIterable<Uint8Array>): Promise<Buffer> {
    const temp = path.join(this.path, 'objects', this.tempName());
    await this.mkdirObjectDir(path.dirname(temp));
    const hasher = new FsVerityHasher(this.algorithm);
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
      for await (const chunk of src) {
        hasher.update(chunk);
        let off = 0;
        while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
      }
      if (this.fixMode) await fh.chmod(0o644);
      await fh.close();
      fh = undefined;
    } catch (e) {
      await fh?.close().catch(() => undefined);
      await fsp.rm(temp, { force: true });
      throw sysError(e, temp);
    }
    return this.adoptTemp(temp, hasher.digest());
  }

  /** Copy a file into the store (reflink where the filesystem can); returns its digest. */
  async ensureObjectFromFile(file: string): Promise<Buffer> {
    this.checkUsable(true);
    const temp = path.join(this.path, 'objects', this.tempName());
    await this.mkdirObjectDir(path.dirname(temp));
    let digest: Buffer;
    try {
      await fsp.copyFile(file, temp, fs.constants.COPYFILE_FICLONE | fs.constants.COPYFILE_EXCL);
      await fsp.chmod(temp, 0o644);
      // Measured after the copy, so a source changing underneath cannot make the name lie.
      digest = await fsverityDigestFile(temp, this.algorithm);
    } catch (e) {
      await fsp.rm(temp, { force: true });
      throw sysError(e, file);
    }
    return this.adoptTemp(temp, digest);
  }

  private async adoptTemp(temp: string, digest: Buffer): Promise<Buffer> {
    try {
      const final = this.objectPath(digest);
      if (await this.existingObjectOk(final, digest)) {
        await fsp.rm(temp, { force: true });
        this.ensured.add(digest.toString('hex'));
        return digest;
      }
      await this.mkdirObjectDir(path.dirname(final));
      await this.publishObject(temp, final, digest);
      this.ensured.add(digest.toString('hex'));
      return digest;
    } catch (e) {
      await fsp.rm(temp, { force: true });
      throw e;
    }
  }

  private tempName(): string {
    return `${this.tempBase}${(this.tempSeq++).toString(36)}`;
  }

  private async mkdirObjectDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return;
    try {
      await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    } catch (e) {
      throw sysError(e, dir);
    }
    this.knownDirs.add(dir);
  }

  /** true if the object exists (and, in secure mode, its verity matches). */
  private async existingObjectOk(final: string, digest: Buffer): Promise<boolean> {
    if (!(await exists(final))) return false;
    if (!this.insecure) this.checkKernelVerity(final, digest);
    return true;
  }

  /** Secure mode: the kernel's fs-verity digest of `file` must equal `digest`. */
  private checkKernelVerity(file: string | number, digest: Buffer): void {
    let measured: Buffer;
    try {
      measured = measureVerity(file).digest;
    } catch (e) {
      if (e instanceof VerityNotEnabledError) throw new BootcfsError('EVERITY', `object ${file} does not have fs-verity enabled (secure repository)`);
      throw e;
    }
    if (!measured.equals(digest)) {
      throw new BootcfsError('EVERITY', `object ${file} has fs-verity digest ${measured.toString('hex')}, expected ${digest.toString('hex')}`);
    }
  }

  /** Enable verity on the finished temp file (required in secure mode), then rename it into place. */
  private async publishObject(temp: string, final: string, digest: Buffer): Promise<void> {
    try {
      if (!this.insecure || this.verityUsable) {
        try {
          enableVerity(temp, this.algorithm);
          this.checkKernelVerity(temp, digest);
        } catch (e) {
          if (e instanceof VerityAlreadyEnabledError) this.checkKernelVerity(temp, digest);
          else if (this.insecure && e instanceof NotSupportedError) this.verityUsable = false;
          else throw e;
        }
      }
      await fsp.rename(temp, final);
      this.unsynced.push(final);
    } catch (e) {
      await fsp.rm(temp, { force: true });
      throw sysError(e, final);
    }
  }

  /** Open an object for reading; in secure mode its kernel verity digest is checked against its name. */
  async openObject(digest: Uint8Array | string): Promise<fsp.FileHandle> {
    this.checkUsable(false);
    const p = this.objectPath(digest);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(p, 'r');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new BootcfsError('ENOENT', `object ${path.basename(path.dirname(p))}${path.basename(p)} is not in the repository`);
      throw sysError(e, p);
    }
    if (!this.insecure) {
      try {
        this.checkKernelVerity(fh.fd, Buffer.from(typeof digest === 'string' ? Buffer.from(digest, 'hex') : digest));
      } catch (e) {
        await fh.close();
        throw e;
      }
    }
    return fh;
  }

  /** Read a whole object. `verify` (insecure mode) recomputes its digest in userspace. */
  async readObject(digest: Uint8Array | string, opts: { verify?: boolean } = {}): Promise<Buffer> {
    const fh = await this.openObject(digest);
    let data: Buffer;
    try {
      data = await fh.readFile();
    } finally {
      await fh.close();
    }
    if (this.insecure && opts.verify) {
      const want = typeof digest === 'string' ? digest : Buffer.from(digest).toString('hex');
      const got = fsverityDigest(data, this.algorithm).toString('hex');
      if (got !== want) throw new BootcfsError('EVERITY', `object ${want} is corrupt: its content has digest ${got}`);
    }
    return data;
  }

  /** Make every object written so far durable (one syncfs of the repository's filesystem). */
  async sync(): Promise<void> {
    this.checkUsable(false);
    if (this.unsynced.length === 0) return;
    const files = this.unsynced;
    this.unsynced = [];
    try {
      await syncfs(this.lockHandle.fd);
    } catch (e) {
      if (e instanceof SystemError) {
        this.unsynced.push(...files);
        throw e;
      }
      // No syncfs (FFI unavailable): flush each file and its directory.
      for (const f of files) {
        const h = await fsp.open(f, 'r');
        await h.sync().finally(() => h.close());
      }
      for (const d of new Set(files.map((f) => path.dirname(f)))) await fsyncDir(d);
    }
  }

  /** Flush the repository's whole filesystem now (syncfs), e.g. after deletions. */
  async flush(): Promise<void> {
    this.checkUsable(false);
    this.unsynced = [];
    await syncfs(this.lockHandle.fd);
  }

  // ------------------------------------------------------------------------------------ symlinks

  /** Publish `rel` (repo-relative) as a symlink to repo-relative `targetRel`, durably. */
  private async publishLink(rel: string, targetRel: string): Promise<void> {
    const linkPath = path.join(this.path, rel);
    const dir = path.dirname(linkPath);
    try {
      await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
      if (await replaceSymlink(relativeLinkTarget(rel, targetRel), linkPath)) await fsyncDir(dir);
    } catch (e) {
      throw sysError(e, linkPath);
    }
  }

  /** The digest an `images/x` / `streams/x` symlink points at, or undefined if it is not one of ours. */
  async linkDigest(rel: string): Promise<Buffer | undefined> {
    let target: string;
    try {
      target = await fsp.readlink(path.join(this.path, rel));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'EINVAL') return undefined;
      throw sysError(e, rel);
    }
    const m = /^\.\.\/objects\/([0-9a-f]{2})\/([0-9a-f]+)$/.exec(target);
    if (!m || m[1]!.length + m[2]!.length !== this.digestSize * 2) return undefined;
    return Buffer.from(m[1]! + m[2]!, 'hex');
  }

  /** Names (one level) in a repository directory, without hidden entries and `refs`. */
  async listLinks(dir: 'images' | 'streams'): Promise<string[]> {
    try {
      return (await fsp.readdir(path.join(this.path, dir))).filter((n) => !n.startsWith('.') && n !== 'refs').sort();
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw sysError(e, dir);
    }
  }

  /** Every ref under `<dir>/refs` as ref name → target name (the last component of the link target). */
  async listRefs(dir: 'images' | 'streams'): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const root = path.join(this.path, dir, 'refs');
    const walk = async (rel: string): Promise<void> => {
      let entries: fs.Dirent[];
      try {
        entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') return;
        throw sysError(e, path.join(root, rel));
      }
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const ent of entries) {
        if (ent.name.startsWith('.')) continue;
        const name = rel ? `${rel}/${ent.name}` : ent.name;
        if (ent.isDirectory()) await walk(name);
        else if (ent.isSymbolicLink()) out.set(name, path.posix.basename(await fsp.readlink(path.join(root, name))));
      }
    };
    await walk('');
    return out;
  }

  // -------------------------------------------------------------------------------------- images

  /**
   * Store a composefs EROFS image and publish `images/<id>` (and `images/refs/<refName>`). Every object
   * the image references must already be in the repository; all of it is made durable first.
   */
  async writeImage(erofs: Uint8Array, refName?: string): Promise<Buffer> {
    this.checkUsable(true);
    if (refName !== undefined) checkRefName(refName);
    const bytes = Buffer.from(erofs.buffer, erofs.byteOffset, erofs.byteLength);
    for (const obj of listObjects(bytes)) {
      const hex = obj.replace(/^\/+/, '').replace('/', '');
      if (hex.length !== this.digestSize * 2 || !HEX.test(hex) || !(await this.hasObject(hex))) {
        throw new BootcfsError('ENOENT', `image references object '${obj}', which is not in the repository`);
      }
    }
    const id = await this.ensureObject(bytes);
    await this.sync();
    const hex = id.toString('hex');
    await this.publishLink(`images/${hex}`, this.objectRelPath(id));
    if (refName !== undefined) await this.nameImageRef(refName, hex);
    return id;
  }

  /** Point `images/refs/<refName>` at image `id` (digest or hex), which must exist. */
  async nameImageRef(refName: string, id: Uint8Array | string): Promise<void> {
    this.checkUsable(true);
    checkRefName(refName);
    const hex = typeof id === 'string' ? id : Buffer.from(id).toString('hex');
    this.objectRelPath(hex);
    const d = await this.linkDigest(`images/${hex}`);
    if (!d || d.toString('hex') !== hex || !(await this.hasObject(hex))) throw new BootcfsError('ENOENT', `image ${hex} is not in the repository`);
    await this.publishLink(`images/refs/${refName}`, `images/${hex}`);
  }

  async removeImageRef(refName: string): Promise<boolean> {
    this.checkUsable(true);
    checkRefName(refName);
    return this.removeLink(`images/refs/${refName}`);
  }

  private async removeLink(rel: string): Promise<boolean> {
    const p = path.join(this.path, rel);
    try {
      const st = await fsp.lstat(p);
      if (!st.isSymbolicLink()) throw new BootcfsError('EINVAL', `${rel} is not a ref`);
      await fsp.unlink(p);
      await fsyncDir(path.dirname(p));
      return true;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return false;
      throw sysError(e, p);
    }
  }

  /** Absolute path of `images/<name>` (name: hex id or `refs/…`). */
  imagePath(name: string): string {
    if (name.startsWith('refs/')) checkRefName(name.slice(5));
    else this.objectRelPath(name);
    return path.join(this.path, 'images', name);
  }

  /**
   * Read an image. A hex name is verified (kernel verity in secure mode, userspace digest otherwise);
   * a `refs/…` name is trusted, as composefs-rs does.
   */
  async openImage(name: string): Promise<Buffer> {
    this.checkUsable(false);
    const p = this.imagePath(name);
    let bytes: Buffer;
    try {
      bytes = await fsp.readFile(p);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new BootcfsError('ENOENT', `image '${name}' is not in the repository`);
      throw sysError(e, p);
    }
    if (!name.startsWith('refs/')) {
      if (!this.insecure) this.checkKernelVerity(p, Buffer.from(name, 'hex'));
      else if (fsverityDigest(bytes, this.algorithm).toString('hex') !== name) {
        throw new BootcfsError('EVERITY', `image ${name} is corrupt: its content does not match its name`);
      }
    }
    return bytes;
  }

  /** Image ids (hex) present in `images/`. */
  listImages(): Promise<string[]> {
    return this.listLinks('images');
  }

  /** `images/refs/**` as ref name → image id. */
  imageRefs(): Promise<Map<string, string>> {
    return this.listRefs('images');
  }

  // ------------------------------------------------------------------------------------- streams

  /**
   * Store a splitstream and publish `streams/<name>` (and `streams/refs/<refName>`). Everything it
   * references (objects and other streams) must be in the repository; all of it is made durable first.
   */
  async writeStream(name: string, stream: SplitStreamWriter | FinishedSplitStream, refName?: string): Promise<Buffer> {
    this.checkUsable(true);
    checkStreamName(name);
    if (refName !== undefined) checkRefName(refName);
    if (stream instanceof SplitStreamWriter && stream.algorithm !== this.algorithm) {
      throw new BootcfsError('EINVAL', `splitstream uses ${stream.algorithm}, the repository ${this.algorithm}`);
    }
    // A writer's own reference lists are used as they are (its output is well-formed by construction);
    // a FinishedSplitStream handed in from elsewhere is parsed, so we never publish one fsck would reject.
    const fin = stream instanceof SplitStreamWriter ? await stream.finish() : stream;
    const refs = stream instanceof SplitStreamWriter ? fin : readSplitStream(fin.bytes, this.algorithm);
    for (const d of [...refs.objectRefs, ...refs.streamRefs]) {
      // Objects this instance stored (or found) since the last gc/fsck need no second look.
      if (this.ensured.has(d.toString('hex'))) continue;
      if (!(await this.hasObject(d))) throw new BootcfsError('ENOENT', `splitstream '${name}' references object ${d.toString('hex')}, which is not in the repository`);
    }
    const digest = await this.ensureObject(fin.bytes);
    await this.sync();
    await this.publishLink(`streams/${name}`, this.objectRelPath(digest));
    if (refName !== undefined) await this.nameStreamRef(refName, name);
    return digest;
  }

  /** The digest of stream `name` if it is present (its symlink and object), else undefined. */
  async hasStream(name: string): Promise<Buffer | undefined> {
    this.checkUsable(false);
    checkStreamName(name);
    const d = await this.linkDigest(`streams/${name}`);
    if (!d || !(await this.hasObject(d))) return undefined;
    return d;
  }

  private async resolveStream(name: string): Promise<Buffer> {
    let d: Buffer | undefined;
    if (name.startsWith('refs/')) {
      checkRefName(name.slice(5));
      let target: string;
      try {
        target = await fsp.readlink(path.join(this.path, 'streams', name));
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') throw new BootcfsError('ENOENT', `stream ref '${name}' does not exist`);
        throw sysError(e, name);
      }
      d = await this.hasStream(path.posix.basename(target));
    } else d = await this.hasStream(name);
    if (!d) throw new BootcfsError('ENOENT', `stream '${name}' is not in the repository`);
    return d;
  }

  /** Read and parse stream `name` (a stream name or `refs/…`). */
  async openStream(name: string): Promise<SplitStream> {
    this.checkUsable(false);
    const d = await this.resolveStream(name);
    return readSplitStream(await this.readObject(d), this.algorithm);
  }

  /** The digest stream `name` (a stream name or `refs/…`) resolves to. */
  streamDigest(name: string): Promise<Buffer> {
    this.checkUsable(false);
    return this.resolveStream(name);
  }

  /** Reassemble the original bytes of stream `name`. */
  async *catStream(name: string): AsyncGenerator<Buffer> {
    const ss = await this.openStream(name);
    yield* catSplitStream(ss, (d) => this.readObject(d));
  }

  /** Point `streams/refs/<refName>` at `streams/<streamName>`, which must exist. */
  async nameStreamRef(refName: string, streamName: string): Promise<void> {
    this.checkUsable(true);
    checkRefName(refName);
    checkStreamName(streamName);
    if (!(await this.hasStream(streamName))) throw new BootcfsError('ENOENT', `stream '${streamName}' is not in the repository`);
    await this.publishLink(`streams/refs/${refName}`, `streams/${streamName}`);
  }

  async removeStreamRef(refName: string): Promise<boolean> {
    this.checkUsable(true);
    checkRefName(refName);
    return this.removeLink(`streams/refs/${refName}`);
  }

  listStreams(): Promise<string[]> {
    return this.listLinks('streams');
  }

  /** `streams/refs/**` as ref name → stream name. */
  streamRefs(): Promise<Map<string, string>> {
    return this.listRefs('streams');
  }

  // ---------------------------------------------------------------------------------- gc / fsck

  /** gc and fsck --repair may remove objects (and fsck whole directories): forget what we knew. */
  private forgetEnsured(): void {
    this.ensured.clear();
    this.knownDirs.clear();
  }

  /** Garbage collection (see gc.ts). Takes the exclusive lock unless dryRun. */
  async gc(opts: GcOptions = {}): Promise<GcResult> {
    this.checkUsable(!opts.dryRun);
    this.forgetEnsured();
    return runGc(this, opts);
  }

  /** Integrity check (see fsck.ts). */
  async fsck(opts: FsckOptions = {}): Promise<FsckResult> {
    this.checkUsable(opts.repair ?? false);
    this.forgetEnsured();
    return runFsck(this, opts);
  }
}

/**
 * Write meta.json atomically: temp file, fsync, (secure: enable fs-verity, which must work), link to
 * meta.json (fails if another init won the race), directory fsync.
 */
async function writeMeta(dir: string, bytes: Buffer, verityAlgorithm: HashAlgorithm | undefined): Promise<void> {
  const temp = path.join(dir, `.meta.json.tmp-${randomBytes(6).toString('hex')}`);
  try {
    const fh = await fsp.open(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    try {
      await fh.writeFile(bytes);
      await fh.chmod(0o644);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (verityAlgorithm) {
      try {
        enableVerity(temp, verityAlgorithm);
      } catch (e) {
        if (e instanceof NotSupportedError) {
          throw new NotSupportedError(
            `cannot create a secure repository in ${dir}: the filesystem does not support fs-verity (${e.message}); create it insecure to use it without fs-verity`,
            e.errno,
          );
        }
        throw e;
      }
    }
    try {
      await fsp.link(temp, path.join(dir, META_FILE));
    } catch (e) {
      if (errnoCode(e) === 'EEXIST') throw new BootcfsError('EINVAL', `repository ${dir} was initialized concurrently`);
      throw sysError(e, path.join(dir, META_FILE));
    }
    await fsyncDir(dir);
  } finally {
    await fsp.rm(temp, { force: true });
  }
}

/** Whether meta.json has fs-verity: 'enabled', 'disabled' (filesystem supports it) or 'unsupported'. */
function metaVerityState(metaPath: string): 'enabled' | 'disabled' | 'unsupported' {
  try {
    measureVerity(metaPath);
    return 'enabled';
  } catch (e) {
    if (e instanceof VerityNotEnabledError) return 'disabled';
    if (e instanceof NotSupportedError) return 'unsupported';
    throw e;
  }
}
