/**
 * The merged filesystem tree and composefs image of an OCI image stored in a repository, built from
 * its layer splitstreams (composefs-format.md §6 "Tree building", "Image id"):
 *
 *   buildImageTree(repo, diffIds)        merged tree of the `oci-layer-<diff_id>` streams, in order,
 *                                        with the xattr rule (xattr-rule.ts) and transformForOci applied
 *   writeImageBytes(fs, format, alg)     EROFS bytes: format 1 → writeImageV1 (C-compatible), 2 →
 *                                        writeImageV2 (composefs-rs native) with the digest algorithm
 *   computeImageId(repo, tagOrConfig)    fs-verity digest of that EROFS, without writing anything
 *   createImage(repo, tagOrConfig)       write that EROFS into images/ (optionally images/refs/NAME) and
 *                                        record it in the config stream (`composefs.image`, or
 *                                        `composefs.image.boot` for the bootable image)
 *   { bootable: true }                   adds the bootable transform (bootable.ts: /boot and /sysroot
 *                                        emptied, SELinux labels from the image's policy)
 *   (computeDirectoryId in directory-image.ts is the same for an unpacked rootfs on disk; it must agree with
 *    computeImageId for the same image: digest reproducibility)
 *
 * Reading a layer stream back: the inline chunks hold every tar header, padding, end block and the
 * content of regular files of ≤ 64 bytes; each regular file larger than that is exactly one external
 * chunk (how pull.ts and composefs-rs write layers). So the tar is re-parsed from a synthetic byte
 * stream in which every external chunk is replaced by zeros of the file's size (from its tar header; no
 * object is read), and the file's digest is taken from the chunk itself — never re-hashed. A stream
 * that breaks the rule (a large file inline, an external chunk that is not exactly one file's whole
 * content) is a FormatError rather than a silently wrong digest; each object's size is checked against
 * the header (stat, or sizes the caller knows) except for layers the caller has just stored itself.
 * The stream is read piece by piece (readSplitStreamFile), so memory holds the tree, not the stream.
 */
import { statSync } from 'node:fs';
import { BootcfsError, FormatError, NotSupportedError } from '../errors.js';
import { fsverityDigest, type HashAlgorithm } from '../fsverity/index.js';
import { writeImageV1Taking } from '../erofs/writer-v1.js';
import { writeImageV2 } from '../erofs/writer-v2.js';
import { uniqueInodes, type FileSystem } from '../tree/model.js';
import type { ErofsFormatVersion, Repository } from '../repository/index.js';
import { CONTENT_TYPE } from '../splitstream/format.js';
import { INLINE_CONTENT_MAX, LayerTreeBuilder } from './layers.js';
import { transformForOci } from './transform.js';
import { applyXattrRule } from './xattr-rule.js';
import { transformForBoot, type ContentReader } from './bootable.js';
import { SplitStreamWriter } from '../splitstream/writer.js';
import { readSplitStreamFile, type SplitStreamReader } from '../splitstream/reader.js';

export type ErofsFormat = ErofsFormatVersion;

export interface ImageIdOptions {
  /** EROFS format (default: the repository's for computeImageId, 1 for computeDirectoryId). */
  format?: ErofsFormat;
  /** Digest algorithm (default: the repository's; computeDirectoryId: sha512, the repository default). */
  algorithm?: HashAlgorithm;
  /** Apply the bootable transform (bootable.ts) after the OCI transform. */
  bootable?: boolean;
}

/** Named refs (in the config stream) of the composefs images, as composefs-oci names them. */
export const IMAGE_REF = 'composefs.image';
export const BOOT_IMAGE_REF = 'composefs.image.boot';
/** The config-stream named ref of the plain or the bootable image. */
export const imageRefName = (bootable: boolean | undefined): string => (bootable ? BOOT_IMAGE_REF : IMAGE_REF);

/** Stream names of composefs-oci (composefs-format.md §6 "Stream naming"). */
export const layerStreamName = (diffId: string): string => `oci-layer-${diffId}`;
export const configStreamName = (configDigest: string): string => `oci-config-${configDigest}`;
export const manifestStreamName = (manifestDigest: string): string => `oci-manifest-${manifestDigest}`;

