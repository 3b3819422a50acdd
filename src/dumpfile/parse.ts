/**
 * Parser for composefs dumpfiles (composefs-dump(5)) with the exact acceptance rules and resulting
 * node values of `mkcomposefs --from-file` 1.0.8 (tools/mkcomposefs.c plus the libcomposefs node
 * setters it calls and the checks its EROFS writer makes before writing anything).
 *
 * Notable C behaviours reproduced on purpose (each one was checked against the real tool):
 * - Fields are split at single spaces; missing trailing fields are empty strings (not errors).
 *   Numbers are parsed like strtoull: leading C whitespace and a sign are allowed, negative values
 *   wrap modulo 2^64, overflow saturates; the result is then truncated to the C field width.
 * - A GID or RDEV that is not a number is only an error when UID is 0 (upstream checks `uid` there);
 *   otherwise the field silently becomes 0.
 * - Unescaped values that C uses as C strings (path, symlink target, payload, xattr name, digest,
 *   hardlink target) end at their first NUL byte; inline content and xattr values are binary.
 * - A repeated xattr name replaces the earlier value: C removes the old entry by moving the last
 *   entry into its slot and appends the new one, which changes the order; we do the same.
 * - A digest that is not 64 hex digits is not rejected by C: it converts the valid leading hex pairs
 *   (at most 32 bytes) and leaves the rest of its buffer uninitialised. We accept the same inputs and
 *   zero the bytes C leaves undefined.
 * - Hardlinks (`@` before MODE) may point forward; only PATH, MODE and PAYLOAD of such a line are
 *   looked at. The target keeps its own NLINK. Chains of hardlinks resolve to the final inode.
 * - Strict mode (CFS_PARSE_STRICT) rejects a missing final newline — except when the input length
 *   makes C's read loop see the unterminated line after a read that returned 0 bytes (the previous
 *   read exactly filled its buffer); we simulate that read loop so acceptance matches byte for byte.
 *
 * Two deliberate differences, both inputs C only accepts by accident:
 * - C accepts a hardlink whose target is a directory (through a non-`@4…` mode) and writes an image
 *   where a directory has two names (even a cycle, for a link to `/`). The shared tree model never
 *   hardlinks directories, so we reject such lines with a ParseError.
 * - C accepts an external regular file of more than 2^64 - 2^43 bytes because its chunk count
 *   computation overflows to 0; we reject it like every other file above 2^53 bytes.
 *
 * Numbers the model holds as JS numbers are exact except an mtime beyond ±2^53 s and the (unused by
 * the image writer) SIZE of devices, fifos and sockets beyond 2^53.
 */
import { ParseError } from '../errors.js';
import {
  Inode, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK,
  type ByteString, type FileSystem,
} from '../tree/model.js';
import { DumpEscapeError, cString, unescapeDumpField } from './escape.js';

export interface DumpfileParseOptions {
  /** CFS_PARSE_STRICT semantics: trailing newline required, RDEV 0 on non-devices, symlink SIZE =
   * target length and no symlink CONTENT. Default false (mkcomposefs' default). */
  strict?: boolean;
  /** Keep a directory line's SIZE in `inode.size` instead of 0. mkcomposefs ignores it (the image
   * writer computes directory sizes); this is for reading `composefs-info dump` output, whose
   * directory SIZE is the size in the image. Default false. */
  keepDirectorySize?: boolean;
}

/** Limits libcomposefs 1.0.8 enforces on dumpfile input. */
export const DUMPFILE_LIMITS = {
  /** LCFS_MAX_NAME_LENGTH: bytes in one path component. */
  nameMax: 255,
  /** PATH_MAX: a symlink target / redirect payload must be shorter than this. */
  pathMax: 4096,
  /** LCFS_INLINE_CONTENT_MAX. */
  inlineContentMax: 5000,
  /** XATTR_NAME_MAX. */
  xattrNameMax: 255,
  /** UINT16_MAX: bytes of xattr text after the fixed fields of one line. */
  xattrTextMax: 65535,
  /** LCFS_INODE_EXTERNAL_XATTR_MAX = UINT16_MAX / 2: per-inode xattr budget. */
  xattrBudget: 32767,
  /** Per xattr: 2 * LCFS_INODE_XATTRMETA_SIZE - 1 bytes of overhead plus name and value. */
  xattrEntryOverhead: 7,
  /** LCFS_XATTR_HEADER_SIZE, charged with the first xattr of an inode. */
  xattrHeaderSize: 12,
  /** An external regular file needs at most 1024 chunks of at most 2^43 bytes: size <= 2^53. */
  maxExternalFileSize: 2 ** 53,
} as const;

