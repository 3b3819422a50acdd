/**
 * OCI and Docker v2 manifest, index and image-config types, with validation of untrusted JSON.
 *
 * Parsing never re-serialises: callers keep the exact bytes they received (the manifest digest is the
 * digest of those bytes) and get a validated, typed view next to them. Anything of the wrong type, a
 * missing required field, a malformed digest or a size that is not a safe non-negative integer is an
 * `OciFormatError` naming the JSON path of the fault.
 */
import { BootcfsError } from '../errors.js';
import { parseDigest } from './digest.js';

export class OciFormatError extends BootcfsError {
  /** JSON path of the offending value, e.g. `layers[2].size` */
  readonly path: string;
  constructor(what: string, path: string, why: string) {
    super('EFORMAT', `invalid ${what}: ${path ? `${path}: ` : ''}${why}`);
    this.name = 'OciFormatError';
    this.path = path;
  }
}

export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayerNondistTar: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  ociLayerNondistGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  ociLayerNondistZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** Accept header for manifest requests: every manifest and index type we can read. */
export const MANIFEST_ACCEPT = [
  MediaTypes.ociManifest,
  MediaTypes.ociIndex,
  MediaTypes.dockerManifest,
  MediaTypes.dockerManifestList,
].join(', ');

/** Largest manifest/index/config document accepted (containers/image uses 4 MiB for manifests). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface OciDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface OciManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: OciDescriptor;
  layers: OciDescriptor[];
  subject?: OciDescriptor;
  annotations?: Record<string, string>;
}

export interface OciIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: OciDescriptor[];
  annotations?: Record<string, string>;
}

export interface OciImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  created?: string;
  config?: Record<string, unknown>;
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: unknown[];
  /** every other field, as served */
  [key: string]: unknown;
}

export type ParsedManifestDocument =
  | { kind: 'manifest'; mediaType: string; manifest: OciManifest }
  | { kind: 'index'; mediaType: string; index: OciIndex };

