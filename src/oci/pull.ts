/**
 * Pulling an OCI image into a composefs repository (composefs-format.md §6 "Pull"):
 *
 *   const r = await pullImage(repo, 'oci:/path/layout:tag' | 'docker://host/name:tag' | …, { tag?, registry?, onProgress? });
 *   r.imageId           fs-verity digest (repository algorithm) of the composefs EROFS in images/
 *
 * Steps:
 * 1. manifest and config from the source (openImageSource); config.rootfs.diff_ids must pair with the
 *    manifest's layers.
 * 2. layers, largest first, LAYER_CONCURRENCY at a time: a layer whose stream `oci-layer-<diff_id>`
 *    exists is skipped (resumable pulls, re-pull is a no-op). Otherwise the decompressed tar
 *    (openLayer: blob digest and diff_id verified while streaming) goes through tarSegments into a
 *    SplitStreamWriter ('ocilayer'): headers, padding, end blocks and contents of regular files of ≤ 64
 *    bytes inline; each larger regular file of ≤ SMALL_OBJECT_MAX read whole and stored in the
 *    background (writeExternalData, up to OBJECTS_IN_FLIGHT at once per layer, referenced in stream
 *    order), each larger one streamed straight into repo.ensureObject (never held in memory whole).
 *    The stream is published only after the whole layer has been read (and every object stored),
 *    i.e. after both digests verified — a tampered blob leaves only unreferenced objects (gc fodder).
 * 3. the tree is built back from the layer streams (image.ts: xattr rule, transformForOci; the objects of
 *    the layers this pull imported are not looked up again — it has just stored them), written
 *    per repo.erofsFormat and stored with repo.writeImage.
 * 4. config stream `oci-config-<config digest>` ('ociconfg'): the raw config JSON as ONE external
 *    object; named refs `<diff_id>` → layer streams, `composefs.image` → the image, and
 *    `bootcfs.xattr-rule` → a small JSON object `{"name":"bootcfs-xattrs-1","version":1}` recording the
 *    xattr rule the image was built with (an object, not a stream: gc keeps it live through the named
 *    ref; fsck checks it exists). Written once, after the image (composefs-rs writes it twice).
 *    With `bootable`, the same tree then goes through the bootable transform (bootable.ts) and that
 *    image is written too and recorded as `composefs.image.boot` (as composefs-oci's `--bootable`).
 * 5. manifest stream `oci-manifest-<manifest digest>` ('ocimanif'): the raw manifest JSON as one
 *    external object; named refs `config:<config digest>` and `<diff_id>`s; tagged
 *    `streams/refs/oci/<tag>` (default tag: the reference string as given; encoding in ociTagRef).
 *
 * Errors: DigestMismatchError / SizeMismatchError (src/oci/digest.ts) for tampered blobs, FormatError
 * for malformed tars, OciFormatError for inconsistent manifests/configs; nothing is tagged then.
 */
import { FormatError } from '../errors.js';
import type { FileSystem } from '../tree/model.js';
import type { Repository } from '../repository/index.js';
import { SplitStreamWriter } from '../splitstream/writer.js';
import {
  BOOT_IMAGE_REF,
  IMAGE_REF,
  buildImageTree,
  configStreamName,
  layerStreamName,
  manifestStreamName,
  ociTagRef,
  repositoryContentReader,
  writeImageBytes,
  writeImageBytesTaking,
} from './image.js';
import { transformForBoot } from './bootable.js';
import { INLINE_CONTENT_MAX } from './layers.js';
import type { RegistryOptions } from './registry.js';
import { openImageSource, openLayer, type ImageSource } from './source.js';
export { IMAGE_REF, BOOT_IMAGE_REF } from './image.js';
import { tarSegments } from './tar.js';
import { OciFormatError, type OciDescriptor } from './types.js';
import { XATTR_RULE_NAME, XATTR_RULE_VERSION } from './xattr-rule.js';

/** Layers imported at the same time (each is mostly decompression + hashing on this thread). */
export const LAYER_CONCURRENCY = 2;

/**
 * Regular files up to this size are read whole from the tar and stored with one write; larger ones are
 * streamed into the object store (never held in memory whole).
 */
