/**
 * Repository integrity check (composefs-rs `fsck`, composefs-format.md §4):
 *
 * - meta.json still parses and matches what the repository was opened with;
 * - every object under `objects/xx/` is a regular file whose fs-verity digest equals its name (secure mode:
 *   the kernel's measurement, which must exist; insecure: recomputed in userspace). With `repair`, damaged
 *   objects are deleted — so the next pull fetches them again — and the checks below then report what is
 *   missing because of it;
 * - every `images/<hex>` / `streams/<name>` is a symlink `../objects/xx/…` to an existing object (and an
 *   image's name equals its object), images parse as composefs EROFS and every object they reference
 *   exists, streams parse as splitstreams and every object and stream they reference exists;
 * - every ref under `images/refs/`, `streams/refs/` resolves to an existing image / stream.
 *
 * Stale temporary files are counted (gc removes them), not treated as damage. `ok` is false on any damage.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fsverityDigestFile, measureVerity, VerityNotEnabledError } from '../fsverity/index.js';
import { listObjects } from '../composefs/info.js';
import { readSplitStream } from '../splitstream/reader.js';
import type { Repository } from './repository.js';
import { META_FILE, OBJECT_TEMP_PREFIX } from './repository.js';
import { serializeRepoMeta, parseRepoMeta } from './meta.js';
import { SYMLINK_TEMP_PREFIX } from './symlinks.js';

export interface FsckOptions {
  /** Delete damaged objects. */
  repair?: boolean;
}

export interface FsckResult {
  ok: boolean;
  objectsChecked: number;
  /** Objects whose content does not match their name (or that are not regular files). */
  damagedObjects: { object: string; reason: string }[];
  /** Damaged objects deleted by repair. */
  removedObjects: string[];
  /** Objects referenced by an image or stream but absent. */
  missingObjects: { object: string; referencedBy: string }[];
  /** Images / streams that are not valid symlinks, point at nothing, or do not parse. */
  brokenImages: { name: string; reason: string }[];
  brokenStreams: { name: string; reason: string }[];
  /** Refs (repo-relative) whose target image or stream does not exist. */
  danglingRefs: string[];
  /** Files in objects/ that are neither objects nor temporary files. */
  unexpectedFiles: string[];
  tempFiles: number;
  metaProblem: string | undefined;
}

