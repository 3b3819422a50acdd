/**
 * `bootcfs internals fsck`: the repository (every object re-measured, every reference resolved:
 * src/repository/fsck.ts) plus the consistency of boot entries and deployment state:
 *
 * problems (exit 1): no live composefs entry; a live or staged entry whose deployment is incomplete (no
 * origin, no etc/, a file the entry names missing on the ESP) or whose composefs image is not in the
 * repository; a staged marker the staged entries do not boot first (or the other way round);
 * notes (informational, gc removes them): state directories no entry boots, boot files no entry names.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import type { FsckResult } from '../repository/index.js';
import { formatFsckResult } from '../repository/index.js';
import {
  deploymentComplete, listBootArtifacts, listStateDirs, openSysrootRepository, readDeploymentView, type DeployContext,
} from './deployments.js';

export interface DeploymentFsckResult {
  ok: boolean;
  problems: string[];
  notes: string[];
  repository: FsckResult;
}

export async function fsckDeployments(ctx: DeployContext): Promise<DeploymentFsckResult> {
  const problems: string[] = [];
  const notes: string[] = [];
  const view = await readDeploymentView(ctx);
  if (view.live.entries.length === 0) problems.push('loader/entries has no composefs boot entry: nothing boots');
  const { repo } = await openSysrootRepository(ctx, { readOnly: true });
  let repository: FsckResult;
  try {
    const images = new Set(await repo.listImages());
    for (const [where, list] of [['loader/entries', view.live.entries], ['loader/entries.staged', view.staged.entries]] as const) {
      for (const e of list) {
        const why = await deploymentComplete(ctx, e.digest, e);
        if (why !== undefined) problems.push(`${where}/${e.fileName}: ${why}`);
        if (!images.has(e.digest)) problems.push(`${where}/${e.fileName}: the composefs image ${e.digest} is not in the repository`);
      }
    }
    if (view.marker !== undefined && view.staged.entries[0]?.digest !== view.marker.deplId && view.live.entries[0]?.digest !== view.marker.deplId) {
      problems.push(`the staged marker names ${view.marker.deplId}, which the staged entries do not boot`);
    }
    if (view.marker === undefined && view.staged.entries.length > 0) notes.push('loader/entries.staged exists without a staged marker (an interrupted upgrade or an old download-only deployment): gc removes it');
    repository = await repo.fsck();
  } finally {
    await repo.close();
  }
  const referenced = new Set([...view.live.entries, ...view.staged.entries].map((e) => e.digest));
  for (const d of await listStateDirs(ctx)) if (!referenced.has(d)) notes.push(`state/deploy/${d}: no boot entry boots it (gc removes it)`);
  const artifacts = new Set([...view.live.entries, ...view.staged.entries].flatMap((e) => e.artifacts));
  for (const a of await listBootArtifacts(ctx)) if (!artifacts.has(a)) notes.push(`${a}: no boot entry names it (gc removes it)`);
  if (!existsSync(path.join(ctx.sysroot, 'state/os/default/var'))) problems.push('state/os/default/var does not exist');
  return { ok: problems.length === 0 && repository.ok, problems, notes, repository };
}

export function formatDeploymentFsck(r: DeploymentFsckResult): string {
  const lines = [...r.problems.map((p) => `problem: ${p}`), ...r.notes.map((n) => `note: ${n}`)];
  return `${lines.length ? `${lines.join('\n')}\n` : ''}${formatFsckResult(r.repository)}${r.ok ? 'deployments: no problems found\n' : 'deployments: damaged\n'}`;
}
