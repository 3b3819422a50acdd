/**
 * `bootcfs upgrade` and `bootcfs switch IMAGE` (bootc-composefs.md §1.5, §1.6): stage a new deployment
 * that becomes the default only when `composefs-finalize-staged` swaps its entries in at shutdown.
 *
 *  1. the target: upgrade → the current deployment's image reference (its origin); switch → IMAGE.
 *     A switch to the reference the current deployment already runs says so and does nothing.
 *  2. the source's manifest: the same manifest as the current deployment → nothing to do; the same as
 *     the staged one → already staged. `--check` stops here and reports whether an update exists and how
 *     many bytes of layers this repository lacks; it never writes anything.
 *  3. pull (bootable) into `<sysroot>/composefs`, tagged `localhost/bootc-<manifest digest>`; the
 *     bootable composefs digest is the new deployment id. Equal to the current deployment → nothing to
 *     do; equal to another live deployment (the rollback) → upgrade says so, switch refuses (use
 *     `bootcfs rollback`).
 *  4. the /etc merge is planned (dry run) against the new image's /etc: any conflict refuses the update
 *     before anything is staged ("Merge conflicts found in etc").
 *  5. a previously staged deployment is replaced; then the new deployment's state (`etc/` = the new
 *     image's /etc, merged at finalize; `var` link; origin last), its boot files on the ESP (the UKI, or
 *     kernel + initrd — a kernel directory with the same kernel ‖ initrd digest is reused), the staged
 *     entries (new deployment primary `-1.conf`/sort-key `-0`, the current entry re-keyed secondary
 *     `-0.conf`/`-1`, other systems' entries copied) as one directory, and last the marker
 *     `<run>/composefs/staged-deployment`. Type 1 options: the current entry's, with `composefs=`
 *     replaced and the kargs.d delta of the two images applied.
 *  6. garbage collection.
 * A command killed at any point leaves `loader/entries` untouched: the current default still boots.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { composefsArg, kargsFromFiles, KARGS_D, splitCmdline } from '../boot/kargs.js';
import { entryOptions } from '../boot/bls.js';
import { prepareBootFiles, writeDeploymentState, type EspFile } from '../install/deployment.js';
import { configDiffIds, buildImageTree, layerStreamName, manifestStreamName, ociTagRef } from '../oci/image.js';
import { pullImage, type LayerBytesEvent, type PullProgressEvent } from '../oci/pull.js';
import type { RegistryOptions } from '../oci/registry.js';
import { openImageSource } from '../oci/source.js';
import { listTreeDir } from '../seal/tree-files.js';
import { syncfsPaths } from '../sys/libc.js';
import { fsyncDir, writeFileAtomic } from '../util/atomic-file.js';
import { EtcMergeConflictError } from './etc-merge.js';
import {
  DeployError, ENTRIES_DIR, STAGED_ENTRIES_DIR, entryOsId, imageOfDeployment, openSysrootRepository, planDeploymentEtcMerge, readDeploymentOrigin,
  readDeploymentView, rekey, removeStagedEntries, removeStagedMarker, stateDir, treeReader, withDeployLock, writeEntriesDir, writeStagedMarker,
  type DeployContext, type DeploymentImage, type EntryFile,
} from './deployments.js';
import { bootcTag, collectGarbageLocked, type DeployGcResult } from './gc.js';
import type { ContentReader } from '../oci/bootable.js';
import type { FileSystem } from '../tree/model.js';

export interface UpgradeOptions {
  /** switch: the new image reference (`oci:…`, `docker://…`, …); upgrade: the current one. */
  target?: string;
  /** Report whether an update exists; write nothing. */
  check?: boolean;
  /** Stage with `finalization_locked` (finalize leaves it alone). */
  downloadOnly?: boolean;
  /** Unlock a download-only staged deployment (it is finalized at the next shutdown). */
  fromDownloaded?: boolean;
  registry?: RegistryOptions;
  onProgress?: (ev: PullProgressEvent) => void;
  onLayerBytes?: (ev: LayerBytesEvent) => void;
  /** Skip the garbage collection after staging. */
  noGc?: boolean;
}

export interface CheckResult {
  kind: 'check';
  reference: string;
  updateAvailable: boolean;
  manifestDigest: string;
  currentManifestDigest: string | null;
  /** The source's manifest is the staged deployment's. */
  staged: boolean;
  /** Compressed bytes of the layers this repository does not have. */
  newBytes: number;
  newLayers: number;
  totalLayers: number;
  totalBytes: number;
}