function code(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

async function readdirOrEmpty(p: string): Promise<string[]> {
  try {
    return (await fsp.readdir(p)).sort();
  } catch (e) {
    if (code(e) === 'ENOENT') return [];
    throw e;
  }
}

export async function runFsck(repo: Repository, opts: FsckOptions): Promise<FsckResult> {
  const r: FsckResult = {
    ok: true,
    objectsChecked: 0,
    damagedObjects: [],
    removedObjects: [],
    missingObjects: [],
    brokenImages: [],
    brokenStreams: [],
    danglingRefs: [],
    unexpectedFiles: [],
    tempFiles: 0,
    metaProblem: undefined,
  };
  const hexLen = repo.digestSize * 2;

  try {
    const bytes = await fsp.readFile(path.join(repo.path, META_FILE));
    if (!serializeRepoMeta(parseRepoMeta(bytes)).equals(serializeRepoMeta(repo.meta))) r.metaProblem = 'meta.json changed since the repository was opened';
  } catch (e) {
    r.metaProblem = `meta.json: ${(e as Error).message}`;
  }

  // Objects.
  const objectsDir = path.join(repo.path, 'objects');
  for (const sub of await readdirOrEmpty(objectsDir)) {
    if (sub.startsWith(OBJECT_TEMP_PREFIX)) {
      r.tempFiles++;
      continue;
    }
    const subPath = path.join(objectsDir, sub);
    if (!/^[0-9a-f]{2}$/.test(sub)) {
      r.unexpectedFiles.push(`objects/${sub}`);
      continue;
    }
    for (const ent of await readdirOrEmpty(subPath)) {
      if (ent.startsWith(OBJECT_TEMP_PREFIX)) {
        r.tempFiles++;
        continue;
      }
      const hex = sub + ent;
      if (hex.length !== hexLen || !/^[0-9a-f]+$/.test(hex)) {
        r.unexpectedFiles.push(`objects/${sub}/${ent}`);
        continue;
      }
      r.objectsChecked++;
      const reason = await checkObject(repo, path.join(subPath, ent), hex);
      if (reason === undefined) continue;
      r.damagedObjects.push({ object: hex, reason });
      if (opts.repair) {
        await fsp.rm(path.join(subPath, ent), { force: true, recursive: true });
        r.removedObjects.push(hex);
      }
    }
  }

  const has = (hex: string) => repo.hasObject(hex);

  // Images.
  const images = new Set<string>();
  for (const name of await repo.listLinks('images')) {
    const d = await repo.linkDigest(`images/${name}`);
    if (!d) {
      r.brokenImages.push({ name, reason: 'not a symlink to ../objects/xx/…' });
      continue;
    }
    const hex = d.toString('hex');
    if (hex !== name) r.brokenImages.push({ name, reason: `points at object ${hex}, not at its own id` });
    if (!(await has(hex))) {
      r.brokenImages.push({ name, reason: `its object ${hex} is missing` });
      continue;
    }
    images.add(name);
    let objs: string[];
    try {
      objs = listObjects(await fsp.readFile(repo.objectPath(hex)));
    } catch (e) {
      r.brokenImages.push({ name, reason: `not a readable composefs image: ${(e as Error).message}` });
      continue;
    }
    for (const o of objs) {
      const h = o.replace(/^\/+/, '').replace('/', '');
      if (h.length !== hexLen || !/^[0-9a-f]+$/.test(h)) {
        r.brokenImages.push({ name, reason: `references '${o}', which is not an object path` });
      } else if (!(await has(h))) r.missingObjects.push({ object: h, referencedBy: `images/${name}` });
    }
  }

  // Streams.
  const streams = new Set<string>();
  for (const name of await repo.listLinks('streams')) {
    const d = await repo.linkDigest(`streams/${name}`);
    if (!d) {
      r.brokenStreams.push({ name, reason: 'not a symlink to ../objects/xx/…' });
      continue;
    }
    const hex = d.toString('hex');
    if (!(await has(hex))) {
      r.brokenStreams.push({ name, reason: `its object ${hex} is missing` });
      continue;
    }
    streams.add(name);
    let ss;
    try {
      ss = readSplitStream(await fsp.readFile(repo.objectPath(hex)), repo.algorithm);
    } catch (e) {
      r.brokenStreams.push({ name, reason: `not a valid splitstream: ${(e as Error).message}` });
      continue;
    }
    for (const o of [...ss.objectRefs, ...ss.streamRefs]) {
      const h = o.toString('hex');
      if (!(await has(h))) r.missingObjects.push({ object: h, referencedBy: `streams/${name}` });
    }
  }

  // Refs.
  for (const [ref, target] of await repo.imageRefs()) if (!images.has(target)) r.danglingRefs.push(`images/refs/${ref}`);
  for (const [ref, target] of await repo.streamRefs()) if (!streams.has(target)) r.danglingRefs.push(`streams/refs/${ref}`);
  for (const dir of ['images', 'streams']) {
    for (const ent of await readdirOrEmpty(path.join(repo.path, dir))) if (ent.startsWith(SYMLINK_TEMP_PREFIX)) r.tempFiles++;
  }

  r.ok =
    r.metaProblem === undefined &&
    r.damagedObjects.length === 0 &&
    r.missingObjects.length === 0 &&
    r.brokenImages.length === 0 &&
    r.brokenStreams.length === 0 &&
    r.danglingRefs.length === 0;
  return r;
}

/** undefined if the object is sound, else why not. */
async function checkObject(repo: Repository, file: string, hex: string): Promise<string | undefined> {
  let st;
  try {
    st = await fsp.lstat(file);
  } catch (e) {
    return `cannot stat: ${(e as Error).message}`;
  }
  if (!st.isFile()) return 'not a regular file';
  try {
    if (!repo.insecure) {
      const m = measureVerity(file);
      return m.digest.toString('hex') === hex ? undefined : `fs-verity digest is ${m.digest.toString('hex')}`;
    }
    const d = await fsverityDigestFile(file, repo.algorithm, { parallel: false });
    return d.toString('hex') === hex ? undefined : `content digest is ${d.toString('hex')}`;
  } catch (e) {
    if (e instanceof VerityNotEnabledError) return 'fs-verity is not enabled on it';
    return `cannot be read: ${(e as Error).message}`;
  }
}

/** Human-readable report. */
export function formatFsckResult(r: FsckResult): string {
  const lines: string[] = [];
  if (r.metaProblem) lines.push(`meta.json: ${r.metaProblem}`);
  for (const d of r.damagedObjects) lines.push(`damaged object ${d.object}: ${d.reason}${r.removedObjects.includes(d.object) ? ' (removed)' : ''}`);
  for (const m of r.missingObjects) lines.push(`missing object ${m.object} (referenced by ${m.referencedBy})`);
  for (const b of r.brokenImages) lines.push(`broken image ${b.name}: ${b.reason}`);
  for (const b of r.brokenStreams) lines.push(`broken stream ${b.name}: ${b.reason}`);
  for (const d of r.danglingRefs) lines.push(`dangling ref ${d}`);
  for (const u of r.unexpectedFiles) lines.push(`unexpected file ${u}`);
  lines.push(`${r.objectsChecked} objects checked, ${r.tempFiles} temporary files; ${r.ok ? 'no problems found' : 'repository is damaged'}`);
  return lines.join('\n') + '\n';
}
