/**
 * The composefs image reader on hostile input. Valid images are built at test time with the REAL
 * mkcomposefs (v1 layout) and with our composefs-rs-compatible writer (v2 layout), then mutated with
 * seeded corruptions: bit flips, interesting byte/u16/u32 overwrites, truncations, inode header fields,
 * xattr headers and entries, directory dirents (name offsets, nids, types, names), dirents redirected
 * to ancestors (cycles). The full read — imageToTree in both modes and listObjects — must either
 * succeed or throw a BootcfsError; anything else (TypeError, RangeError, a hang, > 2 s) fails.
 * The fuzz loop runs in a worker thread watched by a timer, so even an infinite loop is reported with
 * its seed instead of hanging the suite.
 * The specific corruptions of mkcomposefs-quirks.md (which composefs-info prints or crashes on) must
 * be rejected with a FormatError, by the library and by the CLI (exit 1, `bootcfs: ...`, no stack).
 * Env: BOOTCFS_SEED=<n> fixes the base seed (otherwise random, printed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BootcfsError, FormatError } from '../../src/errors.js';
import { openImage, type ErofsImage, type ErofsInode } from '../../src/erofs/reader.js';
import { imageToTree, listObjects } from '../../src/composefs/info.js';
import { parseDumpfile } from '../../src/dumpfile/parse.js';
import { writeImageV2 } from '../../src/erofs/writer-v2.js';
import { walk, type FileSystem } from '../../src/tree/model.js';
import { genDumpfile } from '../helpers/gen-dumpfile.js';
import { BOOTCFS_BIN, FIXTURES, MKCOMPOSEFS, cases, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

const CASE_TIME_LIMIT_MS = 2000;

/** Everything a consumer would do with an untrusted image. Returns normally or throws. */
function fullRead(buf: Buffer): void {
  imageToTree(buf, { mode: 'c' });
  imageToTree(buf, { mode: 'raw' });
  listObjects(buf);
}

// ------------------------------------------------------------------------------------------ mutations

interface Known {
  /** Parsed inodes of the valid image (offsets of every field are known from these). */
  inodes: ErofsInode[];
  /** nid → nids of the directories on its path from the root (ancestors). */
  dirs: Array<{ ino: ErofsInode; ancestors: number[]; pieces: Array<{ offset: number; length: number }> }>;
}

/** Walk a valid image once through the raw reader to learn where its structures are. */
function survey(buf: Buffer): Known {
  const img = openImage(buf);
  const inodes = new Map<number, ErofsInode>();
  const dirs: Known['dirs'] = [];
  const stack: Array<[number, number[]]> = [[img.header.rootNid, []]];
  while (stack.length > 0) {
    const [nid, ancestors] = stack.pop()!;
    const ino = img.inode(nid);
    inodes.set(nid, ino);
    if (ino.type !== 'dir') continue;
    dirs.push({ ino, ancestors, pieces: img.dataPieces(ino) });
    for (const e of img.readDir(nid)) {
      if (e.name === '.' || e.name === '..' || inodes.has(e.nid)) continue;
      const child = img.inode(e.nid);
      if (child.type === 'dir') stack.push([e.nid, [...ancestors, nid]]);
      else inodes.set(e.nid, child);
    }
  }
  return { inodes: [...inodes.values()], dirs };
}

const INTERESTING8 = [0, 1, 0x7f, 0x80, 0xff, 0x2e, 0x2f, 12, 0x20];
const INTERESTING16 = [0, 1, 12, 24, 0x7fff, 0x8000, 0xffff, 4095, 4096, 2048, 0o40755, 0o20644, 0o100644, 0o120777];
const INTERESTING32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 36, 4096, 0x100000, 0xfffffff0];

