/**
 * Repository garbage collection (composefs-rs `gc_impl`, composefs-format.md §4):
 *
 * 1. image roots = every image reachable from `images/refs/**` plus `extraRoots` naming an image; a root
 *    image's object and every object its EROFS references (the redirect/metacopy payloads, read with our
 *    EROFS reader) are live;
 * 2. stream roots = `streams/refs/**` targets plus `extraRoots` naming a stream; for each: the stream's
 *    object, its object_refs and its stream_refs (named refs) are live, and every `streams/<name>` whose
 *    object is one of those stream_refs is walked too (each once) — this is how an EROFS named by an OCI
 *    config stream stays alive without an `images/refs` entry;
 * 3. symlinks that would dangle are pruned first — `images/refs/**`, `streams/refs/**`, then `images/*`,
 *    `streams/*` — and flushed (syncfs); then every object not live is deleted, and so is every stale
 *    temporary file (`.tmp-*`, `.symlink-*`: under the exclusive lock no writer is running, so they are
 *    leftovers of killed processes). A gc killed at any point leaves no name pointing at a deleted file.
 *
 * `dryRun` takes no exclusive lock, deletes nothing and reports what would go. A root that names nothing
 * is reported in `missingRoots` (not an error: callers pass roots for work that may not exist yet).
 * Any image or stream among the roots that cannot be parsed aborts the collection before anything is
 * deleted — its objects cannot be told apart from garbage.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { BootcfsError } from '../errors.js';
import { listObjects } from '../composefs/info.js';
import { readSplitStream } from '../splitstream/reader.js';
import type { Repository } from './repository.js';
import { OBJECT_TEMP_PREFIX } from './repository.js';
import { SYMLINK_TEMP_PREFIX } from './symlinks.js';

export interface GcOptions {
  /** Additional roots: image ids / stream names (or `refs/…` names) to keep. */
  extraRoots?: readonly string[];
  /** Report only; delete nothing. */
  dryRun?: boolean;
}

export interface GcResult {
  dryRun: boolean;
  liveObjects: number;
  objectsRemoved: number;
  bytesFreed: number;
  /** Stale temporary files (objects and symlinks) removed. */
  tempFilesRemoved: number;
  /** Repo-relative symlinks pruned (images/x, streams/x, images/refs/…, streams/refs/…). */
  prunedSymlinks: string[];
  missingRoots: string[];
}

