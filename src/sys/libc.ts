/**
 * The few libc calls Node does not offer, through koffi (FFI; prebuilt, no compiler needed):
 * ioctl (fs-verity, loop), and the l*xattr family. Loaded lazily so that code paths that never need
 * them (and platforms without libc.so.6) do not pay for or fail on the load.
 */
import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { SystemError } from '../errors.js';

const require = createRequire(import.meta.url);

type Koffi = typeof import('koffi');
type Fn = (...args: unknown[]) => number;

interface Libc {
  koffi: Koffi;
  ioctl: Fn;
  llistxattr: Fn;
  lgetxattr: Fn;
  lsetxattr: Fn;
}

let libc: Libc | undefined;

export function getLibc(): Libc {
  if (libc) return libc;
  const koffi = require('koffi') as Koffi;
  const lib = koffi.load('libc.so.6');
  libc = {
    koffi,
    ioctl: lib.func('int ioctl(int fd, unsigned long request, _Inout_ void *arg)') as Fn,
    llistxattr: lib.func('intptr_t llistxattr(const char *path, _Out_ void *list, size_t size)') as Fn,
    lgetxattr: lib.func('intptr_t lgetxattr(const char *path, const char *name, _Out_ void *value, size_t size)') as Fn,
    lsetxattr: lib.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)') as Fn,
  };
  return libc;
}

/** errno of the last failed libc call made through koffi on this thread. */
export function errno(): number {
  return getLibc().koffi.errno();
}

/** ioctl(fd, request, arg); throws SystemError on -1. */
export function ioctl(fd: number, request: number, arg: Buffer, what = 'ioctl'): number {
  const r = getLibc().ioctl(fd, request, arg);
  if (r < 0) throw new SystemError(what, errno());
  return r;
}

/**
 * Paths are passed to C as NUL-terminated byte strings. A path given as a Buffer is used byte for byte
 * (non-UTF-8 names); a string is encoded as UTF-8.
 */
export function cPath(p: string | Buffer): Buffer {
  const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
  const out = Buffer.alloc(b.length + 1);
  b.copy(out);
  return out;
}

const ENODATA = 61;
const ERANGE = 34;
const ENOTSUP = 95;

/**
 * All xattrs of `path` (not following symlinks) as (name byte string → value), in the order the
 * filesystem lists them. A filesystem without xattr support yields an empty map.
 */
export function lgetxattrs(path: string | Buffer): Map<string, Buffer> {
  const c = getLibc();
  const p = cPath(path);
  const shown = typeof path === 'string' ? path : path.toString('latin1');
  let size = 1024;
  let list: Buffer;
  let n: number;
  for (;;) {
    list = Buffer.alloc(size);
    n = c.llistxattr(p, list, size);
    if (n >= 0) break;
    const e = errno();
    if (e === ENOTSUP) return new Map();
    if (e !== ERANGE) throw new SystemError('llistxattr', e, shown);
    size = Math.max(size * 4, c.llistxattr(p, null, 0));
  }
  const out = new Map<string, Buffer>();
  let start = 0;
  for (let i = 0; i < n; i++) {
    if (list[i] !== 0) continue;
    const name = list.subarray(start, i);
    start = i + 1;
    if (name.length === 0) continue;
    const cname = Buffer.alloc(name.length + 1);
    name.copy(cname);
    let vsize = 256;
    for (;;) {
      const val = Buffer.alloc(vsize);
      const m = c.lgetxattr(p, cname, val, vsize);
      if (m >= 0) {
        out.set(name.toString('latin1'), val.subarray(0, m));
        break;
      }
      const e = errno();
      if (e === ENODATA) break; // removed meanwhile
      if (e !== ERANGE) throw new SystemError('lgetxattr', e, shown);
      const need = c.lgetxattr(p, cname, null, 0);
      vsize = need > vsize ? need : vsize * 4;
    }
  }
  return out;
}

/** Set one xattr (name is a byte string) on `path` without following symlinks. */
export function lsetxattr(path: string | Buffer, name: string, value: Uint8Array): void {
  const c = getLibc();
  const r = c.lsetxattr(cPath(path), cPath(Buffer.from(name, 'latin1')), value, value.length, 0);
  if (r < 0) throw new SystemError('lsetxattr', errno(), typeof path === 'string' ? path : path.toString('latin1'));
}

// ------------------------------------------------------------------ flock / syncfs (repository layer)

type AsyncFn = Fn & { async: (...args: unknown[]) => void };
let fsCalls: { flock: AsyncFn; syncfs: AsyncFn } | undefined;
function getFsCalls(): { flock: AsyncFn; syncfs: AsyncFn } {
  if (fsCalls) return fsCalls;
  const lib = getLibc().koffi.load('libc.so.6');
  fsCalls = {
    flock: lib.func('int flock(int fd, int operation)') as unknown as AsyncFn,
    syncfs: lib.func('int syncfs(int fd)') as unknown as AsyncFn,
  };
  return fsCalls;
}

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
const EWOULDBLOCK = 11;
const EINTR = 4;

/** flock(fd, op | LOCK_NB) without waiting: true if taken, false if another holder blocks it. */
export function tryFlock(fd: number, op: number): boolean {
  const r = getFsCalls().flock(fd, op | LOCK_NB);
  if (r === 0) return true;
  const e = errno();
  if (e === EWOULDBLOCK || e === EINTR) return false;
  throw new SystemError('flock', e);
}

/**
 * flock(fd, op), waiting for the lock on a worker thread so the event loop keeps running. errno is
 * thread-local (and the call ran elsewhere), so a failure is re-diagnosed with a non-blocking retry.
 */
export async function flock(fd: number, op: number): Promise<void> {
  if (op === LOCK_UN || tryFlock(fd, op)) {
    if (op === LOCK_UN && getFsCalls().flock(fd, LOCK_UN) !== 0) throw new SystemError('flock', errno());
    return;
  }
  for (;;) {
    const r = await new Promise<number>((resolve, reject) =>
      getFsCalls().flock.async(fd, op, (err: unknown, res: number) => (err ? reject(err) : resolve(res))),
    );
    if (r === 0) return;
    if (tryFlock(fd, op)) return;
  }
}

/** syncfs(2) on the filesystems holding each of `paths` (opened read-only for the call). */
export async function syncfsPaths(...paths: string[]): Promise<void> {
  for (const p of paths) {
    const h = await open(p, 'r');
    try {
      await syncfs(h.fd);
    } finally {
      await h.close();
    }
  }
}

/** syncfs(2) on the filesystem holding `fd`, on a worker thread. */
export async function syncfs(fd: number): Promise<void> {
  const r = await new Promise<number>((resolve, reject) =>
    getFsCalls().syncfs.async(fd, (err: unknown, res: number) => (err ? reject(err) : resolve(res))),
  );
  if (r !== 0) throw new SystemError('syncfs', 5, undefined, 'syncfs failed: the filesystem reported a write-back error');
}
