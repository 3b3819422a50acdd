/**
 * One deployment written onto a physical root filesystem, as bootc's composefs backend lays it out
 * (bootc-composefs.md §2): the composefs repository at `<root>/composefs` holding the pulled image and its
 * bootable composefs image, `<root>/state/deploy/<digest>/{etc/, var -> ../../os/default/var, <digest>.origin}`,
 * `<root>/state/os/default/var/` (the image's /var, only when it does not exist yet), and the files the
 * ESP needs to boot it (systemd-boot, the UKI or kernel + initrd, a BLS entry, loader.conf).
 *
 * Boot types:
 * - **UKI (Type 2, sealed)**: the image carries a UKI at `/boot/EFI/Linux/*.efi` (`bootcfs container
 *   build-sealed`). Its `.cmdline` must name this image's bootable digest; it goes to
 *   `EFI/Linux/bootc/bootc_composefs-<d>.efi` and a BLS entry points at it (`efi`, systemd-boot < 258).
 *   Its command line is signed: `--karg` is refused, and the root is found by the discoverable-partitions
 *   type, never by an unsigned argument.
 * - **BLS (Type 1, unsealed)**: kernel and initramfs from `/usr/lib/modules/<kver>/` go to
 *   `EFI/Linux/bootc_composefs-<d>/{vmlinuz,initrd}`; the entry's options are `root=UUID=<uuid> rw
 *   composefs=[?]<d>` + kargs.d + `--karg`.
 *
 * fs-verity (`verity`): `enable` — the root filesystem's kernel supports it: a secure repository, verity
 * enabled on every object as it is written. `deferred` — it does not (a build host without fs-verity, or a
 * filesystem image made with mke2fs -d, which copies no verity): the repository is declared secure
 * (meta.json without the `insecure` feature) and `composefs/.verity-pending` tells setup-root to enable
 * fs-verity on every object on first boot, checking each object's measured digest against its name before
 * the verified mount (docs/INSTALL.md gives the security argument). `none` — `composefs=?` (allow missing
 * verity): an insecure repository.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BootcfsError } from '../errors.js';
import { composefsArg, composefsKarg, splitCmdline } from '../boot/kargs.js';
import { entryFileName, sortKey, type1Dir, UKI_DIR, ukiFileName, writeBlsEntry, type BlsEntry } from '../boot/bls.js';
import { originFileName, writeOrigin, type BootType, type DeploymentOrigin } from '../boot/origin.js';
import type { HashAlgorithm } from '../fsverity/digest.js';
import type { ContentReader } from '../oci/bootable.js';
import { buildImageTree, configDiffIds, repositoryContentReader } from '../oci/image.js';
import { pullImage, type PullProgressEvent, type LayerBytesEvent } from '../oci/pull.js';
import type { RegistryOptions } from '../oci/registry.js';
import { findSection, parsePe, sectionData } from '../pe/pe.js';
import { newRepoMeta, serializeRepoMeta, type ErofsFormatVersion } from '../repository/meta.js';
import { Repository, META_FILE } from '../repository/repository.js';
import { readBootInputs, SEALED_SYSTEMD_BOOT, SEALED_UKI_DIR } from '../seal/build.js';
import { listTreeDir, readTreeFile, resolveInTree } from '../seal/tree-files.js';
import type { FileSystem } from '../tree/model.js';
import { fsyncDir, writeFileAtomic } from '../util/atomic-file.js';
import { materializeTree, type MaterializeStats } from './materialize.js';

export type VerityMode = 'enable' | 'deferred' | 'none';

/** Marker file in the repository: fs-verity is still to be enabled (by setup-root on first boot). */
export const VERITY_PENDING = '.verity-pending';
export const STATE_DEPLOY = 'state/deploy';
export const STATE_VAR = 'state/os/default/var';
/** systemd-boot, as the image ships it (sealed images carry a signed copy under /boot). */
const IMAGE_SYSTEMD_BOOT_CANDIDATES = [`/${SEALED_SYSTEMD_BOOT}`, '/usr/lib/systemd/boot/efi/systemd-bootx64.efi.signed', '/usr/lib/systemd/boot/efi/systemd-bootx64.efi'];

