/**
 * Differential tests of the dumpfile parser and printer against mkcomposefs / composefs-info 1.0.8:
 * - every fixture is accepted or rejected exactly as mkcomposefs does, strict and non-strict;
 * - canonical round trip: `mkcomposefs --from-file D img; composefs-info dump img > C`, then
 *   writeDumpfile(parseDumpfile(C)) must equal C byte for byte;
 * - semantic parity: the tree we parse from D must hold what composefs-info reads back from the
 *   image mkcomposefs built from D (modulo what the image format itself changes);
 * - acceptance parity on seeded mutations of valid dumpfiles, in both modes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseDumpfile, writeDumpfile } from '../../src/dumpfile/index.js';
import { ParseError } from '../../src/errors.js';
import { walk, type FileSystem, type Inode } from '../../src/tree/model.js';
import { MKCOMPOSEFS, COMPOSEFS_INFO, FIXTURES, requireTool, run, cases } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { genDumpfile } from '../helpers/gen-dumpfile.js';
import { mutateDumpfile } from '../helpers/dumpfile-gen.js';

const FIXTURE_DIR = path.join(FIXTURES, 'libcomposefs-1.0.8');
/** Fixtures the C test-suite parses without CFS_PARSE_STRICT (fixtures README). */
const NON_STRICT_FIXTURES = new Set(['no-newline.dump', 'longlink.dump', 'honggfuzz-longlink-unterminated.dump']);

