/**
 * unit tier: the /etc three-way merge (src/deploy/etc-merge.ts) on real directories.
 *
 * - A table of cases: local add/edit/delete × upstream unchanged/changed/removed/added, for regular files
 *   (inline and external content), symlinks, directories, modes, xattrs, type changes, fifos, nested
 *   directories, and every conflict kind. Each case materializes CURRENT from a spec, plans, applies over
 *   an existing target and reads the target back: every entry (type, mode, owner, xattrs, content, symlink
 *   target, mtime — which tells whether it came from CURRENT or NEW) must equal the expected spec.
 * - Atomicity and safety: a failing reader or a file changed after planning leaves the target untouched
 *   and no temp directory; stale leftovers are removed; conflicts refuse to apply; PRISTINE's content is
 *   compared through its fs-verity digest (SHA-256 and SHA-512) without reading it.
 * - A seeded property test: random PRISTINE trees (hardlinks, raw non-UTF-8 names, external files with
 *   SHA-256/SHA-512 fs-verity digests), random edits on disk (CURRENT) and in the tree (NEW); a flat,
 *   path-by-path oracle (independent of the module's recursion) gives the exact conflict set and the exact
 *   merged tree, which the applied target must equal (every local change survives, every untouched file
 *   equals NEW, every conflict is reported, no conflict → the merge applies).
 * Runs unprivileged (owners = the test's own uid/gid, `user.*` xattrs); owners and security.* xattrs are
 * in test/privileged/etc-merge.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import {
  applyEtcMerge,
  planEtcMerge,
  formatLocalChanges,
  EtcMergeConflictError,
  type EtcConflictKind,
  type EtcMergePlan,
} from '../../src/deploy/etc-merge.js';
import type { ContentReader } from '../../src/oci/bootable.js';
import { BootcfsError } from '../../src/errors.js';
import { Inode, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, utf8, type ByteString } from '../../src/tree/model.js';
import { fsverityDigest } from '../../src/fsverity/digest.js';
import { materializeTree } from '../../src/install/materialize.js';
import { lgetxattrs, lsetxattr } from '../../src/sys/libc.js';
import { Rng } from '../helpers/rng.js';
import { cases } from '../helpers/ref.js';

const UID = process.getuid!();
const GID = process.getgid!();
const T_PRISTINE = 1000;
const T_CURRENT = 2000;
const T_NEW = 3000;

// ------------------------------------------------------------------------------------------------
// Specs: small declarative trees

interface Meta { mode?: number; x?: Record<string, string>; c?: true }
type Node =
  | ({ t: 'f'; data: string } & Meta)
  | ({ t: 'l'; target: string } & Meta)
  | ({ t: 'p' } & Meta)
  | ({ t: 'd'; kids: Spec } & Meta);
type Spec = Record<string, Node>;

const f = (data: string, m: Meta = {}): Node => ({ t: 'f', data, ...m });
const l = (target: string, m: Meta = {}): Node => ({ t: 'l', target, ...m });
const d = (kids: Spec, m: Meta = {}): Node => ({ t: 'd', kids, ...m });
const fifo = (m: Meta = {}): Node => ({ t: 'p', ...m });
/** `c: true` in an expected spec: the entry comes from CURRENT (its mtime), else from NEW. */
const C = <N extends Node>(n: N): N => ({ ...n, c: true });
const LONG = 'x'.repeat(100); // > 64 bytes: stored as an external object in the trees

interface Store { content: Map<Inode, Buffer>; reads: number }
const newStore = (): Store => ({ content: new Map(), reads: 0 });
const storeReader = (s: Store): ContentReader => async (inode, p) => {
  if (inode.content !== undefined) return inode.content;
  s.reads++;
  const b = s.content.get(inode);
  if (b === undefined) throw new Error(`no content for ${p}`);
  return b;
};

/** Tree from a spec; files over 64 bytes are external (digest or payload only). */
function build(node: Node, mtime: number, store: Store, ext: 'sha256' | 'sha512' | 'payload' = 'sha256'): Inode {
  const xattrs = node.x ? new Map(Object.entries(node.x).map(([k, v]) => [utf8(k), Buffer.from(v)])) : undefined;
  const common = { uid: UID, gid: GID, mtimeSec: mtime, xattrs };
  switch (node.t) {
    case 'd': {
      const dir = new Inode({ ...common, mode: S_IFDIR | (node.mode ?? 0o755) });
      // names are byte strings as written ('n\u00e9' is the single byte 0xe9: not UTF-8)
      for (const [name, kid] of Object.entries(node.kids)) dir.setEntry(name, build(kid, mtime, store, ext));
      return dir;
    }
    case 'l':
      return new Inode({ ...common, mode: S_IFLNK | 0o777, target: utf8(node.target) });
    case 'p':
      return new Inode({ ...common, mode: S_IFIFO | (node.mode ?? 0o644) });
    case 'f': {
      const data = Buffer.from(node.data);
      if (data.length <= 64) return new Inode({ ...common, mode: S_IFREG | (node.mode ?? 0o644), size: data.length, content: data.length > 0 ? data : undefined });
      const inode = new Inode({ ...common, mode: S_IFREG | (node.mode ?? 0o644), size: data.length });
      if (ext === 'payload') inode.payload = `ab/${createHash('sha256').update(data).digest('hex')}`;
      else inode.digest = fsverityDigest(data, ext);
      store.content.set(inode, data);
      return inode;
    }
  }
}

/** Flat description of a directory on disk: relative path → one line per entry (mtime included). */
function readBack(dir: string, withMtime = true): Map<ByteString, string> {
  const out = new Map<ByteString, string>();
  const visit = (abs: Buffer, rel: ByteString): void => {
    const st = fs.lstatSync(abs, { bigint: true });
    const mode = Number(st.mode);
    const xs = [...lgetxattrs(abs)].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([k, v]) => `${k}=${v.toString('hex')}`).join(',');
    const type = mode & S_IFMT;
    let what: string;
    if (type === S_IFREG) what = `f ${createHash('sha256').update(fs.readFileSync(abs)).digest('hex').slice(0, 16)}`;
    else if (type === S_IFLNK) what = `l ->${fs.readlinkSync(abs, { encoding: 'buffer' }).toString('latin1')}`;
    else if (type === S_IFDIR) what = 'd';
    else if (type === S_IFIFO) what = 'p';
    else what = `other ${type.toString(8)} ${st.rdev}`;
    const perm = type === S_IFLNK ? '' : ` ${(mode & 0o7777).toString(8)}`;
    const m = withMtime ? ` m=${st.mtimeNs}` : '';
    out.set(rel, `${what}${perm} ${st.uid}:${st.gid} x=[${xs}]${m}`);
    if (type === S_IFDIR) {
      for (const nb of fs.readdirSync(abs, { encoding: 'buffer' })) {
        const name = nb.toString('latin1');
        visit(Buffer.concat([abs, Buffer.from('/'), nb]), rel === '' ? name : `${rel}/${name}`);
      }
    }
  };
  visit(Buffer.from(dir), '');
  return out;
}