export class InstallError extends BootcfsError {
  constructor(message: string) {
    super('EINVAL', message);
    this.name = 'InstallError';
  }
}

export interface DeployOptions {
  /** Image reference (oci:, oci-archive:, docker-archive:, docker://). */
  source: string;
  /** The image reference recorded in the origin for later `upgrade`s (bootc's --target-imgref); default `source`. */
  targetImgref?: string;
  registry?: RegistryOptions;
  /** Extra kernel arguments (Type 1 only: a sealed UKI's command line is signed). */
  kargs?: string[];
  /** composefs=? : fs-verity not required (insecure repository). */
  allowMissingVerity?: boolean;
  /** fs-verity on the target: enable now, or defer to setup-root on first boot. */
  verity: 'enable' | 'deferred';
  algorithm?: HashAlgorithm;
  erofsFormat?: ErofsFormatVersion;
  /** The root filesystem's UUID (Type 1 entries name it with root=UUID=). */
  rootUuid?: string;
  /** systemd-boot menu timeout in seconds (loader.conf; bootc writes 5). */
  bootTimeout?: number;
  /** Kernel version under /usr/lib/modules when the image has several. */
  kver?: string;
  onStep?: (step: string) => void;
  onProgress?: (ev: PullProgressEvent) => void;
  onLayerBytes?: (ev: LayerBytesEvent) => void;
}

export interface EspFile { path: string; data: Buffer }

export interface PreparedDeployment {
  digest: string;
  algorithm: HashAlgorithm;
  bootType: BootType;
  verity: VerityMode;
  manifestDigest: string;
  configDigest: string;
  kver: string;
  osId: string;
  version: string;
  /** the kernel command line the deployment boots with (the UKI's, or the entry's options) */
  cmdline: string;
  /** files for the ESP, the BLS entry last */
  espFiles: EspFile[];
  entryPath: string;
  etc: MaterializeStats;
  /** milliseconds per phase */
  timings: Record<string, number>;
}

interface OsRelease { id: string; versionId?: string; prettyName?: string }

