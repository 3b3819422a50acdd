/**
 * `bootcfs container build-sealed`: from an image reference to a sealed image, in one process, without
 * root, mounts or a container engine.
 *
 *  1. stream SOURCE's layers once into the merged tree (src/seal/image-tree.ts: files measured, not stored;
 *     only the boot inputs kept in memory) — no repository, nothing written but DEST;
 *  2. from the tree, read the kernel (`/usr/lib/modules/<kver>/vmlinuz`), the initramfs
 *     (`initramfs.img` next to it), kargs (`/usr/lib/bootc/kargs.d/*.toml`), `/usr/lib/os-release`, the
 *     systemd stub and systemd-boot (from the image, else the host's systemd-boot-efi, else --stub/--systemd-boot);
 *  3. apply the bootable transform and compute the composefs digest (repository algorithm and format);
 *  4. build the UKI with `.cmdline` = kargs.d + `composefs=<digest>` (`composefs=?` with
 *     allowMissingVerity) + extra kargs; sign it and systemd-boot; verify both signatures;
 *  5. write DEST = SOURCE + one layer that adds only under /boot: `/boot/EFI/Linux/<kver>.efi`,
 *     `/boot/EFI/systemd/systemd-bootx64.efi` and `/boot/<kver>.dump` (the sealed tree's dumpfile, used by
 *     verify-sealed to explain mismatches). `/boot` keeps the metadata it has in SOURCE, so the bootable
 *     transform (which empties /boot) sees the same tree;
 *  6. read DEST back (manifest, config, the new layer blob) and check that SOURCE's tree plus that layer has
 *     the bootable digest in the UKI — on every build.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { BootcfsError } from '../errors.js';
import { fsverityDigest, type HashAlgorithm } from '../fsverity/index.js';
import type { ErofsFormatVersion } from '../repository/meta.js';
import type { PullProgressEvent } from '../oci/pull.js';
import { writeImageBytes } from '../oci/image.js';
import { openImageSource, openLayer } from '../oci/source.js';
import { finishTree, loadImageTreeFrom, measuringHandler, type LoadedImage } from './image-tree.js';
import { parseImageReference } from '../oci/reference.js';
import { OciLayoutWriter, tarLayoutDirectory } from '../oci/layout-writer.js';
import { writeTar, type TarFileEntry } from '../oci/tar-writer.js';
import type { OciDescriptor } from '../oci/types.js';
import { RegistryClient, type RegistryOptions } from '../oci/registry.js';
import { transformForBoot, type ContentReader } from '../oci/bootable.js';
import { writeDumpfile } from '../dumpfile/index.js';
import { lookup, type FileSystem } from '../tree/model.js';
import { composefsArg, kargsFromFiles, KARGS_D } from '../boot/kargs.js';
import { buildUki } from '../uki/uki.js';
import { signPe, verifyPe, type Signer } from '../authenticode/index.js';
import { listTreeDir, readTreeFile } from './tree-files.js';

export const HOST_STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
export const HOST_SYSTEMD_BOOT = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
export const IMAGE_STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
export const IMAGE_SYSTEMD_BOOT = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
/** Where the sealed artifacts go inside the image. */
export const SEALED_UKI_DIR = 'boot/EFI/Linux';
export const SEALED_SYSTEMD_BOOT = 'boot/EFI/systemd/systemd-bootx64.efi';
export const FSVERITY_LABEL = 'containers.composefs.fsverity';

export class SealError extends BootcfsError {
  constructor(message: string) {
    super('EINVAL', message);
    this.name = 'SealError';
  }
}

export interface BuildSealedOptions {
  signer: Signer;
  /** Extra kernel arguments after kargs.d and composefs= */
  kargs?: string[];
  allowMissingVerity?: boolean;
  algorithm?: HashAlgorithm;
  format?: ErofsFormatVersion;
  /** kernel version directory under /usr/lib/modules (required when the image has several) */
  kver?: string;
  /** stub / systemd-boot files to use instead of the image's */
  stubPath?: string;
  systemdBootPath?: string;
  registry?: RegistryOptions;
  /** Path to also write the sealed tree's dumpfile to. */
  writeDumpfileTo?: string;
  onProgress?: (ev: PullProgressEvent | { kind: 'step'; step: string }) => void;
}

export interface BuildSealedResult {
  digest: string;
  algorithm: HashAlgorithm;
  kver: string;
  cmdline: string;
  ukiPath: string;
  ukiSize: number;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
  /** bootable digest of DEST, recomputed after writing (equals `digest`) */
  checkedDigest: string;
}

