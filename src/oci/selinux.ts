/**
 * SELinux labelling of a tree from the image's own policy, as composefs-rs's bootable transform does it
 * (`composefs-boot` selabel; composefs-format.md §6 "Boot transform"). Pure: the policy files are handed
 * in as bytes (src/oci/bootable.ts finds and reads them in the tree).
 *
 * Policy files (all under /etc/selinux/<SELINUXTYPE>/contexts/files/):
 * - spec files `file_contexts` (mandatory), `file_contexts.local`, `file_contexts.homedirs`, in that
 *   order. Each non-empty, non-comment line is `REGEX [-T] CONTEXT` (whitespace separated; T one of
 *   `b c d p l s -`); anything else is a ParseError with the file name and 1-based line number. A line
 *   becomes the anchored pattern `^(REGEX)T$` over "absolute path + one file-type char" (no T: any char);
 *   the LAST matching line of all files wins; context `<<none>>` means "no label".
 * - substitution files `file_contexts.subs`, `file_contexts.subs_dist`: `ALIAS ORIGINAL` lines; when a
 *   path equals an ALIAS exactly, ORIGINAL is used instead for that inode and everything below it.
 *
 * Labelling: depth-first, sorted by raw name bytes, parents first; the root is `/`; every inode gets
 * `security.selinux` = the context bytes exactly as written in the policy (no trailing NUL, as
 * composefs-rs writes it) or loses the xattr. A hardlinked inode is labelled once per name and keeps the
 * label of the last name visited (as in composefs-rs).
 *
 * Regex dialect: composefs-rs compiles the patterns with Rust's regex-automata (bytes, no Unicode, `.`
 * matches every byte but NUL); here they are JavaScript RegExps over latin1 byte strings with the `s`
 * flag (`.` matches every byte; paths never contain NUL). The common file_contexts syntax (`.*`, `(/.*)?`,
 * `[^/]+`, `\.`, `{n,m}`, alternation) means the same in both; a pattern neither can compile is a
 * ParseError. Like composefs-rs this approximates libselinux (which uses PCRE2 and a stem-based order).
 *
 * Matching cost: every rule's literal prefix (the bytes every match must start with) is precomputed and
 * rules are bucketed by the first path component of that prefix, so an inode is tested only against the
 * rules that can match it.
 */
import { ParseError } from '../errors.js';
import type { ByteString, FileSystem, Inode } from '../tree/model.js';
import { uniqueInodes } from '../tree/model.js';

export const SELINUX_XATTR = 'security.selinux';
/** Context value meaning "remove the label". */
export const NO_CONTEXT = '<<none>>';

/** A malformed policy file: the file name and 1-based line number are in the message and fields. */
export class SelinuxPolicyError extends ParseError {
  readonly file: string;
  constructor(file: string, message: string, line?: number) {
    super(`${file}: ${message}`, line);
    this.name = 'SelinuxPolicyError';
    this.file = file;
  }
}

/** The raw policy files (contents as stored in the image). */
export interface SelinuxPolicyFiles {
  fileContexts: Uint8Array;
  local?: Uint8Array;
  homedirs?: Uint8Array;
  subs?: Uint8Array;
  subsDist?: Uint8Array;
}

export interface FileContextRule {
  /** The pattern as written (latin1 byte string). */
  regex: ByteString;
  /** File-type char (`-` regular, `d`, `l`, `p`, `s`, `b`, `c`) or undefined for any type. */
  fileType: string | undefined;
  /** The context (latin1 byte string), or NO_CONTEXT. */
  context: ByteString;
  /** Where it came from (file name, 1-based line). */
  file: string;
  line: number;
}

const FILE_TYPES = new Set(['b', 'c', 'd', 'p', 'l', 's', '-']);

