/**
 * The common interface of every image source (OCI layout, oci-archive, docker-archive, registry).
 *
 * Identity is kept exactly as served: `getManifest().digest` is the digest of the manifest bytes the
 * source holds (never a re-serialisation), `getConfig().digest` is the config descriptor's digest, and
 * the diff_ids are read from the config. Every byte handed out has been (or, for streams, is being)
 * verified against the digest and size it was requested by.
 */
import { BootcfsError } from '../errors.js';
import { digestOf, readAll, verifyBuffer, verifyStream, parseDigest } from './digest.js';
import { decompressLayer } from './decompress.js';
import { parseImageReference, type ImageReference } from './reference.js';
import {
  MAX_CONFIG_BYTES,
  MAX_MANIFEST_BYTES,
  parseImageConfig,
  parseManifestDocument,
  selectPlatformManifest,
  type OciDescriptor,
  type OciImageConfig,
  type OciIndex,
  type OciManifest,
  type Platform,
} from './types.js';
import type { RegistryOptions } from './registry.js';

export interface ManifestResult {
  /** the exact bytes of the image manifest */
  bytes: Buffer;
  /** digest of `bytes` (sha256 unless the referencing descriptor used sha512) */
  digest: string;
  mediaType: string;
  manifest: OciManifest;
  /** when the reference named an index (manifest list), the digest of that index's exact bytes */
  indexDigest?: string;
}

export interface ConfigResult {
  bytes: Buffer;
  digest: string;
  config: OciImageConfig;
}

export interface ImageSource {
  readonly reference: ImageReference;
  getManifest(): Promise<ManifestResult>;
  getConfig(): Promise<ConfigResult>;
  /**
   * The blob's bytes, verified against `descriptor.digest` and `descriptor.size` while streaming: more
   * bytes than the size are never yielded, and a mismatch throws at the end of the iteration. Consumers
   * must not commit anything derived from the data until the iteration has completed.
   */
  openBlob(descriptor: OciDescriptor): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}

export interface OpenSourceOptions {
  /** platform to pick from an index; default linux/amd64 */
  platform?: Platform;
  /** registry client options (TLS, credentials, retries) for docker:// references */
  registry?: RegistryOptions;
}

/** Bound on index → index → … nesting (OCI allows nested indexes; a cycle must not hang us). */
export const MAX_INDEX_DEPTH = 8;

/**
 * Shared logic for sources: manifest resolution through (nested) indexes with platform selection,
 * config reading, caching. Subclasses supply `readRootManifest` and `rawBlob`.
 */
export abstract class BaseImageSource implements ImageSource {
  readonly reference: ImageReference;
  protected readonly platform: Platform | undefined;
  private manifestPromise: Promise<ManifestResult> | undefined;
  private configPromise: Promise<ConfigResult> | undefined;

  constructor(reference: ImageReference, platform?: Platform) {
    this.reference = reference;
    this.platform = platform;
  }

  /** Unverified blob bytes by digest; `openBlob` wraps this with verification. */
  protected abstract rawBlob(descriptor: OciDescriptor): AsyncIterable<Uint8Array>;

  /**
   * The document the reference points at, with the digest it must have when known in advance (from a
   * descriptor or a `@digest` reference). Default: the descriptor is resolved by the subclass.
   */
  protected abstract rootDescriptor(): Promise<{ descriptor?: OciDescriptor; bytes?: Buffer; mediaType?: string }>;

  openBlob(descriptor: OciDescriptor): AsyncIterable<Uint8Array> {
    return verifyStream(this.rawBlob(descriptor), { digest: descriptor.digest, size: descriptor.size }, `blob ${descriptor.digest}`);
  }

  /** Reads a small document by descriptor into memory, verified. */
  protected async readDocument(descriptor: OciDescriptor, limit: number, what: string): Promise<Buffer> {
    if (descriptor.size > limit) {
      throw new BootcfsError('ELIMIT', `${what} ${descriptor.digest} declares ${descriptor.size} bytes, above the limit of ${limit}`);
    }
    const bytes = await readAll(this.openBlob(descriptor), limit, what);
    return bytes;
  }

