/**
 * `bootc status` for a composefs system: the BootcHost v1 document (bootc-composefs.md §5), read from
 *
 *   - the boot entries (`<boot>/loader/entries/*.conf` and `loader/entries.staged/*.conf`): the source of
 *     truth for which deployments the boot loader offers and in which order (systemd-boot order);
 *     a deployment's id comes from `composefs=` in a Type 1 entry's `options`, or from the `.cmdline`
 *     section of the UKI a Type 2 entry (`efi`/`uki`) points at (the file name as a fallback);
 *   - `<sysroot>/state/deploy/<id>/<id>.origin` (image reference, boot type, boot digest, manifest digest);
 *   - the OCI manifest and config stored in `<sysroot>/composefs` (version, created, architecture);
 *   - the booted `composefs=` (the kernel command line) and `<run>/composefs/staged-deployment`.
 *
 * Slots: booted = the id on the command line; staged = the id in the staged-deployment file; rollback = the
 * first other deployment in boot-loader order among `loader/entries`; everything else with an origin
 * (entries only in `entries.staged`, state directories without any entry) is in `otherDeployments`.
 * `rollbackQueued` = the boot loader's default entry is the rollback deployment (re-derived from "the
 * default entry is not the booted one"; bootc's own UKI branch of this test is inverted).
 *
 * Without a command line (an offline root) nothing is booted and there is no rollback (it is defined
 * relative to the booted deployment): every deployment is in `otherDeployments` in boot-loader order (the
 * default entry first), `spec.image` is the default entry's image and `rollbackQueued` is false.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { BootcfsError } from '../errors.js';
import { compareEntries, entryOptions, parseBlsEntry, type BlsEntry } from '../boot/bls.js';
import { composefsKarg } from '../boot/kargs.js';
import { originFileName, parseOrigin, type DeploymentOrigin } from '../boot/origin.js';
import { findSection, parsePe, sectionData } from '../pe/pe.js';
import { Repository } from '../repository/index.js';
import { configStreamName, manifestStreamName } from '../oci/image.js';
import { toYaml, type YamlValue } from './yaml.js';

// ------------------------------------------------------------------------------------------------
// The document (field names and order exactly as bootc serializes them: crates/lib/src/spec.rs)

export type ImageSignature = 'containerPolicy' | 'insecure' | { ostreeRemote: string };

export interface ImageReference {
  image: string;
  transport: string;
  /** Omitted when there is none (composefs deployments never have one). */
  signature?: ImageSignature;
}

export interface ImageStatus {
  image: ImageReference;
  /** `org.opencontainers.image.version` (manifest annotation, else config label), or null. */
  version: string | null;
  /** The config's `created`, RFC 3339 in UTC as chrono prints it, or null. */
  timestamp: string | null;
  /** The manifest digest, `sha256:<hex>`. */
  imageDigest: string;
  architecture: string;
}

export type BootTypeName = 'Bls' | 'Uki';
export type BootloaderName = 'grub' | 'grub-cc' | 'systemd' | 'none';

export interface BootEntryComposefs {
  /** The deployment id: the composefs image's fs-verity digest (hex). */
  verity: string;
  bootType: BootTypeName;
  bootloader: BootloaderName;
  /** SHA-256 hex of kernel ‖ initrd (from the origin file), or null. */
  bootDigest: string | null;
  /** `composefs=?<digest>`: fs-verity not required. */
  missingVerityAllowed: boolean;
}

export interface BootEntry {
  image: ImageStatus | null;
  cachedUpdate: ImageStatus | null;
  incompatible: boolean;
  pinned: boolean;
  softRebootCapable: boolean;
  downloadOnly: boolean;
  store: null;
  ostree: null;
  composefs: BootEntryComposefs;
}

export interface FilesystemOverlay {
  accessMode: 'readOnly' | 'readWrite';
  persistence: 'transient' | 'persistent';
}

export interface HostStatus {
  staged: BootEntry | null;
  booted: BootEntry | null;
  rollback: BootEntry | null;
  /** Omitted from the serialized document when empty (as bootc does). */
  otherDeployments: BootEntry[];
  rollbackQueued: boolean;
  /** bootc's composefs path never sets it. */
  type: null;
  usrOverlay: FilesystemOverlay | null;
  readOnly: boolean;
}

