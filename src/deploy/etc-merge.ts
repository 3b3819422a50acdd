/**
 * The `/etc` three-way merge bootc's composefs backend runs when a staged deployment is finalized
 * (bootc-composefs.md §1.5, §1.7, §6.1), and its dry run, which `upgrade`/`switch` use to refuse to
 * stage an image whose `/etc` cannot be merged ("Merge conflicts found in etc").
 *
 * Inputs:
 * - PRISTINE (`pristine`): the old deployment's image `/etc`, a tree (the same tree the deployment's
 *   `etc/` was materialized from at install/stage time: `buildImageTree` without the bootable transform);
 * - CURRENT (`current`): the old deployment's writable `/etc` on disk (`state/deploy/<old>/etc`);
 * - NEW (`next`): the new image's `/etc`, a tree.
 * The result is written to the new deployment's `state/deploy/<new>/etc` (`applyEtcMerge`).
 *
 * Paths are byte strings relative to `/etc` ('' is `/etc` itself, 'ssh/sshd_config'). Each name is its
 * own entry: symlinks are never followed and hardlinked names inside CURRENT are separate files.
 *
 * **Local state.** For every path in PRISTINE ∪ CURRENT, CURRENT is compared with PRISTINE:
 * - *added*: in CURRENT, not in PRISTINE (a new directory's descendants are added too);
 * - *removed*: in PRISTINE, not in CURRENT (a removed directory's descendants are removed too);
 * - *modified*: in both, and the entries differ in: file type (regular/directory/symlink/device/fifo/
 *   socket), permission bits (`mode & 07777`; not for symlinks, whose bits Linux fixes at 0777), owner
 *   (uid, gid), xattrs (every name and value, incl. `security.*`, optionally filtered by `compareXattr`),
 *   regular-file content (by bytes: size, then inline bytes, or the fs-verity digest of CURRENT's bytes
 *   against PRISTINE's digest — SHA-256 or SHA-512 by the digest's length —, or PRISTINE's bytes from
 *   `readPristine`), symlink target, device number. A directory is modified only by its own metadata,
 *   never by its children. mtimes, link counts, sizes of directories are never compared.
 * - *untouched*: in both and equal.
 * A path *carries local changes* if it or any descendant in CURRENT is added or modified (removals do
 * not count: they need nothing to exist).
 *
 * **Merge rules** (for each path p, with P, C, N the entries of PRISTINE, CURRENT, NEW at p):
 * 1. p added or modified locally, C not a directory: the result is C (local wins over NEW's change,
 *    addition or removal). Conflict `local-file-vs-new-directory` if N is a directory.
 * 2. p added or modified locally, C a directory: the result is a directory with C's metadata, whose
 *    children are merged by these rules. Conflict `local-directory-vs-new-file` if N exists and is not a
 *    directory. (A directory that NEW removed is kept.)
 * 3. p removed locally: the result has no p, whatever N is ("local deletions stay deleted"; upstream
 *    changes under p are dropped). Conflict `new-entries-in-locally-removed` if NEW has entries strictly
 *    under p that PRISTINE does not have (NEW adds files into a directory the admin removed).
 * 4. p untouched, not a directory: the result is N (changed, replaced, or removed upstream: NEW wins).
 * 5. p untouched directory: if N is a directory, a directory with N's metadata whose children are merged
 *    by these rules; if N is absent or not a directory and p carries no local changes, the result is N;
 *    if N is absent and p carries local changes, a directory with C's metadata, children merged
 *    (untouched children then follow NEW, i.e. disappear); if N is not a directory and p carries local
 *    changes: conflict `local-directory-vs-new-file`.
 * 6. p only in NEW: the result is N (upstream additions appear), the whole subtree.
 * 7. A socket that would be kept from CURRENT cannot be recreated: conflict `unsupported-local-type`.
 * The top-level `.updated` stamp (systemd's ConditionNeedsUpdate=/etc) is never merged: it is left out
 * of all three trees, so the merged `/etc` has none and update units run after the reboot (bootc removes
 * it at finalize); `keepUpdatedStamp` turns this off.
 *
 * Conflicts are reported together, each with its path and kind, by the dry run (`planEtcMerge`); a plan
 * with conflicts cannot be applied (`EtcMergeConflictError`). Callers refuse to stage (upgrade/switch) or
 * keep the old deployment (finalize) on any conflict.
 *
 * Output: entries taken from NEW keep NEW's metadata and mtimes (hardlinks among NEW's names stay
 * hardlinks); entries kept from CURRENT keep CURRENT's metadata, mtimes (to the microsecond: materializeTree
 * sets them from a float) and every xattr; devices and fifos are recreated (mknod). The merged tree
 * is materialized into a fresh directory next to the target, flushed (syncfs), then swapped with the
 * target with `renameat2(RENAME_EXCHANGE)` (or renamed, if the target does not exist) and the parent
 * directory fsynced, so a crash leaves the old target or the finished one; the old content is deleted
 * afterwards (leftovers of an interrupted run, `.<name>.etc-merge-*`, are removed by the next run). The
 * content of every file kept from CURRENT is checked against the digest recorded by the plan, so a file
 * changed between plan and apply fails the merge instead of being copied half-checked.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BootcfsError, SystemError } from '../errors.js';
import { fsverityDigest } from '../fsverity/digest.js';
import { materializeTree, type MaterializeStats } from '../install/materialize.js';
import type { ContentReader } from '../oci/bootable.js';
import { errno, getLibc, lgetxattrs, syncfs } from '../sys/libc.js';
import { fsyncDir } from '../util/atomic-file.js';
import { Inode, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, compareBytes, type ByteString } from '../tree/model.js';

export type EtcLocalChangeKind = 'added' | 'modified' | 'removed';
/** What differs between PRISTINE and CURRENT at a modified path. */
export type EtcDifference = 'type' | 'mode' | 'owner' | 'xattrs' | 'content' | 'target' | 'rdev';

