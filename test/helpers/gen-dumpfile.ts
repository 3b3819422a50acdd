/**
 * Seeded random composefs dumpfiles (composefs-dump(5)) for differential tests against mkcomposefs.
 *
 * Every generated file is valid under mkcomposefs 1.0.8's strict parser (CFS_PARSE_STRICT=1) and is
 * written depth-first with children sorted by raw bytes. A hardlinked inode is usually printed in full
 * at its first name and as `@` lines afterwards; some `@` lines point forward (to a later full line)
 * or to another `@` line (chains).
 *
 * Corners it aims at: directories spanning several blocks; names of 1–255 bytes with escapes, UTF-8,
 * high bytes and bytes sorting before '.'; root entries named like the `00`–`ff` stubs; inline sizes
 * around 0/2048/4096/5000; external files up to the 1024-chunk limit (~2^53) with and without
 * digest/payload; hardlinks to files, symlinks, devices and whiteouts; symlinks up to 4095 bytes;
 * devices, fifos, sockets, 0/0 whiteouts; shared/unshared xattrs (trusted.overlay.* escaping,
 * user.overlay.*, selinux, ACLs, lustre., unknown prefixes, binary and empty values, >128 shared
 * xattrs on one inode); setuid/sticky bits; 32-bit uid/gid/nlink; nanosecond and distinct mtimes.
 *
 * Usage: `genDumpfile(new Rng(seed))` → Buffer. `GenOptions` scales the tree.
 */
import { Rng } from './rng.js';

export interface GenOptions {
  /** Upper bound on the number of entries (default 80). Large directories may add more names. */
  maxEntries?: number;
  /** Probability that a directory is a "huge" one (hundreds of entries). Default 0.05. */
  hugeDirChance?: number;
  /** Emit xattrs that make mkcomposefs 1.0.8 fail with ERANGE (mkcomposefs-quirks.md). Default false. */
  rangeQuirks?: boolean;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
const S_IFSOCK = 0o140000;

/** Per-inode xattr budget of the C parser: Σ(name + value + 7) + 12 ≤ 32767. */
const XATTR_BUDGET = 32767 - 12;

type Bytes = Buffer;

interface GenXattr { key: Bytes; value: Bytes }

interface GenNode {
  mode: number;
  size: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  mtime: string;
  payload?: Bytes;
  content?: Bytes;
  digest?: Bytes;
  xattrs: GenXattr[];
  children?: Map<string, GenEntry>; // key = latin1 name
}

type GenEntry = { node: GenNode } | { linkTo: string /* latin1 absolute path */; node: GenNode };

// ------------------------------------------------------------------------------------------ escaping

function isGraphic(b: number): boolean {
  return b >= 0x21 && b <= 0x7e;
}

/** composefs-info's print_escaped. */
export function escapeDump(data: Bytes, opts: { xattr?: boolean; optional?: boolean } = {}): string {
  if (opts.optional && data.length === 0) return '-';
  if (opts.optional && data.length === 1 && data[0] === 0x2d) return '\\x2d';
  let out = '';
  for (const b of data) {
    if (b === 0x5c) out += '\\\\';
    else if (b === 0x0a) out += '\\n';
    else if (b === 0x0d) out += '\\r';
    else if (b === 0x09) out += '\\t';
    else if (opts.xattr && b === 0x3d) out += '\\x3d';
    else if (!isGraphic(b)) out += '\\x' + b.toString(16).padStart(2, '0');
    else out += String.fromCharCode(b);
  }
  return out;
}

// ------------------------------------------------------------------------------------------ generator

class Gen {
  private entries = 0;
  private readonly commonMtime: string;
  private readonly commonSec: number;
  private readonly sharedPool: GenXattr[] = [];
  /** Absolute paths (latin1) of emitted non-directory inodes that can be hardlink targets. */
  private readonly linkable: Array<{ path: string; node: GenNode; dir: GenNode; key: string }> = [];