export interface BootcHost {
  apiVersion: 'org.containers.bootc/v1';
  kind: 'BootcHost';
  metadata: { name: 'host' };
  spec: { image: ImageReference | null; bootOrder: 'default' | 'rollback' };
  status: HostStatus;
}

export const STAGED_DEPLOYMENT_FILE = 'composefs/staged-deployment';
export const STATE_DEPLOY_DIR = 'state/deploy';
export const ENTRIES_DIR = 'loader/entries';
export const STAGED_ENTRIES_DIR = 'loader/entries.staged';
/** Journal MESSAGE_ID bootc logs with the "No origin file" warning. */
export const NO_ORIGIN_MESSAGE_ID = 'd264f924dadb4c31bff0412107d391fb';

export interface HostStatusOptions {
  /** The physical root (`/sysroot` on a booted system, the target root offline). */
  sysroot: string;
  /** The directory holding `loader/entries` (the ESP). Without it no boot entries are read. */
  bootDir?: string;
  /** The kernel command line of the running system. Without it (offline) nothing is booted. */
  cmdline?: string;
  /** `/run` of the running system (for `composefs/staged-deployment`). Without it nothing is staged. */
  runDir?: string;
  /** `/usr` overlay state of the running system (see `usrOverlayFromMountinfo`). */
  usrOverlay?: FilesystemOverlay | null;
  /** The physical root is on a read-only medium (see `isBackingDeviceReadOnly`). */
  readOnly?: boolean;
  /** Warnings (default: `warning: <msg>` on stderr). */
  warn?: (message: string) => void;
}

const DIGEST_RE = /^(?:[0-9a-f]{64}|[0-9a-f]{128})$/;

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

function ioError(e: unknown, what: string): Error {
  if (e instanceof BootcfsError) return e;
  return new BootcfsError('EIO', `${what}: ${(e as Error).message}`);
}

// ------------------------------------------------------------------------------------------------
// Small readers

/** `{"depl_id": "<hex>", "finalization_locked": bool}` of `/run/composefs/staged-deployment`. */
export interface StagedDeploymentMarker {
  deplId: string;
  finalizationLocked: boolean;
}

export function parseStagedDeployment(text: string): StagedDeploymentMarker {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new BootcfsError('EFORMAT', 'staged-deployment: not JSON');
  }
  const o = v as { depl_id?: unknown; finalization_locked?: unknown } | null;
  if (o === null || typeof o !== 'object' || typeof o.depl_id !== 'string' || typeof o.finalization_locked !== 'boolean') {
    throw new BootcfsError('EFORMAT', 'staged-deployment: expected {"depl_id": string, "finalization_locked": bool}');
  }
  return { deplId: o.depl_id, finalizationLocked: o.finalization_locked };
}

/**
 * `org.containers.bootc` image reference fields from an origin's `container-image-reference` (its
 * `ostree-unverified-image:` prefix already removed by parseOrigin): `docker://x` → registry, `oci:x`,
 * `oci-archive:x`, `docker-archive:x`, `containers-storage:x`, `dir:x`. `ostree-image-signed:` and
 * `ostree-remote-image:REMOTE:` prefixes set the signature, as ostree-ext parses them.
 */
export function imageReferenceFromOrigin(ref: string): ImageReference {
  let rest = ref;
  let signature: ImageSignature | undefined;
  if (rest.startsWith('ostree-image-signed:')) {
    signature = 'containerPolicy';
    rest = rest.slice('ostree-image-signed:'.length);
  } else if (rest.startsWith('ostree-remote-image:') || rest.startsWith('ostree-remote-registry:')) {
    const body = rest.slice(rest.indexOf(':') + 1);
    const colon = body.indexOf(':');
    if (colon <= 0) throw new BootcfsError('EFORMAT', `image reference '${ref}': missing the ostree remote name`);
    signature = { ostreeRemote: body.slice(0, colon) };
    rest = body.slice(colon + 1);
    if (ref.startsWith('ostree-remote-registry:')) rest = `registry:${rest}`;
  }
  const colon = rest.indexOf(':');
  if (colon <= 0) throw new BootcfsError('EFORMAT', `image reference '${ref}' has no transport`);
  const name = rest.slice(0, colon);
  let image = rest.slice(colon + 1);
  let transport: string;
  switch (name) {
    case 'docker':
      if (!image.startsWith('//')) throw new BootcfsError('EFORMAT', `image reference '${ref}': docker transport needs '//'`);
      image = image.slice(2);
      transport = 'registry';
      break;
    case 'registry':
      transport = 'registry';
      break;
    case 'oci':
    case 'oci-archive':
    case 'docker-archive':
    case 'containers-storage':
    case 'dir':
      transport = name;
      break;
    default:
      throw new BootcfsError('EFORMAT', `image reference '${ref}': unknown transport '${name}'`);
  }
  if (image === '') throw new BootcfsError('EFORMAT', `image reference '${ref}' has no image name`);
  const r: ImageReference = { image, transport };
  if (signature !== undefined) r.signature = signature;
  return r;
}

