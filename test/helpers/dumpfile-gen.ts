/**
 * Seeded mutations of valid dumpfiles, for acceptance-parity tests of the dumpfile parser against
 * mkcomposefs: each mutation is a small, plausible mistake (a bad field, a stray byte, a missing or
 * repeated line, a hardlink to a wrong place...) so that both accepted and rejected inputs come out.
 * Works on latin1 byte strings.
 */
import { Rng } from './rng.js';

/** Field values that exercise the parser's corners (numbers, escapes, modes, paths, dashes). */
const FIELD_TOKENS = [
  '', '-', '\\x2d', '0', '1', '+1', '-1', '\t7', '\v7', '08', '0x10', '18446744073709551615',
  '18446744073709551616', '99999999999999999999999', '4294967296', '9007199254740993',
  '1.2', '1.', '.1', '1.2.3', '-1.-1', '0.4294967296', 'a', '\\', '\\q', '\\x4', '\\xZZ', '\\x41',
  '\\x00', 'a\\x00b', '\\n', '@100644', '@40755', '@120777', '100644', '40755', '120777', '20644',
  '60644', '10644', '140644', '170644', '644', '@', '/', '//', '/.', '/..', '/a/', 'x/y', '/nonexistent',
  '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef', 'abc', 'ab/cdef', '=', 'a=b',
];

const INSERT_BYTES = [' ', '\\', '=', '\0', '\n', '\t', '-', '/', '@', '.', 'x', '0', '9', '\x80', '\r', '+'];

const MODES = [
  '@100644', '@40755', '@120777', '@20000', '0', '170000', '777', '20000', '60000', '10644',
  '140644', '120777', '100644', '40755', '20644',
];

function splitLines(text: string): { lines: string[]; terminated: boolean } {
  const terminated = text.endsWith('\n');
  const body = terminated ? text.slice(0, -1) : text;
  return { lines: body.length === 0 ? [] : body.split('\n'), terminated };
}

function pathOf(line: string): string {
  const sp = line.indexOf(' ');
  return sp < 0 ? line : line.slice(0, sp);
}

/** Apply 1–3 random mutations to a dumpfile (latin1 Buffer). */
export function mutateDumpfile(rng: Rng, dump: Buffer): Buffer {
  let { lines, terminated } = splitLines(dump.toString('latin1'));
  const rounds = rng.int(1, 3);
  for (let round = 0; round < rounds; round++) {
    if (lines.length === 0) lines.push('/ 0 40755 1 0 0 0 0.0 - - -');
    const li = rng.int(0, lines.length - 1);
    const line = lines[li]!;
    const fields = line.split(' ');
    const op = rng.int(0, 13);
    switch (op) {
      case 0: case 1: { // replace one field with a corner value
        const fi = rng.int(0, Math.max(fields.length, 11) - 1);
        while (fields.length <= fi) fields.push('-');
        fields[fi] = rng.pick(FIELD_TOKENS);
        lines[li] = fields.join(' ');
        break;
      }
      case 2: { // insert a byte
        const at = rng.int(0, line.length);
        lines[li] = line.slice(0, at) + rng.pick(INSERT_BYTES) + line.slice(at);
        break;
      }
      case 3: { // delete a byte
        if (line.length === 0) break;
        const at = rng.int(0, line.length - 1);
        lines[li] = line.slice(0, at) + line.slice(at + 1);
        break;
      }
      case 4: { // drop a field
        fields.splice(rng.int(0, fields.length - 1), 1);
        lines[li] = fields.join(' ');
        break;
      }
      case 5: { // append xattr-like fields
        const extra = rng.pick(['a=b', '=', 'a', 'user.x=\\x3d', '', 'user.a=1 user.a=2', 'k\\x00z=v', `user.${'k'.repeat(250)}=v`, `a=${'v'.repeat(33000)}`]);
        lines[li] = `${line} ${extra}`;
        break;
      }
      case 6: { // duplicate, remove, swap or move a line
        const k = rng.int(0, 3);
        const other = rng.int(0, lines.length - 1);
        if (k === 0) lines.splice(other, 0, line);
        else if (k === 1) lines.splice(li, 1);
        else if (k === 2) [lines[li], lines[other]] = [lines[other]!, line];
        else { lines.splice(li, 1); lines.unshift(line); }
        break;
      }
      case 7: { // change the mode
        while (fields.length < 3) fields.push('0');
        fields[2] = rng.pick(MODES);
        lines[li] = fields.join(' ');
        break;
      }
      case 8: case 9: { // make the line a hardlink to another entry, maybe a later one
        while (fields.length < 11) fields.push('-');
        const target = rng.bool(0.85) ? pathOf(lines[rng.int(0, lines.length - 1)]!) : rng.pick(['/', '-', '/nope', '//', pathOf(line)]);
        if (!fields[2]!.startsWith('@')) fields[2] = `@${fields[2]}`;
        fields[8] = target;
        lines[li] = fields.join(' ');
        break;
      }
      case 10: // newline handling at the end of the file
        if (rng.bool(0.5)) terminated = !terminated;
        else lines.push('');
        break;
      case 11: { // spell a path byte as a hex escape (valid), or a NUL escape (truncates in C)
        const p = fields[0]!;
        if (p.length < 2) break;
        const at = rng.int(1, p.length - 1);
        const esc = rng.bool(0.8) ? `\\x${p.charCodeAt(at).toString(16).padStart(2, '0').toUpperCase()}` : '\\x00';
        fields[0] = p.slice(0, at) + esc + p.slice(at + 1);
        lines[li] = fields.join(' ');
        break;
      }
      case 12: { // size / content / payload mismatch
        while (fields.length < 11) fields.push('-');
        const k = rng.int(0, 3);
        if (k === 0) fields[1] = String(Number(fields[1]) + rng.pick([-1, 1]));
        else if (k === 1) fields[9] = rng.pick(['-', '', 'x', '\\x2d', 'c'.repeat(rng.int(4990, 5010))]);
        else if (k === 2) fields[8] = rng.pick(['-', '', 'x', 'p'.repeat(rng.int(4094, 4097))]);
        else fields[10] = rng.pick(['-', '', 'ab', 'zz', '0'.repeat(rng.int(60, 70))]);
        lines[li] = fields.join(' ');
        break;
      }
      default: { // an extra space somewhere between fields
        const fi = rng.int(1, fields.length);
        fields.splice(fi, 0, '');
        lines[li] = fields.join(' ');
        break;
      }
    }
  }
  return Buffer.from(lines.join('\n') + (terminated ? '\n' : ''), 'latin1');
}