const FIELD_COUNT = 11; // PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST
const U64_MAX = (1n << 64n) - 1n;

/** A dumpfile line failed; the message is mkcomposefs' wording where it has one. */
class LineError extends Error {}

/** C `isspace` in the C locale. */
function isCSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/**
 * `strtoull(field, &end, base)` followed by mkcomposefs' `*s == 0 || *end != 0` check.
 * Returns undefined where mkcomposefs reports "Invalid integer".
 */
function parseCUnsigned(s: string, base: 8 | 10): bigint | undefined {
  const n = s.length;
  if (n === 0) return undefined;
  // Fast path: plain digits, the common case.
  let allDigits = n <= 15;
  const maxDigit = base === 8 ? 0x37 : 0x39;
  for (let i = 0; allDigits && i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > maxDigit) allDigits = false;
  }
  if (allDigits) return base === 10 ? BigInt(s) : BigInt(parseInt(s, 8));

  let i = 0;
  while (i < n && isCSpace(s.charCodeAt(i))) i++;
  let negative = false;
  if (i < n && (s[i] === '+' || s[i] === '-')) {
    negative = s[i] === '-';
    i++;
  }
  const digitsStart = i;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > maxDigit) break;
    i++;
  }
  if (i === digitsStart || i !== n) return undefined;
  const digits = s.slice(digitsStart, i);
  let v = BigInt(base === 8 ? `0o${digits}` : digits);
  if (v > U64_MAX) return U64_MAX; // ERANGE: saturates, whatever the sign
  if (negative) v = (-v) & U64_MAX;
  return v;
}

function requireInt(s: string, base: 8 | 10): bigint {
  const v = parseCUnsigned(s, base);
  if (v === undefined) throw new LineError(`Invalid integer ${s}`);
  return v;
}

function validFileType(mode: number): boolean {
  switch (mode & S_IFMT) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFBLK: case S_IFCHR: case S_IFSOCK: case S_IFIFO:
      return true;
    default:
      return false;
  }
}

function hexNibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** libcomposefs `digest_to_raw` into a zeroed 32-byte buffer; its return value is ignored by C. */
function digestToRaw(hex: string): Buffer {
  const raw = Buffer.alloc(32);
  let size = 0;
  let i = 0;
  while (i < hex.length && size < 32) {
    const hi = hexNibble(hex.charCodeAt(i++));
    if (hi < 0) break;
    const lo = i < hex.length ? hexNibble(hex.charCodeAt(i++)) : -1;
    if (lo < 0) break;
    raw[size++] = (hi << 4) | lo;
  }
  return raw;
}

function unescape(field: string): string {
  try {
    return unescapeDumpField(field);
  } catch (e) {
    if (e instanceof DumpEscapeError) throw new LineError(e.message);
    throw e;
  }
}
/** `-` alone means absent (undefined). */
function unescapeOptional(field: string): string | undefined {
  return field === '-' ? undefined : unescape(field);
}

interface HardlinkFixup {
  node: Inode;
  parent: Inode;
  name: ByteString;
  targetPath: ByteString | undefined;
  line: number;
}

interface XattrState {
  entries: Array<[ByteString, Buffer]>;
  /** libcomposefs' running `xattr_size`. */
  size: number;
}

/** `lcfs_node_set_xattr` for dumpfile input (budget = LCFS_INODE_EXTERNAL_XATTR_MAX). */
function setXattr(state: XattrState, name: ByteString, value: Buffer): void {
  const L = DUMPFILE_LIMITS;
  if (name.length === 0 || name.length > L.xattrNameMax || value.length > 0xffff) {
    throw new LineError("Can't set xattr");
  }
  const entries = state.entries;
  const old = entries.findIndex((e) => e[0] === name);
  if (old >= 0) {
    const oldValueLen = entries[old]![1].length;
    const last = entries.pop()!;
    if (old < entries.length) entries[old] = last;
    state.size = entries.length > 0 ? state.size - (L.xattrEntryOverhead + name.length + oldValueLen) : 0;
  }
  let entrySize = L.xattrEntryOverhead + name.length + value.length;
  if (entries.length === 0) entrySize += L.xattrHeaderSize;
  if (state.size + entrySize > L.xattrBudget) throw new LineError("Can't set xattr");
  entries.push([name, value]);
  state.size += entrySize;
}

/**
 * The C read loop's view of an input whose last line has no newline: true when that line still gets
 * parsed in strict mode (see the module comment), false for "Missing trailing newline".
 */
