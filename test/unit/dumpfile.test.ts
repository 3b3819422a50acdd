import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseDumpfile, writeDumpfile, writeDumpfileChunks, unescapeDumpField, escapeDumpField, EscapeFlags,
  DumpEscapeError,
} from '../../src/dumpfile/index.js';
import { ParseError } from '../../src/errors.js';
import { Inode, lookup, newDir, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, type FileSystem } from '../../src/tree/model.js';
import { Rng } from '../helpers/rng.js';

const ROOT = '/ 4096 40755 2 0 0 0 0.0 - - -\n';

/** A valid dumpfile of exactly `total` bytes whose last line has no newline. */
function unterminatedDumpOfLength(total: number): string {
  let s = ROOT;
  for (let i = 0; total - s.length > 3000; i++) s += `/f${i} 0 100644 1 0 0 0 0.0 - - -\n`;
  for (let n = 1; n <= 5000; n++) {
    const last = `/last ${n} 100644 1 0 0 0 0.0 - ${'c'.repeat(n)} -`;
    if (s.length + last.length === total) return s + last;
  }
  throw new Error(`cannot build a dump of ${total} bytes`);
}

function parse(text: string, strict = true): FileSystem {
  return parseDumpfile(Buffer.from(text, 'latin1'), { strict });
}
function parseErr(text: string, strict = true): ParseError {
  try {
    parse(text, strict);
  } catch (e) {
    assert.ok(e instanceof ParseError, `expected ParseError, got ${String(e)}`);
    assert.equal(typeof e.line, 'number');
    return e;
  }
  assert.fail(`accepted: ${JSON.stringify(text)}`);
}

test('escape/unescape round trip on random bytes, in every mode', () => {
  const seed = 1234;
  const rng = new Rng(seed);
  for (let i = 0; i < 2000; i++) {
    const len = rng.int(0, 40);
    const bytes = rng.bool(0.3) ? Buffer.from(Array.from({ length: len }, () => rng.pick([0x2d, 0x3d, 0x5c, 0x20, 0x0a, 0x09, 0x0d, 0x00, 0xff, 0x41]))) : rng.bytes(len);
    const s = bytes.toString('latin1');
    for (const flags of [EscapeFlags.Standard, EscapeFlags.Equal, EscapeFlags.LoneDash]) {
      const esc = escapeDumpField(s, flags);
      assert.doesNotMatch(esc, /[\x00-\x20\x7f-\xff]/, `seed ${seed} case ${i}: escaped text has raw bytes`);
      if (flags === EscapeFlags.Equal) assert.ok(!esc.includes('='), `seed ${seed} case ${i}`);
      assert.equal(unescapeDumpField(esc), s, `seed ${seed} case ${i} flags ${flags}`);
    }
  }
});

test('escape formats exactly like composefs-info print_escaped', () => {
  assert.equal(escapeDumpField('a b\\c\nd\re\tf=g\x7f\x80\xff~!'), 'a\\x20b\\\\c\\nd\\re\\tf=g\\x7f\\x80\\xff~!');
  assert.equal(escapeDumpField('a=b', EscapeFlags.Equal), 'a\\x3db');
  assert.equal(escapeDumpField('-', EscapeFlags.LoneDash), '\\x2d');
  assert.equal(escapeDumpField('-'), '-');
  assert.equal(escapeDumpField('--', EscapeFlags.LoneDash), '--');
  assert.equal(escapeDumpField(''), '');
});

test('unescape accepts exactly \\\\ \\n \\r \\t \\xHH', () => {
  assert.equal(unescapeDumpField('\\x41\\x6a\\x6A\\\\\\n\\r\\t'), 'Ajj\\\n\r\t');
  assert.equal(unescapeDumpField('a=b\x80'), 'a=b\x80');
  assert.equal(unescapeDumpField('xx\\x41yy', 2, 6), 'A');
  for (const bad of ['\\', 'a\\', '\\x', '\\x4', '\\xg0', '\\x0g', '\\q', '\\0', '\\ ']) {
    assert.throws(() => unescapeDumpField(bad), DumpEscapeError, bad);
  }
});