/** `streams/refs/oci/<tag>` ref name of a tag: `%` → `%25`, `/` → `%2F` (composefs-oci's encoding). */
export function ociTagRef(tag: string): string {
  if (tag.length === 0 || tag.startsWith('@')) throw new BootcfsError('EINVAL', `invalid OCI tag '${tag}' (empty or starting with '@')`);
  return `oci/${tag.replace(/%/g, '%25').replace(/\//g, '%2F')}`;
}

const ZEROS = Buffer.alloc(256 * 1024);

async function objectSize(repo: Repository, digest: Buffer): Promise<number> {
  try {
    // synchronous: see Repository's exists() — a stat per object of every layer
    return statSync(repo.objectPath(digest)).size;
  } catch (e) {
    throw new BootcfsError('ENOENT', `object ${digest.toString('hex')} referenced by a layer stream is missing (${(e as Error).message}); run fsck`);
  }
}

/** Applies the layer stream `name` to `builder` (see the file comment). */
async function applyLayerStream(repo: Repository, builder: LayerTreeBuilder, name: string, trusted: boolean): Promise<void> {
  // Read piece by piece (readSplitStreamFile): a layer's stream section decompresses to every tar header
  // of the layer, tens of MiB for a large one, which need never be in memory at once. Same checks as
  // repo.openStream (openObject verifies the kernel's fs-verity digest in a secure repository).
  const file = await repo.openObject(await repo.streamDigest(name));
  try {
    await applyLayerChunks(repo, builder, name, trusted, await readSplitStreamFile(file, repo.algorithm));
  } finally {
    await file.close();
  }
}