function mutate(base: Buffer, k: Known, rng: Rng): { buf: Buffer; what: string[] } {
  let buf = Buffer.from(base);
  const what: string[] = [];
  const nMut = rng.bool(0.7) ? 1 : rng.int(2, 5);
  const hotOffset = () => {
    // mostly the metadata (header, superblock, inodes, shared xattrs, first directory blocks)
    const hot = Math.min(buf.length, 16384);
    return rng.bool(0.8) ? rng.int(0, hot - 1) : rng.int(0, buf.length - 1);
  };
  const w16 = (o: number, v: number) => { if (o >= 0 && o + 2 <= buf.length) buf.writeUInt16LE(v & 0xffff, o); };
  const w32 = (o: number, v: number) => { if (o >= 0 && o + 4 <= buf.length) buf.writeUInt32LE(v >>> 0, o); };
  // earlier mutations may have truncated the image: reads past the end give 0
  const r16 = (o: number) => (o >= 0 && o + 2 <= buf.length ? buf.readUInt16LE(o) : 0);
  for (let m = 0; m < nMut; m++) {
    const kind = rng.int(0, 11);
    if (kind === 0) {
      const o = hotOffset();
      const bit = rng.int(0, 7);
      buf[o]! ^= 1 << bit;
      what.push(`flip bit ${bit} at ${o}`);
    } else if (kind === 1) {
      const o = hotOffset();
      buf[o] = rng.pick(INTERESTING8);
      what.push(`byte ${buf[o]} at ${o}`);
    } else if (kind === 2) {
      const o = hotOffset() & ~1;
      const v = rng.pick(INTERESTING16);
      w16(o, v);
      what.push(`u16 ${v} at ${o}`);
    } else if (kind === 3) {
      const o = hotOffset() & ~3;
      const v = rng.bool(0.3) ? rng.u32() : rng.pick(INTERESTING32);
      w32(o, v);
      what.push(`u32 ${v} at ${o}`);
    } else if (kind === 4) {
      const len = rng.bool(0.3) ? buf.length - rng.int(1, 8) : rng.int(0, buf.length - 1);
      buf = buf.subarray(0, Math.max(0, len));
      what.push(`truncate to ${len}`);
    } else if (kind === 5 || kind === 6) {
      // an inode header field
      const ino = rng.pick(k.inodes);
      const fields = ino.extended
        ? [[0, 2], [2, 2], [4, 2], [8, 4], [12, 4], [16, 4], [24, 4], [28, 4], [32, 4], [40, 4], [44, 4]]
        : [[0, 2], [2, 2], [4, 2], [6, 2], [8, 4], [16, 4], [24, 2], [26, 2]];
      const [fo, fs] = rng.pick(fields) as [number, number];
      const o = ino.offset + fo;
      if (fs === 2) w16(o, rng.bool(0.5) ? rng.pick(INTERESTING16) : rng.int(0, 0xffff));
      else w32(o, rng.bool(0.5) ? rng.pick(INTERESTING32) : rng.u32());
      what.push(`inode ${ino.nid} field +${fo}`);
    } else if (kind === 7) {
      // xattr area: shared count, a shared id, or an entry header
      const withX = k.inodes.filter((i) => i.xattrAreaSize > 0);
      if (withX.length === 0) continue;
      const ino = rng.pick(withX);
      const xs = ino.offset + ino.headerSize;
      const c = rng.int(0, 3);
      const put8 = (o: number, v: number) => { if (o < buf.length) buf[o] = v; };
      if (c === 0) put8(xs + 4, rng.pick([0, 1, 2, 0x7f, 0xff, rng.int(0, 255)]));
      else if (c === 1 && ino.xattrs.some((x) => x.shared)) w32(xs + 12 + 4 * rng.int(0, Math.max(0, (buf[xs + 4] ?? 1) - 1)), rng.pick(INTERESTING32));
      else if (ino.xattrs.length > 0) {
        const x = rng.pick(ino.xattrs);
        const f = rng.int(0, 2);
        if (f === 0) put8(x.offset, rng.pick(INTERESTING8));
        else if (f === 1) put8(x.offset + 1, rng.int(0, 9));
        else w16(x.offset + 2, rng.pick(INTERESTING16));
      }
      what.push(`xattrs of inode ${ino.nid} (${c})`);
    } else if (kind === 8 || kind === 9 || kind === 10) {
      // a dirent of some directory: nameoff, nid (often an ancestor or itself: cycles), type, name bytes
      const d = rng.pick(k.dirs);
      if (d.pieces.length === 0) continue;
      const piece = rng.pick(d.pieces);
      const n = Math.max(1, Math.floor(r16(piece.offset + 8) / 12));
      const de = piece.offset + 12 * rng.int(0, Math.min(n, Math.floor(piece.length / 12)) - 1);
      const c = kind === 10 ? 1 : rng.int(0, 3);
      if (c === 0) w16(de + 8, rng.bool(0.5) ? rng.pick(INTERESTING16) : r16(de + 8) + rng.int(-3, 3));
      else if (c === 1) {
        const target = rng.pick([...d.ancestors, d.ino.nid, rng.pick(k.inodes).nid, rng.int(0, 0xffff)]);
        w32(de, target);
        if (rng.bool(0.7) && de + 10 < buf.length) buf[de + 10] = 2; // claim a directory, as a cycle would
        what.push(`dirent nid → ${target}`);
        continue;
      } else if (c === 2) { if (de + 10 < buf.length) buf[de + 10] = rng.int(0, 9); }
      else {
        const o = piece.offset + rng.int(0, piece.length - 1);
        if (o < buf.length) buf[o] = rng.pick([0, 0x2f, 0x2e, 0xff, 0x61]);
      }
      what.push(`dirent of dir ${d.ino.nid} (${c})`);
    } else {
      // zero a whole inode range
      const ino = rng.pick(k.inodes);
      const len = rng.pick([32, 64, ino.headerSize + ino.xattrAreaSize]);
      buf.fill(0, ino.offset, Math.min(buf.length, ino.offset + len));
      what.push(`zero inode ${ino.nid} (${len} bytes)`);
    }
  }
  return { buf, what };
}