/** The inputs a sealed UKI is built from, read out of an image tree (before the bootable transform). */
export interface BootInputs {
  kver: string;
  vmlinuz: Buffer;
  initramfs: Buffer;
  kargs: string[];
  osRelease: string | undefined;
  stub: Buffer | undefined;
  systemdBoot: Buffer | undefined;
  existingUkis: string[];
}

export async function readBootInputs(read: ContentReader, fs: FileSystem, wantKver?: string): Promise<BootInputs> {
  const modules = listTreeDir(fs, '/usr/lib/modules').filter(([, i]) => i.isDir);
  const withKernel = modules.filter(([, dir]) => dir.entries?.get('vmlinuz')?.isReg);
  let kver: string;
  if (wantKver !== undefined) {
    if (!withKernel.some(([n]) => n === wantKver)) throw new SealError(`the image has no /usr/lib/modules/${wantKver}/vmlinuz`);
    kver = wantKver;
  } else {
    if (withKernel.length === 0) throw new SealError('the image has no kernel: no /usr/lib/modules/<kver>/vmlinuz');
    if (withKernel.length > 1) throw new SealError(`the image has several kernels (${withKernel.map(([n]) => n).join(', ')}): choose one with --kver`);
    kver = withKernel[0]![0];
  }
  const moddir = `/usr/lib/modules/${kver}`;
  const vmlinuz = (await readTreeFile(read, fs, `${moddir}/vmlinuz`))!;
  const initramfs = await readTreeFile(read, fs, `${moddir}/initramfs.img`);
  if (initramfs === undefined) throw new SealError(`the image has no ${moddir}/initramfs.img`);
  const kargFiles: Array<{ name: string; text: string }> = [];
  for (const [name, inode] of listTreeDir(fs, `/${KARGS_D}`)) {
    if (!inode.isReg || !name.endsWith('.toml')) continue;
    kargFiles.push({ name: Buffer.from(name, 'latin1').toString('utf8'), text: (await read(inode, `/${KARGS_D}/${name}`)).toString('utf8') });
  }
  const kargs = await kargsFromFiles(kargFiles);
  const osRelease = (await readTreeFile(read, fs, '/usr/lib/os-release'))?.toString('utf8') ?? (await readTreeFile(read, fs, '/etc/os-release'))?.toString('utf8');
  const existingUkis = listTreeDir(fs, `/${SEALED_UKI_DIR}`).filter(([n, i]) => i.isReg && n.toLowerCase().endsWith('.efi')).map(([n]) => n);
  return {
    kver, vmlinuz, initramfs, kargs, osRelease, existingUkis,
    stub: await readTreeFile(read, fs, IMAGE_STUB),
    systemdBoot: await readTreeFile(read, fs, IMAGE_SYSTEMD_BOOT),
  };
}

/**
 * The bootable composefs digest of a tree (mutates the tree: bootable transform). `readContent` reads
 * external files (the SELinux policy) — from the repository or from disk.
 */
export async function sealedDigest(fs: FileSystem, algorithm: HashAlgorithm, format: ErofsFormatVersion, readContent: ContentReader): Promise<Buffer> {
  await transformForBoot(fs, { readContent });
  return fsverityDigest(writeImageBytes(fs, format, algorithm), algorithm);
}


