/**
 * Boot Loader Specification Type 1 entries (`loader/entries/*.conf`), reader and writer, with bootc's
 * naming conventions for the composefs backend (bootc-composefs.md §2.4).
 *
 * Format: one `key value` per line (split at the first run of whitespace), `#` comments, blank lines
 * ignored. Keys that may repeat (`initrd`, `devicetree-overlay`, unknown keys) keep their order.
 * Serialisation order follows bootc: title, version, linux, initrd…, options | efi/uki, machine-id,
 * sort-key, then other keys.
 *
 * Sealed boots use UKIs (Type 2, signed); a Type 1 entry points at a bare kernel whose command line and
 * initrd are not signed. bootcfs never signs a bare kernel (trap T12 in sealed-boot-prototype.md).
 */
import { ParseError } from '../errors.js';

export interface BlsEntry {
  title?: string;
  version?: string;
  machineId?: string;
  sortKey?: string;
  linux?: string;
  initrd: string[];
  efi?: string;
  uki?: string;
  /** `options` lines, each as written (several lines are joined with a space by boot loaders). */
  options: string[];
  devicetree?: string;
  architecture?: string;
  /** Any other key, in file order. */
  extra: Array<[string, string]>;
}

const KNOWN = new Set(['title', 'version', 'machine-id', 'sort-key', 'linux', 'initrd', 'efi', 'uki', 'options', 'devicetree', 'architecture']);

export function parseBlsEntry(text: string, name = 'entry.conf'): BlsEntry {
  const e: BlsEntry = { initrd: [], options: [], extra: [] };
  const lines = text.split('\n');
  const single = (key: string, value: string, line: number): string => {
    if (value === '') throw new ParseError(`${name}: ${key} has no value`, line);
    return value;
  };
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    const l = raw.replace(/\r$/, '').trim();
    if (l === '' || l.startsWith('#')) return;
    const m = /^(\S+)(?:\s+(.*))?$/.exec(l)!;
    const key = m[1]!;
    const value = (m[2] ?? '').trim();
    switch (key) {
      case 'title': e.title = value; break;
      case 'version': e.version = single(key, value, line); break;
      case 'machine-id': e.machineId = single(key, value, line); break;
      case 'sort-key': e.sortKey = single(key, value, line); break;
      case 'linux': e.linux = single(key, value, line); break;
      case 'initrd': e.initrd.push(single(key, value, line)); break;
      case 'efi': e.efi = single(key, value, line); break;
      case 'uki': e.uki = single(key, value, line); break;
      case 'options': if (value !== '') e.options.push(value); break;
      case 'devicetree': e.devicetree = single(key, value, line); break;
      case 'architecture': e.architecture = single(key, value, line); break;
      default: e.extra.push([key, value]);
    }
  });
  const kinds = [e.linux, e.efi, e.uki].filter((x) => x !== undefined).length;
  if (kinds !== 1) throw new ParseError(`${name}: an entry needs exactly one of linux, efi or uki (found ${kinds})`);
  return e;
}

export function writeBlsEntry(e: BlsEntry): string {
  const out: string[] = [];
  const put = (k: string, v: string | undefined): void => {
    if (v === undefined) return;
    if (/[\n\r]/.test(v)) throw new ParseError(`BLS ${k} value contains a line break`);
    out.push(`${k} ${v}`);
  };
  put('title', e.title);
  put('version', e.version);
  put('linux', e.linux);
  for (const i of e.initrd) put('initrd', i);
  for (const o of e.options) put('options', o);
  put('efi', e.efi);
  put('uki', e.uki);
  put('devicetree', e.devicetree);
  put('architecture', e.architecture);
  put('machine-id', e.machineId);
  put('sort-key', e.sortKey);
  for (const [k, v] of e.extra) {
    if (KNOWN.has(k) || !/^[A-Za-z0-9._-]+$/.test(k)) throw new ParseError(`BLS extra key '${k}' is not allowed`);
    put(k, v);
  }
  return out.join('\n') + '\n';
}

/** The effective command line of an entry (all `options` lines joined). */
export function entryOptions(e: BlsEntry): string {
  return e.options.join(' ');
}