/** What readBack should see for an expected spec. */
function expectedFlat(node: Node, rel: ByteString = '', out = new Map<ByteString, string>()): Map<ByteString, string> {
  const xs = Object.entries(node.x ?? {}).map(([k, v]) => [utf8(k), Buffer.from(v).toString('hex')] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([k, v]) => `${k}=${v}`).join(',');
  const mtime = `${BigInt(node.c ? T_CURRENT : T_NEW) * 1_000_000_000n}`;
  let what: string;
  let perm: string;
  switch (node.t) {
    case 'f': what = `f ${createHash('sha256').update(Buffer.from(node.data)).digest('hex').slice(0, 16)}`; perm = ` ${(node.mode ?? 0o644).toString(8)}`; break;
    case 'l': what = `l ->${utf8(node.target)}`; perm = ''; break;
    case 'p': what = 'p'; perm = ` ${(node.mode ?? 0o644).toString(8)}`; break;
    case 'd': what = 'd'; perm = ` ${(node.mode ?? 0o755).toString(8)}`; break;
  }
  out.set(rel, `${what}${perm} ${UID}:${GID} x=[${xs}] m=${mtime}`);
  if (node.t === 'd') for (const [name, kid] of Object.entries(node.kids)) expectedFlat(kid, rel === '' ? name : `${rel}/${name}`, out);
  return out;
}

let scratchRoot: string | undefined;
function scratch(): string {
  scratchRoot ??= fs.mkdtempSync(path.join(tmpdir(), 'bootcfs-etc-merge-'));
  return fs.mkdtempSync(path.join(scratchRoot, 'c-'));
}
test.after(() => {
  if (scratchRoot) fs.rmSync(scratchRoot, { recursive: true, force: true });
});

interface Setup { base: string; current: string; target: string; pristine: Inode; next: Inode; store: Store; read: ContentReader }
async function setup(pristine: Node, current: Node, next: Node, ext: 'sha256' | 'sha512' | 'payload' = 'sha256'): Promise<Setup> {
  const base = scratch();
  const store = newStore();
  const read = storeReader(store);
  const p = build(pristine, T_PRISTINE, store, ext);
  const n = build(next, T_NEW, store, ext);
  const c = build(current, T_CURRENT, store, ext);
  await materializeTree(c, path.join(base, 'current'), read);
  // the target starts as bootc leaves it: a copy of the new image's /etc
  await materializeTree(n, path.join(base, 'etc'), read);
  return { base, current: path.join(base, 'current'), target: path.join(base, 'etc'), pristine: p, next: n, store, read };
}

// ------------------------------------------------------------------------------------------------
// The table

interface Case {
  name: string;
  pristine: Spec;
  current: Spec;
  next: Spec;
  /** Expected merged /etc (children of the root; the root comes from NEW unless rootFromCurrent). */
  merged?: Spec;
  conflicts?: Array<[string, EtcConflictKind]>;
  /** Expected local changes: 'A path', 'M path (diffs)', 'D path'. */
  local?: string[];
  root?: { pristine?: Meta; current?: Meta; next?: Meta; merged?: Meta };
}