const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export async function buildSealed(sourceRef: string, destRef: string, opts: BuildSealedOptions): Promise<BuildSealedResult> {
  const dest = parseImageReference(destRef);
  if (dest.transport !== 'oci' && dest.transport !== 'oci-archive' && dest.transport !== 'docker') {
    throw new SealError(`build-sealed writes oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker://REF destinations (got ${dest.transport}:)`);
  }
  if (dest.transport === 'docker' && dest.digest !== undefined) throw new SealError('a destination cannot name a digest (the sealed manifest is new): give a tag');
  const step = (s: string): void => opts.onProgress?.({ kind: 'step', step: s });
  const algorithm = opts.algorithm ?? 'sha512';
  const format = opts.format ?? 1;
  const source = await openImageSource(sourceRef, { registry: opts.registry });
  try {
    step('read');
    const loaded = await loadImageTreeFrom(source, { algorithm });
    const read = loaded.captured.reader();
    const tree = loaded.tree;
    const inputs = await readBootInputs(read, tree, opts.kver);
    if (inputs.existingUkis.length > 0) {
      throw new SealError(`the image already carries a UKI (/${SEALED_UKI_DIR}/${inputs.existingUkis.join(', ')}): it is sealed already`);
    }
    if (inputs.osRelease === undefined) throw new SealError('the image has no /usr/lib/os-release (or /etc/os-release): the UKI needs .osrel, or systemd-boot does not list it');
    const boot = lookup(tree.root, '/boot');
    if (boot === undefined || !boot.isDir) throw new SealError('the image has no /boot directory (needed by the bootable transform)');
    const usr = lookup(tree.root, '/usr')!;
    const bootMeta = { mode: boot.mode & 0o7777, uid: boot.uid, gid: boot.gid, mtimeSec: boot.mtimeSec, mtimeNsec: boot.mtimeNsec, xattrs: new Map(boot.xattrs) };
    const stub = opts.stubPath ? await fsp.readFile(opts.stubPath) : inputs.stub ?? (await readHostFile(HOST_STUB, 'systemd stub (install systemd-boot-efi or pass --stub)'));
    const sdboot = opts.systemdBootPath ? await fsp.readFile(opts.systemdBootPath) : inputs.systemdBoot ?? (await readHostFile(HOST_SYSTEMD_BOOT, 'systemd-boot (install systemd-boot-efi or pass --systemd-boot)'));

    step('digest');
    const digest = await sealedDigest(tree, algorithm, format, read);
    const digestHex = digest.toString('hex');
    const dump = writeDumpfile(tree);
    if (opts.writeDumpfileTo) await fsp.writeFile(opts.writeDumpfileTo, dump);

    step('uki');
    const cmdline = [...inputs.kargs, composefsArg(digestHex, opts.allowMissingVerity ?? false), ...(opts.kargs ?? [])].join(' ');
    const uki = buildUki({ stub, linux: inputs.vmlinuz, initrds: [inputs.initramfs], cmdline, osRelease: inputs.osRelease, uname: inputs.kver });
    const signedUki = await signPe(uki, opts.signer, { signingTime: reproducibleSigningTime() });
    const signedBoot = await signPe(sdboot, opts.signer, { signingTime: reproducibleSigningTime() });
    for (const [what, pe] of [['UKI', signedUki], ['systemd-boot', signedBoot]] as const) {
      const v = verifyPe(pe, { certificates: [opts.signer.certificates[0]!] });
      if (!v.matches || !v.signatures.some((s) => s.verified)) throw new SealError(`the signed ${what} does not verify against the signing certificate`);
    }

    step('layer');
    const dirMeta = { mode: 0o755, uid: 0, gid: 0, mtimeSec: usr.mtimeSec, mtimeNsec: 0 };
    const ukiRel = `${SEALED_UKI_DIR}/${inputs.kver}.efi`;
    const entries: TarFileEntry[] = [
      { path: 'boot', type: 'dir', ...bootMeta },
      { path: `boot/${inputs.kver}.dump`, type: 'reg', ...dirMeta, mode: 0o644, content: dump },
      { path: 'boot/EFI', type: 'dir', ...dirMeta },
      { path: 'boot/EFI/Linux', type: 'dir', ...dirMeta },
      { path: ukiRel, type: 'reg', ...dirMeta, mode: 0o644, content: signedUki },
      { path: 'boot/EFI/systemd', type: 'dir', ...dirMeta },
      { path: SEALED_SYSTEMD_BOOT, type: 'reg', ...dirMeta, mode: 0o644, content: signedBoot },
    ];
    const tar = writeTar(entries);
    const diffId = sha256(tar);
    const gz = gzipSync(tar, { level: 6 });
    const layerDigest = sha256(gz);

    step('write');
    const man = loaded.manifest;
    const cfg = loaded.config;
    const config = JSON.parse(cfg.bytes.toString('utf8')) as Record<string, unknown> & { rootfs: { diff_ids: string[] }; history?: unknown[]; config?: Record<string, unknown> };
    const sourceDiffIds = [...config.rootfs.diff_ids];
    config.rootfs.diff_ids = [...sourceDiffIds, diffId];
    if (Array.isArray(config.history)) {
      config.history = [...config.history, { created: typeof config.created === 'string' ? config.created : '1970-01-01T00:00:00Z', created_by: 'bootcfs container build-sealed', comment: `sealed UKI ${composefsArg(digestHex, opts.allowMissingVerity ?? false)}` }];
    }
    const inner = (config.config ??= {}) as Record<string, unknown>;
    inner.Labels = { ...((inner.Labels as Record<string, string> | null) ?? {}), [FSVERITY_LABEL]: `${algorithm}:${digestHex}` };
    const configBytes = Buffer.from(JSON.stringify(config));
    const manifest = JSON.parse(man.bytes.toString('utf8')) as { mediaType?: string; config: OciDescriptor; layers: OciDescriptor[] };
    const docker = man.mediaType === 'application/vnd.docker.distribution.manifest.v2+json';
    const configDesc = { ...manifest.config, digest: sha256(configBytes), size: configBytes.length };
    const layerDesc: OciDescriptor = {
      mediaType: docker ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: layerDigest,
      size: gz.length,
    };
    const sourceLayers = manifest.layers;
    manifest.config = configDesc;
    manifest.layers = [...manifest.layers, layerDesc];
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    const manifestDesc: OciDescriptor = { mediaType: man.mediaType, digest: sha256(manifestBytes), size: manifestBytes.length };

    const writeTo = async (dir: string, tag: string | undefined): Promise<void> => {
      const w = await OciLayoutWriter.open(dir);
      for (const l of sourceLayers) await w.putBlob(l, source.openBlob(l));
      await w.putBlob(layerDesc, gz);
      await w.putBlob(configDesc, configBytes);
      await w.putBlob(manifestDesc, manifestBytes);
      await w.addManifest(manifestDesc, tag);
    };
    if (dest.transport === 'oci') await writeTo(dest.path, dest.tag);
    else if (dest.transport === 'docker') {
      const client = new RegistryClient(dest.registry, opts.registry ?? {});
      try {
        for (const l of sourceLayers) await client.pushBlob(dest.repository, l, () => source.openBlob(l));
        await client.pushBlob(dest.repository, layerDesc, () => gz);
        await client.pushBlob(dest.repository, configDesc, () => configBytes);
        await client.putManifest(dest.repository, dest.tag ?? 'latest', manifestBytes, man.mediaType);
      } finally {
        client.close();
      }
    } else {
      const tmp = await fsp.mkdtemp(path.join(path.dirname(path.resolve(dest.path)), '.bootcfs-archive-'));
      try {
        await writeTo(tmp, dest.tag);
        await tarLayoutDirectory(tmp, dest.path);
      } finally {
        await fsp.rm(tmp, { recursive: true, force: true });
      }
    }

    step('check');
    const check = await checkWrittenImage(destRef, opts.registry, { sourceLayers, sourceDiffIds, layerDigest, diffId, loaded, algorithm, format });
    if (check !== digestHex) {
      throw new SealError(`internal check failed: the written image's bootable digest ${check} differs from the sealed ${digestHex}`);
    }
    return {
      digest: digestHex, algorithm, kver: inputs.kver, cmdline, ukiPath: `/${ukiRel}`, ukiSize: signedUki.length,
      manifestDigest: manifestDesc.digest, configDigest: configDesc.digest, layerDigest, checkedDigest: check,
    };
  } finally {
    await source.close();
  }
}

