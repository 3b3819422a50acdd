/**
 * Reading files out of an image tree (a FileSystem built from layer streams): inline content directly,
 * external content from the repository (verified against its fs-verity name). Symlinks inside the tree
 * are followed relative to the tree root (never to the host), with a hop limit.
 */
import { BootcfsError } from '../errors.js';
import type { Repository } from '../repository/repository.js';
import type { ContentReader } from '../oci/bootable.js';
import { lookup, pathComponents, type ByteString, type FileSystem, type Inode } from '../tree/model.js';

const MAX_SYMLINK_HOPS = 40;

/** Resolves `path` (absolute, latin1 byte string) inside the tree, following symlinks in every component. */
export function resolveInTree(fs: FileSystem, path: ByteString): Inode | undefined {
  let hops = 0;
  const resolve = (comps: ByteString[]): Inode | undefined => {
    let dirStack: Inode[] = [fs.root];
    let pending = [...comps];
    while (pending.length > 0) {
      const name = pending.shift()!;
      const cur = dirStack[dirStack.length - 1]!;
      if (name === '.' || name === '') continue;
      if (name === '..') {
        if (dirStack.length > 1) dirStack.pop();
        continue;
      }
      const child = cur.entries?.get(name);
      if (child === undefined) return undefined;
      if (child.isSymlink) {
        if (++hops > MAX_SYMLINK_HOPS) throw new BootcfsError('EFORMAT', `too many symlinks resolving ${path}`);
        const target = child.target ?? '';
        if (target.startsWith('/')) dirStack = [fs.root];
        pending = [...target.split('/'), ...pending];
        continue;
      }
      if (pending.length > 0 && !child.isDir) return undefined;
      dirStack.push(child);
    }
    return dirStack[dirStack.length - 1];
  };
  return resolve(pathComponents(path));
}

/** The content of a regular file of the tree, or undefined when the path does not name one. */
export async function readTreeFile(read: ContentReader, fs: FileSystem, path: ByteString): Promise<Buffer | undefined> {
  const inode = resolveInTree(fs, path);
  if (inode === undefined || !inode.isReg) return undefined;
  return read(inode, path);
}

export async function inodeContent(repo: Repository, inode: Inode, path: ByteString): Promise<Buffer> {
  if (inode.content !== undefined) return inode.content;
  if (inode.size === 0) return Buffer.alloc(0);
  if (inode.digest === undefined) throw new BootcfsError('EINTERNAL', `${path}: external file without an object digest`);
  const data = await repo.readObject(inode.digest, { verify: true });
  if (data.length !== inode.size) throw new BootcfsError('EFORMAT', `${path}: object has ${data.length} bytes, the tree says ${inode.size}`);
  return data;
}

/** Entries of a directory (no symlink following for the directory itself beyond resolveInTree). */
export function listTreeDir(fs: FileSystem, path: ByteString): Array<[ByteString, Inode]> {
  const d = resolveInTree(fs, path);
  return d?.isDir ? d.sortedEntries() : [];
}

export { lookup };
