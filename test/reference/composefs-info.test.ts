/**
 * Differential tests of `bootcfs composefs-info` (and the reader behind it) against composefs-info 1.0.8:
 * images are built with the REAL mkcomposefs from the libcomposefs fixture dumpfiles and from seeded
 * random dumpfiles (test/helpers/gen-dumpfile.ts); `ls`, `objects`, `missing-objects` (with a basedir
 * holding some of the objects) and `dump` must print byte-identical stdout.
 * Generated cases are checked in-process through the library (fast) and then all together through the
 * CLI, several images per invocation (which the C tool supports too).
 * Env: BOOTCFS_SEED=<n> fixes the base seed (otherwise random, printed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { openImage } from '../../src/erofs/reader.js';
import { formatLs, imageToTree, listObjects, missingObjects, treeObjects } from '../../src/composefs/info.js';
import { writeDumpfile } from '../../src/dumpfile/write.js';
import { genDumpfile } from '../helpers/gen-dumpfile.js';
import { BOOTCFS_BIN, COMPOSEFS_INFO, FIXTURES, MKCOMPOSEFS, cases, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

const LIBCFS = path.join(FIXTURES, 'libcomposefs-1.0.8');
const NON_STRICT = new Set(['no-newline.dump', 'longlink.dump', 'honggfuzz-longlink-unterminated.dump']);
const COMMANDS = ['ls', 'objects', 'missing-objects', 'dump'] as const;

const work = mkdtempSync(path.join(tmpdir(), 'bootcfs-cfsinfo-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function mkcomposefs(dump: Buffer, out: string, strict: boolean): void {
  const env = { ...process.env };
  if (strict) env.CFS_PARSE_STRICT = '1';
  else delete env.CFS_PARSE_STRICT;
  const r = run(requireTool(MKCOMPOSEFS), ['--from-file', '-', out], { input: dump, env });
  assert.equal(r.status, 0, `mkcomposefs failed: ${r.stderr}`);
}

function refInfo(args: string[]): Buffer {
  const r = run(requireTool(COMPOSEFS_INFO), args);
  assert.equal(r.status, 0, `composefs-info ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function ourInfo(args: string[]): Buffer {
  const r = run(BOOTCFS_BIN, ['composefs-info', ...args]);
  assert.equal(r.status, 0, `bootcfs composefs-info ${args.join(' ')} failed: ${r.stderr}`);
  assert.equal(r.stderr.length, 0, r.stderr.toString());
  return r.stdout;
}

function firstDiffLine(a: Buffer, b: Buffer): string {
  const la = a.toString('latin1').split('\n');
  const lb = b.toString('latin1').split('\n');
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) return `line ${i + 1}:\n  C:  ${la[i]?.slice(0, 300)}\n  us: ${lb[i]?.slice(0, 300)}`;
  }
  return 'identical';
}

function assertSame(ours: Buffer, ref: Buffer, what: string): void {
  if (!ours.equals(ref)) assert.fail(`${what}: output differs from composefs-info, first difference at ${firstDiffLine(ref, ours)}`);
}

/**
 * A basedir holding about half of the objects (some as symlinks, one dangling), so missing-objects has
 * something to filter. Payloads that are not plain relative paths are left out (never created outside).
 */
function makeBasedir(dir: string, objects: string[], rng: Rng): void {
  mkdirSync(dir, { recursive: true });
  let created = 0;
  for (const obj of objects) {
    if (created >= 150) break; // big fixtures reference thousands of objects: a sample is enough
    const rel = obj.replace(/^\/+/, '');
    if (rel === '' || !/^[\x21-\x7e]+$/.test(rel) || rel.split('/').some((c) => c === '..' || c === '.' || c === '')) continue;
    if (!rng.bool(0.5)) continue;
    const p = path.join(dir, rel);
    try {
      mkdirSync(path.dirname(p), { recursive: true });
      const k = rng.int(0, 9);
      if (k === 0) symlinkSync('does-not-exist', p); // dangling: stat() fails, so still missing
      else if (k === 1) symlinkSync('/', p);
      else writeFileSync(p, 'x');
      created++;
    } catch {
      // a component already exists as a file: this object just stays missing
    }
  }
}

function refAll(img: string, basedir: string): Record<(typeof COMMANDS)[number], Buffer> {
  return {
    ls: refInfo(['ls', img]),
    objects: refInfo(['objects', img]),
    'missing-objects': refInfo([`--basedir=${basedir}`, 'missing-objects', img]),
    dump: refInfo(['dump', img]),
  };
}

function objectLines(out: Buffer): string[] {
  return out.toString('latin1').split('\n').slice(0, -1);
}

