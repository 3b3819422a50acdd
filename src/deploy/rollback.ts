/**
 * `bootcfs rollback` (bootc-composefs.md §1.8): the two live entries swap places — the rollback
 * deployment becomes the primary entry (`-1.conf`, sort-key `-0`) and the current one the secondary —
 * written as a new `loader/entries` directory exchanged atomically with the old one. If the rollback
 * was already queued (the default entry is not the booted deployment), the same swap makes the booted
 * deployment the default again ("Reverting queued rollback state"). A staged deployment is discarded
 * (its entries and marker; gc removes its state). No /etc merge: each deployment keeps its own etc/.
 *
 * Offline (nothing booted) the default and the second entry swap.
 */
import {
  DeployError, entryOsId, readDeploymentOrigin, readDeploymentView, rekey, removeStagedEntries, removeStagedMarker, withDeployLock, writeEntriesDir,
  type DeployContext, type EntryFile,
} from './deployments.js';

export interface RollbackResult {
  /** The deployment that boots next. */
  nextDefault: string;
  /** The other one (the new rollback). */
  nextRollback: string;
  /** The swap undid a queued rollback: the booted deployment is the default again. */
  reverted: boolean;
  discardedStaged: string | null;
  /** What to tell the user, one line each. */
  messages: string[];
}

async function describe(ctx: DeployContext, e: EntryFile): Promise<string> {
  const o = await readDeploymentOrigin(ctx, e.digest).catch(() => undefined);
  return o?.imageReference !== undefined ? `${e.digest} (${o.imageReference})` : e.digest;
}

export async function rollback(ctx: DeployContext): Promise<RollbackResult> {
  return withDeployLock(ctx, async () => {
    const view = await readDeploymentView(ctx);
    const live = view.live.entries;
    const booted = view.booted;
    const messages: string[] = [];
    // the pair that swaps: the booted (offline: default) deployment and the first other entry
    const current = view.current;
    if (current === undefined) throw new DeployError('no current deployment among the boot entries: cannot roll back');
    const other = live.find((e) => e.digest !== current.digest);
    if (other === undefined) throw new DeployError('No rollback deployment: there is only one deployment');
    const defaultEntry = live[0]!;
    const reverted = booted !== undefined && defaultEntry.digest !== booted.digest;
    const [first, second] = defaultEntry.digest === current.digest ? [other, current] : [current, other];

    let discardedStaged: string | null = null;
    if (view.marker !== undefined || view.staged.entries.length > 0) {
      discardedStaged = view.marker?.deplId ?? view.staged.entries[0]!.digest;
      await removeStagedMarker(ctx);
      await removeStagedEntries(ctx);
      messages.push(`Discarding the staged deployment ${discardedStaged}.`);
    }
    if (reverted) messages.push('notice: Reverting queued rollback state');
    const rest = live.filter((e) => e !== first && e !== second).map((e) => ({ fileName: e.fileName, entry: e.entry }));
    await writeEntriesDir(ctx, 'entries', [rekey(first, entryOsId(first), true), rekey(second, entryOsId(second), false), ...rest], view.live.foreign);
    const who = await describe(ctx, first);
    if (booted === undefined) messages.push(`Next boot: ${who}`);
    else messages.push(first.digest === booted.digest ? `Next boot: current deployment ${who}` : `Next boot: rollback deployment ${who}`);
    return { nextDefault: first.digest, nextRollback: second.digest, reverted, discardedStaged, messages };
  });
}
