/**
 * composefs semantics on top of the EROFS reader: turn an image back into the shared tree model, list the
 * backing objects it references, and format `composefs-info ls`.
 *
 * Mode 'c' rebuilds exactly the tree libcomposefs 1.0.8's `lcfs_load_node_from_image` builds (what
 * `composefs-info dump|ls|objects` print) — composefs-format.md §2.6:
 *  - character devices with rdev 0 (the 00–ff stubs, rs-style whiteouts) are skipped entirely;
 *  - a regular file carrying `trusted.overlay.overlay.whiteout` becomes a 0/0 character device again;
 *  - `trusted.overlay.metacopy` is dropped (a 36-byte value yields the sha256 digest),
 *    `trusted.overlay.redirect` is dropped and becomes the payload (leading '/' stripped, see the quirk
 *    below); `trusted.overlay.overlay.whiteouts`, `user.overlay.whiteout(s)` and every other unescaped
 *    `trusted.overlay.*` are dropped; `trusted.overlay.overlay.X` is unescaped to `trusted.overlay.X`;
 *    the v1 `opaque=x` markers survive (a C quirk reproduced on purpose);
 *  - a name set twice replaces the earlier value the way libcomposefs does (last entry moved into the
 *    hole, new one appended), so even duplicate xattrs print in the same order;
 *  - symlink targets stop at the first NUL (C strings); inline content is limited to 5000 bytes.
 * Redirect quirk: libcomposefs strips the leading '/' with `value++; value_size++` (sic), so it copies up
 * to two bytes *past* the stored value, stopping at a NUL. When the value is followed by zero padding
 * nothing shows; otherwise (value length ≡ 0 mod 4 with the 20-byte header, or ≡ 3) the C tool prints
 * the next bytes of the image as part of the payload. Mode 'c' reproduces that from the same image
 * bytes, because `dump`/`objects` output must be identical.
 *
 * Mode 'raw' keeps every inode and every xattr exactly as stored (no skipping, no unescaping, metacopy and
 * redirect stay xattrs, external files have only a size); duplicate xattr names are a FormatError there.
 *
 * Both modes reject what the C reader silently follows into nonsense: a directory referenced twice
 * (directory cycles included), dirent types that disagree with the inode, unsorted or duplicate names.
 */
import { statSync } from 'node:fs';
import { FormatError, BootcfsError } from '../errors.js';
import { XATTR_NAME_MAX } from '../erofs/format.js';
import { openImage, printable, type DirEntry, type ErofsImage, type ErofsInode, type XattrEntry } from '../erofs/reader.js';
import {
  XATTR_ESCAPED_OVERLAY_PREFIX,
  XATTR_OVERLAY_METACOPY,
  XATTR_OVERLAY_REDIRECT,
  XATTR_TRUSTED_OVERLAY_PREFIX,
} from '../erofs/format.js';
import { Inode, S_IFCHR, S_IFMT, bytes, compareBytes, fromBytes, type ByteString, type FileSystem } from '../tree/model.js';

/** LCFS_INLINE_CONTENT_MAX: the C reader refuses larger inline files. */
export const C_INLINE_CONTENT_MAX = 5000;
/** PATH_MAX: the C reader refuses symlink targets of this length or more. */
export const SYMLINK_MAX = 4095;
/** sha256 ovl_metacopy: 4-byte header + 32-byte digest. */
const METACOPY_SHA256_SIZE = 36;

const XATTR_ESCAPED_WHITEOUT = 'trusted.overlay.overlay.whiteout';
const XATTR_ESCAPED_WHITEOUTS = 'trusted.overlay.overlay.whiteouts';
const XATTR_USER_WHITEOUT = 'user.overlay.whiteout';
const XATTR_USER_WHITEOUTS = 'user.overlay.whiteouts';

export type ReadMode = 'c' | 'raw';