  getManifest(): Promise<ManifestResult> {
    this.manifestPromise ??= this.resolveManifest();
    return this.manifestPromise;
  }

  getConfig(): Promise<ConfigResult> {
    this.configPromise ??= (async () => {
      const { manifest } = await this.getManifest();
      const bytes = await this.readDocument(manifest.config, MAX_CONFIG_BYTES, 'image config');
      return { bytes, digest: manifest.config.digest, config: parseImageConfig(bytes) };
    })();
    return this.configPromise;
  }

  private async resolveManifest(): Promise<ManifestResult> {
    const root = await this.rootDescriptor();
    let bytes: Buffer;
    let digest: string;
    let mediaType = root.mediaType ?? root.descriptor?.mediaType;
    if (root.bytes !== undefined) {
      bytes = root.bytes;
      digest = root.descriptor?.digest ?? digestOf(bytes);
      if (root.descriptor) verifyBuffer(bytes, root.descriptor, `manifest ${root.descriptor.digest}`);
    } else if (root.descriptor) {
      bytes = await this.readDocument(root.descriptor, MAX_MANIFEST_BYTES, 'manifest');
      digest = root.descriptor.digest;
    } else {
      throw new BootcfsError('EINTERNAL', 'image source resolved no manifest');
    }
    let indexDigest: string | undefined;
    for (let depth = 0; ; depth++) {
      const doc = parseManifestDocument(bytes, mediaType);
      if (doc.kind === 'manifest') {
        const result: ManifestResult = { bytes, digest, mediaType: doc.mediaType, manifest: doc.manifest };
        if (indexDigest !== undefined) result.indexDigest = indexDigest;
        return result;
      }
      if (depth >= MAX_INDEX_DEPTH) throw new BootcfsError('ELIMIT', `indexes nested deeper than ${MAX_INDEX_DEPTH}`);
      indexDigest ??= digest;
      const chosen = this.chooseFromIndex(doc.index, depth);
      bytes = await this.readDocument(chosen, MAX_MANIFEST_BYTES, 'manifest');
      digest = chosen.digest;
      mediaType = chosen.mediaType;
    }
  }

  /** Platform selection; subclasses may override (e.g. to honour a tag inside a nested index). */
  protected chooseFromIndex(index: OciIndex, _depth: number): OciDescriptor {
    return selectPlatformManifest(index, this.platform);
  }

  async close(): Promise<void> {}
}

export interface OpenLayerOptions {
  /** the layer's diff_id from the config: the decompressed stream is verified against it */
  diffId?: string;
}

/**
 * The decompressed tar stream of a layer: the compressed blob is verified against the descriptor and,
 * when `diffId` is given, the uncompressed bytes against the diff_id. Either mismatch throws.
 */
export function openLayer(source: ImageSource, descriptor: OciDescriptor, options: OpenLayerOptions = {}): AsyncIterable<Uint8Array> {
  const tar = decompressLayer(source.openBlob(descriptor), descriptor.mediaType, `layer ${descriptor.digest}`);
  if (options.diffId === undefined) return tar;
  parseDigest(options.diffId);
  return verifyStream(tar, { digest: options.diffId }, `uncompressed layer ${descriptor.digest} (diff_id)`);
}

/** Opens `oci:`, `oci-archive:`, `docker-archive:` or `docker://` references. */
export async function openImageSource(ref: string | ImageReference, options: OpenSourceOptions = {}): Promise<ImageSource> {
  const reference = typeof ref === 'string' ? parseImageReference(ref) : ref;
  switch (reference.transport) {
    case 'oci': {
      const { OciLayoutSource } = await import('./layout.js');
      return OciLayoutSource.open(reference.path, reference, options.platform);
    }
    case 'oci-archive': {
      const { openOciArchive } = await import('./archive.js');
      return openOciArchive(reference, options.platform);
    }
    case 'docker-archive': {
      const { openDockerArchive } = await import('./archive.js');
      return openDockerArchive(reference);
    }
    case 'docker': {
      const { RegistrySource } = await import('./registry.js');
      return new RegistrySource(reference, { ...options.registry, platform: options.platform ?? options.registry?.platform });
    }
  }
}

