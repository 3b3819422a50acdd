/**
 * The deployments of a composefs system as the day-2 commands (upgrade, switch, finalize, rollback, gc,
 * delete-deployment) see them (bootc-composefs.md §2):
 *
 *   - the context: the physical root (`/sysroot`), the boot directory holding `loader/entries` (the ESP),
 *     the run directory holding `composefs/staged-deployment`, and the booted `composefs=` (none offline);
 *   - boot entries: `loader/entries/*.conf` (live) and `loader/entries.staged/*.conf` (staged) in
 *     systemd-boot order, each with its deployment id and the ESP files it boots (its "artifacts");
 *   - the staged marker `{"depl_id": …, "finalization_locked": …}`;
 *   - entry directories written as a whole (a temporary directory, every file fsynced, then renamed) and
 *     swapped with `renameat2(RENAME_EXCHANGE)`, so `loader/entries` is at every instant either the old
 *     or the new set;
 *   - the deploy lock (flock on `<sysroot>/state`): one day-2 command at a time.
 *
 * The *current* deployment is the one an upgrade starts from and a rollback moves away from: the booted
 * one, or offline (no command line) the boot loader's default entry.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, constants as fsc, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BootcfsError, SystemError } from '../errors.js';
import { entryFileName, entryOptions, parseBlsEntry, sortKey, writeBlsEntry, compareEntries, type BlsEntry } from '../boot/bls.js';
import { composefsKarg, type ComposefsKarg } from '../boot/kargs.js';
import { originFileName, parseOrigin, type DeploymentOrigin } from '../boot/origin.js';
import { META_FILE, Repository, isDeclaredInsecure } from '../repository/index.js';
import { flock, getLibc, errno, LOCK_EX, LOCK_UN } from '../sys/libc.js';
import { fsyncDir, writeFileAtomic } from '../util/atomic-file.js';
import { VERITY_PENDING, type VerityMode } from '../install/deployment.js';
import type { ContentReader } from '../oci/bootable.js';
import { buildImageTree, configDiffIds, configStreamName, manifestStreamName, repositoryContentReader } from '../oci/image.js';
import { resolveInTree } from '../seal/tree-files.js';
import type { FileSystem, Inode } from '../tree/model.js';
import { planEtcMerge, type EtcMergePlan } from './etc-merge.js';
import { ENTRIES_DIR, STAGED_DEPLOYMENT_FILE, STAGED_ENTRIES_DIR, STATE_DEPLOY_DIR, parseStagedDeployment, readUkiCmdline, type StagedDeploymentMarker } from './status.js';

export { ENTRIES_DIR, STAGED_ENTRIES_DIR, STAGED_DEPLOYMENT_FILE, STATE_DEPLOY_DIR };
export const LOADER_DIR = 'loader';
export const TYPE1_PARENT = 'EFI/Linux';
export const UKI_PARENT = 'EFI/Linux/bootc';
const ARTIFACT_PREFIX = 'bootc_composefs-';
const DIGEST_RE = /^(?:[0-9a-f]{64}|[0-9a-f]{128})$/;

export class DeployError extends BootcfsError {
  constructor(message: string) {
    super('EINVAL', message);
    this.name = 'DeployError';
  }
}

// ------------------------------------------------------------------------------------------------
// Context

export interface DeployContext {
  /** The physical root: `/sysroot` when booted, the target root offline. */
  sysroot: string;
  /** The directory holding `loader/entries` (the ESP). */
  bootDir: string;
  /** The directory holding `composefs/staged-deployment` (`/run` when booted). */
  runDir: string;
  /** The booted kernel command line; undefined offline. */
  cmdline?: string;
  /** Progress messages for the user (default: stdout). */
  log?: (message: string) => void;
  /** Warnings (default: `warning: …` on stderr). */
  warn?: (message: string) => void;
}

export const say = (ctx: DeployContext, m: string): void => (ctx.log ?? ((s: string) => process.stdout.write(`${s}\n`)))(m);
export const warn = (ctx: DeployContext, m: string): void => (ctx.warn ?? ((s: string) => process.stderr.write(`warning: ${s}\n`)))(m);

/** The boot directories tried, in order, when none is given. */
export const BOOT_DIR_CANDIDATES = ['boot', 'efi', 'boot/efi'];

export function findBootDir(base: string): string | undefined {
  return BOOT_DIR_CANDIDATES.map((d) => path.join(base, d)).find((d) => existsSync(path.join(d, ENTRIES_DIR)));
}

