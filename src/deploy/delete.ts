/**
 * `bootcfs delete-deployment ID` (bootc-composefs.md §1.10): removes a deployment's boot entry, then
 * garbage collection removes everything else of it (state, boot files, tag, objects).
 *
 * - The booted deployment cannot be deleted.
 * - ID may be a unique prefix (at least 8 hex digits) of a deployment id.
 * - The staged deployment: its staged entries and marker go.
 * - A live entry: `loader/entries` is rewritten without it (exchanged atomically); the remaining entries
 *   are re-keyed so that the first is the primary. Deleting the default entry's deployment makes the next
 *   one the default; the last entry cannot be deleted (nothing would boot). A deployment the staged
 *   entries also boot (offline: the staged set's rollback) cannot be deleted while it is staged.
 * - A state directory without entries (an interrupted deployment) is collected by gc directly.
 */
import {
  DeployError, entryOsId, listStateDirs, readDeploymentView, rekey, removeStagedEntries, removeStagedMarker, withDeployLock, writeEntriesDir, type DeployContext,
} from './deployments.js';
import { collectGarbageLocked, type DeployGcResult } from './gc.js';

export interface DeleteResult {
  deployment: string;
  removedEntries: string[];
  newDefault: string | null;
  gc: DeployGcResult;
  messages: string[];
}

export async function deleteDeployment(ctx: DeployContext, idOrPrefix: string): Promise<DeleteResult> {
  if (!/^[0-9a-f]{8,128}$/.test(idOrPrefix)) throw new DeployError(`'${idOrPrefix}' is not a deployment id (8 to 128 lowercase hex digits)`);
  return withDeployLock(ctx, async () => {
    const view = await readDeploymentView(ctx);
    const known = new Set([...view.live.entries, ...view.staged.entries].map((e) => e.digest));
    if (view.marker) known.add(view.marker.deplId);
    for (const n of await listStateDirs(ctx)) known.add(n);
    const matches = [...known].filter((k) => k.startsWith(idOrPrefix));
    if (matches.length === 0) throw new DeployError(`no deployment ${idOrPrefix}`);
    if (matches.length > 1) throw new DeployError(`'${idOrPrefix}' names ${matches.length} deployments: give more digits`);
    const id = matches[0]!;
    if (view.booted?.digest === id) throw new DeployError(`cannot delete the booted deployment ${id}`);
    const messages: string[] = [];
    const removedEntries: string[] = [];
    let newDefault: string | null = null;

    const stagedPrimary = view.staged.entries[0]?.digest;
    if (view.marker?.deplId === id || stagedPrimary === id) {
      for (const e of view.staged.entries) removedEntries.push(`loader/entries.staged/${e.fileName}`);
      await removeStagedMarker(ctx);
      await removeStagedEntries(ctx);
      messages.push(`Removed the staged deployment ${id}.`);
    } else if (view.staged.entries.some((e) => e.digest === id)) {
      throw new DeployError(`deployment ${id} is the rollback of the staged deployment ${stagedPrimary}: delete that one (or roll back) first`);
    }
    const live = view.live.entries;
    if (live.some((e) => e.digest === id)) {
      const remaining = live.filter((e) => e.digest !== id);
      if (remaining.length === 0) throw new DeployError(`deployment ${id} has the only boot entry: deleting it would leave nothing to boot`);
      const files = remaining.map((e, i) => (i < 2 ? rekey(e, entryOsId(e), i === 0) : { fileName: e.fileName, entry: e.entry }));
      await writeEntriesDir(ctx, 'entries', files, view.live.foreign);
      for (const e of live.filter((x) => x.digest === id)) removedEntries.push(`loader/entries/${e.fileName}`);
      newDefault = remaining[0]!.digest;
      if (live[0]!.digest === id) messages.push(`Next boot: ${newDefault}`);
    }
    const gc = await collectGarbageLocked(ctx);
    messages.push(`Deleted deployment ${id}.`);
    return { deployment: id, removedEntries, newDefault, gc, messages };
  });
}