const table: Case[] = [
  // ---- regular files: local × upstream
  { name: 'file untouched, upstream unchanged', pristine: { a: f('1') }, current: { a: f('1') }, next: { a: f('1') }, merged: { a: f('1') }, local: [] },
  { name: 'file untouched, upstream changed', pristine: { a: f('1') }, current: { a: f('1') }, next: { a: f('2') }, merged: { a: f('2') }, local: [] },
  { name: 'file untouched, upstream removed', pristine: { a: f('1'), k: f('k') }, current: { a: f('1'), k: f('k') }, next: { k: f('k') }, merged: { k: f('k') }, local: [] },
  { name: 'file untouched, upstream mode change', pristine: { a: f('1') }, current: { a: f('1') }, next: { a: f('1', { mode: 0o600 }) }, merged: { a: f('1', { mode: 0o600 }) } },
  { name: 'file untouched, upstream becomes a directory', pristine: { a: f('1') }, current: { a: f('1') }, next: { a: d({ b: f('b') }) }, merged: { a: d({ b: f('b') }) } },
  { name: 'file untouched, upstream becomes a symlink', pristine: { a: f('1') }, current: { a: f('1') }, next: { a: l('x') }, merged: { a: l('x') } },
  { name: 'file edited, upstream unchanged', pristine: { a: f('1') }, current: { a: f('local') }, next: { a: f('1') }, merged: { a: C(f('local')) }, local: ['M a (content)'] },
  { name: 'file edited, upstream changed: local wins', pristine: { a: f('1') }, current: { a: f('local') }, next: { a: f('2') }, merged: { a: C(f('local')) } },
  { name: 'file edited, upstream removed: kept', pristine: { a: f('1') }, current: { a: f('local') }, next: {}, merged: { a: C(f('local')) } },
  { name: 'file edited, upstream becomes a symlink: local wins', pristine: { a: f('1') }, current: { a: f('local') }, next: { a: l('t') }, merged: { a: C(f('local')) } },
  { name: 'file deleted, upstream unchanged', pristine: { a: f('1'), k: f('k') }, current: { k: f('k') }, next: { a: f('1'), k: f('k') }, merged: { k: f('k') }, local: ['D a'] },
  { name: 'file deleted, upstream changed: stays deleted', pristine: { a: f('1') }, current: {}, next: { a: f('2') }, merged: {} },
  { name: 'file deleted, upstream removed', pristine: { a: f('1') }, current: {}, next: {}, merged: {} },
  { name: 'file deleted, upstream becomes an empty directory: stays deleted', pristine: { a: f('1') }, current: {}, next: { a: d({}) }, merged: {} },
  { name: 'file added locally, absent upstream', pristine: {}, current: { a: f('mine') }, next: {}, merged: { a: C(f('mine')) }, local: ['A a'] },
  { name: 'file added locally and upstream: local wins', pristine: {}, current: { a: f('mine') }, next: { a: f('theirs') }, merged: { a: C(f('mine')) } },
  { name: 'file added locally and upstream, same content: local kept', pristine: {}, current: { a: f('same') }, next: { a: f('same') }, merged: { a: C(f('same')) } },
  { name: 'file added upstream only', pristine: {}, current: {}, next: { a: f('new') }, merged: { a: f('new') } },
  // external content (> 64 bytes): compared through the digest
  { name: 'external file untouched, upstream changed', pristine: { a: f(LONG) }, current: { a: f(LONG) }, next: { a: f(`${LONG}2`) }, merged: { a: f(`${LONG}2`) }, local: [] },
  { name: 'external file edited, same size', pristine: { a: f(LONG) }, current: { a: f(`y${LONG.slice(1)}`) }, next: { a: f(`${LONG}2`) }, merged: { a: C(f(`y${LONG.slice(1)}`)) }, local: ['M a (content)'] },
  { name: 'inline file grows to external locally', pristine: { a: f('short') }, current: { a: f(LONG) }, next: { a: f('short') }, merged: { a: C(f(LONG)) } },
  { name: 'empty file untouched, upstream fills it', pristine: { a: f('') }, current: { a: f('') }, next: { a: f('now') }, merged: { a: f('now') }, local: [] },
  { name: 'file emptied locally', pristine: { a: f('x') }, current: { a: f('') }, next: { a: f('y') }, merged: { a: C(f('')) }, local: ['M a (content)'] },
  // ---- modes and xattrs
  { name: 'mode edited locally, upstream changed content: local version kept', pristine: { a: f('1') }, current: { a: f('1', { mode: 0o600 }) }, next: { a: f('2') }, merged: { a: C(f('1', { mode: 0o600 })) }, local: ['M a (mode)'] },
  { name: 'setuid bit added locally', pristine: { a: f('1', { mode: 0o755 }) }, current: { a: f('1', { mode: 0o4755 }) }, next: { a: f('1', { mode: 0o755 }) }, merged: { a: C(f('1', { mode: 0o4755 })) }, local: ['M a (mode)'] },
  { name: 'xattr added locally', pristine: { a: f('1') }, current: { a: f('1', { x: { 'user.k': 'v' } }) }, next: { a: f('2') }, merged: { a: C(f('1', { x: { 'user.k': 'v' } })) }, local: ['M a (xattrs)'] },
  { name: 'xattr value changed locally', pristine: { a: f('1', { x: { 'user.k': 'v' } }) }, current: { a: f('1', { x: { 'user.k': 'w' } }) }, next: { a: f('1', { x: { 'user.k': 'v' } }) }, merged: { a: C(f('1', { x: { 'user.k': 'w' } })) } },
  { name: 'xattr removed locally', pristine: { a: f('1', { x: { 'user.k': 'v' } }) }, current: { a: f('1') }, next: { a: f('1', { x: { 'user.k': 'v', 'user.n': 'n' } }) }, merged: { a: C(f('1')) }, local: ['M a (xattrs)'] },
  { name: 'xattrs untouched, upstream changes them', pristine: { a: f('1', { x: { 'user.k': 'v' } }) }, current: { a: f('1', { x: { 'user.k': 'v' } }) }, next: { a: f('1', { x: { 'user.k': 'u' } }) }, merged: { a: f('1', { x: { 'user.k': 'u' } }) }, local: [] },
  { name: 'content, mode and xattrs all edited', pristine: { a: f('1') }, current: { a: f('2', { mode: 0o640, x: { 'user.a': '1' } }) }, next: {}, merged: { a: C(f('2', { mode: 0o640, x: { 'user.a': '1' } })) }, local: ['M a (mode, xattrs, content)'] },
  // ---- symlinks
  { name: 'symlink untouched, upstream retargets', pristine: { s: l('a') }, current: { s: l('a') }, next: { s: l('b') }, merged: { s: l('b') }, local: [] },
  { name: 'symlink retargeted locally, upstream retargets: local wins', pristine: { s: l('a') }, current: { s: l('mine') }, next: { s: l('b') }, merged: { s: C(l('mine')) }, local: ['M s (target)'] },
  { name: 'symlink retargeted locally, upstream removes', pristine: { s: l('a') }, current: { s: l('mine') }, next: {}, merged: { s: C(l('mine')) } },
  { name: 'symlink deleted locally', pristine: { s: l('a') }, current: {}, next: { s: l('b') }, merged: {}, local: ['D s'] },
  { name: 'symlink added locally (dangling, absolute)', pristine: {}, current: { s: l('/nonexistent/x') }, next: {}, merged: { s: C(l('/nonexistent/x')) } },
  { name: 'symlink to a directory is not followed', pristine: { s: l('d'), d: d({ f: f('1') }) }, current: { s: l('d'), d: d({ f: f('1') }) }, next: { s: l('d'), d: d({ f: f('2') }) }, merged: { s: l('d'), d: d({ f: f('2') }) }, local: [] },
  { name: 'file replaced by a symlink locally', pristine: { a: f('1') }, current: { a: l('elsewhere') }, next: { a: f('2') }, merged: { a: C(l('elsewhere')) }, local: ['M a (type)'] },
  { name: 'symlink replaced by a file locally', pristine: { a: l('t') }, current: { a: f('real') }, next: { a: l('u') }, merged: { a: C(f('real')) }, local: ['M a (type)'] },
  // ---- fifos
  { name: 'fifo added locally', pristine: {}, current: { p: fifo() }, next: {}, merged: { p: C(fifo()) } },
  { name: 'fifo untouched, upstream removes it', pristine: { p: fifo() }, current: { p: fifo() }, next: {}, merged: {}, local: [] },
  // ---- directories
  { name: 'directory added locally with contents', pristine: {}, current: { d: d({ a: f('1'), e: d({ b: l('x') }) }) }, next: {}, merged: { d: C(d({ a: C(f('1')), e: C(d({ b: C(l('x')) })) })) }, local: ['A d', 'A d/a', 'A d/e', 'A d/e/b'] },
  { name: 'directory added locally and upstream: merged, local files win', pristine: {}, current: { d: d({ a: f('mine'), m: f('m') }, { mode: 0o750 }) }, next: { d: d({ a: f('theirs'), t: f('t') }) }, merged: { d: C(d({ a: C(f('mine')), m: C(f('m')), t: f('t') }, { mode: 0o750 })) } },
  { name: 'directory added upstream only', pristine: {}, current: {}, next: { d: d({ a: f('1'), s: d({}) }) }, merged: { d: d({ a: f('1'), s: d({}) }) } },
  { name: 'directory mode edited locally, upstream changes a file inside', pristine: { d: d({ a: f('1') }) }, current: { d: d({ a: f('1') }, { mode: 0o700 }) }, next: { d: d({ a: f('2'), b: f('b') }) }, merged: { d: C(d({ a: f('2'), b: f('b') }, { mode: 0o700 })) }, local: ['M d (mode)'] },
  { name: 'directory untouched, upstream changes its mode', pristine: { d: d({ a: f('1') }) }, current: { d: d({ a: f('1') }) }, next: { d: d({ a: f('1') }, { mode: 0o711 }) }, merged: { d: d({ a: f('1') }, { mode: 0o711 }) }, local: [] },
  { name: 'directory untouched and removed upstream', pristine: { d: d({ a: f('1'), e: d({ b: f('b') }) }) }, current: { d: d({ a: f('1'), e: d({ b: f('b') }) }) }, next: {}, merged: {}, local: [] },
  { name: 'directory removed upstream, a file inside edited locally: kept, untouched siblings go', pristine: { d: d({ a: f('1'), b: f('b') }) }, current: { d: d({ a: f('edit'), b: f('b') }) }, next: {}, merged: { d: C(d({ a: C(f('edit')) })) } },
  { name: 'directory removed upstream, a file inside deleted locally: removed', pristine: { d: d({ a: f('1'), b: f('b') }) }, current: { d: d({ b: f('b') }) }, next: {}, merged: {} },
  { name: 'directory replaced by a file upstream, only local deletions inside: follows NEW', pristine: { d: d({ a: f('1'), b: f('b') }) }, current: { d: d({ b: f('b') }) }, next: { d: f('now a file') }, merged: { d: f('now a file') } },
  { name: 'directory untouched, replaced by a symlink upstream', pristine: { d: d({ a: f('1') }) }, current: { d: d({ a: f('1') }) }, next: { d: l('/usr/etc/d') }, merged: { d: l('/usr/etc/d') } },
  { name: 'directory deleted locally, upstream changes a file inside: stays deleted', pristine: { d: d({ a: f('1') }), k: f('k') }, current: { k: f('k') }, next: { d: d({ a: f('2') }), k: f('k') }, merged: { k: f('k') }, local: ['D d', 'D d/a'] },
  { name: 'directory deleted locally, upstream replaces it by a file: stays deleted', pristine: { d: d({ a: f('1') }) }, current: {}, next: { d: f('x') }, merged: {} },
  { name: 'nested edits three levels deep', pristine: { a: d({ b: d({ c: d({ f: f('1'), g: f('g') }) }) }) }, current: { a: d({ b: d({ c: d({ f: f('local'), g: f('g'), h: f('new') }) }) }) }, next: { a: d({ b: d({ c: d({ f: f('2'), g: f('g2') }), n: f('n') }) }) }, merged: { a: d({ b: d({ c: d({ f: C(f('local')), g: f('g2'), h: C(f('new')) }), n: f('n') }) }) }, local: ['M a/b/c/f (content)', 'A a/b/c/h'] },
  { name: 'directory replaced by a file locally, upstream drops the directory', pristine: { d: d({ a: f('1') }) }, current: { d: f('flat') }, next: {}, merged: { d: C(f('flat')) }, local: ['M d (type)', 'D d/a'] },
  { name: 'file replaced by a directory locally, upstream removes the file', pristine: { a: f('1') }, current: { a: d({ x: f('x') }) }, next: {}, merged: { a: C(d({ x: C(f('x')) })) }, local: ['M a (type)', 'A a/x'] },
  { name: 'file replaced by a directory locally, upstream keeps the file unchanged', pristine: { a: f('1') }, current: { a: d({}) }, next: { a: f('1') }, conflicts: [['a', 'local-directory-vs-new-file']] },
  { name: 'non-UTF-8 names survive', pristine: { 'n\u00e9': f('1') }, current: { 'n\u00e9': f('edit'), '\u00ff\u00fe': f('added') }, next: { 'n\u00e9': f('2') }, merged: { 'n\u00e9': C(f('edit')), '\u00ff\u00fe': C(f('added')) } },
  // ---- .updated
  { name: '.updated is dropped from the merge', pristine: {}, current: { '.updated': f('# stamp') }, next: { '.updated': f('# new') }, merged: {}, local: [] },
  // ---- the root itself
  { name: 'root mode edited locally', pristine: { a: f('1') }, current: { a: f('1') }, next: { a: f('2') }, merged: { a: f('2') }, root: { current: { mode: 0o750 }, merged: { mode: 0o750, c: true } }, local: ['M  (mode)'] },
  { name: 'root mode changed upstream', pristine: {}, current: {}, next: {}, merged: {}, root: { next: { mode: 0o711 }, merged: { mode: 0o711 } } },
  // ---- conflicts
  { name: 'conflict: local file edited, upstream makes it a directory', pristine: { a: f('1') }, current: { a: f('edit') }, next: { a: d({ x: f('x') }) }, conflicts: [['a', 'local-file-vs-new-directory']] },
  { name: 'conflict: local file added, upstream adds a directory', pristine: {}, current: { a: l('t') }, next: { a: d({}) }, conflicts: [['a', 'local-file-vs-new-directory']] },
  { name: 'conflict: local directory added, upstream adds a file', pristine: {}, current: { a: d({}) }, next: { a: f('f') }, conflicts: [['a', 'local-directory-vs-new-file']] },
  { name: 'conflict: file added in an untouched directory that upstream makes a file', pristine: { d: d({}) }, current: { d: d({ mine: f('m') }) }, next: { d: f('f') }, conflicts: [['d', 'local-directory-vs-new-file']] },
  { name: 'conflict: file edited in an untouched directory that upstream makes a symlink', pristine: { d: d({ a: f('1') }) }, current: { d: d({ a: f('2') }) }, next: { d: l('x') }, conflicts: [['d', 'local-directory-vs-new-file']] },
  { name: 'conflict: directory mode edited, upstream makes it a file', pristine: { d: d({}) }, current: { d: d({}, { mode: 0o700 }) }, next: { d: f('f') }, conflicts: [['d', 'local-directory-vs-new-file']] },
  { name: 'conflict: directory removed locally, upstream adds a file in it', pristine: { d: d({ a: f('1') }) }, current: {}, next: { d: d({ a: f('1'), new: f('n') }) }, conflicts: [['d', 'new-entries-in-locally-removed']] },
  { name: 'conflict: directory removed locally, upstream adds a nested directory in it', pristine: { d: d({ e: d({}) }) }, current: {}, next: { d: d({ e: d({ deep: d({}) }) }) }, conflicts: [['d', 'new-entries-in-locally-removed']] },
  { name: 'conflict: file removed locally, upstream makes it a non-empty directory', pristine: { a: f('1') }, current: {}, next: { a: d({ x: f('x') }) }, conflicts: [['a', 'new-entries-in-locally-removed']] },
  { name: 'conflict: local file where upstream has a directory, nested in a merged directory', pristine: { d: d({ e: d({}) }) }, current: { d: d({ e: d({}), x: f('mine') }) }, next: { d: d({ e: d({}), x: d({}) }) }, conflicts: [['d/x', 'local-file-vs-new-directory']] },
  {
    name: 'every conflict is reported at once, in path order',
    pristine: { a: f('1'), b: d({}), c: d({ z: f('z') }) },
    current: { a: f('2'), b: d({ y: f('y') }), z: d({}) },
    next: { a: d({}), b: f('b'), c: d({ z: f('z'), w: f('w') }), z: f('z') },
    conflicts: [['a', 'local-file-vs-new-directory'], ['b', 'local-directory-vs-new-file'], ['c', 'new-entries-in-locally-removed'], ['z', 'local-directory-vs-new-file']],
  },
];