function strictReaderSeesUnterminatedLine(text: string): boolean {
  const total = text.length;
  let capacity = 0;
  let leftover = 0; // bytes of an incomplete line kept at the start of the buffer
  let pos = 0; // bytes consumed from the input
  for (;;) {
    const need = leftover + 1;
    if (capacity < need) {
      capacity = capacity === 0 ? 64 * 1024 : capacity * 2;
      if (capacity < need) capacity = need;
    }
    const requested = capacity - leftover;
    const got = Math.min(requested, total - pos);
    const windowStart = pos - leftover;
    pos += got;
    if (got === 0) return leftover > 0; // short read: every buffered line is parsed
    const nl = text.lastIndexOf('\n', pos - 1);
    leftover = nl >= windowStart ? pos - (nl + 1) : pos - windowStart;
    if (got < requested) return false; // fread hit EOF: the loop ends with the line still buffered
  }
}

class DumpParser {
  root: Inode | undefined;
  readonly fixups: HardlinkFixup[] = [];
  readonly hardlinkNodes = new Set<Inode>();
  /** Directory → names of its `@` entries (FileSystem.hardlinkNames). */
  readonly hardlinkNames = new Map<Inode, Set<ByteString>>();
  private readonly parentCache = new Map<string, Inode>();

  constructor(private readonly strict: boolean, private readonly keepDirectorySize: boolean) {}

  /** mkcomposefs `tree_add_node`: returns the parent and name the node was linked under. */
  private addNode(path: ByteString, node: Inode): { parent: Inode; name: ByteString } | undefined {
    if (path === '/') {
      if (!node.isDir) throw new LineError('Root must be a directory');
      if (this.root !== undefined) throw new LineError("Can't have multiple roots");
      this.root = node;
      return undefined;
    }
    if (this.root === undefined) throw new LineError('Root node not present');
    // C walks the path component by component, skipping runs of slashes; the parent is therefore
    // whatever the text before the last slash resolves to, and the name is the text after it
    // (empty for a trailing slash). Entries are never removed while parsing, so a resolved prefix
    // stays valid: cache it (consecutive lines share their parent).
    const lastSlash = path.lastIndexOf('/');
    const prefix = lastSlash < 0 ? '' : path.slice(0, lastSlash);
    const name = path.slice(lastSlash + 1);
    let parent = this.parentCache.get(prefix);
    if (parent === undefined) {
      parent = lookupPath(this.root, prefix);
      if (parent === undefined) throw new LineError(`Parent directory missing for ${path}`);
      this.parentCache.set(prefix, parent);
    }
    if (!parent.entries) throw new LineError(`Parent must be a directory for ${path}`);
    if (name === '.' || name === '..') throw new LineError(`Invalid . or .. in path: ${path}`);
    if (name.length === 0 || name.length > DUMPFILE_LIMITS.nameMax) throw new LineError("Can't add child");
    if (parent.entries.has(name)) throw new LineError(`Path ${path} already exist`);
    parent.entries.set(name, node);
    return { parent, name };
  }

