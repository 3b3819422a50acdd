/**
 * Seeded generator that materialises a random directory tree ON DISK (run as root): directories
 * (some with hundreds of entries), regular files of edge sizes (0/1/63/64/65/4095/4096/4097) and
 * random sizes up to a few MiB (some with identical content), names with high bytes, escapes and
 * spaces, symlinks (some long), character/block devices (some 0/0 = overlay whiteouts, some named
 * like the root's 00..ff stubs), fifos, sockets, hardlinks, xattrs in the user/trusted (incl.
 * trusted.overlay.*)/security namespaces with binary values, POSIX ACLs, setuid/sticky modes,
 * uid/gid above 65535, and mtimes with nanoseconds (many identical, some distinct, some pre-1970).
 *
 * Names, xattr names and symlink targets are raw bytes (Buffers), so non-UTF-8 names survive.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng } from './rng.js';
import { getLibc, lsetxattr, cPath } from '../../src/sys/libc.js';

type Fn = (...args: unknown[]) => number;
let extra: { mknod: Fn; utimensat: Fn } | undefined;
function libc(): { mknod: Fn; utimensat: Fn } {
  if (extra) return extra;
  const { koffi } = getLibc();
  const lib = koffi.load('libc.so.6');
  extra = {
    mknod: lib.func('int mknod(const char *path, uint32_t mode, uint64_t dev)') as Fn,
    utimensat: lib.func('int utimensat(int dirfd, const char *path, const void *times, int flags)') as Fn,
  };
  return extra;
}

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const UTIME_OMIT = (1 << 30) - 2;

export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

function mknod(p: Buffer, mode: number, dev: bigint): void {
  if (libc().mknod(cPath(p), mode, dev) !== 0) throw new Error(`mknod ${p.toString()} failed: errno ${getLibc().koffi.errno()}`);
}

/** Set the mtime with nanoseconds without following symlinks (atime left alone). */
export function setMtime(p: Buffer, sec: number, nsec: number): void {
  const t = Buffer.alloc(32);
  t.writeBigInt64LE(0n, 0);
  t.writeBigInt64LE(BigInt(UTIME_OMIT), 8);
  t.writeBigInt64LE(BigInt(sec), 16);
  t.writeBigInt64LE(BigInt(nsec), 24);
  if (libc().utimensat(AT_FDCWD, cPath(p), t, AT_SYMLINK_NOFOLLOW) !== 0) {
    throw new Error(`utimensat ${p.toString()} failed: errno ${getLibc().koffi.errno()}`);
  }
}

/** A unix socket at `p`: bound in a short temporary directory (sun_path is 108 bytes), moved into place. */
async function makeSocket(p: Buffer): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 's'));
  const sock = path.join(dir, 's');
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sock, () => resolve());
  });
  // Node does not unlink the socket file on close; rename it away first anyway.
  fs.renameSync(sock, p);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  fs.rmSync(dir, { recursive: true, force: true });
}

export interface GenOptions {
  /** Rough number of entries (default 150). */
  entries?: number;
  /** Largest random file size (default 3 MiB). */
  maxFileSize?: number;
  /** Whether to create sockets (default true). */
  sockets?: boolean;
  /** Whether some symlink targets are 1000–4095 bytes long (default true; v2 images allow ≤ 1024). */
  longSymlinks?: boolean;
}

export interface GeneratedTree {
  dir: string;
  seed: number;
  /** Counts by kind, for reporting. */
  counts: Record<string, number>;
}

/** Inline limit (64), block size, and bootcfs' small/large hashing split at 256 KiB. */
const EDGE_SIZES = [0, 1, 63, 64, 65, 4095, 4096, 4097, 262143, 262144, 262145];
const XATTR_POOL: Array<[string, Buffer]> = [
  ['user.shared', Buffer.from('same-everywhere')],
  ['security.selinux', Buffer.from('system_u:object_r:usr_t:s0\0')],
  ['trusted.overlay.origin', Buffer.from([0, 1, 2, 3])],
  ['user.empty', Buffer.alloc(0)],
];

