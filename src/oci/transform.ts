/**
 * The OCI root transform of composefs-rs (`FileSystem::transform_for_oci`, composefs-format.md §6):
 * layer tars often lack a root entry and runtimes ignore it anyway, so the root's metadata is made
 * deterministic by copying it from `/usr`:
 *
 * 1. root mode (permission bits), uid, gid, mtime (seconds and nanoseconds) and xattrs := `/usr`'s;
 *    `/usr` must exist and be a directory;
 * 2. if `/run` exists it must be a directory; it is emptied and its mtime set to `/usr`'s (its other
 *    metadata is kept).
 *
 * The same transform applies to trees from layers and trees scanned from a directory, so that both
 * paths produce the same digest. Mutates the tree in place and returns it.
 */
import { BootcfsError } from '../errors.js';
import type { FileSystem } from '../tree/model.js';

export class OciTransformError extends BootcfsError {
  constructor(message: string) {
    super('EFORMAT', message);
    this.name = 'OciTransformError';
  }
}

export function transformForOci(fs: FileSystem): FileSystem {
  const root = fs.root;
  const usr = root.entries?.get('usr');
  if (usr === undefined) throw new OciTransformError('the image has no /usr directory (needed for the root metadata)');
  if (!usr.isDir) throw new OciTransformError('/usr is not a directory');
  root.mode = (root.mode & ~0o7777) | (usr.mode & 0o7777);
  root.uid = usr.uid;
  root.gid = usr.gid;
  root.mtimeSec = usr.mtimeSec;
  root.mtimeNsec = usr.mtimeNsec;
  const usrXattrs = usr.xattrsIfAny();
  if (usrXattrs === undefined) root.clearXattrs();
  else root.xattrs = new Map([...usrXattrs].map(([k, v]) => [k, Buffer.from(v)]));

  const run = root.entries!.get('run');
  if (run !== undefined) {
    if (!run.isDir) throw new OciTransformError('/run is not a directory');
    run.entries!.clear();
    run.mtimeSec = usr.mtimeSec;
    run.mtimeNsec = usr.mtimeNsec;
  }
  return fs;
}