for (const tc of table) {
  test(`etc merge case: ${tc.name}`, async () => {
    const s = await setup(d(tc.pristine, tc.root?.pristine), d(tc.current, tc.root?.current), d(tc.next, tc.root?.next));
    const before = readBack(s.target);
    const plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read });
    if (tc.local !== undefined) {
      const shown = formatLocalChanges(plan.localChanges).split('\n').filter((x) => x !== '');
      assert.deepEqual(shown, tc.local.map((x) => `${x[0]} ${x.slice(2)}`));
    }
    if (tc.conflicts !== undefined) {
      assert.deepEqual(plan.conflicts.map((c) => [c.path, c.kind]), tc.conflicts);
      assert.equal(plan.merged, undefined);
      await assert.rejects(applyEtcMerge(plan, s.target), (e: unknown) => e instanceof EtcMergeConflictError && e.conflicts.length === tc.conflicts!.length && /Merge conflicts found in etc/.test(e.message));
      assert.deepEqual(readBack(s.target), before, 'the target is untouched');
      assert.deepEqual(fs.readdirSync(s.base).sort(), ['current', 'etc']);
      return;
    }
    assert.deepEqual(plan.conflicts, []);
    const r = await applyEtcMerge(plan, s.target);
    assert.equal(r.replaced, true);
    const rootMeta: Meta = tc.root?.merged ?? {};
    assert.deepEqual(readBack(s.target), expectedFlat(d(tc.merged!, rootMeta)));
    assert.deepEqual(fs.readdirSync(s.base).sort(), ['current', 'etc'], 'no temp directory left');
  });
}

