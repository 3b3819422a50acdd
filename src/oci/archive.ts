/**
 * `oci-archive:FILE[:TAG]` (a tar of an OCI image layout) and `docker-archive:FILE[:NAME:TAG|@N]`
 * (`docker save` format: manifest.json + config JSON + layer tars).
 *
 * Archives are not extracted: one pass over the tar headers builds a member index (name → offset and
 * size within the file), and members are then read in place. The index reader here is deliberately
 * small — it understands ustar, PAX `path`/`size` records, GNU long names and symlinks between members
 * (docker uses them to share layers) — because it only locates members; it never interprets the
 * layer tars themselves (src/oci/tar.ts does that).
 *
 * docker-archive holds no manifest, so we present the image in the OCI view: an OCI manifest whose
 * config descriptor is the config file (digest = sha256 of its bytes, which `docker save` also uses as
 * the file name) and whose layers are the layer files with a media type from their magic bytes. For an
 * uncompressed layer the blob digest equals its diff_id; a compressed one is hashed once on open. The
 * manifest digest of a docker-archive is therefore the digest of this synthesised document — there is
 * no served manifest to be faithful to.
 */
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { BootcfsError, FormatError } from '../errors.js';
import { digestOf, readAll } from './digest.js';
import { OciLayoutSource, type LayoutFiles } from './layout.js';
import type { DockerArchiveReference, OciArchiveReference } from './reference.js';
import { BaseImageSource } from './source.js';
import { MAX_CONFIG_BYTES, MediaTypes, OciFormatError, parseImageConfig, type OciDescriptor, type OciManifest, type Platform } from './types.js';
import { createHash } from 'node:crypto';

export interface ArchiveMember {
  name: string;
  /** byte offset of the member's data in the archive */
  offset: number;
  size: number;
  /** link target, for link members: archive-relative for hardlinks, as written for symlinks */
  link?: string;
  hardlink?: boolean;
}

const BLOCK = 512;
/** Bounds the header walk so a hostile archive cannot make us index millions of members. */
const MAX_MEMBERS = 200_000;

function parseOctalOrBinary(field: Buffer, offset: number): number {
  if (field[0]! & 0x80) {
    // GNU base-256: big-endian two's complement; only non-negative values below 2^53 are meaningful.
    if (field[0] === 0xff) throw new FormatError('negative number in tar header', offset);
    let v = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) {
      v = v * 256 + field[i]!;
      if (!Number.isSafeInteger(v)) throw new FormatError('number too large in tar header', offset);
    }
    return v;
  }
  const s = field.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new FormatError(`invalid octal number '${s.replace(/[^\x20-\x7e]/g, '?')}' in tar header`, offset);
  const v = parseInt(s, 8);
  if (!Number.isSafeInteger(v)) throw new FormatError('number too large in tar header', offset);
  return v;
}

function cString(buf: Buffer): string {
  const nul = buf.indexOf(0);
  return buf.subarray(0, nul < 0 ? buf.length : nul).toString('utf8');
}

function parsePax(data: Buffer, offset: number): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) throw new FormatError('malformed PAX record', offset + pos);
    const len = Number(data.subarray(pos, space).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= space - pos || pos + len > data.length) {
      throw new FormatError('malformed PAX record length', offset + pos);
    }
    const record = data.subarray(space + 1, pos + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw new FormatError('PAX record without =', offset + pos);
    out.set(record.subarray(0, eq).toString('utf8'), record.subarray(eq + 1).toString('utf8'));
    pos += len;
  }
  return out;
}

function normalizeMemberName(name: string): string {
  let n = name.replace(/\/+$/, '');
  while (n.startsWith('./')) n = n.slice(2);
  n = n.replace(/^\/+/, '');
  return n;
}