/**
 * An RFC 3339 timestamp in UTC, printed as chrono serializes a `DateTime<Utc>`: seconds, then 3, 6 or 9
 * fraction digits only when needed, then `Z`. Undefined when `s` is not RFC 3339 (bootc warns and drops it).
 */
export function normalizeTimestamp(s: string): string | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/.exec(s);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 60) return undefined;
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (day > daysInMonth) return undefined;
  let nanos = 0;
  if (m[7] !== undefined) nanos = Number(m[7].slice(0, 9).padEnd(9, '0'));
  let offsetMin = 0;
  if (m[9] !== undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return undefined;
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  // chrono keeps a leap second (60) as :59 plus ≥ 1 s of nanoseconds; the fraction is printed the same way
  // a leap second stays :60 of its (converted) minute, as chrono prints it
  const leap = second === 60;
  const ms = Date.UTC(year, month - 1, day, hour, minute, leap ? 59 : second) - offsetMin * 60_000;
  if (!Number.isFinite(ms)) return undefined;
  const d = new Date(ms);
  if (d.getUTCFullYear() < 0 || d.getUTCFullYear() > 9999) return undefined;
  const p2 = (n: number): string => String(n).padStart(2, '0');
  let out = `${String(d.getUTCFullYear()).padStart(4, '0')}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}T${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${leap ? '60' : p2(d.getUTCSeconds())}`;
  if (nanos !== 0) {
    const digits = nanos % 1_000_000 === 0 ? 3 : nanos % 1000 === 0 ? 6 : 9;
    out += `.${String(nanos).padStart(9, '0').slice(0, digits)}`;
  }
  return `${out}Z`;
}

/** The `.cmdline` section of a PE file, reading only its headers and that section. */
export async function readUkiCmdline(file: string): Promise<string | undefined> {
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    // a zero-filled buffer of the file's size: only the headers and .cmdline are read into it
    const buf = Buffer.alloc(size);
    const head = Math.min(size, 64 * 1024);
    await fh.read(buf, 0, head, 0);
    const pe = parsePe(buf);
    if (pe.sizeOfHeaders > head) await fh.read(buf, head, Math.min(size, pe.sizeOfHeaders) - head, head);
    const s = findSection(parsePe(buf), '.cmdline');
    if (s === undefined) return undefined;
    await fh.read(buf, s.pointerToRawData, s.sizeOfRawData, s.pointerToRawData);
    const data = sectionData(buf, s);
    let end = data.length;
    while (end > 0 && data[end - 1] === 0) end--;
    return data.subarray(0, end).toString('utf8');
  } finally {
    await fh.close();
  }
}

/** `/usr` overlay state from /proc/self/mountinfo: an overlay mounted on /usr (`bootc usr-overlay`). */
export function usrOverlayFromMountinfo(mountinfo: string): FilesystemOverlay | null {
  let found: FilesystemOverlay | null = null;
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length < 6 || f[4] !== '/usr') continue;
    const opts = f[5]!.split(',');
    // the last mount on /usr is the visible one
    found = { accessMode: opts.includes('ro') ? 'readOnly' : 'readWrite', persistence: 'transient' };
  }
  return found;
}