export interface ImageToTreeOptions {
  /** 'c' (default): what libcomposefs's reader builds; 'raw': every inode and xattr as stored. */
  mode?: ReadMode;
  /** Only load these top-level names (composefs-info --filter); names are byte strings. */
  filter?: readonly ByteString[];
}

/** Read a composefs image into the tree model. Throws FormatError on any malformed structure. */
export function imageToTree(buf: Buffer, opts: ImageToTreeOptions = {}): FileSystem {
  return new TreeLoader(openImage(buf), opts.mode ?? 'c', opts.filter).load();
}

/** Same as imageToTree, on an already opened image. */
export function erofsImageToTree(img: ErofsImage, opts: ImageToTreeOptions = {}): FileSystem {
  return new TreeLoader(img, opts.mode ?? 'c', opts.filter).load();
}

class TreeLoader {
  /** nid → loaded inode; null = skipped (a 0/0 char device in mode 'c'). */
  private readonly nodes = new Map<number, Inode | null>();
  private readonly filter: Set<ByteString> | undefined;
  /**
   * One copy per shared xattr entry, shared by every inode that references it: a shared value may be
   * referenced by any number of inodes, so copying it per inode would let a small image demand
   * unbounded memory. (Inline values are copied: their bytes are charged to the work budget.)
   */
  private readonly sharedValues = new Map<XattrEntry, Buffer>();

  constructor(
    private readonly img: ErofsImage,
    private readonly mode: ReadMode,
    filter: readonly ByteString[] | undefined,
  ) {
    this.filter = filter ? new Set(filter) : undefined;
  }

  load(): FileSystem {
    const rootNid = this.img.header.rootNid;
    const rootIno = this.img.inode(rootNid);
    if (rootIno.type !== 'dir') throw new FormatError(`root inode ${rootNid} is not a directory`, rootIno.offset + 4);
    const root = this.build(rootIno)!;
    this.nodes.set(rootNid, root);
    // Iterative depth-first walk: a directory is expanded exactly once (a second reference to any
    // directory is an error), so the total work is bounded by the number of dirents in the image.
    const pending: Array<[number, Inode]> = [[rootNid, root]];
    while (pending.length > 0) {
      const [dirNid, dir] = pending.pop()!;
      const isRoot = dirNid === rootNid;
      for (const e of this.img.readDir(dirNid)) {
        if (e.name === '.' || e.name === '..') continue;
        if (isRoot && this.filter && !this.filter.has(e.name)) continue;
        const child = this.child(e);
        if (child === null) continue;
        dir.setEntry(e.name, child);
        if (child.isDir) pending.push([e.nid, child]);
      }
    }
    return { root };
  }

  private child(e: DirEntry): Inode | null {
    const seen = this.nodes.get(e.nid);
    if (seen !== undefined) {
      if (seen?.isDir) {
        throw new FormatError(`directory inode ${e.nid} is referenced again by '${printable(e.name)}' (directory cycle or directory hardlink)`, e.offset);
      }
      return seen; // hardlink (or a skipped whiteout)
    }
    const ino = this.img.inode(e.nid, e.offset);
    this.img.checkDirentType(e, ino);
    const node = this.build(ino);
    this.nodes.set(e.nid, node);
    return node;
  }

  private value(x: XattrEntry): Buffer {
    if (!x.shared) return Buffer.from(x.value);
    let v = this.sharedValues.get(x);
    if (!v) {
      v = Buffer.from(x.value);
      this.sharedValues.set(x, v);
    }
    return v;
  }