const tmp = mkdtempSync(path.join(tmpdir(), 'bootcfs-dumpfile-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function fixtureNames(): string[] {
  return readdirSync(FIXTURE_DIR).filter((f) => /\.dump(\.gz)?$/.test(f)).sort();
}
function readFixture(name: string): Buffer {
  const data = readFileSync(path.join(FIXTURE_DIR, name));
  return name.endsWith('.gz') ? gunzipSync(data) : data;
}

interface CResult { accepted: boolean; message: string; image: string }
/** Run the real mkcomposefs on a dumpfile. */
function cBuild(dump: Buffer, strict: boolean, tag = 'case'): CResult {
  const input = path.join(tmp, `${tag}.dump`);
  const image = path.join(tmp, `${tag}.img`);
  writeFileSync(input, dump);
  rmSync(image, { force: true });
  const env = { ...process.env };
  delete env.CFS_PARSE_STRICT;
  if (strict) env.CFS_PARSE_STRICT = '1';
  const r = run(requireTool(MKCOMPOSEFS), ['--from-file', input, image], { env });
  return { accepted: r.status === 0, message: r.stderr.toString('latin1').trim(), image };
}
function cDump(image: string): Buffer {
  const r = run(requireTool(COMPOSEFS_INFO), ['dump', image]);
  assert.equal(r.status, 0, `composefs-info dump failed: ${r.stderr.toString()}`);
  return r.stdout;
}

type Outcome = { accepted: true; fs: FileSystem } | { accepted: false; error: ParseError };
function ours(dump: Buffer, strict: boolean): Outcome {
  try {
    return { accepted: true, fs: parseDumpfile(dump, { strict }) };
  } catch (e) {
    if (!(e instanceof ParseError)) throw new Error(`parser threw a non-ParseError: ${String(e)}`, { cause: e });
    assert.equal(typeof e.line, 'number', `ParseError without a line number: ${e.message}`);
    return { accepted: false, error: e };
  }
}

/** Known, documented differences (parse.ts): C accepts a hardlink to a directory and a file size
 * within 2^43 of 2^64 (integer overflow); we refuse both. */
function isKnownDeviation(o: Outcome, c: CResult): boolean {
  return !o.accepted && c.accepted && /Hardlink to a directory|through an integer overflow/.test(o.error.message);
}

/** Canonical round trip through the real tools; returns the C dump. */
function assertRoundTrip(dump: Buffer, strict: boolean, label: string): Buffer {
  const c = cBuild(dump, strict, 'rt');
  assert.ok(c.accepted, `${label}: mkcomposefs rejected it: ${c.message}`);
  const printed = cDump(c.image);
  const reparsed = parseDumpfile(printed, { strict: true, keepDirectorySize: true });
  const again = writeDumpfile(reparsed);
  if (!again.equals(printed)) {
    const a = again.toString('latin1').split('\n');
    const b = printed.toString('latin1').split('\n');
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    assert.fail(`${label}: printer differs from composefs-info at line ${i + 1}:\n ours: ${a[i]?.slice(0, 300)}\n C:    ${b[i]?.slice(0, 300)}`);
  }
  return printed;
}

function xattrList(inode: Inode, drop?: Inode): string[] {
  const out: string[] = [];
  for (const [k, v] of inode.xattrs) {
    // v1 images mark directories holding whiteouts; the reader shows the markers (format.md §2.6).
    if (drop && inode.isDir && (k === 'trusted.overlay.opaque' || k === 'user.overlay.opaque') && v.toString('latin1') === 'x' && !drop.xattrs.has(k)) continue;
    out.push(`${Buffer.from(k, 'latin1').toString('hex')}=${v.toString('hex')}`);
  }
  return out.sort();
}

/**
 * Parse composefs-info's dump of an image built from `source`. Its reader appends up to 2 stray
 * bytes to a redirect (see assertSameSemantics), which can push a 4094/4095-byte payload over the
 * 4095-byte limit: returns undefined (no comparison possible) in exactly that case.
 */
function parseCDump(printed: Buffer, source: FileSystem, label: string): FileSystem | undefined {
  try {
    return parseDumpfile(printed, { strict: true, keepDirectorySize: true });
  } catch (e) {
    const longRedirect = [...walk(source.root)].some(([, n]) => n.isExternal && (n.payload?.length ?? 0) >= 4094);
    if (e instanceof ParseError && /Invalid payload/.test(e.message) && longRedirect) return undefined;
    throw new Error(`${label}: cannot parse composefs-info's dump: ${String(e)}`, { cause: e });
  }
}

/** The tree parsed from D must carry what the image built from D holds (compared field by field). */
function assertSameSemantics(fromDump: FileSystem, fromImage: FileSystem, label: string, malformedDigests = false): void {
  const firstPath = (fs: FileSystem) => {
    const m = new Map<string, string>();
    const seen = new Map<Inode, string>();
    for (const [p, inode] of walk(fs.root)) {
      if (!seen.has(inode)) seen.set(inode, p);
      m.set(p, seen.get(inode)!);
    }
    return m;
  };
  const a = new Map([...walk(fromDump.root)].map(([p, n]) => [p, n] as const));
  const b = new Map([...walk(fromImage.root)].map(([p, n]) => [p, n] as const));
  assert.deepEqual([...a.keys()], [...b.keys()], `${label}: path sets differ`);
  const fa = firstPath(fromDump);
  const fb = firstPath(fromImage);
  for (const [p, x] of a) {
    const y = b.get(p)!;
    const where = `${label}: ${JSON.stringify(p)}`;
    assert.equal(fa.get(p), fb.get(p), `${where}: hardlink identity`);
    assert.equal(x.mode & 0xffff, y.mode, `${where}: mode`); // EROFS i_mode is 16 bits
    assert.deepEqual([x.uid, x.gid, x.mtimeSec, x.mtimeNsec], [y.uid, y.gid, y.mtimeSec, y.mtimeNsec], `${where}: uid gid mtime`);
    assert.deepEqual(xattrList(x), xattrList(y, x), `${where}: xattrs`);
    if (x.isDir) continue;
    assert.equal(x.nlink, y.nlink, `${where}: nlink`);
    if (x.isChr || x.isBlk) assert.equal(x.rdev, y.rdev, `${where}: rdev`);
    if (x.isSymlink) assert.deepEqual([x.target, x.size], [y.target, y.size], `${where}: symlink`);
    if (x.isReg) {
      assert.equal(x.size, y.size, `${where}: size`);
      assert.deepEqual(x.content, y.content, `${where}: content`);
      if (x.isExternal) {
        // The writer stores "/" + payload as the redirect (none for an empty payload); the reader
        // strips that one slash again.
        // strips that one slash again — but libcomposefs 1.0.8's reader reads value_size + 1 bytes
        // from after the slash (`value_size++` for `--`), so up to 2 bytes that follow the value in
        // the image (up to a NUL) end up in its payload.
        const want = x.payload === '' ? undefined : x.payload;
        const got = want !== undefined && y.payload !== undefined && y.payload.startsWith(want) && y.payload.length <= want.length + 2 ? want : y.payload;
        assert.equal(want, got, `${where}: payload`);
        if (malformedDigests && x.digest && y.digest) {
          // A DIGEST that is not 64 hex digits leaves the rest of C's buffer uninitialised (we zero
          // it): only the bytes up to our last non-zero byte are defined.
          let defined = 32;
          while (defined > 0 && x.digest[defined - 1] === 0) defined--;
          assert.deepEqual(x.digest.subarray(0, defined), y.digest.subarray(0, defined), `${where}: digest`);
        } else {
          assert.deepEqual(x.digest, y.digest, `${where}: digest`);
        }
      } else {
        assert.equal(y.payload, undefined, `${where}: payload of a non-external file`);
        assert.equal(y.digest, undefined, `${where}: digest of a non-external file`);
      }
    }
  }
}

test('should-fail fixtures: rejected with a ParseError in strict mode; accept/reject as mkcomposefs in both modes', () => {
  const names = fixtureNames().filter((f) => f.startsWith('should-fail-'));
  assert.equal(names.length, 14);
  for (const name of names) {
    const dump = readFixture(name);
    const strict = ours(dump, true);
    assert.ok(!strict.accepted, `${name} accepted in strict mode`);
    for (const mode of [true, false]) {
      const c = cBuild(dump, mode);
      const o = ours(dump, mode);
      assert.equal(o.accepted, c.accepted, `${name} strict=${mode}: C ${c.accepted ? 'accepts' : `rejects (${c.message})`}, we ${o.accepted ? 'accept' : `reject (${o.error.message})`}`);
    }
  }
});

test('fixture dumps: parse as the fixtures README says, match mkcomposefs in both modes, round trip', () => {
  const names = fixtureNames().filter((f) => !f.startsWith('should-fail-'));
  assert.equal(names.length, 13);
  for (const name of names) {
    const dump = readFixture(name);
    const strict = !NON_STRICT_FIXTURES.has(name);
    const t0 = performance.now();
    const parsed = parseDumpfile(dump, { strict });
    const ms = performance.now() - t0;
    if (name.startsWith('cs9-')) assert.ok(ms < 3000, `${name}: parsing took ${ms.toFixed(0)} ms`);
    for (const mode of [true, false]) {
      const c = cBuild(dump, mode);
      const o = ours(dump, mode);
      assert.equal(o.accepted, c.accepted, `${name} strict=${mode}: C ${c.accepted ? 'accepts' : `rejects (${c.message})`}, we ${o.accepted ? 'accept' : `reject (${o.error.message})`}`);
    }
    const printed = assertRoundTrip(dump, strict, name);
    assertSameSemantics(parsed, parseDumpfile(printed, { strict: true, keepDirectorySize: true }), name);
  }
});

test('generated dumpfiles: canonical round trip and semantic parity with the real tools', () => {
  const n = cases(200, 3000);
  const baseSeed = 0x5eed0000;
  for (let i = 0; i < n; i++) {
    const seed = baseSeed + i;
    const rng = new Rng(seed);
    const dump = genDumpfile(rng, { maxEntries: rng.pick([5, 20, 80]), hugeDirChance: 0.02 });
    const label = `seed ${seed} (case ${i} of ${n})`;
    const parsed = parseDumpfile(dump, { strict: true });
    const printed = assertRoundTrip(dump, true, label);
    assertSameSemantics(parsed, parseDumpfile(printed, { strict: true, keepDirectorySize: true }), label);
  }
  console.log(`dumpfile round trip: ${n} generated dumpfiles byte-identical with composefs-info`);
});

test('mutated dumpfiles: we accept exactly when mkcomposefs accepts (strict and non-strict)', () => {
  const n = cases(300, 5000);
  const baseSeed = 0xbad00000;
  const stats = { accepted: 0, rejected: 0, deviations: 0, longRedirects: 0 };
  for (let i = 0; i < n; i++) {
    const seed = baseSeed + i;
    const rng = new Rng(seed);
    const dump = mutateDumpfile(rng, genDumpfile(rng, { maxEntries: rng.pick([3, 8, 15]), hugeDirChance: 0 }));
    for (const strict of [true, false]) {
      const c = cBuild(dump, strict);
      const o = ours(dump, strict);
      if (isKnownDeviation(o, c)) {
        stats.deviations++;
        continue;
      }
      if (o.accepted !== c.accepted) {
        writeFileSync(path.join(tmpdir(), `bootcfs-dumpfile-mismatch-${seed}.dump`), dump);
      }
      assert.equal(o.accepted, c.accepted,
        `seed ${seed} strict=${strict}: C ${c.accepted ? 'accepts' : `rejects (${c.message})`}, we ${o.accepted ? 'accept' : `reject (${o.error.message})`}`);
      if (o.accepted) {
        stats.accepted++;
        // The accepted tree must also mean what mkcomposefs made of it.
        const fromImage = parseCDump(cDump(c.image), o.fs, `seed ${seed} strict=${strict}`);
        if (fromImage === undefined) stats.longRedirects++;
        else assertSameSemantics(o.fs, fromImage, `seed ${seed} strict=${strict}`, true);
      } else {
        stats.rejected++;
      }
    }
  }
  console.log(`dumpfile acceptance parity: ${n} mutated dumpfiles x 2 modes: ${stats.accepted} accepted, ${stats.rejected} rejected by both, ${stats.deviations} known deviations (hardlink to a directory, 16 EiB file); values compared for all accepted but ${stats.longRedirects} (4094+ byte redirect)`);
});

test('strict mode: the unterminated last line C still parses at a read-buffer boundary', () => {
  const root = '/ 4096 40755 2 0 0 0 0.0 - - -\n';
  const build = (total: number): Buffer => {
    let s = root;
    for (let i = 0; total - s.length > 3000; i++) s += `/f${i} 0 100644 1 0 0 0 0.0 - - -\n`;
    for (let k = 1; k <= 5000; k++) {
      const last = `/last ${k} 100644 1 0 0 0 0.0 - ${'c'.repeat(k)} -`;
      if (s.length + last.length === total) return Buffer.from(s + last, 'latin1');
    }
    throw new Error(`no dump of ${total} bytes`);
  };
  // Sizes around 64 KiB and the second buffer's boundary; both parsers must agree on each.
  const sizes = [65535, 65536, 65537, 100000, 131071, 131072, 131073];
  for (const total of sizes) {
    const dump = build(total);
    const c = cBuild(dump, true);
    assert.equal(ours(dump, true).accepted, c.accepted, `unterminated dump of ${total} bytes: C ${c.accepted ? 'accepts' : 'rejects'}`);
  }
  assert.ok(existsSync(tmp));
});

test('hand-picked corner lines: same accept/reject and same resulting values as mkcomposefs', () => {
  const R = '/ 4096 40755 2 0 0 0 0.0 - - -\n';
  const corners: string[] = [
    '/a 0 100644 1 0 x 0 0.0 - - -', // bad GID, UID 0: error
    '/a 0 100644 1 5 x 0 0.0 - - -', // bad GID, UID != 0: GID 0
    '/a 0 100644 1 0 0 x 0.0 - - -',
    '/a 0 100644 1 5 0 x 0.0 - - -',
    '/a 0 100644 1 5 x x 0.0 - - -',
    '/a 0 100644 x 0 0 0 0.0 - - -',
    '/a x 100644 1 0 0 0 0.0 - - -',
    '/a 0 100644 1 0 0 0 x.0 - - -',
    '/a 0 100644 1 0 0 0 1 - - -',
    '/a 0 100644 1 0 0 0 1. - - -',
    '/a 0 100644 1 0 0 0 .1 - - -',
    '/a 0 100644 1 0 0 0 -5.-7 - - -',
    '/a 0 100644 1 0 0 0 18446744073709551615.4294967297 - - -',
    '/a 0 100644 \t+7 -1 99999999999999999999 0 0.0 - - -',
    '/a 0 \t100644 1 0 0 0 0.0 - - -',
    '/a 0 0x100644 1 0 0 0 0.0 - - -',
    '/a 0 100648 1 0 0 0 0.0 - - -',
    '/a 0 77777100644 1 0 0 0 0.0 - - -',
    '/a 0 100644 1 0 0 0 0.0 - - -  ',
    '/a 0 100644 1 0 0 0 0.0 - - - ',
    '/a 0 100644 1 0 0 0 0.0 - -',
    '/a 0 100644 1 0 0 0 0.0 -',
    '/a 0 100644 1 0 0 0 0.0',
    '/a 0 100644',
    '/a',
    '/a 0 100644 1 0 0 0 0.0 - - - a=b=c user.\\x3d=\\x3d',
    '/a 0 100644 1 0 0 0 0.0 - - - a\\x00b=1 a=2',
    '/a 0 100644 1 0 0 0 0.0 - - - \\x00=1',
    '/a\\x00b 0 100644 1 0 0 0 0.0 - - -',
    '\\x2f 0 40755 1 0 0 0 0.0 - - -',
    'a 0 100644 1 0 0 0 0.0 - - -',
    '//a 0 100644 1 0 0 0 0.0 - - -',
    '/a 3 100644 1 0 0 0 0.0 x\\x00y abc -',
    '/a 3 100644 1 0 0 0 0.0 \\x00 abc -',
    '/a 3 100644 1 0 0 0 0.0 - abc ab',
    '/a 3 100644 1 0 0 0 0.0 - abc -',
    '/a 0 100644 1 0 0 0 0.0 -  -',
    '/a 5 100644 1 0 0 0 0.0 p - xyz',
    '/l 3 120777 1 0 0 0 0.0 a\\x00bc - -',
    '/l 1 120777 1 0 0 0 0.0 a - -',
    '/l 1 120777 1 0 0 0 0.0 a x -',
    '/l 1 120777 1 0 0 0 0.0 a - 0123',
    '/l 1 120777 1 0 0 0 0.0 a - - user.a=b',
    '/c 2 20644 1 0 0 4294967297 0.0 pp ab 00',
    '/c 0 60644 1 0 0 18446744073709551615 0.0 - - -',
    '/d 3 40755 1 0 0 0 0.0 p abc -',
    '/d 3 40755 1 0 0 7 0.0 - - -',
    '/f 0 10644 1 0 0 7 0.0 - - -',
    '/s 0 140644 1 0 0 0 0.0 - - -',
    '/a 0 @100644 x x x x x /b - -\n/b 0 100644 1 0 0 0 0.0 - - -',
    '/a 0 @100644 1 0 0 0 0.0 //b// - -\n/b 0 100644 1 0 0 0 0.0 - - -',
    '/a 0 @100644 1 0 0 0 0.0 /b\\x00junk - -\n/b 0 100644 1 0 0 0 0.0 - - -',
    '/a 0 @120777 1 0 0 0 0.0 /b - -\n/b 0 20644 1 0 0 0 0.0 - - -',
    '/a 0 @170777 1 0 0 0 0.0 /b - -\n/b 0 100644 1 0 0 0 0.0 - - -',
    '/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /c - -\n/c 0 @100644 1 0 0 0 0.0 /d - -\n/d 1 100644 1 0 0 0 0.0 - x -',
    '/a 0 @100644 1 0 0 0 0.0 /a/b - -',
    '/a 0 @100644 1 0 0 0 0.0 /b - -\n/a/x 0 100644 1 0 0 0 0.0 - - -\n/b 0 100644 1 0 0 0 0.0 - - -',
    '/d 0 40755 1 0 0 0 0.0 - - -\n/d/e 0 40755 1 0 0 0 0.0 - - -\n/d/e/f 0 100644 1 0 0 0 0.0 - - -\n/x 0 @100644 1 0 0 0 0.0 d/e/f - -',
    '/d 0 40755 1 0 0 0 0.0 - - -\n/d 0 40755 1 0 0 0 0.0 - - -',
    '/d 0 40755 1 0 0 0 0.0 - - -\n/d/ 0 100644 1 0 0 0 0.0 - - -',
    '/d 0 40755 1 0 0 0 0.0 - - -\n/d//e 0 100644 1 0 0 0 0.0 - - -',
    '/a 9007199254740992 100644 1 0 0 0 0.0 - - -',
    '/a 9007199254740993 100644 1 0 0 0 0.0 - - -',
    '/a 18446744073709551615 20644 1 0 0 0 0.0 - - -',
    '/a 18446735277616529408 100644 1 0 0 0 0.0 - - -', // 2^64 - 2^43: 2^21 - 1 chunks, rejected by C
    '/a 18446735277616529409 100644 1 0 0 0 0.0 - - -', // 2^64 - 2^43 + 1: chunk count wraps to 0 in C
    `/a 0 100644 1 0 0 0 0.0 - - - ${'k'.repeat(255)}=v`,
    `/a 0 100644 1 0 0 0 0.0 - - - a=${'v'.repeat(32747)}`,
    `/a 0 100644 1 0 0 0 0.0 - - - a=${'v'.repeat(32748)}`,
    `/a 0 100644 1 0 0 0 0.0 - - - a=${'v'.repeat(16000)} a=${'v'.repeat(16000)} b=${'v'.repeat(16000)}`,
    `/${'n'.repeat(255)} 0 100644 1 0 0 0 0.0 - - -`,
    `/l 4095 120777 1 0 0 0 0.0 ${'t'.repeat(4095)} - -`,
    `/a 5000 100644 1 0 0 0 0.0 - ${'c'.repeat(5000)} -`,
    `/a 1 100644 1 0 0 0 0.0 ${'p'.repeat(4095)} - -`,
  ];
  // composefs-info appends up to 2 stray bytes to a redirect (reader bug, see assertSameSemantics),
  // which makes a 4095-byte payload too long to parse back: no value comparison for that one.
  const noValueCheck = new Set([corners[corners.length - 1]]);
  let accepted = 0;
  const deviations: string[] = [];
  for (const body of corners) {
    const dump = Buffer.from(`${R}${body}\n`, 'latin1');
    for (const strict of [true, false]) {
      const c = cBuild(dump, strict);
      const o = ours(dump, strict);
      const label = `${JSON.stringify(body.slice(0, 120))} strict=${strict}`;
      if (isKnownDeviation(o, c)) {
        deviations.push(label);
        continue;
      }
      assert.equal(o.accepted, c.accepted, `${label}: C ${c.accepted ? 'accepts' : `rejects (${c.message})`}, we ${o.accepted ? 'accept' : `reject (${o.error.message})`}`);
      if (o.accepted) {
        accepted++;
        if (noValueCheck.has(body)) continue;
        assertSameSemantics(o.fs, parseDumpfile(cDump(c.image), { strict: true, keepDirectorySize: true }), label, true);
      }
    }
  }
  // Exactly the documented 16 EiB case, in both modes.
  assert.equal(deviations.length, 2, deviations.join('; '));
  assert.ok(deviations.every((d) => d.includes('18446735277616529409')), deviations.join('; '));
  console.log(`dumpfile corner lines: ${corners.length} x 2 modes, ${accepted} accepted by both`);
});