export const SMALL_OBJECT_MAX = 1 << 20;
/** Small-object stores running at once per layer (memory bound: OBJECTS_IN_FLIGHT × SMALL_OBJECT_MAX). */
export const OBJECTS_IN_FLIGHT = 16;

/** Named ref (in the config stream) of the xattr-rule record. */
export const XATTR_RULE_REF = 'bootcfs.xattr-rule';

export type PullProgressEvent =
  | { kind: 'layer-skip'; diffId: string; digest: string; size: number }
  | { kind: 'layer-start'; diffId: string; digest: string; size: number }
  | { kind: 'layer-done'; diffId: string; digest: string; size: number; objects: number; inlineBytes: number }
  | { kind: 'image'; imageId: string; bootImageId?: string };

export interface LayerBytesEvent {
  diffId: string;
  digest: string;
  size: number;
  bytes: number;
}

export interface PullOptions {
  /** Tag under streams/refs/oci/ (default: the reference string). */
  tag?: string;
  registry?: RegistryOptions;
  onProgress?: (ev: PullProgressEvent) => void;
  /**
   * Called for every chunk of a layer blob read from the source with the blob bytes read so far
   * (cumulative per layer, never more than `size`); consumers throttle (src/util/progress.ts).
   */
  onLayerBytes?: (ev: LayerBytesEvent) => void;
  /** Also build the bootable image (bootable.ts) and record it as `composefs.image.boot`. */
  bootable?: boolean;
}

export interface PullResult {
  manifestDigest: string;
  configDigest: string;
  /** fs-verity digest (repository algorithm) of the composefs EROFS image. */
  imageId: Buffer;
  /** With `bootable`: fs-verity digest of the bootable composefs image. */
  bootImageId?: Buffer;
  configStream: string;
  manifestStream: string;
  /** Layers imported by this pull / already present. */
  layersImported: number;
  layersSkipped: number;
}

/** The recorded xattr-rule object (deterministic bytes). */
export function xattrRuleRecord(): Buffer {
  return Buffer.from(JSON.stringify({ name: XATTR_RULE_NAME, version: XATTR_RULE_VERSION }), 'utf8');
}

/**
 * Import one layer into a splitstream and publish it as `oci-layer-<diffId>`. Resolves to the counts
 * of external objects and inline bytes.
 */