  /** Build the model inode (without children). Returns null for inodes mode 'c' skips. */
  private build(ino: ErofsInode): Inode | null {
    const c = this.mode === 'c';
    if (c && ino.type === 'chr' && ino.rdev === 0) return null;
    const node = new Inode({
      mode: ino.mode,
      uid: ino.uid,
      gid: ino.gid,
      mtimeSec: ino.mtimeSec,
      mtimeNsec: ino.mtimeNsec,
      nlink: ino.nlink,
      rdev: ino.rdev,
      size: ino.size,
    });
    if (ino.type === 'lnk') {
      if (ino.size === 0) throw new FormatError(`symlink inode ${ino.nid} has an empty target`, ino.offset + 8);
      let target = this.img.readData(ino.nid, SYMLINK_MAX);
      if (c) {
        const z = target.indexOf(0);
        if (z !== -1) target = target.subarray(0, z);
      }
      node.target = fromBytes(target);
    } else if (ino.type === 'reg' && ino.size > 0 && ino.layout !== 'chunk-based') {
      node.content = Buffer.from(this.img.readData(ino.nid, c ? C_INLINE_CONTENT_MAX : Infinity));
    }
    if (c) this.applyXattrsLikeC(node, ino.xattrs);
    else {
      for (const x of ino.xattrs) {
        if (node.xattrs.has(x.name)) throw new FormatError(`inode ${ino.nid}: xattr '${printable(x.name)}' is stored twice`, x.offset);
        node.xattrs.set(x.name, this.value(x));
      }
    }
    return node;
  }

  /** lcfs_build_node_erofs_xattr, entry by entry, in on-disk order (inline, then shared). */
  private applyXattrsLikeC(node: Inode, xattrs: readonly XattrEntry[]): void {
    const list: Array<[ByteString, Buffer]> = [];
    const index = new Map<ByteString, number>();
    const set = (name: ByteString, value: Buffer, at: number) => {
      // stored names may be longer (escaping adds 8 bytes); what the C reader keeps must fit XATTR_NAME_MAX
      if (name.length > XATTR_NAME_MAX) throw new FormatError(`xattr name longer than ${XATTR_NAME_MAX} bytes`, at);
      const i = index.get(name);
      if (i !== undefined) {
        // lcfs_node_unset_xattr: the last entry fills the hole, then the new one is appended
        const last = list.pop()!;
        if (i < list.length) {
          list[i] = last;
          index.set(last[0], i);
        }
      }
      index.set(name, list.length);
      list.push([name, value]);
    };
    for (const x of xattrs) {
      const name = x.name;
      if (name === XATTR_OVERLAY_REDIRECT) {
        if (node.isReg) node.payload = this.redirectPayloadLikeC(x);
        continue;
      }
      if (name === XATTR_OVERLAY_METACOPY) {
        if (node.isReg && x.value.length === METACOPY_SHA256_SIZE) node.digest = Buffer.from(x.value.subarray(4));
        continue;
      }
      if (name === XATTR_ESCAPED_WHITEOUT && node.isReg) {
        node.mode = (node.mode & ~S_IFMT) | S_IFCHR;
        node.rdev = 0;
        node.size = 0;
        node.content = undefined;
        continue;
      }
      if (name === XATTR_ESCAPED_WHITEOUTS || name === XATTR_USER_WHITEOUT || name === XATTR_USER_WHITEOUTS) continue;
      if (name.startsWith(XATTR_TRUSTED_OVERLAY_PREFIX)) {
        if (!name.startsWith(XATTR_ESCAPED_OVERLAY_PREFIX)) continue;
        set(XATTR_TRUSTED_OVERLAY_PREFIX + name.slice(XATTR_ESCAPED_OVERLAY_PREFIX.length), this.value(x), x.offset);
        continue;
      }
      set(name, this.value(x), x.offset);
    }
    for (const [n, v] of list) node.xattrs.set(n, v);
  }

  /** The payload libcomposefs derives from a redirect value, including its off-by-two read (see top). */
  private redirectPayloadLikeC(x: XattrEntry): ByteString {
    const buf = this.img.buf;
    let start = x.valueOffset;
    let len = x.value.length;
    if (len > 1 && x.value[0] === 0x2f) {
      start += 1;
      len += 1;
    }
    const raw = buf.subarray(start, Math.min(start + len, this.img.end));
    const z = raw.indexOf(0);
    return fromBytes(z === -1 ? raw : raw.subarray(0, z));
  }
}

// ------------------------------------------------------------------------------------------- objects