type Json = unknown;

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJson(bytes: Uint8Array, what: string, limit: number): Json {
  if (bytes.length > limit) throw new OciFormatError(what, '', `document of ${bytes.length} bytes exceeds the limit of ${limit}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new OciFormatError(what, '', 'not valid UTF-8');
  }
  try {
    return JSON.parse(text) as Json;
  } catch (e) {
    throw new OciFormatError(what, '', `not valid JSON (${(e as Error).message})`);
  }
}

function optString(obj: Record<string, Json>, key: string, what: string, path: string): string | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new OciFormatError(what, `${path}${key}`, 'must be a string');
  return v;
}

function reqString(obj: Record<string, Json>, key: string, what: string, path: string): string {
  const v = optString(obj, key, what, path);
  if (v === undefined) throw new OciFormatError(what, `${path}${key}`, 'missing');
  return v;
}

function stringMap(v: Json, what: string, path: string): Record<string, string> {
  if (!isObject(v)) throw new OciFormatError(what, path, 'must be an object');
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw new OciFormatError(what, `${path}.${k}`, 'must be a string');
    out[k] = val;
  }
  return out;
}

function parsePlatform(v: Json, what: string, path: string): Platform {
  if (!isObject(v)) throw new OciFormatError(what, path, 'must be an object');
  const p: Platform = {
    architecture: reqString(v, 'architecture', what, `${path}.`),
    os: reqString(v, 'os', what, `${path}.`),
  };
  const variant = optString(v, 'variant', what, `${path}.`);
  if (variant !== undefined) p.variant = variant;
  const osVersion = optString(v, 'os.version', what, `${path}.`);
  if (osVersion !== undefined) p['os.version'] = osVersion;
  if (v['os.features'] !== undefined) {
    const f = v['os.features'];
    if (!Array.isArray(f) || !f.every((x) => typeof x === 'string')) {
      throw new OciFormatError(what, `${path}.os.features`, 'must be an array of strings');
    }
    p['os.features'] = f as string[];
  }
  return p;
}

/** Validates one descriptor (digest syntax, size range, optional fields' types). */
export function parseDescriptor(v: Json, what: string, path: string): OciDescriptor {
  if (!isObject(v)) throw new OciFormatError(what, path, 'descriptor must be an object');
  const mediaType = reqString(v, 'mediaType', what, `${path}.`);
  const digest = reqString(v, 'digest', what, `${path}.`);
  try {
    parseDigest(digest);
  } catch (e) {
    throw new OciFormatError(what, `${path}.digest`, (e as Error).message);
  }
  const size = v.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new OciFormatError(what, `${path}.size`, 'must be a non-negative integer below 2^53');
  }
  const d: OciDescriptor = { mediaType, digest, size };
  if (v.urls !== undefined) {
    if (!Array.isArray(v.urls) || !v.urls.every((u) => typeof u === 'string')) {
      throw new OciFormatError(what, `${path}.urls`, 'must be an array of strings');
    }
    d.urls = v.urls as string[];
  }
  if (v.annotations !== undefined) d.annotations = stringMap(v.annotations, what, `${path}.annotations`);
  if (v.platform !== undefined) d.platform = parsePlatform(v.platform, what, `${path}.platform`);
  const artifactType = optString(v, 'artifactType', what, `${path}.`);
  if (artifactType !== undefined) d.artifactType = artifactType;
  return d;
}

function checkSchemaVersion(obj: Record<string, Json>, what: string): void {
  if (obj.schemaVersion === 1) {
    throw new OciFormatError(what, 'schemaVersion', 'Docker schema 1 manifests are not supported');
  }
  if (obj.schemaVersion !== 2) throw new OciFormatError(what, 'schemaVersion', 'must be 2');
}

/**
 * Parses a manifest or index. `contentType` (the registry's Content-Type or the referencing
 * descriptor's mediaType) decides the kind when the document has no `mediaType` of its own; when both
 * exist they must agree, so a registry cannot make us read an index as a manifest or vice versa.
 */
export function parseManifestDocument(bytes: Uint8Array, contentType?: string): ParsedManifestDocument {
  const what = 'manifest';
  const doc = parseJson(bytes, what, MAX_MANIFEST_BYTES);
  if (!isObject(doc)) throw new OciFormatError(what, '', 'must be a JSON object');
  const declared = optString(doc, 'mediaType', what, '');
  const hint = contentType?.split(';')[0]!.trim();
  if (hint === MediaTypes.dockerSchema1 || hint === MediaTypes.dockerSchema1Signed) {
    throw new OciFormatError(what, '', 'Docker schema 1 manifests are not supported');
  }
  checkSchemaVersion(doc, what);
  const known = new Set<string>([MediaTypes.ociManifest, MediaTypes.ociIndex, MediaTypes.dockerManifest, MediaTypes.dockerManifestList]);
  if (declared !== undefined && hint !== undefined && known.has(hint) && known.has(declared) && declared !== hint) {
    throw new OciFormatError(what, 'mediaType', `document says '${declared}' but was served as '${hint}'`);
  }
  let mediaType = declared ?? (hint !== undefined && known.has(hint) ? hint : undefined);
  if (mediaType === undefined) {
    // OCI documents may omit mediaType; the structure then decides.
    if (Array.isArray(doc.manifests) && doc.layers === undefined) mediaType = MediaTypes.ociIndex;
    else if (doc.config !== undefined) mediaType = MediaTypes.ociManifest;
    else throw new OciFormatError(what, 'mediaType', 'missing, and the document is neither a manifest nor an index');
  }
  if (mediaType === MediaTypes.ociIndex || mediaType === MediaTypes.dockerManifestList) {
    if (!Array.isArray(doc.manifests)) throw new OciFormatError(what, 'manifests', 'must be an array');
    const index: OciIndex = {
      schemaVersion: 2,
      manifests: doc.manifests.map((m, i) => parseDescriptor(m, what, `manifests[${i}]`)),
    };
    if (declared !== undefined) index.mediaType = declared;
    if (doc.annotations !== undefined) index.annotations = stringMap(doc.annotations, what, 'annotations');
    return { kind: 'index', mediaType, index };
  }
  if (mediaType === MediaTypes.ociManifest || mediaType === MediaTypes.dockerManifest) {
    if (doc.config === undefined) throw new OciFormatError(what, 'config', 'missing');
    if (!Array.isArray(doc.layers)) throw new OciFormatError(what, 'layers', 'must be an array');
    const manifest: OciManifest = {
      schemaVersion: 2,
      config: parseDescriptor(doc.config, what, 'config'),
      layers: doc.layers.map((l, i) => parseDescriptor(l, what, `layers[${i}]`)),
    };
    if (declared !== undefined) manifest.mediaType = declared;
    const artifactType = optString(doc, 'artifactType', what, '');
    if (artifactType !== undefined) manifest.artifactType = artifactType;
    if (doc.subject !== undefined) manifest.subject = parseDescriptor(doc.subject, what, 'subject');
    if (doc.annotations !== undefined) manifest.annotations = stringMap(doc.annotations, what, 'annotations');
    return { kind: 'manifest', mediaType, manifest };
  }
  throw new OciFormatError(what, 'mediaType', `unsupported media type '${mediaType}'`);
}

/** Parses an image configuration; requires `rootfs.type == "layers"` and valid diff_ids. */
export function parseImageConfig(bytes: Uint8Array): OciImageConfig {
  const what = 'image config';
  const doc = parseJson(bytes, what, MAX_CONFIG_BYTES);
  if (!isObject(doc)) throw new OciFormatError(what, '', 'must be a JSON object');
  for (const key of ['architecture', 'os', 'variant', 'created']) optString(doc, key, what, '');
  if (doc.config !== undefined && doc.config !== null && !isObject(doc.config)) {
    throw new OciFormatError(what, 'config', 'must be an object');
  }
  if (doc.history !== undefined && !Array.isArray(doc.history)) throw new OciFormatError(what, 'history', 'must be an array');
  const rootfs = doc.rootfs;
  if (!isObject(rootfs)) throw new OciFormatError(what, 'rootfs', 'missing or not an object');
  if (rootfs.type !== 'layers') throw new OciFormatError(what, 'rootfs.type', "must be 'layers'");
  if (!Array.isArray(rootfs.diff_ids)) throw new OciFormatError(what, 'rootfs.diff_ids', 'must be an array');
  rootfs.diff_ids.forEach((d, i) => {
    try {
      parseDigest(d);
    } catch (e) {
      throw new OciFormatError(what, `rootfs.diff_ids[${i}]`, (e as Error).message);
    }
  });
  return doc as OciImageConfig;
}

export type LayerCompression = 'none' | 'gzip' | 'zstd';

/** Compression of a layer by media type; throws for media types that are not tar layers. */
export function layerCompression(mediaType: string): LayerCompression {
  switch (mediaType) {
    case MediaTypes.ociLayerTar:
    case MediaTypes.ociLayerNondistTar:
      return 'none';
    case MediaTypes.ociLayerGzip:
    case MediaTypes.ociLayerNondistGzip:
    case MediaTypes.dockerLayerGzip:
    case MediaTypes.dockerForeignLayerGzip:
      return 'gzip';
    case MediaTypes.ociLayerZstd:
    case MediaTypes.ociLayerNondistZstd:
      return 'zstd';
    default:
      throw new BootcfsError('EFORMAT', `unsupported layer media type '${mediaType}'`);
  }
}

// ----- platform selection ------------------------------------------------------------------------

export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', armhf: 'arm', armel: 'arm', i686: '386', i386: '386' };
/** Variant implied when none is written (as in containerd's platform normaliser). */
const DEFAULT_VARIANT: Record<string, string> = { amd64: 'v1', arm64: 'v8', arm: 'v7' };

function normalizeArch(a: string): string {
  return ARCH_ALIASES[a] ?? a;
}
function normalizeVariant(arch: string, v: string | undefined): string | undefined {
  return v === undefined || v === '' ? DEFAULT_VARIANT[arch] : v;
}
function variantLevel(v: string | undefined): number {
  const m = v !== undefined ? /^v([0-9]+)$/.exec(v) : null;
  return m ? Number(m[1]) : -1;
}

/**
 * Picks the manifest for `want` from an index. Rules: os and architecture must match (after alias
 * normalisation); an exact (normalised) variant match wins; otherwise, for a wanted variant `vN`, the
 * highest `vM ≤ N` of the same architecture (a v3 amd64 machine runs v2 code, not the reverse); with no
 * wanted variant, the baseline (`v1`/no variant for amd64, `v8` arm64, `v7` arm) and then nothing
 * else. Entries that are not image manifests (attestations, artifacts) are ignored.
 */
export function selectPlatformManifest(index: OciIndex, want: Platform = DEFAULT_PLATFORM): OciDescriptor {
  const arch = normalizeArch(want.architecture);
  const wantVariant = normalizeVariant(arch, want.variant);
  const candidates = index.manifests.filter(
    (m) =>
      m.platform !== undefined &&
      m.platform.os === want.os &&
      normalizeArch(m.platform.architecture) === arch &&
      (m.mediaType === MediaTypes.ociManifest || m.mediaType === MediaTypes.dockerManifest ||
        m.mediaType === MediaTypes.ociIndex || m.mediaType === MediaTypes.dockerManifestList),
  );
  const exact = candidates.find((m) => normalizeVariant(arch, m.platform!.variant) === wantVariant);
  if (exact) return exact;
  const wantLevel = variantLevel(wantVariant);
  if (wantLevel >= 0) {
    let best: OciDescriptor | undefined;
    let bestLevel = -1;
    for (const m of candidates) {
      const level = variantLevel(normalizeVariant(arch, m.platform!.variant));
      if (level >= 0 && level <= wantLevel && level > bestLevel) {
        best = m;
        bestLevel = level;
      }
    }
    if (best) return best;
  }
  const available = index.manifests
    .map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}${m.platform.variant ? `/${m.platform.variant}` : ''}` : '(no platform)'))
    .join(', ');
  throw new BootcfsError(
    'ENOENT',
    `no manifest for ${want.os}/${want.architecture}${want.variant ? `/${want.variant}` : ''} in the index (available: ${available || 'none'})`,
  );
}
