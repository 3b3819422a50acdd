/**
 * Crash-safe file creation: the content is written to a temporary file in the target's directory,
 * flushed with fsync, then renamed over the target, and finally the directory is fsynced so the
 * rename itself is durable. Readers therefore see either the old file (or none) or the complete new
 * one — never a partial write — and a failure leaves nothing behind.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

/** A fresh, unguessable temporary name next to `target` (same directory, so rename is atomic). */
export function tempPathFor(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${randomBytes(6).toString('hex')}`);
}

/** A fresh temporary name inside directory `dir`. */
export function tempPathIn(dir: string): string {
  return path.join(dir, `.tmp-${randomBytes(6).toString('hex')}`);
}

/** fsync a directory so that entries created/renamed in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

export interface AtomicWriteOptions {
  /** Permission bits of the final file (default 0o644; the umask does not apply). */
  mode?: number;
  /** fsync the parent directory after the rename (default true). */
  syncDir?: boolean;
}

/**
 * Create `target` atomically with the bytes produced by `fill`, which receives an open file handle on
 * the temporary file. If `fill` or any later step throws, the temporary file is removed and the
 * target is untouched.
 */
export async function withAtomicFile(
  target: string,
  fill: (handle: fsp.FileHandle, tempPath: string) => Promise<void>,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const tmp = tempPathFor(target);
  const handle = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  let renamed = false;
  try {
    try {
      await fill(handle, tmp);
      await handle.chmod(opts.mode ?? 0o644);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, target);
    renamed = true;
    if (opts.syncDir ?? true) await fsyncDir(path.dirname(target));
  } finally {
    if (!renamed) await fsp.rm(tmp, { force: true });
  }
}

/**
 * A file being created atomically, for callers that want to claim the target early (fail fast when
 * the directory is missing or not writable) and produce the content later: `create()` opens the
 * temporary file, `write()` appends, `commit()` makes it durable and renames it over the target,
 * `discard()` removes it. Until `commit()` the target is untouched.
 */
export class AtomicFile {
  private done = false;
  private constructor(
    readonly target: string,
    readonly tempPath: string,
    private readonly handle: fsp.FileHandle,
    private readonly opts: AtomicWriteOptions,
  ) {}

  static async create(target: string, opts: AtomicWriteOptions = {}): Promise<AtomicFile> {
    const tmp = tempPathFor(target);
    const handle = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    return new AtomicFile(target, tmp, handle, opts);
  }

  async write(data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await this.handle.write(data, off, data.length - off);
      off += bytesWritten;
    }
  }

  async commit(): Promise<void> {
    if (this.done) throw new Error('AtomicFile already committed or discarded');
    this.done = true;
    let renamed = false;
    try {
      try {
        await this.handle.chmod(this.opts.mode ?? 0o644);
        await this.handle.sync();
      } finally {
        await this.handle.close();
      }
      await fsp.rename(this.tempPath, this.target);
      renamed = true;
      if (this.opts.syncDir ?? true) await fsyncDir(path.dirname(this.target));
    } finally {
      if (!renamed) await fsp.rm(this.tempPath, { force: true });
    }
  }

  async discard(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.handle.close().catch(() => undefined);
    await fsp.rm(this.tempPath, { force: true });
  }
}

/** Permission bits a new file gets from open(..., 0666) under the current umask. */
export function defaultFileMode(): number {
  const mask = process.umask();
  return 0o666 & ~mask;
}

/** Write `data` to `target` atomically (temp file + fsync + rename + directory fsync). */
export async function writeFileAtomic(target: string, data: Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  await withAtomicFile(
    target,
    async (handle) => {
      let off = 0;
      while (off < data.length) {
        const { bytesWritten } = await handle.write(data, off, data.length - off);
        off += bytesWritten;
      }
    },
    opts,
  );
}