/** Reads all member headers of a tar file. */
export async function indexTarArchive(file: FileHandle, fileSize: number): Promise<Map<string, ArchiveMember>> {
  const members = new Map<string, ArchiveMember>();
  const header = Buffer.alloc(BLOCK);
  let pos = 0;
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax = new Map<string, string>();
  let zeroBlocks = 0;
  for (let count = 0; ; count++) {
    if (count > MAX_MEMBERS * 4) throw new FormatError(`archive has more than ${MAX_MEMBERS} members`, pos);
    if (pos === fileSize) break; // a missing end-of-archive marker is tolerated, as GNU tar does
    if (pos + BLOCK > fileSize) throw new FormatError('truncated tar header', pos);
    const { bytesRead } = await file.read(header, 0, BLOCK, pos);
    if (bytesRead !== BLOCK) throw new FormatError('truncated tar header', pos);
    if (header.every((b) => b === 0)) {
      zeroBlocks++;
      pos += BLOCK;
      if (zeroBlocks === 2) break;
      continue;
    }
    zeroBlocks = 0;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
    const stored = parseOctalOrBinary(header.subarray(148, 156), pos + 148);
    if (stored !== sum) throw new FormatError('tar header checksum mismatch', pos);
    const type = String.fromCharCode(header[156]!);
    let size = parseOctalOrBinary(header.subarray(124, 136), pos + 124);
    if (pax.has('size')) {
      size = Number(pax.get('size'));
      if (!Number.isSafeInteger(size) || size < 0) throw new FormatError('invalid PAX size', pos);
    }
    const dataOffset = pos + BLOCK;
    if (dataOffset + size > fileSize) throw new FormatError(`tar member data runs past the end of the archive (${size} bytes)`, pos);
    const next = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
    if (type === 'x' || type === 'L' || type === 'K') {
      if (size > 1 << 20) throw new FormatError('tar extended header larger than 1 MiB', pos);
      const data = Buffer.alloc(size);
      await file.read(data, 0, size, dataOffset);
      if (type === 'x') pax = parsePax(data, dataOffset);
      else if (type === 'L') longName = cString(data);
      else longLink = cString(data);
      pos = next;
      continue;
    }
    if (type !== 'g') {
      const magic = header.subarray(257, 263).toString('latin1');
      const prefix = magic.startsWith('ustar') ? cString(header.subarray(345, 500)) : '';
      const baseName = cString(header.subarray(0, 100));
      const name = pax.get('path') ?? longName ?? (prefix ? `${prefix}/${baseName}` : baseName);
      const link = pax.get('linkpath') ?? longLink ?? cString(header.subarray(157, 257));
      const normalized = normalizeMemberName(name);
      if (type === '0' || type === '\0' || type === '7') {
        members.set(normalized, { name: normalized, offset: dataOffset, size });
      } else if (type === '1') {
        members.set(normalized, { name: normalized, offset: dataOffset, size: 0, link: normalizeMemberName(link), hardlink: true });
      } else if (type === '2') {
        members.set(normalized, { name: normalized, offset: dataOffset, size: 0, link });
      }
      if (members.size > MAX_MEMBERS) throw new FormatError(`archive has more than ${MAX_MEMBERS} members`, pos);
    }
    pax = new Map();
    longName = undefined;
    longLink = undefined;
    pos = next;
  }
  return members;
}

/** A tar archive opened for random access to its members. */
export class TarArchive implements LayoutFiles {
  private constructor(
    readonly file: string,
    private readonly handle: FileHandle,
    readonly members: Map<string, ArchiveMember>,
  ) {}