  parseLine(line: string, lineNo: number): void {
    const nul = line.indexOf('\0');
    if (nul >= 0) throw new LineError(`Invalid embedded NUL character at position ${nul}`);

    const fields: string[] = new Array<string>(FIELD_COUNT);
    let pos = 0;
    for (let i = 0; i < FIELD_COUNT; i++) {
      const sp = line.indexOf(' ', pos);
      if (sp < 0) {
        fields[i] = line.slice(pos);
        pos = line.length;
      } else {
        fields[i] = line.slice(pos, sp);
        pos = sp + 1;
      }
    }
    const [pathF, sizeF, modeF0, nlinkF, uidF, gidF, rdevF, mtimeF, payloadF, contentF, digestF] =
      fields as [string, string, string, string, string, string, string, string, string, string, string];

    const path = cString(unescape(pathF));
    if (path.length === 0) throw new LineError('Invalid empty path');

    let modeF = modeF0;
    const isHardlink = modeF.length > 0 && modeF.charCodeAt(0) === 0x40; // '@'
    if (isHardlink) modeF = modeF.slice(1);
    const mode = Number(BigInt.asUintN(32, requireInt(modeF, 8)));
    if (!validFileType(mode)) throw new LineError(`Invalid mode ${mode.toString(8)}`);
    const type = mode & S_IFMT;

    const node = new Inode({ mode });
    const placed = this.addNode(path, node);

    if (isHardlink) {
      if (node.isDir) throw new LineError("Directories can't be hardlinked");
      const target = unescapeOptional(payloadF);
      // placed is defined: a non-directory can never be the root.
      this.fixups.push({
        node, parent: placed!.parent, name: placed!.name,
        targetPath: target === undefined ? undefined : cString(target), line: lineNo,
      });
      this.hardlinkNodes.add(node);
      return;
    }

    const size = requireInt(sizeF, 10);
    const nlink = requireInt(nlinkF, 10);
    const uid = requireInt(uidF, 10);
    // Upstream tests `uid == 0` (not gid/rdev) after parsing GID and RDEV: a bad GID or RDEV is
    // only an error when UID is 0, and otherwise reads as 0.
    let gid = parseCUnsigned(gidF, 10);
    if (gid === undefined) {
      if (uid === 0n) throw new LineError(`Invalid integer ${gidF}`);
      gid = 0n;
    }
    let rdev = parseCUnsigned(rdevF, 10);
    if (rdev === undefined) {
      if (uid === 0n) throw new LineError(`Invalid integer ${rdevF}`);
      rdev = 0n;
    }
    const dot = mtimeF.indexOf('.');
    const mtimeSec = requireInt(dot < 0 ? mtimeF : mtimeF.slice(0, dot), 10);
    const mtimeNsec = requireInt(dot < 0 ? '' : mtimeF.slice(dot + 1), 10);

    const payload = unescapeOptional(payloadF);
    const content = unescapeOptional(contentF);
    if (content !== undefined && BigInt(content.length) !== size) {
      throw new LineError(`Invalid content size ${content.length}, must match size ${size}`);
    }
    const digest = unescapeOptional(digestF);

    node.nlink = Number(BigInt.asUintN(32, nlink));
    node.uid = Number(BigInt.asUintN(32, uid));
    node.gid = Number(BigInt.asUintN(32, gid));
    if (type === S_IFCHR || type === S_IFBLK) {
      node.rdev = Number(BigInt.asUintN(32, rdev)); // st_rdev is 32 bits in libcomposefs
    } else if (this.strict && rdev !== 0n) {
      throw new LineError('Non-zero devnum on non-device');
    }
    node.mtimeSec = Number(BigInt.asIntN(64, mtimeSec));
    node.mtimeNsec = Number(BigInt.asUintN(32, mtimeNsec));

    if (type === S_IFLNK) {
      const target = payload === undefined ? '' : cString(payload);
      if (target.length === 0 || target.length >= DUMPFILE_LIMITS.pathMax) throw new LineError('Invalid symlink');
      if (this.strict) {
        if (size !== BigInt(target.length)) {
          throw new LineError(`Invalid symlink size ${target.length}, must match size ${size}`);
        }
        if (content !== undefined && content.length > 0) throw new LineError('Symlink cannot have content');
      }
      node.target = target;
      node.size = target.length;
    } else {
      const cPayload = payload === undefined ? undefined : cString(payload);
      if (cPayload !== undefined && cPayload.length >= DUMPFILE_LIMITS.pathMax) throw new LineError('Invalid payload');
      node.payload = cPayload;
      if (content !== undefined && content.length > DUMPFILE_LIMITS.inlineContentMax) {
        throw new LineError(`Inline content size ${content.length} exceeds maximum ${DUMPFILE_LIMITS.inlineContentMax}`);
      }
      // lcfs_node_set_content keeps no buffer for empty content.
      if (content !== undefined && content.length > 0) node.content = Buffer.from(content, 'latin1');
      // C ignores a directory's SIZE (the EROFS writer computes it).
      node.size = type === S_IFDIR && !this.keepDirectorySize ? 0 : Number(size);
      if (type === S_IFREG && node.content === undefined && size > BigInt(DUMPFILE_LIMITS.maxExternalFileSize)) {
        if (size > (1n << 64n) - (1n << 43n)) {
          // C's chunk count computation ((size + 2^43 - 1) / 2^43 in 64 bits) wraps to 0 here, so
          // mkcomposefs accepts such a file and writes an image claiming ~16 EiB with no chunks.
          // The tree model's numeric size cannot even hold it: refuse instead (a documented
          // difference from mkcomposefs).
          throw new LineError(`File too large: size ${size} is only accepted by mkcomposefs through an integer overflow`);
        }
        // lcfs_node_validate: more than LCFS_MAX_NONINLINE_CHUNKS chunks.
        throw new LineError(`File too large: size ${size} exceeds ${DUMPFILE_LIMITS.maxExternalFileSize}`);
      }
    }
    if (digest !== undefined) node.digest = digestToRaw(cString(digest));

    const xattrText = line.slice(pos);
    if (xattrText.length > DUMPFILE_LIMITS.xattrTextMax) throw new LineError('Too many xattrs');
    if (xattrText.length > 0) {
      const state: XattrState = { entries: [], size: 0 };
      let p = 0;
      const n = xattrText.length;
      while (p < n) {
        let sp = xattrText.indexOf(' ', p);
        if (sp < 0) sp = n;
        const eq = xattrText.indexOf('=', p);
        if (eq < 0 || eq >= sp) throw new LineError('Missing = in xattr');
        let key: string;
        let value: string;
        try {
          key = cString(unescapeDumpField(xattrText, p, eq));
          value = unescapeDumpField(xattrText, eq + 1, sp);
        } catch (e) {
          if (e instanceof DumpEscapeError) throw new LineError(e.message);
          throw e;
        }
        setXattr(state, key, Buffer.from(value, 'latin1'));
        p = sp + 1;
      }
      for (const [k, v] of state.entries) node.xattrs.set(k, v);
    }
  }