// ------------------------------------------------------------------------------------- base images

function mkcomposefsImage(dump: Buffer, dir: string, name: string): Buffer {
  const out = path.join(dir, name);
  const r = run(requireTool(MKCOMPOSEFS), ['--from-file', '-', out], { input: dump });
  assert.equal(r.status, 0, `mkcomposefs ${name}: ${r.stderr}`);
  return readFileSync(out);
}

/** The fuzz bases: small and medium v1 images from the real mkcomposefs, and v2 images of ours. */
function baseImages(dir: string): Array<{ name: string; buf: Buffer }> {
  const out: Array<{ name: string; buf: Buffer }> = [];
  const lib = path.join(FIXTURES, 'libcomposefs-1.0.8');
  for (const f of ['special.dump', 'special_v1.dump', 'longlink.dump', 'bigfile-xattr.dump', 'honggfuzz-long-symlink.dump']) {
    out.push({ name: f, buf: mkcomposefsImage(readFileSync(path.join(lib, f)), dir, `${f}.img`) });
  }
  for (const seed of [11, 12, 13, 14]) {
    const rng = new Rng(seed);
    const dump = genDumpfile(rng, { maxEntries: 60, hugeDirChance: seed === 14 ? 1 : 0.05 });
    out.push({ name: `gen-${seed}`, buf: mkcomposefsImage(dump, dir, `gen-${seed}.img`) });
  }
  out.push({ name: 'v2:special.dump', buf: writeImageV2(parseDumpfile(readFileSync(path.join(FIXTURES, 'composefs-rs/special.dump')))) });
  // generated trees the composefs-rs layout can hold (it refuses e.g. symlinks over 1024 bytes)
  let v2 = 0;
  for (let seed = 21; seed < 60 && v2 < 2; seed++) {
    let buf: Buffer;
    try {
      buf = writeImageV2(parseDumpfile(genDumpfile(new Rng(seed), { maxEntries: 60 })));
    } catch (e) {
      if (e instanceof BootcfsError) continue;
      throw e;
    }
    out.push({ name: `v2:gen-${seed}`, buf });
    v2++;
  }
  assert.equal(v2, 2, 'two generated trees fit the v2 layout');
  return out;
}

// ----------------------------------------------------------------------------- worker: the fuzz loop

interface FuzzJob { bases: Array<{ name: string; buf: Uint8Array }>; n: number; seed: number }
type FuzzMsg =
  | { t: 'start'; i: number }
  | { t: 'fail'; i: number; seed: number; base: string; what: string[]; error: string; ms: number }
  | { t: 'done'; ok: number; rejected: number; slowest: number; kinds: Record<string, number> };

