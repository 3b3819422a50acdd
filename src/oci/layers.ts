/**
 * Applying OCI layer tars, in order, onto one merged filesystem tree (src/tree/model.ts), with the
 * semantics of composefs-rs's `image.rs::process_entry` (composefs-format.md §6 "Tree building"):
 *
 * - Paths: a leading `/` and `.` components are dropped (so `./etc/x`, `/etc/x` and `etc//x` are the
 *   same) and trailing slashes ignored; an entry naming the root (`./`, `/`) only replaces the root's
 *   stat and must be a directory. Any `..` component is rejected (composefs-rs rejects them too), so no
 *   entry can reach outside the tree.
 * - Parent directories must already exist (from this layer or an earlier one) and be directories —
 *   composefs-rs's `split_mut` fails with NotFound / NotADirectory, and so do we. We never invent
 *   implicit parents (umoci would create them with default metadata; real layer tars list them).
 * - `.wh..wh..opq` clears the parent directory's merged entries (including entries of the same layer
 *   that came before it); `.wh.NAME` removes NAME; whiteout entries are not added themselves.
 * - A directory on top of an existing directory replaces only its stat (children kept); anything else
 *   replaces the entry (a file over a directory drops the whole subtree).
 * - Hardlinks: the same Inode object as the target, which must exist (in this or an earlier layer) and
 *   not be a directory; the link's own header metadata is ignored (the inode's is kept), as in
 *   composefs-rs. Targets are normalised like paths and resolved without following symlinks.
 * - Regular files of ≤ 64 bytes (INLINE_CONTENT_MAX_V0) are inline (`content`); larger ones are external:
 *   the caller's `external` callback consumes the content stream and returns its fs-verity digest (the
 *   repository stores the object; `digestOnly(alg)` just measures it). `payload` = `xx/yyyy…`.
 * - Devices: rdev = glibc makedev(major, minor). mtimes keep nanoseconds (PAX fractions): the v1 (C
 *   compatible) writer — the format this issue writes by default — stores them; the v2 writer drops nsec
 *   as composefs-rs does. xattrs: every `SCHILY.xattr.*` record, unfiltered (composefs-rs keeps all of them
 *   at this stage; any filtering rule belongs to the caller, applied identically to every source).
 * - Differences from composefs-rs, deliberately: global PAX headers are applied (composefs-rs skips them),
 *   nanoseconds are kept in the model, empty symlink targets and unknown entry types are errors
 *   (composefs-rs also rejects unknown types).
 *
 * Memory: the tree's metadata plus inline contents; file contents stream through `external`.
 * Errors: FormatError (message names the layer and path; offset = byte offset in that layer's tar).
 */
import { FormatError } from '../errors.js';
import { fsverityDigestStream, type HashAlgorithm } from '../fsverity/index.js';
import {
  Inode,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  type ByteString,
  type FileSystem,
} from '../tree/model.js';
import { readContent, tarEntries, type TarEntry } from './tar.js';

/** composefs-rs INLINE_CONTENT_MAX_V0: regular files up to this size are stored inline. */
export const INLINE_CONTENT_MAX = 64;

/** Size of the blocks inline contents are copied into (LayerTreeBuilder.keep). */
const CONTENT_ARENA_BLOCK = 64 * 1024;

export const OPAQUE_WHITEOUT = '.wh..wh..opq';
export const WHITEOUT_PREFIX = '.wh.';

/** Consumes an external file's content and returns its fs-verity digest (e.g. after storing it). */
export type ExternalContentHandler = (content: AsyncIterable<Buffer>, entry: TarEntry) => Promise<Buffer>;

/** An ExternalContentHandler that only measures the content (for compute-id and tests). */
export function digestOnly(alg: HashAlgorithm = 'sha256'): ExternalContentHandler {
  return async (content) => (await fsverityDigestStream(content, alg)).digest;
}

export interface ApplyLayerOptions {
  /** Called for every regular file above `inlineMax`; must return the raw fs-verity digest. */
  external: ExternalContentHandler;
  /** Default 64 (INLINE_CONTENT_MAX). */
  inlineMax?: number;
  /** Used in error messages (e.g. the layer's diff_id or index). */
  layerName?: string;
}

export interface LayerStats {
  entries: number;
  inlineFiles: number;
  externalFiles: number;
  externalBytes: number;
  whiteouts: number;
  opaqueDirs: number;
  hardlinks: number;
}

/** Linux dev_t in glibc's makedev encoding; throws when it does not fit a JS safe integer. */
export function makedev(major: number, minor: number): number {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  const v = ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`device number ${major}:${minor} is too large`);
  return Number(v);
}

/**
 * Splits a tar path into normalised components: leading `/`, empty and `.` components dropped; `[]`
 * means the root. A `..` component is an error (returns undefined so the caller can report it).
 */
export function normaliseTarPath(path: ByteString): ByteString[] | undefined {
  const out: ByteString[] = [];
  for (const c of path.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') return undefined;
    out.push(c);
  }
  return out;
}