/**
 * The context of the running system (`/sysroot`, `/proc/cmdline`, `/run`, ESP at /boot, /efi or
 * /boot/efi), or of an offline root (`root`: nothing booted; staged marker under `<root>/run` unless
 * `runDir` is given).
 */
export async function deployContext(opts: { root?: string; bootDir?: string; runDir?: string; cmdline?: string } = {}): Promise<DeployContext> {
  if (opts.root !== undefined) {
    const sysroot = path.resolve(opts.root);
    const st = await fsp.stat(sysroot).catch(() => undefined);
    if (!st?.isDirectory()) throw new DeployError(`${opts.root} is not a directory`);
    const bootDir = opts.bootDir ?? findBootDir(sysroot);
    if (bootDir === undefined) throw new DeployError(`no loader/entries under ${sysroot}/{${BOOT_DIR_CANDIDATES.join(',')}}: give the ESP with --boot-dir`);
    return { sysroot, bootDir: path.resolve(bootDir), runDir: path.resolve(opts.runDir ?? path.join(sysroot, 'run')), cmdline: opts.cmdline };
  }
  const bootDir = opts.bootDir ?? findBootDir('/');
  if (bootDir === undefined) throw new DeployError('no loader/entries in /boot, /efi or /boot/efi: is the ESP mounted? (or give --boot-dir)');
  const cmdline = opts.cmdline ?? (await fsp.readFile('/proc/cmdline', 'utf8'));
  if (composefsKarg(cmdline) === undefined) throw new DeployError('this system was not booted from a composefs deployment (no composefs= on the kernel command line); use --root for an offline root');
  return { sysroot: '/sysroot', bootDir: path.resolve(bootDir), runDir: opts.runDir ?? '/run', cmdline };
}

export function bootedKarg(ctx: DeployContext): ComposefsKarg | undefined {
  return ctx.cmdline === undefined ? undefined : composefsKarg(ctx.cmdline);
}

// ------------------------------------------------------------------------------------------------
// Boot entries

export interface EntryFile {
  /** File name in its directory. */
  fileName: string;
  entry: BlsEntry;
  /** The deployment it boots. */
  digest: string;
  verityOptional: boolean;
  kind: 'bls' | 'uki';
  /** ESP-relative paths the entry needs: Type 1 kernel directory (`EFI/Linux/bootc_composefs-…`) or the UKI file. */
  artifacts: string[];
}

export interface EntryListing {
  /** composefs entries in boot-loader order (the default first). */
  entries: EntryFile[];
  /** `.conf` files that are not composefs deployments' (other systems, tools): carried over unchanged. */
  foreign: string[];
}

const rel = (p: string): string => p.replace(/^\/+/, '');

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

/** The boot directory's entries in `dir` (`loader/entries` or `loader/entries.staged`). A missing directory has none. */
export async function listEntries(ctx: DeployContext, dir: string = ENTRIES_DIR): Promise<EntryListing> {
  const abs = path.join(ctx.bootDir, dir);
  let names: string[];
  try {
    names = await fsp.readdir(abs);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return { entries: [], foreign: [] };
    throw new BootcfsError('EIO', `cannot read ${abs}: ${(e as Error).message}`);
  }
  const entries: EntryFile[] = [];
  const foreign: string[] = [];
  for (const fileName of names.filter((n) => n.endsWith('.conf') && !n.startsWith('.')).sort()) {
    const file = path.join(abs, fileName);
    let entry: BlsEntry;
    try {
      entry = parseBlsEntry(await fsp.readFile(file, 'utf8'), file);
    } catch (e) {
      warn(ctx, `boot entry ${file} is not readable (${(e as Error).message}): left as it is`);
      foreign.push(fileName);
      continue;
    }
    let k: ComposefsKarg | undefined;
    let kind: 'bls' | 'uki';
    const artifacts: string[] = [];
    if (entry.linux !== undefined) {
      kind = 'bls';
      try {
        k = composefsKarg(entryOptions(entry));
      } catch {
        k = undefined;
      }
      for (const p of [entry.linux, ...entry.initrd]) {
        const d = path.posix.dirname(rel(p));
        if (!artifacts.includes(d)) artifacts.push(d);
      }
    } else {
      kind = 'uki';
      const efi = rel((entry.uki ?? entry.efi)!);
      artifacts.push(efi);
      const m = /(?:^|\/)bootc_composefs-([0-9a-f]+)\.efi$/.exec(efi);
      try {
        const cmdline = await readUkiCmdline(path.join(ctx.bootDir, efi));
        if (cmdline !== undefined) k = composefsKarg(cmdline);
      } catch {
        k = undefined;
      }
      if (k === undefined && m && DIGEST_RE.test(m[1]!)) k = { digest: m[1]!, verityOptional: false };
    }
    if (k === undefined) {
      foreign.push(fileName);
      continue;
    }
    entries.push({ fileName, entry, digest: k.digest, verityOptional: k.verityOptional, kind, artifacts });
  }
  entries.sort((a, b) => compareEntries({ ...a.entry, fileName: a.fileName }, { ...b.entry, fileName: b.fileName }));
  return { entries, foreign };
}