test('parses every field', () => {
  const fs = parse(
    ROOT +
      '/dir 4096 40700 3 5 6 0 10.20 - - - user.a=1\n' +
      '/dir/f 3 100644 2 1000 1001 0 1697019909.446146440 - a\\x20b - security.selinux=x\\x00 user.k\\x3d=v=w\n' +
      '/ext 123456 100600 1 0 0 0 0.0 ab/cdef - 0123456789abcdef0123456789abcdef0123456789ABCDEF0123456789abcdef\n' +
      '/lnk 3 120777 1 0 0 0 1.5 foo - -\n' +
      '/chr 0 20644 1 0 0 1234 0.0 - - -\n' +
      '/blk 0 60644 1 0 0 66 0.0 - - -\n' +
      '/fifo 0 10644 1 0 0 0 0.0 - - -\n' +
      '/sock 0 140644 1 0 0 0 0.0 - - -\n' +
      '/dash 1 100644 1 0 0 0 0.0 \\x2d \\x2d -\n' +
      '/empty 0 100644 1 0 0 0 0.0 - - -\n',
  );
  const dir = lookup(fs.root, '/dir')!;
  assert.equal(dir.mode, 0o40700);
  assert.equal(dir.size, 0, 'C ignores directory SIZE');
  assert.deepEqual([dir.nlink, dir.uid, dir.gid, dir.mtimeSec, dir.mtimeNsec], [3, 5, 6, 10, 20]);
  const f = lookup(fs.root, '/dir/f')!;
  assert.equal(f.mode, S_IFREG | 0o644);
  assert.equal(f.size, 3);
  assert.deepEqual(f.content, Buffer.from('a b'));
  assert.deepEqual([f.nlink, f.uid, f.gid, f.mtimeSec, f.mtimeNsec], [2, 1000, 1001, 1697019909, 446146440]);
  assert.deepEqual([...f.xattrs.keys()], ['security.selinux', 'user.k=']);
  assert.deepEqual(f.xattrs.get('security.selinux'), Buffer.from('x\0'));
  assert.deepEqual(f.xattrs.get('user.k='), Buffer.from('v=w'));
  const ext = lookup(fs.root, '/ext')!;
  assert.equal(ext.size, 123456);
  assert.equal(ext.payload, 'ab/cdef');
  assert.equal(ext.content, undefined);
  assert.equal(ext.digest!.toString('hex'), '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef');
  assert.ok(ext.isExternal);
  const lnk = lookup(fs.root, '/lnk')!;
  assert.equal(lnk.mode, S_IFLNK | 0o777);
  assert.equal(lnk.target, 'foo');
  assert.equal(lnk.size, 3);
  assert.equal(lookup(fs.root, '/chr')!.mode, S_IFCHR | 0o644);
  assert.equal(lookup(fs.root, '/chr')!.rdev, 1234);
  assert.equal(lookup(fs.root, '/blk')!.mode, S_IFBLK | 0o644);
  assert.equal(lookup(fs.root, '/blk')!.rdev, 66);
  assert.equal(lookup(fs.root, '/fifo')!.mode, S_IFIFO | 0o644);
  assert.equal(lookup(fs.root, '/sock')!.mode, S_IFSOCK | 0o644);
  assert.equal(lookup(fs.root, '/dash')!.payload, '-');
  assert.deepEqual(lookup(fs.root, '/dash')!.content, Buffer.from('-'));
  const empty = lookup(fs.root, '/empty')!;
  assert.equal(empty.content, undefined);
  assert.equal(empty.size, 0);
});

test('hardlinks resolve to the same Inode, forward references and chains included', () => {
  const fs = parse(
    ROOT +
      '/a 999 @100644 9 9 9 9 9.9 /c - -\n' +
      '/b 0 @100644 0 0 0 0 0.0 /a - -\n' +
      '/c 3 100644 7 1 2 0 0.0 - abc - user.x=1\n',
  );
  const c = lookup(fs.root, '/c')!;
  assert.equal(lookup(fs.root, '/a'), c);
  assert.equal(lookup(fs.root, '/b'), c);
  assert.equal(c.nlink, 7, 'the target keeps its own NLINK');
  assert.equal(c.size, 3);
});