function code(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

async function readdirOrEmpty(p: string): Promise<string[]> {
  try {
    return await fsp.readdir(p);
  } catch (e) {
    if (code(e) === 'ENOENT') return [];
    throw e;
  }
}

export async function runGc(repo: Repository, opts: GcOptions): Promise<GcResult> {
  const dryRun = opts.dryRun ?? false;
  if (!dryRun) await repo.lockExclusive();
  try {
    return await collect(repo, opts.extraRoots ?? [], dryRun);
  } finally {
    if (!dryRun) await repo.lockShared();
  }
}

async function collect(repo: Repository, extraRoots: readonly string[], dryRun: boolean): Promise<GcResult> {
  const live = new Set<string>();
  const hexLen = repo.digestSize * 2;
  const missingRoots: string[] = [];

  // Symlink tables: images/<hex> and streams/<name> → object hex (undefined: not a valid object link).
  const imageLinks = new Map<string, string | undefined>();
  for (const n of await repo.listLinks('images')) imageLinks.set(n, (await repo.linkDigest(`images/${n}`))?.toString('hex'));
  const streamLinks = new Map<string, string | undefined>();
  const streamsByObject = new Map<string, string[]>();
  for (const n of await repo.listLinks('streams')) {
    const hex = (await repo.linkDigest(`streams/${n}`))?.toString('hex');
    streamLinks.set(n, hex);
    if (hex) streamsByObject.set(hex, [...(streamsByObject.get(hex) ?? []), n]);
  }
  const imageRefs = await repo.imageRefs();
  const streamRefs = await repo.streamRefs();

  const rootImages = new Set<string>();
  const rootStreams = new Set<string>();
  for (const target of imageRefs.values()) rootImages.add(target);
  for (const target of streamRefs.values()) rootStreams.add(target);
  for (const r of extraRoots) {
    let found = false;
    if (r.startsWith('refs/')) {
      const img = imageRefs.get(r.slice(5));
      if (img !== undefined) (rootImages.add(img), (found = true));
      const st = streamRefs.get(r.slice(5));
      if (st !== undefined) (rootStreams.add(st), (found = true));
    } else {
      if (imageLinks.has(r)) (rootImages.add(r), (found = true));
      if (streamLinks.has(r)) (rootStreams.add(r), (found = true));
    }
    if (!found) missingRoots.push(r);
  }

  // 1. images
  for (const name of [...rootImages].sort()) {
    const hex = imageLinks.get(name);
    if (!hex || !(await repo.hasObject(hex))) continue; // dangling: pruned below
    live.add(hex);
    let objects: string[];
    try {
      objects = listObjects(await fsp.readFile(repo.objectPath(hex)));
    } catch (e) {
      throw new BootcfsError('EFORMAT', `gc aborted: image ${name} cannot be read (${(e as Error).message}); run fsck`);
    }
    for (const o of objects) {
      const h = o.replace(/^\/+/, '').replace('/', '');
      if (h.length === hexLen && /^[0-9a-f]+$/.test(h)) live.add(h);
    }
  }

  // 2. streams
  const queue = [...rootStreams].sort();
  const visited = new Set<string>();
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (visited.has(name)) continue;
    visited.add(name);
    const hex = streamLinks.get(name);
    if (!hex || !(await repo.hasObject(hex))) continue;
    live.add(hex);
    let ss;
    try {
      ss = readSplitStream(await fsp.readFile(repo.objectPath(hex)), repo.algorithm);
    } catch (e) {
      throw new BootcfsError('EFORMAT', `gc aborted: stream ${name} cannot be read (${(e as Error).message}); run fsck`);
    }
    for (const d of ss.objectRefs) live.add(d.toString('hex'));
    for (const d of ss.streamRefs) {
      const h = d.toString('hex');
      live.add(h);
      for (const n of streamsByObject.get(h) ?? []) if (!visited.has(n)) queue.push(n);
    }
  }

  // 3. Scan: which objects survive, which go, which temporary files are stale.
  let objectsRemoved = 0;
  let bytesFreed = 0;
  let tempFilesRemoved = 0;
  const objectsDir = path.join(repo.path, 'objects');
  const remove = async (p: string) => {
    if (!dryRun) await fsp.rm(p, { force: true });
  };
  const survivors = new Set<string>();
  const doomed: string[] = [];
  const temps: string[] = [];
  for (const sub of (await readdirOrEmpty(objectsDir)).sort()) {
    const subPath = path.join(objectsDir, sub);
    if (sub.startsWith(OBJECT_TEMP_PREFIX)) {
      temps.push(subPath);
      continue;
    }
    if (!/^[0-9a-f]{2}$/.test(sub)) continue;
    for (const ent of (await readdirOrEmpty(subPath)).sort()) {
      const p = path.join(subPath, ent);
      if (ent.startsWith(OBJECT_TEMP_PREFIX)) {
        temps.push(p);
        continue;
      }
      const hex = sub + ent;
      if (live.has(hex)) survivors.add(hex);
      else if (hex.length === hexLen && /^[0-9a-f]+$/.test(hex)) doomed.push(p); // anything else is not ours to judge
    }
  }

  // 4. Symlinks first — refs, then images/x and streams/x — and only then objects, so that a gc killed at
  // any point never leaves a name pointing at something it already deleted.
  const prunedSymlinks: string[] = [];
  const prune = async (rel: string) => {
    prunedSymlinks.push(rel);
    await remove(path.join(repo.path, rel));
  };
  const keptImages = new Set<string>();
  const keptStreams = new Set<string>();
  const prunedTop: string[] = [];
  for (const [table, dir, kept] of [
    [imageLinks, 'images', keptImages],
    [streamLinks, 'streams', keptStreams],
  ] as const) {
    for (const ent of await readdirOrEmpty(path.join(repo.path, dir))) {
      if (ent.startsWith(SYMLINK_TEMP_PREFIX)) temps.push(path.join(repo.path, dir, ent));
    }
    for (const [name, hex] of table) {
      const st = await fsp.lstat(path.join(repo.path, dir, name)).catch(() => undefined);
      if (!st?.isSymbolicLink()) continue; // only symlinks are ours to prune
      if (hex && survivors.has(hex)) kept.add(name);
      else prunedTop.push(`${dir}/${name}`);
    }
  }
  for (const [refs, dir, kept] of [
    [imageRefs, 'images', keptImages],
    [streamRefs, 'streams', keptStreams],
  ] as const) {
    for (const [ref, target] of refs) {
      if (!kept.has(target)) await prune(`${dir}/refs/${ref}`);
    }
    temps.push(...(await refTemps(path.join(repo.path, dir, 'refs'))));
  }
  for (const rel of prunedTop) await prune(rel);
  // The unlinks above must be durable before the objects they named disappear.
  if (!dryRun && prunedSymlinks.length > 0) await repo.flush();
  for (const p of doomed) {
    const st = await fsp.lstat(p).catch(() => undefined);
    if (!st) continue;
    objectsRemoved++;
    bytesFreed += st.size;
    await remove(p);
  }
  for (const p of temps) {
    await remove(p);
    tempFilesRemoved++;
  }
  if (!dryRun && (objectsRemoved > 0 || tempFilesRemoved > 0)) await repo.flush();
  return { dryRun, liveObjects: survivors.size, objectsRemoved, bytesFreed, tempFilesRemoved, prunedSymlinks, missingRoots };
}

async function refTemps(dir: string): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch (e) {
    if (code(e) === 'ENOENT') return out;
    throw e;
  }
  for (const ent of entries) {
    const p = path.join(dir, ent.name);
    if (ent.name.startsWith(SYMLINK_TEMP_PREFIX)) out.push(p);
    else if (ent.isDirectory()) out.push(...(await refTemps(p)));
  }
  return out;
}

/** Human-readable summary, as `cfsctl gc` prints it. */
export function formatGcResult(r: GcResult): string {
  const verb = r.dryRun ? 'would be removed' : 'removed';
  const lines = [`Objects: ${r.objectsRemoved} ${verb} (${r.bytesFreed} bytes)`];
  if (r.prunedSymlinks.length > 0) lines.push(`Pruned symlinks${r.dryRun ? ' (dry run)' : ''}: ${r.prunedSymlinks.join(', ')}`);
  if (r.tempFilesRemoved > 0) lines.push(`Temporary files: ${r.tempFilesRemoved} ${verb}`);
  if (r.missingRoots.length > 0) lines.push(`Roots not found: ${r.missingRoots.join(', ')}`);
  return lines.join('\n') + '\n';
}
