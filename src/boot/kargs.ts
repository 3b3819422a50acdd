/**
 * Kernel arguments: bootc's `/usr/lib/bootc/kargs.d/*.toml` files and command-line handling.
 *
 * kargs.d format (bootc-composefs.md §2.5): TOML files with `kargs = ["a", "b=c"]` and optionally
 * `match-architectures = ["x86_64", "aarch64"]` (Rust architecture names); only `*.toml` files, read in
 * byte order of their names; a file whose match-architectures does not include the target is skipped.
 * Only this subset of TOML is accepted (strings in arrays, comments, several lines); anything else is a
 * ParseError naming the file and line, because a silently dropped karg would change a sealed UKI.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BootcfsError, ParseError } from '../errors.js';

export const KARGS_D = 'usr/lib/bootc/kargs.d';

export interface KargsFile {
  kargs: string[];
  matchArchitectures?: string[];
}

/** Node's process.arch → the Rust names kargs.d uses. */
export function rustArch(nodeArch: string = process.arch): string {
  const map: Record<string, string> = { x64: 'x86_64', arm64: 'aarch64', ia32: 'x86', arm: 'arm', ppc64: 'powerpc64', s390x: 's390x', riscv64: 'riscv64' };
  return map[nodeArch] ?? nodeArch;
}

/** Parses one kargs.d TOML document (the subset bootc uses). `name` is used in error messages. */
export function parseKargsToml(text: string, name = 'kargs.toml'): KargsFile {
  const out: KargsFile = { kargs: [] };
  const seen = new Set<string>();
  let i = 0;
  let line = 1;
  const err = (msg: string): never => {
    throw new ParseError(`${name}: ${msg}`, line);
  };
  const skipSpaceAndComments = (newlines: boolean): void => {
    for (;;) {
      const c = text[i];
      if (c === ' ' || c === '\t' || c === '\r') i++;
      else if (c === '#') while (i < text.length && text[i] !== '\n') i++;
      else if (c === '\n' && newlines) {
        i++;
        line++;
      } else return;
    }
  };
  const parseString = (): string => {
    const q = text[i];
    i++;
    let s = '';
    if (q === "'") {
      while (i < text.length && text[i] !== "'" && text[i] !== '\n') s += text[i++];
      if (text[i] !== "'") err('unterminated literal string');
      i++;
      return s;
    }
    for (;;) {
      const c = text[i];
      if (c === undefined || c === '\n') err('unterminated string');
      if (c === '"') {
        i++;
        return s;
      }
      if (c === '\\') {
        const e = text[i + 1];
        const simple: Record<string, string> = { '"': '"', '\\': '\\', n: '\n', t: '\t', r: '\r', b: '\b', f: '\f' };
        if (e !== undefined && simple[e] !== undefined) {
          s += simple[e];
          i += 2;
        } else if (e === 'u' || e === 'U') {
          const n = e === 'u' ? 4 : 8;
          const hex = text.slice(i + 2, i + 2 + n);
          if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== n) err('bad unicode escape');
          s += String.fromCodePoint(parseInt(hex, 16));
          i += 2 + n;
        } else err(`unknown escape \\${e ?? ''}`);
        continue;
      }
      s += c;
      i++;
    }
  };
  const parseArray = (): string[] => {
    if (text[i] !== '[') err('expected an array of strings');
    i++;
    const items: string[] = [];
    for (;;) {
      skipSpaceAndComments(true);
      if (text[i] === ']') {
        i++;
        return items;
      }
      if (text[i] !== '"' && text[i] !== "'") err('expected a string in the array');
      items.push(parseString());
      skipSpaceAndComments(true);
      if (text[i] === ',') i++;
      else if (text[i] !== ']') err("expected ',' or ']'");
    }
  };
  for (;;) {
    skipSpaceAndComments(true);
    if (i >= text.length) break;
    const m = /^[A-Za-z0-9_-]+/.exec(text.slice(i, i + 64));
    if (!m) err(text[i] === '[' ? 'tables are not supported in kargs.d files' : 'expected a key');
    const key = m![0];
    i += key.length;
    skipSpaceAndComments(false);
    if (text[i] !== '=') err(`expected '=' after ${key}`);
    i++;
    skipSpaceAndComments(false);
    if (seen.has(key)) err(`duplicate key ${key}`);
    seen.add(key);
    const value = parseArray();
    if (key === 'kargs') out.kargs = value;
    else if (key === 'match-architectures') out.matchArchitectures = value;
    else err(`unknown key ${key} (expected kargs or match-architectures)`);
    skipSpaceAndComments(false);
    if (i < text.length && text[i] !== '\n') err('unexpected text after the value');
  }
  if (!seen.has('kargs')) err('no kargs key');
  for (const k of out.kargs) {
    if (k.length === 0 || /\s/.test(k)) throw new ParseError(`${name}: karg ${JSON.stringify(k)} is empty or contains whitespace`);
  }
  return out;
}

