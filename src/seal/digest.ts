/**
 * `bootcfs container compute-composefs-digest`: the digest the installer and the booted system compute
 * for an image — after the OCI and bootable transforms, in the given algorithm and EROFS format — from an
 * image reference (pulled into a throwaway repository) or from the same image unpacked in a directory.
 * Both paths apply the same rules (hardlinks kept, files ≤ 64 bytes inline, xattr rule bootcfs-xattrs-1,
 * root from /usr, /run, /boot and /sysroot emptied, SELinux labels from the image's policy), so they agree.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BootcfsError } from '../errors.js';
import type { HashAlgorithm } from '../fsverity/index.js';
import type { ErofsFormatVersion } from '../repository/meta.js';
import type { RegistryOptions } from '../oci/registry.js';
import { readDirectoryForRepository } from '../oci/directory-image.js';
import { writeDumpfile } from '../dumpfile/index.js';
import type { FileSystem } from '../tree/model.js';
import { sealedDigest } from './build.js';
import { loadImageTree } from './image-tree.js';
import type { ContentReader } from '../oci/bootable.js';

export interface ComputeDigestOptions {
  algorithm?: HashAlgorithm;
  format?: ErofsFormatVersion;
  registry?: RegistryOptions;
  /** also return the dumpfile of the bootable tree */
  dumpfile?: boolean;
}

export interface ComputedDigest {
  digest: string;
  algorithm: HashAlgorithm;
  dumpfile?: Buffer;
}

async function finish(tree: FileSystem, algorithm: HashAlgorithm, format: ErofsFormatVersion, dump: boolean, read: ContentReader): Promise<ComputedDigest> {
  const digest = (await sealedDigest(tree, algorithm, format, read)).toString('hex');
  return { digest, algorithm, dumpfile: dump ? writeDumpfile(tree) : undefined };
}

export async function computeComposefsDigestOfImage(ref: string, opts: ComputeDigestOptions = {}): Promise<ComputedDigest> {
  const algorithm = opts.algorithm ?? 'sha512';
  const loaded = await loadImageTree(ref, { algorithm, registry: opts.registry });
  return finish(loaded.tree, algorithm, opts.format ?? 1, opts.dumpfile ?? false, loaded.captured.reader());
}

export async function computeComposefsDigestOfDirectory(rootfs: string, opts: ComputeDigestOptions = {}): Promise<ComputedDigest> {
  if (path.resolve(rootfs) === '/') throw new BootcfsError('EINVAL', 'refusing to compute the digest of / (give the unpacked image root)');
  const st = await fsp.stat(rootfs).catch(() => undefined);
  if (!st?.isDirectory()) throw new BootcfsError('ENOENT', `${rootfs} is not a directory`);
  const algorithm = opts.algorithm ?? 'sha512';
  const tree = await readDirectoryForRepository(rootfs, algorithm);
  const read: ContentReader = (_inode, p) => fsp.readFile(Buffer.concat([Buffer.from(rootfs), Buffer.from(p, 'latin1')]));
  return finish(tree, algorithm, opts.format ?? 1, opts.dumpfile ?? false, read);
}