/** The OS id an entry was keyed with (`sort-key bootc-<os>-N`, else its file name `bootc_<os>-…`), default `bootc`. */
export function entryOsId(e: EntryFile): string {
  const m = /^bootc-(.+)-[01]$/.exec(e.entry.sortKey ?? '');
  if (m) return m[1]!;
  return 'bootc';
}

/** The entry re-keyed as primary (`-1.conf`, sort-key `-0`) or secondary (`-0.conf`, sort-key `-1`). */
export function rekey(e: EntryFile, osId: string, primary: boolean): { fileName: string; entry: BlsEntry } {
  const version = e.entry.version ?? e.digest;
  return { fileName: entryFileName(osId, version, primary), entry: { ...e.entry, sortKey: sortKey(osId, primary) } };
}

// ------------------------------------------------------------------------------------------------
// Entry directories: written whole, swapped atomically

let renameat2Fn: ((...a: unknown[]) => number) | undefined;
const AT_FDCWD = -100;
const RENAME_EXCHANGE = 2;

/** renameat2(a, b, RENAME_EXCHANGE): both names must exist; afterwards each names the other's inode. */
export function exchangePaths(a: string, b: string): void {
  if (renameat2Fn === undefined) {
    const { koffi } = getLibc();
    renameat2Fn = koffi.load('libc.so.6').func('int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)') as (...a: unknown[]) => number;
  }
  if (renameat2Fn(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) !== 0) throw new SystemError(`renameat2(${a}, ${b}, RENAME_EXCHANGE)`, errno());
}

/**
 * Writes `files` (name → entry text) and copies `foreign` files from `loader/entries` into a new
 * directory and publishes it as `loader/<name>` (replacing an existing one): a temporary directory,
 * every file fsynced, the directory fsynced, then renamed (exchanged with an existing one, which is then
 * removed). Readers see the old or the new directory, never a part.
 */
export async function writeEntriesDir(ctx: DeployContext, name: string, files: Array<{ fileName: string; entry: BlsEntry }>, foreign: string[] = []): Promise<void> {
  const loader = path.join(ctx.bootDir, LOADER_DIR);
  await fsp.mkdir(loader, { recursive: true });
  const tmp = path.join(loader, `.${name}.tmp-${randomBytes(6).toString('hex')}`);
  await fsp.mkdir(tmp, { mode: 0o755 });
  try {
    const seen = new Set<string>();
    for (const f of files) {
      if (seen.has(f.fileName)) throw new DeployError(`two boot entries would be named ${f.fileName}`);
      seen.add(f.fileName);
      await writeFileAtomic(path.join(tmp, f.fileName), Buffer.from(writeBlsEntry(f.entry)), { mode: 0o644, syncDir: false });
    }
    for (const f of foreign) {
      if (seen.has(f)) continue;
      const data = await fsp.readFile(path.join(ctx.bootDir, ENTRIES_DIR, f)).catch(() => undefined);
      if (data !== undefined) await writeFileAtomic(path.join(tmp, f), data, { mode: 0o644, syncDir: false });
    }
    await fsyncDir(tmp);
    const target = path.join(loader, name);
    if (existsSync(target)) {
      exchangePaths(tmp, target);
      await fsyncDir(loader);
    } else {
      await fsp.rename(tmp, target);
      await fsyncDir(loader);
      return;
    }
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true });
    throw e;
  }
  // tmp now holds the old directory
  await fsp.rm(tmp, { recursive: true, force: true });
  await fsyncDir(loader);
}

