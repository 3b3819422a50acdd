/**
 * Garbage collection of a composefs system (`bootcfs internals gc`, and after upgrade, switch, finalize
 * and delete-deployment; bootc-composefs.md §7):
 *
 * 1. what is kept: every deployment a live boot entry (`loader/entries`) boots — the default, the
 *    rollback and any other entry —, the staged deployment (its `loader/entries.staged` and the staged
 *    marker must agree), and the booted one;
 * 2. a staged set that is not whole (entries without the marker, or a marker whose deployment the staged
 *    entries do not boot first: an interrupted upgrade, or a download-only deployment after a reboot) is
 *    removed, marker and entries (upstream keeps such entries and their state forever);
 * 3. boot files on the ESP that no kept entry references (`EFI/Linux/bootc_composefs-*` kernel
 *    directories — looked up by the paths entries name, so a kernel directory shared by two deployments
 *    stays —, `EFI/Linux/bootc/bootc_composefs-*.efi` and their `.extra.d`), and temporary files killed
 *    writers left there and in `loader/`;
 * 4. state directories (`state/deploy/*`) of deployments not kept;
 * 5. repository: a `localhost/bootc-<manifest digest>` tag for every kept deployment's image; the tags
 *    bootcfs made otherwise go: other `localhost/bootc-*` tags, and tags named by an image reference
 *    (`oci:…`, `docker://…`: how install tags its pull) — of images no kept deployment uses, or replaced by
 *    the image's bootc tag; other tags are left alone; then the repository's gc with the kept deployments'
 *    images as extra roots.
 *
 * `dryRun` deletes nothing and reports what would go (the repository part as if the tags stayed).
 * The booted deployment's files are never deleted.
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { manifestStreamName, ociTagRef } from '../oci/image.js';
import type { GcResult } from '../repository/index.js';
import { formatGcResult } from '../repository/index.js';
import { fsyncDir } from '../util/atomic-file.js';
import {
  LOADER_DIR, STATE_DEPLOY_DIR, TYPE1_PARENT, UKI_PARENT, listBootArtifacts, listStateDirs, openSysrootRepository, readDeploymentOrigin,
  readDeploymentView, removeEntryTemps, removeStagedEntries, removeStagedMarker, stateDir, warn, withDeployLock, type DeployContext, type EntryFile,
} from './deployments.js';

export interface DeployGcOptions {
  dryRun?: boolean;
  /** Also collect state directories, tags and the repository (default true; false: boot files only). */
  pruneRepo?: boolean;
}

export interface DeployGcResult {
  dryRun: boolean;
  /** Deployment ids kept. */
  kept: string[];
  /** ESP-relative boot files/directories removed. */
  bootFilesRemoved: string[];
  /** Deployment ids (or other names) removed from state/deploy. */
  stateDirsRemoved: string[];
  /** An incomplete staged set was removed (entries.staged and/or the marker). */
  staleStagedRemoved: string[];
  /** Temporary files of interrupted commands removed (ESP-relative or sysroot-relative). */
  tempFilesRemoved: string[];
  tagsRemoved: string[];
  tagsAdded: string[];
  repository?: GcResult;
}

/** `streams/refs/oci/<x>` ref name → the tag it encodes. */
function decodeTag(refName: string): string | undefined {
  if (!refName.startsWith('oci/')) return undefined;
  return refName.slice(4).replace(/%2F/g, '/').replace(/%25/g, '%');
}

export const BOOTC_TAG_PREFIX = 'localhost/bootc-';
const REFERENCE_TAG = /^(?:docker:\/\/|oci:|oci-archive:|docker-archive:|containers-storage:|dir:)/;

/** The tag bootc gives a deployment's image: `localhost/bootc-<manifest digest>`. */
export const bootcTag = (manifestDigest: string): string => `${BOOTC_TAG_PREFIX}${manifestDigest}`;

async function rmTree(p: string, dryRun: boolean): Promise<void> {
  if (!dryRun) await fsp.rm(p, { recursive: true, force: true });
}

/** Garbage collection, taking the deploy lock. */
export async function collectGarbage(ctx: DeployContext, opts: DeployGcOptions = {}): Promise<DeployGcResult> {
  return withDeployLock(ctx, () => collectGarbageLocked(ctx, opts));
}

