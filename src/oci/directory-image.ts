/**
 * Directory → composefs image in a repository (`cfsctl create-image` / `compute-id`), with the rules the
 * OCI path uses so that a rootfs unpacked to disk and the same image pulled from a registry get the same
 * image id:
 *
 * 1. the directory is scanned with hardlinks preserved (same (dev, ino) → one inode), files of 1..64
 *    bytes inline, larger ones digested with the repository's fs-verity algorithm; when a repository is
 *    given, every external file is copied into its objects/ through `Repository.ensureObjectFromFile`
 *    (verity enabled and checked in secure mode) and the object's digest must equal the scanner's — a
 *    file modified during the scan is an error instead of an image pointing at other bytes;
 * 2. the xattr rule "bootcfs-xattrs-1" (src/oci/xattr-rule.ts) drops what it drops;
 * 3. unless `propagateUsrToRoot: false`, `transformForOci` (root takes /usr's metadata, /run emptied),
 *    which fails when the tree has no /usr (cfsctl's `--no-propagate-usr-to-root` skips it);
 * 3b. with `bootable`, the bootable transform (src/oci/bootable.ts: /boot and /sysroot emptied, SELinux
 *    labels from the tree's own policy, whose files are read from the directory on disk);
 * 4. the image is written in the repository's EROFS format by the OCI path's own writer selection
 *    (src/oci/image.ts writeImageBytes: 1 = C-compatible, 2 = composefs-rs native; 0 is refused) and its
 *    id is its fs-verity digest in the repository's algorithm.
 *
 * One set of scan rules for every directory path (cfs create-image/compute-id, container compute digest);
 * this module adds storing the objects in a repository while scanning.
 *
 * Objects are stored while scanning, before step 3, so the content of files under /run (which the
 * transform drops) is stored too and is garbage for the next gc — as in composefs-rs.
 *
 * Mtimes keep nanoseconds (the v1 writer stores them; the v2 format drops them by design).
 */
import { BootcfsError } from '../errors.js';
import { DigestStore } from '../composefs/digest-store.js';
import { fsverityDigest, type HashAlgorithm } from '../fsverity/index.js';
import { writeImageBytes, type ImageIdOptions } from './image.js';
import { INLINE_CONTENT_MAX } from './layers.js';
import { applyXattrRule } from './xattr-rule.js';
import { transformForOci } from './transform.js';
import { transformForBoot, type ContentReader } from './bootable.js';
import * as fsp from 'node:fs/promises';
import { readDirectoryTree } from '../tree/from-directory.js';
import type { FileSystem } from '../tree/model.js';
import type { ErofsFormatVersion } from '../repository/meta.js';
import type { Repository } from '../repository/repository.js';

export interface DirectoryImageOptions {
  /** Apply transformForOci (default true). */
  propagateUsrToRoot?: boolean;
  /** Files digested/copied at the same time (scanner default when absent). */
  concurrency?: number;
  /** Apply the bootable transform after the OCI transform. */
  bootable?: boolean;
}

/** Reads a tree file's content from the scanned directory (tree paths are latin1 byte strings). */
function directoryContentReader(dir: string): ContentReader {
  return (_inode, treePath) => fsp.readFile(Buffer.concat([Buffer.from(dir), Buffer.from(treePath, 'latin1')]));
}

export interface ImageFormatConfig {
  algorithm: HashAlgorithm;
  erofsFormat: ErofsFormatVersion;
}

/**
 * A DigestStore whose objects go into a repository: the scanner hands every external file to
 * `addFile`, which stores it with the repository's own object writer (temp file, verity, rename; made
 * durable by the repository before any image referencing it is published).
 */
class RepositoryObjectSink extends DigestStore {
  private readonly repo: Repository;

  constructor(repo: Repository) {
    super(repo.path, { algorithm: repo.algorithm, tryEnableVerity: false });
    this.repo = repo;
  }

  override async addFile(src: string | Buffer, digest: Uint8Array): Promise<boolean> {
    // fs.copyFile takes Buffer paths too (non-UTF-8 names); the repository's signature says string.
    const stored = await this.repo.ensureObjectFromFile(src as string);
    if (!stored.equals(digest)) {
      const name = Buffer.isBuffer(src) ? src.toString('utf8') : src;
      throw new BootcfsError(
        'EIO',
        `${name} changed while it was being read (digest ${Buffer.from(digest).toString('hex')} when scanned, ${stored.toString('hex')} when stored)`,
      );
    }
    return true;
  }
}

/** Scan `dir` into a tree with the repository-path rules (steps 1–3 above). */
export async function readDirectoryForRepository(
  dir: string,
  algorithm: HashAlgorithm,
  opts: DirectoryImageOptions & { repository?: Repository } = {},
): Promise<FileSystem> {
  if (opts.repository !== undefined && opts.repository.algorithm !== algorithm) {
    throw new BootcfsError('EINVAL', `algorithm ${algorithm} does not match the repository's ${opts.repository.algorithm}`);
  }
  const tree = await readDirectoryTree(dir, {
    hardlinks: 'preserve',
    inlineMax: INLINE_CONTENT_MAX,
    algorithm,
    digestStore: opts.repository ? new RepositoryObjectSink(opts.repository) : undefined,
    concurrency: opts.concurrency,
  });
  applyXattrRule(tree);
  if (opts.propagateUsrToRoot ?? true) transformForOci(tree);
  if (opts.bootable) await transformForBoot(tree, { readContent: directoryContentReader(dir) });
  return tree;
}

/** The image id `createImageFromDirectory` would produce, without writing anything anywhere. */
export async function computeDirectoryImageId(
  dir: string,
  cfg: ImageFormatConfig,
  opts: DirectoryImageOptions = {},
): Promise<{ id: Buffer; image: Buffer }> {
  const tree = await readDirectoryForRepository(dir, cfg.algorithm, opts);
  const image = writeImageBytes(tree, cfg.erofsFormat, cfg.algorithm);
  return { id: fsverityDigest(image, cfg.algorithm), image };
}

/**
 * Build the image of `dir` into `repo`: objects stored, image published as `images/<id>` and, with
 * `name`, `images/refs/<name>`. Returns the image id.
 */
export async function createImageFromDirectory(
  repo: Repository,
  dir: string,
  opts: DirectoryImageOptions & { name?: string } = {},
): Promise<Buffer> {
  const tree = await readDirectoryForRepository(dir, repo.algorithm, { ...opts, repository: repo });
  const image = writeImageBytes(tree, repo.erofsFormat, repo.algorithm);
  return repo.writeImage(image, opts.name);
}

/** fs-verity digest of the composefs image of an unpacked rootfs directory (same rules as computeImageId). */
export async function computeDirectoryId(dir: string, opts: ImageIdOptions = {}): Promise<Buffer> {
  const algorithm = opts.algorithm ?? 'sha512';
  return (await computeDirectoryImageId(dir, { algorithm, erofsFormat: opts.format ?? 1 }, { bootable: opts.bootable })).id;
}
