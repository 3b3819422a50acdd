/**
 * Dumpfile printer producing exactly what `composefs-info dump` 1.0.8 prints for a tree
 * (tools/composefs-info.c `dump_node`):
 * - entries depth-first, parents before children, children in raw-byte name order; the root is `/`;
 * - `PATH SIZE MODE NLINK UID GID RDEV SEC.NSEC PAYLOAD CONTENT DIGEST[ NAME=VALUE…]`, numbers in
 *   decimal except MODE (octal), NSEC not padded;
 * - an inode reached under a second name is printed as a hardlink: `@` before MODE, PAYLOAD = the
 *   path where it was first printed, every other field (including CONTENT, DIGEST and xattrs) copied
 *   from the inode, and (for a directory) no children — so even a tree with a directory cycle prints
 *   finitely, as C prints images whose dirents point at a directory twice;
 * - PAYLOAD is the symlink target for symlinks, the redirect payload otherwise, `-` when absent;
 *   CONTENT is the inline content or `-`; both escape a lone `-` as `\x2d`;
 * - xattrs in the Map's insertion order (the image reader inserts them in on-disk order), with `=`
 *   escaped in names and values.
 * The printer does not interpret the tree: whatever quirks the producer applied are printed as is.
 */
import { type FileSystem, type Inode, type ByteString } from '../tree/model.js';
import { EscapeFlags, escapeDumpField } from './escape.js';

export interface DumpfileWriteOptions {
  /** Flush threshold of the streaming writer, in characters (= bytes). Default 64 KiB. */
  chunkSize?: number;
}

function formatInode(path: ByteString, inode: Inode, hardlinkPath: ByteString | undefined): string {
  const payload = hardlinkPath ?? (inode.isSymlink ? inode.target : inode.payload);
  let line = escapeDumpField(path);
  line += ` ${inode.size} ${hardlinkPath !== undefined ? '@' : ''}${inode.mode.toString(8)} ${inode.nlink}`;
  line += ` ${inode.uid} ${inode.gid} ${inode.rdev} ${inode.mtimeSec}.${inode.mtimeNsec} `;
  line += payload === undefined ? '-' : escapeDumpField(payload, EscapeFlags.LoneDash);
  line += ' ';
  line += inode.content === undefined ? '-' : escapeDumpField(inode.content.toString('latin1'), EscapeFlags.LoneDash);
  line += inode.digest === undefined ? ' -' : ` ${inode.digest.toString('hex')}`;
  for (const [name, value] of inode.xattrs) {
    line += ` ${escapeDumpField(name, EscapeFlags.Equal)}=${escapeDumpField(value.toString('latin1'), EscapeFlags.Equal)}`;
  }
  return line + '\n';
}

/**
 * Print a tree as `composefs-info dump` does, handing the output to `sink` in chunks of about
 * `opts.chunkSize` bytes (the last chunk may be shorter; nothing is emitted after the call returns).
 */
export function writeDumpfileChunks(fs: FileSystem, sink: (chunk: Buffer) => void, opts: DumpfileWriteOptions = {}): void {
  const chunkSize = opts.chunkSize ?? 64 * 1024;
  const firstPath = new Map<Inode, ByteString>();
  let pending: string[] = [];
  let pendingLen = 0;
  const emit = (s: string): void => {
    pending.push(s);
    pendingLen += s.length;
    if (pendingLen >= chunkSize) {
      sink(Buffer.from(pending.join(''), 'latin1'));
      pending = [];
      pendingLen = 0;
    }
  };
  // Explicit stack instead of recursion: trees can be deeper than the JS call stack allows.
  const stack: Array<[ByteString, Inode]> = [['', fs.root]];
  while (stack.length > 0) {
    const [path, inode] = stack.pop()!;
    const printedPath = path === '' ? '/' : path;
    const earlier = firstPath.get(inode);
    if (earlier !== undefined) {
      emit(formatInode(printedPath, inode, earlier));
      continue;
    }
    // composefs-info names a hardlink target by walking up from it, which yields '' for the root.
    firstPath.set(inode, path);
    emit(formatInode(printedPath, inode, undefined));
    if (inode.entries) {
      const kids = inode.sortedEntries();
      for (let i = kids.length - 1; i >= 0; i--) {
        const [name, child] = kids[i]!;
        stack.push([`${path}/${name}`, child]);
      }
    }
  }
  if (pendingLen > 0) sink(Buffer.from(pending.join(''), 'latin1'));
}

/** Print a tree as `composefs-info dump` does. */
export function writeDumpfile(fs: FileSystem, opts: DumpfileWriteOptions = {}): Buffer {
  const chunks: Buffer[] = [];
  writeDumpfileChunks(fs, (c) => chunks.push(c), opts);
  return Buffer.concat(chunks);
}