test('C quirks: strtoull numbers, uid-gated GID/RDEV errors, truncations, xattr replacement order', () => {
  const fs = parse(
    ROOT +
      '/a 0 +100644 -1 4294967297 x 0 -1.4294967297 - - -\n' + // bad GID ignored because UID != 0
      '/b 0 0100644 99999999999999999999999 7 0 zz 1.0 - - -\n' + // bad RDEV ignored because UID != 0
      '/c 0 20644 1 0 0 4294967298 0.0 - - -\n' +
      '/d 0 100644 1 0 0 0 0.0 - - - a=1 b=2 c=3 d=4 b=5\n' +
      '/e 0 100644 1 0 0 0 0.0 - - - a=1 a\\x00junk=2 \n',
  );
  const a = lookup(fs.root, '/a')!;
  assert.equal(a.mode, S_IFREG | 0o644);
  assert.equal(a.nlink, 0xffffffff);
  assert.equal(a.uid, 1);
  assert.equal(a.gid, 0);
  assert.equal(a.mtimeSec, -1);
  assert.equal(a.mtimeNsec, 1);
  const b = lookup(fs.root, '/b')!;
  assert.equal(b.nlink, 0xffffffff, 'overflow saturates, then truncates to 32 bits');
  assert.equal(b.rdev, 0);
  assert.equal(lookup(fs.root, '/c')!.rdev, 2, 'rdev is 32 bits in libcomposefs');
  const d = lookup(fs.root, '/d')!;
  assert.deepEqual([...d.xattrs].map(([k, v]) => `${k}=${v.toString()}`), ['a=1', 'd=4', 'c=3', 'b=5']);
  const e = lookup(fs.root, '/e')!;
  assert.deepEqual([...e.xattrs].map(([k, v]) => `${k}=${v.toString()}`), ['a=2'], 'names end at NUL');
  assert.match(parseErr(ROOT + '/a 0 100644 1 0 x 0 0.0 - - -\n').message, /line 2: Invalid integer x/);
  assert.match(parseErr(ROOT + '/a 0 100644 1 0 0 y 0.0 - - -\n').message, /line 2: Invalid integer y/);
});

test('strict mode differences', () => {
  const nonDevRdev = ROOT + '/a 0 100644 1 0 0 5 0.0 - - -\n';
  assert.equal(lookup(parse(nonDevRdev, false).root, '/a')!.rdev, 0);
  assert.match(parseErr(nonDevRdev).message, /Non-zero devnum/);
  const symSize = ROOT + '/l 9 120777 1 0 0 0 0.0 abc - -\n';
  assert.equal(lookup(parse(symSize, false).root, '/l')!.size, 3);
  assert.match(parseErr(symSize).message, /Invalid symlink size/);
  const symContent = ROOT + '/l 3 120777 1 0 0 0 0.0 abc xyz -\n';
  assert.equal(lookup(parse(symContent, false).root, '/l')!.content, undefined);
  assert.match(parseErr(symContent).message, /Symlink cannot have content/);
  const noNewline = ROOT + '/a 0 100644 1 0 0 0 0.0 - - -';
  assert.ok(lookup(parse(noNewline, false).root, '/a'));
  const e = parseErr(noNewline);
  assert.match(e.message, /Missing trailing newline/);
  assert.equal(e.line, 2);
  // C's read loop parses an unterminated last line in strict mode when the input is exactly
  // 64 KiB: the read that fills the buffer is followed by one that returns 0 bytes.
  const exact = unterminatedDumpOfLength(65536);
  assert.ok(lookup(parse(exact).root, '/last'));
  assert.match(parseErr(unterminatedDumpOfLength(65537)).message, /Missing trailing newline/);
  assert.match(parseErr(unterminatedDumpOfLength(65535)).message, /Missing trailing newline/);
});

