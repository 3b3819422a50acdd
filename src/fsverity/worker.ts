/**
 * Hashing worker thread (started by pool.ts). Each job names a block-aligned byte range of an open
 * file descriptor (descriptors are shared by all threads of the process) and gets back the level-0
 * Merkle hashes of that range; the main thread assembles the upper tree levels, which are tiny
 * (1/128 or 1/64 of the data), so only the bulk of the work is spread over the cores.
 */
import { parentPort } from 'node:worker_threads';
import { readSync } from 'node:fs';
import { DIGEST_SIZE, FSVERITY_BLOCK_SIZE, hashDataBlocks, type HashAlgorithm } from './digest.js';

export interface LeafJob {
  id: number;
  fd: number;
  alg: HashAlgorithm;
  /** Byte offset in the file; a multiple of the block size. */
  start: number;
  length: number;
}

export type LeafResult =
  | { id: number; ok: true; hashes: Uint8Array }
  | { id: number; ok: false; message: string; errno?: number; syscall?: string; shrunk?: boolean };

/** Reads are done in pieces of this size into one reused buffer, so a job of any size uses bounded memory. */
const READ_CHUNK = 4 * 1024 * 1024;
let readBuffer: Buffer | undefined;

function runJob(job: LeafJob): LeafResult {
  const ds = DIGEST_SIZE[job.alg];
  const nblocks = Math.ceil(job.length / FSVERITY_BLOCK_SIZE);
  // A fresh ArrayBuffer (not Buffer's shared pool) so that it can be transferred without copying.
  const hashes = new Uint8Array(nblocks * ds);
  readBuffer ??= Buffer.allocUnsafeSlow(READ_CHUNK);
  const buf = readBuffer;
  let done = 0;
  let outBlocks = 0;
  while (done < job.length) {
    const want = Math.min(READ_CHUNK, job.length - done);
    let got = 0;
    while (got < want) {
      let n: number;
      try {
        n = readSync(job.fd, buf, got, want - got, job.start + done + got);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        return { id: job.id, ok: false, message: err.message, errno: typeof err.errno === 'number' ? -err.errno : undefined, syscall: 'read' };
      }
      if (n === 0) {
        return { id: job.id, ok: false, shrunk: true, message: `file ended at byte ${job.start + done + got} while hashing` };
      }
      got += n;
    }
    outBlocks += hashDataBlocks(job.alg, buf, 0, want, hashes, outBlocks * ds);
    done += want;
  }
  return { id: job.id, ok: true, hashes };
}

if (parentPort) {
  const port = parentPort;
  port.on('message', (job: LeafJob) => {
    const result = runJob(job);
    if (result.ok) port.postMessage(result, [result.hashes.buffer as ArrayBuffer]);
    else port.postMessage(result);
  });
}