function parseOsRelease(text: string | undefined): OsRelease {
  const kv = new Map<string, string>();
  for (const line of (text ?? '').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let v = m[2]!;
    if (/^(["']).*\1$/.test(v)) v = v.slice(1, -1);
    kv.set(m[1]!, v);
  }
  return { id: kv.get('ID') || 'bootc', versionId: kv.get('VERSION_ID') || kv.get('IMAGE_VERSION') || undefined, prettyName: kv.get('PRETTY_NAME') || kv.get('NAME') || undefined };
}

/** Content of a PE section as the loader sees it, or undefined. */
function peSection(pe: Buffer, name: string): Buffer | undefined {
  const s = findSection(parsePe(pe), name);
  return s && sectionData(pe, s);
}

const sha256 = (...parts: Buffer[]): string => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

async function writeSecureMetaWithoutVerity(repoPath: string, algorithm: HashAlgorithm, erofsFormat: ErofsFormatVersion): Promise<void> {
  await writeFileAtomic(path.join(repoPath, META_FILE), serializeRepoMeta(newRepoMeta({ algorithm, erofsFormat, insecure: false })), { mode: 0o644 });
}

/**
 * Pulls `opts.source` into `<root>/composefs` and writes the deployment state under `<root>/state`.
 * Returns what the ESP needs; writes nothing to the ESP itself.
 */
export async function writeDeployment(root: string, opts: DeployOptions): Promise<PreparedDeployment> {
  const timings: Record<string, number> = {};
  let t = Date.now();
  const lap = (name: string): void => {
    const now = Date.now();
    timings[name] = now - t;
    t = now;
  };
  const algorithm = opts.algorithm ?? 'sha512';
  const erofsFormat = opts.erofsFormat ?? 1;
  const repoPath = path.join(root, 'composefs');
  if (await exists(path.join(repoPath, META_FILE))) throw new InstallError(`${repoPath} already holds a composefs repository: install needs an empty root filesystem`);
  if (await exists(path.join(root, STATE_DEPLOY))) throw new InstallError(`${path.join(root, STATE_DEPLOY)} exists: install needs an empty root filesystem`);

  // 1. the repository; fs-verity now (secure), later (secure, pending) or never (insecure)
  opts.onStep?.('pull');
  const verity: VerityMode = opts.allowMissingVerity ? 'none' : opts.verity;
  const repo = await Repository.init(repoPath, { algorithm, erofsFormat, insecure: verity !== 'enable' });
  let prepared: Omit<PreparedDeployment, 'etc' | 'timings'>;
  let etc: MaterializeStats;
  try {
    const pulled = await pullImage(repo, opts.source, { bootable: true, registry: opts.registry, onProgress: opts.onProgress, onLayerBytes: opts.onLayerBytes });
    lap('pull');
    opts.onStep?.('deployment');
    // the image as it is (before the bootable transform, which empties /boot): /etc, /var and boot files
    // (the pull just stored and checked every object; contents are read verified below)
    const tree: FileSystem = await buildImageTree(repo, await configDiffIds(repo, pulled.configStream), { trustObjects: true });
    lap('tree');
    const digest = pulled.bootImageId!.toString('hex');
    const fromRepo = repositoryContentReader(repo);
    const read: ContentReader = async (inode, p) => inode.content ?? (inode.size === 0 ? Buffer.alloc(0) : fromRepo(inode, p));
    const boot = await prepareBootFiles({
      tree, read, digest, algorithm, erofsFormat, verity, kver: opts.kver, bootTimeout: opts.bootTimeout, extraKargs: opts.kargs ?? [],
      typeOneArgs: (imageKargs) => {
        if (opts.rootUuid === undefined) throw new InstallError('a Type 1 (BLS) entry needs the root filesystem UUID');
        return [`root=UUID=${opts.rootUuid}`, 'rw', composefsArg(digest, verity === 'none'), ...imageKargs, ...(opts.kargs ?? [])];
      },
    });

    // 2. deployment state: etc/ (copy of the image's /etc), var -> shared /var, origin
    etc = await writeDeploymentState(root, digest, tree, read, { imageReference: opts.targetImgref ?? opts.source, bootType: boot.bootType, bootDigest: boot.bootDigest, manifestDigest: pulled.manifestDigest, extra: [] });
    lap('state');

    prepared = {
      digest, algorithm, bootType: boot.bootType, verity, manifestDigest: pulled.manifestDigest, configDigest: pulled.configDigest,
      kver: boot.kver, osId: boot.osId, version: boot.version, cmdline: boot.cmdline, espFiles: boot.espFiles, entryPath: boot.entryPath,
    };
  } finally {
    await repo.close();
  }
  if (verity === 'deferred') {
    // secure from now on; setup-root enables verity on meta.json and every object at first boot
    await writeSecureMetaWithoutVerity(repoPath, algorithm, erofsFormat);
    await writeFileAtomic(path.join(repoPath, VERITY_PENDING), Buffer.from('fs-verity is enabled on every object by bootcfs setup-root on first boot\n'), { mode: 0o644 });
  }
  return { ...prepared, etc, timings };
}

export interface BootFilesOptions {
  /** The image as pulled (before the bootable transform). */
  tree: FileSystem;
  read: ContentReader;
  /** The bootable composefs digest (hex). */
  digest: string;
  algorithm: HashAlgorithm;
  erofsFormat: ErofsFormatVersion;
  verity: VerityMode;
  kver?: string;
  bootTimeout?: number;
  /** Extra kernel arguments the caller asked for (refused for a sealed UKI). */
  extraKargs: readonly string[];
  /** The Type 1 command line, given the image's kargs.d arguments (called only for Type 1). */
  typeOneArgs: (imageKargs: string[]) => string[];
}

export interface BootFiles {
  bootType: BootType;
  /** SHA-256 hex of kernel ‖ initrd (UKI: its .linux ‖ .initrd sections). */
  bootDigest: string;
  cmdline: string;
  kver: string;
  osId: string;
  version: string;
  /** The image's kargs.d arguments. */
  imageKargs: string[];
  /** Files for the ESP (systemd-boot, loader.conf, kernel+initrd or UKI), the primary BLS entry last. */
  espFiles: EspFile[];
  /** The primary entry (sort-key `-0`), also serialized as the last of espFiles at entryPath. */
  entry: BlsEntry;
  entryPath: string;
}

/**
 * What the ESP needs to boot the deployment `digest` of image `tree`: systemd-boot, loader.conf, the
 * sealed UKI (checked against `digest`) or kernel + initrd, and its primary BLS entry.
 */
export async function prepareBootFiles(o: BootFilesOptions): Promise<BootFiles> {
  const { tree, read, digest, algorithm, erofsFormat, verity } = o;
  const readFile = async (p: string): Promise<Buffer | undefined> => readTreeFile(read, tree, p);
  const inputs = await readBootInputs(read, tree, o.kver);
  const ukiNames = listTreeDir(tree, `/${SEALED_UKI_DIR}`).filter(([n, i]) => i.isReg && n.toLowerCase().endsWith('.efi')).map(([n]) => n);
  const wanted = ukiNames.includes(`${inputs.kver}.efi`) ? `${inputs.kver}.efi` : ukiNames.length === 1 ? ukiNames[0] : undefined;
  if (ukiNames.length > 1 && wanted === undefined) throw new InstallError(`the image has several UKIs in /${SEALED_UKI_DIR} (${ukiNames.join(', ')}) and none for kernel ${inputs.kver}`);
  const esp: EspFile[] = [];
  let sd: Buffer | undefined;
  for (const c of IMAGE_SYSTEMD_BOOT_CANDIDATES) if ((sd = await readFile(c)) !== undefined) break;
  if (sd === undefined) throw new InstallError(`the image has no systemd-boot (${IMAGE_SYSTEMD_BOOT_CANDIDATES.join(', ')}); install systemd-boot-efi in the image`);
  esp.push({ path: 'EFI/BOOT/BOOTX64.EFI', data: sd }, { path: 'EFI/systemd/systemd-bootx64.efi', data: sd });
  esp.push({ path: 'loader/loader.conf', data: Buffer.from(`timeout ${o.bootTimeout ?? 5}\n`) });

  let bootType: BootType;
  let cmdline: string;
  let bootDigest: string;
  let osr: OsRelease;
  const entry: BlsEntry = { initrd: [], options: [], extra: [] };
  if (wanted !== undefined) {
    bootType = 'uki';
    const uki = (await readFile(`/${SEALED_UKI_DIR}/${wanted}`))!;
    const cmd = peSection(uki, '.cmdline');
    if (cmd === undefined) throw new InstallError(`/${SEALED_UKI_DIR}/${wanted} has no .cmdline section: not a sealed UKI`);
    cmdline = cmd.toString('utf8').replace(/\0+$/, '').trim();
    const k = composefsKarg(cmdline);
    if (k === undefined) throw new InstallError(`the UKI /${SEALED_UKI_DIR}/${wanted} has no composefs= argument: not sealed for composefs`);
    if (k.digest !== digest) {
      throw new InstallError(`the UKI in the image names composefs=${k.digest}, but this image's bootable composefs digest is ${digest} (${algorithm}, EROFS v${erofsFormat}): the image was changed after sealing, or sealed with another algorithm/format`);
    }
    if (k.verityOptional && verity !== 'none') throw new InstallError('the UKI says composefs=? (fs-verity optional): install it with --allow-missing-verity');
    if (!k.verityOptional && verity === 'none') throw new InstallError('the UKI is sealed (composefs= requires fs-verity): --allow-missing-verity cannot apply to it');
    if (o.extraKargs.length > 0) throw new InstallError('--karg cannot change a sealed UKI: its command line is signed (add kargs when building it)');
    const linux = peSection(uki, '.linux');
    if (linux === undefined) throw new InstallError(`the UKI /${SEALED_UKI_DIR}/${wanted} has no .linux section`);
    bootDigest = sha256(linux, peSection(uki, '.initrd') ?? Buffer.alloc(0));
    osr = parseOsRelease(peSection(uki, '.osrel')?.toString('utf8') ?? inputs.osRelease);
    esp.push({ path: `${UKI_DIR}/${ukiFileName(digest)}`, data: uki });
    entry.efi = `/${UKI_DIR}/${ukiFileName(digest)}`;
  } else {
    bootType = 'bls';
    const args = o.typeOneArgs(inputs.kargs);
    for (const a of args) if (/\s/.test(a) || a === '') throw new InstallError(`kernel argument ${JSON.stringify(a)} is empty or contains blanks`);
    cmdline = [...new Set(args)].join(' ');
    // a --karg composefs= would override ours (the last one wins): refuse
    if (composefsKarg(splitCmdline(cmdline))?.digest !== digest) throw new InstallError('a --karg composefs= would override the deployment digest');
    bootDigest = sha256(inputs.vmlinuz, inputs.initramfs);
    osr = parseOsRelease(inputs.osRelease);
    const dir = `EFI/Linux/${type1Dir(digest)}`;
    esp.push({ path: `${dir}/vmlinuz`, data: inputs.vmlinuz }, { path: `${dir}/initrd`, data: inputs.initramfs });
    entry.linux = `/${dir}/vmlinuz`;
    entry.initrd = [`/${dir}/initrd`];
    entry.options = [cmdline];
  }
  const version = osr.versionId ?? digest;
  entry.title = osr.prettyName ?? digest;
  entry.version = version;
  entry.sortKey = sortKey(osr.id, true);
  const entryPath = `loader/entries/${entryFileName(osr.id, version, true)}`;
  esp.push({ path: entryPath, data: Buffer.from(writeBlsEntry(entry)) });
  return { bootType, bootDigest, cmdline, kver: inputs.kver, osId: osr.id, version, imageKargs: inputs.kargs, espFiles: esp, entry, entryPath };
}

/**
 * `<root>/state/deploy/<digest>/{etc/, var -> ../../os/default/var, <digest>.origin}` for image `tree`
 * (`state/os/default/var` from the image's /var only when it does not exist yet). The origin is written
 * last: a state directory without it is an interrupted deployment.
 */
export async function writeDeploymentState(root: string, digest: string, tree: FileSystem, read: ContentReader, origin: DeploymentOrigin): Promise<MaterializeStats> {
  const deploy = path.join(root, STATE_DEPLOY, digest);
  const etcInode = resolveInTree(tree, '/etc');
  if (!etcInode?.isDir) throw new InstallError('the image has no /etc directory');
  const etc = await materializeTree(etcInode, path.join(deploy, 'etc'), read);
  const varDir = path.join(root, STATE_VAR);
  if (!(await exists(varDir))) {
    const varInode = resolveInTree(tree, '/var');
    if (varInode?.isDir) await materializeTree(varInode, varDir, read);
    else await fsp.mkdir(varDir, { recursive: true, mode: 0o755 });
  }
  await fsp.symlink('../../os/default/var', path.join(deploy, 'var'));
  await writeFileAtomic(path.join(deploy, originFileName(digest)), Buffer.from(writeOrigin(origin)), { mode: 0o644 });
  await fsyncDir(path.join(root, STATE_DEPLOY));
  return etc;
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}