// ------------------------------------------------------------------------------------------------
// Content comparison, atomicity, safety

test('etc merge: PRISTINE content is compared through its fs-verity digest (sha256 and sha512), never read', async () => {
  for (const alg of ['sha256', 'sha512'] as const) {
    const s = await setup(d({ a: f(LONG), b: f(LONG) }), d({ a: f(LONG), b: f(`${LONG}!`) }), d({ a: f(`${LONG}new`), b: f(LONG) }), alg);
    const pristineReads = { n: 0 };
    const plan = await planEtcMerge({
      pristine: s.pristine, current: s.current, next: s.next, read: s.read,
      readPristine: async () => { pristineReads.n++; throw new Error('must not read PRISTINE'); },
    });
    assert.equal(pristineReads.n, 0);
    assert.deepEqual(plan.localChanges.map((c) => [c.path, c.kind]), [['b', 'modified']]);
    await applyEtcMerge(plan, s.target);
    assert.deepEqual(readBack(s.target), expectedFlat(d({ a: f(`${LONG}new`), b: C(f(`${LONG}!`)) })));
  }
});

test('etc merge: without a digest PRISTINE content is read and compared byte by byte', async () => {
  const s = await setup(d({ a: f(LONG), b: f(LONG) }), d({ a: f(LONG), b: f(`z${LONG.slice(1)}`) }), d({ a: f(`${LONG}new`), b: f(LONG) }), 'payload');
  const readsBefore = s.store.reads;
  const plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read });
  assert.equal(s.store.reads - readsBefore, 2, 'both same-size external files were read from PRISTINE');
  assert.deepEqual(plan.localChanges.map((c) => [c.path, c.kind, c.differences]), [['b', 'modified', ['content']]]);
});

test('etc merge: mtime-only changes are not local changes', async () => {
  const s = await setup(d({ a: f('1'), d: d({}) }), d({ a: f('1'), d: d({}) }), d({ a: f('2'), d: d({}, { mode: 0o700 }) }));
  fs.utimesSync(path.join(s.current, 'a'), 12345, 12345);
  fs.utimesSync(path.join(s.current, 'd'), 54321, 54321);
  const plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read });
  assert.deepEqual(plan.localChanges, []);
  await applyEtcMerge(plan, s.target);
  assert.deepEqual(readBack(s.target), expectedFlat(d({ a: f('2'), d: d({}, { mode: 0o700 }) })));
});

test('etc merge: hardlinked names in CURRENT are separate files; an in-place edit changes both', async () => {
  const s = await setup(d({ a: f('1'), b: f('1') }), d({ a: f('1'), b: f('1') }), d({ a: f('2'), b: f('3') }));
  fs.rmSync(path.join(s.current, 'b'));
  fs.linkSync(path.join(s.current, 'a'), path.join(s.current, 'b'));
  // an untouched hardlink pair: both follow NEW
  let plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read });
  assert.deepEqual(plan.localChanges, []);
  // edit through one name: both names are modified and kept, as two files
  fs.writeFileSync(path.join(s.current, 'a'), 'edited');
  fs.utimesSync(path.join(s.current, 'a'), T_CURRENT, T_CURRENT);
  plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read });
  assert.deepEqual(plan.localChanges.map((c) => c.path), ['a', 'b']);
  await applyEtcMerge(plan, s.target);
  assert.deepEqual(readBack(s.target), expectedFlat(d({ a: C(f('edited')), b: C(f('edited')) })));
  const ia = fs.statSync(path.join(s.target, 'a')).ino;
  const ib = fs.statSync(path.join(s.target, 'b')).ino;
  assert.notEqual(ia, ib);
});

test('etc merge: hardlinks among NEW names stay hardlinks', async () => {
  const store = newStore();
  const base = scratch();
  const pristine = build(d({}), T_PRISTINE, store);
  const next = build(d({}), T_NEW, store);
  const shared = new Inode({ mode: S_IFREG | 0o644, uid: UID, gid: GID, size: 2, content: Buffer.from('hl'), nlink: 2 });
  next.setEntry('x', shared);
  next.setEntry('y', shared);
  fs.mkdirSync(path.join(base, 'current'));
  const plan = await planEtcMerge({ pristine, current: path.join(base, 'current'), next, read: storeReader(store) });
  const r = await applyEtcMerge(plan, path.join(base, 'etc'));
  assert.equal(r.replaced, false, 'the target did not exist: created by rename');
  assert.equal(r.materialized.hardlinks, 1);
  assert.equal(fs.statSync(path.join(base, 'etc/x')).ino, fs.statSync(path.join(base, 'etc/y')).ino);
});

test('etc merge: a failing NEW reader leaves the target untouched and no temp directory', async () => {
  const s = await setup(d({ a: f('1') }), d({ a: f('1'), m: f('mine') }), d({ a: f(LONG), z: f(`${LONG}z`) }));
  const before = readBack(s.target);
  let calls = 0;
  const failing: ContentReader = async (inode, p) => {
    if (++calls === 2) throw new BootcfsError('EIO', `simulated read failure at ${p}`);
    return s.read(inode, p);
  };
  const plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: failing });
  await assert.rejects(applyEtcMerge(plan, s.target), /simulated read failure/);
  assert.deepEqual(readBack(s.target), before);
  assert.deepEqual(fs.readdirSync(s.base).sort(), ['current', 'etc']);
});

