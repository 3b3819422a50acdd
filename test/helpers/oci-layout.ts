/**
 * Test helpers for OCI images:
 *
 * - `buildTar(entries, { format })` — a small tar WRITER for hand-built layers (ustar, GNU or PAX),
 *   including whiteouts, hardlinks to paths of other layers, devices, binary xattrs (`SCHILY.xattr.*`),
 *   nanosecond mtimes, long names, base-256 numbers. It writes what the test asks, not what is sensible
 *   (e.g. `..` paths), so hostile archives can be made too.
 * - `writeOciLayout(dir, { layers, tag })` — an OCI image layout directory (`oci-layout`, `index.json`,
 *   `blobs/sha256/*`, manifest, config with `rootfs.diff_ids`) from uncompressed layer tars, each
 *   optionally gzip- or zstd-compressed. Several images may be written into one layout (distinct tags);
 *   index.json then lists them all.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { zstdCompress } from '../../src/util/zstd.js';

export type TarFormat = 'pax' | 'gnu' | 'ustar';

export interface TarWriteEntry {
  /** Raw path bytes (latin1 string or Buffer), written as given. */
  path: string | Buffer;
  type: 'reg' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'blk' | 'fifo' | 'contiguous' | 'areg';
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  mtimeNsec?: number;
  content?: Buffer;
  linkTarget?: string | Buffer;
  devMajor?: number;
  devMinor?: number;
  /** name (latin1) → binary value, written as SCHILY.xattr.* PAX records (PAX format only). */
  xattrs?: Map<string, Buffer> | Record<string, Buffer>;
  /** Extra PAX records for this entry (PAX format only). */
  pax?: Record<string, Buffer | string>;
  uname?: string;
  gname?: string;
}

const TYPEFLAG: Record<TarWriteEntry['type'], string> = {
  reg: '0', areg: '\0', contiguous: '7', hardlink: '1', symlink: '2', chr: '3', blk: '4', dir: '5', fifo: '6',
};

const latin1 = (s: string | Buffer): Buffer => (typeof s === 'string' ? Buffer.from(s, 'latin1') : s);

function octalFits(v: number, width: number): boolean {
  return v >= 0 && Number.isInteger(v) && v < 8 ** (width - 1);
}

/** Writes v into field [off, off+width) as octal (NUL-terminated) or GNU base-256. */
function writeNumber(h: Buffer, off: number, width: number, v: number, allowBase256: boolean): boolean {
  if (octalFits(v, width)) {
    h.write(v.toString(8).padStart(width - 1, '0') + '\0', off, 'latin1');
    return true;
  }
  if (!allowBase256) {
    h.write('0'.repeat(width - 1) + '\0', off, 'latin1');
    return false;
  }
  let x = BigInt(v);
  if (x < 0n) x += 1n << BigInt(8 * width);
  for (let i = width - 1; i >= 0; i--) {
    h[off + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  h[off] = v < 0 ? 0xff : 0x80;
  return true;
}

function checksum(h: Buffer): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
}

function header(name: Buffer, flag: string, size: number, e: Partial<TarWriteEntry>, format: TarFormat, link: Buffer = Buffer.alloc(0), prefix: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(512);
  name.copy(h, 0, 0, Math.min(100, name.length));
  const b256 = format === 'gnu';
  writeNumber(h, 100, 8, e.mode ?? 0o644, b256);
  writeNumber(h, 108, 8, e.uid ?? 0, b256);
  writeNumber(h, 116, 8, e.gid ?? 0, b256);
  writeNumber(h, 124, 12, size, b256);
  writeNumber(h, 136, 12, e.mtimeSec ?? 0, b256);
  h.write(flag, 156, 'latin1');
  link.copy(h, 157, 0, Math.min(100, link.length));
  if (format === 'gnu') h.write('ustar  \0', 257, 'latin1');
  else h.write('ustar\x0000', 257, 'latin1');
  h.write((e.uname ?? '').slice(0, 31), 265, 'latin1');
  h.write((e.gname ?? '').slice(0, 31), 297, 'latin1');
  if (e.devMajor !== undefined || e.devMinor !== undefined) {
    writeNumber(h, 329, 8, e.devMajor ?? 0, b256);
    writeNumber(h, 337, 8, e.devMinor ?? 0, b256);
  }
  if (format !== 'gnu') prefix.copy(h, 345, 0, Math.min(155, prefix.length));
  checksum(h);
  return h;
}

function pad(data: Buffer): Buffer[] {
  const r = data.length % 512;
  return r === 0 ? [data] : [data, Buffer.alloc(512 - r)];
}

/** One PAX record `LEN key=value\n` with the self-referential length. */
export function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'latin1'), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), 'latin1'), body]);
}

