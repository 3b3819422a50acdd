/**
 * OCI content digests (`<algorithm>:<hex>`) and streaming verification.
 *
 * Every byte that comes from an image source passes through `verifyStream` (or `verifyBuffer` for the
 * small JSON documents): the hash is updated chunk by chunk, a stream that grows past its declared size
 * is cut off *before* the excess chunk is handed on, and the digest is checked when the stream ends.
 * A consumer must therefore treat the data as untrusted until the iteration has completed without
 * throwing — which is why importers write to temporary objects and reference them only afterwards.
 */
import { createHash, type Hash } from 'node:crypto';
import { BootcfsError } from '../errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

export interface ParsedDigest {
  readonly algorithm: DigestAlgorithm;
  /** lowercase hex, exact length for the algorithm */
  readonly hex: string;
}

/** A digest string that does not follow `sha256:<64 hex>` / `sha512:<128 hex>`. */
export class InvalidDigestError extends BootcfsError {
  readonly digest: string;
  constructor(digest: string, why: string) {
    super('EFORMAT', `invalid digest '${printable(digest)}': ${why}`);
    this.name = 'InvalidDigestError';
    this.digest = digest;
  }
}

/** Content did not hash to the digest it was requested by. */
export class DigestMismatchError extends BootcfsError {
  readonly expected: string;
  readonly actual: string;
  readonly what: string;
  constructor(what: string, expected: string, actual: string) {
    super('EVERITY', `digest mismatch for ${what}: expected ${expected}, got ${actual}`);
    this.name = 'DigestMismatchError';
    this.expected = expected;
    this.actual = actual;
    this.what = what;
  }
}

/** Content was longer or shorter than its descriptor's size. `actual` is a lower bound when too long. */
export class SizeMismatchError extends BootcfsError {
  readonly expected: number;
  readonly actual: number;
  readonly what: string;
  constructor(what: string, expected: number, actual: number, tooLong: boolean) {
    super(
      'EVERITY',
      tooLong
        ? `size mismatch for ${what}: expected ${expected} bytes, got more (at least ${actual})`
        : `size mismatch for ${what}: expected ${expected} bytes, got ${actual}`,
    );
    this.name = 'SizeMismatchError';
    this.expected = expected;
    this.actual = actual;
    this.what = what;
  }
}

function printable(s: string): string {
  const cut = s.length > 80 ? `${s.slice(0, 80)}…` : s;
  return cut.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * Parses an OCI digest. Only the two registered algorithms are accepted (the spec's grammar allows
 * others, but no content could be verified with them, so they are refused up front).
 */
export function parseDigest(digest: unknown): ParsedDigest {
  if (typeof digest !== 'string') throw new InvalidDigestError(String(digest), 'not a string');
  const colon = digest.indexOf(':');
  if (colon < 0) throw new InvalidDigestError(digest, "missing ':'");
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new InvalidDigestError(digest, `unsupported algorithm '${printable(algorithm)}'`);
  }
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[0-9a-f]+$/.test(hex)) {
    throw new InvalidDigestError(digest, `expected ${HEX_LENGTH[algorithm]} lowercase hex digits`);
  }
  return { algorithm, hex };
}

export function isDigest(s: unknown): s is string {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}

export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

export interface ExpectedContent {
  digest: string;
  /** bytes; omitted when unknown (e.g. a diff_id has no recorded size) */
  size?: number;
}

/** Throws unless `bytes` has exactly the expected size and digest. */
export function verifyBuffer(bytes: Uint8Array, expected: ExpectedContent, what: string): void {
  const { algorithm } = parseDigest(expected.digest);
  if (expected.size !== undefined && bytes.length !== expected.size) {
    throw new SizeMismatchError(what, expected.size, bytes.length, bytes.length > expected.size);
  }
  const actual = digestOf(bytes, algorithm);
  if (actual !== expected.digest) throw new DigestMismatchError(what, expected.digest, actual);
}

/**
 * Incremental verifier, for callers that feed chunks themselves (e.g. a registry download that
 * resumes with a Range request after a dropped connection and must keep one hash across attempts).
 */
export class DigestVerifier {
  readonly expected: ExpectedContent;
  readonly what: string;
  private readonly algorithm: DigestAlgorithm;
  private readonly hash: Hash;
  private length = 0;
  private finished = false;

  constructor(expected: ExpectedContent, what: string) {
    this.algorithm = parseDigest(expected.digest).algorithm;
    if (expected.size !== undefined && (!Number.isSafeInteger(expected.size) || expected.size < 0)) {
      throw new BootcfsError('EFORMAT', `invalid size ${expected.size} for ${what}`);
    }
    this.expected = expected;
    this.what = what;
    this.hash = createHash(this.algorithm);
  }

  /** Bytes accepted so far. */
  get bytesSeen(): number {
    return this.length;
  }

  /** Accepts one chunk; throws (without accepting it) if it would exceed the declared size. */
  update(chunk: Uint8Array): void {
    if (this.finished) throw new BootcfsError('EINTERNAL', `verifier for ${this.what} used after finish`);
    const next = this.length + chunk.length;
    if (this.expected.size !== undefined && next > this.expected.size) {
      this.finished = true;
      throw new SizeMismatchError(this.what, this.expected.size, next, true);
    }
    this.hash.update(chunk);
    this.length = next;
  }

  /** Checks size and digest at end of stream. */
  finish(): void {
    if (this.finished) throw new BootcfsError('EINTERNAL', `verifier for ${this.what} finished twice`);
    this.finished = true;
    if (this.expected.size !== undefined && this.length !== this.expected.size) {
      throw new SizeMismatchError(this.what, this.expected.size, this.length, false);
    }
    const actual = `${this.algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.expected.digest) throw new DigestMismatchError(this.what, this.expected.digest, actual);
  }
}

/**
 * Passes `source` through, verifying it against `expected`. Excess bytes are never yielded; a digest
 * or short-stream mismatch is thrown at the end, after which nothing more is yielded.
 */
export async function* verifyStream(
  source: AsyncIterable<Uint8Array>,
  expected: ExpectedContent,
  what: string,
): AsyncGenerator<Uint8Array, void, undefined> {
  const verifier = new DigestVerifier(expected, what);
  for await (const chunk of source) {
    if (chunk.length === 0) continue;
    verifier.update(chunk);
    yield chunk;
  }
  verifier.finish();
}

/** Reads a whole (small) stream into memory, refusing to grow past `limit` bytes. */
export async function readAll(source: AsyncIterable<Uint8Array>, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (total > limit) throw new BootcfsError('ELIMIT', `${what} is larger than the limit of ${limit} bytes`);
    chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  }
  return Buffer.concat(chunks, total);
}
