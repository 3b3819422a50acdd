/**
 * Runs INSIDE the QEMU guest (verity-capable kernel, ext4 with `-O verity` and 4096-byte blocks mounted
 * at $BOOTCFS_GUEST_SCRATCH): the kernel's fs-verity must agree with our userspace digests, and the
 * kernel's refusals must surface as the documented typed errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SystemError } from '../../src/errors.js';
import {
  VerityAlreadyEnabledError,
  VerityNotEnabledError,
  enableVerity,
  formatDigest,
  fsverityDigest,
  fsverityDigestFile,
  measureVerity,
  type HashAlgorithm,
} from '../../src/fsverity/index.js';

const SCRATCH = process.env.BOOTCFS_GUEST_SCRATCH;
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const B = 4096;

function pseudoRandom(size: number, seed: number): Buffer {
  const key = createHash('sha256').update(`fsverity-guest-${seed}`).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

function scratchDir(): string {
  assert.ok(SCRATCH, 'BOOTCFS_GUEST_SCRATCH must name a verity-capable ext4 mount (this test runs in the VM only)');
  return mkdtempSync(path.join(SCRATCH, 'fsverity-'));
}

// 0 and 1 block, partial blocks, both arities' level boundaries, several worker jobs (> 512 KiB),
// and a 3-level tree for sha512. (The guest is TCG-emulated: sizes stay small.)
const SIZES = [0, 1, 4095, 4096, 4097, 64 * B + 1, 128 * B, 128 * B + 1, 2 * 1024 * 1024 + 3, 64 * 64 * B + 5];

test('enableVerity + measureVerity == fsverityDigestFile, both algorithms, several sizes', async () => {
  const dir = scratchDir();
  try {
    for (const alg of ['sha256', 'sha512'] as HashAlgorithm[]) {
      for (const size of SIZES) {
        const file = path.join(dir, `${alg}-${size}`);
        const data = pseudoRandom(size, size);
        writeFileSync(file, data);
        // Both userspace paths: this thread, and the worker threads (forced: the guest has 1 CPU).
        const userspace = await fsverityDigestFile(file, alg, { parallel: false });
        assert.deepEqual(await fsverityDigestFile(file, alg, { parallel: true }), userspace, `workers, size ${size} ${alg}`);
        try {
          enableVerity(file, alg);
        } catch (e) {
          if (e instanceof SystemError && e.errno === 22) {
            assert.fail(`FS_IOC_ENABLE_VERITY: EINVAL on ${file}: is the scratch ext4 made with 4096-byte blocks (mkfs.ext4 -b 4096 -O verity)?`);
          }
          throw e;
        }
        const kernel = measureVerity(file);
        assert.equal(kernel.algorithm, alg, `size ${size}`);
        assert.equal(formatDigest(alg, kernel.digest), formatDigest(alg, userspace), `size ${size} ${alg}`);
        assert.deepEqual(kernel.digest, fsverityDigest(data, alg));
        // Reads go through verification and still return the data.
        assert.deepEqual(readFileSync(file), data);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('enable and measure through an fd', () => {
  const dir = scratchDir();
  try {
    const file = path.join(dir, 'by-fd');
    writeFileSync(file, pseudoRandom(10 * B + 1, 3));
    const fd = openSync(file, 'r');
    try {
      enableVerity(fd, 'sha512');
      const m = measureVerity(fd);
      assert.equal(m.algorithm, 'sha512');
      assert.deepEqual(m.digest, fsverityDigest(readFileSync(file), 'sha512'));
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('documented typed errors: already enabled, not enabled, open for writing', () => {
  const dir = scratchDir();
  try {
    const file = path.join(dir, 'twice');
    writeFileSync(file, 'enable me twice\n');
    enableVerity(file);
    assert.throws(() => enableVerity(file), (e: unknown) => e instanceof VerityAlreadyEnabledError && e.errno === 17);
    assert.throws(() => enableVerity(file, 'sha512'), VerityAlreadyEnabledError);
    // The digest did not change: the second enable did nothing.
    assert.deepEqual(measureVerity(file).digest, fsverityDigest(Buffer.from('enable me twice\n')));

    const plain = path.join(dir, 'plain');
    writeFileSync(plain, 'no verity here\n');
    assert.throws(() => measureVerity(plain), (e: unknown) => e instanceof VerityNotEnabledError && e.errno === 61);

    const busy = path.join(dir, 'busy');
    writeFileSync(busy, 'open for writing\n');
    const wfd = openSync(busy, 'r+');
    try {
      assert.throws(() => enableVerity(busy), (e: unknown) => e instanceof SystemError && e.errno === 26 && /open for writing/.test(e.message));
    } finally {
      closeSync(wfd);
    }
    // Verity files are immutable.
    assert.throws(() => openSync(file, 'r+'), (e: NodeJS.ErrnoException) => e.code === 'EPERM');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI: bootcfs fsverity enable / measure', () => {
  const dir = scratchDir();
  try {
    const file = path.join(dir, 'cli');
    const data = pseudoRandom(5 * B + 7, 11);
    writeFileSync(file, data);
    const enable = spawnSync(process.execPath, [CLI, 'fsverity', 'enable', '--hash-alg=sha512', file], { encoding: 'utf8' });
    assert.equal(enable.status, 0, enable.stderr);
    assert.equal(enable.stdout, '');
    const measure = spawnSync(process.execPath, [CLI, 'fsverity', 'measure', file], { encoding: 'utf8' });
    assert.equal(measure.status, 0, measure.stderr);
    assert.equal(measure.stdout, `${formatDigest('sha512', fsverityDigest(data, 'sha512'))} ${file}\n`);
    const again = spawnSync(process.execPath, [CLI, 'fsverity', 'enable', file], { encoding: 'utf8' });
    assert.notEqual(again.status, 0);
    assert.match(again.stderr, /^bootcfs: fs-verity is already enabled on /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