/** Our outputs for one image through the library (the CLI is a thin loop over exactly these calls). */
function libAll(buf: Buffer, basedir: string, filter?: string[]): Record<(typeof COMMANDS)[number], Buffer> {
  const fs = imageToTree(buf, { mode: 'c', filter });
  const objs = treeObjects(fs);
  const lines = (l: string[]) => Buffer.from(l.map((o) => `${o}\n`).join(''), 'latin1');
  return {
    ls: Buffer.from(formatLs(fs), 'latin1'),
    objects: lines(objs),
    'missing-objects': lines(missingObjects(objs, basedir)),
    dump: writeDumpfile(fs),
  };
}

test('composefs-info on the libcomposefs fixtures: ls, objects, missing-objects, dump identical', () => {
  const files = readdirSync(LIBCFS).filter((f) => (f.endsWith('.dump') || f.endsWith('.dump.gz')) && !f.startsWith('should-fail'));
  assert.ok(files.length >= 12, `fixtures missing in ${LIBCFS}`);
  const rng = new Rng(1);
  const basedir = path.join(work, 'fixtures.objects');
  const images: string[] = [];
  const refs: Array<Record<(typeof COMMANDS)[number], Buffer>> = [];
  let compared = 0;
  for (const f of files) {
    let dump = readFileSync(path.join(LIBCFS, f));
    if (f.endsWith('.gz')) dump = gunzipSync(dump);
    const img = path.join(work, `${f}.img`);
    mkcomposefs(dump, img, !NON_STRICT.has(f));
    makeBasedir(basedir, objectLines(refInfo(['objects', img])), rng);
    images.push(img);
  }
  for (const img of images) {
    const ref = refAll(img, basedir);
    refs.push(ref);
    const ours = libAll(readFileSync(img), basedir);
    for (const cmd of COMMANDS) {
      assertSame(ours[cmd], ref[cmd], `${path.basename(img)}: ${cmd}`);
      compared++;
    }
  }
  // The CLI, all fixture images in one invocation per command (ls/dump concatenate, objects is the union).
  for (const cmd of ['ls', 'dump'] as const) {
    assertSame(ourInfo([cmd, ...images]), Buffer.concat(refs.map((r) => r[cmd])), `CLI ${cmd} of all fixtures`);
  }
  assertSame(ourInfo(['objects', ...images]), refInfo(['objects', ...images]), 'CLI objects of all fixtures');
  const mo = [`--basedir=${basedir}`, 'missing-objects', ...images];
  assertSame(ourInfo(mo), refInfo(mo), 'CLI missing-objects of all fixtures');
  compared += 4;
  // --filter (top-level names only, repeatable) on the biggest tree
  const img = path.join(work, 'cs9-x86_64-minimal.dump.gz.img');
  const buf = readFileSync(img);
  for (const filters of [['usr'], ['etc', 'var', 'nonexistent'], ['lib64'], ['nonexistent']]) {
    const fargs = filters.map((n) => `--filter=${n}`);
    const ours = libAll(buf, basedir, filters);
    for (const cmd of ['ls', 'dump', 'objects'] as const) {
      assertSame(ours[cmd], refInfo([...fargs, cmd, img]), `--filter ${filters} ${cmd}`);
      compared++;
    }
  }
  const fargs = ['--filter=etc', '--filter=var'];
  assertSame(ourInfo([...fargs, 'dump', img]), refInfo([...fargs, 'dump', img]), 'CLI --filter dump');
  compared++;
  console.log(`fixtures: ${files.length} images, ${compared} command outputs identical`);
});

test('composefs-info on seeded random images: identical output (library per image, CLI in batches)', () => {
  const n = cases(30, 400);
  const base = process.env.BOOTCFS_SEED ? Number(process.env.BOOTCFS_SEED) : Math.floor(Math.random() * 0x7fffffff);
  const images: string[] = [];
  const refConcat: Record<string, Buffer[]> = { ls: [], dump: [], objects: [] };
  const allObjects: string[] = [];
  for (let i = 0; i < n; i++) {
    const seed = (base + i) >>> 0;
    const ctx = `seed ${seed} (BOOTCFS_SEED=${seed})`;
    const rng = new Rng(seed);
    const dump = genDumpfile(rng, { maxEntries: rng.int(5, 120) });
    const img = path.join(work, `gen-${i}.img`);
    mkcomposefs(dump, img, true);
    const buf = readFileSync(img);
    const basedir = path.join(work, `gen-${i}.objects`);
    makeBasedir(basedir, objectLines(refInfo(['objects', img])), rng);
    const ref = refAll(img, basedir);
    try {
      const fs = imageToTree(buf, { mode: 'c' });
      assertSame(Buffer.from(formatLs(fs), 'latin1'), ref.ls, 'ls');
      assertSame(writeDumpfile(fs), ref.dump, 'dump');
      const objs = listObjects(buf);
      assert.deepEqual(objs, treeObjects(fs));
      assertSame(Buffer.from(objs.map((o) => `${o}\n`).join(''), 'latin1'), ref.objects, 'objects');
      const missing = missingObjects(objs, basedir);
      assertSame(Buffer.from(missing.map((o) => `${o}\n`).join(''), 'latin1'), ref['missing-objects'], 'missing-objects');
      // the raw view must read every generated image too
      imageToTree(buf, { mode: 'raw' });
    } catch (e) {
      writeFileSync(path.join(tmpdir(), `bootcfs-cfsinfo-fail-${seed}.dump`), dump);
      throw new Error(`${ctx}: ${(e as Error).message}`, { cause: e });
    }
    images.push(img);
    refConcat.ls!.push(ref.ls);
    refConcat.dump!.push(ref.dump);
    allObjects.push(...objectLines(ref.objects));
  }
  // The CLI over all images at once: ls/dump concatenate, objects is the sorted union.
  const BATCH = 20;
  for (let s = 0; s < images.length; s += BATCH) {
    const batch = images.slice(s, s + BATCH);
    for (const cmd of ['ls', 'dump'] as const) {
      assertSame(ourInfo([cmd, ...batch]), Buffer.concat(refConcat[cmd]!.slice(s, s + BATCH)), `CLI ${cmd} of images ${s}..${s + batch.length - 1} (base seed ${base})`);
    }
    assertSame(ourInfo(['objects', ...batch]), refInfo(['objects', ...batch]), `CLI objects of images ${s}.. (base seed ${base})`);
    const basedir = path.join(work, `gen-${s}.objects`);
    assertSame(ourInfo([`--basedir=${basedir}`, 'missing-objects', ...batch]), refInfo([`--basedir=${basedir}`, 'missing-objects', ...batch]), `CLI missing-objects (base seed ${base})`);
  }
  console.log(`random images: ${n} (base seed ${base}), ${4 * n} outputs identical in-process, ${allObjects.length} object references; CLI batches of ${BATCH}`);
});