/** Whether the block device backing `p` is read-only (sysfs `ro` flag); false when it cannot be told. */
export async function isBackingDeviceReadOnly(p: string): Promise<boolean> {
  try {
    const st = await fsp.stat(p, { bigint: true });
    const dev = st.dev;
    const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
    const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
    const ro = await fsp.readFile(`/sys/dev/block/${major}:${minor}/ro`, 'utf8');
    return ro.trim() === '1';
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------------------------------------
// Boot entries

interface EntryRef {
  fileName: string;
  entry: BlsEntry;
  digest: string;
  verityOptional: boolean;
  kind: 'bls' | 'uki';
  staged: boolean;
}

/** The `bootc_composefs-<id>.efi` id in a UKI path, if it has that name. */
function digestFromUkiPath(p: string): string | undefined {
  const m = /(?:^|\/)bootc_composefs-([0-9a-f]+)\.efi$/.exec(p);
  return m && DIGEST_RE.test(m[1]!) ? m[1] : undefined;
}

async function readEntries(bootDir: string, dir: string, staged: boolean, warn: (m: string) => void): Promise<EntryRef[]> {
  const abs = path.join(bootDir, dir);
  let names: string[];
  try {
    names = await fsp.readdir(abs);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return [];
    throw ioError(e, `cannot read ${abs}`);
  }
  const out: EntryRef[] = [];
  for (const fileName of names.filter((n) => n.endsWith('.conf')).sort()) {
    const file = path.join(abs, fileName);
    let entry: BlsEntry;
    try {
      const st = await fsp.stat(file);
      if (!st.isFile()) continue;
      entry = parseBlsEntry(await fsp.readFile(file, 'utf8'), file);
    } catch (e) {
      warn(`skipping boot entry ${file}: ${(e as Error).message}`);
      continue;
    }
    if (entry.linux !== undefined) {
      let k;
      try {
        k = composefsKarg(entryOptions(entry));
      } catch (e) {
        warn(`skipping boot entry ${file}: ${(e as Error).message}`);
        continue;
      }
      if (k === undefined) continue; // not a composefs entry (another OS, a tool)
      out.push({ fileName, entry, digest: k.digest, verityOptional: k.verityOptional, kind: 'bls', staged });
      continue;
    }
    const efiPath = (entry.uki ?? entry.efi)!;
    const nameDigest = digestFromUkiPath(efiPath);
    let fromCmdline: { digest: string; verityOptional: boolean } | undefined;
    try {
      const cmdline = await readUkiCmdline(path.join(bootDir, efiPath.replace(/^\/+/, '')));
      if (cmdline !== undefined) fromCmdline = composefsKarg(cmdline);
    } catch (e) {
      if (nameDigest === undefined) {
        warn(`skipping boot entry ${file}: cannot read the composefs= argument of ${efiPath}: ${(e as Error).message}`);
        continue;
      }
      warn(`boot entry ${file}: cannot read ${efiPath} (${(e as Error).message}); using the id in its file name`);
    }
    if (fromCmdline !== undefined) {
      if (nameDigest !== undefined && nameDigest !== fromCmdline.digest) {
        warn(`boot entry ${file}: ${efiPath} boots composefs=${fromCmdline.digest}, not the id in its file name`);
      }
      out.push({ fileName, entry, digest: fromCmdline.digest, verityOptional: fromCmdline.verityOptional, kind: 'uki', staged });
    } else if (nameDigest !== undefined) {
      out.push({ fileName, entry, digest: nameDigest, verityOptional: false, kind: 'uki', staged });
    }
  }
  return out.sort((a, b) => compareEntries({ ...a.entry, fileName: a.fileName }, { ...b.entry, fileName: b.fileName }));
}

// ------------------------------------------------------------------------------------------------
// Image metadata from the repository

async function readStreamBytes(repo: Repository, name: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of repo.catStream(name)) parts.push(b);
  return Buffer.concat(parts);
}

function parseJsonObject(bytes: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new BootcfsError('EFORMAT', `${what} is not JSON`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new BootcfsError('EFORMAT', `${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

function stringField(o: unknown, key: string): string | undefined {
  if (o === null || typeof o !== 'object') return undefined;
  const v = (o as Record<string, unknown>)[key];
  return typeof v === 'string' ? v : undefined;
}

function sha256Of(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export interface ImageMetadata {
  version: string | null;
  timestamp: string | null;
  architecture: string;
}

const VERSION_KEY = 'org.opencontainers.image.version';
const CREATED_KEY = 'org.opencontainers.image.created';

/**
 * Version, timestamp and architecture of the image whose manifest is `oci-manifest-<manifestDigest>` in
 * the repository; the manifest and config bytes are checked against their digests.
 */
export async function readImageMetadata(repo: Repository, manifestDigest: string, warn: (m: string) => void = () => undefined): Promise<ImageMetadata> {
  if (!/^sha256:[0-9a-f]{64}$/.test(manifestDigest)) throw new BootcfsError('EFORMAT', `manifest digest '${manifestDigest}' is not sha256:<64 hex>`);
  const manifestName = manifestStreamName(manifestDigest);
  const manifestBytes = await readStreamBytes(repo, manifestName);
  if (sha256Of(manifestBytes) !== manifestDigest) throw new BootcfsError('EVERITY', `stream ${manifestName} does not hold the manifest ${manifestDigest}`);
  const manifest = parseJsonObject(manifestBytes, `manifest ${manifestDigest}`);
  const ms = await repo.openStream(manifestName);
  let configDigest: string | undefined;
  for (const [name] of ms.namedRefs) if (name.startsWith('config:')) configDigest = name.slice('config:'.length);
  configDigest ??= stringField(manifest.config, 'digest');
  if (configDigest === undefined) throw new BootcfsError('EFORMAT', `manifest ${manifestDigest} names no config`);
  const configBytes = await readStreamBytes(repo, configStreamName(configDigest));
  if (sha256Of(configBytes) !== configDigest) throw new BootcfsError('EVERITY', `stream ${configStreamName(configDigest)} does not hold the config ${configDigest}`);
  const config = parseJsonObject(configBytes, `config ${configDigest}`);
  const labels = (config.config as { Labels?: unknown } | undefined)?.Labels;
  const version = stringField(manifest.annotations, VERSION_KEY) ?? stringField(labels, VERSION_KEY) ?? stringField(labels, 'version') ?? null;
  const created = stringField(config, 'created') ?? stringField(labels, CREATED_KEY);
  let timestamp: string | null = null;
  if (created !== undefined) {
    timestamp = normalizeTimestamp(created) ?? null;
    if (timestamp === null) warn(`invalid timestamp '${created}' in image ${manifestDigest}`);
  }
  return { version, timestamp, architecture: stringField(config, 'architecture') ?? '' };
}

// ------------------------------------------------------------------------------------------------
// Status

interface Deployment {
  id: string;
  origin: DeploymentOrigin;
  entry?: EntryRef;
}

function emptyHost(): BootcHost {
  return {
    apiVersion: 'org.containers.bootc/v1',
    kind: 'BootcHost',
    metadata: { name: 'host' },
    spec: { image: null, bootOrder: 'default' },
    status: { staged: null, booted: null, rollback: null, otherDeployments: [], rollbackQueued: false, type: null, usrOverlay: null, readOnly: false },
  };
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw ioError(e, `cannot read ${file}`);
  }
}

async function stateDeploymentIds(sysroot: string): Promise<string[]> {
  const dir = path.join(sysroot, STATE_DEPLOY_DIR);
  try {
    const ents = await fsp.readdir(dir, { withFileTypes: true });
    return ents.filter((d) => d.isDirectory() && DIGEST_RE.test(d.name)).map((d) => d.name).sort();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return [];
    throw ioError(e, `cannot read ${dir}`);
  }
}

async function openRepositoryForReading(sysroot: string, warn: (m: string) => void): Promise<Repository | undefined> {
  const repoPath = path.join(sysroot, 'composefs');
  try {
    return await Repository.open(repoPath, { readOnly: true });
  } catch (e) {
    const code = (e as BootcfsError).code;
    if (code === 'EVERITY' || code === 'ENOTSUP') {
      // status reads only metadata (checked against its digests here); it decides nothing from it
      try {
        return await Repository.open(repoPath, { readOnly: true, insecure: true });
      } catch (e2) {
        warn(`cannot open the repository ${repoPath}: ${(e2 as Error).message}`);
        return undefined;
      }
    }
    warn(`cannot open the repository ${repoPath}: ${(e as Error).message}`);
    return undefined;
  }
}

const defaultWarn = (m: string): void => {
  process.stderr.write(`warning: ${m}\n`);
};

/** The BootcHost document of a composefs system (see the file comment). */
export async function readHostStatus(opts: HostStatusOptions): Promise<BootcHost> {
  const warn = opts.warn ?? defaultWarn;
  const host = emptyHost();
  host.status.usrOverlay = opts.usrOverlay ?? null;
  host.status.readOnly = opts.readOnly ?? false;

  const booted = opts.cmdline !== undefined ? composefsKarg(opts.cmdline) : undefined;
  let stagedMarker: StagedDeploymentMarker | undefined;
  if (opts.runDir !== undefined) {
    const text = await readOptional(path.join(opts.runDir, STAGED_DEPLOYMENT_FILE));
    if (text !== undefined) stagedMarker = parseStagedDeployment(text);
  }

  const entries = opts.bootDir !== undefined ? await readEntries(opts.bootDir, ENTRIES_DIR, false, warn) : [];
  const stagedEntries = opts.bootDir !== undefined ? await readEntries(opts.bootDir, STAGED_ENTRIES_DIR, true, warn) : [];

  // every deployment id, in boot-loader order: entries, staged entries, then state directories without one
  const order: string[] = [];
  const entryOf = new Map<string, EntryRef>();
  for (const e of [...entries, ...stagedEntries]) {
    if (entryOf.has(e.digest)) continue;
    entryOf.set(e.digest, e);
    order.push(e.digest);
  }
  for (const id of await stateDeploymentIds(opts.sysroot)) if (!entryOf.has(id)) order.push(id);

  const deployments: Deployment[] = [];
  for (const id of order) {
    const originPath = path.join(opts.sysroot, STATE_DEPLOY_DIR, id, originFileName(id));
    const text = await readOptional(originPath);
    if (text === undefined) {
      warn(`No origin file for deployment ${id}`);
      continue;
    }
    let origin: DeploymentOrigin;
    try {
      origin = parseOrigin(text, originPath);
    } catch (e) {
      warn(`skipping deployment ${id}: ${(e as Error).message}`);
      continue;
    }
    deployments.push({ id, origin, ...(entryOf.has(id) ? { entry: entryOf.get(id)! } : {}) });
  }

  // boot type: from the origin; every deployment must agree (bootc: "Conflicting boot types")
  let bootType: 'bls' | 'uki' | undefined;
  const usable: Array<Deployment & { bootType: 'bls' | 'uki' }> = [];
  for (const d of deployments) {
    let t = d.origin.bootType;
    if (t === undefined) {
      if (d.entry === undefined) {
        warn(`skipping deployment ${d.id}: its origin file has no boot_type and no boot entry names it`);
        continue;
      }
      warn(`origin file of deployment ${d.id} has no boot_type; using its boot entry's (${d.entry.kind})`);
      t = d.entry.kind;
    } else if (d.entry !== undefined && d.entry.kind !== t) {
      warn(`deployment ${d.id}: origin boot_type ${t} but its boot entry ${d.entry.fileName} is ${d.entry.kind === 'uki' ? 'a UKI (Type 2)' : 'Type 1'}`);
    }
    if (bootType !== undefined && bootType !== t) throw new BootcfsError('EFORMAT', `Conflicting boot types: deployment ${d.id} is ${t}, others are ${bootType}`);
    bootType = t;
    usable.push({ ...d, bootType: t });
  }

  const repo = usable.some((d) => d.origin.imageReference !== undefined) ? await openRepositoryForReading(opts.sysroot, warn) : undefined;
  try {
    const build = async (d: (typeof usable)[number]): Promise<BootEntry> => {
      let image: ImageStatus | null = null;
      if (d.origin.imageReference !== undefined) {
        try {
          const ref = imageReferenceFromOrigin(d.origin.imageReference);
          if (d.origin.manifestDigest === undefined) throw new BootcfsError('EFORMAT', 'its origin file has no [image] manifest_digest');
          if (repo === undefined) throw new BootcfsError('ENOENT', 'the repository cannot be opened');
          const meta = await readImageMetadata(repo, d.origin.manifestDigest, warn);
          image = { image: ref, version: meta.version, timestamp: meta.timestamp, imageDigest: d.origin.manifestDigest, architecture: meta.architecture };
        } catch (e) {
          warn(`deployment ${d.id}: no image information: ${(e as Error).message}`);
        }
      }
      // the running system's own composefs= for the booted deployment, else the one its entry boots with
      const isBooted = booted !== undefined && booted.digest === d.id;
      const missingVerityAllowed = isBooted ? booted.verityOptional : (d.entry?.verityOptional ?? false);
      return {
        image,
        cachedUpdate: null,
        incompatible: false,
        pinned: false,
        softRebootCapable: false,
        downloadOnly: false,
        store: null,
        ostree: null,
        composefs: {
          verity: d.id,
          bootType: d.bootType === 'uki' ? 'Uki' : 'Bls',
          bootloader: 'systemd',
          bootDigest: d.origin.bootDigest ?? null,
          missingVerityAllowed,
        },
      };
    };

    const rest: Array<{ d: (typeof usable)[number]; e: BootEntry }> = [];
    for (const d of usable) {
      const e = await build(d);
      if (booted !== undefined && d.id === booted.digest) host.status.booted = e;
      else if (stagedMarker !== undefined && d.id === stagedMarker.deplId) {
        e.downloadOnly = stagedMarker.finalizationLocked;
        host.status.staged = e;
      } else rest.push({ d, e });
    }
    if (stagedMarker !== undefined && host.status.staged === null && !usable.some((d) => d.id === stagedMarker!.deplId)) {
      warn(`the staged deployment ${stagedMarker.deplId} has no usable state (no origin file or boot entry)`);
    }

    // default = first entry of loader/entries in boot order (with an origin file)
    const defaultId = entries.find((e) => usable.some((d) => d.id === e.digest))?.digest;
    const inEntries = (r: (typeof rest)[number]): boolean => r.d.entry !== undefined && !r.d.entry.staged;
    // a rollback exists only relative to a booted deployment; offline, everything is listed in boot order
    const offlineDefault = booted === undefined ? rest.find((r) => r.d.id === defaultId) : undefined;
    const rollback = booted !== undefined ? rest.find(inEntries) : undefined;
    host.status.rollback = rollback?.e ?? null;
    host.status.otherDeployments = rest.filter((r) => r !== rollback).map((r) => r.e);
    host.status.rollbackQueued = booted !== undefined && host.status.booted !== null && rollback !== undefined && rollback.d.id === defaultId;
    if (host.status.rollbackQueued) host.spec.bootOrder = 'rollback';

    const specSource = host.status.staged ?? host.status.booted ?? offlineDefault?.e ?? null;
    host.spec.image = specSource?.image?.image ?? null;
    return host;
  } finally {
    await repo?.close();
  }
}

/** `--booted`: only the booted deployment (bootc's `filter_to_slot(Booted)`). */
export function filterToBooted(host: BootcHost): BootcHost {
  return { ...host, status: { ...host.status, staged: null, rollback: null } };
}

// ------------------------------------------------------------------------------------------------
// Serialization

/** The document as bootc serializes it: `otherDeployments` omitted when empty, `signature` when absent. */
export function hostToPlain(host: BootcHost): Record<string, unknown> {
  const status: Record<string, unknown> = {
    staged: host.status.staged,
    booted: host.status.booted,
    rollback: host.status.rollback,
  };
  if (host.status.otherDeployments.length > 0) status.otherDeployments = host.status.otherDeployments;
  Object.assign(status, {
    rollbackQueued: host.status.rollbackQueued,
    type: host.status.type,
    usrOverlay: host.status.usrOverlay,
    readOnly: host.status.readOnly,
  });
  // a deep copy in declaration order (JSON round trip drops `undefined` signature keys)
  return JSON.parse(JSON.stringify({ apiVersion: host.apiVersion, kind: host.kind, metadata: host.metadata, spec: host.spec, status })) as Record<string, unknown>;
}

function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const keys = Object.keys(v).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
}