test('etc merge: a kept file changed after planning fails the apply; the target is untouched', async () => {
  const s = await setup(d({ a: f('1') }), d({ a: f('mine') }), d({ a: f('2') }));
  const before = readBack(s.target);
  const plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read });
  fs.writeFileSync(path.join(s.current, 'a'), 'MINE'); // same size, other bytes
  await assert.rejects(applyEtcMerge(plan, s.target), (e: unknown) => e instanceof BootcfsError && /changed since the merge was planned/.test(e.message));
  assert.deepEqual(readBack(s.target), before);
  assert.deepEqual(fs.readdirSync(s.base).sort(), ['current', 'etc']);
});

test('etc merge: leftovers of an interrupted merge are removed; a non-directory target is refused', async () => {
  const s = await setup(d({}), d({ a: f('mine') }), d({}));
  fs.mkdirSync(path.join(s.base, '.etc.etc-merge-deadbeef/sub'), { recursive: true });
  fs.writeFileSync(path.join(s.base, '.etc.etc-merge-deadbeef/sub/x'), 'old');
  const plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read });
  await applyEtcMerge(plan, s.target);
  assert.deepEqual(fs.readdirSync(s.base).sort(), ['current', 'etc']);
  const file = path.join(s.base, 'plainfile');
  fs.writeFileSync(file, '');
  await assert.rejects(applyEtcMerge(plan, file), (e: unknown) => e instanceof BootcfsError && e.code === 'EINVAL');
});

