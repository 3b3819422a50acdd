/**
 * A small pool of hashing worker threads, shared by every fsverityDigestFile call in the process.
 *
 * - Workers are started lazily, and are unref()'d whenever they have no job, so an idle pool never
 *   keeps the process alive; after IDLE_MS without work they are terminated to give memory back.
 * - A job is "level-0 hashes of this range of this fd". Jobs from concurrent callers share one FIFO
 *   queue; each caller limits how many of its own jobs are queued, so many concurrent large files
 *   interleave fairly and memory stays bounded.
 * - A worker that dies fails only its current job; the pool replaces it on demand.
 */
import { Worker } from 'node:worker_threads';
import os from 'node:os';
import { BootcfsError, SystemError } from '../errors.js';
import type { HashAlgorithm } from './digest.js';
import type { LeafJob, LeafResult } from './worker.js';

const IDLE_MS = 30_000;

interface QueuedJob {
  job: LeafJob;
  path: string;
  resolve: (hashes: Uint8Array) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  current: QueuedJob | undefined;
}

/** Number of worker threads: BOOTCFS_HASH_WORKERS, else the available cores (capped at 8). */
export function defaultPoolSize(): number {
  const env = Number(process.env.BOOTCFS_HASH_WORKERS);
  if (Number.isInteger(env) && env >= 1) return Math.min(env, 64);
  return Math.max(1, Math.min(os.availableParallelism(), 8));
}

export class HashWorkerPool {
  readonly size: number;
  private readonly slots = new Set<Slot>();
  private readonly idle: Slot[] = [];
  private readonly queue: QueuedJob[] = [];
  private nextId = 1;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(size = defaultPoolSize()) {
    this.size = size;
  }

  /** Number of live worker threads (for tests and diagnostics). */
  get liveWorkers(): number {
    return this.slots.size;
  }

  /**
   * Level-0 fs-verity hashes of `length` bytes of `fd` from `start` (block aligned): one digest per
   * 4096-byte block, the last partial block zero-padded. `path` is only used in error messages.
   * The caller must keep `fd` open until the returned promise settles.
   */
  leafHashes(fd: number, alg: HashAlgorithm, start: number, length: number, path: string): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      this.queue.push({ job: { id: this.nextId++, fd, alg, start, length }, path, resolve, reject });
      this.dispatch();
    });
  }

  /** Terminate all workers now (queued jobs keep waiting and will start new ones). */
  async close(): Promise<void> {
    this.clearIdleTimer();
    const slots = [...this.slots].filter((s) => s.current === undefined);
    for (const s of slots) this.remove(s);
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let slot = this.idle.pop();
      if (!slot) {
        if (this.slots.size >= this.size) return;
        slot = this.spawn();
      }
      const q = this.queue.shift()!;
      slot.current = q;
      // Keep the process alive while a caller is waiting for this worker.
      slot.worker.ref();
      slot.worker.postMessage(q.job);
    }
    if (this.idle.length === this.slots.size) this.armIdleTimer();
  }

  private spawn(): Slot {
    this.clearIdleTimer();
    // execArgv: [] — the worker needs no flags of the parent, and some (e.g. --input-type with
    // `node -e`) make a Worker fail to start.
    const worker = new Worker(new URL('./worker.js', import.meta.url), { execArgv: [] });
    const slot: Slot = { worker, current: undefined };
    this.slots.add(slot);
    worker.on('message', (r: LeafResult) => this.onResult(slot, r));
    worker.on('error', (e) => this.onDeath(slot, e));
    worker.on('exit', (code) => this.onDeath(slot, new Error(`hash worker exited with code ${code}`)));
    return slot;
  }

  private onResult(slot: Slot, r: LeafResult): void {
    const q = slot.current;
    slot.current = undefined;
    if (q && q.job.id === r.id) {
      if (r.ok) q.resolve(r.hashes);
      else if (r.shrunk) q.reject(new BootcfsError('EIO', `'${q.path}' changed while it was being hashed: ${r.message}`));
      else if (r.errno !== undefined) q.reject(new SystemError(r.syscall ?? 'read', r.errno, q.path));
      else q.reject(new BootcfsError('EIO', `reading '${q.path}' failed: ${r.message}`));
    }
    this.clearIdleTimer();
    this.idle.push(slot);
    slot.worker.unref();
    this.dispatch();
  }

  private onDeath(slot: Slot, e: Error): void {
    if (!this.slots.has(slot)) return;
    this.remove(slot);
    const q = slot.current;
    slot.current = undefined;
    q?.reject(new BootcfsError('EINTERNAL', `fs-verity hash worker failed: ${e.message}`, { cause: e }));
    this.dispatch();
  }

  private remove(slot: Slot): void {
    this.slots.delete(slot);
    const i = this.idle.indexOf(slot);
    if (i >= 0) this.idle.splice(i, 1);
    slot.worker.unref();
  }

  private armIdleTimer(): void {
    if (this.idleTimer || this.slots.size === 0) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.queue.length === 0 && this.idle.length === this.slots.size) void this.close();
    }, IDLE_MS);
    this.idleTimer.unref();
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
  }
}

let shared: HashWorkerPool | undefined;

/** The process-wide pool used by fsverityDigestFile. */
export function hashPool(): HashWorkerPool {
  shared ??= new HashWorkerPool();
  return shared;
}

/** Terminate the shared pool's idle workers (optional: idle workers never keep the process alive). */
export async function closeHashPool(): Promise<void> {
  await shared?.close();
}