/** Canonical JSON (keys sorted, no whitespace, no trailing newline), as `bootc status --json` writes it. */
export function formatJson(host: BootcHost): string {
  return canonical(hostToPlain(host));
}

/** YAML in bootc's field order (serde_yaml layout; strings quoted wherever a YAML reader could mistype them). */
export function formatYaml(host: BootcHost): string {
  return toYaml(hostToPlain(host) as YamlValue);
}

// ------------------------------------------------------------------------------------------------
// Human-readable output (bootc's crates/lib/src/status.rs layout)

type Slot = 'staged' | 'booted' | 'rollback' | 'other';

function rowName(name: string, width: number): string {
  return `${' '.repeat(Math.max(0, width - [...name].length))}${name}: `;
}

function humanTimestamp(t: string): string {
  // seconds precision: drop the fraction chrono may print
  return t.replace(/\.\d+Z$/, 'Z');
}

function renderSlot(slot: Slot, e: BootEntry, host: BootcHost, verbose: boolean): string[] {
  const out: string[] = [];
  const img = e.image;
  if (img === null) {
    const prefix = { staged: '  Staged composefs', booted: '● Booted composefs', rollback: '  Rollback composefs', other: '   Other composefs' }[slot];
    const w = [...prefix].length;
    out.push(prefix);
    out.push(`${rowName('Commit', w)}${e.composefs.verity}`);
    if (verbose) out.push(...verboseRows(slot, e, w));
    return out;
  }
  const ref = img.image.transport === 'registry' ? img.image.image : `${img.image.transport}:${img.image.image}`;
  const prefix = { staged: '  Staged image', booted: '● Booted image', rollback: '  Rollback image', other: '   Other image' }[slot];
  const w = [...prefix].length;
  out.push(`${prefix}: ${ref}`);
  out.push(`${rowName('Digest', w)}${img.imageDigest} (${img.architecture})`);
  out.push(`${rowName('Verity', w)}${e.composefs.verity}`);
  const ts = img.timestamp !== null ? humanTimestamp(img.timestamp) : undefined;
  if (img.version !== null) out.push(`${rowName('Version', w)}${img.version}${ts !== undefined ? ` (${ts})` : ''}`);
  else if (ts !== undefined) out.push(`${rowName('Timestamp', w)}${ts}`);
  if (e.pinned) out.push(`${rowName('Pinned', w)}yes`);
  if (slot === 'booted' && host.status.usrOverlay !== null) {
    const o = host.status.usrOverlay;
    out.push(`${rowName('/usr overlay', w)}${o.persistence}, ${o.accessMode === 'readOnly' ? 'read-only' : 'read/write'}`);
  }
  if (verbose) {
    const sig = img.image.signature;
    if (sig !== undefined) out.push(`${rowName('Signature', w)}${typeof sig === 'string' ? (sig === 'containerPolicy' ? 'container-policy' : 'insecure') : `ostree-remote:${sig.ostreeRemote}`}`);
    out.push(...verboseRows(slot, e, w));
  }
  return out;
}

