/**
 * `meta.json` of a composefs repository, byte-compatible with composefs-rs (`RepoMetadata::to_json`:
 * serde_json pretty printing — 2-space indent, `": "`, `[]` for empty arrays — plus a trailing newline;
 * fields in the order version, algorithm, features{compatible, read-only-compatible, incompatible},
 * erofs_formats{default[, extra]}).
 *
 * What bootcfs records (composefs-format.md §4; composefs-rs PR #225/#330/#355):
 * - `algorithm`: `fsverity-sha512-12` (default) or `fsverity-sha256-12`.
 * - EROFS format the repository writes: `erofs_formats: {"default": N}` (0, 1 or 2; 1 by default) and, as
 *   composefs-rs does for old tools, the read-only-compatible flag `v1_erofs` when the default is 1. A file
 *   without `erofs_formats` is a pre-field composefs-rs repository: V1 if `v1_erofs` is listed, else V2.
 * - insecure mode: the compatible feature `insecure` (bootcfs's own flag; composefs-rs ignores unknown
 *   compatible features, so it still opens such a repository). composefs-rs decides secure vs insecure
 *   only from whether meta.json itself has fs-verity; that bit is lost when a repository is copied to a
 *   filesystem without verity, which would silently downgrade it. With the explicit flag, "no verity on
 *   meta.json and no `insecure` flag" is an error instead.
 *
 * Compatibility rules (composefs-rs `FeatureFlags::check`): version > 1 → refuse; unknown incompatible
 * feature → refuse; unknown read-only-compatible feature → read-only; unknown compatible → ignored.
 */
import { BootcfsError, NotSupportedError } from '../errors.js';
import type { HashAlgorithm } from '../fsverity/index.js';

export const REPO_FORMAT_VERSION = 1;
export const FEATURE_V1_EROFS = 'v1_erofs';
export const FEATURE_INSECURE = 'insecure';
export const KNOWN_COMPAT: readonly string[] = [FEATURE_INSECURE];
export const KNOWN_RO_COMPAT: readonly string[] = [FEATURE_V1_EROFS];
export const KNOWN_INCOMPAT: readonly string[] = [];

/** composefs EROFS format versions (composefs-rs FormatVersion): 0/1 = C-compatible layout, 2 = rs native. */
export type ErofsFormatVersion = 0 | 1 | 2;
export const DEFAULT_EROFS_FORMAT: ErofsFormatVersion = 1;

export interface RepoFeatures {
  compatible: string[];
  readOnlyCompatible: string[];
  incompatible: string[];
}

export interface RepoMeta {
  version: number;
  algorithm: HashAlgorithm;
  features: RepoFeatures;
  /** undefined: field absent (repository created before composefs-rs had it). */
  erofsFormats: { default: ErofsFormatVersion; extra: ErofsFormatVersion[] } | undefined;
}

export function algorithmName(alg: HashAlgorithm): string {
  return `fsverity-${alg}-12`;
}

export function newRepoMeta(opts: { algorithm: HashAlgorithm; erofsFormat: ErofsFormatVersion; insecure: boolean }): RepoMeta {
  return {
    version: REPO_FORMAT_VERSION,
    algorithm: opts.algorithm,
    features: {
      compatible: opts.insecure ? [FEATURE_INSECURE] : [],
      readOnlyCompatible: opts.erofsFormat === 1 ? [FEATURE_V1_EROFS] : [],
      incompatible: [],
    },
    erofsFormats: { default: opts.erofsFormat, extra: [] },
  };
}

/** The exact bytes composefs-rs would write for this metadata. */
export function serializeRepoMeta(m: RepoMeta): Buffer {
  const obj: Record<string, unknown> = {
    version: m.version,
    algorithm: algorithmName(m.algorithm),
    features: {
      compatible: m.features.compatible,
      'read-only-compatible': m.features.readOnlyCompatible,
      incompatible: m.features.incompatible,
    },
  };
  if (m.erofsFormats) {
    obj.erofs_formats = m.erofsFormats.extra.length > 0 ? { default: m.erofsFormats.default, extra: m.erofsFormats.extra } : { default: m.erofsFormats.default };
  }
  // JSON.stringify(…, 2) formats exactly like serde_json's PrettyFormatter for these value types.
  return Buffer.from(JSON.stringify(obj, null, 2) + '\n', 'utf8');
}

function bad(msg: string): BootcfsError {
  return new BootcfsError('EFORMAT', `meta.json: ${msg}`);
}