async function applyLayerChunks(
  repo: Repository,
  builder: LayerTreeBuilder,
  name: string,
  trusted: boolean,
  ss: SplitStreamReader,
): Promise<void> {
  if (ss.contentType !== CONTENT_TYPE.ociLayer) {
    throw new FormatError(`stream '${name}' is not an OCI layer splitstream`, ss.header.info.start + 64);
  }
  // The file whose content the parser is about to read (set by `external` below before it reads): an
  // external chunk must sit exactly where that content starts, and stands for exactly its size in zeros.
  let expect: { offset: number; size: number } | undefined;
  // Digests of external chunks, in stream order, queued as the synthetic source passes them.
  const pending: Buffer[] = [];
  /** Bytes of the synthetic tar yielded so far. */
  let pos = 0;
  async function* synthetic(): AsyncGenerator<Uint8Array> {
    for await (const c of ss.chunks()) {
      if ('inline' in c) {
        pos += c.inline.length;
        yield c.inline;
        continue;
      }
      if (expect === undefined || expect.offset !== pos) {
        throw new FormatError(`layer stream '${name}' has an external chunk that is not a file's content (at tar byte ${pos})`, ss.header.info.start);
      }
      pending.push(c.object);
      let left = expect.size;
      expect = undefined;
      while (left > 0) {
        const n = Math.min(left, ZEROS.length);
        pos += n;
        yield ZEROS.subarray(0, n);
        left -= n;
      }
    }
  }
  await builder.applyLayer(synthetic(), {
    layerName: name,
    inlineMax: INLINE_CONTENT_MAX,
    external: async (content, entry) => {
      // The whole content must be exactly one external chunk: the one queued while it is read (the
      // parser pulls a chunk only when it needs its bytes, so nothing is queued before we start).
      const misplaced = (): FormatError =>
        new FormatError(`layer stream '${name}': content of ${printable(entry.path)} (${entry.size} bytes) is not one external object`, entry.dataOffset);
      if (pending.length !== 0) throw misplaced();
      expect = { offset: entry.dataOffset, size: entry.size };
      for await (const piece of content) void piece;
      expect = undefined;
      const digest = pending.shift();
      if (digest === undefined || pending.length !== 0) throw misplaced();
      // The image takes the size from the tar header; the object must agree (unless the caller trusts
      // the stored objects).
      if (!trusted && (await objectSize(repo, digest)) !== entry.size) {
        throw new FormatError(`layer stream '${name}': object for ${printable(entry.path)} has the wrong size`, entry.dataOffset);
      }
      return digest;
    },
  });
  if (pending.length !== 0) throw new FormatError(`layer stream '${name}' has an external chunk that is not a file's content`, ss.header.info.start);
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * The merged, xattr-filtered, OCI-transformed tree of the given layers (their streams must exist).
 * Every external object is checked to exist with the size its tar header gives, unless
 * `opts.trustObjects`: for callers that read file contents only through a verifying reader
 * (`repositoryContentReader`) or check the objects themselves (`Repository.writeImage` does) — a stat
 * per object is most of the cost of rebuilding a large image's tree.
 */
export async function buildImageTree(repo: Repository, diffIds: readonly string[], opts: { bootable?: boolean; trustObjects?: boolean } = {}): Promise<FileSystem> {
  const builder = new LayerTreeBuilder();
  for (const diffId of diffIds) await applyLayerStream(repo, builder, layerStreamName(diffId), opts.trustObjects === true);
  const fs = builder.finish();
  applyXattrRule(fs);
  transformForOci(fs);
  if (opts.bootable) await transformForBoot(fs, { readContent: repositoryContentReader(repo) });
  return fs;
}

/** Reads an external file of a repository tree from its object (verified against its digest). */
export function repositoryContentReader(repo: Repository): ContentReader {
  return async (inode) => {
    if (inode.digest === undefined) throw new BootcfsError('EINVAL', 'file has neither inline content nor an object digest');
    return repo.readObject(inode.digest, { verify: true });
  };
}

/** EROFS bytes of a tree in the given format. */
export function writeImageBytes(fs: FileSystem, format: ErofsFormat, algorithm: HashAlgorithm): Buffer {
  return writeImageBytesTaking(() => fs, format, algorithm);
}

/**
 * writeImageBytes of a tree the caller no longer needs, handed over by `take()` (called once): the v1
 * writer drops it once it has its own copy, so the two trees are not both held while the image is laid out.
 */
export function writeImageBytesTaking(take: () => FileSystem, format: ErofsFormat, algorithm: HashAlgorithm): Buffer {
  if (format === 1) return writeImageV1Taking(take);
  if (format === 2) return writeImageV2(take(), { algorithm });
  // Format 0 (composefs-rs's pre-v1 C layout) is readable by the kernel but not produced by our writers.
  throw new NotSupportedError(`EROFS format ${String(format)} images cannot be written (use 1 or 2)`, 95);
}

/** The diff_ids recorded in a config stream (its raw config JSON object). */
export async function configDiffIds(repo: Repository, configStream: string): Promise<string[]> {
  const ss = await repo.openStream(configStream);
  if (ss.contentType !== CONTENT_TYPE.ociConfig) throw new FormatError(`stream '${configStream}' is not an OCI config splitstream`, ss.header.info.start + 64);
  const parts: Buffer[] = [];
  for (const c of ss.chunks()) parts.push('inline' in c ? c.inline : await repo.readObject(c.object, { verify: true }));
  let cfg: unknown;
  try {
    cfg = JSON.parse(Buffer.concat(parts).toString('utf8'));
  } catch {
    throw new FormatError(`stream '${configStream}' does not hold JSON`, 0);
  }
  const ids = (cfg as { rootfs?: { diff_ids?: unknown } } | null)?.rootfs?.diff_ids;
  if (!Array.isArray(ids) || ids.some((d) => typeof d !== 'string')) throw new FormatError(`config in '${configStream}' has no rootfs.diff_ids`, 0);
  return ids as string[];
}

/** Resolves a tag (`streams/refs/oci/<tag>` → manifest stream) or `@sha256:…` / `sha256:…` config digest to the config stream name. */
export async function resolveConfigStream(repo: Repository, tagOrConfigDigest: string): Promise<string> {
  const digest = tagOrConfigDigest.replace(/^@/, '');
  if (/^sha(256|512):[0-9a-f]+$/.test(digest)) return configStreamName(digest);
  const manifest = await repo.openStream(`refs/${ociTagRef(tagOrConfigDigest)}`);
  for (const [name] of manifest.namedRefs) {
    if (name.startsWith('config:')) return configStreamName(name.slice('config:'.length));
  }
  throw new FormatError(`manifest stream of tag '${tagOrConfigDigest}' has no config: named ref`, 0);
}

/** fs-verity digest of the composefs image of a stored OCI image; writes nothing. */
export async function computeImageId(repo: Repository, tagOrConfigDigest: string, opts: ImageIdOptions = {}): Promise<Buffer> {
  const algorithm = opts.algorithm ?? repo.algorithm;
  const diffIds = await configDiffIds(repo, await resolveConfigStream(repo, tagOrConfigDigest));
  const fs = await buildImageTree(repo, diffIds, { bootable: opts.bootable });
  // Object digests in the tree are the repository's; another algorithm needs every object re-measured
  // (read back from the repository; hardlinked inodes once).
  if (algorithm !== repo.algorithm) await remeasure(repo, fs, algorithm);
  return fsverityDigest(writeImageBytes(fs, opts.format ?? repo.erofsFormat, algorithm), algorithm);
}

async function remeasure(repo: Repository, fs: FileSystem, algorithm: HashAlgorithm): Promise<void> {
  for (const inode of uniqueInodes(fs.root)) {
    if (inode.digest !== undefined) {
      inode.setObjectDigest(fsverityDigest(await repo.readObject(inode.digest, { verify: true }), algorithm));
    }
  }
}


/**
 * Rewrites config stream `configStream` with the named refs `set` added (replacing same-named ones) and
 * every manifest stream that names it (`config:<digest>`) so that it points at the new config stream.
 * Tags (`streams/refs/oci/…` → manifest stream names) stay valid. Nothing is rewritten when every ref
 * already has that value. Content chunks are copied as they are.
 */
export async function addConfigRefs(repo: Repository, configStream: string, set: ReadonlyMap<string, Buffer>): Promise<void> {
  const cfg = await repo.openStream(configStream);
  if ([...set].every(([k, v]) => cfg.namedRefs.get(k)?.equals(v))) return;
  const cw = new SplitStreamWriter(repo, { algorithm: repo.algorithm, contentType: 'ociconfg' });
  for (const c of cfg.chunks()) {
    if ('inline' in c) cw.writeInline(c.inline);
    else cw.writeExternal(c.object, (await repo.readObject(c.object)).length);
  }
  const refs = new Map(cfg.namedRefs);
  for (const [k, v] of set) refs.set(k, v);
  for (const [k, v] of refs) cw.addNamedRef(k, v);
  const configDigest = configStream.slice('oci-config-'.length);
  const newDigest = await repo.writeStream(configStream, cw);
  for (const name of await repo.listStreams()) {
    if (!name.startsWith('oci-manifest-')) continue;
    const ms = await repo.openStream(name);
    const key = `config:${configDigest}`;
    if (!ms.namedRefs.has(key) || ms.namedRefs.get(key)!.equals(newDigest)) continue;
    const mw = new SplitStreamWriter(repo, { algorithm: repo.algorithm, contentType: 'ocimanif' });
    for (const c of ms.chunks()) {
      if ('inline' in c) mw.writeInline(c.inline);
      else mw.writeExternal(c.object, (await repo.readObject(c.object)).length);
    }
    for (const [k, v] of ms.namedRefs) mw.addNamedRef(k, k === key ? newDigest : v);
    await repo.writeStream(name, mw);
  }
}

/**
 * Builds the composefs image of a stored OCI image (bootable or not), writes it to images/ (and
 * images/refs/<name> when given), and records it in the config stream as `composefs.image` or
 * `composefs.image.boot`. The image is written in the repository's format and algorithm. Returns its id.
 */
export async function createImage(repo: Repository, tagOrConfigDigest: string, opts: { bootable?: boolean; name?: string } = {}): Promise<Buffer> {
  const configStream = await resolveConfigStream(repo, tagOrConfigDigest);
  const fs = await buildImageTree(repo, await configDiffIds(repo, configStream), { bootable: opts.bootable });
  const id = await repo.writeImage(writeImageBytes(fs, repo.erofsFormat, repo.algorithm), opts.name);
  await addConfigRefs(repo, configStream, new Map([[imageRefName(opts.bootable), id]]));
  return id;
}

/** The image id recorded in the config stream of a stored OCI image (plain or bootable), if any. */
export async function recordedImageId(repo: Repository, tagOrConfigDigest: string, opts: { bootable?: boolean } = {}): Promise<Buffer | undefined> {
  const ss = await repo.openStream(await resolveConfigStream(repo, tagOrConfigDigest));
  return ss.namedRefs.get(imageRefName(opts.bootable));
}
