/**
 * Library form of `mkcomposefs` (libcomposefs 1.0.8 tools/mkcomposefs.c): build a composefs image
 * from a directory or a dumpfile, optionally filling an object store, and compute the image's
 * fs-verity digest.
 *
 * Semantics kept from the C tool:
 * - Directory source: scanned by readDirectoryTree (no hardlink detection unless `hardlinks:
 *   'preserve'`); `digestStore`, `useEpoch`, `skipDevices`, `skipXattrs`, `userXattrs` apply.
 * - Dumpfile source: the tree is exactly what the dumpfile says; the scan options and `digestStore` are
 *   ignored (the C tool only uses them when reading a directory).
 * - Version 1 format: `minVersion` default 0, `maxVersion` default 1; the writer raises the version to
 *   1 only when needed (whiteouts) and never beyond `maxVersion` (which is at least `minVersion`).
 *   Versions above 1 are rejected.
 * Additions: `format: 'v2'` (composefs-rs layout; `algorithm` then also selects the digest hash).
 */
import * as fsp from 'node:fs/promises';
import { BootcfsError } from '../errors.js';
import { fsverityDigest, type HashAlgorithm } from '../fsverity/index.js';
import { parseDumpfile } from '../dumpfile/parse.js';
import { writeImageV1 } from '../erofs/writer-v1.js';
import { writeImageV2 } from '../erofs/writer-v2.js';
import { readDirectoryTree } from '../tree/from-directory.js';
import type { FileSystem } from '../tree/model.js';
import { AtomicFile, defaultFileMode } from '../util/atomic-file.js';

export interface MkcomposefsOptions {
  /** The source is a dumpfile (path, or '-' for stdin) rather than a directory. */
  fromFile?: boolean;
  /** Copy external files into this object store (directory sources only). */
  digestStore?: string;
  useEpoch?: boolean;
  skipDevices?: boolean;
  skipXattrs?: boolean;
  userXattrs?: boolean;
  /** v1 only: lowest format version to write (default 0). */
  minVersion?: number;
  /** v1 only: highest format version the writer may pick (default 1). */
  maxVersion?: number;
  /** 'v1' (default): byte-identical to mkcomposefs 1.0.8; 'v2': composefs-rs layout. */
  format?: 'v1' | 'v2';
  /** fs-verity hash for file digests and the image digest (default sha256). */
  algorithm?: HashAlgorithm;
  /** Strict dumpfile parsing (what CFS_PARSE_STRICT selects in C). Default false. */
  strict?: boolean;
  /** Directory sources: 'ignore' (default, as mkcomposefs 1.0.8) or 'preserve'. */
  hardlinks?: 'ignore' | 'preserve';
  /** Bounds the parallel digesting/copying (files in flight = 8 × threads). */
  threads?: number;
}

/** Highest composefs (v1 writer) format version. */
export const LCFS_VERSION_MAX = 1;

/** Which build step failed: lets the CLI word its message like mkcomposefs does. */
export type BuildStage = 'read-dump' | 'scan' | 'write';

/** An error from buildImage, tagged with the step that failed. `cause` is the original error. */
export class BuildError extends BootcfsError {
  readonly stage: BuildStage;
  constructor(stage: BuildStage, cause: unknown) {
    const inner = cause instanceof Error ? cause : new Error(String(cause));
    super(cause instanceof BootcfsError ? cause.code : 'EIO', inner.message, { cause });
    this.name = 'BuildError';
    this.stage = stage;
  }
}

function checkVersion(name: string, v: number | undefined): void {
  if (v === undefined) return;
  if (!Number.isInteger(v)) throw new BootcfsError('EINVAL', `${name} must be an integer`);
  if (v > LCFS_VERSION_MAX) throw new BootcfsError('EINVAL', `${name} ${v} is not supported (the highest format version is ${LCFS_VERSION_MAX})`);
  if (v < 0) throw new BootcfsError('EINVAL', `${name} must not be negative`);
}

/** Validate options that do not depend on the source, before any work is done. */
export function validateOptions(opts: MkcomposefsOptions): void {
  checkVersion('minVersion', opts.minVersion);
  checkVersion('maxVersion', opts.maxVersion);
  if (opts.skipXattrs && opts.userXattrs) throw new BootcfsError('EINVAL', 'skipXattrs and userXattrs cannot be combined');
  if (opts.format !== undefined && opts.format !== 'v1' && opts.format !== 'v2') {
    throw new BootcfsError('EINVAL', `unknown image format '${String(opts.format)}' (expected v1 or v2)`);
  }
  if (opts.algorithm !== undefined && opts.algorithm !== 'sha256' && opts.algorithm !== 'sha512') {
    throw new BootcfsError('EINVAL', `unknown hash algorithm '${String(opts.algorithm)}' (expected sha256 or sha512)`);
  }
  if ((opts.format ?? 'v1') === 'v1' && (opts.algorithm ?? 'sha256') !== 'sha256') {
    throw new BootcfsError('EINVAL', 'the v1 (mkcomposefs) format only supports sha256 digests');
  }
  if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads <= 0)) {
    throw new BootcfsError('EINVAL', `invalid threads count ${opts.threads}`);
  }
}