export type UpgradeResult =
  | CheckResult
  | { kind: 'unchanged'; reference: string; message: string }
  | { kind: 'already-staged'; reference: string; deployment: string; message: string }
  | { kind: 'unlocked'; deployment: string; message: string }
  | {
      kind: 'staged';
      reference: string;
      deployment: string;
      manifestDigest: string;
      bootType: 'bls' | 'uki';
      downloadOnly: boolean;
      replacedStaged: string | null;
      /** Pulled layers: imported now / already present. */
      layersImported: number;
      layersSkipped: number;
      /** Compressed bytes of the layers imported now. */
      layerBytesImported: number;
      /** Boot files written to the ESP (ESP-relative); a reused kernel directory writes none. */
      bootFiles: string[];
      entries: string[];
      gc?: DeployGcResult;
      message: string;
    };

/** A bare `host/name:tag` (bootc's default transport, registry) becomes `docker://host/name:tag`. */
export function normalizeImageReference(ref: string, transport?: string): string {
  if (transport !== undefined && transport !== 'registry') return `${transport}:${ref}`;
  if (ref.startsWith('registry:')) return `docker://${ref.slice('registry:'.length)}`;
  if (/^(?:docker:\/\/|oci:|oci-archive:|docker-archive:|containers-storage:|dir:)/.test(ref)) return ref;
  return `docker://${ref}`;
}

/** The Type 1 options of the new entry: the current entry's, composefs= replaced, kargs.d delta applied. */
export function upgradeKargs(currentOptions: string, currentImageKargs: readonly string[], newImageKargs: readonly string[], digest: string, verityOptional: boolean): string[] {
  const removed = new Set(currentImageKargs.filter((a) => !newImageKargs.includes(a)));
  const args: string[] = [];
  let placed = false;
  for (const a of splitCmdline(currentOptions)) {
    if (a.startsWith('composefs=')) {
      if (!placed) args.push(composefsArg(digest, verityOptional));
      placed = true;
    } else if (!removed.has(a)) args.push(a);
  }
  if (!placed) args.push(composefsArg(digest, verityOptional));
  for (const a of newImageKargs) if (!args.includes(a)) args.push(a);
  return args;
}

async function imageKargs(img: { tree: FileSystem; read: ContentReader }): Promise<string[]> {
  const files: Array<{ name: string; text: string }> = [];
  for (const [name, inode] of listTreeDir(img.tree, `/${KARGS_D}`)) {
    if (inode.isReg) files.push({ name: Buffer.from(name, 'latin1').toString('utf8'), text: (await img.read(inode, `/${KARGS_D}/${name}`)).toString('utf8') });
  }
  return kargsFromFiles(files);
}

async function checkUpdate(ctx: DeployContext, ref: string, currentManifest: string | undefined, stagedManifest: string | undefined, opts: UpgradeOptions): Promise<CheckResult> {
  const source = await openImageSource(ref, { registry: opts.registry });
  let manifestDigest: string;
  let layers: Array<{ diffId: string; size: number }>;
  try {
    const m = await source.getManifest();
    const c = await source.getConfig();
    manifestDigest = m.digest;
    const diffIds = c.config.rootfs.diff_ids;
    layers = m.manifest.layers.map((l, i) => ({ diffId: diffIds[i] ?? '', size: l.size }));
  } finally {
    await source.close();
  }
  const { repo } = await openSysrootRepository(ctx, { readOnly: true });
  let newBytes = 0;
  let newLayers = 0;
  try {
    const seen = new Set<string>();
    for (const l of layers) {
      if (seen.has(l.diffId)) continue;
      seen.add(l.diffId);
      if (await repo.hasStream(layerStreamName(l.diffId))) continue;
      newLayers++;
      newBytes += l.size;
    }
  } finally {
    await repo.close();
  }
  return {
    kind: 'check', reference: ref, updateAvailable: manifestDigest !== currentManifest && manifestDigest !== stagedManifest, manifestDigest,
    currentManifestDigest: currentManifest ?? null, staged: manifestDigest === stagedManifest, newBytes, newLayers, totalLayers: layers.length,
    totalBytes: layers.reduce((a, l) => a + l.size, 0),
  };
}

/** `upgrade` (no `target`) or `switch` (`target`). */
export async function upgrade(ctx: DeployContext, opts: UpgradeOptions = {}): Promise<UpgradeResult> {
  return withDeployLock(ctx, () => upgradeLocked(ctx, opts));
}

