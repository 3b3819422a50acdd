/**
 * zstd for bootcfs: compression through libzstd (zstd-napi, native), decompression in pure JS (fzstd).
 *
 * API:
 * - `zstdCompress(data, level = 3): Buffer` — one frame, written the way a streaming encoder writes it
 *   (no content-size field, no checksum), so a one-shot and a streamed compression of the same bytes are
 *   identical. This is what Rust's `zstd::stream::write::Encoder::new(vec, 0)` produces (composefs-rs's
 *   splitstream sections), modulo libzstd version differences.
 * - `new ZstdCompressStream(level = 3)`: `.write(chunk): Buffer` returns whatever compressed bytes are ready
 *   (often empty), `.end(): Buffer` finishes the frame. Synchronous; bounded memory.
 * - `zstdDecompress(data): Buffer` — any number of concatenated frames, skippable frames
 *   (0x184D2A5?, as zstd:chunked uses for its table of contents) skipped, empty input → empty output.
 * - `zstdDecompressStream(src)`: the same over an async iterable of chunks, yielding output as it comes.
 *
 * Errors: malformed or truncated input → FormatError (the offset is the input position where the decoder
 * gave up, or 0 when unknown); `maxOutput` (decompress) bounds the output so that a tiny hostile frame cannot
 * exhaust memory (ELIMIT).
 */
import { createRequire } from 'node:module';
import { BootcfsError, FormatError } from '../errors.js';

const require = createRequire(import.meta.url);

type Binding = typeof import('zstd-napi/binding.js');
type Fzstd = typeof import('fzstd');

let binding: Binding | undefined;
function zstdBinding(): Binding {
  binding ??= require('zstd-napi/binding') as Binding;
  return binding;
}
let fzstd: Fzstd | undefined;
function fz(): Fzstd {
  fzstd ??= require('fzstd') as Fzstd;
  return fzstd;
}

/** libzstd's default level; what composefs-rs uses (`Encoder::new(_, 0)` means "default"). */
export const ZSTD_DEFAULT_LEVEL = 3;

/** Streaming zstd compressor producing one frame. */
export class ZstdCompressStream {
  private readonly cctx: InstanceType<Binding['CCtx']>;
  private readonly out: Buffer;
  private ended = false;

  constructor(level: number = ZSTD_DEFAULT_LEVEL) {
    const b = zstdBinding();
    this.cctx = new b.CCtx();
    this.cctx.setParameter(b.CParameter.compressionLevel, level);
    this.out = Buffer.allocUnsafe(b.cStreamOutSize());
  }

  /** Feed `chunk`; returns the compressed bytes produced so far (possibly empty). */
  write(chunk: Uint8Array): Buffer {
    if (this.ended) throw new BootcfsError('EINTERNAL', 'ZstdCompressStream.write after end');
    return this.run(chunk, zstdBinding().EndDirective.continue);
  }

  /** Finish the frame; returns the remaining compressed bytes. */
  end(): Buffer {
    if (this.ended) throw new BootcfsError('EINTERNAL', 'ZstdCompressStream.end called twice');
    this.ended = true;
    return this.run(new Uint8Array(0), zstdBinding().EndDirective.end);
  }

  private run(input: Uint8Array, directive: number): Buffer {
    const parts: Buffer[] = [];
    let src = input;
    for (;;) {
      const [remaining, produced, consumed] = this.cctx.compressStream2(this.out, src, directive);
      if (produced > 0) parts.push(Buffer.from(this.out.subarray(0, produced)));
      src = src.subarray(consumed);
      // continue: done once all input is consumed; end: done once libzstd reports nothing left to flush.
      if (directive === zstdBinding().EndDirective.continue ? src.length === 0 : remaining === 0) break;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
}

/** Compress `data` into one zstd frame (streaming-style header: no content size, no checksum). */
export function zstdCompress(data: Uint8Array, level: number = ZSTD_DEFAULT_LEVEL): Buffer {
  const s = new ZstdCompressStream(level);
  const head = s.write(data);
  const tail = s.end();
  return Buffer.concat([head, tail]);
}

function decodeError(e: unknown, offset: number): FormatError {
  const msg = e instanceof Error ? e.message : String(e);
  return new FormatError(`invalid zstd data: ${msg}`, offset);
}

export interface ZstdDecompressOptions {
  /** Fail with ELIMIT once the output exceeds this many bytes (default: unlimited). */
  maxOutput?: number;
}

/**
 * Decompress concatenated zstd frames (skippable frames ignored). Uses the streaming decoder so that the
 * content-size field of a hostile frame never decides an allocation.
 */
export function zstdDecompress(data: Uint8Array, opts: ZstdDecompressOptions = {}): Buffer {
  if (data.length === 0) return Buffer.alloc(0);
  const parts: Buffer[] = [];
  let total = 0;
  const max = opts.maxOutput ?? Infinity;
  const d = new (fz().Decompress)((chunk) => {
    total += chunk.length;
    if (total > max) throw new BootcfsError('ELIMIT', `zstd data decompresses to more than ${max} bytes`);
    if (chunk.length > 0) parts.push(Buffer.from(chunk));
  });
  // Feed in pieces so a failure can be located to within a piece.
  const PIECE = 1 << 20;
  let pos = 0;
  try {
    while (pos < data.length) {
      const end = Math.min(data.length, pos + PIECE);
      d.push(data.subarray(pos, end), end === data.length);
      pos = end;
    }
  } catch (e) {
    if (e instanceof BootcfsError) throw e;
    throw decodeError(e, pos);
  }
  return Buffer.concat(parts, total);
}

/** Decompress a stream of zstd frames chunk by chunk. */
export async function* zstdDecompressStream(src: AsyncIterable<Uint8Array>, opts: ZstdDecompressOptions = {}): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let total = 0;
  const max = opts.maxOutput ?? Infinity;
  const d = new (fz().Decompress)((chunk) => {
    total += chunk.length;
    if (total > max) throw new BootcfsError('ELIMIT', `zstd data decompresses to more than ${max} bytes`);
    // fzstd may reuse its window buffer: copy what we hand out. It also reports empty pieces.
    if (chunk.length > 0) pending.push(Buffer.from(chunk));
  });
  let pos = 0;
  let sawInput = false;
  // One chunk of look-ahead, so that the last chunk can be pushed with final=true (fzstd then reports a
  // truncated frame instead of silently waiting for more).
  let held: Uint8Array | undefined;
  const push = (chunk: Uint8Array, final: boolean) => {
    try {
      d.push(chunk, final);
    } catch (e) {
      if (e instanceof BootcfsError) throw e;
      throw decodeError(e, pos);
    }
    pos += chunk.length;
  };
  for await (const chunk of src) {
    if (chunk.length === 0) continue;
    sawInput = true;
    if (held) push(held, false);
    held = chunk;
    if (pending.length > 0) {
      const out = pending;
      pending = [];
      yield* out;
    }
  }
  if (!sawInput) return;
  push(held!, true);
  yield* pending;
  pending = [];
}
