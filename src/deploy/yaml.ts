/**
 * A small YAML writer for JSON-like documents (the `bootc status` BootcHost document): block mappings in
 * insertion order, block sequences written like serde_yaml (`- ` at the parent key's indentation), `{}` / `[]`
 * for empty collections, `null`, `true`/`false`, integers.
 *
 * Strings are written plain only when no YAML 1.1 or 1.2 reader can take them for anything but the same
 * string: anything that looks like a number, a date/time, a boolean (`yes`, `off`, ...), null (`~`), that starts
 * with an indicator, contains `: ` / ` #`, has surrounding blanks or non-ASCII characters is quoted — single
 * quotes when printable, double quotes with escapes otherwise (control characters, line breaks, DEL, C1,
 * U+2028/2029, lone surrogates). Quoting more than needed is always correct; quoting less never is.
 */
import { BootcfsError } from '../errors.js';

export type YamlValue = null | boolean | number | string | YamlValue[] | { [key: string]: YamlValue };

/** YAML 1.1 and 1.2 implicit-typed words (null, booleans, special floats, merge and value keys). */
const RESERVED_WORDS = new Set([
  '~', 'null', 'Null', 'NULL',
  'y', 'Y', 'yes', 'Yes', 'YES', 'n', 'N', 'no', 'No', 'NO',
  'true', 'True', 'TRUE', 'false', 'False', 'FALSE', 'on', 'On', 'ON', 'off', 'Off', 'OFF',
  '.inf', '.Inf', '.INF', '+.inf', '+.Inf', '+.INF', '-.inf', '-.Inf', '-.INF', '.nan', '.NaN', '.NAN',
  '<<', '=',
]);

/** Characters that may not start a plain scalar (or make one ambiguous) in any context. */
const BAD_FIRST = new Set([...'-?:,[]{}#&*!|>\'"%@`']);

/** True when `s` can be written as a plain scalar and read back as the same string by YAML 1.1 and 1.2 readers. */
export function isSafePlainScalar(s: string): boolean {
  if (s.length === 0 || RESERVED_WORDS.has(s)) return false;
  if (!/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(s)) return false; // printable ASCII, no edge blanks
  if (BAD_FIRST.has(s[0]!)) return false;
  if (s.includes(': ') || s.includes(' #') || s.endsWith(':')) return false;
  // flow indicators would be fine in block context, but a reader in flow context would split on them
  if (/[,[\]{}]/.test(s)) return false;
  // number-, date- and time-like words (ints in any base, floats, sexagesimal, timestamps): quote them all
  if (/^[-+.0-9]/.test(s) && /^[-+.0-9A-Za-z_: ]*$/.test(s)) return false;
  return true;
}

function quoteSingle(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

function quoteDouble(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i]!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029 || c === 0xfeff || c === 0xfffe || c === 0xffff) {
      out += `\\u${c.toString(16).padStart(4, '0')}`;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const next = s.charCodeAt(i + 1);
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        out += ch + s[i + 1]!;
        i++;
      } else {
        throw new BootcfsError('EINVAL', 'YAML: a string contains a lone UTF-16 surrogate (not representable)');
      }
    } else out += ch;
  }
  return `${out}"`;
}

/** A YAML scalar for a string (plain, single- or double-quoted). */
export function yamlString(s: string): string {
  if (isSafePlainScalar(s)) return s;
  // single quotes cannot escape anything: only printable characters without line breaks
  // (U+2028/2029 are line breaks to a YAML reader)
  if (/^[\x20-\x7e\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]*$/.test(s)) return quoteSingle(s);
  return quoteDouble(s);
}

function scalar(v: null | boolean | number | string): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new BootcfsError('EINVAL', `YAML: only safe integers are supported, not ${v}`);
    return String(v);
  }
  return yamlString(v);
}

const isCollection = (v: YamlValue): v is YamlValue[] | { [key: string]: YamlValue } => v !== null && typeof v === 'object';
const isEmpty = (v: YamlValue[] | { [key: string]: YamlValue }): boolean => (Array.isArray(v) ? v.length === 0 : Object.keys(v).length === 0);

function emit(v: YamlValue, indent: string, out: string[]): void {
  if (Array.isArray(v)) {
    for (const item of v) {
      if (isCollection(item) && !isEmpty(item)) {
        // first line of the item follows "- ", the rest is indented by two more
        const sub: string[] = [];
        emit(item, `${indent}  `, sub);
        sub[0] = `${indent}- ${sub[0]!.slice(indent.length + 2)}`;
        out.push(...sub);
      } else out.push(`${indent}- ${isCollection(item) ? (Array.isArray(item) ? '[]' : '{}') : scalar(item)}`);
    }
    return;
  }
  if (v === null || typeof v !== 'object') throw new BootcfsError('EINTERNAL', 'YAML: emit() needs a collection');
  for (const [key, value] of Object.entries(v)) {
    const k = yamlString(key);
    if (isCollection(value) && !isEmpty(value)) {
      out.push(`${indent}${k}:`);
      emit(value, Array.isArray(value) ? indent : `${indent}  `, out);
    } else {
      out.push(`${indent}${k}: ${isCollection(value) ? (Array.isArray(value) ? '[]' : '{}') : scalar(value)}`);
    }
  }
}

/** The YAML document for `value` (no `---` header), ending in a newline. */
export function toYaml(value: YamlValue): string {
  if (!isCollection(value)) return `${scalar(value)}\n`;
  if (isEmpty(value)) return Array.isArray(value) ? '[]\n' : '{}\n';
  const out: string[] = [];
  emit(value, '', out);
  return `${out.join('\n')}\n`;
}
