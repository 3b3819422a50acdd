/**
 * fs-verity: userspace digests (any size, bounded memory, multi-core for large files) and the kernel
 * ioctls (enable / measure). Everything composefs needs from fs-verity goes through this module.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { BootcfsError, errnoName, SystemError } from '../errors.js';
import {
  checkHashAlgorithm,
  digestFromRoot,
  FsVerityHasher,
  FSVERITY_BLOCK_SIZE,
  MerkleTreeBuilder,
  type HashAlgorithm,
} from './digest.js';
import { hashPool } from './pool.js';

export {
  DIGEST_SIZE,
  FSVERITY_BLOCK_SIZE,
  HASH_ALGORITHM_ID,
  FsVerityHasher,
  MerkleTreeBuilder,
  checkHashAlgorithm,
  formatDigest,
  fsverityDescriptor,
  fsverityDigest,
  isHashAlgorithm,
  type HashAlgorithm,
} from './digest.js';
export { HashWorkerPool, closeHashPool, hashPool } from './pool.js';
export {
  enableVerity,
  measureVerity,
  VerityAlreadyEnabledError,
  VerityNotEnabledError,
  FS_IOC_ENABLE_VERITY,
  FS_IOC_MEASURE_VERITY,
} from './kernel.js';

/** Files at least this large are hashed by the worker pool unless `parallel: false`. */
export const PARALLEL_THRESHOLD = 8 * 1024 * 1024;
/** Sequential reads use two buffers of this size (one being read while the other is hashed). */
const READ_CHUNK = 1024 * 1024;
/** Worker job sizes are multiples of this (a whole level-1 block for both algorithms). */
const JOB_ALIGN = 512 * 1024;
const MAX_JOB = 8 * 1024 * 1024;

export interface DigestFileOptions {
  /**
   * true: always use the worker threads; false: hash on the calling thread; undefined (default):
   * workers for regular files ≥ PARALLEL_THRESHOLD when more than one core is available.
   */
  parallel?: boolean;
}

/** Node's fs errors carry a negative errno; report them like fsverity-utils does, as typed errors. */
function ioFailed(syscall: 'open' | 'read', path: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.errno !== 'number') return e as Error;
  const errno = Math.abs(err.errno);
  const what = syscall === 'open' ? `can't open '${path}' for reading` : `error reading '${path}'`;
  return new SystemError(syscall, errno, path, `${what}: ${errnoName(errno)}`);
}
const openFailed = (path: string, e: unknown) => ioFailed('open', path, e);
const readFailed = (path: string, e: unknown) => ioFailed('read', path, e);

/**
 * fs-verity digest of the file at `path`, read in bounded-size pieces (any file size). Large regular
 * files are split into block-aligned ranges hashed by worker threads; the upper tree levels are
 * built here. Throws SystemError for open/read failures.
 */
export async function fsverityDigestFile(path: string, alg: HashAlgorithm = 'sha256', opts: DigestFileOptions = {}): Promise<Buffer> {
  checkHashAlgorithm(alg);
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw openFailed(path, e);
  }
  try {
    const st = await fh.stat();
    const pool = hashPool();
    const parallel = opts.parallel ?? (st.size >= PARALLEL_THRESHOLD && pool.size > 1);
    if (parallel && st.isFile() && st.size > 0) return await digestParallel(fh, path, st.size, alg);
    return await digestSequential(fh, path, st.isFile(), alg);
  } finally {
    await fh.close();
  }
}

async function digestSequential(fh: FileHandle, path: string, seekable: boolean, alg: HashAlgorithm): Promise<Buffer> {
  const hasher = new FsVerityHasher(alg);
  const read = async (buf: Buffer, position: number | null): Promise<number> => {
    try {
      return (await fh.read(buf, 0, buf.length, position)).bytesRead;
    } catch (e) {
      throw readFailed(path, e);
    }
  };
  if (!seekable) {
    // Pipes, character devices: plain sequential reads until EOF.
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    for (let n; (n = await read(buf, null)) > 0; ) hasher.update(buf.subarray(0, n));
    return hasher.digest();
  }
  // Double buffering: the next read runs in the libuv pool while this thread hashes the current piece.
  let cur = Buffer.allocUnsafe(READ_CHUNK);
  let other = Buffer.allocUnsafe(READ_CHUNK);
  let pos = 0;
  let pending = read(cur, pos);
  for (;;) {
    const n = await pending;
    if (n === 0) break;
    pos += n;
    const next = read(other, pos);
    // If hashing throws, `next` must not become an unhandled rejection.
    next.catch(() => {});
    hasher.update(cur.subarray(0, n));
    [cur, other] = [other, cur];
    pending = next;
  }
  return hasher.digest();
}

async function digestParallel(fh: FileHandle, path: string, size: number, alg: HashAlgorithm): Promise<Buffer> {
  const pool = hashPool();
  // Enough jobs to keep every worker busy on mid-sized files, large enough to amortise messaging.
  const perJob = Math.ceil(size / (pool.size * 2) / JOB_ALIGN) * JOB_ALIGN;
  const jobSize = Math.min(MAX_JOB, Math.max(JOB_ALIGN, perJob));
  const window = pool.size * 2;
  const tree = new MerkleTreeBuilder(alg);
  const inflight: Promise<Uint8Array>[] = [];
  let next = 0;
  try {
    while (next < size || inflight.length > 0) {
      while (inflight.length < window && next < size) {
        const length = Math.min(jobSize, size - next);
        const p = pool.leafHashes(fh.fd, alg, next, length, path);
        p.catch(() => {}); // awaited in order below; avoid unhandled-rejection reports meanwhile
        inflight.push(p);
        next += length;
      }
      tree.addLeafHashes(await inflight.shift()!);
    }
  } catch (e) {
    // Workers read through our fd: it must stay open until none of them uses it any more.
    await Promise.allSettled(inflight);
    throw e;
  }
  // The size was taken from fstat before hashing; a file that grew meanwhile would give a digest of
  // neither version, so report it like a shrinking one.
  const probe = Buffer.alloc(1);
  let extra: number;
  try {
    extra = (await fh.read(probe, 0, 1, size)).bytesRead;
  } catch (e) {
    throw readFailed(path, e);
  }
  if (extra !== 0) throw new BootcfsError('EIO', `'${path}' changed while it was being hashed: it grew beyond ${size} bytes`);
  if (tree.leafCount !== Math.ceil(size / FSVERITY_BLOCK_SIZE)) {
    throw new BootcfsError('EINTERNAL', `fs-verity: expected ${Math.ceil(size / FSVERITY_BLOCK_SIZE)} block hashes, got ${tree.leafCount}`);
  }
  return digestFromRoot(alg, size, tree.rootHash());
}

/** fs-verity digest of a byte stream (e.g. a file being extracted from a tar), and its length. */
export async function fsverityDigestStream(src: AsyncIterable<Uint8Array>, alg: HashAlgorithm = 'sha256'): Promise<{ digest: Buffer; size: number }> {
  const hasher = new FsVerityHasher(alg);
  for await (const chunk of src) {
    if (!(chunk instanceof Uint8Array)) throw new BootcfsError('EINVAL', 'fsverityDigestStream: stream chunks must be Uint8Array/Buffer');
    hasher.update(chunk);
  }
  return { digest: hasher.digest(), size: hasher.size };
}
