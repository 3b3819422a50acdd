/**
 * `bootcfs container ukify`: a UKI for an unpacked rootfs, as `bootc container ukify` builds it with
 * ukify — but with bootcfs's own PE writer and signer. The digest is the bootable composefs digest of the
 * rootfs (the same rules as compute-composefs-digest), the kernel comes from
 * `usr/lib/modules/<kver>/{vmlinuz,initramfs.img}` or `--kernel-dir`.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { HashAlgorithm } from '../fsverity/index.js';
import type { ErofsFormatVersion } from '../repository/meta.js';
import { composefsArg, kargsFromRootDirectory } from '../boot/kargs.js';
import { buildUki } from '../uki/uki.js';
import { signPe, type Signer } from '../authenticode/index.js';
import { computeComposefsDigestOfDirectory } from './digest.js';
import { HOST_STUB, IMAGE_STUB, SealError, reproducibleSigningTime } from './build.js';

export interface UkifyOptions {
  kernelDir?: string;
  kargs?: string[];
  allowMissingVerity?: boolean;
  stubPath?: string;
  signer?: Signer;
  algorithm?: HashAlgorithm;
  format?: ErofsFormatVersion;
}

async function readIf(p: string): Promise<Buffer | undefined> {
  try {
    return await fsp.readFile(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export async function ukifyRootfs(rootfs: string, opts: UkifyOptions = {}): Promise<{ uki: Buffer; digest: string; cmdline: string; kver: string }> {
  let kdir = opts.kernelDir;
  if (kdir === undefined) {
    const mods = path.join(rootfs, 'usr/lib/modules');
    const names = (await fsp.readdir(mods).catch(() => [] as string[])).sort();
    const withKernel: string[] = [];
    for (const n of names) if (await readIf(path.join(mods, n, 'vmlinuz')).then((b) => b !== undefined, () => false)) withKernel.push(n);
    if (withKernel.length !== 1) {
      throw new SealError(withKernel.length === 0 ? `no ${mods}/<kver>/vmlinuz (use --kernel-dir)` : `several kernels in ${mods} (${withKernel.join(', ')}): use --kernel-dir`);
    }
    kdir = path.join(mods, withKernel[0]!);
  }
  const kver = path.basename(path.resolve(kdir));
  const linux = await readIf(path.join(kdir, 'vmlinuz'));
  const initrd = await readIf(path.join(kdir, 'initramfs.img'));
  if (linux === undefined) throw new SealError(`${kdir}/vmlinuz is missing`);
  if (initrd === undefined) throw new SealError(`${kdir}/initramfs.img is missing`);
  const { digest } = await computeComposefsDigestOfDirectory(rootfs, { algorithm: opts.algorithm, format: opts.format });
  const kargs = await kargsFromRootDirectory(rootfs);
  const cmdline = [...kargs, composefsArg(digest, opts.allowMissingVerity ?? false), ...(opts.kargs ?? [])].join(' ');
  const stub = opts.stubPath ? await fsp.readFile(opts.stubPath) : (await readIf(path.join(rootfs, IMAGE_STUB))) ?? (await readIf(HOST_STUB));
  if (stub === undefined) throw new SealError(`no systemd stub in the rootfs or at ${HOST_STUB} (use --stub)`);
  const osRelease = (await readIf(path.join(rootfs, 'usr/lib/os-release')))?.toString('utf8');
  let uki = buildUki({ stub, linux, initrds: [initrd], cmdline, osRelease, uname: kver });
  if (opts.signer) uki = await signPe(uki, opts.signer, { signingTime: reproducibleSigningTime() });
  return { uki, digest, cmdline, kver };
}