const TYPE_BITS: Record<string, number> = {
  reg: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, chr: S_IFCHR, blk: S_IFBLK, fifo: S_IFIFO,
};

/** Builds one merged tree from layers applied in order. */
export class LayerTreeBuilder {
  readonly fs: FileSystem;
  private layerName = 'layer';

  constructor() {
    // composefs-rs starts from an "uninitialized" root stat (mode 0); the OCI transform (or a root entry
    // in a layer) gives it real metadata.
    this.fs = { root: new Inode({ mode: S_IFDIR }) };
  }

  /** Arena for inline contents (see keep()). */
  private arena: Buffer = Buffer.alloc(0);
  private arenaUsed = 0;

  /**
   * A copy of a small inline content in a block of its own: a tree holds tens of thousands of them for as
   * long as it lives, and each one left in Node's shared 8 KiB pool would keep its whole pool slab alive.
   */
  private keep(b: Buffer): Buffer {
    if (b.length > CONTENT_ARENA_BLOCK / 8) return Buffer.from(b); // larger than the pool takes: a block of its own
    if (this.arenaUsed + b.length > this.arena.length) {
      this.arena = Buffer.allocUnsafeSlow(CONTENT_ARENA_BLOCK);
      this.arenaUsed = 0;
    }
    const out = this.arena.subarray(this.arenaUsed, this.arenaUsed + b.length);
    b.copy(out);
    this.arenaUsed += b.length;
    return out;
  }

  private fail(entry: TarEntry, why: string): FormatError {
    return new FormatError(`${this.layerName}: '${printable(entry.path)}': ${why}`, entry.headerOffset);
  }

  /** Walks to the directory holding `comps`' last component; every parent must exist as a directory. */
  private parentOf(entry: TarEntry, comps: ByteString[]): Inode {
    let dir = this.fs.root;
    for (let i = 0; i < comps.length - 1; i++) {
      const next = dir.entries!.get(comps[i]!);
      if (next === undefined) throw this.fail(entry, `parent directory '${printable(comps.slice(0, i + 1).join('/'))}' does not exist`);
      if (!next.isDir) throw this.fail(entry, `'${printable(comps.slice(0, i + 1).join('/'))}' is not a directory`);
      dir = next;
    }
    return dir;
  }

  /**
   * Applies one entry. Regular files need `file.content` (inline, ≤ inlineMax bytes, length = size) or
   * `file.digest` (external); other types ignore `file`. Use this when entries come from elsewhere than
   * a tar stream (e.g. a stored splitstream).
   */
  applyEntry(entry: TarEntry, file: { content?: Buffer; digest?: Buffer } = {}, stats?: LayerStats): void {
    const comps = normaliseTarPath(entry.path);
    if (comps === undefined) throw this.fail(entry, "path has a '..' component");
    if (stats) stats.entries++;

    if (comps.length === 0) {
      if (entry.type !== 'dir') throw this.fail(entry, 'an entry naming the root must be a directory');
      setStat(this.fs.root, entry);
      return;
    }

    const parent = this.parentOf(entry, comps);
    const name = comps[comps.length - 1]!;

    if (name.startsWith(WHITEOUT_PREFIX)) {
      if (name === OPAQUE_WHITEOUT) {
        parent.entries!.clear();
        if (stats) stats.opaqueDirs++;
      } else {
        parent.entries!.delete(name.slice(WHITEOUT_PREFIX.length));
        if (stats) stats.whiteouts++;
      }
      return;
    }

    let inode: Inode;
    switch (entry.type) {
      case 'hardlink': {
        const target = normaliseTarPath(entry.linkTarget);
        if (target === undefined) throw this.fail(entry, "hardlink target has a '..' component");
        if (target.length === 0) throw this.fail(entry, 'hardlink to the root directory');
        const tparent = this.parentOf(entry, target);
        const t = tparent.entries!.get(target[target.length - 1]!);
        if (t === undefined) throw this.fail(entry, `hardlink target '${printable(entry.linkTarget)}' does not exist`);
        if (t.isDir) throw this.fail(entry, `hardlink target '${printable(entry.linkTarget)}' is a directory`);
        inode = t;
        if (stats) stats.hardlinks++;
        break;
      }
      case 'dir': {
        const existing = parent.entries!.get(name);
        if (existing?.isDir) {
          setStat(existing, entry);
          return;
        }
        inode = new Inode({ mode: S_IFDIR });
        setStat(inode, entry);
        break;
      }
      case 'reg': {
        inode = new Inode({ mode: S_IFREG });
        setStat(inode, entry);
        inode.size = entry.size;
        if (entry.size > 0) {
          if (file.content !== undefined) {
            if (file.content.length !== entry.size) throw this.fail(entry, 'inline content length differs from the entry size');
            inode.content = file.content;
          } else if (file.digest !== undefined) {
            inode.setObjectDigest(file.digest); // payload = its object path, computed when read
          } else {
            throw this.fail(entry, 'regular file without content or digest');
          }
        }
        break;
      }
      case 'symlink':
        if (entry.linkTarget.length === 0) throw this.fail(entry, 'symlink with an empty target');
        inode = new Inode({ mode: S_IFLNK });
        setStat(inode, entry);
        inode.target = entry.linkTarget;
        inode.size = entry.linkTarget.length;
        break;
      case 'chr':
      case 'blk':
        inode = new Inode({ mode: TYPE_BITS[entry.type]! });
        setStat(inode, entry);
        try {
          inode.rdev = makedev(entry.devMajor, entry.devMinor);
        } catch {
          throw this.fail(entry, `device number ${entry.devMajor}:${entry.devMinor} is too large`);
        }
        break;
      case 'fifo':
        inode = new Inode({ mode: S_IFIFO });
        setStat(inode, entry);
        break;
      default:
        throw this.fail(entry, `unsupported tar entry type '${String.fromCharCode(entry.typeflag).replace(/[^\x20-\x7e]/g, '?')}'`);
    }
    parent.entries!.set(name, inode);
  }

