/**
 * Escaping rules of the composefs dumpfile format (composefs-dump(5)).
 *
 * All strings here are byte strings (latin1, one char per byte; see src/tree/model.ts).
 *
 * Reading (mkcomposefs 1.0.8 `unescape_string`): `\\`, `\n`, `\r`, `\t` and `\xHH` (hex digits in
 * either case) are the only escapes; any other character after `\`, a dangling `\` or a short `\x`
 * is an error. Every other byte is taken literally — including `=`, bytes >= 0x80 and control bytes
 * such as TAB (raw NUL is rejected by the line reader before any unescaping happens).
 *
 * Writing (composefs-info 1.0.8 `print_escaped`): `\` `LF` `CR` `TAB` get their short escapes; any
 * other byte that is not "graphic" in the C locale (i.e. outside 0x21–0x7e, so space, controls and
 * every byte >= 0x80) becomes `\xHH` with lowercase hex; `=` becomes `\x3d` only when the field is an
 * xattr key/value; a field that is exactly `-` becomes `\x2d` only where `-` would mean "absent".
 */

/** Thrown by {@link unescapeDumpField}; the parser turns it into a ParseError with the line number. */
export class DumpEscapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DumpEscapeError';
  }
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x61 && code <= 0x66) return code - 0x61 + 10;
  if (code >= 0x41 && code <= 0x46) return code - 0x41 + 10;
  return -1;
}

/**
 * Unescape `text.slice(start, end)` exactly as mkcomposefs does. Returns the unescaped byte string
 * (which may contain NUL bytes; callers that C treats as C strings truncate with {@link cString}).
 * @throws DumpEscapeError on a malformed escape.
 */
export function unescapeDumpField(text: string, start = 0, end = text.length): string {
  const firstBackslash = text.indexOf('\\', start);
  if (firstBackslash < 0 || firstBackslash >= end) return text.slice(start, end);
  let out = text.slice(start, firstBackslash);
  let i = firstBackslash;
  let runStart = i;
  while (i < end) {
    if (text.charCodeAt(i) !== 0x5c) {
      i++;
      continue;
    }
    out += text.slice(runStart, i);
    i++;
    if (i >= end) throw new DumpEscapeError('No character after escape');
    const c = text[i++]!;
    switch (c) {
      case '\\': out += '\\'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'x': {
        if (i >= end) throw new DumpEscapeError('No hex characters after hex escape');
        const hi = hexValue(text.charCodeAt(i++));
        if (i >= end) throw new DumpEscapeError('No hex characters after hex escape');
        const lo = hexValue(text.charCodeAt(i++));
        if (hi < 0 || lo < 0) throw new DumpEscapeError('Invalid hex characters after hex escape');
        out += String.fromCharCode((hi << 4) | lo);
        break;
      }
      default:
        throw new DumpEscapeError(`Unsupported escape type ${c}`);
    }
    runStart = i;
  }
  return out + text.slice(runStart, end);
}

/** The part of a byte string that C sees when it treats it as a NUL-terminated string. */
export function cString(s: string): string {
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

/** Escaping variants used by composefs-info's printer. */
export enum EscapeFlags {
  Standard = 0,
  /** `=` → `\x3d` (xattr keys and values). */
  Equal = 1,
  /** A value that is exactly `-` → `\x2d` (optional fields where `-` means absent). */
  LoneDash = 2,
}

const HEX = '0123456789abcdef';
/** Per byte: the text composefs-info prints for it in Standard mode (`=` handled separately). */
const ESCAPED_BYTE: string[] = [];
for (let b = 0; b < 256; b++) {
  if (b === 0x5c) ESCAPED_BYTE.push('\\\\');
  else if (b === 0x0a) ESCAPED_BYTE.push('\\n');
  else if (b === 0x0d) ESCAPED_BYTE.push('\\r');
  else if (b === 0x09) ESCAPED_BYTE.push('\\t');
  else if (b >= 0x21 && b <= 0x7e) ESCAPED_BYTE.push(String.fromCharCode(b));
  else ESCAPED_BYTE.push(`\\x${HEX[b >> 4]}${HEX[b & 15]}`);
}
/** Bytes that can be copied through unchanged in every mode (graphic, not `\` and not `=`). */
const PLAIN = new Uint8Array(256);
for (let b = 0x21; b <= 0x7e; b++) PLAIN[b] = b === 0x5c || b === 0x3d ? 0 : 1;

/** Escape a byte string (latin1) the way composefs-info prints a field. */
export function escapeDumpField(value: string, flags: EscapeFlags = EscapeFlags.Standard): string {
  if ((flags & EscapeFlags.LoneDash) !== 0 && value === '-') return '\\x2d';
  const n = value.length;
  let i = 0;
  while (i < n && PLAIN[value.charCodeAt(i)] === 1) i++;
  if (i === n) return value;
  const escapeEqual = (flags & EscapeFlags.Equal) !== 0;
  let out = value.slice(0, i);
  for (; i < n; i++) {
    const b = value.charCodeAt(i);
    if (b === 0x3d) out += escapeEqual ? '\\x3d' : '=';
    else out += ESCAPED_BYTE[b & 0xff];
  }
  return out;
}

/** Escape raw bytes (e.g. inline content, xattr values). */
export function escapeDumpBytes(value: Uint8Array, flags: EscapeFlags = EscapeFlags.Standard): string {
  return escapeDumpField(Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('latin1'), flags);
}