export interface EtcLocalChange {
  /** Relative to /etc, byte string. */
  path: ByteString;
  kind: EtcLocalChangeKind;
  /** For 'modified': what differs. */
  differences?: EtcDifference[];
}

export type EtcConflictKind =
  | 'local-file-vs-new-directory'
  | 'local-directory-vs-new-file'
  | 'new-entries-in-locally-removed'
  | 'unsupported-local-type';

export interface EtcMergeConflict {
  /** Relative to /etc, byte string. */
  path: ByteString;
  kind: EtcConflictKind;
  /** One line for a human (paths shown as UTF-8). */
  message: string;
}

export interface PlanEtcMergeOptions {
  /** The old image's /etc (a directory inode). */
  pristine: Inode;
  /** The old deployment's /etc on disk. */
  current: string;
  /** The new image's /etc (a directory inode). */
  next: Inode;
  /** Content of NEW's external files (e.g. `repositoryContentReader(repo)`; inline content is served without it); also PRISTINE's by default. */
  read: ContentReader;
  /** Content of PRISTINE's external files when it has no usable digest (default: `read`). */
  readPristine?: ContentReader;
  /** Which xattrs take part in the comparison (default: all). Kept entries always keep all of theirs. */
  compareXattr?: (name: ByteString) => boolean;
  /** Merge the top-level `.updated` stamp like any file (default false: it is left out). */
  keepUpdatedStamp?: boolean;
}

export interface EtcMergePlan {
  /** Every conflict, in path order. Non-empty → the plan cannot be applied. */
  readonly conflicts: readonly EtcMergeConflict[];
  /** CURRENT against PRISTINE, every path, in path order (what `bootc config-diff` prints). */
  readonly localChanges: readonly EtcLocalChange[];
  /** The merged /etc (undefined when there are conflicts). */
  readonly merged: Inode | undefined;
  /** Entries of the merged tree kept from CURRENT / taken from NEW (whole NEW subtrees count each name). */
  readonly counts: { fromCurrent: number; fromNext: number };
  /** @internal entries kept from CURRENT: where they are and the SHA-256 of regular files' content. */
  readonly fromCurrent: ReadonlyMap<Inode, { file: Buffer; sha256: Buffer | undefined }>;
  /** @internal the reader for NEW's content. */
  readonly read: ContentReader;
}

export interface EtcMergeApplyResult {
  materialized: MaterializeStats;
  /** Whether the target existed (and was swapped) or was created. */
  replaced: boolean;
}

/** The merge has conflicts; `conflicts` lists them all. */
export class EtcMergeConflictError extends BootcfsError {
  readonly conflicts: readonly EtcMergeConflict[];
  constructor(conflicts: readonly EtcMergeConflict[]) {
    super('EINVAL', `Merge conflicts found in etc (${conflicts.length}):\n${conflicts.map((c) => `  ${c.message}`).join('\n')}`);
    this.name = 'EtcMergeConflictError';
    this.conflicts = conflicts;
  }
}