  static async open(file: string): Promise<TarArchive> {
    let handle: FileHandle;
    try {
      handle = await open(file, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new BootcfsError(code === 'ENOENT' ? 'ENOENT' : 'EIO', `cannot open archive ${file}: ${(e as Error).message}`);
    }
    try {
      const { size } = await handle.stat();
      const members = await indexTarArchive(handle, size);
      return new TarArchive(file, handle, members);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  /** Resolves a member through hard/symbolic links (bounded), or undefined. */
  resolve(relPath: string): ArchiveMember | undefined {
    let name = normalizeMemberName(relPath);
    for (let hops = 0; hops < 16; hops++) {
      const m = this.members.get(name);
      if (!m) return undefined;
      if (m.link === undefined) return m;
      // Hardlink targets are archive-relative; symlink targets relative to the link's directory
      // (absolute ones to the archive root). Nothing may resolve outside the archive.
      if (m.hardlink) name = m.link;
      else if (m.link.startsWith('/')) name = normalizeMemberName(path.posix.normalize(m.link));
      else name = normalizeMemberName(path.posix.normalize(path.posix.join(path.posix.dirname(name), m.link)));
      if (name === '..' || name.startsWith('../')) return undefined;
    }
    return undefined;
  }

  async readSmall(relPath: string, limit: number): Promise<Buffer | undefined> {
    const m = this.resolve(relPath);
    if (!m) return undefined;
    if (m.size > limit) throw new BootcfsError('ELIMIT', `${relPath} in ${this.file} is ${m.size} bytes, above the limit of ${limit}`);
    const buf = Buffer.alloc(m.size);
    const { bytesRead } = await this.handle.read(buf, 0, m.size, m.offset);
    if (bytesRead !== m.size) throw new FormatError(`short read of ${relPath}`, m.offset);
    return buf;
  }

  async *stream(relPath: string): AsyncIterable<Uint8Array> {
    const m = this.resolve(relPath);
    if (!m) throw new BootcfsError('ENOENT', `${relPath} missing from archive ${this.file}`);
    if (m.size === 0) return;
    yield* createReadStream(this.file, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

export async function openOciArchive(reference: OciArchiveReference, platform?: Platform): Promise<OciLayoutSource> {
  const archive = await TarArchive.open(reference.path);
  try {
    const source = new OciLayoutSource(archive, reference, platform, reference.path);
    await source.checkLayoutFile();
    return source;
  } catch (e) {
    await archive.close();
    throw e;
  }
}

interface DockerArchiveImage {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

function parseDockerManifestJson(bytes: Buffer): DockerArchiveImage[] {
  const what = 'docker-archive manifest.json';
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new OciFormatError(what, '', 'not valid JSON');
  }
  if (!Array.isArray(doc)) throw new OciFormatError(what, '', 'must be an array');
  return doc.map((entry: unknown, i) => {
    if (typeof entry !== 'object' || entry === null) throw new OciFormatError(what, `[${i}]`, 'must be an object');
    const e = entry as Record<string, unknown>;
    if (typeof e.Config !== 'string') throw new OciFormatError(what, `[${i}].Config`, 'must be a string');
    const tags = e.RepoTags ?? [];
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) throw new OciFormatError(what, `[${i}].RepoTags`, 'must be an array of strings');
    if (!Array.isArray(e.Layers) || !e.Layers.every((t) => typeof t === 'string')) throw new OciFormatError(what, `[${i}].Layers`, 'must be an array of strings');
    return { Config: e.Config, RepoTags: tags as string[], Layers: e.Layers as string[] };
  });
}

function sniffCompression(head: Buffer): string {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return MediaTypes.ociLayerGzip;
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return MediaTypes.ociLayerZstd;
  return MediaTypes.ociLayerTar;
}

export class DockerArchiveSource extends BaseImageSource {
  private readonly blobs = new Map<string, string>();
  private manifestBytes: Buffer | undefined;

  private constructor(
    private readonly archive: TarArchive,
    reference: DockerArchiveReference,
    private readonly image: DockerArchiveImage,
  ) {
    super(reference);
  }

  static async open(reference: DockerArchiveReference): Promise<DockerArchiveSource> {
    const archive = await TarArchive.open(reference.path);
    try {
      const mj = await archive.readSmall('manifest.json', 16 << 20);
      if (mj === undefined) throw new BootcfsError('EFORMAT', `${reference.path} is not a docker-archive (no manifest.json)`);
      const images = parseDockerManifestJson(mj);
      let image: DockerArchiveImage | undefined;
      if (reference.index !== undefined) {
        image = images[reference.index];
        if (!image) throw new BootcfsError('ENOENT', `${reference.path} has ${images.length} images, no @${reference.index}`);
      } else if (reference.name !== undefined) {
        const want = reference.name;
        const full = want.includes('/') ? want : `docker.io/library/${want}`;
        image = images.find((im) => im.RepoTags.some((t) => t === want || t === full || `docker.io/library/${t}` === full || `docker.io/${t}` === full));
        if (!image) throw new BootcfsError('ENOENT', `no image tagged '${want}' in ${reference.path}`);
      } else {
        if (images.length !== 1) throw new BootcfsError('EINVAL', `${reference.path} holds ${images.length} images: name one with :NAME:TAG or :@N`);
        image = images[0]!;
      }
      return new DockerArchiveSource(archive, reference, image);
    } catch (e) {
      await archive.close();
      throw e;
    }
  }

  protected override rawBlob(descriptor: OciDescriptor): AsyncIterable<Uint8Array> {
    const member = this.blobs.get(descriptor.digest);
    if (member === undefined) throw new BootcfsError('ENOENT', `blob ${descriptor.digest} is not part of this docker-archive image`);
    return this.archive.stream(member);
  }

  protected override async rootDescriptor(): Promise<{ descriptor: OciDescriptor; bytes: Buffer; mediaType: string }> {
    if (this.manifestBytes === undefined) {
      const configBytes = await this.archive.readSmall(this.image.Config, MAX_CONFIG_BYTES);
      if (configBytes === undefined) throw new BootcfsError('EFORMAT', `config ${this.image.Config} missing from ${this.archive.file}`);
      const config = parseImageConfig(configBytes);
      const diffIds = config.rootfs.diff_ids;
      if (diffIds.length !== this.image.Layers.length) {
        throw new OciFormatError('docker-archive', 'Layers', `${this.image.Layers.length} layers but the config lists ${diffIds.length} diff_ids`);
      }
      const configDigest = digestOf(configBytes);
      this.blobs.set(configDigest, this.image.Config);
      const layers: OciDescriptor[] = [];
      for (let i = 0; i < this.image.Layers.length; i++) {
        const name = this.image.Layers[i]!;
        const member = this.archive.resolve(name);
        if (!member) throw new BootcfsError('EFORMAT', `layer ${name} missing from ${this.archive.file}`);
        const first = await readAll(takeFirst(this.archive.stream(name), 4), 4, 'layer head');
        const mediaType = sniffCompression(first);
        let digest: string;
        if (mediaType === MediaTypes.ociLayerTar) {
          digest = diffIds[i]!;
        } else {
          const h = createHash('sha256');
          for await (const chunk of this.archive.stream(name)) h.update(chunk);
          digest = `sha256:${h.digest('hex')}`;
        }
        this.blobs.set(digest, name);
        layers.push({ mediaType, digest, size: member.size });
      }
      const manifest: OciManifest = {
        schemaVersion: 2,
        mediaType: MediaTypes.ociManifest,
        config: { mediaType: MediaTypes.ociConfig, digest: configDigest, size: configBytes.length },
        layers,
      };
      this.manifestBytes = Buffer.from(JSON.stringify(manifest));
    }
    return {
      descriptor: { mediaType: MediaTypes.ociManifest, digest: digestOf(this.manifestBytes), size: this.manifestBytes.length },
      bytes: this.manifestBytes,
      mediaType: MediaTypes.ociManifest,
    };
  }

  override async close(): Promise<void> {
    await this.archive.close();
  }
}

async function* takeFirst(source: AsyncIterable<Uint8Array>, n: number): AsyncIterable<Uint8Array> {
  let left = n;
  for await (const chunk of source) {
    if (left <= 0) return;
    const part = chunk.subarray(0, left);
    left -= part.length;
    yield part;
    if (left <= 0) return;
  }
}

export function openDockerArchive(reference: DockerArchiveReference): Promise<DockerArchiveSource> {
  return DockerArchiveSource.open(reference);
}
