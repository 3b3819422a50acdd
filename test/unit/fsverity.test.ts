/**
 * fs-verity digests: pinned vectors, kernel semantics for empty files, and agreement between every
 * path (buffer, incremental with awkward chunkings, stream, file sequential, file through the worker
 * pool, many concurrent calls) and a deliberately naive level-by-level implementation written here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, createReadStream, mkdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DIGEST_SIZE,
  FsVerityHasher,
  PARALLEL_THRESHOLD,
  formatDigest,
  fsverityDescriptor,
  fsverityDigest,
  fsverityDigestFile,
  fsverityDigestStream,
  hashPool,
  type HashAlgorithm,
} from '../../src/fsverity/index.js';
import { BootcfsError, SystemError } from '../../src/errors.js';
import { Rng } from '../helpers/rng.js';
import { cases } from '../helpers/ref.js';

const ALGS: HashAlgorithm[] = ['sha256', 'sha512'];
const B = 4096;

/** Deterministic pseudo-random bytes (AES-256-CTR keystream): every block differs, so misordered blocks show. */
function pseudoRandom(size: number, seed: number): Buffer {
  const key = createHash('sha256').update(`fsverity-test-${seed}`).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** Independent, obviously-correct reference: whole levels in memory, straight from the definition. */
function naiveDigest(data: Buffer, alg: HashAlgorithm): Buffer {
  const H = (b: Buffer) => createHash(alg).update(b).digest();
  const blocksOf = (buf: Buffer): Buffer[] => {
    const out: Buffer[] = [];
    for (let p = 0; p < buf.length; p += B) {
      const blk = Buffer.alloc(B);
      buf.copy(blk, 0, p, Math.min(p + B, buf.length));
      out.push(blk);
    }
    return out;
  };
  let root = Buffer.alloc(DIGEST_SIZE[alg]);
  if (data.length > 0) {
    let level = blocksOf(data).map(H);
    while (level.length > 1) level = blocksOf(Buffer.concat(level)).map(H);
    root = level[0]!;
  }
  const desc = Buffer.alloc(256);
  desc[0] = 1;
  desc[1] = alg === 'sha256' ? 1 : 2;
  desc[2] = 12;
  desc.writeBigUInt64LE(BigInt(data.length), 8);
  root.copy(desc, 16);
  return H(desc);
}

const VECTORS: Array<[string, Buffer, HashAlgorithm, string]> = [
  ['hello world', Buffer.from('hello world'), 'sha256', '1e2eaa4202d750a41174ee454970b92c1bc2f925b1e35076d8c7d5f56362ba64'],
  ['hello world', Buffer.from('hello world'), 'sha512', '18430270729d162d4e469daca123ae61893db4b0583d8f7081e3bf4f92b88ba514e7982f10733fb6aa895195c5ae8fd2eb2c47a8be05513ce5a0c51a6f570409'],
  ['hello world\\n', Buffer.from('hello world\n'), 'sha256', '37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92'],
  ['foo bar baz\\n', Buffer.from('foo bar baz\n'), 'sha256', '91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b'],
  ['4095 zeroes', Buffer.alloc(4095), 'sha256', '5372beb83c78537c8970c8361e3254119fafdf1763854ecd57d3f0fe2da7c719'],
  ['4096 zeroes', Buffer.alloc(4096), 'sha256', 'babc284ee4ffe7f449377fbf6692715b43aec7bc39c094a95878904d34bac97e'],
  ['4097 zeroes', Buffer.alloc(4097), 'sha256', '093756e4ea9683329106d4a16982682ed182c14bf076463a9e7f97305cbac743'],
  ['empty', Buffer.alloc(0), 'sha256', '3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95'],
  ['empty', Buffer.alloc(0), 'sha512', 'ccf9e5aea1c2a64efa2f2354a6024b90dffde6bbc017825045dce374474e13d10adb9dadcc6ca8e17a3c075fbd31336e8f266ae6fa93a6c3bed66f9e784e5abf'],
];

const tmp = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-fsverity-unit-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
function tmpFile(data: Uint8Array): string {
  const p = path.join(tmp, `f${fileNo++}`);
  writeFileSync(p, data);
  return p;
}

test('pinned vectors (composefs-format.md §1.3), every API path', async () => {
  for (const [name, data, alg, hex] of VECTORS) {
    assert.equal(fsverityDigest(data, alg).toString('hex'), hex, `${name} ${alg} buffer`);
    assert.equal(naiveDigest(data, alg).toString('hex'), hex, `${name} ${alg} naive test reference`);
    assert.equal(new FsVerityHasher(alg).update(data).digest().toString('hex'), hex, `${name} ${alg} hasher`);
    const f = tmpFile(data);
    assert.equal((await fsverityDigestFile(f, alg, { parallel: false })).toString('hex'), hex, `${name} ${alg} file`);
    assert.equal((await fsverityDigestFile(f, alg, { parallel: true })).toString('hex'), hex, `${name} ${alg} file/workers`);
    const s = await fsverityDigestStream(createReadStream(f), alg);
    assert.equal(s.digest.toString('hex'), hex, `${name} ${alg} stream`);
    assert.equal(s.size, data.length);
    assert.equal(formatDigest(alg, fsverityDigest(data, alg)), `${alg}:${hex}`);
  }
});

test('empty input: all-zero root hash (kernel semantics), not the hash of a zero block', () => {
  for (const alg of ALGS) {
    const h = new FsVerityHasher(alg);
    assert.equal(h.size, 0);
    const expected = createHash(alg).update(fsverityDescriptor(alg, 0, Buffer.alloc(DIGEST_SIZE[alg]))).digest();
    assert.deepEqual(h.digest(), expected);
    assert.deepEqual(h.update(new Uint8Array(0)).digest(), expected);
    // libcomposefs' userspace bug: H(descriptor with root = H(zero block)) — must differ
    const zeroBlockRoot = createHash(alg).update(Buffer.alloc(B)).digest();
    assert.notDeepEqual(h.digest(), createHash(alg).update(fsverityDescriptor(alg, 0, zeroBlockRoot)).digest());
  }
});

test('descriptor layout', () => {
  const d = fsverityDescriptor('sha512', 0x1_0000_0001, Buffer.alloc(64, 0xab));
  assert.equal(d.length, 256);
  assert.deepEqual([...d.subarray(0, 8)], [1, 2, 12, 0, 0, 0, 0, 0]);
  assert.equal(d.readBigUInt64LE(8), 0x1_0000_0001n);
  assert.ok(d.subarray(16, 80).every((b) => b === 0xab));
  assert.ok(d.subarray(80).every((b) => b === 0));
});

/** Sizes at the data-block and Merkle-arity boundaries of both algorithms (2 and 3 tree levels). */
const BOUNDARY_SIZES = [0, 1, 4095, 4096, 4097, 8191, 8192, 8193, 64 * B - 1, 64 * B, 64 * B + 1, 65 * B, 128 * B - 1, 128 * B, 128 * B + 1, 129 * B + 7, 64 * 64 * B - 1, 64 * 64 * B, 64 * 64 * B + 1];

test('incremental hasher == buffer == naive, for boundary sizes and awkward chunkings', () => {
  const rng = new Rng(0xf5e1);
  for (const size of BOUNDARY_SIZES) {
    const data = pseudoRandom(size, size);
    for (const alg of ALGS) {
      const want = naiveDigest(data, alg);
      assert.deepEqual(fsverityDigest(data, alg), want, `buffer size=${size} ${alg}`);
      // chunkings: byte-by-byte-ish small pieces near the start, 1-byte-off-block pieces, random pieces
      for (const mode of ['4095', '4097', '1+rest', 'random']) {
        const h = new FsVerityHasher(alg);
        let p = 0;
        while (p < size) {
          const n =
            mode === '4095' ? 4095 : mode === '4097' ? 4097 : mode === '1+rest' ? (p === 0 ? 1 : size) : rng.pick([0, 1, 2, 31, 4095, 4096, 4097, 65536, rng.int(0, 20000)]);
          h.update(data.subarray(p, p + n));
          p += n;
        }
        assert.equal(h.size, size);
        assert.deepEqual(h.digest(), want, `chunking ${mode} size=${size} ${alg} (rng seed ${rng.seed})`);
      }
    }
  }
});

test('digest() does not end the computation: prefix digests, then continue', () => {
  const data = pseudoRandom(200 * B + 123, 7);
  for (const alg of ALGS) {
    const h = new FsVerityHasher(alg);
    for (const cut of [1, 4096, 5000, 128 * B, 128 * B + 1, 200 * B + 123]) {
      h.update(data.subarray(h.size, cut));
      assert.deepEqual(h.digest(), naiveDigest(data.subarray(0, cut), alg), `prefix ${cut} ${alg}`);
      assert.deepEqual(h.digest(), naiveDigest(data.subarray(0, cut), alg), `prefix ${cut} ${alg}, asked twice`);
    }
  }
});

test('file (sequential, worker pool) and stream paths agree with naive, seeded random sizes', async () => {
  const seed = 0x5eed_f5;
  const rng = new Rng(seed);
  // Sizes above one worker job (512 KiB) so that several jobs and a partial last job are exercised.
  const sizes = [3 * 1024 * 1024 + 17, 512 * 1024, 512 * 1024 + 1, 2 * 1024 * 1024 - 1];
  for (let i = 0; i < cases(6, 40); i++) sizes.push(rng.int(0, 4 * 1024 * 1024));
  for (const size of sizes) {
    const data = pseudoRandom(size, size ^ seed);
    const f = tmpFile(data);
    for (const alg of ALGS) {
      const want = naiveDigest(data, alg);
      const ctx = `size=${size} ${alg} (seed ${seed})`;
      assert.deepEqual(await fsverityDigestFile(f, alg, { parallel: false }), want, `sequential ${ctx}`);
      assert.deepEqual(await fsverityDigestFile(f, alg, { parallel: true }), want, `workers ${ctx}`);
      const hwm = rng.int(1, 70000);
      const s = await fsverityDigestStream(createReadStream(f, { highWaterMark: hwm }), alg);
      assert.deepEqual(s.digest, want, `stream highWaterMark=${hwm} ${ctx}`);
      assert.equal(s.size, size);
    }
  }
});

test('automatic parallel path for a file ≥ PARALLEL_THRESHOLD', async () => {
  const data = pseudoRandom(PARALLEL_THRESHOLD + 4096 * 3 + 5, 99);
  const f = tmpFile(data);
  for (const alg of ALGS) assert.deepEqual(await fsverityDigestFile(f, alg), naiveDigest(data, alg), alg);
  assert.ok(hashPool().liveWorkers >= 1, 'the worker pool was used');
});

test('many concurrent calls share the pool correctly', async () => {
  const files: Array<{ f: string; data: Buffer }> = [];
  for (let i = 0; i < 12; i++) {
    const data = pseudoRandom(600 * 1024 + i * 4099, 1000 + i);
    files.push({ f: tmpFile(data), data });
  }
  const results = await Promise.all(
    files.flatMap(({ f }) => ALGS.map((alg) => fsverityDigestFile(f, alg, { parallel: true }))),
  );
  files.forEach(({ data }, i) => {
    ALGS.forEach((alg, j) => assert.deepEqual(results[i * 2 + j], naiveDigest(data, alg), `file ${i} ${alg}`));
  });
});

test('an idle worker pool does not keep the process alive', () => {
  const index = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/fsverity/index.js');
  const data = pseudoRandom(1024 * 1024 + 1, 5);
  const f = tmpFile(data);
  const script = `import(${JSON.stringify(index)}).then(async (m) => {
    const d = await m.fsverityDigestFile(${JSON.stringify(f)}, 'sha512', { parallel: true });
    process.stdout.write(d.toString('hex'));
  });`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 25000, encoding: 'utf8' });
  assert.equal(r.signal, null, 'process had to be killed: the pool kept it alive');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, naiveDigest(data, 'sha512').toString('hex'));
  // The pool terminates idle workers only after 30 s; exiting well before shows they were unref'd.
  assert.ok(Date.now() - t0 < 15000, `took ${Date.now() - t0} ms to exit`);
});

test('typed errors', async () => {
  await assert.rejects(fsverityDigestFile(path.join(tmp, 'missing')), (e: unknown) => e instanceof SystemError && e.errno === 2 && /can't open/.test(e.message));
  const dir = path.join(tmp, 'dir');
  mkdirSync(dir);
  for (const parallel of [false, true]) {
    await assert.rejects(fsverityDigestFile(dir, 'sha256', { parallel }), (e: unknown) => e instanceof SystemError && e.errno === 21);
  }
  assert.throws(() => new FsVerityHasher('md5' as HashAlgorithm), (e: unknown) => e instanceof BootcfsError && e.code === 'EINVAL');
  await assert.rejects(fsverityDigestFile(tmpFile(Buffer.from('x')), 'sha1' as HashAlgorithm), BootcfsError);
  assert.throws(() => formatDigest('sha512', Buffer.alloc(32)), BootcfsError);
  await assert.rejects(
    fsverityDigestStream((async function* () { yield 'text' as unknown as Uint8Array; })()),
    BootcfsError,
  );
});
