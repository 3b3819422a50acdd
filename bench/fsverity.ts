/**
 * fs-verity digest throughput of a 1 GiB pseudo-random file: fsverityDigestFile (worker threads) vs
 * `fsverity digest` (fsverity-utils, C + OpenSSL), SHA-256 and SHA-512, page cache warm, best of 3
 * each, runs interleaved so that background load hits both sides alike.
 *
 * Standalone: `node dist/bench/fsverity.js` (BOOTCFS_BENCH_DIR picks where the 1 GiB file goes).
 */
import { spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeHashPool, fsverityDigestFile, hashPool, type HashAlgorithm } from '../src/fsverity/index.js';
import type { BenchResult } from './result.js';

const FSVERITY = '/usr/bin/fsverity';
const SIZE = 1024 * 1024 * 1024;
const RUNS = 3;

function writeTestFile(file: string): void {
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update('bootcfs-bench').digest(), Buffer.alloc(16));
  const zeroes = Buffer.alloc(16 * 1024 * 1024);
  const fd = openSync(file, 'w');
  try {
    for (let done = 0; done < SIZE; done += zeroes.length) writeSync(fd, cipher.update(zeroes));
  } finally {
    closeSync(fd);
  }
}

function warmPageCache(file: string): void {
  const buf = Buffer.allocUnsafe(16 * 1024 * 1024);
  const fd = openSync(file, 'r');
  try {
    while (readSync(fd, buf, 0, buf.length, null) > 0);
  } finally {
    closeSync(fd);
  }
}

function referenceRun(file: string, alg: HashAlgorithm): { seconds: number; hex: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(FSVERITY, ['digest', `--hash-alg=${alg}`, '--compact', file], { encoding: 'utf8' });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`fsverity digest failed: ${r.stderr}`);
  return { seconds, hex: r.stdout.trim() };
}

async function oursRun(file: string, alg: HashAlgorithm): Promise<{ seconds: number; hex: string }> {
  const t0 = process.hrtime.bigint();
  const d = await fsverityDigestFile(file, alg, { parallel: true });
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, hex: d.toString('hex') };
}

export async function run(): Promise<BenchResult[]> {
  if (!existsSync(FSVERITY)) throw new Error(`${FSVERITY} (fsverity-utils) is required for this benchmark`);
  const dir = mkdtempSync(path.join(process.env.BOOTCFS_BENCH_DIR ?? os.tmpdir(), 'bootcfs-bench-fsverity-'));
  const file = path.join(dir, 'data-1GiB');
  const results: BenchResult[] = [];
  try {
    writeTestFile(file);
    warmPageCache(file);
    for (const alg of ['sha256', 'sha512'] as HashAlgorithm[]) {
      let bestOurs = Infinity;
      let bestRef = Infinity;
      for (let i = 0; i < RUNS; i++) {
        const ref = referenceRun(file, alg);
        const ours = await oursRun(file, alg);
        // A throughput figure for a wrong digest would be meaningless.
        if (ours.hex !== ref.hex) throw new Error(`digest mismatch for ${alg}: ours ${ours.hex}, fsverity ${ref.hex}`);
        bestRef = Math.min(bestRef, ref.seconds);
        bestOurs = Math.min(bestOurs, ours.seconds);
      }
      const ours = SIZE / 1e6 / bestOurs;
      const reference = SIZE / 1e6 / bestRef;
      results.push({
        name: `fs-verity digest, 1 GiB, ${alg}`,
        ours,
        reference,
        unit: 'MB/s',
        higherIsBetter: true,
        ratio: ours / reference,
        note: `best of ${RUNS}, warm page cache; bootcfs ${hashPool().size} worker thread(s) on ${os.availableParallelism()} core(s); fsverity time includes its process start`,
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await closeHashPool();
  }
  return results;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  run().then(
    (rs) => {
      for (const r of rs) {
        console.log(`${r.name}: bootcfs ${r.ours.toFixed(0)} ${r.unit}, fsverity ${r.reference.toFixed(0)} ${r.unit}, ratio ${r.ratio.toFixed(2)}× (${r.note})`);
      }
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