/** Garbage collection for a caller that holds the deploy lock (and no repository handle). */
export async function collectGarbageLocked(ctx: DeployContext, opts: DeployGcOptions = {}): Promise<DeployGcResult> {
  const dryRun = opts.dryRun ?? false;
  const result: DeployGcResult = { dryRun, kept: [], bootFilesRemoved: [], stateDirsRemoved: [], staleStagedRemoved: [], tempFilesRemoved: [], tagsRemoved: [], tagsAdded: [] };
  const view = await readDeploymentView(ctx);

  // 1-2. what is kept; an incomplete staged set goes
  const stagedPrimary = view.staged.entries[0];
  const stagedWhole = view.marker !== undefined && stagedPrimary !== undefined && stagedPrimary.digest === view.marker.deplId
    && (await readDeploymentOrigin(ctx, view.marker.deplId).catch(() => undefined)) !== undefined;
  if (!stagedWhole) {
    if (existsSync(path.join(ctx.bootDir, LOADER_DIR, 'entries.staged'))) {
      result.staleStagedRemoved.push(`${LOADER_DIR}/entries.staged`);
      if (!dryRun) await removeStagedEntries(ctx);
    }
    if (view.marker !== undefined) {
      result.staleStagedRemoved.push('composefs/staged-deployment');
      if (!dryRun) await removeStagedMarker(ctx);
    }
  }
  const keptEntries: EntryFile[] = [...view.live.entries, ...(stagedWhole ? view.staged.entries : [])];
  const keep = new Set(keptEntries.map((e) => e.digest));
  if (view.booted !== undefined) keep.add(view.booted.digest);
  result.kept = [...keep].sort();

  // 3. boot files
  const referenced = new Set(keptEntries.flatMap((e) => e.artifacts));
  for (const a of await listBootArtifacts(ctx)) {
    if (referenced.has(a)) continue;
    if (view.booted !== undefined && a.includes(view.booted.digest)) {
      warn(ctx, `${a} belongs to the booted deployment but no boot entry references it: kept`);
      continue;
    }
    result.bootFilesRemoved.push(a);
    await rmTree(path.join(ctx.bootDir, a), dryRun);
    if (a.endsWith('.efi') && existsSync(path.join(ctx.bootDir, `${a}.extra.d`))) {
      result.bootFilesRemoved.push(`${a}.extra.d`);
      await rmTree(path.join(ctx.bootDir, `${a}.extra.d`), dryRun);
    }
  }
  const tempDirs = [TYPE1_PARENT, UKI_PARENT, ...[...referenced].filter((a) => !a.endsWith('.efi'))];
  for (const d of tempDirs) {
    for (const n of await fsp.readdir(path.join(ctx.bootDir, d)).catch(() => [] as string[])) {
      if (!/^\..*\.tmp-[0-9a-f]+$/.test(n)) continue;
      result.tempFilesRemoved.push(`${d}/${n}`);
      await rmTree(path.join(ctx.bootDir, d, n), dryRun);
    }
  }
  result.tempFilesRemoved.push(...(await removeEntryTemps(ctx, dryRun)));
  if (!dryRun && result.bootFilesRemoved.length > 0) for (const d of [TYPE1_PARENT, UKI_PARENT]) if (existsSync(path.join(ctx.bootDir, d))) await fsyncDir(path.join(ctx.bootDir, d));
  if (opts.pruneRepo === false) return result;

  // 4. state directories
  for (const name of await listStateDirs(ctx)) {
    if (keep.has(name)) continue;
    result.stateDirsRemoved.push(name);
    await rmTree(stateDir(ctx, name), dryRun);
  }
  if (!dryRun && result.stateDirsRemoved.length > 0) await fsyncDir(path.join(ctx.sysroot, STATE_DEPLOY_DIR));

  // 5. tags, then the repository
  const liveManifests = new Set<string>();
  for (const id of keep) {
    const o = await readDeploymentOrigin(ctx, id).catch(() => undefined);
    if (o?.manifestDigest !== undefined) liveManifests.add(o.manifestDigest);
  }
  const liveStreams = new Set([...liveManifests].map(manifestStreamName));
  const { repo } = await openSysrootRepository(ctx, { readOnly: dryRun });
  try {
    const refs = await repo.streamRefs();
    // every kept image gets its bootc tag first; then the tags bootcfs made that are not those go
    const bootcRefs = new Set<string>();
    for (const m of liveManifests) {
      const ref = ociTagRef(bootcTag(m));
      if (!(await repo.hasStream(manifestStreamName(m)))) continue;
      bootcRefs.add(ref);
      if (refs.has(ref)) continue;
      result.tagsAdded.push(bootcTag(m));
      if (!dryRun) await repo.nameStreamRef(ref, manifestStreamName(m));
    }
    for (const [refName, stream] of refs) {
      const tag = decodeTag(refName);
      if (tag === undefined || bootcRefs.has(refName)) continue;
      if (!tag.startsWith(BOOTC_TAG_PREFIX)) {
        if (!REFERENCE_TAG.test(tag)) continue; // someone else's tag
        // a reference-named tag (install tags its pull so): stale, or replaced by the image's bootc tag
        const m = stream.startsWith('oci-manifest-') ? stream.slice('oci-manifest-'.length) : '';
        if (liveStreams.has(stream) && !bootcRefs.has(ociTagRef(bootcTag(m)))) continue;
      }
      result.tagsRemoved.push(tag);
      if (!dryRun) await repo.removeStreamRef(refName);
    }
    result.repository = await repo.gc({ dryRun, extraRoots: [...keep] });
  } finally {
    await repo.close();
  }
  return result;
}

export function formatDeployGcResult(r: DeployGcResult): string {
  const verb = r.dryRun ? 'would be removed' : 'removed';
  const lines: string[] = [];
  if (r.dryRun) lines.push('Dry run (no files deleted)');
  lines.push(`Deployments kept: ${r.kept.length}${r.kept.length ? ` (${r.kept.map((k) => k.slice(0, 12)).join(', ')})` : ''}`);
  const list = (what: string, xs: string[]): void => {
    if (xs.length > 0) lines.push(`${what}: ${xs.length} ${verb}`, ...xs.map((x) => `  ${x}`));
  };
  list('Incomplete staged deployment', r.staleStagedRemoved);
  list('Boot files', r.bootFilesRemoved);
  list('Deployment state', r.stateDirsRemoved.map((s) => `${STATE_DEPLOY_DIR}/${s}`));
  list('Temporary files', r.tempFilesRemoved);
  list('Tags', r.tagsRemoved);
  if (r.tagsAdded.length > 0) lines.push(`Tags added: ${r.tagsAdded.join(', ')}`);
  let out = `${lines.join('\n')}\n`;
  if (r.repository) out += formatGcResult(r.repository);
  return out;
}