/** Splits a path into ustar prefix/name when it is longer than 100 bytes (undefined when impossible). */
function ustarSplit(p: Buffer): [Buffer, Buffer] | undefined {
  if (p.length <= 100) return [Buffer.alloc(0), p];
  for (let i = Math.min(p.length - 1, 155); i > 0; i--) {
    if (p[i] === 0x2f && p.length - i - 1 <= 100 && p.length - i - 1 > 0) return [p.subarray(0, i), p.subarray(i + 1)];
  }
  return undefined;
}

/** Serialises `entries` as one tar archive (two zero blocks at the end, no record padding). */
export function buildTar(entries: TarWriteEntry[], opts: { format?: TarFormat; globalPax?: Record<string, Buffer | string> } = {}): Buffer {
  const format = opts.format ?? 'pax';
  const out: Buffer[] = [];
  if (opts.globalPax) {
    const data = Buffer.concat(Object.entries(opts.globalPax).map(([k, v]) => paxRecord(k, latin1(v))));
    out.push(header(Buffer.from('pax_global_header'), 'g', data.length, {}, format), ...pad(data));
  }
  for (const e of entries) {
    const p = latin1(e.path);
    const link = latin1(e.linkTarget ?? '');
    const content = e.content ?? Buffer.alloc(0);
    const size = content.length;
    let name: Buffer = p;
    let prefix: Buffer = Buffer.alloc(0);
    if (format === 'pax') {
      const recs: Buffer[] = [];
      const split = ustarSplit(p);
      if (split) [prefix, name] = split;
      else recs.push(paxRecord('path', p));
      if (link.length > 100) recs.push(paxRecord('linkpath', link));
      if (!octalFits(e.uid ?? 0, 8)) recs.push(paxRecord('uid', Buffer.from(String(e.uid))));
      if (!octalFits(e.gid ?? 0, 8)) recs.push(paxRecord('gid', Buffer.from(String(e.gid))));
      if (!octalFits(size, 12)) recs.push(paxRecord('size', Buffer.from(String(size))));
      const sec = e.mtimeSec ?? 0;
      const nsec = e.mtimeNsec ?? 0;
      if (nsec !== 0 || !octalFits(sec, 12)) {
        // [-]S.NNNNNNNNN with sec floored (nsec ≥ 0): -1.5 s is sec -2, nsec 5e8.
        let s: string;
        if (sec < 0 && nsec > 0) s = `-${-(sec + 1)}.${String(1e9 - nsec).padStart(9, '0')}`;
        else s = `${sec}.${String(nsec).padStart(9, '0')}`;
        recs.push(paxRecord('mtime', Buffer.from(s)));
      }
      const xattrs = e.xattrs instanceof Map ? [...e.xattrs] : Object.entries(e.xattrs ?? {});
      for (const [k, v] of xattrs) recs.push(paxRecord(`SCHILY.xattr.${k}`, v));
      for (const [k, v] of Object.entries(e.pax ?? {})) recs.push(paxRecord(k, latin1(v)));
      if (recs.length > 0) {
        const data = Buffer.concat(recs);
        const xname = Buffer.concat([Buffer.from('PaxHeaders/'), p.subarray(Math.max(0, p.length - 80))]);
        out.push(header(xname, 'x', data.length, {}, format), ...pad(data));
      }
    } else if (format === 'gnu') {
      if (p.length > 100) {
        const data = Buffer.concat([p, Buffer.from([0])]);
        out.push(header(Buffer.from('././@LongLink'), 'L', data.length, {}, format), ...pad(data));
      }
      if (link.length > 100) {
        const data = Buffer.concat([link, Buffer.from([0])]);
        out.push(header(Buffer.from('././@LongLink'), 'K', data.length, {}, format), ...pad(data));
      }
    } else {
      const split = ustarSplit(p);
      if (!split) throw new Error(`path too long for ustar: ${p.toString('latin1')}`);
      [prefix, name] = split;
    }
    const devs = e.type === 'chr' || e.type === 'blk' ? e : { ...e, devMajor: undefined, devMinor: undefined };
    out.push(header(name, TYPEFLAG[e.type], size, devs, format, link, prefix));
    if (size > 0) out.push(...pad(content));
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}

// ---------------------------------------------------------------------------------------------
// OCI image layout

export type LayerCompressionKind = 'none' | 'gzip' | 'zstd';

export interface LayoutLayer {
  /** The uncompressed layer tar. */
  tar: Buffer;
  compression?: LayerCompressionKind;
}

export interface WriteLayoutOptions {
  layers: LayoutLayer[];
  /** `org.opencontainers.image.ref.name` of the index entry (default 'latest'). */
  tag?: string;
  architecture?: string;
  os?: string;
  /** Extra config fields (merged into the config JSON). */
  config?: Record<string, unknown>;
}

export interface WrittenImage {
  dir: string;
  tag: string;
  manifestDigest: string;
  manifestSize: number;
  configDigest: string;
  layerDigests: string[];
  diffIds: string[];
  mediaTypes: string[];
}

const MEDIA: Record<LayerCompressionKind, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

export function sha256Digest(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function writeBlob(dir: string, data: Buffer): string {
  const digest = sha256Digest(data);
  const p = path.join(dir, 'blobs', 'sha256', digest.slice(7));
  fs.mkdirSync(path.dirname(p), { recursive: true });
  if (!fs.existsSync(p)) fs.writeFileSync(p, data);
  return digest;
}

export function compressLayer(tar: Buffer, compression: LayerCompressionKind): Buffer {
  switch (compression) {
    case 'none': return tar;
    case 'gzip': return gzipSync(tar);
    case 'zstd': return zstdCompress(tar);
  }
}

/** Writes (or adds to) an OCI image layout at `dir`; returns the digests of what it wrote. */
export function writeOciLayout(dir: string, opts: WriteLayoutOptions): WrittenImage {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const tag = opts.tag ?? 'latest';
  const layerDescs: Array<{ mediaType: string; digest: string; size: number }> = [];
  const diffIds: string[] = [];
  for (const l of opts.layers) {
    const compression = l.compression ?? 'none';
    const blob = compressLayer(l.tar, compression);
    layerDescs.push({ mediaType: MEDIA[compression], digest: writeBlob(dir, blob), size: blob.length });
    diffIds.push(sha256Digest(l.tar));
  }
  const config = Buffer.from(JSON.stringify({
    architecture: opts.architecture ?? 'amd64',
    os: opts.os ?? 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: opts.layers.map(() => ({ created_by: 'bootcfs test' })),
    ...opts.config,
  }));
  const configDigest = writeBlob(dir, config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: layerDescs,
  }));
  const manifestDigest = writeBlob(dir, manifest);

  const indexPath = path.join(dir, 'index.json');
  const index = fs.existsSync(indexPath)
    ? (JSON.parse(fs.readFileSync(indexPath, 'utf8')) as { manifests: Array<Record<string, unknown>> })
    : { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] };
  index.manifests = index.manifests.filter(
    (m) => (m.annotations as Record<string, string> | undefined)?.['org.opencontainers.image.ref.name'] !== tag,
  );
  index.manifests.push({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    digest: manifestDigest,
    size: manifest.length,
    annotations: { 'org.opencontainers.image.ref.name': tag },
  });
  fs.writeFileSync(indexPath, JSON.stringify(index));
  return {
    dir,
    tag,
    manifestDigest,
    manifestSize: manifest.length,
    configDigest,
    layerDigests: layerDescs.map((d) => d.digest),
    diffIds,
    mediaTypes: layerDescs.map((d) => d.mediaType),
  };
}