/** Throws EtcMergeConflictError when the plan has conflicts. */
export function assertNoEtcConflicts(plan: EtcMergePlan): void {
  if (plan.conflicts.length > 0) throw new EtcMergeConflictError(plan.conflicts);
}

const UPDATED_STAMP = '.updated';
const show = (p: ByteString): string => `'${Buffer.from(p, 'latin1').toString('utf8') || '.'}'`;
const join = (dir: ByteString, name: ByteString): ByteString => (dir === '' ? name : `${dir}/${name}`);

/** One entry of CURRENT, as lstat and l*xattr report it. */
interface DiskEntry {
  file: Buffer;
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  rdev: number;
  size: number;
  xattrs: Map<ByteString, Buffer>;
  target?: ByteString;
  children?: Map<ByteString, DiskEntry>;
}

function scanDisk(file: Buffer, rel: ByteString, skipUpdated: boolean): DiskEntry {
  let st: fs.BigIntStats;
  try {
    st = fs.lstatSync(file, { bigint: true });
  } catch (e) {
    throw ioError('lstat', e, file);
  }
  const mode = Number(st.mode);
  const ns = st.mtimeNs;
  const entry: DiskEntry = {
    file,
    mode,
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeSec: Number(ns / 1_000_000_000n),
    mtimeNsec: Number(ns % 1_000_000_000n),
    rdev: Number(st.rdev),
    size: Number(st.size),
    xattrs: lgetxattrs(file),
  };
  const type = mode & S_IFMT;
  if (type === S_IFLNK) {
    entry.target = fs.readlinkSync(file, { encoding: 'buffer' }).toString('latin1');
  } else if (type === S_IFDIR) {
    entry.children = new Map();
    let names: Buffer[];
    try {
      names = fs.readdirSync(file, { encoding: 'buffer' });
    } catch (e) {
      throw ioError('readdir', e, file);
    }
    for (const nb of names) {
      const name = nb.toString('latin1');
      if (skipUpdated && rel === '' && name === UPDATED_STAMP) continue;
      entry.children.set(name, scanDisk(Buffer.concat([file, Buffer.from('/'), nb]), join(rel, name), skipUpdated));
    }
  }
  return entry;
}

function ioError(syscall: string, e: unknown, file: Buffer): Error {
  const err = e as NodeJS.ErrnoException;
  const no = typeof err.errno === 'number' ? -err.errno : 5;
  return new SystemError(syscall, no, file.toString('latin1'), `${syscall} ${file.toString('utf8')}: ${err.message}`);
}

async function readDisk(file: Buffer): Promise<Buffer> {
  try {
    return await fsp.readFile(file);
  } catch (e) {
    throw ioError('read', e, file);
  }
}

const isDirMode = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR;

function sameXattrs(a: ReadonlyMap<ByteString, Buffer> | undefined, b: ReadonlyMap<ByteString, Buffer>, keep: (n: ByteString) => boolean): boolean {
  const names = new Set<ByteString>();
  for (const n of a?.keys() ?? []) if (keep(n)) names.add(n);
  for (const n of b.keys()) if (keep(n)) names.add(n);
  for (const n of names) {
    const x = a?.get(n);
    const y = b.get(n);
    if (x === undefined || y === undefined || !x.equals(y)) return false;
  }
  return true;
}

