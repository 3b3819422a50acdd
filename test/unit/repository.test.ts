/**
 * unit tier: the composefs repository on this host's filesystem (no fs-verity here, so repositories are
 * insecure except where the secure path's refusal is the thing tested).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  Repository, parseRepoMeta, serializeRepoMeta, newRepoMeta, effectiveErofsFormat, relativeLinkTarget, formatGcResult,
  formatFsckResult, type GcResult,
} from '../../src/repository/index.js';
import { SplitStreamWriter } from '../../src/splitstream/index.js';
import { BootcfsError, NotSupportedError } from '../../src/errors.js';
import { fsverityDigest, type HashAlgorithm } from '../../src/fsverity/index.js';
import { Inode, newDir, S_IFREG, type FileSystem } from '../../src/tree/model.js';
import { writeImageV1 } from '../../src/erofs/writer-v1.js';
import { writeImageV2 } from '../../src/erofs/writer-v2.js';
import { listObjects } from '../../src/composefs/info.js';
import { REPO_ROOT } from '../helpers/ref.js';

function tmp(): string {
  return fs.mkdtempSync(path.join(tmpdir(), 'bootcfs-repo-'));
}

async function withRepo(fn: (repo: Repository, dir: string) => Promise<void>, alg: HashAlgorithm = 'sha256'): Promise<void> {
  const dir = tmp();
  const repo = await Repository.init(path.join(dir, 'repo'), { algorithm: alg, insecure: true });
  try {
    await fn(repo, path.join(dir, 'repo'));
  } finally {
    await repo.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function rejectsWith(p: Promise<unknown>, cls: Function, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${(e as Error)?.stack}`);
    assert.match((e as Error).message, re);
    return true;
  });
}

/** A composefs image whose regular files live in the repository as the given objects. */
function imageOf(objects: Buffer[], alg: HashAlgorithm, format: 1 | 2 = 1, salt = ''): Buffer {
  const root = newDir();
  objects.forEach((data, i) => {
    const d = fsverityDigest(data, alg);
    const hex = d.toString('hex');
    root.setEntry(`f${i}${salt}`, new Inode({ mode: S_IFREG | 0o644, size: data.length, payload: `${hex.slice(0, 2)}/${hex.slice(2)}`, digest: d }));
  });
  if (salt) root.setEntry(salt, new Inode({ mode: S_IFREG | 0o600, size: 0 }));
  const tree: FileSystem = { root };
  return format === 1 ? writeImageV1(tree) : writeImageV2(tree, { algorithm: alg });
}

function tempFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name.startsWith('.tmp-') || e.name.startsWith('.symlink-') || e.name.includes('.tmp-')) out.push(path.join(d, e.name));
      if (e.isDirectory()) walk(path.join(d, e.name));
    }
  };
  walk(dir);
  return out;
}

// ------------------------------------------------------------------------------------------ meta.json

const META = (alg: string, compat: string, ro: string, fmt: number) =>
  `{\n  "version": 1,\n  "algorithm": "fsverity-${alg}-12",\n  "features": {\n    "compatible": ${compat},\n    "read-only-compatible": ${ro},\n    "incompatible": []\n  },\n  "erofs_formats": {\n    "default": ${fmt}\n  }\n}\n`;
const INSECURE = '[\n      "insecure"\n    ]';
const V1 = '[\n      "v1_erofs"\n    ]';

