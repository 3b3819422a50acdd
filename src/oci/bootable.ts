/**
 * The bootable transform of composefs-rs (`BootOps::transform_for_boot`, composefs-format.md §6 "Boot
 * transform"), applied after the OCI transform (transform.ts) to make the image a bootable root:
 *
 * 1. `/boot` and `/sysroot` must exist and be directories (a container image without them, e.g. UBI,
 *    cannot be made bootable: BootTransformError). Both are emptied and their mtime (seconds and
 *    nanoseconds) set to `/usr`'s — the UKI in /boot embeds the image digest, so it cannot be part of the
 *    image; /sysroot is where the real root is mounted. Pinning the mtime keeps the digest independent of
 *    when the image was built.
 * 2. SELinux: if `/etc/selinux/config` has `SELINUXTYPE=<p>`, the policy files under
 *    `/etc/selinux/<p>/contexts/files/` (file_contexts mandatory; .local, .homedirs, .subs, .subs_dist
 *    optional) relabel every inode (selinux.ts). Without /etc/selinux, without the config file or without
 *    a SELINUXTYPE line, every `security.selinux` is removed. A named policy whose directory or
 *    file_contexts is missing is an error (as composefs-rs).
 *
 * Boot entries (§7) are discovered by the boot layer from the tree before this transform; this module
 * only changes the tree. Policy files larger than the inline threshold live in the object store: the
 * caller supplies `readContent` (repository object reader, or the file on disk for a directory scan).
 *
 * The xattr rule bootcfs-xattrs-1 drops `security.selinux` from both source paths, so after this
 * transform the labels are exactly the policy's.
 */
import { BootcfsError } from '../errors.js';
import { lookup, utf8, type ByteString, type FileSystem, type Inode } from '../tree/model.js';
import { SelinuxPolicy, selinuxRelabel, selinuxTypeOfConfig, stripSelinuxLabels, type SelinuxPolicyFiles } from './selinux.js';

export class BootTransformError extends BootcfsError {
  constructor(message: string) {
    super('EFORMAT', message);
    this.name = 'BootTransformError';
  }
}

/** Top-level directories a bootable image must have; emptied by the transform. */
export const EMPTIED_BOOT_DIRS = ['boot', 'sysroot'] as const;

/** Reads the content of an external regular file of the tree (`path` is its absolute byte-string path). */
export type ContentReader = (inode: Inode, path: ByteString) => Promise<Buffer>;

export interface BootTransformOptions {
  /** Reader for files whose content is not inline (needed when the policy files are > 64 bytes). */
  readContent?: ContentReader;
}

export interface BootTransformResult {
  /** 'relabelled' with the policy name, or 'stripped' (no policy configured). */
  selinux: 'relabelled' | 'stripped';
  policy?: string;
}

async function fileContent(fs: FileSystem, path: ByteString, readContent: ContentReader | undefined): Promise<Buffer | undefined> {
  const inode = lookup(fs.root, path);
  if (inode === undefined) return undefined;
  if (!inode.isReg) throw new BootTransformError(`${Buffer.from(path, 'latin1').toString('utf8')} is not a regular file`);
  if (inode.content !== undefined) return inode.content;
  if (inode.size === 0) return Buffer.alloc(0);
  if (readContent === undefined) throw new BootTransformError(`cannot read ${Buffer.from(path, 'latin1').toString('utf8')}: no content reader given`);
  const data = await readContent(inode, path);
  if (data.length !== inode.size) throw new BootTransformError(`${Buffer.from(path, 'latin1').toString('utf8')}: read ${data.length} bytes, the tree says ${inode.size}`);
  return data;
}

/**
 * The SELinux policy the image configures, or undefined when it configures none (no /etc/selinux, no
 * config file, no SELINUXTYPE line).
 */
export async function loadSelinuxPolicyFiles(
  fs: FileSystem,
  readContent?: ContentReader,
): Promise<{ name: string; files: SelinuxPolicyFiles } | undefined> {
  const etcSelinux = lookup(fs.root, '/etc/selinux');
  if (etcSelinux === undefined || !etcSelinux.isDir) return undefined;
  const config = await fileContent(fs, '/etc/selinux/config', readContent);
  if (config === undefined) return undefined;
  const name = selinuxTypeOfConfig(config);
  if (name === undefined) return undefined;
  if (name === '' || name.includes('/') || name === '.' || name === '..') throw new BootTransformError(`/etc/selinux/config: invalid SELINUXTYPE '${name}'`);
  const dir = `/etc/selinux/${utf8(name)}/contexts/files`;
  const d = lookup(fs.root, dir);
  if (d === undefined || !d.isDir) throw new BootTransformError(`SELinux policy '${name}' is configured but ${Buffer.from(dir, 'latin1').toString('utf8')} is not a directory`);
  const read = (n: string): Promise<Buffer | undefined> => fileContent(fs, `${dir}/${n}`, readContent);
  const fileContexts = await read('file_contexts');
  if (fileContexts === undefined) throw new BootTransformError(`SELinux policy '${name}' has no file_contexts`);
  return {
    name,
    files: {
      fileContexts,
      local: await read('file_contexts.local'),
      homedirs: await read('file_contexts.homedirs'),
      subs: await read('file_contexts.subs'),
      subsDist: await read('file_contexts.subs_dist'),
    },
  };
}

/** Applies the bootable transform (see the file comment) to a tree that went through transformForOci. Mutates. */
export async function transformForBoot(fs: FileSystem, opts: BootTransformOptions = {}): Promise<BootTransformResult> {
  const root = fs.root;
  const usr = root.entries?.get('usr');
  if (usr === undefined || !usr.isDir) throw new BootTransformError('the image has no /usr directory; it cannot be made bootable');
  const dirs = EMPTIED_BOOT_DIRS.map((n) => {
    const d = root.entries!.get(n);
    if (d === undefined) throw new BootTransformError(`the image has no /${n} directory; it cannot be made bootable`);
    if (!d.isDir) throw new BootTransformError(`/${n} is not a directory; the image cannot be made bootable`);
    return d;
  });
  // Load (and parse) the policy before changing anything, so a bad policy leaves the tree as it was.
  const loaded = await loadSelinuxPolicyFiles(fs, opts.readContent);
  const policy = loaded ? new SelinuxPolicy(loaded.files) : undefined;
  for (const d of dirs) {
    d.entries!.clear();
    d.mtimeSec = usr.mtimeSec;
    d.mtimeNsec = usr.mtimeNsec;
  }
  if (policy === undefined) {
    stripSelinuxLabels(fs);
    return { selinux: 'stripped' };
  }
  selinuxRelabel(fs, policy);
  return { selinux: 'relabelled', policy: loaded!.name };
}
