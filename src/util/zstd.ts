/**
 * zstd for bootcfs, both directions through libzstd (zstd-napi, native). (fzstd, the pure-JS decoder used
 * before, cost ~11 ms per small frame — it sets up a window of the frame's declared size, 2 MiB for a
 * streaming encoder's frame — which made `status` spend 40 % of its time decoding four sub-KiB streams;
 * libzstd decodes such a frame in < 1 ms and large inputs ~3× faster.)
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

let binding: Binding | undefined;
function zstdBinding(): Binding {
  binding ??= require('zstd-napi/binding') as Binding;
  return binding;
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
 * One libzstd streaming decoder over concatenated frames (ZSTD_decompressStream skips skippable frames and
 * starts the next frame after one ends). `push` feeds input and hands every output piece (a copy) to
 * `onChunk`; `finish` fails if the input ended inside a frame. Memory is bounded by libzstd's window limit
 * (ZSTD_d_windowLogMax default: 128 MiB) and one output buffer, whatever a hostile header claims.
 */
class ZstdDecoder {
  private readonly dctx: InstanceType<Binding['DCtx']>;
  private readonly out: Buffer;
  /** input bytes consumed so far (error offsets) */
  consumed = 0;
  private produced = 0;
  /** libzstd's last return value: 0 = at a frame boundary */
  private hint = 0;

  constructor(private readonly max: number, private readonly onChunk: (b: Buffer) => void) {
    const b = zstdBinding();
    this.dctx = new b.DCtx();
    this.out = Buffer.allocUnsafe(b.dStreamOutSize());
  }

  push(input: Uint8Array): void {
    let src = input;
    for (;;) {
      let produced: number;
      let used: number;
      try {
        [this.hint, produced, used] = this.dctx.decompressStream(this.out, src);
      } catch (e) {
        throw decodeError(e, this.consumed);
      }
      this.consumed += used;
      src = src.subarray(used);
      if (produced > 0) {
        this.produced += produced;
        if (this.produced > this.max) throw new BootcfsError('ELIMIT', `zstd data decompresses to more than ${this.max} bytes`);
        const piece = Buffer.allocUnsafe(produced); // (Buffer.from would zero-fill first)
        this.out.copy(piece, 0, 0, produced);
        this.onChunk(piece);
      }
      // done with this input once it is consumed and libzstd had no more output to flush
      if (src.length === 0 && produced < this.out.length) return;
      if (used === 0 && produced === 0) throw decodeError(new Error('decoder made no progress'), this.consumed);
    }
  }

  finish(): void {
    if (this.hint !== 0) throw new FormatError('invalid zstd data: truncated frame', this.consumed);
  }
}

/** Decompress concatenated zstd frames (skippable frames ignored). */
export function zstdDecompress(data: Uint8Array, opts: ZstdDecompressOptions = {}): Buffer {
  if (data.length === 0) return Buffer.alloc(0);
  const parts: Buffer[] = [];
  const d = new ZstdDecoder(opts.maxOutput ?? Infinity, (b) => parts.push(b));
  d.push(data);
  d.finish();
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** Decompress a stream of zstd frames chunk by chunk. */
export async function* zstdDecompressStream(src: AsyncIterable<Uint8Array>, opts: ZstdDecompressOptions = {}): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  const d = new ZstdDecoder(opts.maxOutput ?? Infinity, (b) => pending.push(b));
  for await (const chunk of src) {
    if (chunk.length === 0) continue;
    d.push(chunk);
    if (pending.length > 0) {
      const out = pending;
      pending = [];
      yield* out;
    }
  }
  d.finish();
}