/**
 * Backing-file paths (redirect payloads) of a tree loaded in mode 'c', as `composefs-info objects`
 * collects them: regular files with a payload, each once, sorted by raw bytes (strcmp).
 */
export function treeObjects(fs: FileSystem): ByteString[] {
  const found = new Set<ByteString>();
  const seen = new Set<Inode>();
  const stack: Inode[] = [fs.root];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (seen.has(node)) continue;
    seen.add(node);
    if (node.isReg && node.payload !== undefined) found.add(node.payload);
    if (node.entries) for (const child of node.entries.values()) stack.push(child);
  }
  return [...found].sort(compareBytes);
}

/** `composefs-info objects IMAGE`: the sorted, unique backing paths an image references. */
export function listObjects(buf: Buffer, opts: { filter?: readonly ByteString[] } = {}): ByteString[] {
  return treeObjects(imageToTree(buf, { mode: 'c', filter: opts.filter }));
}

/**
 * The objects missing from `basedir`, as `composefs-info missing-objects` decides it: the payload with
 * its leading slashes removed is stat()ed (following symlinks) relative to the basedir; an empty relative
 * path stats the basedir itself. Without a basedir, libcomposefs stats relative to fd 0 (its unset
 * basedir fd is 0, i.e. stdin, which is not a directory): every object is missing except an empty path.
 */
export function missingObjects(objects: readonly ByteString[], basedir?: string): ByteString[] {
  if (basedir !== undefined) {
    let isDir = false;
    try {
      isDir = statSync(basedir).isDirectory();
    } catch (e) {
      throw new BootcfsError('ENOENT', `can't open basedir '${basedir}': ${(e as Error).message}`);
    }
    if (!isDir) throw new BootcfsError('EINVAL', `can't open basedir '${basedir}': not a directory`);
  }
  return objects.filter((obj) => {
    const rel = obj.replace(/^\/+/, '');
    if (basedir === undefined) return rel.length > 0;
    const p = Buffer.concat([Buffer.from(basedir), Buffer.from('/'), bytes(rel)]);
    try {
      statSync(p);
      return false;
    } catch {
      return true;
    }
  });
}

// ------------------------------------------------------------------------------------------------ ls

/** print_escaped of composefs-info: `\\ \n \r \t`, other bytes outside the printable range as \xNN. */
function escapeForLs(s: ByteString, keepSpace: boolean): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c > 0x7e || c < (keepSpace ? 0x20 : 0x21)) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += s[i];
  }
  return out;
}

/**
 * `composefs-info ls` output for a tree loaded in mode 'c' (a byte string): every path below the root in
 * sorted depth-first order; directories get "/\t", symlinks "\t-> TARGET", external files "\t@ PAYLOAD".
 * Further names of a hardlinked inode are printed bare (the C tool sees them as mode-0 link nodes).
 */
export function formatLs(fs: FileSystem): ByteString {
  const parts: string[] = [];
  const seen = new Set<Inode>();
  const stack: Array<[ByteString, Inode]> = [];
  const pushChildren = (path: ByteString, dir: Inode) => {
    const kids = dir.sortedEntries();
    for (let i = kids.length - 1; i >= 0; i--) stack.push([`${path}/${kids[i]![0]}`, kids[i]![1]]);
  };
  seen.add(fs.root);
  pushChildren('', fs.root);
  while (stack.length > 0) {
    const [path, node] = stack.pop()!;
    let line = escapeForLs(path, true);
    if (seen.has(node)) {
      parts.push(`${line}\n`);
      continue;
    }
    seen.add(node);
    if (node.isDir) line += '/\t';
    else if (node.isSymlink) line += `\t-> ${escapeForLs(node.target ?? '', false)}`;
    else if (node.isReg && node.payload !== undefined) line += `\t@ ${escapeForLs(node.payload, false)}`;
    parts.push(`${line}\n`);
    if (node.isDir) pushChildren(path, node);
  }
  return parts.join('');
}
