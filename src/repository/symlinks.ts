/**
 * Repository symlinks as composefs-rs writes them (composefs-format.md §4): relative targets computed by
 * dropping the components the link's directory and the target share and climbing one `..` per remaining
 * directory component (`images/<hex>` → `../objects/xx/rest`, `streams/refs/oci/tag` → `../../<name>`),
 * replaced atomically (symlink; if the name exists with another target: temporary `.symlink-<random>` +
 * rename over it).
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { BootcfsError } from '../errors.js';

/** Prefix of temporary symlink names (gc removes stale ones). */
export const SYMLINK_TEMP_PREFIX = '.symlink-';

/** Relative target for a link at repo-relative `link` pointing to repo-relative `target`. */
export function relativeLinkTarget(link: string, target: string): string {
  const from = path.posix.dirname(link).split('/').filter((c) => c !== '' && c !== '.');
  const to = target.split('/').filter((c) => c !== '');
  let i = 0;
  while (i < from.length && i < to.length - 1 && from[i] === to[i]) i++;
  return [...from.slice(i).map(() => '..'), ...to.slice(i)].join('/');
}

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

/**
 * Make `linkPath` a symlink to `target`, atomically. Returns true if the link changed (the caller then
 * makes the directory durable).
 */
export async function replaceSymlink(target: string, linkPath: string): Promise<boolean> {
  try {
    await fsp.symlink(target, linkPath);
    return true;
  } catch (e) {
    if (errnoCode(e) !== 'EEXIST') throw e;
  }
  try {
    if ((await fsp.readlink(linkPath)) === target) return false;
  } catch (e) {
    // EINVAL: a non-symlink is in the way; rename would replace a file but not a directory.
    if (errnoCode(e) !== 'EINVAL') throw e;
    const st = await fsp.lstat(linkPath);
    if (st.isDirectory()) throw new BootcfsError('EINVAL', `cannot create symlink '${linkPath}': a directory is in the way`);
  }
  const tmp = path.join(path.dirname(linkPath), `${SYMLINK_TEMP_PREFIX}${randomBytes(9).toString('base64url')}`);
  await fsp.symlink(target, tmp);
  try {
    await fsp.rename(tmp, linkPath);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  return true;
}