/**
 * Reads DEST back through its reference: its manifest must list SOURCE's layers plus exactly the new one,
 * its config SOURCE's diff_ids plus the new one; the new layer blob is read from DEST (digest and diff_id
 * verified) and applied on top of SOURCE's tree; returns the bootable digest of the result.
 */
async function checkWrittenImage(
  destRef: string,
  registry: RegistryOptions | undefined,
  c: { sourceLayers: OciDescriptor[]; sourceDiffIds: string[]; layerDigest: string; diffId: string; loaded: LoadedImage; algorithm: HashAlgorithm; format: ErofsFormatVersion },
): Promise<string> {
  const dest = await openImageSource(destRef, { registry });
  try {
    const m = await dest.getManifest();
    const cfg = await dest.getConfig();
    const layers = m.manifest.layers;
    const want = [...c.sourceLayers.map((l) => l.digest), c.layerDigest];
    if (layers.length !== want.length || layers.some((l, i) => l.digest !== want[i])) {
      throw new SealError(`internal check failed: ${destRef} does not list the source's layers plus the sealed one`);
    }
    const ids = cfg.config.rootfs.diff_ids;
    const wantIds = [...c.sourceDiffIds, c.diffId];
    if (ids.length !== wantIds.length || ids.some((d, i) => d !== wantIds[i])) {
      throw new SealError(`internal check failed: the config of ${destRef} does not carry the source's diff_ids plus the sealed one`);
    }
    const captured = c.loaded.captured;
    await c.loaded.builder.applyLayer(openLayer(dest, layers[layers.length - 1]!, { diffId: c.diffId }), {
      external: measuringHandler(c.algorithm, captured, () => false),
      layerName: 'sealed layer',
    });
    return (await sealedDigest(finishTree(c.loaded.builder), c.algorithm, c.format, captured.reader())).toString('hex');
  } finally {
    await dest.close();
  }
}

/**
 * Signatures carry no signingTime unless SOURCE_DATE_EPOCH asks for one, so that two builds of the same
 * image give byte-identical UKIs (RSA PKCS#1 v1.5 signatures are deterministic).
 */
export function reproducibleSigningTime(): Date | null {
  const e = process.env.SOURCE_DATE_EPOCH;
  return e !== undefined && /^[0-9]+$/.test(e) ? new Date(Number(e) * 1000) : null;
}

async function readHostFile(p: string, what: string): Promise<Buffer> {
  try {
    return await fsp.readFile(p);
  } catch {
    throw new SealError(`the image has no ${what} and ${p} is missing on this host`);
  }
}
