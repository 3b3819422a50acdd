/**
 * Differential tests against fsverity-utils (`fsverity digest`): the library (sequential and worker
 * paths), the CLI (byte-identical output lines) and the kernel ioctls' error path on this host.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  NotSupportedError,
  SystemError,
} from '../../src/errors.js';
import {
  VerityAlreadyEnabledError,
  enableVerity,
  formatDigest,
  fsverityDigestFile,
  hashPool,
  measureVerity,
  type HashAlgorithm,
} from '../../src/fsverity/index.js';
import { BOOTCFS_BIN, FSVERITY, cases, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

const ALGS: HashAlgorithm[] = ['sha256', 'sha512'];
const B = 4096;
const MiB = 1024 * 1024;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-fsverity-ref-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

/**
 * Writes `size` bytes of deterministic pseudo-random data (AES-256-CTR keystream of `seed`) in
 * bounded pieces. Every block is distinct, so a misplaced block or hash changes the digest.
 */
function writePseudoRandomFile(file: string, size: number, seed: number): void {
  const key = createHash('sha256').update(`fsverity-ref-${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeroes = Buffer.alloc(Math.min(size, 16 * MiB));
  const fd = openSync(file, 'w');
  try {
    for (let done = 0; done < size; ) {
      const n = Math.min(zeroes.length, size - done);
      writeSync(fd, cipher.update(zeroes.subarray(0, n)));
      done += n;
    }
  } finally {
    closeSync(fd);
  }
}

/** `fsverity digest --hash-alg=alg FILES...` → digest hex per file (one process for all files). */
function referenceDigests(alg: HashAlgorithm, files: string[]): Map<string, string> {
  const out = new Map<string, string>();
  // Bounded argv per call; the files are few dozen at most here.
  const r = run(requireTool(FSVERITY), ['digest', `--hash-alg=${alg}`, ...files]);
  assert.equal(r.status, 0, r.stderr.toString());
  for (const line of r.stdout.toString('utf8').trimEnd().split('\n')) {
    const m = /^(sha256|sha512):([0-9a-f]+) (.*)$/.exec(line);
    assert.ok(m, `unexpected fsverity output line ${JSON.stringify(line)}`);
    assert.equal(m[1], alg);
    out.set(m[3]!, m[2]!);
  }
  assert.equal(out.size, new Set(files).size);
  return out;
}

/** Checks every file with both algorithms, both the sequential and the worker-pool path. */
async function compareWithReference(files: Array<{ file: string; size: number }>, context: string): Promise<number> {
  let compared = 0;
  for (const alg of ALGS) {
    const want = referenceDigests(alg, files.map((f) => f.file));
    for (const { file, size } of files) {
      const ref = want.get(file)!;
      assert.equal((await fsverityDigestFile(file, alg, { parallel: false })).toString('hex'), ref, `${context}: size ${size} ${alg} sequential`);
      assert.equal((await fsverityDigestFile(file, alg, { parallel: true })).toString('hex'), ref, `${context}: size ${size} ${alg} workers`);
      compared++;
    }
  }
  return compared;
}

test('fsverity-utils is installed', () => {
  requireTool(FSVERITY);
});

test('block and arity boundaries, multi-level trees (a·128^k±1, a·64^k±1 blocks), both algorithms', async () => {
  const sizes = new Set<number>([0, 1, 4095, 4096, 4097, 128 * B - 1, 128 * B, 128 * B + 1, 64 * B - 1, 64 * B, 64 * B + 1]);
  // Like composefs-rs' crosscheck: a·arity^k blocks, ±1 byte, for the sha256 (128) and sha512 (64) arities.
  // k=2 gives a 3-level tree (64 MiB for sha256, 16 MiB for sha512); full runs add larger multiples.
  const multiples = cases(3, 5);
  for (const arity of [128, 64]) {
    for (let k = 0; k <= 2; k++) {
      for (let a = 1; a <= (k === 2 && arity === 128 ? cases(1, 2) : multiples); a++) {
        const blocks = a * arity ** k;
        for (const d of [-1, 0, 1]) sizes.add(blocks * B + d);
      }
    }
  }
  // Around level-1 block boundaries inside a 3-level tree: (arity^2 - 1) blocks and one block more.
  sizes.add((128 * 128 - 1) * B + 1);
  sizes.add((64 * 64 + 1) * B - 1);
  const files = [...sizes].sort((x, y) => x - y).map((size, i) => {
    const file = path.join(tmp, `b${i}-${size}`);
    writePseudoRandomFile(file, size, size);
    return { file, size };
  });
  const n = await compareWithReference(files, 'boundary');
  console.log(`compared ${n} (file, algorithm) pairs with fsverity digest, ${files.length} sizes`);
  for (const f of files) rmSync(f.file);
});

test('seeded random sizes', async () => {
  const seed = Number(process.env.BOOTCFS_SEED ?? 0xf5e5eed);
  const rng = new Rng(seed);
  const files: Array<{ file: string; size: number }> = [];
  for (let i = 0; i < cases(24, 200); i++) {
    // log-uniform: many small files, some multi-MiB ones
    const size = rng.bool(0.15) ? rng.int(0, 8192) : Math.floor(2 ** (rng.float() * 24)) + rng.int(-2, 2) * B + rng.int(0, 2);
    const file = path.join(tmp, `r${i}-${Math.max(0, size)}`);
    writePseudoRandomFile(file, Math.max(0, size), seed + i);
    files.push({ file, size: Math.max(0, size) });
  }
  const n = await compareWithReference(files, `random sizes (seed ${seed}; rerun with BOOTCFS_SEED=${seed})`);
  console.log(`compared ${n} (file, algorithm) pairs, seed ${seed}`);
  for (const f of files) rmSync(f.file);
});

test('1 GiB of pseudo-random data, both algorithms, automatic worker path', async () => {
  const file = path.join(tmp, 'big-1GiB');
  try {
    writePseudoRandomFile(file, 1024 * MiB, 1);
    for (const alg of ALGS) {
      const want = referenceDigests(alg, [file]).get(file)!;
      assert.equal((await fsverityDigestFile(file, alg)).toString('hex'), want, `1 GiB ${alg}`);
    }
    assert.ok(hashPool().liveWorkers > 0 || hashPool().size === 1, 'a 1 GiB file must go through the worker pool');
  } finally {
    rmSync(file, { force: true });
  }
});

test('CLI: bootcfs fsverity digest prints the same bytes as fsverity digest', () => {
  const names = ['empty', 'one', 'hello world', 'tail-4097', 'multi-129'];
  const sizes = [0, 1, 11, 4097, 129 * B + 3];
  const files = names.map((n, i) => {
    const file = path.join(tmp, n);
    writePseudoRandomFile(file, sizes[i]!, 100 + i);
    return file;
  });
  const variants: string[][] = [[], ['--hash-alg=sha512'], ['--hash-alg', 'sha256', '--block-size=4096'], ['--compact'], ['--compact', '--hash-alg=sha512'], ['--for-builtin-sig'], ['--for-builtin-sig', '--hash-alg=sha512']];
  for (const opts of variants) {
    const ref = run(FSVERITY, ['digest', ...files, ...opts]);
    const ours = run(BOOTCFS_BIN, ['fsverity', 'digest', ...files, ...opts]);
    assert.equal(ref.status, 0, ref.stderr.toString());
    assert.equal(ours.status, 0, ours.stderr.toString());
    assert.equal(ours.stdout.toString('latin1'), ref.stdout.toString('latin1'), `options ${opts.join(' ')}`);
    assert.equal(ours.stderr.length, 0);
  }
  // Relative paths are printed as given.
  const ref = run(FSVERITY, ['digest', 'one', './empty'], { cwd: tmp });
  const ours = run(BOOTCFS_BIN, ['fsverity', 'digest', 'one', './empty'], { cwd: tmp });
  assert.equal(ours.stdout.toString(), ref.stdout.toString());
});

function assertCleanCliError(r: { status: number; stderr: Buffer }, pattern: RegExp): void {
  const err = r.stderr.toString();
  assert.notEqual(r.status, 0);
  assert.match(err, /^bootcfs: /);
  assert.match(err, pattern);
  assert.doesNotMatch(err, /\n\s+at /, 'no stack trace');
}

test('CLI: bad input gives clean errors', () => {
  const file = path.join(tmp, 'cli-err');
  writeFileSync(file, 'x');
  assertCleanCliError(run(BOOTCFS_BIN, ['fsverity', 'digest', path.join(tmp, 'does-not-exist')]), /can't open .*No such file or directory/);
  assertCleanCliError(run(BOOTCFS_BIN, ['fsverity', 'digest', '--block-size=1024', file]), /block size/);
  assertCleanCliError(run(BOOTCFS_BIN, ['fsverity', 'digest', '--salt=00', file]), /salt/);
  assertCleanCliError(run(BOOTCFS_BIN, ['fsverity', 'digest', '--hash-alg=md5', file]), /unknown hash algorithm/);
  assertCleanCliError(run(BOOTCFS_BIN, ['fsverity', 'digest']), /no FILE/);
  assertCleanCliError(run(BOOTCFS_BIN, ['fsverity', 'frobnicate']), /unknown subcommand/);
  for (const verb of ['digest', 'measure', 'enable']) {
    const h = run(BOOTCFS_BIN, ['fsverity', verb, '--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout.toString(), new RegExp(`^Usage: bootcfs fsverity ${verb}`));
  }
});

/**
 * The kernel path, judged against what fsverity-utils experiences on the same file: on a host without
 * fs-verity (this one) both must fail with "not supported"; on a host where it works, both must agree.
 */
test('enable / measure: same outcome as fsverity-utils on this host', () => {
  const file = path.join(tmp, 'kernel-probe');
  writePseudoRandomFile(file, 3 * B + 5, 7);
  const refMeasure = run(FSVERITY, ['measure', file]);
  const refStderr = refMeasure.stderr.toString();
  const unsupported = /Operation not supported|Inappropriate ioctl/.test(refStderr);
  if (unsupported) {
    // library API: typed errors
    for (const target of [file, 'fd']) {
      const fd = target === 'fd' ? openSync(file, 'r') : undefined;
      try {
        const arg = fd ?? file;
        assert.throws(() => enableVerity(arg, 'sha512'), (e: unknown) => e instanceof NotSupportedError && (e.errno === 95 || e.errno === 25) && /does not support fs-verity/.test(e.message));
        assert.throws(() => measureVerity(arg), (e: unknown) => e instanceof NotSupportedError && /does not support fs-verity/.test(e.message));
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    }
    // CLI: clean message, exit ≠ 0, like `fsverity enable/measure`
    const refEnable = run(FSVERITY, ['enable', file]);
    assert.notEqual(refEnable.status, 0);
    assertCleanCliError(run(BOOTCFS_BIN, ['fsverity', 'enable', file]), /FS_IOC_ENABLE_VERITY failed on .*: the kernel or filesystem does not support fs-verity/);
    assertCleanCliError(run(BOOTCFS_BIN, ['fsverity', 'measure', file]), /FS_IOC_MEASURE_VERITY failed on .*: the kernel or filesystem does not support fs-verity/);
  } else {
    // A verity-capable filesystem: enable with our code, then both tools must measure the same digest.
    assert.match(refStderr, /not enabled|No data available/, `unexpected fsverity measure result: ${refStderr}`);
    enableVerity(file, 'sha256');
    assert.throws(() => enableVerity(file), VerityAlreadyEnabledError);
    const ours = measureVerity(file);
    const ref = run(FSVERITY, ['measure', file]);
    assert.equal(ref.status, 0);
    assert.equal(`${formatDigest(ours.algorithm, ours.digest)} ${file}\n`, ref.stdout.toString());
    assert.equal(run(BOOTCFS_BIN, ['fsverity', 'measure', file]).stdout.toString(), ref.stdout.toString());
  }
  assert.throws(() => measureVerity(path.join(tmp, 'missing')), (e: unknown) => e instanceof SystemError && e.errno === 2);
  assert.throws(() => enableVerity(file, 'md4' as HashAlgorithm), /unknown fs-verity hash algorithm/);
});
