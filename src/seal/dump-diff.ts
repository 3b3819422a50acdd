/**
 * Entry-by-entry comparison of two composefs dumpfiles (as written by writeDumpfile: one line per path,
 * space-separated escaped fields). Used to explain why an image's digest differs from the one sealed.
 */
export interface DumpDifference {
  path: string;
  kind: 'added' | 'removed' | 'changed';
  /** for `changed`: names of the fields that differ */
  fields?: string[];
}

const FIELDS = ['size', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'mtime', 'payload', 'content', 'digest'];

function index(dump: Buffer): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of dump.toString('latin1').split('\n')) {
    if (line === '') continue;
    const f = line.split(' ');
    m.set(f[0]!, f.slice(1));
  }
  return m;
}

/** Differences going from `sealed` to `current`, in path order. */
export function diffDumpfiles(sealed: Buffer, current: Buffer): DumpDifference[] {
  const a = index(sealed);
  const b = index(current);
  const out: DumpDifference[] = [];
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  for (const p of paths) {
    const x = a.get(p);
    const y = b.get(p);
    const shown = p.replace(/[^\x20-\x7e]/g, '?');
    if (x === undefined) out.push({ path: shown, kind: 'added' });
    else if (y === undefined) out.push({ path: shown, kind: 'removed' });
    else {
      const fields: string[] = [];
      const n = Math.max(x.length, y.length);
      for (let i = 0; i < Math.min(n, FIELDS.length); i++) if (x[i] !== y[i]) fields.push(FIELDS[i]!);
      if (x.slice(FIELDS.length).join(' ') !== y.slice(FIELDS.length).join(' ')) fields.push('xattrs');
      if (fields.length > 0) out.push({ path: shown, kind: 'changed', fields });
    }
  }
  return out;
}