function randomName(rng: Rng, taken: Set<string>): Buffer {
  for (;;) {
    let b: Buffer;
    const kind = rng.int(0, 9);
    if (kind <= 4) {
      const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-';
      b = Buffer.from(Array.from({ length: rng.int(1, 20) }, () => alphabet[rng.int(0, alphabet.length - 1)]).join(''));
    } else if (kind === 5) {
      // high bytes (not valid UTF-8) and control characters
      b = Buffer.from(Array.from({ length: rng.int(1, 12) }, () => rng.pick([0x01, 0x09, 0x0a, 0x1b, 0x7f, 0x80, 0xc3, 0xff, 0xfe, 0x41 + rng.int(0, 25)])));
    } else if (kind === 6) {
      b = Buffer.from(rng.pick(['with space', 'back\\slash', 'eq=uals', 'per%cent', ' lead', 'trail ', '-dash', '!bang', '+plus', '#hash', "quote'", 'dquote"', '$dollar', 'tab\there']));
      b = Buffer.concat([b, Buffer.from(String(rng.int(0, 999)))]);
    } else if (kind === 7) {
      b = Buffer.from(rng.pick(['ä', 'ß', '日本語', '😀', 'ÿ']) + String(rng.int(0, 99)));
    } else if (kind === 8) {
      b = Buffer.alloc(rng.int(200, 255), 0x61 + rng.int(0, 25)); // long names
    } else {
      b = Buffer.from(rng.int(0, 255).toString(16).padStart(2, '0')); // like the root stubs 00..ff
    }
    if (b.includes(0x2f) || b.includes(0) || b.equals(Buffer.from('.')) || b.equals(Buffer.from('..'))) continue;
    const key = b.toString('latin1');
    if (taken.has(key)) continue;
    taken.add(key);
    return b;
  }
}

function randomContent(rng: Rng, size: number, shared: Buffer[]): Buffer {
  if (size > 0 && shared.length > 0 && rng.bool(0.15)) {
    const s = rng.pick(shared);
    if (s.length === size) return s;
  }
  // A random 64 KiB pattern repeated with a per-file prefix: cheap to generate, distinct digests.
  const buf = Buffer.allocUnsafe(size);
  const pattern = rng.bytes(Math.min(size, 65536));
  for (let o = 0; o < size; o += pattern.length) pattern.copy(buf, o);
  if (size >= 8) buf.writeUInt32LE(rng.u32(), 0);
  return buf;
}

