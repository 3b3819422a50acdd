/**
 * The tar reader against real tar writers and readers: random trees on disk (gen-disk-tree) archived
 * by GNU tar (`--format=pax --xattrs`) and by python3's tarfile (GNU and PAX formats, xattrs as
 * SCHILY.xattr records); our reader must report exactly what python's tarfile reports (paths, types,
 * sizes, modes, uid/gid, uname/gname, mtimes with nanoseconds, link targets, devices, xattrs from
 * `pax_headers`, contents) and exactly the lines of `tar --numeric-owner --full-time -tvf`; the raw
 * segments must concatenate to the archive bytes.
 *
 * Expected differences (documented, asserted):
 * - python strips trailing '/' from directory names; we report the raw path.
 * - GNU tar lists a negative PAX mtime with a fraction (`mtime=-1.25`) as -1 s + 0.25 (truncated
 *   seconds plus the fraction digits as written). POSIX (and Go's archive/tar, i.e. umoci) read it as
 *   -1.25 s = -2 s + 0.75 s; so do we.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tarSegments, type TarEntry } from '../../src/oci/tar.js';
import { generateDiskTree } from '../helpers/gen-disk-tree.js';
import { cases, isRoot, run } from '../helpers/ref.js';

const PY_LIST = String.raw`
import sys, json, tarfile, hashlib
from decimal import Decimal
import math
out = []
with tarfile.open(sys.argv[1], encoding='utf-8', errors='surrogateescape') as t:
    for m in t:
        b = lambda s: s.encode('utf-8', 'surrogateescape').hex()
        pax = m.pax_headers
        if 'mtime' in pax:
            d = Decimal(pax['mtime'])
            sec = math.floor(d)
            nsec = int((d - sec) * 1000000000)
        else:
            sec, nsec = int(m.mtime), 0
        xattrs = [[b(k[len('SCHILY.xattr.'):]), b(v)] for k, v in pax.items() if k.startswith('SCHILY.xattr.')]
        sha = None
        if m.isreg():
            sha = hashlib.sha256(t.extractfile(m).read()).hexdigest()
        out.append({'name': b(m.name), 'type': m.type.decode('latin1'), 'size': m.size, 'mode': m.mode,
                    'uid': m.uid, 'gid': m.gid, 'uname': b(m.uname), 'gname': b(m.gname), 'sec': sec, 'nsec': nsec,
                    'link': b(m.linkname), 'major': m.devmajor, 'minor': m.devminor, 'xattrs': xattrs, 'sha': sha})
print(json.dumps(out))
`;

const PY_CREATE = String.raw`
import sys, os, tarfile
src, dst, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
format = tarfile.GNU_FORMAT if fmt == 'gnu' else tarfile.PAX_FORMAT
def add_xattrs(ti):
    if format != tarfile.PAX_FORMAT:
        return ti
    p = os.path.join(os.fsencode(src), ti.name.encode('utf-8', 'surrogateescape'))
    for k in os.listxattr(p, follow_symlinks=False):
        try:
            k.encode('utf-8')
        except UnicodeEncodeError:
            continue  # tarfile cannot write non-UTF-8 PAX keywords
        v = os.getxattr(p, k, follow_symlinks=False)
        ti.pax_headers['SCHILY.xattr.' + k] = v.decode('utf-8', 'surrogateescape')
    return ti
with tarfile.open(dst, 'w', format=format, encoding='utf-8', errors='surrogateescape') as t:
    for name in sorted(os.listdir(os.fsencode(src))):
        n = os.fsdecode(name)
        t.add(os.path.join(src, n), arcname=n, filter=add_xattrs)
`;

interface PyMember {
  name: string; type: string; size: number; mode: number; uid: number; gid: number; uname: string; gname: string;
  sec: number; nsec: number; link: string; major: number; minor: number; xattrs: Array<[string, string]>; sha: string | null;
}

const hex = (s: string): string => Buffer.from(s, 'latin1').toString('hex');

async function* fileChunks(p: string, size: number): AsyncGenerator<Uint8Array> {
  for await (const c of fs.createReadStream(p, { highWaterMark: size })) yield c as Buffer;
}

async function readArchive(p: string): Promise<{ entries: Array<TarEntry & { sha: string | null }>; bytes: Buffer }> {
  const { createHash } = await import('node:crypto');
  const entries: Array<TarEntry & { sha: string | null }> = [];
  const parts: Buffer[] = [];
  let hash: ReturnType<typeof createHash> | undefined;
  let cur: (TarEntry & { sha: string | null }) | undefined;
  const finish = () => {
    if (cur && hash) cur.sha = hash.digest('hex');
    hash = undefined;
  };
  for await (const s of tarSegments(fileChunks(p, 7919))) {
    parts.push(Buffer.from(s.bytes));
    if (s.kind === 'header') {
      finish();
      if (s.entry) {
        cur = { ...s.entry, sha: null };
        entries.push(cur);
        if (cur.type === 'reg') hash = createHash('sha256');
      }
    } else if (s.kind === 'data') {
      hash!.update(s.bytes);
    } else {
      finish();
    }
  }
  finish();
  return { entries, bytes: Buffer.concat(parts) };
}

const TYPE_OF_PY: Record<string, TarEntry['type']> = {
  '0': 'reg', '\0': 'reg', '7': 'reg', '1': 'hardlink', '2': 'symlink', '3': 'chr', '4': 'blk', '5': 'dir', '6': 'fifo',
};

function compareWithPython(archive: string, entries: Array<TarEntry & { sha: string | null }>, label: string): void {
  const r = run('python3', ['-c', PY_LIST, archive]);
  assert.equal(r.status, 0, r.stderr.toString());
  const py = JSON.parse(r.stdout.toString()) as PyMember[];
  assert.equal(entries.length, py.length, `${label}: entry count`);
  for (let i = 0; i < py.length; i++) {
    const p = py[i]!;
    const e = entries[i]!;
    const where = `${label}: entry ${i} '${e.path}'`;
    assert.equal(hex(e.path.replace(/\/+$/, '')), p.name, `${where}: path`);
    assert.equal(e.type, TYPE_OF_PY[p.type] ?? 'other', `${where}: type`);
    if (e.type === 'reg') {
      assert.equal(e.size, p.size, `${where}: size`);
      assert.equal(e.sha, p.sha, `${where}: content`);
    }
    assert.equal(e.mode, p.mode & 0o7777, `${where}: mode`);
    assert.equal(e.uid, p.uid, `${where}: uid`);
    assert.equal(e.gid, p.gid, `${where}: gid`);
    assert.equal(hex(e.uname), p.uname, `${where}: uname`);
    assert.equal(hex(e.gname), p.gname, `${where}: gname`);
    assert.deepEqual([e.mtimeSec, e.mtimeNsec], [p.sec, p.nsec], `${where}: mtime`);
    if (e.type === 'symlink' || e.type === 'hardlink') assert.equal(hex(e.linkTarget), p.link, `${where}: link`);
    if (e.type === 'chr' || e.type === 'blk') assert.deepEqual([e.devMajor, e.devMinor], [p.major, p.minor], `${where}: device`);
    assert.deepEqual([...e.xattrs].map(([k, v]) => [hex(k), v.toString('hex')]), p.xattrs, `${where}: xattrs`);
  }
}

/** GNU tar's `escape` quoting in the C locale. */
function gnuEscape(s: string): string {
  const named: Record<number, string> = { 7: '\\a', 8: '\\b', 9: '\\t', 10: '\\n', 11: '\\v', 12: '\\f', 13: '\\r', 0x5c: '\\\\' };
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (named[c]) out += named[c];
    else if (c < 0x20 || c >= 0x7f) out += `\\${c.toString(8).padStart(3, '0')}`;
    else out += s[i];
  }
  return out;
}