export async function importLayer(
  repo: Repository,
  source: ImageSource,
  desc: OciDescriptor,
  diffId: string,
  objectSizes?: Map<string, number>,
): Promise<{ streamDigest: Buffer; objects: number; inlineBytes: number }> {
  const writer = new SplitStreamWriter(repo, { algorithm: repo.algorithm, contentType: 'ocilayer' });
  const it = tarSegments(openLayer(source, desc, { diffId }))[Symbol.asyncIterator]();
  let objects = 0;
  let inlineBytes = 0;
  // Stores of small objects still running (oldest first): at most OBJECTS_IN_FLIGHT, so a layer of many
  // small files keeps the thread pool busy while decompression continues, with bounded memory.
  const inFlight: Promise<Buffer>[] = [];
  try {
    let r = await it.next();
    while (!r.done) {
      const seg = r.value;
      if (seg.kind === 'data' && seg.entry.type === 'reg' && seg.entry.size > INLINE_CONTENT_MAX && seg.entry.size <= SMALL_OBJECT_MAX) {
        // Small object: gathered whole (its size is known from the tar header) and written in one call.
        const entry = seg.entry;
        const parts = [seg.bytes];
        let got = seg.bytes.length;
        while (got < entry.size) {
          const n = await it.next();
          if (n.done || n.value.kind !== 'data') throw new FormatError('tar content ended early', entry.dataOffset + got);
          parts.push(n.value.bytes);
          got += n.value.bytes.length;
        }
        if (got !== entry.size) throw new FormatError(`tar data of ${entry.path} overruns its size`, entry.dataOffset + entry.size);
        // writeExternalData records the reference now (in stream order) and stores in the background.
        const stored = writer.writeExternalData(parts.length === 1 ? parts[0]! : Buffer.concat(parts, got));
        const tracked = stored.then((d) => (objectSizes?.set(d.toString('hex'), got), d));
        tracked.catch(() => undefined); // awaited below (or in finally); no unhandled rejection meanwhile
        inFlight.push(tracked);
        objects++;
        if (inFlight.length >= OBJECTS_IN_FLIGHT) await inFlight.shift();
      } else if (seg.kind === 'data' && seg.entry.type === 'reg' && seg.entry.size > INLINE_CONTENT_MAX) {
        const entry = seg.entry;
        let got = 0;
        // Streams this entry's data segments (pulled from the same iterator) into the object store.
        const body = async function* (): AsyncGenerator<Buffer> {
          got += seg.bytes.length;
          yield seg.bytes;
          while (got < entry.size) {
            const n = await it.next();
            if (n.done || n.value.kind !== 'data') throw new FormatError('tar content ended early', entry.dataOffset + got);
            got += n.value.bytes.length;
            yield n.value.bytes;
          }
        };
        const digest = await repo.ensureObject(body());
        if (got !== entry.size) throw new FormatError(`object store stopped reading ${entry.path} early`, entry.dataOffset + got);
        writer.writeExternal(digest, entry.size);
        objectSizes?.set(digest.toString('hex'), entry.size);
        objects++;
      } else {
        writer.writeInline(seg.bytes);
        inlineBytes += seg.bytes.length;
      }
      r = await it.next();
    }
  } finally {
    // No store keeps running after we return or throw (writeExternalData's promises are also awaited by
    // writer.finish(), which reports their first failure).
    await Promise.allSettled(inFlight);
    await it.return?.();
  }
  // The iteration completed, so openLayer verified the blob digest and the diff_id: safe to publish.
  const streamDigest = await repo.writeStream(layerStreamName(diffId), writer);
  return { streamDigest, objects, inlineBytes };
}

/** `source` whose blobs report every chunk's byte count to `onBytes` (cumulative per blob). */
function countingSource(source: ImageSource, onBytes: (desc: OciDescriptor, bytes: number) => void): ImageSource {
  return {
    reference: source.reference,
    getManifest: () => source.getManifest(),
    getConfig: () => source.getConfig(),
    close: () => source.close(),
    openBlob(desc) {
      const inner = source.openBlob(desc);
      return {
        async *[Symbol.asyncIterator]() {
          let n = 0;
          for await (const chunk of inner) {
            n += chunk.length;
            onBytes(desc, n);
            yield chunk;
          }
        },
      };
    },
  };
}