/**
 * Makes `loader/entries.staged` the live `loader/entries` (exchange, then the old set removed). The
 * exchange is the commit point: before it the old default boots, after it the new one.
 */
export async function swapStagedEntries(ctx: DeployContext): Promise<void> {
  const loader = path.join(ctx.bootDir, LOADER_DIR);
  const staged = path.join(ctx.bootDir, STAGED_ENTRIES_DIR);
  const live = path.join(ctx.bootDir, ENTRIES_DIR);
  if (!existsSync(staged)) throw new DeployError(`${staged} does not exist: nothing to swap in`);
  await fsyncDir(staged);
  if (existsSync(live)) exchangePaths(staged, live);
  else await fsp.rename(staged, live);
  await fsyncDir(loader);
  await removeStagedEntries(ctx);
}

export async function removeStagedEntries(ctx: DeployContext): Promise<boolean> {
  const staged = path.join(ctx.bootDir, STAGED_ENTRIES_DIR);
  if (!existsSync(staged)) return false;
  // renamed away first: a crash mid-removal never leaves a partial entries.staged
  const loader = path.join(ctx.bootDir, LOADER_DIR);
  const doomed = path.join(loader, `.entries.staged.old-${randomBytes(6).toString('hex')}`);
  await fsp.rename(staged, doomed);
  await fsyncDir(loader);
  await fsp.rm(doomed, { recursive: true, force: true });
  return true;
}

/** Leftover temporary entry directories of killed commands (`loader/.entries*.tmp-*`, `.old-*`). */
export async function removeEntryTemps(ctx: DeployContext, dryRun = false): Promise<string[]> {
  const loader = path.join(ctx.bootDir, LOADER_DIR);
  const names = await fsp.readdir(loader).catch(() => [] as string[]);
  const out: string[] = [];
  for (const n of names) {
    if (!/^\.entries(\.staged)?\.(tmp|old)-[0-9a-f]+$/.test(n)) continue;
    out.push(`${LOADER_DIR}/${n}`);
    if (!dryRun) await fsp.rm(path.join(loader, n), { recursive: true, force: true });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Staged marker

export async function readStagedMarker(ctx: DeployContext): Promise<StagedDeploymentMarker | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(path.join(ctx.runDir, STAGED_DEPLOYMENT_FILE), 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw new BootcfsError('EIO', `cannot read the staged marker: ${(e as Error).message}`);
  }
  return parseStagedDeployment(text);
}

/** `/run/composefs/staged-deployment` as bootc writes it (canonical JSON, snake_case). */
export async function writeStagedMarker(ctx: DeployContext, m: StagedDeploymentMarker): Promise<void> {
  const file = path.join(ctx.runDir, STAGED_DEPLOYMENT_FILE);
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await writeFileAtomic(file, Buffer.from(JSON.stringify({ depl_id: m.deplId, finalization_locked: m.finalizationLocked })), { mode: 0o644 });
}

export async function removeStagedMarker(ctx: DeployContext): Promise<boolean> {
  try {
    await fsp.unlink(path.join(ctx.runDir, STAGED_DEPLOYMENT_FILE));
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return false;
    throw e;
  }
}

// ------------------------------------------------------------------------------------------------
// State

export function stateDir(ctx: DeployContext, id: string): string {
  return path.join(ctx.sysroot, STATE_DEPLOY_DIR, id);
}

/** The origin of deployment `id`, or undefined when its state has none (an interrupted deployment). */
export async function readDeploymentOrigin(ctx: DeployContext, id: string): Promise<DeploymentOrigin | undefined> {
  const file = path.join(stateDir(ctx, id), originFileName(id));
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw e;
  }
  return parseOrigin(text, file);
}

/** Names in `state/deploy` (deployment ids and anything else). */
export async function listStateDirs(ctx: DeployContext): Promise<string[]> {
  return (await fsp.readdir(path.join(ctx.sysroot, STATE_DEPLOY_DIR)).catch(() => [] as string[])).sort();
}

