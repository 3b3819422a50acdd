/**
 * Typed errors. Every error a user can provoke with bad input is a BootcfsError with a stable `code`
 * and, where it applies, the byte offset (binary formats) or line number (text formats) of the fault.
 * The CLI prints `bootcfs: <message>` for these and never a stack trace.
 */
export type ErrorCode =
  | 'EINVAL' // bad argument / option
  | 'EFORMAT' // malformed input data (dumpfile, image, ...)
  | 'ELIMIT' // input exceeds a format limit (name too long, file too big...)
  | 'ENOTSUP' // operation not supported by kernel/filesystem
  | 'EIO' // I/O error from the OS
  | 'ENOENT'
  | 'EVERITY' // fs-verity digest mismatch
  | 'EINTERNAL';

export class BootcfsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BootcfsError';
    this.code = code;
  }
}

/** Malformed text input: carries the 1-based line number. */
export class ParseError extends BootcfsError {
  readonly line: number | undefined;
  constructor(message: string, line?: number, code: ErrorCode = 'EFORMAT') {
    super(code, line !== undefined ? `line ${line}: ${message}` : message);
    this.name = 'ParseError';
    this.line = line;
  }
}

/** Malformed binary input: carries the byte offset where the fault was found. */
export class FormatError extends BootcfsError {
  readonly offset: number;
  constructor(message: string, offset: number) {
    super('EFORMAT', `${message} (at byte offset ${offset})`);
    this.name = 'FormatError';
    this.offset = offset;
  }
}

/** The kernel or filesystem lacks a feature (e.g. fs-verity). `errno` is the raw errno value. */
export class NotSupportedError extends BootcfsError {
  readonly errno: number;
  constructor(message: string, errno: number) {
    super('ENOTSUP', message);
    this.name = 'NotSupportedError';
    this.errno = errno;
  }
}

/** An OS call failed with errno. */
export class SystemError extends BootcfsError {
  readonly errno: number;
  readonly syscall: string;
  readonly path: string | undefined;
  constructor(syscall: string, errno: number, path?: string, message?: string) {
    super('EIO', message ?? `${syscall}${path !== undefined ? ` '${path}'` : ''} failed: ${errnoName(errno)}`);
    this.name = 'SystemError';
    this.errno = errno;
    this.syscall = syscall;
    this.path = path;
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM (Operation not permitted)',
  2: 'ENOENT (No such file or directory)',
  5: 'EIO (Input/output error)',
  9: 'EBADF (Bad file descriptor)',
  13: 'EACCES (Permission denied)',
  16: 'EBUSY (Device or resource busy)',
  17: 'EEXIST (File exists)',
  18: 'EXDEV (Invalid cross-device link)',
  20: 'ENOTDIR (Not a directory)',
  21: 'EISDIR (Is a directory)',
  22: 'EINVAL (Invalid argument)',
  25: 'ENOTTY (Inappropriate ioctl for device)',
  26: 'ETXTBSY (Text file busy)',
  27: 'EFBIG (File too large)',
  28: 'ENOSPC (No space left on device)',
  30: 'EROFS (Read-only file system)',
  34: 'ERANGE (Numerical result out of range)',
  61: 'ENODATA (No data available)',
  74: 'EBADMSG (Bad message)',
  95: 'EOPNOTSUPP (Operation not supported)',
};
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}