function modeString(e: TarEntry): string {
  const t = { reg: '-', hardlink: 'h', symlink: 'l', chr: 'c', blk: 'b', dir: 'd', fifo: 'p', other: '?' }[e.type];
  const m = e.mode;
  const rwx = (shift: number, special: boolean, ch: string) => {
    const x = (m >> shift) & 1;
    return `${(m >> (shift + 2)) & 1 ? 'r' : '-'}${(m >> (shift + 1)) & 1 ? 'w' : '-'}${special ? (x ? ch : ch.toUpperCase()) : x ? 'x' : '-'}`;
  };
  return t + rwx(6, (m & 0o4000) !== 0, 's') + rwx(3, (m & 0o2000) !== 0, 's') + rwx(0, (m & 0o1000) !== 0, 't');
}

function gnuTime(e: TarEntry): string {
  let sec = e.mtimeSec;
  let nsec = e.mtimeNsec;
  const pax = e.pax.get('mtime')?.toString('latin1');
  // GNU tar's listing quirk for negative fractional PAX times (see the file comment): it shows the
  // truncated seconds and the fraction digits as written, i.e. -W.F as -W + .F.
  if (pax?.startsWith('-') && nsec !== 0) {
    sec += 1;
    nsec = 1_000_000_000 - nsec;
  }
  const d = new Date(sec * 1000);
  const base = d.toISOString().replace('T', ' ').slice(0, 19);
  const frac = nsec === 0 ? '' : `.${String(nsec).padStart(9, '0').replace(/0+$/, '')}`;
  return base + frac;
}

