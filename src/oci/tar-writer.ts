/**
 * A small, deterministic PAX tar writer for layers bootcfs creates itself (the sealed `/boot` layer).
 * Directories and regular files only; long names, big ids, fractional mtimes and xattrs
 * (`SCHILY.xattr.*`, binary-safe) go into a PAX extended header, as GNU tar and umoci write them; the
 * reader in tar.ts reads the result back byte-exactly. Same input → same bytes.
 */
import { BootcfsError } from '../errors.js';

export interface TarFileEntry {
  /** Relative path without leading '/' (directories without trailing '/'); latin1 byte string. */
  path: string;
  type: 'dir' | 'reg';
  /** Permission bits (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec?: number;
  content?: Buffer;
  /** xattr name (latin1) → value */
  xattrs?: ReadonlyMap<string, Buffer>;
}

function octal(h: Buffer, off: number, width: number, v: number): boolean {
  if (!Number.isInteger(v) || v < 0 || v >= 8 ** (width - 1)) {
    h.write('0'.repeat(width - 1) + '\0', off, 'latin1');
    return false;
  }
  h.write(v.toString(8).padStart(width - 1, '0') + '\0', off, 'latin1');
  return true;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'latin1'), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), 'latin1'), body]);
}

function header(name: Buffer, flag: string, size: number, e: { mode: number; uid: number; gid: number; mtimeSec: number }): { block: Buffer; fits: { uid: boolean; gid: boolean; size: boolean; mtime: boolean } } {
  const h = Buffer.alloc(512);
  name.copy(h, 0, 0, Math.min(100, name.length));
  octal(h, 100, 8, e.mode);
  const uid = octal(h, 108, 8, e.uid);
  const gid = octal(h, 116, 8, e.gid);
  const sz = octal(h, 124, 12, size);
  const mtime = octal(h, 136, 12, Math.max(0, e.mtimeSec));
  h.write(flag, 156, 'latin1');
  h.write('ustar\x0000', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return { block: h, fits: { uid, gid, size: sz, mtime: mtime && e.mtimeSec >= 0 } };
}

function padded(data: Buffer): Buffer[] {
  const r = data.length % 512;
  return r === 0 ? [data] : [data, Buffer.alloc(512 - r)];
}

/** Serialises entries (in the given order) as one tar archive ending with two zero blocks. */
export function writeTar(entries: readonly TarFileEntry[]): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    if (e.path === '' || e.path.startsWith('/') || e.path.split('/').some((c) => c === '' || c === '.' || c === '..')) {
      throw new BootcfsError('EINVAL', `tar writer: bad path ${JSON.stringify(e.path)}`);
    }
    const content = e.type === 'reg' ? e.content ?? Buffer.alloc(0) : Buffer.alloc(0);
    const p = Buffer.from(e.type === 'dir' ? `${e.path}/` : e.path, 'latin1');
    const probe = header(p, e.type === 'dir' ? '5' : '0', content.length, e);
    const recs: Buffer[] = [];
    if (p.length > 100) recs.push(paxRecord('path', p));
    if (!probe.fits.uid) recs.push(paxRecord('uid', Buffer.from(String(e.uid))));
    if (!probe.fits.gid) recs.push(paxRecord('gid', Buffer.from(String(e.gid))));
    if (!probe.fits.size) recs.push(paxRecord('size', Buffer.from(String(content.length))));
    const nsec = e.mtimeNsec ?? 0;
    if (nsec !== 0 || !probe.fits.mtime) {
      const s = e.mtimeSec < 0 && nsec > 0 ? `-${-(e.mtimeSec + 1)}.${String(1e9 - nsec).padStart(9, '0')}` : `${e.mtimeSec}.${String(nsec).padStart(9, '0')}`;
      recs.push(paxRecord('mtime', Buffer.from(s)));
    }
    for (const [k, v] of [...(e.xattrs ?? new Map())].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      recs.push(paxRecord(`SCHILY.xattr.${k}`, v));
    }
    if (recs.length > 0) {
      const data = Buffer.concat(recs);
      const xname = Buffer.concat([Buffer.from('PaxHeaders/'), p.subarray(Math.max(0, p.length - 80))]);
      out.push(header(xname, 'x', data.length, { mode: 0o644, uid: 0, gid: 0, mtimeSec: 0 }).block, ...padded(data));
    }
    out.push(probe.block);
    if (content.length > 0) out.push(...padded(content));
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}
