/**
 * Kernel-side checks of composefs images (privileged tier on the host, and inside the vm-tier guest):
 * mount an image as erofs, stack overlayfs on it with the object store as a data-only lower layer — the way
 * composefs is mounted at boot — and compare what the kernel shows with the source tree.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { lgetxattrs } from '../../src/sys/libc.js';

export interface MountedComposefs {
  erofs: string;
  root: string;
  unmount(): void;
}

function mount(args: string[]): void {
  execFileSync('mount', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}
export function umount(target: string): void {
  try {
    execFileSync('umount', [target], { stdio: 'ignore' });
  } catch {
    execFileSync('umount', ['-l', target], { stdio: 'ignore' });
  }
}

/**
 * Mount IMAGE (erofs via a loop device, read-only) at WORK/erofs and an overlayfs with
 * lowerdir=WORK/erofs::OBJECTS at WORK/root. `verity` adds verity=require (needs a kernel with fs-verity).
 */
export function mountComposefs(image: string, objects: string, work: string, opts: { verity?: boolean } = {}): MountedComposefs {
  const erofs = path.join(work, 'erofs');
  const root = path.join(work, 'root');
  mkdirSync(erofs, { recursive: true });
  mkdirSync(root, { recursive: true });
  mount(['-t', 'erofs', '-o', 'loop,ro', image, erofs]);
  try {
    const o = [`ro,lowerdir=${erofs}::${objects}`, 'metacopy=on', 'redirect_dir=on'];
    if (opts.verity) o.push('verity=require');
    mount(['-t', 'overlay', 'overlay', '-o', o.join(','), root]);
  } catch (e) {
    umount(erofs);
    throw e;
  }
  return {
    erofs,
    root,
    unmount() {
      umount(root);
      umount(erofs);
    },
  };
}

/** Mount IMAGE over OBJECTS under WORK, take snapshotTree of the composefs root, unmount. */
export async function snapshotMounted(image: string, objects: string, work: string, opts: { verity?: boolean } = {}): Promise<Map<string, EntryView>> {
  const mnt = mountComposefs(image, objects, work, opts);
  try {
    return await snapshotTree(mnt.root);
  } finally {
    mnt.unmount();
  }
}

export interface EntryView {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  mtimeNs: bigint;
  rdev: number;
  nlink: number;
  target?: string;
  contentSha256?: string;
  xattrs: Record<string, string>;
}

function typeOf(st: import('node:fs').BigIntStats): string {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'reg';
  if (st.isSymbolicLink()) return 'lnk';
  if (st.isCharacterDevice()) return 'chr';
  if (st.isBlockDevice()) return 'blk';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'sock';
  return '?';
}

/** Every path under ROOT (relative byte-string paths, latin1) with what lstat/readlink/read/xattrs show. */
export async function snapshotTree(root: string, opts: { content?: boolean } = {}): Promise<Map<string, EntryView>> {
  const out = new Map<string, EntryView>();
  const rootBuf = Buffer.from(root);
  const visit = async (rel: Buffer) => {
    const full = rel.length ? Buffer.concat([rootBuf, Buffer.from('/'), rel]) : rootBuf;
    const st = await fsp.lstat(full, { bigint: true });
    const xa: Record<string, string> = {};
    for (const [k, v] of lgetxattrs(full)) xa[k] = v.toString('hex');
    const e: EntryView = {
      type: typeOf(st),
      mode: Number(st.mode),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: st.size,
      mtimeNs: st.mtimeNs,
      rdev: Number(st.rdev),
      nlink: Number(st.nlink),
      xattrs: xa,
    };
    if (e.type === 'lnk') e.target = (await fsp.readlink(full, { encoding: 'buffer' })).toString('latin1');
    if (e.type === 'reg' && opts.content !== false) e.contentSha256 = createHash('sha256').update(readFileSync(full)).digest('hex');
    out.set('/' + rel.toString('latin1'), e);
    if (e.type === 'dir') {
      const names = (await fsp.readdir(full, { encoding: 'buffer' })) as Buffer[];
      for (const n of names) await visit(rel.length ? Buffer.concat([rel, Buffer.from('/'), n]) : n);
    }
  };
  await visit(Buffer.alloc(0));
  return out;
}

const WHITEOUT_MARKERS = new Set([
  'trusted.overlay.whiteouts',
  'user.overlay.whiteouts',
  'trusted.overlay.opaque',
  'user.overlay.opaque',
]);

/**
 * Compare the source view with the mounted view of a C-compatible (v1) image built from that directory;
 * returns the differences that are not expected ones (see test/privileged/composefs-v1-kernel.test.ts for
 * the list of differences overlayfs/composefs introduce by design).
 */
export function compareViews(src: Map<string, EntryView>, mnt: Map<string, EntryView>): string[] {
  const diffs: string[] = [];
  const show = (p: string) => JSON.stringify(p);
  // whiteouts in the source: hidden in the mount (expected difference 2); remember their parents
  const whiteoutParents = new Set<string>();
  for (const [p, e] of src) {
    if (e.type === 'chr' && e.rdev === 0) {
      whiteoutParents.add(path.posix.dirname(p));
      const m = mnt.get(p);
      if (!m) {
        diffs.push(`${show(p)}: whiteout missing in the mount`);
        continue;
      }
      const want = { type: 'reg', mode: 0o100000 | (e.mode & 0o7777), uid: e.uid, gid: e.gid, mtimeNs: e.mtimeNs, size: 0n };
      for (const [k, v] of Object.entries(want)) {
        if (String(m[k as keyof EntryView]) !== String(v)) diffs.push(`${show(p)}: whiteout ${k} ${String(m[k as keyof EntryView])}, expected ${String(v)}`);
      }
      const wx = { ...e.xattrs, 'trusted.overlay.whiteout': '', 'user.overlay.whiteout': '' };
      if (JSON.stringify(Object.entries(wx).sort()) !== JSON.stringify(Object.entries(m.xattrs).sort())) {
        diffs.push(`${show(p)}: whiteout xattrs ${JSON.stringify(m.xattrs)}, expected ${JSON.stringify(wx)}`);
      }
    }
  }
  for (const [p, e] of src) {
    if (e.type === 'chr' && e.rdev === 0) continue;
    const m = mnt.get(p);
    if (!m) {
      diffs.push(`${show(p)}: missing in the mount`);
      continue;
    }
    const fields: Array<keyof EntryView> = ['type', 'mode', 'uid', 'gid', 'mtimeNs', 'rdev', 'target', 'contentSha256'];
    if (e.type !== 'dir') fields.push('size');
    if (e.type === 'dir') fields.push('nlink');
    for (const f of fields) {
      if (String(e[f]) !== String(m[f])) diffs.push(`${show(p)}: ${f} ${String(e[f])} in source, ${String(m[f])} in mount`);
    }
    const sx = { ...e.xattrs };
    const mx = { ...m.xattrs };
    if (whiteoutParents.has(p)) {
      // the markers are added by mkcomposefs; a source directory's own *.overlay.opaque is replaced by opaque=x
      for (const k of WHITEOUT_MARKERS) {
        delete mx[k];
        delete sx[k];
      }
    }
    if (JSON.stringify(Object.entries(sx).sort()) !== JSON.stringify(Object.entries(mx).sort())) {
      diffs.push(`${show(p)}: xattrs ${JSON.stringify(sx)} in source, ${JSON.stringify(mx)} in mount`);
    }
  }
  for (const p of mnt.keys()) {
    if (!src.has(p)) diffs.push(`${show(p)}: only in the mount`);
  }
  return diffs;
}
