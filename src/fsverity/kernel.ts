/**
 * The kernel side of fs-verity: FS_IOC_ENABLE_VERITY (build and seal the Merkle tree; the file becomes
 * read-only and every read is verified) and FS_IOC_MEASURE_VERITY (the digest the kernel enforces).
 * Block size is always 4096 and there is no salt, so a kernel-measured digest equals
 * fsverityDigestFile() of the same content.
 *
 * Errors (all BootcfsErrors):
 * - NotSupportedError: the kernel lacks CONFIG_FS_VERITY, the filesystem has no verity support
 *   (ext4 without `-O verity`, tmpfs, overlayfs...) or the kernel lacks the hash algorithm.
 * - VerityAlreadyEnabledError (enableVerity): the file already has fs-verity. Enabling is not
 *   idempotent in the kernel; callers that only need "verity is on" can catch this and measure.
 * - VerityNotEnabledError (measureVerity): the file has no fs-verity.
 * - SystemError for anything else (ETXTBSY: the file is open for writing; EACCES; EROFS; ...).
 */
import { closeSync, openSync } from 'node:fs';
import { BootcfsError, errnoName, NotSupportedError, SystemError } from '../errors.js';
import { ioctl } from '../sys/libc.js';
import { DIGEST_SIZE, FSVERITY_BLOCK_SIZE, HASH_ALGORITHM_ID, checkHashAlgorithm, type HashAlgorithm } from './digest.js';

/** _IOW('f', 133, struct fsverity_enable_arg) */
export const FS_IOC_ENABLE_VERITY = 0x40806685;
/** _IOWR('f', 134, struct fsverity_digest) */
export const FS_IOC_MEASURE_VERITY = 0xc0046686;

const ENOTTY = 25;
const EEXIST = 17;
const ETXTBSY = 26;
const ENODATA = 61;
const ENOPKG = 65;
const EOPNOTSUPP = 95;
const ENABLE_ARG_SIZE = 128;
const MAX_DIGEST_SIZE = 64;

/** FS_IOC_ENABLE_VERITY failed with EEXIST: fs-verity is already enabled on the file. */
export class VerityAlreadyEnabledError extends SystemError {
  constructor(path: string) {
    super('FS_IOC_ENABLE_VERITY', EEXIST, path, `fs-verity is already enabled on '${path}'`);
    this.name = 'VerityAlreadyEnabledError';
  }
}

/** FS_IOC_MEASURE_VERITY failed with ENODATA: the file does not have fs-verity enabled. */
export class VerityNotEnabledError extends SystemError {
  constructor(path: string) {
    super('FS_IOC_MEASURE_VERITY', ENODATA, path, `fs-verity is not enabled on '${path}'`);
    this.name = 'VerityNotEnabledError';
  }
}

/** Runs `fn` with a read-only fd for `pathOrFd` (the kernel requires no writable opens for enable). */
function withFd<T>(pathOrFd: string | number, fn: (fd: number, label: string) => T): T {
  if (typeof pathOrFd === 'number') return fn(pathOrFd, `fd ${pathOrFd}`);
  let fd: number;
  try {
    fd = openSync(pathOrFd, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (typeof err.errno !== 'number') throw e;
    const errno = Math.abs(err.errno);
    throw new SystemError('open', errno, pathOrFd, `can't open '${pathOrFd}': ${errnoName(errno)}`);
  }
  try {
    return fn(fd, pathOrFd);
  } finally {
    closeSync(fd);
  }
}

/** Performs the ioctl; returns the errno on failure (0 on success). */
function tryIoctl(fd: number, request: number, arg: Buffer, name: string): number {
  try {
    ioctl(fd, request, arg, name);
    return 0;
  } catch (e) {
    if (e instanceof SystemError) return e.errno;
    // koffi or libc.so.6 unavailable (non-glibc platform): no way to reach the ioctl.
    throw new NotSupportedError(`${name}: cannot call ioctl() on this platform: ${(e as Error).message}`, 0);
  }
}

function commonError(name: string, label: string, errno: number): BootcfsError {
  if (errno === EOPNOTSUPP || errno === ENOTTY) {
    return new NotSupportedError(`${name} failed on '${label}': the kernel or filesystem does not support fs-verity (${errnoName(errno)})`, errno);
  }
  return new SystemError(name, errno, label, `${name} failed on '${label}': ${errnoName(errno)}`);
}

/**
 * Enable fs-verity on a regular file (4096-byte blocks, no salt, no signature). The file must not
 * be open for writing anywhere. Throws VerityAlreadyEnabledError if it already has verity.
 */
export function enableVerity(pathOrFd: string | number, alg: HashAlgorithm = 'sha256'): void {
  checkHashAlgorithm(alg);
  withFd(pathOrFd, (fd, label) => {
    const arg = Buffer.alloc(ENABLE_ARG_SIZE);
    arg.writeUInt32LE(1, 0); // version
    arg.writeUInt32LE(HASH_ALGORITHM_ID[alg], 4);
    arg.writeUInt32LE(FSVERITY_BLOCK_SIZE, 8);
    // salt_size, salt_ptr, sig_size, sig_ptr and the reserved words stay 0
    const errno = tryIoctl(fd, FS_IOC_ENABLE_VERITY, arg, 'FS_IOC_ENABLE_VERITY');
    if (errno === 0) return;
    if (errno === EEXIST) throw new VerityAlreadyEnabledError(label);
    if (errno === ENOPKG) {
      throw new NotSupportedError(`FS_IOC_ENABLE_VERITY failed on '${label}': the kernel does not support fs-verity with ${alg}`, errno);
    }
    if (errno === ETXTBSY) {
      throw new SystemError('FS_IOC_ENABLE_VERITY', errno, label, `FS_IOC_ENABLE_VERITY failed on '${label}': the file is open for writing`);
    }
    throw commonError('FS_IOC_ENABLE_VERITY', label, errno);
  });
}

/** The digest the kernel enforces for a verity file (equal to fsverityDigestFile of its content). */
export function measureVerity(pathOrFd: string | number): { algorithm: HashAlgorithm; digest: Buffer } {
  return withFd(pathOrFd, (fd, label) => {
    // struct fsverity_digest { u16 digest_algorithm; u16 digest_size (in: capacity, out: size); u8 digest[]; }
    const arg = Buffer.alloc(4 + MAX_DIGEST_SIZE);
    arg.writeUInt16LE(MAX_DIGEST_SIZE, 2);
    const errno = tryIoctl(fd, FS_IOC_MEASURE_VERITY, arg, 'FS_IOC_MEASURE_VERITY');
    if (errno === ENODATA) throw new VerityNotEnabledError(label);
    if (errno !== 0) throw commonError('FS_IOC_MEASURE_VERITY', label, errno);
    const algId = arg.readUInt16LE(0);
    const size = arg.readUInt16LE(2);
    const algorithm = (Object.keys(HASH_ALGORITHM_ID) as HashAlgorithm[]).find((a) => HASH_ALGORITHM_ID[a] === algId);
    if (!algorithm || size !== DIGEST_SIZE[algorithm]) {
      throw new NotSupportedError(`'${label}' uses fs-verity hash algorithm ${algId} (digest size ${size}), which bootcfs does not support`, 0);
    }
    return { algorithm, digest: Buffer.from(arg.subarray(4, 4 + size)) };
  });
}