  /** Reads one layer tar (uncompressed bytes) and applies its entries. */
  async applyLayer(tar: AsyncIterable<Uint8Array>, opts: ApplyLayerOptions): Promise<LayerStats> {
    const inlineMax = opts.inlineMax ?? INLINE_CONTENT_MAX;
    this.layerName = opts.layerName ?? 'layer';
    const stats: LayerStats = { entries: 0, inlineFiles: 0, externalFiles: 0, externalBytes: 0, whiteouts: 0, opaqueDirs: 0, hardlinks: 0 };
    for await (const { entry, content } of tarEntries(tar)) {
      // Validate the path before spending work on the content.
      if (normaliseTarPath(entry.path) === undefined) throw this.fail(entry, "path has a '..' component");
      if (entry.type === 'reg' && entry.size > 0 && !isWhiteoutPath(entry.path)) {
        if (entry.size <= inlineMax) {
          this.applyEntry(entry, { content: this.keep(await readContent(content, inlineMax)) }, stats);
          stats.inlineFiles++;
        } else {
          // The parent must exist before the (possibly expensive) external store runs.
          this.parentOf(entry, normaliseTarPath(entry.path)!);
          const digest = await opts.external(content, entry);
          this.applyEntry(entry, { digest }, stats);
          stats.externalFiles++;
          stats.externalBytes += entry.size;
        }
      } else {
        this.applyEntry(entry, {}, stats);
      }
    }
    return stats;
  }

  /**
   * Finishes the tree: link counts of non-directories = number of names in the merged tree (layers
   * may have removed or replaced names since the hardlink was made). Returns the tree.
   */
  finish(): FileSystem {
    // Two walks instead of a map of counts (one entry per file): zero every link count, then count names.
    for (let pass = 0; pass < 2; pass++) {
      const stack: Inode[] = [this.fs.root];
      while (stack.length > 0) {
        const dir = stack.pop()!;
        for (const child of dir.entries!.values()) {
          if (child.isDir) stack.push(child);
          else if (pass === 0) child.nlink = 0;
          else child.nlink++;
        }
      }
    }
    return this.fs;
  }
}

function isWhiteoutPath(path: ByteString): boolean {
  const comps = normaliseTarPath(path);
  return comps !== undefined && comps.length > 0 && comps[comps.length - 1]!.startsWith(WHITEOUT_PREFIX);
}

function setStat(inode: Inode, entry: TarEntry): void {
  inode.mode = (inode.mode & ~0o7777) | entry.mode;
  inode.uid = entry.uid;
  inode.gid = entry.gid;
  inode.mtimeSec = entry.mtimeSec;
  inode.mtimeNsec = entry.mtimeNsec;
  // Most entries have no xattrs: no map for them (Inode.xattrs allocates one on the first write).
  if (entry.xattrs.size > 0) inode.xattrs = new Map(entry.xattrs);
  else inode.clearXattrs();
}

function printable(s: ByteString): string {
  const t = s.length > 200 ? `${s.slice(0, 200)}…` : s;
  return t.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * Applies `layers` (uncompressed tar streams, in order) and returns the merged tree (without the OCI
 * root transform; see src/oci/transform.ts).
 */
export async function buildTreeFromLayers(
  layers: Iterable<AsyncIterable<Uint8Array>> | AsyncIterable<AsyncIterable<Uint8Array>>,
  opts: Omit<ApplyLayerOptions, 'layerName'>,
): Promise<FileSystem> {
  const builder = new LayerTreeBuilder();
  let i = 0;
  for await (const layer of layers as AsyncIterable<AsyncIterable<Uint8Array>>) {
    await builder.applyLayer(layer, { ...opts, layerName: `layer ${i++}` });
  }
  return builder.finish();
}