function fuzzWorker(job: FuzzJob): void {
  const post = (m: FuzzMsg) => parentPort!.postMessage(m);
  const bases = job.bases.map((b) => ({ name: b.name, buf: Buffer.from(b.buf), known: survey(Buffer.from(b.buf)) }));
  let ok = 0, rejected = 0, slowest = 0;
  const kinds: Record<string, number> = {};
  for (let i = 0; i < job.n; i++) {
    const seed = (job.seed + i) >>> 0;
    const rng = new Rng(seed);
    const base = bases[i % bases.length]!;
    const { buf, what } = mutate(base.buf, base.known, rng);
    post({ t: 'start', i });
    const t0 = performance.now();
    let error: unknown;
    try {
      fullRead(buf);
    } catch (e) {
      error = e;
    }
    const ms = performance.now() - t0;
    slowest = Math.max(slowest, ms);
    if (error !== undefined && !(error instanceof BootcfsError)) {
      post({ t: 'fail', i, seed, base: base.name, what, error: (error as Error)?.stack ?? String(error), ms });
      return;
    }
    if (ms > CASE_TIME_LIMIT_MS) {
      post({ t: 'fail', i, seed, base: base.name, what, error: `took ${ms.toFixed(0)} ms`, ms });
      return;
    }
    if (error === undefined) ok++;
    else {
      rejected++;
      const key = (error as Error).message.replace(/[0-9]+/g, 'N').replace(/'.*?'/g, "'…'").slice(0, 60);
      kinds[key] = (kinds[key] ?? 0) + 1;
    }
  }
  post({ t: 'done', ok, rejected, slowest, kinds });
}

if (!isMainThread && (workerData as { hostileFuzz?: boolean })?.hostileFuzz) {
  fuzzWorker(workerData.job as FuzzJob);
}

// --------------------------------------------------------------------------------------- the tests