test('composefs-info measure-file: fs-verity sha256 like the C tool, kernel value for an empty file', () => {
  const dir = path.join(work, 'measure');
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(7);
  const files: string[] = [];
  for (const size of [1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 300000]) {
    const p = path.join(dir, `f${size}`);
    writeFileSync(p, rng.bytes(size));
    files.push(p);
  }
  assertSame(ourInfo(['measure-file', ...files]), refInfo(['measure-file', ...files]), 'measure-file');
  const empty = path.join(dir, 'empty');
  writeFileSync(empty, '');
  // libcomposefs hashes a zero block for empty input (cfc33910…); the kernel's FS_IOC_MEASURE_VERITY and
  // composefs-rs give an all-zero root hash. bootcfs follows the kernel (composefs-format.md §1.1).
  assert.equal(refInfo(['measure-file', empty]).toString(), 'cfc3391077edfd51859f6e5e16e03f82b1da3ee1a35d418b0d0b3b57740b4405\n');
  assert.equal(ourInfo(['measure-file', empty]).toString(), '3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95\n');
});

test('C reader quirks reproduced: redirect over-read, duplicate xattr names, 0/0 devices, opaque=x', () => {
  const dir = path.join(work, 'quirks');
  mkdirSync(dir, { recursive: true });
  // payload lengths 3 and 7: the "/"+payload redirect value is not followed by zero padding, so
  // libcomposefs's off-by-two read shows the next bytes of the image (here: the next shared entry)
  const dump = [
    '/ 0 40755 2 0 0 0 0.0 - - -',
    '/f 100 100644 1 0 0 0 0.0 a/b - -',
    '/g 100 100644 1 0 0 0 0.0 a/b - - user.x=y',
    '/h 5000 100644 1 0 0 0 0.0 abc/def - -',
    '/i 100 100644 1 0 0 0 0.0 /ab/c - -',
    '/j 0 100644 1 0 0 0 0.0 - - - user.aa=1 user.bb=2 user.cc=3 user.dd=4',
    '/w 0 20644 1 0 0 0 0.0 - - -',
    '/x 0 20644 1 0 0 5 0.0 - - -',
    '',
  ].join('\n');
  const imgPath = path.join(dir, 'q.img');
  mkcomposefs(Buffer.from(dump), imgPath, true);
  const buf = readFileSync(imgPath);
  // rename user.cc to user.aa in place: the C reader replaces aa (moving the last entry into its slot)
  const img = openImage(buf);
  const j = img.readDir(img.header.rootNid).find((e) => e.name === 'j')!;
  const cc = img.inode(j.nid).xattrs.find((x) => x.name === 'user.cc')!;
  assert.equal(cc.shared, false);
  buf.write('aa', cc.offset + 4, 'latin1');
  writeFileSync(imgPath, buf);
  const ref = refAll(imgPath, dir);
  assert.match(ref.dump.toString('latin1'), /\/f 100 100644 1 0 0 0 0\.0 a\/b\\x/, 'the C quirk is visible in this image');
  const ours = libAll(buf, dir);
  for (const cmd of COMMANDS) assertSame(ours[cmd], ref[cmd], `quirk image: ${cmd}`);
  assertSame(ourInfo(['dump', imgPath]), ref.dump, 'quirk image via CLI');
});
