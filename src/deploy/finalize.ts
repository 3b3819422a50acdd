/**
 * `bootcfs composefs-finalize-staged` (bootc-composefs.md §1.7), run by bootcfs-finalize-staged.service
 * at shutdown:
 *
 *  1. nothing staged (no marker) → nothing to do; a download-only deployment (`finalization_locked`) is
 *     left alone;
 *  2. a marker naming the live default entry's deployment: an earlier finalize swapped the entries and was
 *     stopped before it cleaned up → the leftovers go (idempotent);
 *  3. the staged entries must boot the marker's deployment first, and that deployment must be complete
 *     (origin, etc/, every file its entry names on the ESP); otherwise the old default stays;
 *  4. the three-way /etc merge (the current deployment's image /etc, its live /etc, the new image's
 *     /etc) into the new deployment's etc/ (etc-merge.ts: written aside, then swapped in); on a conflict
 *     the old default stays and the conflicts are reported;
 *  5. syncfs on the root and the ESP, then `loader/entries.staged` ⇄ `loader/entries`
 *     (renameat2 RENAME_EXCHANGE: the commit point), the old set removed, the marker removed;
 *  6. garbage collection (the old rollback's boot files, state, tags and objects).
 */
import { promises as fsp } from 'node:fs';
import { syncfsPaths } from '../sys/libc.js';
import { applyEtcMerge, EtcMergeConflictError } from './etc-merge.js';
import {
  DeployError, deploymentComplete, imageOfDeployment, openSysrootRepository, planDeploymentEtcMerge, readDeploymentView, removeStagedEntries,
  removeStagedMarker, stateDir, swapStagedEntries, withDeployLock, type DeployContext,
} from './deployments.js';
import { collectGarbageLocked, type DeployGcResult } from './gc.js';
import * as path from 'node:path';

export type FinalizeResult =
  | { kind: 'nothing-staged'; message: string }
  | { kind: 'download-only'; deployment: string; message: string }
  | { kind: 'finalized'; deployment: string; previous: string | null; etc: { fromCurrent: number; fromNext: number } | null; gc?: DeployGcResult; message: string };

export interface FinalizeOptions {
  noGc?: boolean;
  /** Called once the staged deployment is known to be complete, before /etc is merged and the entries swapped. */
  onBegin?: (deployment: string, previous: string | null) => void;
}

export async function finalizeStaged(ctx: DeployContext, opts: FinalizeOptions = {}): Promise<FinalizeResult> {
  return withDeployLock(ctx, () => finalizeLocked(ctx, opts));
}

const syncRoots = (ctx: DeployContext): Promise<void> => syncfsPaths(ctx.sysroot, ctx.bootDir);

async function finalizeLocked(ctx: DeployContext, opts: FinalizeOptions): Promise<FinalizeResult> {
  const view = await readDeploymentView(ctx);
  const marker = view.marker;
  if (marker === undefined) return { kind: 'nothing-staged', message: 'No staged deployment.' };
  const id = marker.deplId;
  if (marker.finalizationLocked) return { kind: 'download-only', deployment: id, message: `Staged deployment ${id} is download-only: not finalized (upgrade --from-downloaded unlocks it).` };

  let result: Extract<FinalizeResult, { kind: 'finalized' }>;
  if (view.live.entries[0]?.digest === id && view.staged.entries[0]?.digest !== id) {
    // 2. swapped earlier; only the cleanup was missing
    await removeStagedEntries(ctx);
    await removeStagedMarker(ctx);
    result = { kind: 'finalized', deployment: id, previous: null, etc: null, message: `Staged deployment ${id} was already the default; cleaned up.` };
  } else {
    // 3. the staged set
    const primary = view.staged.entries[0];
    if (primary === undefined || primary.digest !== id) {
      throw new DeployError(`the staged entries (${view.staged.entries.map((e) => e.fileName).join(', ') || 'none'}) do not boot the staged deployment ${id}: not finalized, the current default stays`);
    }
    const incomplete = await deploymentComplete(ctx, id, primary);
    if (incomplete !== undefined) throw new DeployError(`the staged deployment is incomplete (${incomplete}): not finalized, the current default stays`);
    const from = view.current;
    opts.onBegin?.(id, from?.digest ?? null);
    let etc: { fromCurrent: number; fromNext: number } | null = null;
    if (from !== undefined && from.digest !== id) {
      // 4. /etc
      const { repo } = await openSysrootRepository(ctx, { readOnly: true });
      try {
        const next = await imageOfDeployment(ctx, repo, id);
        const plan = await planDeploymentEtcMerge(ctx, from.digest, await imageOfDeployment(ctx, repo, from.digest), next);
        if (plan.conflicts.length > 0) {
          const e = new EtcMergeConflictError(plan.conflicts);
          throw new DeployError(`${e.message}\nnot finalized: ${from.digest} stays the default`);
        }
        await applyEtcMerge(plan, path.join(stateDir(ctx, id), 'etc'));
        etc = { ...plan.counts };
      } finally {
        await repo.close();
      }
    }
    await fsp.rm(path.join(stateDir(ctx, id), 'etc', '.updated'), { force: true });
    // 5. the commit
    await syncRoots(ctx);
    await swapStagedEntries(ctx);
    await removeStagedMarker(ctx);
    result = {
      kind: 'finalized', deployment: id, previous: from?.digest ?? null, etc,
      message: `Finalized staged deployment ${id}: it is the default boot entry${from ? `, ${from.digest} the rollback` : ''}.`,
    };
  }
  if (!opts.noGc) result.gc = await collectGarbageLocked(ctx);
  return result;
}