async function upgradeLocked(ctx: DeployContext, opts: UpgradeOptions): Promise<UpgradeResult> {
  const isSwitch = opts.target !== undefined;
  const view = await readDeploymentView(ctx);
  const current = view.current;
  if (current === undefined) throw new DeployError(`no deployment to ${isSwitch ? 'switch' : 'upgrade'} from: ${path.join(ctx.bootDir, ENTRIES_DIR)} has no composefs boot entry${view.booted ? ' for the booted deployment' : ''}`);
  const curOrigin = await readDeploymentOrigin(ctx, current.digest);
  if (curOrigin === undefined) throw new DeployError(`the current deployment ${current.digest} has no origin file`);
  const stagedId = view.marker !== undefined && view.staged.entries[0]?.digest === view.marker.deplId ? view.marker.deplId : undefined;
  const stagedOrigin = stagedId !== undefined ? await readDeploymentOrigin(ctx, stagedId) : undefined;

  if (opts.fromDownloaded) {
    if (stagedId === undefined || !view.marker!.finalizationLocked) throw new DeployError('no download-only deployment is staged (upgrade --download-only stages one)');
    await writeStagedMarker(ctx, { deplId: stagedId, finalizationLocked: false });
    return { kind: 'unlocked', deployment: stagedId, message: `Staged deployment ${stagedId} will be finalized at the next shutdown.` };
  }

  const ref = opts.target ?? curOrigin.imageReference;
  if (ref === undefined) throw new DeployError(`the current deployment ${current.digest} names no image in its origin: use switch IMAGE`);
  if (isSwitch && ref === curOrigin.imageReference && stagedId === undefined) {
    return { kind: 'unchanged', reference: ref, message: `Image specification is unchanged: ${ref} is the current deployment's image (${current.digest}); nothing to do.` };
  }

  // 2. the source's manifest
  const chk = await checkUpdate(ctx, ref, curOrigin.manifestDigest, stagedOrigin?.manifestDigest, opts);
  if (opts.check) return chk;
  if (chk.manifestDigest === curOrigin.manifestDigest) {
    if (stagedId !== undefined) {
      // back to the current image: the staged deployment is dropped
      await removeStagedEntries(ctx);
      await removeStagedMarker(ctx);
      return { kind: 'unchanged', reference: ref, message: `${ref} is the current deployment's image (${current.digest}); the staged deployment ${stagedId} was discarded.` };
    }
    return { kind: 'unchanged', reference: ref, message: `No update available: ${ref} is the current deployment's image (${chk.manifestDigest}).` };
  }
  if (chk.staged && stagedId !== undefined) {
    return { kind: 'already-staged', reference: ref, deployment: stagedId, message: `Update already staged: ${ref} (${chk.manifestDigest}) is deployment ${stagedId}.` };
  }

  // 3. pull
  const { repo, verity } = await openSysrootRepository(ctx);
  let staged: Extract<UpgradeResult, { kind: 'staged' }>;
  try {
    const layerBytes = new Map<string, number>();
    const pulled = await pullImage(repo, ref, {
      bootable: true, tag: bootcTag(chk.manifestDigest), registry: opts.registry, onLayerBytes: opts.onLayerBytes,
      onProgress: (ev) => {
        if (ev.kind === 'layer-done') layerBytes.set(ev.diffId, ev.size);
        opts.onProgress?.(ev);
      },
    });
    if (pulled.manifestDigest !== chk.manifestDigest) {
      // the source moved between the check and the pull: tag what was pulled
      await repo.nameStreamRef(ociTagRef(bootcTag(pulled.manifestDigest)), manifestStreamName(pulled.manifestDigest));
      await repo.removeStreamRef(ociTagRef(bootcTag(chk.manifestDigest)));
    }
    const digest = pulled.bootImageId!.toString('hex');
    if (digest === current.digest) {
      return { kind: 'unchanged', reference: ref, message: `No changes in ${ref}: it has the same composefs digest as the current deployment (${digest}).` };
    }
    if (digest === stagedId) return { kind: 'already-staged', reference: ref, deployment: digest, message: `Update already staged: deployment ${digest}.` };
    const other = view.live.entries.find((e) => e.digest === digest);
    if (other !== undefined) {
      const msg = `${ref} is deployment ${digest}, which ${other === view.live.entries[0] ? 'is the default' : 'is the rollback'} deployment: use bootcfs rollback`;
      if (isSwitch) throw new DeployError(`Target image has the same fs-verity digest as an existing deployment: ${msg}`);
      return { kind: 'unchanged', reference: ref, message: `No changes: ${msg}.` };
    }
    const next: DeploymentImage = { tree: await buildImageTree(repo, await configDiffIds(repo, pulled.configStream), { trustObjects: true }), read: treeReader(repo), configStream: pulled.configStream };

    // 4. /etc dry run
    const cur = await imageOfDeployment(ctx, repo, current.digest);
    const plan = await planDeploymentEtcMerge(ctx, current.digest, cur, next);
    if (plan.conflicts.length > 0) throw new EtcMergeConflictError(plan.conflicts);

    // 5. stage
    let replacedStaged: string | null = null;
    if (stagedId !== undefined || view.marker !== undefined || view.staged.entries.length > 0) {
      replacedStaged = stagedId ?? view.marker?.deplId ?? view.staged.entries[0]?.digest ?? null;
      await removeStagedMarker(ctx);
      await removeStagedEntries(ctx);
    }
    // a state directory of this id without a live entry is a leftover of an interrupted run
    await fsp.rm(stateDir(ctx, digest), { recursive: true, force: true });
    const curKargs = await imageKargs(cur);
    const boot = await prepareBootFiles({
      tree: next.tree, read: next.read, digest, algorithm: repo.algorithm, erofsFormat: repo.erofsFormat, verity, extraKargs: [],
      typeOneArgs: (newKargs) => upgradeKargs(entryOptions(current.entry), curKargs, newKargs, digest, verity === 'none'),
    });
    await writeDeploymentState(ctx.sysroot, digest, next.tree, next.read, { imageReference: ref, bootType: boot.bootType, bootDigest: boot.bootDigest, manifestDigest: pulled.manifestDigest, extra: [] });

    const bootFiles = await writeBootFiles(ctx, view.live.entries, boot.espFiles, boot.entry, boot.bootType, boot.bootDigest);
    const primary = { fileName: boot.entryPath.slice(boot.entryPath.lastIndexOf('/') + 1), entry: boot.entry };
    const secondary = rekey(current, entryOsId(current), false);
    await writeEntriesDir(ctx, 'entries.staged', [primary, secondary], view.live.foreign);
    await syncfsPaths(ctx.sysroot, ctx.bootDir);
    await writeStagedMarker(ctx, { deplId: digest, finalizationLocked: opts.downloadOnly ?? false });
    staged = {
      kind: 'staged', reference: ref, deployment: digest, manifestDigest: pulled.manifestDigest, bootType: boot.bootType, downloadOnly: opts.downloadOnly ?? false,
      replacedStaged, layersImported: pulled.layersImported, layersSkipped: pulled.layersSkipped, layerBytesImported: [...layerBytes.values()].reduce((a, b) => a + b, 0),
      bootFiles, entries: [`${STAGED_ENTRIES_DIR}/${primary.fileName}`, `${STAGED_ENTRIES_DIR}/${secondary.fileName}`],
      message: `Staged deployment ${digest} (${ref}, ${pulled.manifestDigest})${opts.downloadOnly ? ', download-only: it is not finalized until upgrade --from-downloaded' : '; it becomes the default at the next shutdown (composefs-finalize-staged)'}.`,
    };
  } finally {
    await repo.close();
  }
  if (!opts.noGc) staged.gc = await collectGarbageLocked(ctx);
  return staged;
}

