/**
 * Mount a composefs image of a repository (`cfsctl mount NAME MOUNTPOINT`), the way composefs is mounted
 * at boot: the EROFS image read-only through a loop device, and an overlayfs on MOUNTPOINT whose lower
 * layers are the image and — as a data-only lower layer (`::`) — the repository's objects/, with
 * `metacopy=on,redirect_dir=on` so the image's redirect/metacopy xattrs resolve to objects, and
 * `verity=require` for secure repositories (the kernel then checks each object's fs-verity digest against
 * the one recorded in the image). The overlay is read-only.
 *
 * Uses mount(8)/umount(8) from util-linux (root only). The EROFS mount lives on a private temporary
 * directory only until the overlay exists: it is then lazily detached — overlayfs holds its own private
 * clones of its layers — so the only visible mount is MOUNTPOINT, and unmounting it releases the image
 * and its loop device (autoclear).
 *
 * Before anything is mounted the image bytes are verified against the image id (kernel verity in secure
 * mode, userspace digest otherwise); a ref name is resolved to its image id first.
 */
import { execFile } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { BootcfsError } from '../errors.js';
import type { Repository } from './repository.js';

export interface MountImageOptions {
  /** Require fs-verity on every object (default: the repository is secure). */
  verity?: boolean;
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const why = stderr.trim() || err.message;
      reject(new BootcfsError('EIO', `${cmd} ${args.join(' ')}: ${why}`));
    });
  });
}

/** Mount option values are comma-separated and overlay splits lowerdir on ':'. */
function checkOptionPath(p: string, what: string): void {
  if (/[,:\\"\n]/.test(p)) throw new BootcfsError('EINVAL', `${what} ${p} contains ',', ':', '\\', '"' or a newline, which cannot be passed as an overlayfs option`);
}

/**
 * The image id (hex) an image name denotes: a hex id as is, `refs/NAME` resolved through its symlink.
 * The image must exist.
 */
export async function resolveImageId(repo: Repository, name: string): Promise<string> {
  const p = repo.imagePath(name);
  if (!name.startsWith('refs/')) {
    if ((await repo.linkDigest(`images/${name}`))?.toString('hex') !== name) throw new BootcfsError('ENOENT', `image '${name}' is not in the repository`);
    return name;
  }
  let target: string;
  try {
    target = await fsp.readlink(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new BootcfsError('ENOENT', `image '${name}' is not in the repository`);
    throw e;
  }
  const id = path.posix.basename(target);
  repo.objectRelPath(id); // validates that the ref points at an image id
  if ((await repo.linkDigest(`images/${id}`))?.toString('hex') !== id) throw new BootcfsError('ENOENT', `image ref '${name}' points at ${id}, which is not in the repository`);
  return id;
}

/** Mount image `name` (hex id or `refs/…`) of `repo` read-only at `mountpoint`. Returns the image id. */
export async function mountImage(repo: Repository, name: string, mountpoint: string, opts: MountImageOptions = {}): Promise<string> {
  if (process.getuid?.() !== 0) throw new BootcfsError('EINVAL', 'mounting a composefs image needs root');
  const id = await resolveImageId(repo, name);
  await repo.openImage(id); // verifies the bytes against the id
  const verity = opts.verity ?? !repo.insecure;
  const image = repo.objectPath(id);
  const objects = path.join(repo.path, 'objects');
  const target = path.resolve(mountpoint);
  const st = await fsp.stat(target).catch(() => undefined);
  if (!st?.isDirectory()) throw new BootcfsError('ENOENT', `mount point ${target} is not a directory`);
  const staging = await fsp.mkdtemp(path.join(os.tmpdir(), 'bootcfs-erofs-'));
  checkOptionPath(staging, 'temporary directory');
  checkOptionPath(objects, 'repository path');
  try {
    await run('mount', ['-t', 'erofs', '-o', 'loop,ro', image, staging]);
    try {
      const o = ['ro', `lowerdir=${staging}::${objects}`, 'metacopy=on', 'redirect_dir=on'];
      if (verity) o.push('verity=require');
      await run('mount', ['-t', 'overlay', 'overlay', '-o', o.join(','), target]);
    } finally {
      // Success: the overlay keeps its own clone of the EROFS mount; failure: nothing uses it.
      await run('umount', ['-l', staging]);
    }
  } finally {
    await fsp.rmdir(staging).catch(() => undefined);
  }
  return id;
}