  /** mkcomposefs `tree_resolve_hardlinks` (in its reverse order) plus the writer's cycle check. */
  resolveHardlinks(): void {
    const root = this.root!;
    const direct = new Map<Inode, Inode>();
    for (let i = this.fixups.length - 1; i >= 0; i--) {
      const f = this.fixups[i]!;
      if (f.targetPath === undefined) throw new ParseError('No target path for the hardlink', f.line);
      const target = lookupPath(root, f.targetPath);
      if (target === undefined) throw new ParseError(`No target at ${f.targetPath} for hardlink`, f.line);
      if (target === f.node) throw new ParseError(`Self-referential hardlink ${f.targetPath}`, f.line);
      direct.set(f.node, target);
    }
    for (const f of this.fixups) {
      let cur = direct.get(f.node)!;
      const seen = new Set<Inode>([f.node]);
      while (this.hardlinkNodes.has(cur)) {
        if (seen.has(cur)) throw new ParseError(`Hardlink cycle through ${f.targetPath}`, f.line);
        seen.add(cur);
        cur = direct.get(cur)!;
      }
      if (cur.isDir) {
        throw new ParseError(`Hardlink to a directory is not supported: ${f.targetPath}`, f.line);
      }
      f.parent.entries!.set(f.name, cur);
      let names = this.hardlinkNames.get(f.parent);
      if (names === undefined) this.hardlinkNames.set(f.parent, (names = new Set()));
      names.add(f.name);
    }
  }
}

/** mkcomposefs `lookup_path`: slashes anywhere are skipped, so `a//b/` names /a/b. */
function lookupPath(root: Inode, path: ByteString): Inode | undefined {
  let node: Inode | undefined = root;
  let p = 0;
  const n = path.length;
  for (;;) {
    while (p < n && path.charCodeAt(p) === 0x2f) p++;
    if (p >= n) return node;
    const start = p;
    while (p < n && path.charCodeAt(p) !== 0x2f) p++;
    node = node.entries?.get(path.slice(start, p));
    if (node === undefined) return undefined;
  }
}

/**
 * Parse a dumpfile into a tree carrying what mkcomposefs 1.0.8 puts into its nodes.
 * A string argument is encoded as UTF-8 first; pass a Buffer for arbitrary bytes.
 * @throws ParseError (with the 1-based line number) for every input mkcomposefs rejects.
 */
export function parseDumpfile(data: Buffer | string, opts: DumpfileParseOptions = {}): FileSystem {
  const strict = opts.strict ?? false;
  const text = (typeof data === 'string' ? Buffer.from(data, 'utf8') : data).toString('latin1');
  const parser = new DumpParser(strict, opts.keepDirectorySize ?? false);
  let lineNo = 0;
  let start = 0;
  const n = text.length;
  while (start < n) {
    let end = text.indexOf('\n', start);
    const terminated = end >= 0;
    if (!terminated) end = n;
    lineNo++;
    if (!terminated && strict && !strictReaderSeesUnterminatedLine(text)) {
      throw new ParseError('Missing trailing newline', lineNo);
    }
    try {
      parser.parseLine(text.slice(start, end), lineNo);
    } catch (e) {
      if (e instanceof LineError) throw new ParseError(e.message, lineNo);
      throw e;
    }
    start = end + 1;
  }
  if (parser.root === undefined) throw new ParseError('No files in dump file', Math.max(lineNo, 1));
  parser.resolveHardlinks();
  return parser.hardlinkNames.size > 0 ? { root: parser.root, hardlinkNames: parser.hardlinkNames } : { root: parser.root };
}
