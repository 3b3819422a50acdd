/**
 * Writes a subtree of an image tree (a FileSystem built from layer streams) to a real directory, with
 * its owners, modes, mtimes, xattrs and hardlinks — how an install creates a deployment's `/etc` and the
 * initial `/var` from the image. Content comes from the tree (inline) or the repository (verified).
 * Needs root for ownership and `trusted.`/`security.` xattrs.
 */
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BootcfsError } from '../errors.js';
import type { ContentReader } from '../oci/bootable.js';
import { lsetxattr } from '../sys/libc.js';
import type { ByteString, Inode } from '../tree/model.js';

export interface MaterializeStats {
  files: number;
  directories: number;
  symlinks: number;
  hardlinks: number;
  special: number;
  bytes: number;
}

const bytePath = (s: ByteString): Buffer => Buffer.from(s, 'latin1');

/**
 * Creates `dest` (which must not exist) as a copy of directory inode `dir`. `read` returns the content of
 * a regular file inode. Directory metadata is applied after its children (so mtimes stick).
 */
export async function materializeTree(dir: Inode, dest: string, read: ContentReader): Promise<MaterializeStats> {
  if (!dir.isDir) throw new BootcfsError('EINVAL', `${dest}: source is not a directory`);
  const stats: MaterializeStats = { files: 0, directories: 0, symlinks: 0, hardlinks: 0, special: 0, bytes: 0 };
  const written = new Map<Inode, Buffer>();
  const destB = Buffer.from(dest);

  async function meta(p: Buffer, inode: Inode): Promise<void> {
    const ps = p.toString('latin1');
    if (inode.isSymlink) {
      await fsp.lchown(p, inode.uid, inode.gid);
    } else {
      await fsp.chown(p, inode.uid, inode.gid);
    }
    for (const [name, value] of inode.xattrs) lsetxattr(p, Buffer.from(name, 'latin1').toString('latin1'), value);
    // chown clears set-id bits: the mode goes after it
    if (!inode.isSymlink) await fsp.chmod(p, inode.mode & 0o7777);
    const t = inode.mtimeSec + inode.mtimeNsec / 1e9;
    await fsp.lutimes(p, t, t).catch((e: NodeJS.ErrnoException) => {
      throw new BootcfsError('EIO', `${ps}: cannot set the mtime (${e.message})`);
    });
  }

  async function writeNode(inode: Inode, p: Buffer, treePath: ByteString): Promise<void> {
    const prior = written.get(inode);
    if (prior !== undefined && !inode.isDir) {
      await fsp.link(prior, p);
      stats.hardlinks++;
      return;
    }
    if (inode.isDir) {
      await fsp.mkdir(p, { mode: 0o700 });
      for (const [name, child] of inode.sortedEntries()) {
        if (name.includes('/') || name === '.' || name === '..' || name === '') throw new BootcfsError('EFORMAT', `${treePath}: invalid entry name`);
        await writeNode(child, Buffer.concat([p, Buffer.from('/'), bytePath(name)]), `${treePath}/${name}`);
      }
      await meta(p, inode);
      stats.directories++;
      return;
    }
    if (inode.isReg) {
      const data = inode.size === 0 ? Buffer.alloc(0) : await read(inode, treePath);
      if (data.length !== inode.size) throw new BootcfsError('EFORMAT', `${treePath}: content has ${data.length} bytes, the image says ${inode.size}`);
      await fsp.writeFile(p, data, { flag: 'wx', mode: 0o600 });
      stats.files++;
      stats.bytes += data.length;
    } else if (inode.isSymlink) {
      await fsp.symlink(bytePath(inode.target ?? ''), p);
      stats.symlinks++;
    } else {
      // devices, fifos, sockets: Node has no mknod
      const type = inode.isChr ? 'c' : inode.isBlk ? 'b' : (inode.mode & 0o170000) === 0o010000 ? 'p' : undefined;
      if (type === undefined) throw new BootcfsError('ENOTSUP', `${treePath}: sockets cannot be created`);
      const args = [p.toString('latin1')].concat(type === 'p' ? ['p'] : [type, String(major(inode.rdev)), String(minor(inode.rdev))]);
      const r = spawnSync('mknod', args);
      if (r.status !== 0) throw new BootcfsError('EIO', `mknod ${treePath}: ${r.stderr?.toString().trim() || r.error?.message}`);
      stats.special++;
    }
    await meta(p, inode);
    written.set(inode, p);
  }

  await fsp.mkdir(path.dirname(dest), { recursive: true });
  await writeNode(dir, destB, '');
  return stats;
}

function major(dev: number): number {
  return ((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
}
function minor(dev: number): number {
  return (dev & 0xff) | ((dev >>> 12) & ~0xff);
}