function decodeLines(file: string, data: Uint8Array): string[] {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch {
    // composefs-rs reads policy files as UTF-8 text lines; report the first bad line.
    const lines = Buffer.from(data).toString('latin1').split('\n');
    const dec = new TextDecoder('utf-8', { fatal: true });
    const bad = lines.findIndex((l) => {
      try {
        dec.decode(Buffer.from(l, 'latin1'));
        return false;
      } catch {
        return true;
      }
    });
    throw new SelinuxPolicyError(file, 'not valid UTF-8', bad + 1);
  }
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** UTF-8 text → latin1 byte string (the tree's name convention). */
const toBytes = (s: string): ByteString => Buffer.from(s, 'utf8').toString('latin1');

function tokens(line: string): string[] {
  return line.split(/\s+/).filter((t) => t.length > 0);
}

/** Parses one spec file (`file_contexts`, `.local`, `.homedirs`). */
export function parseFileContexts(data: Uint8Array, file = 'file_contexts'): FileContextRule[] {
  const rules: FileContextRule[] = [];
  decodeLines(file, data).forEach((raw, i) => {
    const line = i + 1;
    const t = tokens(raw);
    if (t.length === 0 || t[0]!.startsWith('#')) return;
    if (t.length === 1) throw new SelinuxPolicyError(file, `'${t[0]}': missing context`, line);
    let fileType: string | undefined;
    let context: string;
    let rest: string[];
    if (t[1]!.startsWith('-')) {
      fileType = t[1]!.slice(1);
      if (!FILE_TYPES.has(fileType)) throw new SelinuxPolicyError(file, `invalid file type '${t[1]}' (expected -b -c -d -p -l -s or --)`, line);
      if (t.length < 3) throw new SelinuxPolicyError(file, 'missing context after the file type', line);
      context = t[2]!;
      rest = t.slice(3);
    } else {
      context = t[1]!;
      rest = t.slice(2);
    }
    if (rest.length > 0) throw new SelinuxPolicyError(file, `trailing data '${rest.join(' ')}'`, line);
    rules.push({ regex: toBytes(t[0]!), fileType, context: toBytes(context), file, line });
  });
  return rules;
}

/** Parses one substitution file (`.subs`, `.subs_dist`) into `aliases` (later lines win). */
export function parseSubstitutions(data: Uint8Array, file = 'file_contexts.subs', aliases: Map<ByteString, ByteString> = new Map()): Map<ByteString, ByteString> {
  decodeLines(file, data).forEach((raw, i) => {
    const t = tokens(raw);
    if (t.length === 0 || t[0]!.startsWith('#')) return;
    if (t.length === 1) throw new SelinuxPolicyError(file, `'${t[0]}': missing original path`, i + 1);
    if (t.length > 2) throw new SelinuxPolicyError(file, `trailing data '${t.slice(2).join(' ')}'`, i + 1);
    aliases.set(toBytes(t[0]!), toBytes(t[1]!));
  });
  return aliases;
}

/** `SELINUXTYPE` from /etc/selinux/config (first `KEY=VALUE` line whose key is it, case-insensitive). */
export function selinuxTypeOfConfig(data: Uint8Array): string | undefined {
  for (const line of Buffer.from(data).toString('utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    if (line.slice(0, eq).trim().toUpperCase() === 'SELINUXTYPE') return line.slice(eq + 1).trim();
  }
  return undefined;
}

const META = new Set([...'.[]()*+?{}|^$\\']);

/**
 * The literal bytes every match of `regex` starts with ('' when unsure). Conservative: stops at the
 * first metacharacter, drops the last literal if a quantifier follows it, and gives up on any
 * top-level alternation.
 */
export function literalPrefix(regex: ByteString): ByteString {
  // top-level '|' (outside groups and classes) → no common prefix
  let depth = 0;
  let inClass = false;
  for (let i = 0; i < regex.length; i++) {
    const c = regex[i]!;
    if (c === '\\') {
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) return '';
  }
  let out = '';
  let i = 0;
  while (i < regex.length) {
    const c = regex[i]!;
    let lit: string;
    let len: number;
    if (c === '\\') {
      const n = regex[i + 1];
      // an escaped punctuation char is itself; \d, \w, \s, \b, … are classes or assertions
      if (n === undefined || /[0-9A-Za-z]/.test(n)) break;
      lit = n;
      len = 2;
    } else if (META.has(c)) break;
    else {
      lit = c;
      len = 1;
    }
    const q = regex[i + len];
    if (q === '?' || q === '*' || q === '{') break; // optional or repeated: not a sure prefix
    out += lit;
    i += len;
    if (q === '+') break; // one copy is sure, more are not literal
  }
  return out;
}

interface CompiledRule extends FileContextRule {
  index: number;
  prefix: ByteString;
  re: RegExp | undefined;
}

/** Bucket key of a path: its first component ('/usr/lib' → 'usr', '/' → ''). */
function bucketOfPath(path: ByteString): ByteString {
  const slash = path.indexOf('/', 1);
  return slash < 0 ? path.slice(1) : path.slice(1, slash);
}

/** A compiled policy: `lookup(path, type)` → context, or undefined for "no label". */
export class SelinuxPolicy {
  readonly rules: readonly FileContextRule[];
  readonly aliases: ReadonlyMap<ByteString, ByteString>;
  private readonly compiled: CompiledRule[];
  /** Rules whose prefix holds a whole first component ('/usr/…'), by that component. */
  private readonly buckets = new Map<ByteString, CompiledRule[]>();
  /** Rules whose prefix ends inside the first component ('/us', '/', ''), with that partial component. */
  private readonly partial: Array<[ByteString, CompiledRule]> = [];
  private readonly merged = new Map<ByteString, CompiledRule[]>();

  constructor(files: SelinuxPolicyFiles) {
    const rules = [
      ...parseFileContexts(files.fileContexts, 'file_contexts'),
      ...(files.local ? parseFileContexts(files.local, 'file_contexts.local') : []),
      ...(files.homedirs ? parseFileContexts(files.homedirs, 'file_contexts.homedirs') : []),
    ];
    const aliases = new Map<ByteString, ByteString>();
    if (files.subs) parseSubstitutions(files.subs, 'file_contexts.subs', aliases);
    if (files.subsDist) parseSubstitutions(files.subsDist, 'file_contexts.subs_dist', aliases);
    this.rules = rules;
    this.aliases = aliases;
    this.compiled = rules.map((r, index) => ({ ...r, index, prefix: literalPrefix(r.regex), re: undefined }));
    // Compile every pattern up front so a bad one is reported (with its line) even if nothing matches it.
    for (const r of this.compiled) {
      r.re = compileRule(r);
      const slash = r.prefix.startsWith('/') ? r.prefix.indexOf('/', 1) : -1;
      if (slash < 0) this.partial.push([r.prefix.startsWith('/') ? r.prefix.slice(1) : '', r]);
      else {
        const b = r.prefix.slice(1, slash);
        let list = this.buckets.get(b);
        if (!list) this.buckets.set(b, (list = []));
        list.push(r);
      }
    }
  }

  private candidates(path: ByteString): CompiledRule[] {
    const b = bucketOfPath(path);
    let list = this.merged.get(b);
    if (!list) {
      // last line wins: test in descending line order
      const partial = this.partial.filter(([k]) => b.startsWith(k)).map(([, r]) => r);
      list = [...partial, ...(this.buckets.get(b) ?? [])].sort((x, y) => y.index - x.index);
      this.merged.set(b, list);
    }
    return list;
  }

  /** The rule deciding `path` (absolute byte string) of file-type char `type`, if any. */
  match(path: ByteString, type: string): FileContextRule | undefined {
    const key = path + type;
    for (const r of this.candidates(path)) {
      if (!path.startsWith(r.prefix)) continue;
      if (r.re!.test(key)) return r;
    }
    return undefined;
  }

  /** Context for `path`/`type`, or undefined: no rule matches or the rule says `<<none>>`. */
  lookup(path: ByteString, type: string): ByteString | undefined {
    const r = this.match(path, type);
    return r === undefined || r.context === NO_CONTEXT ? undefined : r.context;
  }
}

function compileRule(r: FileContextRule): RegExp {
  const type = r.fileType === undefined ? '.' : r.fileType === '-' ? '-' : r.fileType;
  try {
    return new RegExp(`^(?:${r.regex})${type}$`, 's');
  } catch (e) {
    throw new SelinuxPolicyError(r.file, `invalid regular expression '${r.regex}': ${(e as Error).message}`, r.line);
  }
}

/** The selabel_file(5) type char of an inode. */
export function fileTypeChar(inode: Inode): string {
  switch (inode.type) {
    case 'dir': return 'd';
    case 'reg': return '-';
    case 'lnk': return 'l';
    case 'fifo': return 'p';
    case 'sock': return 's';
    case 'blk': return 'b';
    case 'chr': return 'c';
  }
}

const joinPath = (dir: ByteString, name: ByteString): ByteString => (dir.endsWith('/') ? dir + name : `${dir}/${name}`);

/**
 * Labels every inode of `fs` from the policy (see the file comment). Mutates and returns `fs`.
 * Throws SelinuxPolicyError for malformed policy files (before touching the tree).
 */
export function selinuxRelabel(fs: FileSystem, files: SelinuxPolicyFiles | SelinuxPolicy): FileSystem {
  const policy = files instanceof SelinuxPolicy ? files : new SelinuxPolicy(files);
  const label = (inode: Inode, path: ByteString): void => {
    const ctx = policy.lookup(path, fileTypeChar(inode));
    if (ctx === undefined) inode.xattrs.delete(SELINUX_XATTR);
    else inode.xattrs.set(SELINUX_XATTR, Buffer.from(ctx, 'latin1'));
  };
  // explicit stack, preorder, children in sorted order (pushed reversed)
  const stack: Array<[Inode, ByteString]> = [[fs.root, '/']];
  while (stack.length > 0) {
    const [inode, path] = stack.pop()!;
    label(inode, path);
    if (!inode.isDir) continue;
    const kids = inode.sortedEntries();
    for (let i = kids.length - 1; i >= 0; i--) {
      const [name, child] = kids[i]!;
      const p = joinPath(path, name);
      stack.push([child, policy.aliases.get(p) ?? p]);
    }
  }
  return fs;
}

/** Removes `security.selinux` from every inode. Mutates and returns `fs`. */
export function stripSelinuxLabels(fs: FileSystem): FileSystem {
  for (const inode of uniqueInodes(fs.root)) inode.xattrs.delete(SELINUX_XATTR);
  return fs;
}
