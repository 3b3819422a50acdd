/**
 * fs-verity file digests computed in userspace, bit-identical to what the kernel reports through
 * FS_IOC_MEASURE_VERITY (and to `fsverity digest`) for composefs' parameters: 4096-byte Merkle tree
 * blocks and no salt.
 *
 * The digest is H(fsverity_descriptor), where the descriptor carries the file size and the root of a
 * Merkle tree: level 0 holds H(block) of every (zero-padded) 4096-byte data block, each further level
 * holds the hashes of the previous level's 4096-byte (zero-padded) blocks, until one hash remains.
 * An empty file has an all-zero root hash (kernel semantics; libcomposefs' userspace code differs).
 *
 * This module has no I/O: it is shared by the main thread and the hashing workers (worker.ts).
 */
import * as crypto from 'node:crypto';
import { BootcfsError } from '../errors.js';

export type HashAlgorithm = 'sha256' | 'sha512';

/** Digest length in bytes of each algorithm. */
export const DIGEST_SIZE: Record<HashAlgorithm, number> = { sha256: 32, sha512: 64 };

/** The kernel's FS_VERITY_HASH_ALG_* numbers (descriptor byte 1, ioctl hash_algorithm fields). */
export const HASH_ALGORITHM_ID: Record<HashAlgorithm, number> = { sha256: 1, sha512: 2 };

/** Merkle tree block size and data block size; the only one composefs uses. */
export const FSVERITY_BLOCK_SIZE = 4096;
const LOG_BLOCK_SIZE = 12;
const DESCRIPTOR_SIZE = 256;
const MAX_DIGEST_SIZE = 64;

export function isHashAlgorithm(s: unknown): s is HashAlgorithm {
  return s === 'sha256' || s === 'sha512';
}

/** Validates an algorithm name coming from callers that may not be typed (CLI, JS users). */
export function checkHashAlgorithm(alg: unknown): HashAlgorithm {
  if (!isHashAlgorithm(alg)) {
    throw new BootcfsError('EINVAL', `unknown fs-verity hash algorithm '${String(alg)}' (expected sha256 or sha512)`);
  }
  return alg;
}

/**
 * Hash of one buffer. `crypto.hash` (Node ≥ 20.12) is a one-shot call that avoids creating a Hash
 * object per block, which is measurably faster for 4 KiB inputs; older Node 20 falls back.
 */
const oneShot: ((alg: string, data: Uint8Array, enc: 'buffer') => Buffer) | undefined =
  typeof (crypto as { hash?: unknown }).hash === 'function'
    ? (crypto.hash as unknown as (alg: string, data: Uint8Array, enc: 'buffer') => Buffer)
    : undefined;

export function hashBlock(alg: HashAlgorithm, data: Uint8Array): Buffer {
  return oneShot ? oneShot(alg, data, 'buffer') : crypto.createHash(alg).update(data).digest();
}

/**
 * Level-0 hashes of `length` bytes of `data` starting at `start` (which must be block aligned within
 * the file): one hash per 4096-byte block, the last partial block zero-padded, written consecutively
 * into `out` at `outOffset`. Returns the number of hashes written. Used by the worker threads.
 */
export function hashDataBlocks(
  alg: HashAlgorithm,
  data: Uint8Array,
  start: number,
  length: number,
  out: Uint8Array,
  outOffset: number,
): number {
  const ds = DIGEST_SIZE[alg];
  const end = start + length;
  let o = outOffset;
  let p = start;
  for (; p + FSVERITY_BLOCK_SIZE <= end; p += FSVERITY_BLOCK_SIZE, o += ds) {
    out.set(hashBlock(alg, data.subarray(p, p + FSVERITY_BLOCK_SIZE)), o);
  }
  if (p < end) {
    const padded = new Uint8Array(FSVERITY_BLOCK_SIZE);
    padded.set(data.subarray(p, end));
    out.set(hashBlock(alg, padded), o);
    o += ds;
  }
  return (o - outOffset) / ds;
}