test('repository: meta.json bytes for both algorithms and both EROFS formats', async () => {
  const dir = tmp();
  try {
    for (const alg of ['sha256', 'sha512'] as const) {
      for (const fmt of [1, 2] as const) {
        const p = path.join(dir, `${alg}-${fmt}`);
        const repo = await Repository.init(p, { algorithm: alg, insecure: true, erofsFormat: fmt });
        assert.equal(fs.readFileSync(path.join(p, 'meta.json'), 'utf8'), META(alg, INSECURE, fmt === 1 ? V1 : '[]', fmt));
        assert.equal(fs.statSync(path.join(p, 'meta.json')).mode & 0o7777, 0o644);
        assert.equal(fs.statSync(p).mode & 0o777, 0o700);
        assert.equal(repo.algorithm, alg);
        assert.equal(repo.erofsFormat, fmt);
        assert.equal(repo.insecure, true);
        await repo.close();
      }
    }
    // The secure variant (what a verity-capable filesystem gets) is exactly composefs-rs's V1 default.
    assert.equal(serializeRepoMeta(newRepoMeta({ algorithm: 'sha512', erofsFormat: 1, insecure: false })).toString(), META('sha512', '[]', V1, 1));
    // Defaults: sha512, V1.
    const repo = await Repository.init(path.join(dir, 'default'), { insecure: true });
    assert.equal(fs.readFileSync(path.join(dir, 'default', 'meta.json'), 'utf8'), META('sha512', INSECURE, V1, 1));
    await repo.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('repository: meta.json parsing follows composefs-rs (legacy format field, feature rules)', () => {
  // §4's original file: no erofs_formats, no v1_erofs → V2 (a repository from before the field existed).
  const legacy = parseRepoMeta(Buffer.from('{"version":1,"algorithm":"fsverity-sha256-12","features":{"compatible":[],"read-only-compatible":[],"incompatible":[]}}'));
  assert.equal(effectiveErofsFormat(legacy), 2);
  assert.equal(effectiveErofsFormat(parseRepoMeta(Buffer.from('{"version":1,"algorithm":"fsverity-sha256-12","features":{"read-only-compatible":["v1_erofs"]}}'))), 1);
  assert.equal(effectiveErofsFormat(parseRepoMeta(Buffer.from('{"version":1,"algorithm":"fsverity-sha512-12"}'))), 2);
  assert.equal(effectiveErofsFormat(parseRepoMeta(Buffer.from('{"version":1,"algorithm":"fsverity-sha512-12","erofs_formats":{"default":0}}'))), 0);
  const m = parseRepoMeta(Buffer.from('{"version":1,"algorithm":"fsverity-sha512-12","erofs_formats":{"default":1,"extra":[2]}}'));
  assert.deepEqual(m.erofsFormats, { default: 1, extra: [2] });
  assert.match(serializeRepoMeta(m).toString(), /"extra": \[\n {6}2\n {4}\]/);
  for (const [text, re] of [
    ['{', /not valid JSON/],
    ['[]', /not a JSON object/],
    ['{"version":"1","algorithm":"fsverity-sha512-12"}', /version/],
    ['{"version":1,"algorithm":"fsverity-sha384-12"}', /unsupported algorithm/],
    ['{"version":1,"algorithm":"fsverity-sha256-16"}', /block size/],
    ['{"version":1,"algorithm":"fsverity-sha256-12","features":{"compatible":[1]}}', /array of strings/],
    ['{"version":1,"algorithm":"fsverity-sha256-12","erofs_formats":{"default":3}}', /EROFS format version/],
  ] as const) {
    assert.throws(() => parseRepoMeta(Buffer.from(text)), (e: unknown) => e instanceof BootcfsError && re.test(e.message), text);
  }
});

test('repository: open refuses newer versions and unknown incompatible features; unknown ro-compat → read-only', async () => {
  const dir = tmp();
  try {
    const p = path.join(dir, 'r');
    await (await Repository.init(p, { algorithm: 'sha256', insecure: true })).close();
    const meta = path.join(p, 'meta.json');
    const write = (o: object) => fs.writeFileSync(meta, JSON.stringify(o));
    const base = { version: 1, algorithm: 'fsverity-sha256-12', features: { compatible: ['insecure'], 'read-only-compatible': [] as string[], incompatible: [] as string[] } };
    write({ ...base, version: 2 });
    await rejectsWith(Repository.open(p), NotSupportedError, /format version 2 is newer/);
    write({ ...base, features: { ...base.features, incompatible: ['from_the_future'] } });
    await rejectsWith(Repository.open(p), NotSupportedError, /incompatible features .*from_the_future/);
    write({ ...base, features: { ...base.features, compatible: ['insecure', 'harmless'] } });
    const ok = await Repository.open(p);
    assert.equal(ok.readOnly, false);
    await ok.close();
    write({ ...base, features: { ...base.features, 'read-only-compatible': ['newer_layout'] } });
    const ro = await Repository.open(p);
    assert.equal(ro.readOnly, true);
    await rejectsWith(ro.ensureObject(Buffer.from('x')), BootcfsError, /read-only .*newer_layout/);
    await ro.close();
    fs.writeFileSync(meta, '{"version": 1, "algorithm": ');
    await rejectsWith(Repository.open(p), BootcfsError, /meta.json: not valid JSON/);
    fs.rmSync(meta);
    await rejectsWith(Repository.open(p), BootcfsError, /not a composefs repository/);
    await rejectsWith(Repository.open(path.join(dir, 'nothing')), BootcfsError, /no composefs repository/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('repository: init is idempotent for one configuration and refuses another', async () => {
  const dir = tmp();
  try {
    const p = path.join(dir, 'a', 'b', 'repo');
    await (await Repository.init(p, { algorithm: 'sha256', insecure: true })).close();
    await (await Repository.init(p, { algorithm: 'sha256', insecure: true })).close();
    await rejectsWith(Repository.init(p, { algorithm: 'sha512', insecure: true }), BootcfsError, /already initialized with a different configuration/);
    await rejectsWith(Repository.init(p, { algorithm: 'sha256', insecure: true, erofsFormat: 2 }), BootcfsError, /different configuration/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('repository: secure mode on a filesystem without fs-verity is a clear error, never a downgrade', async () => {
  const dir = tmp();
  try {
    // init: meta.json's fs-verity cannot be enabled here → NotSupportedError, nothing written.
    const s = path.join(dir, 'secure');
    await rejectsWith(Repository.init(s, { algorithm: 'sha256' }), NotSupportedError, /cannot create a secure repository .* does not support fs-verity/);
    assert.deepEqual(fs.readdirSync(s), []);
    // A secure repository (not declared insecure) copied onto this filesystem: open refuses.
    const p = path.join(dir, 'copied');
    fs.mkdirSync(p, { mode: 0o700 });
    fs.writeFileSync(path.join(p, 'meta.json'), META('sha256', '[]', V1, 1));
    await rejectsWith(Repository.open(p), NotSupportedError, /secure repository .*does not support fs-verity; refusing/);
    // ...unless the caller explicitly asks for insecure access (cfsctl --insecure).
    const forced = await Repository.open(p, { insecure: true });
    assert.equal(forced.insecure, true);
    await forced.close();
    // requireVerity refuses an insecure repository.
    const i = path.join(dir, 'insecure');
    await (await Repository.init(i, { insecure: true })).close();
    await rejectsWith(Repository.open(i, { requireVerity: true }), BootcfsError, /insecure .*verity was required/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// -------------------------------------------------------------------------------------------- objects

test('repository: objects are content-addressed, deduplicated, and written without leftovers', async () => {
  for (const alg of ['sha256', 'sha512'] as const) {
    await withRepo(async (repo, p) => {
      const data = Buffer.from('hello composefs '.repeat(1000));
      const d = fsverityDigest(data, alg);
      const [a, b] = await Promise.all([repo.ensureObject(data), repo.ensureObject(data)]);
      assert.ok(a.equals(d) && b.equals(d));
      const hex = d.toString('hex');
      const file = path.join(p, 'objects', hex.slice(0, 2), hex.slice(2));
      assert.equal(repo.objectPath(d), file);
      assert.ok(fs.readFileSync(file).equals(data));
      assert.equal(fs.statSync(file).mode & 0o7777, 0o644);
      const ino = fs.statSync(file).ino;
      assert.ok((await repo.ensureObject(data)).equals(d));
      assert.equal(fs.statSync(file).ino, ino, 'an existing object is not rewritten');
      // streamed and file imports give the same object
      async function* chunks() {
        for (let o = 0; o < data.length; o += 1000) yield data.subarray(o, o + 1000);
      }
      assert.ok((await repo.ensureObject(chunks())).equals(d));
      const src = path.join(p, '..', 'src-file');
      fs.writeFileSync(src, data);
      assert.ok((await repo.ensureObjectFromFile(src)).equals(d));
      const other = await repo.ensureObjectFromFile(src.replace('src-file', 'missing-file')).catch((e: unknown) => e);
      assert.ok(other instanceof BootcfsError);
      assert.equal(fs.statSync(file).ino, ino);
      assert.equal(await repo.hasObject(d), true);
      assert.equal(await repo.hasObject(Buffer.alloc(d.length)), false);
      assert.ok((await repo.readObject(d, { verify: true })).equals(data));
      assert.ok((await repo.ensureObject(Buffer.alloc(0))).equals(fsverityDigest(Buffer.alloc(0), alg)));
      await repo.sync();
      assert.deepEqual(tempFiles(p), []);
      // a corrupted object is caught by verified reads
      fs.chmodSync(file, 0o644);
      fs.writeFileSync(file, Buffer.from('tampered'));
      await rejectsWith(repo.readObject(d, { verify: true }), BootcfsError, /is corrupt/);
      assert.throws(() => repo.objectPath('abc'), /not a .* digest/);
    }, alg);
  }
});

// ------------------------------------------------------------------------------------ images & streams

test('repository: images and refs are relative symlinks as composefs-rs writes them', async () => {
  assert.equal(relativeLinkTarget('images/abc', 'objects/ab/c'), '../objects/ab/c');
  assert.equal(relativeLinkTarget('images/refs/foo', 'images/abc'), '../abc');
  assert.equal(relativeLinkTarget('images/refs/a/b/c', 'images/abc'), '../../../abc');
  assert.equal(relativeLinkTarget('streams/refs/oci/tag', 'streams/x'), '../../x');
  await withRepo(async (repo, p) => {
    const objs = [Buffer.alloc(5000, 1), Buffer.alloc(7000, 2)];
    for (const o of objs) await repo.ensureObject(o);
    for (const format of [1, 2] as const) {
      const img = imageOf(objs, 'sha256', format);
      const id = await repo.writeImage(img, `system/rootfs-v${format}`);
      const hex = id.toString('hex');
      assert.ok(id.equals(fsverityDigest(img, 'sha256')));
      assert.equal(fs.readlinkSync(path.join(p, 'images', hex)), `../objects/${hex.slice(0, 2)}/${hex.slice(2)}`);
      assert.equal(fs.readlinkSync(path.join(p, 'images', 'refs', 'system', `rootfs-v${format}`)), `../../${hex}`);
      assert.ok((await repo.openImage(hex)).equals(img));
      assert.ok((await repo.openImage(`refs/system/rootfs-v${format}`)).equals(img));
      assert.equal((await repo.imageRefs()).get(`system/rootfs-v${format}`), hex);
    }
    assert.equal((await repo.listImages()).length, 2);
    // An image referencing an object the repository lacks is refused and nothing is published.
    const orphan = imageOf([Buffer.alloc(6000, 3)], 'sha256');
    await rejectsWith(repo.writeImage(orphan, 'bad'), BootcfsError, /references object .* not in the repository/);
    assert.equal(fs.existsSync(path.join(p, 'images', fsverityDigest(orphan, 'sha256').toString('hex'))), false);
    assert.equal((await repo.imageRefs()).has('bad'), false);
    // A hex-named image is verified on open; a corrupted one is refused.
    const img = imageOf(objs, 'sha256', 1, 'x');
    const hex = (await repo.writeImage(img)).toString('hex');
    fs.writeFileSync(repo.objectPath(hex), Buffer.concat([img.subarray(0, 100), Buffer.alloc(img.length - 100)]));
    await rejectsWith(repo.openImage(hex), BootcfsError, /corrupt/);
    await rejectsWith(repo.nameImageRef('x', Buffer.alloc(32, 7)), BootcfsError, /not in the repository/);
    assert.throws(() => repo.imagePath('refs/../escape'), /invalid ref name/);
    assert.equal(await repo.removeImageRef('system/rootfs-v1'), true);
    assert.equal(await repo.removeImageRef('system/rootfs-v1'), false);
  });
});

test('repository: streams, stream refs, reassembly', async () => {
  await withRepo(async (repo, p) => {
    const w = new SplitStreamWriter(repo, { algorithm: 'sha256', contentType: 'ocilayer' });
    w.writeInline(Buffer.from('tar header'));
    const big = Buffer.alloc(10000, 9);
    await w.writeExternalData(big);
    w.writeInline(Buffer.from('padding'));
    const name = 'oci-layer-sha256:' + 'ab'.repeat(32);
    const digest = await repo.writeStream(name, w, 'oci/example:latest');
    const hex = digest.toString('hex');
    assert.equal(fs.readlinkSync(path.join(p, 'streams', name)), `../objects/${hex.slice(0, 2)}/${hex.slice(2)}`);
    assert.equal(fs.readlinkSync(path.join(p, 'streams', 'refs', 'oci', 'example:latest')), `../../${name}`);
    assert.ok((await repo.hasStream(name))!.equals(digest));
    assert.equal(await repo.hasStream('oci-layer-sha256:none'), undefined);
    assert.equal((await repo.streamRefs()).get('oci/example:latest'), name);
    const parts: Buffer[] = [];
    for await (const b of repo.catStream('refs/oci/example:latest')) parts.push(b);
    assert.ok(Buffer.concat(parts).equals(Buffer.concat([Buffer.from('tar header'), big, Buffer.from('padding')])));
    const ss = await repo.openStream(name);
    assert.equal(ss.objectRefs.length, 1);
    // A stream referencing an absent object is refused; nothing is published.
    const w2 = new SplitStreamWriter(repo, { algorithm: 'sha256', contentType: 'ocilayer' });
    w2.writeExternal(Buffer.alloc(32, 1), 10);
    await rejectsWith(repo.writeStream('broken', w2), BootcfsError, /references object .* not in the repository/);
    assert.equal(fs.existsSync(path.join(p, 'streams', 'broken')), false);
    await rejectsWith(repo.nameStreamRef('oci/x', 'broken'), BootcfsError, /not in the repository/);
    await rejectsWith(repo.writeStream('wrong-alg', new SplitStreamWriter(repo, { algorithm: 'sha512', contentType: 'ocilayer' })), BootcfsError, /uses sha512/);
    await rejectsWith(repo.writeStream('bad/name', new SplitStreamWriter(repo, { algorithm: 'sha256', contentType: 'ocilayer' })), BootcfsError, /invalid stream name/);
    assert.deepEqual(tempFiles(p), []);
  });
});

// ------------------------------------------------------------------------------------------------- gc

test('repository: gc keeps everything reachable and deletes the rest (dry run counts the same)', async () => {
  await withRepo(async (repo, p) => {
    const alg = 'sha256';
    const blob = (n: number) => Buffer.alloc(4000 + n, n);
    const o = Array.from({ length: 9 }, (_, i) => blob(i));
    for (const x of o) await repo.ensureObject(x);
    const hex = (b: Buffer) => fsverityDigest(b, alg).toString('hex');
    // image A (ref'd): o0,o1;  image B (unref'd): o1,o2;  image C (named from a stream): o8 only via stream S3
    const imgA = imageOf([o[0]!, o[1]!], alg, 1);
    const imgB = imageOf([o[1]!, o[2]!], alg, 2);
    const imgC = imageOf([o[8]!], alg, 1, 'c');
    const a = await repo.writeImage(imgA, 'keep/a');
    const b = await repo.writeImage(imgB);
    const c = await repo.writeImage(imgC);
    // stream S3 (no ref, reachable from S1's named ref): o5, o8;  S1 (ref'd): o3 + named refs to S3 and image C
    const s3w = new SplitStreamWriter(repo, { algorithm: alg, contentType: 'ocilayer' });
    await s3w.writeExternalData(o[5]!);
    await s3w.writeExternalData(o[8]!);
    const s3 = await repo.writeStream('layer-s3', s3w);
    const s1w = new SplitStreamWriter(repo, { algorithm: alg, contentType: 'ociconfg' });
    await s1w.writeExternalData(o[3]!);
    s1w.addNamedRef('layer', s3);
    s1w.addNamedRef('composefs.image', c);
    await repo.writeStream('config-s1', s1w, 'oci/tagged');
    // S2: unreferenced stream with o4;  o6, o7: loose objects
    const s2w = new SplitStreamWriter(repo, { algorithm: alg, contentType: 'ocilayer' });
    await s2w.writeExternalData(o[4]!);
    const s2 = await repo.writeStream('layer-s2', s2w);
    // junk: a dangling ref, stale temp files
    fs.symlinkSync('../gone', path.join(p, 'images', 'refs', 'dangling'));
    fs.writeFileSync(path.join(p, 'objects', '.tmp-stale'), 'x');
    fs.writeFileSync(path.join(p, 'objects', hex(o[0]!).slice(0, 2), '.tmp-stale2'), 'x');
    fs.symlinkSync('x', path.join(p, 'streams', '.symlink-stale'));

    const expectRemoved = [hex(o[2]!), hex(o[4]!), hex(o[6]!), hex(o[7]!), b.toString('hex'), s2.toString('hex')];
    const expectBytes = expectRemoved.reduce((n, h) => n + fs.statSync(repo.objectPath(h)).size, 0);
    const dry = await repo.gc({ dryRun: true });
    const wet = await repo.gc();
    const strip = (r: GcResult) => ({ ...r, dryRun: undefined });
    assert.deepEqual(strip(dry), strip(wet), 'dry run reports exactly what the real run does');
    assert.equal(wet.objectsRemoved, expectRemoved.length);
    assert.equal(wet.bytesFreed, expectBytes);
    assert.equal(wet.tempFilesRemoved, 3);
    assert.deepEqual(wet.prunedSymlinks.sort(), [`images/${b.toString('hex')}`, 'images/refs/dangling', 'streams/layer-s2'].sort());
    assert.match(formatGcResult(wet), new RegExp(`^Objects: 6 removed \\(${expectBytes} bytes\\)\\nPruned symlinks: `));
    for (const h of expectRemoved) assert.equal(await repo.hasObject(h), false, `removed ${h}`);
    for (const x of [o[0]!, o[1]!, o[3]!, o[5]!, o[8]!]) assert.equal(await repo.hasObject(fsverityDigest(x, alg)), true);
    for (const x of [a, c, s3]) assert.equal(await repo.hasObject(x), true);
    assert.ok(await repo.hasStream('layer-s3'));
    assert.ok(fs.existsSync(path.join(p, 'images', c.toString('hex'))), 'image named by a stream stays listed');
    assert.deepEqual(tempFiles(p), []);
    assert.equal((await repo.fsck()).ok, true);
    // A second run finds nothing; an extra root keeps an otherwise unreferenced image.
    assert.equal((await repo.gc()).objectsRemoved, 0);
    const d = await repo.writeImage(imageOf([o[0]!], alg, 1, 'd'));
    const keep = await repo.gc({ extraRoots: [d.toString('hex'), 'no-such-root'] });
    assert.equal(keep.objectsRemoved, 0);
    assert.deepEqual(keep.missingRoots, ['no-such-root']);
    assert.equal((await repo.gc()).objectsRemoved, 1);
    // Dropping the tag releases the stream chain (S1, S3, their objects, and image C).
    await repo.removeStreamRef('oci/tagged');
    const last = await repo.gc();
    assert.equal(last.objectsRemoved, 6); // S1, S3, C, o3, o5, o8
    assert.equal(await repo.hasStream('layer-s3'), undefined);
    assert.deepEqual((await repo.listImages()), [a.toString('hex')]);
  });
});

test('repository: gc keeps objects an image references through metacopy (parsed EROFS, sha512)', async () => {
  await withRepo(async (repo) => {
    const objs = Array.from({ length: 20 }, (_, i) => Buffer.alloc(100 + i * 37, i + 1));
    for (const x of objs) await repo.ensureObject(x);
    // (the C-compatible writer only stores sha256 metacopy digests; the rs-native format takes sha512)
    const img = imageOf(objs.slice(0, 15), 'sha512', 2);
    assert.equal(listObjects(img).length, 15);
    await repo.writeImage(img, 'r');
    const r = await repo.gc();
    assert.equal(r.objectsRemoved, 5);
    for (const [i, x] of objs.entries()) assert.equal(await repo.hasObject(fsverityDigest(x, 'sha512')), i < 15);
  }, 'sha512');
});

// ----------------------------------------------------------------------------------------------- fsck

test('repository: fsck detects corrupt and missing objects and dangling refs; --repair drops damaged objects', async () => {
  await withRepo(async (repo, p) => {
    const alg = 'sha256';
    const o = [Buffer.alloc(5000, 1), Buffer.alloc(6000, 2), Buffer.alloc(7000, 3)];
    for (const x of o) await repo.ensureObject(x);
    const id = await repo.writeImage(imageOf([o[0]!, o[1]!], alg), 'img');
    const w = new SplitStreamWriter(repo, { algorithm: alg, contentType: 'ocilayer' });
    await w.writeExternalData(o[2]!);
    await repo.writeStream('layer', w, 'tag');
    const clean = await repo.fsck();
    assert.equal(clean.ok, true, formatFsckResult(clean));
    assert.equal(clean.objectsChecked, 5);

    const h = (b: Buffer) => fsverityDigest(b, alg).toString('hex');
    fs.writeFileSync(repo.objectPath(h(o[0]!)), Buffer.alloc(5000, 9)); // corrupted in place
    fs.rmSync(repo.objectPath(h(o[2]!))); // missing, referenced by the stream
    fs.symlinkSync('../nothing-here', path.join(p, 'streams', 'refs', 'dangling'));
    const r = await repo.fsck();
    assert.equal(r.ok, false);
    assert.deepEqual(r.damagedObjects.map((d) => d.object), [h(o[0]!)]);
    assert.match(r.damagedObjects[0]!.reason, /content digest is/);
    assert.deepEqual(r.missingObjects, [{ object: h(o[2]!), referencedBy: 'streams/layer' }]);
    assert.deepEqual(r.danglingRefs, ['streams/refs/dangling']);
    assert.deepEqual(r.removedObjects, []);
    assert.match(formatFsckResult(r), /damaged object .*\nmissing object .*streams\/layer\)\ndangling ref streams\/refs\/dangling\n4 objects checked, 0 temporary files; repository is damaged/);

    const fixed = await repo.fsck({ repair: true });
    assert.deepEqual(fixed.removedObjects, [h(o[0]!)]);
    assert.equal(await repo.hasObject(h(o[0]!)), false);
    // after repair the damaged object shows up as missing from the image that needs it
    assert.deepEqual(
      fixed.missingObjects.map((m) => `${m.object} ${m.referencedBy}`).sort(),
      [`${h(o[0]!)} images/${id.toString('hex')}`, `${h(o[2]!)} streams/layer`].sort(),
    );
    const after = await repo.fsck();
    assert.deepEqual(after.damagedObjects, []);
    assert.equal(after.ok, false);
    // refetching the objects (what the next pull does) and dropping the junk ref makes it clean
    await repo.ensureObject(o[0]!);
    await repo.ensureObject(o[2]!);
    fs.rmSync(path.join(p, 'streams', 'refs', 'dangling'));
    assert.equal((await repo.fsck()).ok, true);
    // a broken stream object (valid name, not a splitstream) is reported
    const junk = await repo.ensureObject(Buffer.from('not a splitstream'));
    fs.symlinkSync(`../objects/${junk.toString('hex').slice(0, 2)}/${junk.toString('hex').slice(2)}`, path.join(p, 'streams', 'junk'));
    const j = await repo.fsck();
    assert.deepEqual(j.brokenStreams.map((b) => b.name), ['junk']);
    assert.match(j.brokenStreams[0]!.reason, /not a valid splitstream: splitstream is 17 bytes, shorter than its 32-byte header/);
  });
});

// -------------------------------------------------------------------------------------------- locking

test('repository: a reader holding the shared lock in another process blocks gc until it leaves', async () => {
  await withRepo(async (repo, p) => {
    await repo.ensureObject(Buffer.from('garbage'));
    const script = `
      import { Repository } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/src/repository/index.js'))};
      const repo = await Repository.open(${JSON.stringify(p)});
      process.stdout.write('locked\\n');
      process.stdin.resume();
      process.stdin.on('end', async () => { await repo.close(); process.stdout.write('released\\n'); process.exit(0); });
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    const lines = new Promise<void>((resolve) => child.stdout.on('data', (b) => ((out += b), out.includes('locked') && resolve())));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await lines;
    // A dry run only needs the shared lock: it runs alongside the reader.
    assert.equal((await repo.gc({ dryRun: true })).objectsRemoved, 1);
    let finished = false;
    const gc = repo.gc().then((r) => ((finished = true), r));
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(finished, false, 'gc must wait for the other process');
    assert.equal(await repo.hasObject(fsverityDigest(Buffer.from('garbage'), 'sha256')), true);
    child.stdin.end();
    const result = await gc;
    assert.equal(out.includes('released'), true);
    assert.equal(result.objectsRemoved, 1);
    assert.equal(await exited, 0);
  });
});