function verboseRows(slot: Slot, e: BootEntry, w: number): string[] {
  const rows = [`${rowName('Soft-reboot', w)}${e.softRebootCapable ? 'yes' : 'no'}`, `${rowName('FsVerity', w)}${e.composefs.missingVerityAllowed ? 'Not Enforced' : 'Enforced'}`];
  if (slot === 'staged') rows.push(`${rowName('Download-only', w)}${e.downloadOnly ? 'yes' : 'no'}`);
  return rows;
}

/**
 * bootc's human-readable status: staged, booted, rollback, then other deployments, a blank line between
 * them. "System is not deployed via bootc." only when there is no deployment at all (bootc prints it
 * whenever nothing is booted; an offline root has deployments but nothing booted).
 */
export function formatHumanReadable(host: BootcHost, opts: { verbose?: boolean } = {}): string {
  const blocks: string[][] = [];
  const s = host.status;
  if (s.staged) blocks.push(renderSlot('staged', s.staged, host, opts.verbose ?? false));
  if (s.booted) blocks.push(renderSlot('booted', s.booted, host, opts.verbose ?? false));
  if (s.rollback) blocks.push(renderSlot('rollback', s.rollback, host, opts.verbose ?? false));
  for (const o of s.otherDeployments) blocks.push(renderSlot('other', o, host, opts.verbose ?? false));
  if (blocks.length === 0) return 'System is not deployed via bootc.\n';
  return `${blocks.map((b) => b.join('\n')).join('\n\n')}\n`;
}