/** Whether deployment `id` is complete: its origin, etc/ and var link exist, and every artifact of `entry` is on the ESP. */
export async function deploymentComplete(ctx: DeployContext, id: string, entry?: EntryFile): Promise<string | undefined> {
  if ((await readDeploymentOrigin(ctx, id).catch(() => undefined)) === undefined) return `deployment ${id} has no origin file`;
  if (!(await fsp.stat(path.join(stateDir(ctx, id), 'etc')).catch(() => undefined))?.isDirectory()) return `deployment ${id} has no etc/`;
  for (const a of entry?.artifacts ?? []) {
    if (!existsSync(path.join(ctx.bootDir, a))) return `boot entry ${entry!.fileName} needs ${a}, which is not on the ESP`;
  }
  if (entry?.kind === 'bls') {
    for (const p of [entry.entry.linux!, ...entry.entry.initrd]) if (!existsSync(path.join(ctx.bootDir, rel(p)))) return `boot entry ${entry.fileName} needs ${p}, which is not on the ESP`;
  }
  return undefined;
}

/** Boot artifacts on the ESP that bootc names (`EFI/Linux/bootc_composefs-*` dirs, `EFI/Linux/bootc/bootc_composefs-*.efi`). */
export async function listBootArtifacts(ctx: DeployContext): Promise<string[]> {
  const out: string[] = [];
  for (const n of await fsp.readdir(path.join(ctx.bootDir, TYPE1_PARENT)).catch(() => [] as string[])) {
    if (n.startsWith(ARTIFACT_PREFIX) && (await fsp.stat(path.join(ctx.bootDir, TYPE1_PARENT, n))).isDirectory()) out.push(`${TYPE1_PARENT}/${n}`);
  }
  for (const n of await fsp.readdir(path.join(ctx.bootDir, UKI_PARENT)).catch(() => [] as string[])) {
    if (n.startsWith(ARTIFACT_PREFIX) && n.endsWith('.efi')) out.push(`${UKI_PARENT}/${n}`);
  }
  return out.sort();
}

// ------------------------------------------------------------------------------------------------
// Repository

/**
 * Opens `<sysroot>/composefs` for writing: secure when its meta.json has fs-verity; a repository declared
 * secure whose fs-verity is still to be enabled by setup-root (`.verity-pending`, an install on a kernel
 * without fs-verity) is written without it (setup-root enables it on every object at the next boot);
 * otherwise as declared.
 */
export async function openSysrootRepository(ctx: DeployContext, opts: { readOnly?: boolean } = {}): Promise<{ repo: Repository; verity: VerityMode }> {
  const repoPath = path.join(ctx.sysroot, 'composefs');
  if (!existsSync(path.join(repoPath, META_FILE))) throw new DeployError(`${repoPath} is not a composefs repository: not a bootcfs system`);
  try {
    const repo = await Repository.open(repoPath, { readOnly: opts.readOnly });
    return { repo, verity: repo.insecure ? 'none' : 'enable' };
  } catch (e) {
    const code = (e as BootcfsError).code;
    if ((code === 'EVERITY' || code === 'ENOTSUP') && existsSync(path.join(repoPath, VERITY_PENDING))) {
      const repo = await Repository.open(repoPath, { readOnly: opts.readOnly, insecure: true });
      return { repo, verity: isDeclaredInsecure(repo.meta) ? 'none' : 'deferred' };
    }
    throw e;
  }
}

// ------------------------------------------------------------------------------------------------
// Lock

/** Whether the mount at `mountPoint` (the last one there) is mounted read-only. */
export function mountIsReadOnly(mountinfo: string, mountPoint: string): boolean {
  let ro = false;
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length >= 6 && f[4] === mountPoint) ro = f[5]!.split(',').includes('ro');
  }
  return ro;
}

function remount(mountPoint: string, mode: 'ro' | 'rw'): void {
  const r = spawnSync('mount', ['-o', `remount,bind,${mode}`, mountPoint], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new BootcfsError('EIO', `mount -o remount,bind,${mode} ${mountPoint}: ${r.stderr?.toString().trim() || r.error?.message}`);
}

/**
 * Holds the deploy lock (flock on `<sysroot>/state`) while `fn` runs. On a booted system whose
 * `/sysroot` is mounted read-only (setup-root does so), it is made writable for `fn` and read-only again
 * afterwards.
 */
export async function withDeployLock<T>(ctx: DeployContext, fn: () => Promise<T>): Promise<T> {
  const dir = path.join(ctx.sysroot, 'state');
  if (!existsSync(dir)) throw new DeployError(`${dir} does not exist: not a bootcfs system`);
  const h = await fsp.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await flock(h.fd, LOCK_EX);
    let remounted = false;
    try {
      if (ctx.cmdline !== undefined && mountIsReadOnly(await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => ''), ctx.sysroot)) {
        remount(ctx.sysroot, 'rw');
        remounted = true;
      }
      return await fn();
    } finally {
      if (remounted) {
        try {
          remount(ctx.sysroot, 'ro');
        } catch (e) {
          warn(ctx, (e as Error).message);
        }
      }
      await flock(h.fd, LOCK_UN).catch(() => undefined);
    }
  } finally {
    await h.close();
  }
}