function compareWithGnuTar(archive: string, entries: TarEntry[], label: string): void {
  const r = run('tar', ['--numeric-owner', '--full-time', '-tvf', archive], { env: { ...process.env, LC_ALL: 'C', TZ: 'UTC' } });
  assert.equal(r.status, 0, r.stderr.toString());
  const lines = r.stdout.toString('latin1').split('\n');
  assert.equal(lines.pop(), '');
  assert.equal(lines.length, entries.length, `${label}: line count`);
  // GNU tar pads the time column to the widest time listed so far (at least 16 characters).
  let timeWidth = 16;
  for (let i = 0; i < lines.length; i++) {
    const e = entries[i]!;
    const time = gnuTime(e);
    timeWidth = Math.max(timeWidth, time.length);
    const m = new RegExp(`^(\\S{10}) (\\d+)/(\\d+) +(\\S+) (.{${timeWidth}}) (.*)$`, 's').exec(lines[i]!);
    assert.ok(m, `${label}: cannot parse tar line ${JSON.stringify(lines[i])}`);
    const sizeField = e.type === 'chr' || e.type === 'blk' ? `${e.devMajor},${e.devMinor}` : String(e.size);
    let name = gnuEscape(e.path);
    if (e.type === 'symlink') name += ` -> ${gnuEscape(e.linkTarget)}`;
    if (e.type === 'hardlink') name += ` link to ${gnuEscape(e.linkTarget)}`;
    assert.deepEqual(
      [m[1], Number(m[2]), Number(m[3]), m[4], m[5], m[6]],
      [modeString(e), e.uid, e.gid, sizeField, time.padEnd(timeWidth, ' '), name],
      `${label}: entry ${i}`,
    );
  }
}

test('tar reader = python tarfile and GNU tar listings on random trees (GNU tar pax, python gnu/pax)', { timeout: 600_000 }, async () => {
  assert.ok(isRoot, 'the reference tar test needs root (devices, ownership, trusted.* xattrs in the trees)');
  const n = cases(3, 12);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bootcfs-tar-ref-'));
  let entriesSeen = 0;
  try {
    for (let k = 0; k < n; k++) {
      const seed = 9100 + k;
      const label = `seed ${seed}`;
      const src = path.join(tmp, `tree-${k}`);
      await generateDiskTree(src, seed, { entries: 120, maxFileSize: 300_000, sockets: false });
      const archives: Array<[string, string[] | null]> = [
        ['gnutar-pax.tar', ['--format=pax', '--xattrs', "--xattrs-include=*", '--numeric-owner', '-cf']],
        ['python-gnu.tar', null],
        ['python-pax.tar', null],
      ];
      for (const [name, tarArgs] of archives) {
        const out = path.join(tmp, `${k}-${name}`);
        const r = tarArgs
          ? run('tar', [...tarArgs, out, '-C', src, '.'])
          : run('python3', ['-c', PY_CREATE, src, out, name.includes('gnu') ? 'gnu' : 'pax']);
        assert.equal(r.status, 0, `${label} ${name}: ${r.stderr.toString()}`);
        const { entries, bytes } = await readArchive(out);
        assert.ok(bytes.equals(fs.readFileSync(out)), `${label} ${name}: segments differ from the archive bytes`);
        compareWithPython(out, entries, `${label} ${name}`);
        compareWithGnuTar(out, entries, `${label} ${name}`);
        if (name === 'gnutar-pax.tar' || name === 'python-pax.tar') {
          assert.ok(entries.some((e) => e.xattrs.size > 0), `${label} ${name}: the tree should carry xattrs`);
        }
        entriesSeen += entries.length;
        fs.rmSync(out);
      }
      fs.rmSync(src, { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`# tar reference: ${n} trees × 3 archives, ${entriesSeen} entries compared with python tarfile and GNU tar`);
});