if (isMainThread) {
  const work = mkdtempSync(path.join(tmpdir(), 'bootcfs-hostile-'));
  process.on('exit', () => rmSync(work, { recursive: true, force: true }));
  let bases: Array<{ name: string; buf: Buffer }> | undefined;
  const getBases = () => (bases ??= baseImages(work));

  test('the fuzz bases themselves read cleanly in both modes', () => {
    for (const b of getBases()) {
      assert.doesNotThrow(() => fullRead(b.buf), b.name);
    }
  });

  test('the low-level view: superblock fields, every stored inode reachable, raw mode keeps what mode c drops', () => {
    for (const b of getBases()) {
      const img = openImage(b.buf);
      const h = img.header;
      const v2 = b.name.startsWith('v2:');
      assert.equal(h.composefsVersion, v2 ? 2 : b.name === 'special_v1.dump' || b.name === 'special.dump' ? 1 : h.composefsVersion, b.name);
      assert.equal(h.blocks * 4096, b.buf.length, b.name);
      if (v2) assert.equal(h.xattrBlkaddr, 0);
      const k = survey(b.buf);
      assert.equal(k.inodes.length, h.inos, `${b.name}: reachable inodes = superblock inode count`);
      for (const ino of k.inodes) {
        if (ino.type === 'dir') {
          const entries = img.readDir(ino.nid);
          assert.equal(entries.find((e) => e.name === '.')?.nid, ino.nid, `${b.name}: '.' of ${ino.nid}`);
        }
        if (!ino.extended) assert.equal(ino.mtimeSec, h.buildTimeSec, 'compact inodes report the build time');
      }
      const raw = imageToTree(b.buf, { mode: 'raw' });
      const c = imageToTree(b.buf, { mode: 'c' });
      const count = (fs: FileSystem) => [...walk(fs.root)].length;
      if (!v2) {
        // mkcomposefs adds the 00..ff whiteout stubs (except names the root already has) and root
        // opaque=y: raw shows them, mode c hides them
        const stubs = [...raw.root.entries!].filter(([n, i]) => /^[0-9a-f]{2}$/.test(n) && i.isWhiteout).length;
        assert.ok(stubs > 0 && count(raw) >= count(c) + stubs, b.name);
        assert.equal(raw.root.xattrs.get('trusted.overlay.opaque')?.toString(), 'y');
        // mode c drops the unescaped marker and unescapes trusted.overlay.overlay.opaque (the v1 =x quirk)
        assert.deepEqual(c.root.xattrs.get('trusted.overlay.opaque'), raw.root.xattrs.get('trusted.overlay.overlay.opaque'), b.name);
      }
    }
  });

  test('seeded corruptions: success or BootcfsError, never another exception, never > 2 s', async () => {
    const n = cases(2000, 50000);
    const seed = process.env.BOOTCFS_SEED ? Number(process.env.BOOTCFS_SEED) : Math.floor(Math.random() * 0x7fffffff);
    const job: FuzzJob = { bases: getBases().map((b) => ({ name: b.name, buf: new Uint8Array(b.buf) })), n, seed };
    const result = await new Promise<Extract<FuzzMsg, { t: 'done' }>>((resolve, reject) => {
      const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { hostileFuzz: true, job } });
      let current = -1;
      let last = Date.now();
      const watchdog = setInterval(() => {
        if (Date.now() - last > 10 * CASE_TIME_LIMIT_MS) {
          clearInterval(watchdog);
          void worker.terminate();
          reject(new Error(`case ${current} (seed ${(seed + current) >>> 0}, BOOTCFS_SEED=${seed}) hangs: no progress for ${10 * CASE_TIME_LIMIT_MS} ms`));
        }
      }, 500);
      worker.on('message', (m: FuzzMsg) => {
        last = Date.now();
        if (m.t === 'start') current = m.i;
        else if (m.t === 'fail') {
          clearInterval(watchdog);
          void worker.terminate();
          reject(new Error(`case ${m.i} (base ${m.base}, case seed ${m.seed}, BOOTCFS_SEED=${seed}; mutations: ${m.what.join('; ')}): ${m.error}`));
        } else {
          clearInterval(watchdog);
          void worker.terminate();
          resolve(m);
        }
      });
      worker.on('error', (e) => { clearInterval(watchdog); reject(e); });
      worker.on('exit', (code) => { clearInterval(watchdog); if (code !== 0 && code !== 1) reject(new Error(`fuzz worker exited with ${code}`)); });
    });
    assert.equal(result.ok + result.rejected, n);
    // a fuzzer that never gets past the header checks would be useless: both outcomes must be common
    assert.ok(result.rejected > n / 10, `only ${result.rejected} of ${n} corruptions were rejected`);
    assert.ok(result.ok > n / 20, `only ${result.ok} of ${n} corruptions were read successfully`);
    const top = Object.entries(result.kinds).sort((a, b) => b[1] - a[1]).slice(0, 12);
    console.log(`hostile fuzz: ${n} cases (BOOTCFS_SEED=${seed}), ${result.ok} read, ${result.rejected} rejected with BootcfsError, slowest ${result.slowest.toFixed(1)} ms`);
    for (const [k, c] of top) console.log(`  ${String(c).padStart(6)}  ${k}`);
  });

  // --------------------------------------------------- the corruptions composefs-info mishandles

  const special = () => getBases().find((b) => b.name === 'special.dump')!.buf;

  /** A subdirectory of the image and its survey data. */
  function subdirOf(buf: Buffer): { img: ErofsImage; k: Known; sub: Known['dirs'][number] } {
    const k = survey(buf);
    const sub = k.dirs.find((d) => d.ancestors.length > 0 && d.pieces.length > 0);
    assert.ok(sub, 'fixture has a subdirectory');
    return { img: openImage(buf), k, sub };
  }

  function nestedImage(): Buffer {
    const dump = Buffer.from('/ 0 40755 3 0 0 0 0.0 - - -\n/a 0 40755 3 0 0 0 0.0 - - -\n/a/b 0 40755 2 0 0 0 0.0 - - -\n/a/b/f 5 100644 1 0 0 0 0.0 - hello - user.x=1\n/a/z 0 100644 1 0 0 0 0.0 - - -\n', 'latin1');
    return mkcomposefsImage(dump, work, 'nested.img');
  }

  const corruptions: Array<{ name: string; make: () => Buffer; expect: RegExp }> = [
    { name: 'truncated by one byte', make: () => special().subarray(0, special().length - 1), expect: /truncated/ },
    { name: 'truncated to 4096 bytes', make: () => special().subarray(0, 4096), expect: /truncated/ },
    {
      name: 'directory cycle (a grandchild dirent points back to the root)',
      make: () => {
        const buf = Buffer.from(nestedImage());
        const { img, sub } = subdirOf(buf);
        // rewrite the first non-dot entry of /a/b to point at the root, typed as a directory
        const e = img.readDir(sub.ino.nid).find((x) => x.name !== '.' && x.name !== '..')!;
        buf.writeUInt32LE(img.header.rootNid, e.offset);
        buf[e.offset + 10] = 2;
        return buf;
      },
      expect: /directory cycle/,
    },
    {
      name: 'directory cycle (a dirent points at its own directory)',
      make: () => {
        const buf = Buffer.from(nestedImage());
        const { img, sub } = subdirOf(buf);
        const e = img.readDir(sub.ino.nid).find((x) => x.name !== '.' && x.name !== '..')!;
        buf.writeUInt32LE(sub.ino.nid, e.offset);
        buf[e.offset + 10] = 2;
        return buf;
      },
      expect: /directory cycle/,
    },
    {
      name: 'zeroed inode range',
      make: () => {
        const buf = Buffer.from(special());
        const k = survey(buf);
        const victim = k.inodes.find((i) => i.type === 'reg')!;
        buf.fill(0, victim.offset, victim.offset + victim.headerSize + victim.xattrAreaSize);
        return buf;
      },
      expect: /invalid file type/,
    },
    {
      name: 'zeroed range covering all inodes after the root',
      make: () => {
        const buf = Buffer.from(special());
        const k = survey(buf);
        const root = k.dirs[0]!.ino;
        buf.fill(0, root.offset + root.headerSize + root.xattrAreaSize + root.tailSize, 8192);
        return buf;
      },
      expect: /.+/,
    },
    {
      name: 'directory block address out of range',
      make: () => {
        const buf = Buffer.from(special());
        const root = survey(buf).dirs[0]!.ino;
        assert.ok(root.blockCount > 0, 'special.dump root directory has a data block');
        buf.writeUInt32LE(0x7fffffff, root.offset + 16);
        return buf;
      },
      expect: /past the end of the image/,
    },
    {
      name: 'huge shared-xattr count',
      make: () => {
        const buf = Buffer.from(special());
        const victim = survey(buf).inodes.find((i) => i.xattrAreaSize > 0 && i.xattrAreaSize < 12 + 4 * 255)!;
        buf[victim.offset + victim.headerSize + 4] = 255;
        return buf;
      },
      expect: /shared xattr ids do not fit/,
    },
    {
      name: 'shared xattr id outside the table',
      make: () => {
        const buf = Buffer.from(special());
        const victim = survey(buf).inodes.find((i) => i.xattrs.some((x) => x.shared))!;
        buf.writeUInt32LE(0xffffff00, victim.offset + victim.headerSize + 12);
        return buf;
      },
      expect: /shared xattr id .* past the end/,
    },
    {
      name: 'root nid past the end of the image',
      make: () => {
        const buf = Buffer.from(special());
        buf.writeUInt16LE(0xffff, 1024 + 14);
        return buf;
      },
      expect: /outside the inode area/,
    },
    {
      name: 'root nid inside the superblock',
      make: () => {
        const buf = Buffer.from(special());
        buf.writeUInt16LE(33, 1024 + 14);
        return buf;
      },
      expect: /outside the inode area/,
    },
    {
      name: 'absurd directory size',
      make: () => {
        const buf = Buffer.from(special());
        const root = survey(buf).dirs[0]!.ino;
        buf.writeUInt32LE(0xfffff000, root.offset + 8);
        if (root.extended) buf.writeUInt32LE(0, root.offset + 12);
        return buf;
      },
      expect: /past the end of the image/,
    },
    {
      name: 'directory name offsets out of order',
      make: () => {
        const buf = Buffer.from(special());
        const root = survey(buf).dirs[0]!;
        const p = root.pieces[0]!;
        buf.writeUInt16LE(buf.readUInt16LE(p.offset + 8 + 24) + 3, p.offset + 8 + 12);
        return buf;
      },
      expect: /name offsets out of order|out of order or duplicated/,
    },
    {
      name: 'xattr entry size runs past the inode',
      make: () => {
        const buf = Buffer.from(special());
        const victim = survey(buf).inodes.find((i) => i.xattrs.some((x) => !x.shared))!;
        const x = victim.xattrs.find((e) => !e.shared)!;
        buf.writeUInt16LE(0xffff, x.offset + 2);
        return buf;
      },
      expect: /runs past the end/,
    },
  ];

  for (const c of corruptions) {
    test(`rejected with a FormatError: ${c.name}`, () => {
      const buf = c.make();
      for (const read of [
        () => imageToTree(buf, { mode: 'c' }),
        () => imageToTree(buf, { mode: 'raw' }),
        () => listObjects(buf),
      ]) {
        assert.throws(read, (e: unknown) => {
          assert.ok(e instanceof FormatError, `expected FormatError, got ${(e as Error)?.stack}`);
          assert.match(e.message, c.expect);
          assert.ok(Number.isInteger(e.offset) && e.offset >= 0, 'carries a byte offset');
          return true;
        });
      }
    });
  }

  test('the CLI rejects the same images: exit 1, "bootcfs: ..." on stderr, no stack trace, nothing on stdout', () => {
    requireTool(BOOTCFS_BIN);
    for (const [i, c] of corruptions.entries()) {
      const p = path.join(work, 'corrupt.img');
      writeFileSync(p, c.make());
      // every corruption through `dump`; ls and objects (same loader) for a few, to bound process spawns
      for (const cmd of i < 3 ? ['dump', 'ls', 'objects'] : ['dump']) {
        const r = run(BOOTCFS_BIN, ['composefs-info', cmd, p]);
        const err = r.stderr.toString();
        assert.equal(r.status, 1, `${c.name} / ${cmd}: exit ${r.status}: ${err}`);
        assert.match(err, /^bootcfs: .*corrupt\.img: .*\(at byte offset \d+\)\n$/, `${c.name} / ${cmd}: ${err}`);
        assert.doesNotMatch(err, /\n\s+at |internal error/);
        assert.equal(r.stdout.length, 0, `${c.name} / ${cmd} printed output`);
      }
    }
  });

  test('v2 (composefs-rs layout) images read back to their source tree', () => {
    const src = parseDumpfile(readFileSync(path.join(FIXTURES, 'composefs-rs/special.dump')));
    const buf = writeImageV2(src);
    assert.equal(openImage(buf).header.composefsVersion, 2);
    const back = imageToTree(buf, { mode: 'c' });
    compareTrees(src, back);
  });
}

/** Fields a v2 image keeps: everything but nanoseconds, nlink of directories, and what mode 'c' drops. */
function compareTrees(src: FileSystem, back: FileSystem): void {
  const got = new Map<string, ReturnType<typeof describe>>();
  for (const [p, n] of walk(back.root)) got.set(p, describe(n));
  for (const [p, n] of walk(src.root)) {
    if (n.isWhiteout) continue; // mode 'c' hides 0/0 character devices, as composefs-info does
    assert.deepEqual(got.get(p), describe(n), p);
  }
}

function describe(n: import('../../src/tree/model.js').Inode) {
  return {
    mode: n.mode, uid: n.uid, gid: n.gid, mtime: n.mtimeSec,
    rdev: n.rdev, size: n.isDir ? undefined : n.size,
    target: n.target, content: n.content?.toString('hex'),
    digest: n.isExternal ? n.digest?.toString('hex') : undefined,
    payload: n.isExternal ? n.payload : undefined,
    xattrs: [...n.xattrs].map(([k, v]) => `${k}=${v.toString('hex')}`).sort(),
  };
}
