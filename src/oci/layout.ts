/**
 * `oci:DIR[:TAG]` — the OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).
 *
 * The tag is matched against `org.opencontainers.image.ref.name` of the top-level index.json entries
 * (as containers/image does); without a tag the layout must contain exactly one entry. An entry that
 * is itself an index is resolved by platform (nested indexes up to MAX_INDEX_DEPTH). Blobs are read
 * by digest and verified while streaming. The same code serves `oci-archive:` through a file accessor
 * that reads members of the tar archive instead of files in a directory.
 */
import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { BootcfsError } from '../errors.js';
import { parseDigest } from './digest.js';
import type { OciLayoutReference, OciArchiveReference } from './reference.js';
import { BaseImageSource } from './source.js';
import { MAX_MANIFEST_BYTES, OciFormatError, parseManifestDocument, type OciDescriptor, type Platform } from './types.js';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

/** Read access to the files of a layout, by path relative to its root. */
export interface LayoutFiles {
  /** whole small file, or undefined when it does not exist; throws ELIMIT above `limit` */
  readSmall(relPath: string, limit: number): Promise<Buffer | undefined>;
  /** streaming read of a (possibly large) file; throws ENOENT when missing */
  stream(relPath: string): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}

export class DirectoryLayoutFiles implements LayoutFiles {
  constructor(readonly root: string) {}

  async readSmall(relPath: string, limit: number): Promise<Buffer | undefined> {
    const p = path.join(this.root, relPath);
    let size: number;
    try {
      size = (await stat(p)).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new BootcfsError('EIO', `cannot read ${p}: ${(e as Error).message}`);
    }
    if (size > limit) throw new BootcfsError('ELIMIT', `${p} is ${size} bytes, above the limit of ${limit}`);
    return readFile(p);
  }

  async *stream(relPath: string): AsyncIterable<Uint8Array> {
    const p = path.join(this.root, relPath);
    let handle;
    try {
      handle = await open(p, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new BootcfsError('ENOENT', `blob missing from OCI layout: ${p}`);
      throw new BootcfsError('EIO', `cannot open ${p}: ${(e as Error).message}`);
    }
    try {
      yield* createReadStream(p, { fd: handle.fd, autoClose: false, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
    } finally {
      await handle.close();
    }
  }

  async close(): Promise<void> {}
}

export function blobPath(digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return `blobs/${algorithm}/${hex}`;
}

export class OciLayoutSource extends BaseImageSource {
  private readonly files: LayoutFiles;
  private readonly tag: string | undefined;
  private readonly where: string;

  constructor(files: LayoutFiles, reference: OciLayoutReference | OciArchiveReference, platform: Platform | undefined, where: string) {
    super(reference, platform);
    this.files = files;
    this.tag = reference.tag;
    this.where = where;
  }

  static async open(dir: string, reference: OciLayoutReference, platform?: Platform): Promise<OciLayoutSource> {
    const s = await stat(dir).catch(() => undefined);
    if (!s?.isDirectory()) throw new BootcfsError('ENOENT', `OCI layout directory not found: ${dir}`);
    const source = new OciLayoutSource(new DirectoryLayoutFiles(dir), reference, platform, dir);
    await source.checkLayoutFile();
    return source;
  }

  /** Validates the `oci-layout` marker file. */
  async checkLayoutFile(): Promise<void> {
    const marker = await this.files.readSmall('oci-layout', 64 * 1024);
    if (marker === undefined) throw new BootcfsError('EFORMAT', `${this.where} is not an OCI image layout (no oci-layout file)`);
    let doc: unknown;
    try {
      doc = JSON.parse(marker.toString('utf8'));
    } catch {
      throw new OciFormatError('oci-layout file', '', 'not valid JSON');
    }
    const version = (doc as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
    if (typeof version !== 'string') throw new OciFormatError('oci-layout file', 'imageLayoutVersion', 'missing or not a string');
    if (!/^1\.[0-9]+\.[0-9]+$/.test(version)) {
      throw new OciFormatError('oci-layout file', 'imageLayoutVersion', `unsupported version '${version}'`);
    }
  }

  protected override rawBlob(descriptor: OciDescriptor): AsyncIterable<Uint8Array> {
    return this.files.stream(blobPath(descriptor.digest));
  }

  protected override async rootDescriptor(): Promise<{ descriptor: OciDescriptor }> {
    const bytes = await this.files.readSmall('index.json', MAX_MANIFEST_BYTES);
    if (bytes === undefined) throw new BootcfsError('EFORMAT', `${this.where}: index.json missing`);
    const doc = parseManifestDocument(bytes, 'application/vnd.oci.image.index.v1+json');
    if (doc.kind !== 'index') throw new OciFormatError('index.json', '', 'is not an image index');
    const entries = doc.index.manifests;
    if (this.tag !== undefined) {
      const matches = entries.filter((m) => m.annotations?.[REF_NAME_ANNOTATION] === this.tag);
      if (matches.length === 0) throw new BootcfsError('ENOENT', `no image tagged '${this.tag}' in ${this.where}`);
      if (matches.length > 1) {
        throw new BootcfsError('EFORMAT', `tag '${this.tag}' names ${matches.length} entries in ${this.where}`);
      }
      return { descriptor: matches[0]! };
    }
    if (entries.length !== 1) {
      throw new BootcfsError('EINVAL', `${this.where} holds ${entries.length} images: name one with :TAG`);
    }
    return { descriptor: entries[0]! };
  }

  override async close(): Promise<void> {
    await this.files.close();
  }
}