  constructor(private readonly rng: Rng, private readonly opts: Required<GenOptions>) {
    this.commonSec = rng.pick([0, 1, 1700000000, rng.int(1, 0xffffffff), rng.int(0, 2 ** 40)]);
    this.commonMtime = `${this.commonSec}.${rng.bool(0.5) ? 0 : rng.int(0, 999999999)}`;
    const poolSize = rng.int(0, 12);
    for (let i = 0; i < poolSize; i++) this.sharedPool.push(this.randomXattr());
  }

  // ---- random pieces

  private name(): Bytes {
    const r = this.rng;
    const kind = r.int(0, 9);
    let len: number;
    if (kind === 0) len = r.int(200, 255);
    else if (kind === 1) len = 1;
    else len = r.int(1, 24);
    const out: number[] = [];
    while (out.length < len) {
      const c = r.int(0, 19);
      if (c < 10) out.push(r.pick([...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_'].map((ch) => ch.charCodeAt(0))));
      else if (c < 12) out.push(r.pick([0x21, 0x22, 0x23, 0x2b, 0x2c, 0x2d, 0x2e, 0x20, 0x3d, 0x5c, 0x7e, 0x27]));
      else if (c < 14) out.push(r.int(1, 0x1f)); // control bytes incl. \t \n \r
      else if (c < 16) out.push(r.int(0x80, 0xff));
      else if (c < 18) {
        // UTF-8 'é' / '→' / emoji
        const enc = [...r.pick([Buffer.from('é'), Buffer.from('→'), Buffer.from('😀'), Buffer.from('ß')])];
        if (out.length + enc.length <= len) out.push(...enc);
        else out.push(0x78);
      } else out.push(0x2e); // dots
    }
    const b = Buffer.from(out.slice(0, len));
    const s = b.toString('latin1');
    if (s === '.' || s === '..') return Buffer.from('dot' + s);
    return b;
  }

  private mtime(): string {
    const r = this.rng;
    const k = r.int(0, 9);
    if (k < 6) return this.commonMtime; // the common minimum keeps inodes compact
    if (k < 8) return `${this.commonSec}.${r.int(0, 999999999)}`;
    if (k < 9) return `${r.int(0, this.commonSec)}.${r.int(0, 999999999)}`; // possibly a new minimum
    return `${r.int(0, 2 ** 34)}.${r.int(0, 999999999)}`;
  }

  private id(): number {
    const r = this.rng;
    const k = r.int(0, 9);
    if (k < 5) return 0;
    if (k < 8) return r.pick([1, 1000, 65534, 65535]);
    if (k < 9) return r.int(0, 65535);
    return r.pick([65536, r.int(65536, 0xffffffff), 0xffffffff]); // forces an extended inode
  }

  private perm(): number {
    const r = this.rng;
    return r.bool(0.7) ? r.pick([0o755, 0o644, 0o600, 0o777, 0o700]) : r.int(0, 0o7777);
  }

  private value(): Bytes {
    const r = this.rng;
    const k = r.int(0, 9);
    if (k < 2) return Buffer.alloc(0);
    if (k < 6) return Buffer.from(r.pick(['x', 'y', 'system_u:object_r:usr_t:s0', 'unconfined_u:object_r:user_home_t:s0\0', '1', 'a=b', '-']));
    if (k < 9) return r.bytes(r.int(1, 64));
    return r.bytes(r.int(64, 2000));
  }

  private randomXattr(): GenXattr {
    const r = this.rng;
    if (this.opts.rangeQuirks && r.bool(0.3)) {
      // Names colliding with the whiteout markers libcomposefs adds (the ERANGE quirk).
      const key = r.pick(['user.overlay.opaque', 'user.overlay.whiteouts', 'user.overlay.whiteout',
        'trusted.overlay.whiteouts', 'trusted.overlay.opaque', 'trusted.overlay.whiteout']);
      return { key: Buffer.from(key), value: r.bool(0.5) ? r.bytes(r.int(0, 30)) : r.bytes(r.int(80, 300)) };
    }
    const prefixes = [
      'user.', 'user.overlay.', 'trusted.', 'trusted.overlay.', 'trusted.overlay.overlay.', 'security.',
      'system.posix_acl_access', 'system.posix_acl_default', 'lustre.', 'foo.', 'system.', 'security.selinux',
    ];
    const p = r.pick(prefixes);
    let suffix: string;
    if (p === 'system.posix_acl_access' || p === 'system.posix_acl_default' || p === 'security.selinux') {
      suffix = r.bool(0.9) ? '' : 'x';
    } else {
      const n = r.bool(0.1) ? r.int(100, 255 - p.length) : r.int(1, 12);
      suffix = '';
      for (let i = 0; i < n; i++) suffix += r.pick([...'abcdefghijklmnopqrstuvwxyz0123456789._-=']);
    }
    if (this.opts.rangeQuirks === false && p === 'trusted.overlay.' && /^(whiteouts?|opaque)$/.test(suffix)) suffix += '2';
    let value = this.value();
    if (p === 'system.posix_acl_access' || p === 'system.posix_acl_default') value = r.bytes(4 + 8 * r.int(0, 4));
    return { key: Buffer.from(p + suffix, 'latin1'), value };
  }

  private xattrs(): GenXattr[] {
    const r = this.rng;
    const out = new Map<string, GenXattr>();
    const k = r.int(0, 19);
    let n: number;
    if (k < 8) n = 0;
    else if (k < 18) n = r.int(1, 4);
    else n = r.int(5, 40);
    let many = false;
    if (r.bool(0.01) && this.sharedPool.length > 0) many = true; // >128 xattrs on one inode
    const add = (x: GenXattr) => out.set(x.key.toString('latin1'), x);
    for (let i = 0; i < n; i++) {
      if (this.sharedPool.length > 0 && r.bool(0.6)) add(r.pick(this.sharedPool));
      else add(this.randomXattr());
    }
    if (many) {
      const count = r.int(129, 200);
      for (let i = 0; i < count; i++) add({ key: Buffer.from(`user.many${i}`), value: Buffer.from(String(i % 7)) });
    }
    if (!this.opts.rangeQuirks) {
      for (const key of ['user.overlay.whiteout', 'user.overlay.whiteouts', 'user.overlay.opaque']) out.delete(key);
    }
    // Respect the per-inode budget of the C parser.
    const res: GenXattr[] = [];
    let used = 0;
    for (const x of out.values()) {
      const cost = x.key.length + x.value.length + 7;
      if (used + cost > XATTR_BUDGET) continue;
      used += cost;
      res.push(x);
    }
    return res;
  }

  private inlineSize(): number {
    const r = this.rng;
    if (r.bool(0.6)) return r.pick([1, 2, 15, 64, 2047, 2048, 2049, 4000, 4095, 4096, 4097, 4500, 5000]);
    return r.int(1, 5000);
  }

  private externalSize(): number {
    const r = this.rng;
    const k = r.int(0, 9);
    if (k < 3) return r.int(1, 100000);
    if (k < 5) return r.pick([1, 4096, 4097, 8192, 1 << 20, (1 << 20) + 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1]);
    if (k < 7) return r.int(1, 2 ** 44); // up to 16 TiB: several chunks
    if (k < 9) return r.int(2 ** 44, 2 ** 50);
    // Close to the 1024-chunk limit: chunk indexes no longer fit inline next to the inode.
    return r.int(1000 * 2 ** 43, 1024 * 2 ** 43);
  }

  private payloadFor(): Bytes | undefined {
    const r = this.rng;
    const k = r.int(0, 9);
    if (k < 2) return undefined;
    if (k < 8) return Buffer.from(r.bytes(32).toString('hex').replace(/^(..)/, '$1/'), 'latin1');
    if (k < 9) return Buffer.from('/abs/' + r.bytes(4).toString('hex'));
    return this.name();
  }

  private leaf(): GenNode {
    const r = this.rng;
    const base = (): GenNode => ({
      mode: 0, size: 0, nlink: r.bool(0.9) ? 1 : r.pick([2, 3, 65535, 65536, r.int(1, 0xffffffff)]),
      uid: this.id(), gid: this.id(), rdev: 0, mtime: this.mtime(), xattrs: this.xattrs(),
    });
    const n = base();
    const k = r.int(0, 99);
    if (k < 30) {
      n.mode = S_IFREG | this.perm();
      n.size = this.inlineSize();
      n.content = r.bool(0.3) ? Buffer.alloc(n.size, r.int(0, 255)) : r.bytes(n.size);
      if (r.bool(0.1)) n.digest = r.bytes(32); // ignored for inline files
    } else if (k < 55) {
      n.mode = S_IFREG | this.perm();
      n.size = this.externalSize();
      n.payload = this.payloadFor();
      if (r.bool(0.75)) n.digest = r.bytes(32);
    } else if (k < 60) {
      n.mode = S_IFREG | this.perm(); // empty file
      if (r.bool(0.2)) n.payload = this.payloadFor();
    } else if (k < 72) {
      n.mode = S_IFLNK | 0o777;
      const len = r.bool(0.15) ? r.int(3000, 4095) : r.bool(0.2) ? r.int(1000, 3000) : r.int(1, 100);
      const t: number[] = [];
      for (let i = 0; i < len; i++) t.push(r.bool(0.9) ? r.int(0x21, 0x7e) : r.int(1, 255));
      n.payload = Buffer.from(t);
      n.size = len;
    } else if (k < 80) {
      n.mode = S_IFCHR | this.perm();
      n.rdev = r.bool(0.5) ? 0 : r.int(1, 0xffffffff); // 0/0 = overlay whiteout
      if (r.bool(0.1)) n.size = r.pick([1, 4096, 2 ** 33]);
    } else if (k < 86) {
      n.mode = S_IFBLK | this.perm();
      n.rdev = r.bool(0.2) ? 0 : r.int(1, 0xffffffff);
    } else if (k < 93) {
      n.mode = S_IFIFO | this.perm();
    } else {
      n.mode = S_IFSOCK | this.perm();
    }
    return n;
  }

  dir(depth: number, isRoot: boolean): GenNode {
    const r = this.rng;
    const n: GenNode = {
      mode: S_IFDIR | (r.bool(0.8) ? 0o755 : this.perm()), size: 0, nlink: r.int(1, 5),
      uid: this.id(), gid: this.id(), rdev: 0, mtime: this.mtime(), xattrs: this.xattrs(), children: new Map(),
    };
    if (isRoot && r.bool(0.3) && !n.xattrs.some((x) => x.key.toString('latin1') === 'security.selinux')) n.xattrs.push({ key: Buffer.from('security.selinux'), value: Buffer.from('system_u:object_r:root_t:s0') });
    if (this.opts.rangeQuirks && r.bool(0.5)) {
      const key = r.pick(['user.overlay.opaque', 'user.overlay.whiteouts', 'trusted.overlay.whiteouts', 'trusted.overlay.opaque']);
      if (!n.xattrs.some((x) => x.key.toString('latin1') === key)) {
        n.xattrs.push({ key: Buffer.from(key), value: r.bytes(r.pick([0, 1, 50, 120, 300])) });
      }
    }
    const huge = r.bool(this.opts.hugeDirChance);
    let count = huge ? r.int(100, 700) : r.int(0, depth > 4 ? 3 : 12);
    const remaining = this.opts.maxEntries - this.entries;
    if (!huge) count = Math.min(count, Math.max(0, remaining));
    const kids = n.children!;
    for (let i = 0; i < count; i++) {
      let name = huge && r.bool(0.5) ? this.longName(r.int(100, 255)) : this.name();
      if (isRoot && r.bool(0.05)) name = Buffer.from(r.int(0, 255).toString(16).padStart(2, '0')); // stub names
      const key = name.toString('latin1');
      if (kids.has(key)) continue;
      this.entries++;
      const makeDir = !huge && depth < 8 && r.bool(0.18) && this.entries < this.opts.maxEntries;
      kids.set(key, { node: makeDir ? { ...this.placeholderDir() } : this.leaf() });
    }
    // Recurse into subdirectories now (entries budget is shared).
    for (const [key, e] of kids) {
      if ((e.node.mode & 0o170000) === S_IFDIR) kids.set(key, { node: this.dir(depth + 1, false) });
    }
    return n;
  }

  private placeholderDir(): GenNode {
    return { mode: S_IFDIR | 0o755, size: 0, nlink: 2, uid: 0, gid: 0, rdev: 0, mtime: '0.0', xattrs: [] };
  }

  private longName(len: number): Bytes {
    const b = Buffer.alloc(len);
    for (let i = 0; i < len; i++) b[i] = this.rng.int(0x61, 0x7a);
    return b;
  }

  /** Turn some leaves into hardlinks to earlier (depth-first) leaves. */
  addHardlinks(root: GenNode): void {
    const r = this.rng;
    const walk = (dir: GenNode, path: string) => {
      const keys = [...dir.children!.keys()].sort();
      for (const key of keys) {
        const e = dir.children!.get(key)!;
        const p = path + '/' + key;
        if ((e.node.mode & 0o170000) === S_IFDIR) {
          walk(e.node, p);
          continue;
        }
        if ('linkTo' in e) continue;
        if (this.linkable.length > 0 && r.bool(0.12)) {
          const t = r.pick(this.linkable);
          if (r.bool(0.3)) {
            // Forward reference: the full line comes later than an `@` line naming it (valid for
            // mkcomposefs, which places the inode at its full line). Older links to t.path become chains.
            dir.children!.set(key, { node: t.node });
            t.dir.children!.set(t.key, { linkTo: p, node: t.node });
            t.path = p;
            t.dir = dir;
            t.key = key;
          } else {
            dir.children!.set(key, { linkTo: t.path, node: t.node });
          }
          continue;
        }
        this.linkable.push({ path: p, node: e.node, dir, key });
      }
    };
    walk(root, '');
  }
}

function line(path: Bytes, n: GenNode, linkTo?: string): string {
  const esc = (b: Bytes) => escapeDump(b);
  const p = esc(path);
  if (linkTo !== undefined) {
    return `${p} 0 @${n.mode.toString(8)} 0 0 0 0 0.0 ${escapeDump(Buffer.from(linkTo, 'latin1'), { optional: true })} - -`;
  }
  const fields = [
    p,
    String(n.size),
    n.mode.toString(8),
    String(n.nlink),
    String(n.uid),
    String(n.gid),
    String(n.rdev),
    n.mtime,
    n.payload ? escapeDump(n.payload, { optional: true }) : '-',
    n.content ? escapeDump(n.content, { optional: true }) : '-',
    n.digest ? n.digest.toString('hex') : '-',
  ];
  for (const x of n.xattrs) fields.push(`${escapeDump(x.key, { xattr: true })}=${escapeDump(x.value, { xattr: true })}`);
  return fields.join(' ');
}

/** A random, strictly valid, canonical dumpfile. */
export function genDumpfile(rng: Rng, options: GenOptions = {}): Buffer {
  const opts: Required<GenOptions> = {
    maxEntries: options.maxEntries ?? 80,
    hugeDirChance: options.hugeDirChance ?? 0.05,
    rangeQuirks: options.rangeQuirks ?? false,
  };
  const g = new Gen(rng, opts);
  const root = g.dir(0, true);
  g.addHardlinks(root);
  const out: string[] = [];
  const emit = (n: GenNode, path: string, linkTo?: string) => {
    out.push(line(Buffer.from(path === '' ? '/' : path, 'latin1'), n, linkTo));
    if (linkTo !== undefined || !n.children) return;
    for (const key of [...n.children.keys()].sort()) {
      const e = n.children.get(key)!;
      emit(e.node, path + '/' + key, 'linkTo' in e ? e.linkTo : undefined);
    }
  };
  emit(root, '');
  return Buffer.from(out.join('\n') + '\n', 'latin1');
}