async function readAllStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Load the tree an image will be built from (dumpfile or directory). */
export async function loadSource(source: string, opts: MkcomposefsOptions = {}): Promise<FileSystem> {
  if (opts.fromFile) {
    let data: Buffer;
    try {
      data = source === '-' ? await readAllStdin() : await fsp.readFile(source);
    } catch (e) {
      throw new BuildError('read-dump', e);
    }
    try {
      return parseDumpfile(data, { strict: opts.strict ?? false });
    } catch (e) {
      throw new BuildError('read-dump', e);
    }
  }
  try {
    return await readDirectoryTree(source, {
      hardlinks: opts.hardlinks ?? 'ignore',
      skipXattrs: opts.skipXattrs,
      userXattrs: opts.userXattrs,
      skipDevices: opts.skipDevices,
      useEpoch: opts.useEpoch,
      algorithm: opts.algorithm ?? 'sha256',
      digestStore: opts.digestStore,
      concurrency: 8 * (opts.threads ?? 2),
    });
  } catch (e) {
    throw new BuildError('scan', e);
  }
}

/** Serialise a tree as an image in the selected format. */
export function writeImage(fs: FileSystem, opts: MkcomposefsOptions = {}): Buffer {
  try {
    if ((opts.format ?? 'v1') === 'v2') return writeImageV2(fs, { algorithm: opts.algorithm ?? 'sha256' });
    // mkcomposefs: when only one bound is given the other defaults to 0; none given → 0..1.
    const versionSet = opts.minVersion !== undefined || opts.maxVersion !== undefined;
    const minVersion = opts.minVersion ?? 0;
    const maxVersion = opts.maxVersion ?? (versionSet ? 0 : LCFS_VERSION_MAX);
    return writeImageV1(fs, { minVersion, maxVersion: Math.max(minVersion, maxVersion) });
  } catch (e) {
    throw new BuildError('write', e);
  }
}

/**
 * Build an image from a directory, a dumpfile path or '-' (stdin, with `fromFile`). Returns the image
 * bytes and their fs-verity digest (sha256, or `algorithm` for v2).
 */
export async function buildImage(source: string, opts: MkcomposefsOptions = {}): Promise<{ image: Buffer; digest: Buffer }> {
  validateOptions(opts);
  const fs = await loadSource(source, opts);
  const image = writeImage(fs, opts);
  const digest = fsverityDigest(image, (opts.format ?? 'v1') === 'v2' ? (opts.algorithm ?? 'sha256') : 'sha256');
  return { image, digest };
}

/** Where an image goes: `write()` the bytes, then `commit()`; `discard()` on failure. */
export interface ImageOutput {
  write(data: Uint8Array): Promise<void>;
  commit(): Promise<void>;
  discard(): Promise<void>;
}

/**
 * Open the destination of an image, failing early like mkcomposefs' fopen (missing directory, a
 * directory in the way, no permission). A regular file (or a new name) is written atomically: a
 * temporary file next to it, fsync, rename — so a failed build leaves nothing behind and an existing
 * image stays intact; symlinks are resolved so the link itself survives. Anything else (a device
 * such as /dev/null, a fifo) cannot be replaced by a rename and is written directly, like C does.
 * New files get mode 0666 & ~umask, like fopen.
 */
export async function openImageOutput(imagePath: string): Promise<ImageOutput> {
  let target = imagePath;
  let st: import('node:fs').Stats | undefined;
  try {
    st = await fsp.stat(imagePath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (st?.isDirectory()) {
    throw Object.assign(new Error(`EISDIR: illegal operation on a directory, open '${imagePath}'`), { code: 'EISDIR', errno: -21, syscall: 'open', path: imagePath });
  }
  if (st && !st.isFile()) {
    const h = await fsp.open(imagePath, 'w');
    return {
      write: async (data) => {
        await h.writeFile(data);
      },
      commit: () => h.close(),
      discard: () => h.close().catch(() => undefined),
    };
  }
  if (st) target = await fsp.realpath(imagePath);
  return AtomicFile.create(target, { mode: st ? st.mode & 0o7777 : defaultFileMode() });
}

/**
 * Build an image and write it to `imagePath` (atomically for regular files, see openImageOutput):
 * on any error nothing is left at `imagePath` and an existing file there is untouched.
 */
export async function buildImageFile(source: string, imagePath: string, opts: MkcomposefsOptions = {}): Promise<{ digest: Buffer }> {
  validateOptions(opts);
  const out = await openImageOutput(imagePath);
  try {
    const { image, digest } = await buildImage(source, opts);
    await out.write(image);
    await out.commit();
    return { digest };
  } catch (e) {
    await out.discard();
    throw e;
  }
}
