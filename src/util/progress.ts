/**
 * Progress of a pull, to two optional sinks:
 *
 * - a TTY: one bar per layer on a terminal stream (stderr), redrawn in place — only when that stream is a
 *   TTY (`isTTY`), so logs and pipes never get escape sequences;
 * - a JSON-lines fd (`--progress-fd N`): one JSON object per line and event,
 *     {"type":"layer-start"|"layer-progress"|"layer-done"|"image-done","digest":…,"bytes":…,"total":…,"ts":…}
 *   `digest` is the layer blob digest (image-done: the composefs image id, hex), `bytes` the blob bytes
 *   read so far (cumulative, monotonic per layer), `total` the blob size, `ts` milliseconds since the
 *   epoch. A layer that is already in the repository reports layer-start and layer-done with
 *   `bytes == total` and `"skipped":true`. layer-progress events are throttled to at most one per
 *   `minIntervalMs` (default 100 ms: ~10 per second) per layer; start and done are always written, and
 *   layer-done carries the final byte count.
 *
 * Lines go through a stream on the fd, written in order; `close()` flushes them (the fd stays open).
 */
import * as fs from 'node:fs';
import { BootcfsError } from '../errors.js';

export type ProgressEventType = 'layer-start' | 'layer-progress' | 'layer-done' | 'image-done';

export interface ProgressEvent {
  type: ProgressEventType;
  digest: string;
  bytes: number;
  total: number;
  ts: number;
  skipped?: boolean;
}

export interface ProgressReporterOptions {
  /** File descriptor for JSON lines (not closed by the reporter). */
  fd?: number;
  /** Terminal stream for bars; used only if `isTTY` is true. Default: none. */
  tty?: NodeJS.WriteStream;
  /** Minimum spacing of layer-progress events per layer (ms). Default 100. */
  minIntervalMs?: number;
  /** Clock (ms since the epoch); for tests. */
  now?: () => number;
}

interface LayerState {
  digest: string;
  total: number;
  bytes: number;
  lastEmit: number;
  done: boolean;
  skipped: boolean;
}

const BAR_WIDTH = 30;

function human(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

/** Checks that `fd` is an open file descriptor usable for progress output. */
export function checkProgressFd(fd: number): void {
  if (!Number.isInteger(fd) || fd < 1) throw new BootcfsError('EINVAL', `--progress-fd: '${fd}' is not a file descriptor number ≥ 1`);
  try {
    fs.fstatSync(fd);
  } catch {
    throw new BootcfsError('EINVAL', `--progress-fd: file descriptor ${fd} is not open`);
  }
}

export class ProgressReporter {
  private readonly out: fs.WriteStream | undefined;
  private readonly tty: NodeJS.WriteStream | undefined;
  private readonly minInterval: number;
  private readonly now: () => number;
  private readonly layers = new Map<string, LayerState>();
  private drawnLines = 0;
  private lastDraw = 0;
  private closed = false;

  constructor(opts: ProgressReporterOptions = {}) {
    if (opts.fd !== undefined) {
      checkProgressFd(opts.fd);
      this.out = fs.createWriteStream('', { fd: opts.fd, autoClose: false });
    }
    this.tty = opts.tty?.isTTY ? opts.tty : undefined;
    this.minInterval = opts.minIntervalMs ?? 100;
    this.now = opts.now ?? Date.now;
  }

  /** Whether any sink is active. */
  get active(): boolean {
    return this.out !== undefined || this.tty !== undefined;
  }

  private emit(ev: ProgressEvent): void {
    if (this.out && !this.closed) this.out.write(`${JSON.stringify(ev)}\n`);
  }

  /** A named phase of a longer operation (install: pull, deployment, mkfs, esp): `{"type":"step","step",...,"ts"}`. */
  step(step: string): void {
    if (this.out && !this.closed) this.out.write(`${JSON.stringify({ type: 'step', step, ts: this.now() })}\n`);
    if (this.tty && !this.closed) {
      this.drawnLines = 0;
      this.tty.write(`${step}...\n`);
    }
  }

  layerStart(digest: string, total: number): void {
    this.layers.set(digest, { digest, total, bytes: 0, lastEmit: 0, done: false, skipped: false });
    this.emit({ type: 'layer-start', digest, bytes: 0, total, ts: this.now() });
    this.draw(true);
  }

  /** `bytes`: cumulative blob bytes read. Throttled. */
  layerProgress(digest: string, bytes: number): void {
    const l = this.layers.get(digest);
    if (!l || l.done || bytes <= l.bytes) return;
    l.bytes = bytes;
    const ts = this.now();
    if (ts - l.lastEmit < this.minInterval) return;
    l.lastEmit = ts;
    this.emit({ type: 'layer-progress', digest, bytes, total: l.total, ts });
    this.draw(false);
  }

  /** The layer is finished; `bytes` defaults to the bytes counted through layerProgress. */
  layerDone(digest: string, opts: { bytes?: number; skipped?: boolean } = {}): void {
    let l = this.layers.get(digest);
    if (!l) {
      // a skipped layer may be reported without a start
      this.layerStart(digest, opts.bytes ?? 0);
      l = this.layers.get(digest)!;
    }
    // the bytes counted by layerProgress (the last update may have been throttled), unless given
    l.bytes = opts.bytes ?? l.bytes;
    l.done = true;
    l.skipped = opts.skipped ?? false;
    this.emit({ type: 'layer-done', digest, bytes: l.bytes, total: l.total, ts: this.now(), ...(l.skipped ? { skipped: true } : {}) });
    this.draw(true);
  }

  imageDone(imageId: string): void {
    let bytes = 0;
    let total = 0;
    for (const l of this.layers.values()) {
      bytes += l.bytes;
      total += l.total;
    }
    this.emit({ type: 'image-done', digest: imageId, bytes, total, ts: this.now() });
    this.draw(true);
  }

  private draw(force: boolean): void {
    if (!this.tty) return;
    const ts = this.now();
    if (!force && ts - this.lastDraw < this.minInterval) return;
    this.lastDraw = ts;
    let s = this.drawnLines > 0 ? `\x1b[${this.drawnLines}A` : '';
    for (const l of this.layers.values()) {
      const frac = l.total > 0 ? Math.min(1, l.bytes / l.total) : l.done ? 1 : 0;
      const fill = Math.round(frac * BAR_WIDTH);
      const state = l.skipped ? 'exists' : l.done ? 'done' : `${(frac * 100).toFixed(0).padStart(3)}%`;
      s += `\r\x1b[2K${l.digest.replace(/^sha256:/, '').slice(0, 12)} [${'#'.repeat(fill)}${'.'.repeat(BAR_WIDTH - fill)}] ${human(l.bytes)} / ${human(l.total)} ${state}\n`;
    }
    this.drawnLines = this.layers.size;
    this.tty.write(s);
  }

  /** Flushes the JSON lines (the fd stays open). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const out = this.out;
    if (out) await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
}