/** Runs `fn` over `items` with at most `limit` in flight; the first failure rejects (others finish first). */
async function boundedAll<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  const worker = async (): Promise<void> => {
    while (next < items.length && errors.length === 0) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        errors.push(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (errors.length > 0) throw errors[0];
}

export async function pullImage(repo: Repository, ref: string, opts: PullOptions = {}): Promise<PullResult> {
  const tagRef = ociTagRef(opts.tag ?? ref); // validate before any work
  const rawSource = await openImageSource(ref, { registry: opts.registry });
  const diffIdOf = new Map<string, string>();
  const onBytes = opts.onLayerBytes;
  const source = onBytes
    ? countingSource(rawSource, (desc, bytes) => onBytes({ diffId: diffIdOf.get(desc.digest) ?? '', digest: desc.digest, size: desc.size, bytes }))
    : rawSource;
  try {
    const manifest = await source.getManifest();
    const config = await source.getConfig();
    const diffIds = config.config.rootfs.diff_ids;
    const layers = manifest.manifest.layers;
    if (diffIds.length !== layers.length) {
      throw new OciFormatError('config', 'rootfs.diff_ids', `has ${diffIds.length} entries but the manifest has ${layers.length} layers`);
    }

    // 2. layers (largest first; duplicates — the same diff_id twice — imported once)
    const order = layers.map((desc, i) => ({ desc, diffId: diffIds[i]! }));
    for (const l of order) diffIdOf.set(l.desc.digest, l.diffId);
    const unique = [...new Map(order.map((l) => [l.diffId, l])).values()].sort((a, b) => b.desc.size - a.desc.size);
    let layersImported = 0;
    let layersSkipped = 0;
    await boundedAll(unique, LAYER_CONCURRENCY, async ({ desc, diffId }) => {
      const ev = { diffId, digest: desc.digest, size: desc.size };
      if (await repo.hasStream(layerStreamName(diffId))) {
        layersSkipped++;
        opts.onProgress?.({ kind: 'layer-skip', ...ev });
        return;
      }
      opts.onProgress?.({ kind: 'layer-start', ...ev });
      const r = await importLayer(repo, source, desc, diffId);
      layersImported++;
      opts.onProgress?.({ kind: 'layer-done', ...ev, objects: r.objects, inlineBytes: r.inlineBytes });
    });

    const layerDigests = new Map<string, Buffer>();
    for (const d of diffIds) {
      const sd = await repo.hasStream(layerStreamName(d));
      if (!sd) throw new FormatError(`layer stream ${layerStreamName(d)} vanished during the pull`, 0);
      layerDigests.set(d, sd);
    }

    // 3. the composefs image
    // The tree is dropped as soon as its last image is built: writeImage then reads the image back (its
    // object check) and the whole pull's memory peak is there, so nothing else should still be held.
    // (objects of layers stored earlier are not stat()ed here: writeImage checks that every object the
    // image names exists, and their content was verified when they were stored)
    let tree: FileSystem | undefined = await buildImageTree(repo, diffIds, { trustObjects: true });
    let image: Buffer | undefined = opts.bootable
      ? writeImageBytes(tree, repo.erofsFormat, repo.algorithm)
      : writeImageBytesTaking(() => {
          const t = tree!;
          tree = undefined;
          return t;
        }, repo.erofsFormat, repo.algorithm);
    const imageId = await repo.writeImage(image);
    image = undefined;
    let bootImageId: Buffer | undefined;
    if (tree !== undefined) {
      // the plain image is written: the same tree is transformed in place for the bootable one
      await transformForBoot(tree, { readContent: repositoryContentReader(repo) });
      image = writeImageBytes(tree, repo.erofsFormat, repo.algorithm);
      tree = undefined;
      bootImageId = await repo.writeImage(image);
      image = undefined;
    }
    opts.onProgress?.({ kind: 'image', imageId: imageId.toString('hex'), bootImageId: bootImageId?.toString('hex') });

    // 4. config stream
    const ruleDigest = await repo.ensureObject(xattrRuleRecord());
    const cw = new SplitStreamWriter(repo, { algorithm: repo.algorithm, contentType: 'ociconfg' });
    await cw.writeExternalData(config.bytes);
    for (const [d, sd] of layerDigests) cw.addNamedRef(d, sd);
    cw.addNamedRef(IMAGE_REF, imageId);
    if (bootImageId === undefined) {
      // a bootable image recorded by an earlier pull or create-image stays recorded (same layers → same image)
      const previous = (await repo.hasStream(configStreamName(config.digest))) ? (await repo.openStream(configStreamName(config.digest))).namedRefs.get(BOOT_IMAGE_REF) : undefined;
      if (previous !== undefined && (await repo.listImages()).includes(previous.toString('hex'))) bootImageId = previous;
    }
    if (bootImageId) cw.addNamedRef(BOOT_IMAGE_REF, bootImageId);
    cw.addNamedRef(XATTR_RULE_REF, ruleDigest);
    const configStream = configStreamName(config.digest);
    const configStreamDigest = await repo.writeStream(configStream, cw);

    // 5. manifest stream + tag
    const mw = new SplitStreamWriter(repo, { algorithm: repo.algorithm, contentType: 'ocimanif' });
    await mw.writeExternalData(manifest.bytes);
    mw.addNamedRef(`config:${config.digest}`, configStreamDigest);
    for (const [d, sd] of layerDigests) mw.addNamedRef(d, sd);
    const manifestStream = manifestStreamName(manifest.digest);
    await repo.writeStream(manifestStream, mw, tagRef);

    return { manifestDigest: manifest.digest, configDigest: config.digest, imageId, bootImageId, configStream, manifestStream, layersImported, layersSkipped };
  } finally {
    await source.close();
  }
}