/** Plans the merge without writing anything (the dry run): local changes, conflicts and the merged tree. */
export async function planEtcMerge(opts: PlanEtcMergeOptions): Promise<EtcMergePlan> {
  const { pristine, next, read } = opts;
  if (!pristine.isDir) throw new BootcfsError('EINVAL', 'etc merge: the pristine /etc is not a directory');
  if (!next.isDir) throw new BootcfsError('EINVAL', 'etc merge: the new /etc is not a directory');
  const readPristine = opts.readPristine ?? read;
  const keepXattr = opts.compareXattr ?? (() => true);
  const skipUpdated = opts.keepUpdatedStamp !== true;
  const current = scanDisk(Buffer.from(opts.current), '', skipUpdated);
  if (!isDirMode(current.mode)) throw new BootcfsError('EINVAL', `etc merge: ${opts.current} is not a directory`);

  const children = (node: Inode | undefined, rel: ByteString): Map<ByteString, Inode> => {
    if (node?.entries === undefined) return new Map();
    if (!skipUpdated || rel !== '' || !node.entries.has(UPDATED_STAMP)) return node.entries;
    const m = new Map(node.entries);
    m.delete(UPDATED_STAMP);
    return m;
  };

  // ---- pass 1: CURRENT against PRISTINE
  const localChanges: EtcLocalChange[] = [];
  const localKind = new Map<ByteString, EtcLocalChangeKind | 'untouched'>();
  const carriesChanges = new Set<ByteString>();
  const contentCache = new Map<DiskEntry, Buffer>();
  const diskContent = async (c: DiskEntry): Promise<Buffer> => {
    let b = contentCache.get(c);
    if (b === undefined) {
      b = await readDisk(c.file);
      contentCache.set(c, b);
    }
    return b;
  };

  async function sameContent(p: Inode, c: DiskEntry, rel: ByteString): Promise<boolean> {
    if (p.size !== c.size) return false;
    if (p.size === 0) return true;
    const data = await diskContent(c);
    if (data.length !== p.size) return false;
    if (p.content !== undefined) return p.content.equals(data);
    if (p.digest !== undefined && (p.digest.length === 32 || p.digest.length === 64)) {
      return fsverityDigest(data, p.digest.length === 32 ? 'sha256' : 'sha512').equals(p.digest);
    }
    const theirs = await readPristine(p, `/etc/${rel}`);
    return theirs.equals(data);
  }

  async function differences(p: Inode, c: DiskEntry, rel: ByteString): Promise<EtcDifference[]> {
    if ((p.mode & S_IFMT) !== (c.mode & S_IFMT)) return ['type'];
    const d: EtcDifference[] = [];
    const type = p.mode & S_IFMT;
    if (type !== S_IFLNK && (p.mode & 0o7777) !== (c.mode & 0o7777)) d.push('mode');
    if (p.uid !== c.uid || p.gid !== c.gid) d.push('owner');
    if (!sameXattrs(p.xattrsIfAny(), c.xattrs, keepXattr)) d.push('xattrs');
    if (type === S_IFREG && !(await sameContent(p, c, rel))) d.push('content');
    if (type === S_IFLNK && p.target !== c.target) d.push('target');
    if ((p.isChr || p.isBlk) && p.rdev !== c.rdev) d.push('rdev');
    return d;
  }

  /** Returns whether rel carries local changes (added/modified at or below). */
  async function diffLocal(rel: ByteString, p: Inode | undefined, c: DiskEntry | undefined): Promise<boolean> {
    let carries = false;
    if (c !== undefined) {
      if (p === undefined) {
        localKind.set(rel, 'added');
        if (rel !== '') localChanges.push({ path: rel, kind: 'added' });
        carries = true;
      } else {
        const d = await differences(p, c, rel);
        if (d.length > 0) {
          localKind.set(rel, 'modified');
          localChanges.push({ path: rel, kind: 'modified', differences: d });
          carries = true;
        } else {
          localKind.set(rel, 'untouched');
        }
      }
    } else if (p !== undefined) {
      localKind.set(rel, 'removed');
      localChanges.push({ path: rel, kind: 'removed' });
    }
    const pk = p?.isDir ? children(p, rel) : new Map<ByteString, Inode>();
    const ck = c?.children ?? new Map<ByteString, DiskEntry>();
    for (const name of sortedUnion(pk.keys(), ck.keys())) {
      if (await diffLocal(join(rel, name), pk.get(name), ck.get(name))) carries = true;
    }
    if (carries) carriesChanges.add(rel);
    return carries;
  }
  await diffLocal('', pristine, current);

  // ---- pass 2: the merged tree
  const conflicts: EtcMergeConflict[] = [];
  const fromCurrent = new Map<Inode, { file: Buffer; sha256: Buffer | undefined }>();
  const counts = { fromCurrent: 0, fromNext: 0 };
  const conflict = (rel: ByteString, kind: EtcConflictKind, message: string): void => {
    conflicts.push({ path: rel, kind, message });
  };
  const countNext = (n: Inode): Inode => {
    const stack = [n];
    while (stack.length > 0) {
      const x = stack.pop()!;
      counts.fromNext++;
      if (x.entries) for (const k of x.entries.values()) stack.push(k);
    }
    return n;
  };

  /** Paths strictly under `n` that `p` (same place in PRISTINE) does not have. */
  function additionsUnder(rel: ByteString, p: Inode | undefined, n: Inode, out: ByteString[]): void {
    for (const [name, nk] of [...(n.entries ?? new Map<ByteString, Inode>())].sort((a, b) => compareBytes(a[0], b[0]))) {
      const pk = p?.isDir ? p.entries!.get(name) : undefined;
      const r = join(rel, name);
      if (pk === undefined) out.push(r);
      if (nk.isDir) additionsUnder(r, pk, nk, out);
    }
  }

  async function keptFromDisk(c: DiskEntry): Promise<Inode> {
    const inode = new Inode({
      mode: c.mode,
      uid: c.uid,
      gid: c.gid,
      mtimeSec: c.mtimeSec,
      mtimeNsec: c.mtimeNsec,
      rdev: c.rdev,
      size: (c.mode & S_IFMT) === S_IFREG ? c.size : 0,
      target: c.target,
      xattrs: c.xattrs.size > 0 ? new Map(c.xattrs) : undefined,
    });
    let sha256: Buffer | undefined;
    if (inode.isReg && c.size > 0) sha256 = createHash('sha256').update(await diskContent(c)).digest();
    fromCurrent.set(inode, { file: c.file, sha256 });
    counts.fromCurrent++;
    return inode;
  }

  async function merge(rel: ByteString, p: Inode | undefined, c: DiskEntry | undefined, n: Inode | undefined): Promise<Inode | undefined> {
    if (c === undefined) {
      if (p !== undefined) {
        // rule 3: removed locally
        if (n?.isDir) {
          const added: ByteString[] = [];
          additionsUnder(rel, p, n, added);
          if (added.length > 0) {
            const shown = added.slice(0, 3).map(show).join(', ') + (added.length > 3 ? `, … (${added.length} in all)` : '');
            conflict(rel, 'new-entries-in-locally-removed', `${show(rel)} was removed locally, but the new etc adds ${shown}`);
          }
        }
        return undefined;
      }
      return n === undefined ? undefined : countNext(n); // rule 6
    }
    const kind = localKind.get(rel);
    const changed = kind === 'added' || kind === 'modified';
    if (!isDirMode(c.mode)) {
      if (!changed) return n === undefined ? undefined : countNext(n); // rule 4
      if (n?.isDir) {
        conflict(rel, 'local-file-vs-new-directory', `File ${show(rel)} now defaults to a directory in new etc`);
        return undefined;
      }
      if ((c.mode & S_IFMT) === S_IFSOCK) {
        conflict(rel, 'unsupported-local-type', `${show(rel)} is a socket, which cannot be copied into the new etc`);
        return undefined;
      }
      return keptFromDisk(c); // rule 1
    }
    const carries = carriesChanges.has(rel);
    if (!changed && !carries && !n?.isDir) return n === undefined ? undefined : countNext(n); // rule 5, nothing local
    if (n !== undefined && !n.isDir) {
      conflict(rel, 'local-directory-vs-new-file', `Directory ${show(rel)} now defaults to a file in new etc`);
      return undefined;
    }
    // rules 2 and 5: a directory, merged child by child
    let dir: Inode;
    if (!changed && n !== undefined) {
      dir = new Inode({ mode: n.mode, uid: n.uid, gid: n.gid, mtimeSec: n.mtimeSec, mtimeNsec: n.mtimeNsec, xattrs: n.hasXattrs ? new Map(n.xattrsIfAny()!) : undefined });
      counts.fromNext++;
    } else {
      dir = new Inode({ mode: c.mode, uid: c.uid, gid: c.gid, mtimeSec: c.mtimeSec, mtimeNsec: c.mtimeNsec, xattrs: c.xattrs.size > 0 ? new Map(c.xattrs) : undefined });
      counts.fromCurrent++;
    }
    const pk = p?.isDir ? children(p, rel) : new Map<ByteString, Inode>();
    const ck = c.children ?? new Map<ByteString, DiskEntry>();
    const nk = n?.isDir ? children(n, rel) : new Map<ByteString, Inode>();
    for (const name of sortedUnion(pk.keys(), ck.keys(), nk.keys())) {
      const m = await merge(join(rel, name), pk.get(name), ck.get(name), nk.get(name));
      if (m !== undefined) dir.setEntry(name, m);
    }
    return dir;
  }
  const merged = await merge('', pristine, current, next);
  conflicts.sort((a, b) => compareBytes(a.path, b.path));
  return {
    conflicts,
    localChanges,
    merged: conflicts.length === 0 ? merged : undefined,
    counts,
    fromCurrent,
    read,
  };
}