/**
 * Writes the kernel + initrd or UKI of the new deployment to the ESP (each file atomically). A Type 1
 * kernel directory of a live deployment with the same boot digest (kernel ‖ initrd) is reused: the new
 * entry points at it and nothing is written.
 */
async function writeBootFiles(ctx: DeployContext, live: EntryFile[], espFiles: EspFile[], entry: { linux?: string; initrd: string[] }, bootType: 'bls' | 'uki', bootDigest: string): Promise<string[]> {
  if (bootType === 'bls') {
    for (const e of live) {
      if (e.kind !== 'bls' || e.entry.linux === undefined) continue;
      const o = await readDeploymentOrigin(ctx, e.digest).catch(() => undefined);
      if (o?.bootDigest !== bootDigest) continue;
      const files = [e.entry.linux, ...e.entry.initrd];
      let ok = true;
      for (const f of files) if (!(await fsp.stat(path.join(ctx.bootDir, f.replace(/^\/+/, ''))).catch(() => undefined))?.isFile()) ok = false;
      if (!ok) continue;
      entry.linux = e.entry.linux;
      entry.initrd = [...e.entry.initrd];
      return [];
    }
  }
  const written: string[] = [];
  const dirs = new Set<string>();
  for (const f of espFiles.filter((x) => x.path.startsWith('EFI/Linux/'))) {
    const target = path.join(ctx.bootDir, f.path);
    await fsp.mkdir(path.dirname(target), { recursive: true });
    await writeFileAtomic(target, f.data, { mode: 0o644, syncDir: false });
    dirs.add(path.dirname(target));
    written.push(f.path);
  }
  for (const d of dirs) {
    await fsyncDir(d);
    await fsyncDir(path.dirname(d));
  }
  return written;
}