/** Materialise a random tree under `dir` (created; must not exist). */
export async function generateDiskTree(dir: string, seed: number, opts: GenOptions = {}): Promise<GeneratedTree> {
  const rng = new Rng(seed);
  const counts: Record<string, number> = {};
  const count = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
  const total = opts.entries ?? 150;
  const maxSize = opts.maxFileSize ?? 3 * 1024 * 1024;
  fs.mkdirSync(dir);
  const root = Buffer.from(dir);
  const baseSec = rng.int(1_000_000_000, 1_900_000_000);
  const baseNsec = rng.bool(0.5) ? 0 : rng.int(0, 999_999_999);
  const dirs: Array<{ path: Buffer; taken: Set<string> }> = [{ path: root, taken: new Set() }];
  const regularFiles: Buffer[] = [];
  const sharedContents: Buffer[] = [Buffer.from('x'), Buffer.alloc(4096, 7), rng.bytes(100)];
  const mtimeTargets: Buffer[] = [];
  const join = (d: Buffer, n: Buffer) => Buffer.concat([d, Buffer.from('/'), n]);

  const bigDir = rng.bool(0.4);
  for (let i = 0; i < total; i++) {
    // Bias towards filling one directory with hundreds of entries now and then.
    const parent = bigDir && i % 3 === 0 && dirs.length > 1 ? dirs[1]! : rng.pick(dirs);
    const name = randomName(rng, parent.taken);
    const p = join(parent.path, name);
    const kind = rng.int(0, 99);
    if (kind < 14) {
      fs.mkdirSync(p);
      dirs.push({ path: p, taken: new Set() });
      count('dir');
    } else if (kind < 62) {
      const size = rng.bool(0.5) ? rng.pick(EDGE_SIZES) : rng.bool(0.8) ? rng.int(0, 200_000) : rng.int(0, maxSize);
      const content = randomContent(rng, size, sharedContents);
      fs.writeFileSync(p, content);
      if (size > 0 && size <= 8192 && rng.bool(0.2)) sharedContents.push(content);
      regularFiles.push(p);
      count(size === 0 ? 'empty' : size <= 64 ? 'inline' : 'external');
    } else if (kind < 72) {
      const long = rng.bool(0.2) && opts.longSymlinks !== false;
      const target = long
        ? Buffer.alloc(rng.int(1000, 4095), 0x61 + rng.int(0, 25))
        : rng.bool(0.5)
          ? Buffer.from(rng.pick(['/usr/bin/env', '../x', 'a b', 'target', '/']))
          : randomName(rng, new Set());
      fs.symlinkSync(target, p);
      count('symlink');
    } else if (kind < 80) {
      const whiteout = rng.bool(0.5);
      const isBlk = !whiteout && rng.bool(0.4);
      const dev = whiteout ? 0n : makedev(rng.int(0, 4095), rng.bool(0.5) ? rng.int(0, 255) : rng.int(0, 0xfffff));
      mknod(p, (isBlk ? fs.constants.S_IFBLK : fs.constants.S_IFCHR) | rng.pick([0o644, 0o600, 0o000, 0o666]), dev);
      count(whiteout ? 'whiteout' : isBlk ? 'blockdev' : 'chardev');
    } else if (kind < 85) {
      mknod(p, fs.constants.S_IFIFO | rng.pick([0o644, 0o600, 0o777]), 0n);
      count('fifo');
    } else if (kind < 88 && opts.sockets !== false) {
      await makeSocket(p);
      count('socket');
    } else if (kind < 95 && regularFiles.length > 0) {
      fs.linkSync(rng.pick(regularFiles), p);
      count('hardlink');
      continue; // shares the inode: its metadata is already set
    } else {
      fs.writeFileSync(p, randomContent(rng, rng.int(65, 5000), sharedContents));
      regularFiles.push(p);
      count('external');
    }
    decorate(rng, p, counts);
    mtimeTargets.push(p);
  }
  // Directories: decorate (not the root's mode: keep it traversable) and set mtimes last, deepest
  // first, since creating entries changes a directory's mtime.
  for (const d of dirs.slice(1)) decorate(rng, d.path, counts);
  const stamp = (p: Buffer) => {
    const r = rng.int(0, 9);
    if (r < 6) setMtime(p, baseSec, baseNsec);
    else if (r < 8) setMtime(p, baseSec + rng.int(1, 100000), rng.int(0, 999_999_999));
    else if (r < 9) setMtime(p, baseSec - rng.int(1, 1000), rng.int(0, 999_999_999));
    else setMtime(p, rng.bool(0.5) ? 0 : -rng.int(1, 100000), rng.int(0, 999_999_999));
  };
  for (const p of mtimeTargets) stamp(p);
  for (const d of [...dirs].reverse()) stamp(d.path);
  if (rng.bool(0.3)) {
    lsetxattr(root, 'user.rootattr', rng.bytes(rng.int(0, 40)));
    count('xattr');
  }
  setMtime(root, baseSec, baseNsec);
  return { dir, seed, counts };
}

