/**
 * The xattr rule "bootcfs-xattrs-1", applied on BOTH repository paths — trees built from OCI layer tars
 * and trees scanned from a directory (compute-id of an unpacked rootfs) — so that the two produce the
 * same image digest for the same image. Not used by `bootcfs mkcomposefs` (mkcomposefs-identical).
 *
 * Kept: `user.*`, `security.*` except `security.selinux`, `system.posix_acl_access`,
 * `system.posix_acl_default`. Dropped: everything else, notably `trusted.*` (an unprivileged unpacker
 * cannot set them, and overlay-internal names must not leak into an image) and `security.selinux`
 * (labels are assigned by the bootable transform from the image's own policy; umoci and rootless
 * unpackers cannot carry them, so keeping them would make the two paths disagree).
 *
 * The rule also fixes symlink permission bits to 0777: Linux ignores them and every extracted tree
 * reports 0777, so a tar symlink with other bits would otherwise make the layer path and the directory
 * path disagree (composefs-rs keeps the tar's bits here).
 *
 * The version is recorded with every pulled image (src/oci/pull.ts) so a future rule change is visible.
 */
import { uniqueInodes, type ByteString, type FileSystem } from '../tree/model.js';

export const XATTR_RULE_VERSION = 1;
export const XATTR_RULE_NAME = `bootcfs-xattrs-${XATTR_RULE_VERSION}`;

/** Whether the rule keeps the xattr `name` (a latin1 byte string). */
export function keepXattr(name: ByteString): boolean {
  if (name.startsWith('user.')) return true;
  if (name.startsWith('security.')) return name !== 'security.selinux';
  return name === 'system.posix_acl_access' || name === 'system.posix_acl_default';
}

/**
 * Removes every xattr the rule drops and sets symlink permission bits to 0777, on every inode of the tree
 * (hardlinked inodes once). Mutates.
 */
export function applyXattrRule(fs: FileSystem): FileSystem {
  for (const inode of uniqueInodes(fs.root)) {
    for (const name of [...inode.xattrs.keys()]) {
      if (!keepXattr(name)) inode.xattrs.delete(name);
    }
    if (inode.isSymlink) inode.mode = (inode.mode & ~0o7777) | 0o777;
  }
  return fs;
}