/** One level of the Merkle tree: the current (partial) block of hashes, and how many it has received. */
interface Level {
  block: Buffer;
  fill: number;
  count: number;
}

/**
 * The hash levels of an fs-verity Merkle tree, built bottom-up as level-0 (data block) hashes arrive
 * in file order. Memory is one 4 KiB block per level (≤ 8 levels for any realistic file).
 */
export class MerkleTreeBuilder {
  readonly algorithm: HashAlgorithm;
  private readonly digestSize: number;
  private levels: Level[] = [];

  constructor(alg: HashAlgorithm) {
    this.algorithm = alg;
    this.digestSize = DIGEST_SIZE[alg];
  }

  /** Append one level-0 hash (the hash of the next data block). */
  addLeafHash(h: Uint8Array): void {
    this.push(0, h);
  }

  /** Append consecutive level-0 hashes packed in one buffer (as produced by hashDataBlocks). */
  addLeafHashes(hashes: Uint8Array): void {
    const ds = this.digestSize;
    if (hashes.length % ds !== 0) throw new BootcfsError('EINTERNAL', 'leaf hash buffer is not a multiple of the digest size');
    for (let p = 0; p < hashes.length; p += ds) this.push(0, hashes.subarray(p, p + ds));
  }

  private push(levelIndex: number, h: Uint8Array): void {
    let level = this.levels[levelIndex];
    if (!level) {
      level = { block: Buffer.alloc(FSVERITY_BLOCK_SIZE), fill: 0, count: 0 };
      this.levels[levelIndex] = level;
    }
    level.block.set(h, level.fill);
    level.fill += h.length;
    level.count++;
    if (level.fill === FSVERITY_BLOCK_SIZE) {
      // A full block of hashes can be hashed right away: padding only ever applies to the last block.
      const up = hashBlock(this.algorithm, level.block);
      level.fill = 0;
      this.push(levelIndex + 1, up);
    }
  }

  /** Number of level-0 hashes received so far. */
  get leafCount(): number {
    return this.levels[0]?.count ?? 0;
  }

  /** An independent copy (used to finish the tree while the original keeps growing). */
  clone(): MerkleTreeBuilder {
    const c = new MerkleTreeBuilder(this.algorithm);
    c.levels = this.levels.map((l) => ({ block: Buffer.from(l.block), fill: l.fill, count: l.count }));
    return c;
  }

  /**
   * The root hash of the tree over everything added so far (all zeroes if nothing was added).
   * Does not modify the builder: more hashes may be added afterwards.
   */
  rootHash(): Buffer {
    const root = Buffer.alloc(this.digestSize);
    if (this.levels.length === 0) return root;
    // Finish a copy: flush each level's partial block (zero-padded) into the level above, until a
    // level holds exactly one hash overall — that hash is the root.
    const t = this.clone();
    for (let i = 0; ; i++) {
      const level = t.levels[i]!;
      if (level.count === 1) {
        // A level with a single hash is necessarily the top (a higher level needs ≥ one full block).
        level.block.copy(root, 0, 0, this.digestSize);
        return root;
      }
      if (level.fill > 0) {
        level.block.fill(0, level.fill);
        level.fill = 0;
        t.push(i + 1, hashBlock(this.algorithm, level.block));
      }
    }
  }
}

/** The 256-byte fsverity_descriptor for a file of `dataSize` bytes with the given root hash. */
export function fsverityDescriptor(alg: HashAlgorithm, dataSize: number | bigint, rootHash: Uint8Array): Buffer {
  const d = Buffer.alloc(DESCRIPTOR_SIZE);
  d[0] = 1; // version
  d[1] = HASH_ALGORITHM_ID[alg];
  d[2] = LOG_BLOCK_SIZE;
  d[3] = 0; // salt_size
  // 4..7: sig_size (reserved in the digested form) = 0
  d.writeBigUInt64LE(BigInt(dataSize), 8);
  if (rootHash.length > MAX_DIGEST_SIZE) throw new BootcfsError('EINTERNAL', 'root hash too long');
  d.set(rootHash, 16); // root_hash[64], zero padded
  // 80..111 salt, 112..255 reserved: zero
  return d;
}