function sortedUnion(...keys: Iterable<ByteString>[]): ByteString[] {
  const s = new Set<ByteString>();
  for (const k of keys) for (const x of k) s.add(x);
  return [...s].sort(compareBytes);
}

// ------------------------------------------------------------------------------------------ apply

const AT_FDCWD = -100;
const RENAME_EXCHANGE = 2;
type RenameAt2 = (olddirfd: number, oldpath: string, newdirfd: number, newpath: string, flags: number) => number;
let renameat2Fn: RenameAt2 | undefined;
function renameExchange(a: string, b: string): void {
  if (renameat2Fn === undefined) {
    const lib = getLibc().koffi.load('libc.so.6');
    renameat2Fn = lib.func('int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)') as unknown as RenameAt2;
  }
  if (renameat2Fn(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) !== 0) throw new SystemError('renameat2', errno(), b);
}

const MERGE_TEMP_MARK = '.etc-merge-';

/**
 * Writes the merged /etc of `plan` to `targetDir` (created, or atomically replaced if it exists): see the
 * module comment. Throws EtcMergeConflictError if the plan has conflicts (nothing is written).
 */
export async function applyEtcMerge(plan: EtcMergePlan, targetDir: string): Promise<EtcMergeApplyResult> {
  assertNoEtcConflicts(plan);
  const merged = plan.merged;
  if (merged === undefined) throw new BootcfsError('EINTERNAL', 'etc merge: the plan has no merged tree');
  const target = path.resolve(targetDir);
  const parent = path.dirname(target);
  const base = path.basename(target);
  const stalePrefix = `.${base}${MERGE_TEMP_MARK}`;
  // leftovers of an interrupted run (the old content after a swap, or a half-built tree)
  for (const name of await fsp.readdir(parent).catch(() => [] as string[])) {
    if (name.startsWith(stalePrefix)) await fsp.rm(path.join(parent, name), { recursive: true, force: true });
  }
  let existing: fs.Stats | undefined;
  try {
    existing = await fsp.lstat(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (existing !== undefined && !existing.isDirectory()) throw new BootcfsError('EINVAL', `${target} exists and is not a directory`);

  const temp = path.join(parent, `${stalePrefix}${randomBytes(6).toString('hex')}`);
  const reader: ContentReader = async (inode, treePath) => {
    const kept = plan.fromCurrent.get(inode);
    if (kept === undefined) return inode.content ?? (inode.size === 0 ? Buffer.alloc(0) : plan.read(inode, treePath));
    const data = await readDisk(kept.file);
    const sha = createHash('sha256').update(data).digest();
    if (data.length !== inode.size || kept.sha256 === undefined || !sha.equals(kept.sha256)) {
      throw new BootcfsError('EIO', `etc merge: ${kept.file.toString('utf8')} changed since the merge was planned`);
    }
    return data;
  };
  let swapped = false;
  try {
    const stats = await materializeTree(merged, temp, reader);
    const h = await fsp.open(temp, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      await syncfs(h.fd);
    } finally {
      await h.close();
    }
    if (existing !== undefined) {
      renameExchange(temp, target);
      swapped = true;
    } else {
      await fsp.rename(temp, target);
    }
    await fsyncDir(parent);
    // the old content; a failure here leaves a stale directory the next run removes
    if (swapped) await fsp.rm(temp, { recursive: true, force: true }).catch(() => undefined);
    return { materialized: stats, replaced: swapped };
  } catch (e) {
    if (!swapped) await fsp.rm(temp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}

/** One line per local change, like `bootc config-diff` (paths as UTF-8). */
export function formatLocalChanges(changes: readonly EtcLocalChange[]): string {
  return changes
    .map((c) => `${c.kind === 'added' ? 'A' : c.kind === 'removed' ? 'D' : 'M'} ${Buffer.from(c.path, 'latin1').toString('utf8')}${c.differences ? ` (${c.differences.join(', ')})` : ''}`)
    .join('\n');
}