/**
 * The kargs of a root tree's `usr/lib/bootc/kargs.d` (files sorted by name, `.toml` only, filtered by
 * architecture). `readFile(relPath)` lets callers read from a directory or from an image tree.
 */
export async function kargsFromFiles(files: Array<{ name: string; text: string }>, arch = rustArch()): Promise<string[]> {
  const out: string[] = [];
  const sorted = files.filter((f) => f.name.endsWith('.toml')).sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  for (const f of sorted) {
    const parsed = parseKargsToml(f.text, `${KARGS_D}/${f.name}`);
    if (parsed.matchArchitectures !== undefined && !parsed.matchArchitectures.includes(arch)) continue;
    out.push(...parsed.kargs);
  }
  return out;
}

/** kargs.d of a root directory on disk (missing directory → no kargs). */
export async function kargsFromRootDirectory(root: string, arch = rustArch()): Promise<string[]> {
  const dir = path.join(root, KARGS_D);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new BootcfsError('EIO', `cannot read ${dir}: ${(e as Error).message}`);
  }
  const files: Array<{ name: string; text: string }> = [];
  for (const name of names) {
    if (!name.endsWith('.toml')) continue;
    const st = await fsp.stat(path.join(dir, name));
    if (!st.isFile()) continue;
    files.push({ name, text: await fsp.readFile(path.join(dir, name), 'utf8') });
  }
  return kargsFromFiles(files, arch);
}

/**
 * Splits a kernel command line the way the kernel does: whitespace-separated, double quotes group
 * (the quotes stay in the argument, as in /proc/cmdline).
 */
export function splitCmdline(cmdline: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of cmdline) {
    if (c === '"') quoted = !quoted;
    if (!quoted && /\s/.test(c)) {
      if (cur) out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (cur) out.push(cur);
  return out;
}

/** The value of the LAST `key=` argument (the kernel and systemd take the last one), or undefined. */
export function lastKarg(args: readonly string[], key: string): string | undefined {
  let v: string | undefined;
  for (const a of args) if (a.startsWith(`${key}=`)) v = a.slice(key.length + 1);
  return v;
}

export interface ComposefsKarg {
  digest: string;
  /** `composefs=?<digest>`: fs-verity not required */
  verityOptional: boolean;
}

/** Parses the `composefs=[?]<hex>` argument (64 or 128 lowercase hex digits); the last one wins. */
export function composefsKarg(cmdline: string | readonly string[]): ComposefsKarg | undefined {
  const args = typeof cmdline === 'string' ? splitCmdline(cmdline) : cmdline;
  const v = lastKarg(args, 'composefs');
  if (v === undefined) return undefined;
  const verityOptional = v.startsWith('?');
  const digest = verityOptional ? v.slice(1) : v;
  if (!/^([0-9a-f]{64}|[0-9a-f]{128})$/.test(digest)) {
    throw new BootcfsError('EFORMAT', `composefs= argument is not a 64- or 128-digit lowercase hex digest: ${JSON.stringify(v)}`);
  }
  return { digest, verityOptional };
}

/** `composefs=<digest>` or `composefs=?<digest>`. */
export function composefsArg(digestHex: string, verityOptional: boolean): string {
  return `composefs=${verityOptional ? '?' : ''}${digestHex}`;
}
