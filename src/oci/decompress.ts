/**
 * Streaming layer decompression by media type: plain tar, gzip (node:zlib, multi-member) and zstd
 * (libzstd through util/zstd.ts: every frame of a multi-frame stream, skippable frames ignored —
 * zstd:chunked layers are exactly that, and a decoder stopping at the first frame boundary truncates
 * them, bootc#2408).
 */
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { BootcfsError, FormatError } from '../errors.js';
import { zstdDecompressStream } from '../util/zstd.js';
import { layerCompression, type LayerCompression } from './types.js';

export class DecompressionError extends BootcfsError {
  constructor(what: string, why: string, options?: { cause?: unknown }) {
    super('EFORMAT', `cannot decompress ${what}: ${why}`, options);
    this.name = 'DecompressionError';
  }
}

/** Decompresses `input` as given by `compression`. Output chunks are owned by the caller. */
export function decompressStream(
  input: AsyncIterable<Uint8Array>,
  compression: LayerCompression,
  what = 'layer',
): AsyncIterable<Uint8Array> {
  switch (compression) {
    case 'none':
      return input;
    case 'gzip':
      return gunzipStream(input, what);
    case 'zstd':
      return zstdStream(input, what);
  }
}

/** Decompresses a layer blob according to its media type (tar, tar+gzip, tar+zstd, non-distributable). */
export function decompressLayer(input: AsyncIterable<Uint8Array>, mediaType: string, what = 'layer'): AsyncIterable<Uint8Array> {
  return decompressStream(input, layerCompression(mediaType), what);
}

async function* gunzipStream(input: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<Uint8Array> {
  const gunzip = createGunzip();
  const source = Readable.from(input, { objectMode: false });
  // Errors of the source (e.g. a digest mismatch thrown by the verifier) must reach our consumer
  // unchanged, so they are forwarded into the gunzip stream rather than swallowed by pipe().
  let sourceError: unknown;
  source.on('error', (e) => {
    sourceError = e;
    gunzip.destroy(e);
  });
  source.pipe(gunzip);
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } catch (e) {
    if (sourceError !== undefined) throw sourceError;
    throw new DecompressionError(what, `gzip: ${(e as Error).message}`, { cause: e });
  } finally {
    source.destroy();
    gunzip.destroy();
  }
  if (sourceError !== undefined) throw sourceError;
}

async function* zstdStream(input: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<Uint8Array> {
  let sawInput = false;
  async function* nonEmpty(): AsyncGenerator<Uint8Array> {
    for await (const chunk of input) {
      if (chunk.length === 0) continue;
      sawInput = true;
      yield chunk;
    }
  }
  try {
    yield* zstdDecompressStream(nonEmpty());
  } catch (e) {
    // the decoder's errors become this layer's; the source's (a digest mismatch...) pass unchanged
    if (e instanceof FormatError) throw new DecompressionError(what, `zstd: ${e.message}`, { cause: e });
    throw e;
  }
  if (!sawInput) throw new DecompressionError(what, 'zstd: empty input');
}