test('every rejection is a ParseError with the right line number', () => {
  const cases: Array<[string, number, RegExp]> = [
    ['', 1, /No files/],
    ['\n', 1, /empty path/],
    ['/a 0 100644 1 0 0 0 0.0 - - -\n', 1, /Root node not present/],
    ['/ 0 100644 1 0 0 0 0.0 - - -\n', 1, /Root must be a directory/],
    [ROOT + ROOT, 2, /multiple roots/],
    [ROOT + '/a/b 0 100644 1 0 0 0 0.0 - - -\n', 2, /Parent directory missing/],
    [ROOT + '/a 0 100644 1 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n', 3, /Parent must be a directory/],
    [ROOT + '/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n', 3, /already exist/],
    [ROOT + '/. 0 40755 1 0 0 0 0.0 - - -\n', 2, /Invalid \. or \.\./],
    [ROOT + '/a/ 0 40755 1 0 0 0 0.0 - - -\n', 2, /Parent directory missing/],
    [ROOT + '// 0 40755 1 0 0 0 0.0 - - -\n', 2, /Can't add child/],
    [ROOT + `/${'n'.repeat(256)} 0 100644 1 0 0 0 0.0 - - -\n`, 2, /Can't add child/],
    [ROOT + '/a 0 644 1 0 0 0 0.0 - - -\n', 2, /Invalid mode 644/],
    [ROOT + '/a 0 100644 1 0 0 0 0 - - -\n', 2, /Invalid integer/],
    [ROOT + '/a 0 100644 1 0 0 0 0.0.0 - - -\n', 2, /Invalid integer/],
    [ROOT + '/a\0 0 100644 1 0 0 0 0.0 - - -\n', 2, /NUL/],
    [ROOT + '/a\\q 0 100644 1 0 0 0 0.0 - - -\n', 2, /Unsupported escape/],
    [ROOT + '/a 3 100644 1 0 0 0 0.0 - ab -\n', 2, /Invalid content size/],
    [ROOT + `/a 5001 100644 1 0 0 0 0.0 - ${'x'.repeat(5001)} -\n`, 2, /Inline content size 5001/],
    [ROOT + '/a 9007199254740993 100644 1 0 0 0 0.0 - - -\n', 2, /File too large/],
    [ROOT + `/a 1 100644 1 0 0 0 0.0 ${'p'.repeat(4096)} - -\n`, 2, /Invalid payload/],
    [ROOT + '/l 0 120777 1 0 0 0 0.0 - - -\n', 2, /Invalid symlink/],
    [ROOT + '/l 1 120777 1 0 0 0 0.0 \\x00 - -\n', 2, /Invalid symlink/],
    [ROOT + `/l 4096 120777 1 0 0 0 0.0 ${'t'.repeat(4096)} - -\n`, 2, /Invalid symlink/],
    [ROOT + '/a 0 100644 1 0 0 0 0.0 - - - =v\n', 2, /Can't set xattr/],
    [ROOT + `/a 0 100644 1 0 0 0 0.0 - - - ${'k'.repeat(256)}=v\n`, 2, /Can't set xattr/],
    [ROOT + '/a 0 100644 1 0 0 0 0.0 - - - novalue\n', 2, /Missing =/],
    [ROOT + '/a 0 100644 1 0 0 0 0.0 - - - a=1  b=2\n', 2, /Missing =/],
    [ROOT + `/a 0 100644 1 0 0 0 0.0 - - - k=${'v'.repeat(65534)}\n`, 2, /Too many xattrs/],
    [ROOT + `/a 0 100644 1 0 0 0 0.0 - - - a=${'v'.repeat(20000)} b=${'v'.repeat(20000)}\n`, 2, /Can't set xattr/],
    [ROOT + '/d 0 @40755 1 0 0 0 0.0 / - -\n', 2, /Directories can't be hardlinked/],
    [ROOT + '/a 0 @100644 1 0 0 0 0.0 /a - -\n', 2, /Self-referential/],
    [ROOT + '/a 0 @100644 1 0 0 0 0.0 - - -\n', 2, /No target path/],
    [ROOT + '/a 0 @100644 1 0 0 0 0.0 /nope - -\n', 2, /No target at/],
    [ROOT + '/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n', 2, /cycle/],
    [ROOT + '/d 0 40755 1 0 0 0 0.0 - - -\n/a 0 @100644 1 0 0 0 0.0 /d - -\n', 3, /directory/],
  ];
  for (const [text, line, re] of cases) {
    const e = parseErr(text, false);
    assert.equal(e.line, line, `${JSON.stringify(text.slice(0, 80))}: ${e.message}`);
    assert.match(e.message, re, JSON.stringify(text.slice(0, 80)));
  }
});

test('xattr budget counts a replaced value once', () => {
  // Two 16000-byte values fit (2 * (1 + 16000 + 7) + 12 = 32028); replacing one keeps it at that.
  const v = 'v'.repeat(16000);
  const fs = parse(ROOT + `/a 0 100644 1 0 0 0 0.0 - - - a=${v} b=${v} a=${v}\n`);
  assert.equal(lookup(fs.root, '/a')!.xattrs.size, 2);
});

test('digests: C takes the leading hex pairs and leaves the rest undefined (we zero it)', () => {
  const fs = parse(ROOT + '/a 5 100644 1 0 0 0 0.0 - - abZZ\n/b 5 100644 1 0 0 0 0.0 - - ' + 'ab'.repeat(40) + '\n');
  assert.equal(lookup(fs.root, '/a')!.digest!.toString('hex'), 'ab' + '00'.repeat(31));
  assert.equal(lookup(fs.root, '/b')!.digest!.toString('hex'), 'ab'.repeat(32));
});

test('writer prints composefs-info format: hardlinks, escapes, dashes, sorted DFS', () => {
  const root = newDir({ mtimeSec: 5, mtimeNsec: 7 });
  root.size = 4096;
  root.nlink = 3;
  const shared = new Inode({ mode: S_IFREG | 0o644, size: 1, content: Buffer.from('-'), nlink: 2, xattrs: new Map([['user.a=b', Buffer.from('=-')]]) });
  const sub = newDir();
  sub.size = 27;
  root.setEntry('z', shared);
  root.setEntry('b c', sub);
  sub.setEntry('x', shared);
  root.setEntry('sym', new Inode({ mode: S_IFLNK | 0o777, size: 1, target: '-' }));
  root.setEntry('ext', new Inode({ mode: S_IFREG | 0o600, size: 10, payload: 'ab/cd', digest: Buffer.alloc(32, 0xab) }));
  root.setEntry('dev', new Inode({ mode: S_IFCHR | 0o600, rdev: 513, mtimeSec: -3, mtimeNsec: 1 }));
  const expected =
    '/ 4096 40755 3 0 0 0 5.7 - - -\n' +
    '/b\\x20c 27 40755 1 0 0 0 0.0 - - -\n' +
    '/b\\x20c/x 1 100644 2 0 0 0 0.0 - \\x2d - user.a\\x3db=\\x3d-\n' +
    '/dev 0 20600 1 0 0 513 -3.1 - - -\n' +
    `/ext 10 100600 1 0 0 0 0.0 ab/cd - ${'ab'.repeat(32)}\n` +
    '/sym 1 120777 1 0 0 0 0.0 \\x2d - -\n' +
    '/z 1 @100644 2 0 0 0 0.0 /b\\x20c/x \\x2d - user.a\\x3db=\\x3d-\n';
  assert.equal(writeDumpfile({ root }).toString('latin1'), expected);
  const chunks: Buffer[] = [];
  writeDumpfileChunks({ root }, (c) => chunks.push(c), { chunkSize: 10 });
  assert.ok(chunks.length > 3);
  assert.equal(Buffer.concat(chunks).toString('latin1'), expected);
  // And it parses back to the same text.
  assert.equal(writeDumpfile(parseDumpfile(Buffer.from(expected, 'latin1'), { strict: true, keepDirectorySize: true })).toString('latin1'), expected);
});

test('string input is UTF-8', () => {
  const fs = parseDumpfile(ROOT + '/é 0 100644 1 0 0 0 0.0 - - -\n');
  assert.ok(fs.root.entries!.has(Buffer.from('é').toString('latin1')));
});

test('writer prints a directory reached twice as a hardlink without recursing (as composefs-info does)', () => {
  const root = newDir();
  root.size = 4096;
  const d = newDir();
  d.size = 27;
  d.setEntry('f', new Inode({ mode: S_IFREG | 0o644 }));
  root.setEntry('d', d);
  root.setEntry('x', d);
  root.setEntry('y', root); // a cycle: terminates, the root's own path prints as an empty field
  assert.equal(
    writeDumpfile({ root }).toString('latin1'),
    '/ 4096 40755 1 0 0 0 0.0 - - -\n' +
      '/d 27 40755 1 0 0 0 0.0 - - -\n' +
      '/d/f 0 100644 1 0 0 0 0.0 - - -\n' +
      '/x 27 @40755 1 0 0 0 0.0 /d - -\n' +
      '/y 4096 @40755 1 0 0 0 0.0  - -\n',
  );
});