// ------------------------------------------------------------------------------------------------
// bootc naming (bootc-composefs.md §2.4)

/** Directory (Type 1) holding `vmlinuz` and `initrd` of a deployment. */
export const type1Dir = (digestHex: string): string => `bootc_composefs-${digestHex}`;
/** UKI file name of a deployment (under EFI/Linux/bootc/). */
export const ukiFileName = (digestHex: string): string => `bootc_composefs-${digestHex}.efi`;
export const UKI_DIR = 'EFI/Linux/bootc';

/** `bootc_<os_id with - → _>-<version>-<priority>.conf`; priority 1 = primary, 0 = secondary. */
export function entryFileName(osId: string, version: string, primary: boolean): string {
  return `bootc_${osId.replace(/-/g, '_')}-${version}-${primary ? 1 : 0}.conf`;
}

/** `bootc-<os_id>-0` for the primary entry, `-1` for the secondary (rollback). */
export function sortKey(osId: string, primary: boolean): string {
  return `bootc-${osId}-${primary ? 0 : 1}`;
}

/**
 * BLS ordering as systemd-boot applies it: entries with a sort-key first, by sort-key ascending, then
 * machine-id ascending, then version descending (version comparison per the UAPI version format spec);
 * entries without sort-key after them, by file name descending... (here: by version descending).
 */
export function compareEntries(a: BlsEntry & { fileName?: string }, b: BlsEntry & { fileName?: string }): number {
  if ((a.sortKey === undefined) !== (b.sortKey === undefined)) return a.sortKey === undefined ? 1 : -1;
  if (a.sortKey !== undefined && b.sortKey !== undefined) {
    const c = cmpStr(a.sortKey, b.sortKey);
    if (c !== 0) return c;
    const m = cmpStr(a.machineId ?? '', b.machineId ?? '');
    if (m !== 0) return m;
    const v = compareVersions(a.version ?? '', b.version ?? '');
    if (v !== 0) return -v;
  }
  return -compareVersions(a.fileName ?? a.version ?? '', b.fileName ?? b.version ?? '');
}

function cmpStr(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** UAPI version comparison (systemd's strverscmp_improved), enough for BLS ordering. */
export function compareVersions(a: string, b: string): number {
  const isAlnum = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9]/.test(c);
  let i = 0;
  let j = 0;
  for (;;) {
    while (i < a.length && !isAlnum(a[i]) && !'~-^.'.includes(a[i]!)) i++;
    while (j < b.length && !isAlnum(b[j]) && !'~-^.'.includes(b[j]!)) j++;
    // '~' sorts before everything, even the end
    if (a[i] === '~' || b[j] === '~') {
      if (a[i] !== '~') return 1;
      if (b[j] !== '~') return -1;
      i++; j++; continue;
    }
    if (i >= a.length || j >= b.length) return i >= a.length ? (j >= b.length ? 0 : -1) : 1;
    for (const sep of ['-', '^', '.']) {
      if (a[i] === sep || b[j] === sep) {
        if (a[i] !== sep) return 1;
        if (b[j] !== sep) return -1;
        i++; j++;
      }
    }
    if (i >= a.length || j >= b.length) continue;
    const da = /[0-9]/.test(a[i]!);
    const db = /[0-9]/.test(b[j]!);
    if (da !== db) return da ? 1 : -1;
    if (da) {
      while (a[i] === '0') i++;
      while (b[j] === '0') j++;
      let ea = i;
      let eb = j;
      while (ea < a.length && /[0-9]/.test(a[ea]!)) ea++;
      while (eb < b.length && /[0-9]/.test(b[eb]!)) eb++;
      if (ea - i !== eb - j) return ea - i < eb - j ? -1 : 1;
      const c = cmpStr(a.slice(i, ea), b.slice(j, eb));
      if (c !== 0) return c;
      i = ea; j = eb;
    } else {
      let ea = i;
      let eb = j;
      while (ea < a.length && /[A-Za-z]/.test(a[ea]!)) ea++;
      while (eb < b.length && /[A-Za-z]/.test(b[eb]!)) eb++;
      const c = cmpStr(a.slice(i, ea), b.slice(j, eb));
      if (c !== 0) return c;
      i = ea; j = eb;
    }
  }
}