test('etc merge: a socket kept from CURRENT is an unsupported-local-type conflict', async () => {
  const s = await setup(d({}), d({}), d({}));
  const net = await import('node:net');
  const sock = path.join(s.current, 'sock');
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  try {
    const plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read });
    assert.deepEqual(plan.conflicts.map((c) => [c.path, c.kind]), [['sock', 'unsupported-local-type']]);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('etc merge: compareXattr leaves chosen xattrs out of the comparison, but kept entries keep them', async () => {
  const s = await setup(d({ a: f('1'), b: f('1') }), d({ a: f('1', { x: { 'user.label': 'l' } }), b: f('2', { x: { 'user.label': 'l' } }) }), d({ a: f('A'), b: f('B') }));
  const plan = await planEtcMerge({ pristine: s.pristine, current: s.current, next: s.next, read: s.read, compareXattr: (n) => n !== 'user.label' });
  assert.deepEqual(plan.localChanges.map((c) => [c.path, c.differences]), [['b', ['content']]]);
  await applyEtcMerge(plan, s.target);
  assert.deepEqual(readBack(s.target), expectedFlat(d({ a: f('A'), b: C(f('2', { x: { 'user.label': 'l' } })) })));
});

test('etc merge: bad inputs are typed errors', async () => {
  const store = newStore();
  const dir = build(d({}), 0, store);
  const file = build(f('x'), 0, store);
  const base = scratch();
  await assert.rejects(planEtcMerge({ pristine: file, current: base, next: dir, read: storeReader(store) }), (e: unknown) => e instanceof BootcfsError && e.code === 'EINVAL');
  await assert.rejects(planEtcMerge({ pristine: dir, current: base, next: file, read: storeReader(store) }), (e: unknown) => e instanceof BootcfsError && e.code === 'EINVAL');
  await assert.rejects(planEtcMerge({ pristine: dir, current: path.join(base, 'missing'), next: dir, read: storeReader(store) }), (e: unknown) => e instanceof BootcfsError);
  fs.writeFileSync(path.join(base, 'f'), '');
  await assert.rejects(planEtcMerge({ pristine: dir, current: path.join(base, 'f'), next: dir, read: storeReader(store) }), (e: unknown) => e instanceof BootcfsError && e.code === 'EINVAL');
});

// ------------------------------------------------------------------------------------------------
// Property test: random trees, random local and upstream edits, a flat oracle

const NAMES: ByteString[] = ['a', 'b', 'c', 'd', 'e', 'conf', 'n\u00e9', '\u00ff'];
const FILE_MODES = [0o644, 0o600, 0o640, 0o755];
const DIR_MODES = [0o755, 0o700, 0o750];

function randomContent(rng: Rng): Buffer {
  const r = rng.int(0, 9);
  const n = r < 2 ? 0 : r < 6 ? rng.int(1, 64) : rng.int(65, 300);
  return Buffer.from(rng.bytes(n).map((b) => 97 + (b % 4))); // few letters: equal contents happen
}

function randomXattrs(rng: Rng): Map<ByteString, Buffer> | undefined {
  if (!rng.bool(0.25)) return undefined;
  const m = new Map<ByteString, Buffer>();
  for (let i = rng.int(1, 2); i > 0; i--) m.set(rng.pick(['user.a', 'user.b', 'user.c']), Buffer.from(rng.pick(['1', '2', 'long value'])));
  return m;
}

function randomLeaf(rng: Rng, mtime: number, alg: 'sha256' | 'sha512', store: Store): Inode {
  if (rng.bool(0.2)) return new Inode({ mode: S_IFLNK | 0o777, uid: UID, gid: GID, mtimeSec: mtime, target: rng.pick(['a', '../b', '/etc/c', 'nowhere/x', 'n\u00e9']) });
  return fileInode(rng, randomContent(rng), rng.pick(FILE_MODES), mtime, alg, store);
}

function fileInode(rng: Rng, data: Buffer, perm: number, mtime: number, alg: 'sha256' | 'sha512', store: Store): Inode {
  const inode = new Inode({ mode: S_IFREG | perm, uid: UID, gid: GID, mtimeSec: mtime, size: data.length, xattrs: randomXattrs(rng) });
  if (data.length > 0 && data.length <= 64) inode.content = data;
  else if (data.length > 64) {
    inode.digest = fsverityDigest(data, alg);
    store.content.set(inode, data);
  }
  return inode;
}

function randomDir(rng: Rng, depth: number, mtime: number, alg: 'sha256' | 'sha512', store: Store): Inode {
  const dir = new Inode({ mode: S_IFDIR | rng.pick(DIR_MODES), uid: UID, gid: GID, mtimeSec: mtime, xattrs: randomXattrs(rng) });
  const n = rng.int(0, depth === 0 ? 6 : 4);
  let last: Inode | undefined;
  for (let i = 0; i < n; i++) {
    const name = rng.pick(NAMES);
    let kid: Inode;
    if (depth < 3 && rng.bool(0.3)) kid = randomDir(rng, depth + 1, mtime, alg, store);
    else if (last?.isReg && rng.bool(0.15)) kid = last; // a hardlink
    else kid = randomLeaf(rng, mtime, alg, store);
    dir.setEntry(name, kid);
    last = kid;
  }
  return dir;
}

/** Deep copy preserving hardlinks, with a new mtime. */
function cloneTree(root: Inode, mtime: number, store: Store): Inode {
  const seen = new Map<Inode, Inode>();
  const copy = (x: Inode): Inode => {
    const prior = seen.get(x);
    if (prior) return prior;
    const y = new Inode({ mode: x.mode, uid: x.uid, gid: x.gid, mtimeSec: mtime, size: x.size, content: x.content, digest: x.digest, target: x.target, nlink: x.nlink, xattrs: x.hasXattrs ? new Map(x.xattrsIfAny()!) : undefined });
    const data = store.content.get(x);
    if (data) store.content.set(y, data);
    seen.set(x, y);
    if (x.entries) for (const [n, k] of x.entries) y.setEntry(n, copy(k));
    return y;
  };
  return copy(root);
}

function treePaths(root: Inode): Array<[ByteString, Inode, Inode]> {
  const out: Array<[ByteString, Inode, Inode]> = [];
  const visit = (dir: Inode, rel: ByteString): void => {
    for (const [name, kid] of dir.entries ?? []) {
      const p = rel === '' ? name : `${rel}/${name}`;
      out.push([p, kid, dir]);
      if (kid.isDir) visit(kid, p);
    }
  };
  visit(root, '');
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** Upstream edits on the NEW tree, in memory. */
function editTree(rng: Rng, root: Inode, alg: 'sha256' | 'sha512', store: Store, mtime: number): void {
  for (let k = rng.int(0, 5); k > 0; k--) {
    const all = treePaths(root);
    const dirs = [root, ...all.filter((e) => e[1].isDir).map((e) => e[1])];
    const op = rng.int(0, 8);
    if (all.length === 0 || op >= 6) {
      const parent = rng.pick(dirs);
      parent.setEntry(rng.pick(NAMES), rng.bool(0.3) ? randomDir(rng, 2, mtime, alg, store) : randomLeaf(rng, mtime, alg, store));
      continue;
    }
    const [, node, parent] = rng.pick(all);
    const name = [...parent.entries!].find((e) => e[1] === node)![0];
    switch (op) {
      case 0: parent.entries!.delete(name); break;
      case 1: // replace (content / type change) by a fresh entry
        parent.setEntry(name, rng.bool(0.3) ? randomDir(rng, 2, mtime, alg, store) : randomLeaf(rng, mtime, alg, store));
        break;
      case 2: if (!node.isSymlink) node.mode = (node.mode & S_IFMT) | rng.pick(node.isDir ? DIR_MODES : FILE_MODES); break;
      case 3: if (!node.isSymlink) node.xattrs = randomXattrs(rng) ?? new Map(); break;
      case 4: if (node.isSymlink) node.target = rng.pick(['a', 'elsewhere', '/x']); break;
      case 5: if (node.isReg) parent.setEntry(name, fileInode(rng, randomContent(rng), node.mode & 0o7777, mtime, alg, store)); break;
    }
  }
}

function diskPaths(dir: string): ByteString[] {
  return [...readBack(dir, false).keys()].filter((p) => p !== '').sort();
}

/** Local edits on CURRENT, on disk: in-place writes (through hardlinks), renames, chmod, xattrs, deletions, additions, type changes. */
function editDisk(rng: Rng, dir: string): void {
  const absB = (p: ByteString): Buffer => (p === '' ? Buffer.from(dir) : Buffer.concat([Buffer.from(`${dir}/`), Buffer.from(p, 'latin1')]));
  for (let k = rng.int(0, 5); k > 0; k--) {
    const all = diskPaths(dir);
    const kinds = new Map(all.map((p) => [p, fs.lstatSync(absB(p)).mode & S_IFMT]));
    const dirs = ['', ...all.filter((p) => kinds.get(p) === S_IFDIR)];
    const op = rng.int(0, 8);
    if (all.length === 0 || op >= 7) {
      const parent = rng.pick(dirs);
      const p = parent === '' ? rng.pick(NAMES) : `${parent}/${rng.pick(NAMES)}`;
      if (fs.existsSync(absB(p)) || isLink(absB(p))) continue;
      if (rng.bool(0.3)) {
        fs.mkdirSync(absB(p), { mode: rng.pick(DIR_MODES) });
        if (rng.bool(0.5)) fs.writeFileSync(Buffer.concat([absB(p), Buffer.from('/inner')]), randomContent(rng));
      } else if (rng.bool(0.2)) fs.symlinkSync(rng.pick(['a', 'local-target']), absB(p));
      else fs.writeFileSync(absB(p), randomContent(rng));
      continue;
    }
    const subdirs = dirs.filter((x) => x !== '');
    // deletions favour directories (a removed directory is where upstream additions conflict)
    const p = op === 0 && subdirs.length > 0 && rng.bool(0.5) ? rng.pick(subdirs) : rng.pick(all);
    const t = kinds.get(p);
    const b = absB(p);
    switch (op) {
      case 0: fs.rmSync(b, { recursive: true, force: true }); break;
      case 1: if (t === S_IFREG) fs.writeFileSync(b, randomContent(rng)); break; // in place
      case 2: if (t === S_IFREG) { // replace by rename (breaks hardlinks)
        const tmp = Buffer.concat([b, Buffer.from('.tmp~')]);
        fs.writeFileSync(tmp, randomContent(rng));
        fs.renameSync(tmp, b);
      } break;
      case 3: if (t !== S_IFLNK) fs.chmodSync(b, rng.pick(t === S_IFDIR ? DIR_MODES : FILE_MODES)); break;
      case 4: if (t !== S_IFLNK) lsetxattr(b, rng.pick(['user.a', 'user.b']), Buffer.from(rng.pick(['1', '2', 'local']))); break;
      case 5: if (t === S_IFLNK) { fs.rmSync(b); fs.symlinkSync(rng.pick(['a', 'retargeted']), b); } break;
      case 6: // type change
        fs.rmSync(b, { recursive: true, force: true });
        if (t === S_IFDIR) fs.writeFileSync(b, randomContent(rng));
        else fs.mkdirSync(b);
        break;
    }
  }
}
function isLink(b: Buffer): boolean {
  try { return fs.lstatSync(b).isSymbolicLink(); } catch { return false; }
}

/** Flat view of a tree: path → description (no mtime) and whether it is a directory. */
function flatTree(root: Inode, store: Store): Map<ByteString, { desc: string; dir: boolean; mtime: number }> {
  const out = new Map<ByteString, { desc: string; dir: boolean; mtime: number }>();
  const describe = (x: Inode): string => {
    const xs = [...(x.xattrsIfAny() ?? new Map<ByteString, Buffer>())].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([k, v]) => `${k}=${v.toString('hex')}`).join(',');
    let what: string;
    if (x.isReg) {
      const data = x.content ?? store.content.get(x) ?? Buffer.alloc(0);
      what = `f ${createHash('sha256').update(data).digest('hex').slice(0, 16)}`;
    } else if (x.isSymlink) what = `l ->${x.target}`;
    else if (x.isDir) what = 'd';
    else what = 'other';
    const perm = x.isSymlink ? '' : ` ${(x.mode & 0o7777).toString(8)}`;
    return `${what}${perm} ${x.uid}:${x.gid} x=[${xs}]`;
  };
  out.set('', { desc: describe(root), dir: true, mtime: root.mtimeSec });
  for (const [p, x] of treePaths(root)) out.set(p, { desc: describe(x), dir: x.isDir, mtime: x.mtimeSec });
  return out;
}
function flatDisk(dir: string): Map<ByteString, { desc: string; dir: boolean; mtime: bigint }> {
  const out = new Map<ByteString, { desc: string; dir: boolean; mtime: bigint }>();
  for (const [p, line] of readBack(dir, true)) {
    const i = line.lastIndexOf(' m=');
    out.set(p, { desc: line.slice(0, i), dir: line.startsWith('d '), mtime: BigInt(line.slice(i + 3)) });
  }
  return out;
}

const parentOf = (p: ByteString): ByteString => (p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '');
const under = (q: ByteString, p: ByteString): boolean => (p === '' ? q !== '' : q.startsWith(`${p}/`));

interface Oracle { conflicts: Array<[ByteString, EtcConflictKind]>; merged: Map<ByteString, string> }
/** The merge rules restated path by path, without recursion. */
function oracle(P: ReturnType<typeof flatTree>, C: ReturnType<typeof flatDisk>, N: ReturnType<typeof flatTree>): Oracle {
  const changed = (p: ByteString): boolean => C.has(p) && (!P.has(p) || P.get(p)!.desc !== C.get(p)!.desc);
  const changedPaths = [...C.keys()].filter(changed);
  const keeps = (p: ByteString): boolean => changedPaths.some((q) => q === p || under(q, p));
  const conflicts: Array<[ByteString, EtcConflictKind]> = [];
  for (const [p, c] of C) {
    const n = N.get(p);
    if (changed(p) && !c.dir && n?.dir) conflicts.push([p, 'local-file-vs-new-directory']);
    if (c.dir && n !== undefined && !n.dir && keeps(p)) conflicts.push([p, 'local-directory-vs-new-file']);
  }
  for (const p of P.keys()) {
    if (C.has(p) || !C.get(parentOf(p))?.dir || !N.get(p)?.dir) continue;
    if ([...N.keys()].some((q) => under(q, p) && !P.has(q))) conflicts.push([p, 'new-entries-in-locally-removed']);
  }
  conflicts.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged = new Map<ByteString, string>();
  const all = [...new Set([...P.keys(), ...C.keys(), ...N.keys()])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const fromC = (p: ByteString): string => `${C.get(p)!.desc} m=${C.get(p)!.mtime}`;
  const fromN = (p: ByteString): string | undefined => (N.has(p) ? `${N.get(p)!.desc} m=${BigInt(N.get(p)!.mtime) * 1_000_000_000n}` : undefined);
  for (const p of all) {
    if (p !== '' && !merged.get(parentOf(p))?.startsWith('d ')) continue;
    let e: string | undefined;
    const c = C.get(p);
    if (c !== undefined && changed(p)) e = fromC(p);
    else if (P.has(p) && c === undefined) e = undefined;
    else if (c !== undefined) {
      if (!c.dir) e = fromN(p);
      else if (N.get(p)?.dir) e = fromN(p);
      else if (keeps(p)) e = fromC(p);
      else e = fromN(p);
    } else e = fromN(p);
    if (e !== undefined) merged.set(p, e);
  }
  return { conflicts, merged };
}

test('etc merge property: random trees, local and upstream edits, against a flat oracle', async (t) => {
  const n = cases(120, 1500);
  let merges = 0;
  let conflicted = 0;
  let localChanges = 0;
  for (let i = 0; i < n; i++) {
    const rng = new Rng(0xe7c0 + i);
    const alg = rng.bool() ? 'sha256' : 'sha512';
    const store = newStore();
    const read = storeReader(store);
    const pristine = randomDir(rng, 0, T_PRISTINE, alg, store);
    const next = cloneTree(pristine, T_NEW, store);
    editTree(rng, next, alg, store, T_NEW);
    const base = scratch();
    const current = path.join(base, 'current');
    await materializeTree(pristine, current, read);
    editDisk(rng, current);
    if (rng.bool(0.2)) fs.chmodSync(current, rng.pick(DIR_MODES));
    // whole-second mtimes (materializeTree sets mtimes through a float of seconds: sub-µs is lost), distinct
    // per entry, so the output shows which side each entry came from
    let stamp = T_CURRENT;
    for (const p of ['', ...diskPaths(current)].reverse()) {
      const b = p === '' ? Buffer.from(current) : Buffer.concat([Buffer.from(`${current}/`), Buffer.from(p, 'latin1')]);
      fs.lutimesSync(b, stamp, stamp);
      stamp++;
    }
    const target = path.join(base, 'etc');
    await materializeTree(next, target, read);

    const C = flatDisk(current);
    const expected = oracle(flatTree(pristine, store), C, flatTree(next, store));
    const plan: EtcMergePlan = await planEtcMerge({ pristine, current, next, read });
    const ctx = `seed ${rng.seed}`;
    assert.deepEqual(plan.conflicts.map((c) => [c.path, c.kind]), expected.conflicts, ctx);
    localChanges += plan.localChanges.length;
    if (expected.conflicts.length > 0) {
      conflicted++;
      const before = readBack(target);
      await assert.rejects(applyEtcMerge(plan, target), EtcMergeConflictError, ctx);
      assert.deepEqual(readBack(target), before, ctx);
    } else {
      merges++;
      await applyEtcMerge(plan, target);
      const got = new Map([...flatDisk(target)].map(([p, x]) => [p, `${x.desc} m=${x.mtime}`]));
      assert.deepEqual(got, expected.merged, ctx);
      assert.deepEqual(fs.readdirSync(base).sort(), ['current', 'etc'], ctx);
    }
    fs.rmSync(base, { recursive: true, force: true });
  }
  t.diagnostic(`${n} cases: ${merges} merged, ${conflicted} with conflicts, ${localChanges} local changes`);
  // the generator must exercise both outcomes
  assert.ok(merges > n / 4, `${merges} clean merges of ${n}`);
  assert.ok(conflicted > 0, `${conflicted} conflicting cases of ${n}`);
  assert.ok(localChanges > n, `${localChanges} local changes`);
});
