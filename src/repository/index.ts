/** The composefs repository layer: objects, images, splitstreams, refs, gc, fsck (see repository.ts). */
export { Repository, checkRefName, checkStreamName, META_FILE, OBJECT_TEMP_PREFIX, type RepositoryInitOptions, type RepositoryOpenOptions } from './repository.js';
export * from './meta.js';
export { relativeLinkTarget, replaceSymlink, SYMLINK_TEMP_PREFIX } from './symlinks.js';
export { formatGcResult, type GcOptions, type GcResult } from './gc.js';
export { formatFsckResult, type FsckOptions, type FsckResult } from './fsck.js';