/** The deployments the boot loader and the run dir know about, with the current one (booted, else the default). */
export interface DeploymentView {
  live: EntryListing;
  staged: EntryListing;
  marker?: StagedDeploymentMarker;
  booted?: ComposefsKarg;
  /** The deployment an upgrade starts from: the booted one, else the default entry's. */
  current?: EntryFile;
}

export async function readDeploymentView(ctx: DeployContext): Promise<DeploymentView> {
  const live = await listEntries(ctx, ENTRIES_DIR);
  const staged = await listEntries(ctx, STAGED_ENTRIES_DIR);
  const marker = await readStagedMarker(ctx);
  const booted = bootedKarg(ctx);
  const current = booted !== undefined ? live.entries.find((e) => e.digest === booted.digest) : live.entries[0];
  if (booted !== undefined && current === undefined) warn(ctx, `the booted deployment ${booted.digest} has no boot entry in ${path.join(ctx.bootDir, ENTRIES_DIR)}`);
  return { live, staged, marker, booted, current };
}

// ------------------------------------------------------------------------------------------------
// Images of deployments

export interface DeploymentImage {
  /** The image as pulled (before the bootable transform): its /etc is the deployment's pristine /etc. */
  tree: FileSystem;
  /** Content of a file of `tree` (inline, or the verified object). */
  read: ContentReader;
  configStream: string;
}

/** A content reader over a repository tree: inline bytes, empty files, else the verified object. */
export function treeReader(repo: Repository): ContentReader {
  const fromRepo = repositoryContentReader(repo);
  return async (inode, p) => inode.content ?? (inode.size === 0 ? Buffer.alloc(0) : fromRepo(inode, p));
}

/** The stored image of manifest `manifestDigest` (its manifest stream names the config). */
export async function imageOfManifest(repo: Repository, manifestDigest: string): Promise<DeploymentImage> {
  const ms = await repo.openStream(manifestStreamName(manifestDigest)).catch((e: Error) => {
    throw new DeployError(`the image ${manifestDigest} is not in the repository (${e.message})`);
  });
  let configStream: string | undefined;
  for (const [name] of ms.namedRefs) if (name.startsWith('config:')) configStream = configStreamName(name.slice('config:'.length));
  if (configStream === undefined) throw new DeployError(`the manifest stream of ${manifestDigest} names no config`);
  // contents are read through treeReader (verified), so the objects need no stat() here
  const tree = await buildImageTree(repo, await configDiffIds(repo, configStream), { trustObjects: true });
  return { tree, read: treeReader(repo), configStream };
}

/** The image of deployment `id` (from its origin's manifest digest). */
export async function imageOfDeployment(ctx: DeployContext, repo: Repository, id: string): Promise<DeploymentImage & { origin: DeploymentOrigin }> {
  const origin = await readDeploymentOrigin(ctx, id);
  if (origin === undefined) throw new DeployError(`deployment ${id} has no origin file`);
  if (origin.manifestDigest === undefined) throw new DeployError(`the origin of deployment ${id} has no [image] manifest_digest`);
  return { ...(await imageOfManifest(repo, origin.manifestDigest)), origin };
}

/** The /etc directory inode of an image tree. */
export function etcOf(img: DeploymentImage, what: string): Inode {
  const etc = resolveInTree(img.tree, '/etc');
  if (!etc?.isDir) throw new DeployError(`${what} has no /etc directory`);
  return etc;
}

/**
 * The /etc merge of deployment `fromId` (its image `from`: its /etc = pristine; its `state/deploy/<id>/etc`
 * = current) into image `next` (etc-merge.ts). The plan lists every conflict.
 */
export async function planDeploymentEtcMerge(ctx: DeployContext, fromId: string, from: DeploymentImage, next: DeploymentImage): Promise<EtcMergePlan> {
  return planEtcMerge({ pristine: etcOf(from, `the image of deployment ${fromId}`), current: path.join(stateDir(ctx, fromId), 'etc'), next: etcOf(next, 'the new image'), read: next.read, readPristine: from.read });
}