/** Random ownership, permission bits and xattrs on one (just created) entry. */
function decorate(rng: Rng, p: Buffer, counts: Record<string, number>): void {
  const st = fs.lstatSync(p);
  const isLink = st.isSymbolicLink();
  const uid = rng.bool(0.6) ? 0 : rng.bool(0.7) ? rng.int(1, 65535) : rng.int(65536, 4_000_000_000);
  const gid = rng.bool(0.6) ? 0 : rng.bool(0.7) ? rng.int(1, 65535) : rng.int(65536, 4_000_000_000);
  fs.lchownSync(p, uid, gid);
  if (rng.bool(0.5)) {
    const n = rng.int(1, 4);
    for (let i = 0; i < n; i++) {
      let name: string;
      let value: Buffer;
      const k = rng.int(0, 9);
      if (k < 3) [name, value] = XATTR_POOL[rng.int(0, XATTR_POOL.length - 1)]!;
      else if (k < 5) [name, value] = [`user.${Buffer.from(rng.bytes(rng.int(1, 12))).toString('hex')}`, rng.bytes(rng.int(0, 120))];
      else if (k < 6) [name, value] = [Buffer.from([...Buffer.from('user.'), 0xff, 0x80, 0x41]).toString('latin1'), rng.bytes(rng.int(0, 8))];
      else if (k < 7) [name, value] = [`trusted.overlay.${rng.pick(['redirect', 'metacopy', 'opaque', 'foo', 'overlay.x'])}`, rng.bytes(rng.int(0, 40))];
      else if (k < 8) [name, value] = [`trusted.${rng.pick(['a', 'bb', 'composefs'])}`, rng.bytes(rng.int(0, 300))];
      else if (k < 9) [name, value] = [`security.${rng.pick(['selinux', 'ima', 'test'])}`, rng.bytes(rng.int(1, 64))];
      else [name, value] = ['user.big', rng.bytes(rng.int(500, 1500))];
      // Symlinks only take trusted/security xattrs (user.* is refused by the kernel on symlinks).
      if (isLink && name.startsWith('user.')) continue;
      if (name === 'security.ima' || name === 'security.evm') continue;
      try {
        lsetxattr(p, name, value);
        counts.xattr = (counts.xattr ?? 0) + 1;
      } catch {
        // Some namespaces refuse some values (e.g. an LSM validating its attribute): skip.
      }
    }
    if (!isLink && rng.bool(0.1)) {
      try {
        lsetxattr(p, 'system.posix_acl_access', posixAcl(rng.int(1000, 70000)));
        counts.acl = (counts.acl ?? 0) + 1;
      } catch {
        // filesystem without ACL support
      }
    }
  }
  if (!isLink) {
    const type = st.mode & fs.constants.S_IFMT;
    const perm = rng.bool(0.7)
      ? rng.pick(type === fs.constants.S_IFDIR ? [0o755, 0o700, 0o1777, 0o2755] : [0o644, 0o755, 0o600, 0o4755, 0o2711, 0o1644, 0o000, 0o777])
      : rng.int(0, 0o7777);
    // Directories must stay readable by the scanner (root bypasses permission bits anyway).
    fs.chmodSync(p, perm);
  }
}

/** A binary POSIX ACL (xattr form) granting one extra user, so the kernel keeps it as an ACL. */
function posixAcl(uid: number): Buffer {
  const entries: Array<[number, number, number]> = [
    [0x01, 6, 0xffffffff], // USER_OBJ rw-
    [0x02, 4, uid], // USER uid r--
    [0x04, 4, 0xffffffff], // GROUP_OBJ r--
    [0x10, 4, 0xffffffff], // MASK r--
    [0x20, 4, 0xffffffff], // OTHER r--
  ];
  const b = Buffer.alloc(4 + 8 * entries.length);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + 8 * i);
    b.writeUInt16LE(perm, 6 + 8 * i);
    b.writeUInt32LE(id, 8 + 8 * i);
  });
  return b;
}