/**
 * Writes `<destDir>:<destTag>` = image `<srcDir>:<srcTag>` plus one more (uncompressed) layer `tar`:
 * the source's layer blobs are hard-linked (copied across filesystems), its config gets the layer's
 * diff_id, a history entry and the extra `labels`. For "the registry got a new version" in the day-2 tests.
 */
export function deriveImage(srcDir: string, srcTag: string, destDir: string, destTag: string, tar: Buffer, labels: Record<string, string> = {}): WrittenImage {
  const blob = (dir: string, digest: string): string => path.join(dir, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
  const index = JSON.parse(fs.readFileSync(path.join(srcDir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === srcTag);
  if (!entry) throw new Error(`${srcDir} has no tag ${srcTag}`);
  const manifest = JSON.parse(fs.readFileSync(blob(srcDir, entry.digest), 'utf8')) as { config: { digest: string }; layers: Array<{ mediaType: string; digest: string; size: number }> } & Record<string, unknown>;
  const config = JSON.parse(fs.readFileSync(blob(srcDir, manifest.config.digest), 'utf8')) as {
    config?: { Labels?: Record<string, string> } & Record<string, unknown>; rootfs: { diff_ids: string[] }; history?: unknown[];
  } & Record<string, unknown>;
  fs.mkdirSync(path.join(destDir, 'blobs', 'sha256'), { recursive: true });
  fs.writeFileSync(path.join(destDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  for (const l of manifest.layers) {
    const to = blob(destDir, l.digest);
    if (fs.existsSync(to)) continue;
    try {
      fs.linkSync(blob(srcDir, l.digest), to);
    } catch {
      fs.copyFileSync(blob(srcDir, l.digest), to);
    }
  }
  const layerDigest = writeBlob(destDir, tar);
  config.rootfs.diff_ids = [...config.rootfs.diff_ids, layerDigest];
  config.history = [...(config.history ?? []), { created_by: 'bootcfs test: derived image layer' }];
  config.config = { ...(config.config ?? {}), Labels: { ...(config.config?.Labels ?? {}), ...labels } };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = writeBlob(destDir, configBytes);
  const layers = [...manifest.layers, { mediaType: MEDIA.none, digest: layerDigest, size: tar.length }];
  const manifestBytes = Buffer.from(JSON.stringify({ ...manifest, config: { ...manifest.config, digest: configDigest, size: configBytes.length }, layers }));
  const manifestDigest = writeBlob(destDir, manifestBytes);
  const indexPath = path.join(destDir, 'index.json');
  const destIndex = fs.existsSync(indexPath)
    ? (JSON.parse(fs.readFileSync(indexPath, 'utf8')) as { manifests: Array<Record<string, unknown>> })
    : { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] };
  destIndex.manifests = destIndex.manifests.filter((m) => (m.annotations as Record<string, string> | undefined)?.['org.opencontainers.image.ref.name'] !== destTag);
  destIndex.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifestBytes.length, annotations: { 'org.opencontainers.image.ref.name': destTag } });
  fs.writeFileSync(indexPath, JSON.stringify(destIndex));
  return {
    dir: destDir, tag: destTag, manifestDigest, manifestSize: manifestBytes.length, configDigest,
    layerDigests: layers.map((l) => l.digest), diffIds: config.rootfs.diff_ids, mediaTypes: layers.map((l) => l.mediaType),
  };
}