/** The fs-verity digest from a finished tree: H(descriptor). */
export function digestFromRoot(alg: HashAlgorithm, dataSize: number | bigint, rootHash: Uint8Array): Buffer {
  return hashBlock(alg, fsverityDescriptor(alg, dataSize, rootHash));
}

/**
 * Incremental fs-verity digest: feed the file's bytes in any chunking with update(), then digest().
 * digest() does not end the computation: more data may be appended and digest() called again.
 */
export class FsVerityHasher {
  readonly algorithm: HashAlgorithm;
  private readonly tree: MerkleTreeBuilder;
  /** Bytes of the current incomplete data block. */
  private readonly pending = Buffer.alloc(FSVERITY_BLOCK_SIZE);
  private pendingFill = 0;
  private total = 0;

  constructor(alg: HashAlgorithm = 'sha256') {
    this.algorithm = checkHashAlgorithm(alg);
    this.tree = new MerkleTreeBuilder(this.algorithm);
  }

  /** Bytes hashed so far (the data_size of the descriptor). */
  get size(): number {
    return this.total;
  }

  update(data: Uint8Array): this {
    const alg = this.algorithm;
    let p = 0;
    const n = data.length;
    if (this.pendingFill > 0) {
      const take = Math.min(n, FSVERITY_BLOCK_SIZE - this.pendingFill);
      this.pending.set(data.subarray(0, take), this.pendingFill);
      this.pendingFill += take;
      p = take;
      if (this.pendingFill === FSVERITY_BLOCK_SIZE) {
        this.tree.addLeafHash(hashBlock(alg, this.pending));
        this.pendingFill = 0;
      }
    }
    for (; p + FSVERITY_BLOCK_SIZE <= n; p += FSVERITY_BLOCK_SIZE) {
      this.tree.addLeafHash(hashBlock(alg, data.subarray(p, p + FSVERITY_BLOCK_SIZE)));
    }
    if (p < n) {
      this.pending.set(data.subarray(p), 0);
      this.pendingFill = n - p;
    }
    this.total += n;
    return this;
  }

  /** The fs-verity digest of everything fed so far (32 bytes for sha256, 64 for sha512). */
  digest(): Buffer {
    let tree = this.tree;
    if (this.pendingFill > 0) {
      // Hash the zero-padded tail into a copy of the tree so that update() can continue afterwards.
      const padded = Buffer.alloc(FSVERITY_BLOCK_SIZE);
      this.pending.copy(padded, 0, 0, this.pendingFill);
      tree = tree.clone();
      tree.addLeafHash(hashBlock(this.algorithm, padded));
    }
    return digestFromRoot(this.algorithm, this.total, tree.rootHash());
  }
}

/** fs-verity digest of a whole in-memory buffer. */
export function fsverityDigest(data: Uint8Array, alg: HashAlgorithm = 'sha256'): Buffer {
  return new FsVerityHasher(alg).update(data).digest();
}

/** `sha256:<hex>` / `sha512:<hex>`: the form printed by `fsverity digest` and composefs-rs ids. */
export function formatDigest(alg: HashAlgorithm, digest: Uint8Array): string {
  checkHashAlgorithm(alg);
  if (digest.length !== DIGEST_SIZE[alg]) {
    throw new BootcfsError('EINVAL', `a ${alg} fs-verity digest has ${DIGEST_SIZE[alg]} bytes, got ${digest.length}`);
  }
  return `${alg}:${Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength).toString('hex')}`;
}