function stringArray(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw bad(`features.${what} must be an array of strings`);
  return v as string[];
}

function formatVersion(v: unknown, what: string): ErofsFormatVersion {
  if (v === 0 || v === 1 || v === 2) return v;
  throw bad(`${what} is ${JSON.stringify(v)}, not an EROFS format version this tool knows (0, 1, 2)`);
}

/** Parse meta.json (structure only; `checkRepoMeta` applies the compatibility rules). */
export function parseRepoMeta(bytes: Uint8Array): RepoMeta {
  let j: unknown;
  try {
    j = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw bad(`not valid JSON: ${(e as Error).message}`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw bad('not a JSON object');
  const o = j as Record<string, unknown>;
  if (typeof o.version !== 'number' || !Number.isInteger(o.version) || o.version < 0) throw bad('"version" must be a non-negative integer');
  if (typeof o.algorithm !== 'string') throw bad('"algorithm" must be a string');
  const m = /^fsverity-(sha256|sha512)-([0-9]+)$/.exec(o.algorithm);
  if (!m) throw new NotSupportedError(`meta.json: unsupported algorithm '${o.algorithm}' (bootcfs supports fsverity-sha256-12 and fsverity-sha512-12)`, 0);
  if (m[2] !== '12') throw new NotSupportedError(`meta.json: unsupported fs-verity block size 2^${m[2]} in '${o.algorithm}' (only 4096-byte blocks)`, 0);
  let features: RepoFeatures = { compatible: [], readOnlyCompatible: [], incompatible: [] };
  if (o.features !== undefined) {
    if (typeof o.features !== 'object' || o.features === null || Array.isArray(o.features)) throw bad('"features" must be an object');
    const f = o.features as Record<string, unknown>;
    features = {
      compatible: stringArray(f.compatible, 'compatible'),
      readOnlyCompatible: stringArray(f['read-only-compatible'], 'read-only-compatible'),
      incompatible: stringArray(f.incompatible, 'incompatible'),
    };
  }
  let erofsFormats: RepoMeta['erofsFormats'];
  if (o.erofs_formats !== undefined) {
    const e = o.erofs_formats as Record<string, unknown>;
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw bad('"erofs_formats" must be an object');
    const extra = e.extra === undefined ? [] : e.extra;
    if (!Array.isArray(extra)) throw bad('"erofs_formats.extra" must be an array');
    erofsFormats = { default: formatVersion(e.default, 'erofs_formats.default'), extra: extra.map((x) => formatVersion(x, 'erofs_formats.extra[]')) };
  }
  return { version: o.version, algorithm: m[1] as HashAlgorithm, features, erofsFormats };
}

export interface MetaCheck {
  /** 'read-only' when the repository lists read-only-compatible features this tool does not know. */
  access: 'read-write' | 'read-only';
  unknownReadOnly: string[];
}

/** Apply the version and feature rules; throws NotSupportedError for a repository we must not touch. */
export function checkRepoMeta(m: RepoMeta): MetaCheck {
  if (m.version > REPO_FORMAT_VERSION) {
    throw new NotSupportedError(`repository format version ${m.version} is newer than this bootcfs understands (${REPO_FORMAT_VERSION})`, 0);
  }
  const unknownIncompat = m.features.incompatible.filter((f) => !KNOWN_INCOMPAT.includes(f));
  if (unknownIncompat.length > 0) {
    throw new NotSupportedError(`repository uses incompatible features this bootcfs does not know: ${unknownIncompat.join(', ')}`, 0);
  }
  const unknownReadOnly = m.features.readOnlyCompatible.filter((f) => !KNOWN_RO_COMPAT.includes(f));
  return { access: unknownReadOnly.length > 0 ? 'read-only' : 'read-write', unknownReadOnly };
}

/** The EROFS format new images are written in (composefs-rs `RepoMetadata::format_config().default`). */
export function effectiveErofsFormat(m: RepoMeta): ErofsFormatVersion {
  // composefs-rs cannot tell an explicit {"default": 2} from the absent field (its serde default), so
  // there the legacy flag wins; same here.
  const legacyDefault = m.erofsFormats === undefined || (m.erofsFormats.default === 2 && m.erofsFormats.extra.length === 0);
  if (m.erofsFormats && !legacyDefault) return m.erofsFormats.default;
  return m.features.readOnlyCompatible.includes(FEATURE_V1_EROFS) ? 1 : 2;
}

export function isDeclaredInsecure(m: RepoMeta): boolean {
  return m.features.compatible.includes(FEATURE_INSECURE);
}
