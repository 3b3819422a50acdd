/**
 * `bootcfs container verify-sealed SOURCE [--cert C]`: checks a sealed image offline.
 *
 * For every UKI under /boot/EFI/Linux: its Authenticode signature (against the given certificates, or at
 * least internally consistent without them), its `.cmdline` `composefs=` digest against the image's
 * bootable digest recomputed from the layers; systemd-boot's signature. On a digest mismatch, the
 * sealed tree's dumpfile recorded at build time (`/boot/<kver>.dump`) is compared with the current
 * tree's, entry by entry, and every differing path is named with the fields that differ.
 */
import type { HashAlgorithm } from '../fsverity/index.js';
import type { ErofsFormatVersion } from '../repository/meta.js';
import type { RegistryOptions } from '../oci/registry.js';
import { writeDumpfile, parseDumpfile } from '../dumpfile/index.js';
import { composefsKarg } from '../boot/kargs.js';
import { inspectUki } from '../uki/uki.js';
import { verifyPe } from '../authenticode/index.js';
import { listTreeDir, readTreeFile } from './tree-files.js';
import { loadImageTree } from './image-tree.js';
import { SEALED_SYSTEMD_BOOT, SEALED_UKI_DIR, sealedDigest } from './build.js';
import { diffDumpfiles, type DumpDifference } from './dump-diff.js';

export interface SignatureReport {
  signed: boolean;
  /** signature cryptographically valid and the signed digest equals the file's */
  valid: boolean;
  /** signer chains to one of the trusted certificates (undefined when none were given) */
  trusted: boolean | undefined;
  signers: string[];
  reason?: string;
}

export interface UkiReport {
  path: string;
  cmdline: string;
  composefsDigest: string | undefined;
  verityOptional: boolean;
  signature: SignatureReport;
  digestMatches: boolean;
}

export interface VerifySealedResult {
  ok: boolean;
  algorithm: HashAlgorithm;
  /** bootable composefs digest recomputed from the image */
  computedDigest: string;
  ukis: UkiReport[];
  systemdBoot: SignatureReport | undefined;
  problems: string[];
  /** things worth knowing that do not fail the check (e.g. composefs=? in a UKI) */
  warnings: string[];
  /** present when a digest mismatched and a recorded dumpfile was found */
  differences?: DumpDifference[];
}

export interface VerifySealedOptions {
  certificates?: Buffer[];
  algorithm?: HashAlgorithm;
  format?: ErofsFormatVersion;
  registry?: RegistryOptions;
}

function signatureReport(pe: Buffer, certificates: Buffer[] | undefined): SignatureReport {
  try {
    // first without trust anchors (is the signature itself sound?), then against the given certificates
    const v = verifyPe(pe, {});
    const sigs = v.signatures;
    if (sigs.length === 0) return { signed: false, valid: false, trusted: certificates ? false : undefined, signers: [], reason: 'not signed' };
    const valid = v.matches && v.verified;
    const reason = !v.matches ? 'the signed digest does not match the file (modified after signing)' : sigs.find((s) => s.reason)?.reason;
    let trusted: boolean | undefined;
    if (certificates && certificates.length > 0) trusted = valid && verifyPe(pe, { certificates }).verified;
    return { signed: true, valid, trusted, signers: sigs.map((s) => s.signerSubject ?? '?'), reason: valid ? undefined : reason };
  } catch (e) {
    return { signed: false, valid: false, trusted: false, signers: [], reason: (e as Error).message };
  }
}

export async function verifySealed(sourceRef: string, opts: VerifySealedOptions = {}): Promise<VerifySealedResult> {
  const algorithm = opts.algorithm ?? 'sha512';
  const format = opts.format ?? 1;
  {
    const loaded = await loadImageTree(sourceRef, { algorithm, registry: opts.registry });
    const read = loaded.captured.reader();
    const tree = loaded.tree;
    const problems: string[] = [];
    const warnings: string[] = [];
    const ukiFiles = listTreeDir(tree, `/${SEALED_UKI_DIR}`).filter(([n, i]) => i.isReg && n.toLowerCase().endsWith('.efi'));
    const ukiData: Array<{ name: string; data: Buffer }> = [];
    for (const [name, inode] of ukiFiles) ukiData.push({ name, data: await read(inode, `/${SEALED_UKI_DIR}/${name}`) });
    const sdboot = await readTreeFile(read, tree, `/${SEALED_SYSTEMD_BOOT}`);
    const dumps = new Map<string, Buffer>();
    for (const [name, inode] of listTreeDir(tree, '/boot')) {
      if (inode.isReg && name.endsWith('.dump')) dumps.set(name.slice(0, -'.dump'.length), await read(inode, `/boot/${name}`));
    }

    const computed = (await sealedDigest(tree, algorithm, format, read)).toString('hex');
    const ukis: UkiReport[] = [];
    if (ukiData.length === 0) problems.push(`no UKI under /${SEALED_UKI_DIR}: the image is not sealed`);
    let mismatch: string | undefined;
    for (const { name, data } of ukiData) {
      const p = `/${SEALED_UKI_DIR}/${name}`;
      let cmdline = '';
      try {
        const info = inspectUki(data);
        cmdline = info.sections.find((s) => s.name === '.cmdline')?.text?.replace(/\0+$/, '').trim() ?? '';
      } catch (e) {
        problems.push(`${p}: not a readable UKI: ${(e as Error).message}`);
      }
      let karg;
      try {
        karg = composefsKarg(cmdline);
      } catch (e) {
        problems.push(`${p}: ${(e as Error).message}`);
      }
      if (cmdline && karg === undefined) problems.push(`${p}: the command line has no composefs= argument`);
      const signature = signatureReport(data, opts.certificates);
      if (!signature.signed) problems.push(`${p}: not signed`);
      else if (!signature.valid) problems.push(`${p}: signature invalid: ${signature.reason ?? 'verification failed'}`);
      else if (signature.trusted === false) problems.push(`${p}: not signed by a trusted certificate`);
      const digestMatches = karg?.digest === computed;
      if (karg && !digestMatches) {
        problems.push(`${p}: the UKI has composefs=${karg.verityOptional ? '?' : ''}${karg.digest}, but the image's bootable digest is ${computed}`);
        mismatch = name.replace(/\.efi$/i, '');
      }
      if (karg?.verityOptional) warnings.push(`${p}: composefs=? (fs-verity optional): the root is not verified at boot`);
      ukis.push({ path: p, cmdline, composefsDigest: karg?.digest, verityOptional: karg?.verityOptional ?? false, signature, digestMatches });
    }
    let systemdBoot: SignatureReport | undefined;
    if (sdboot !== undefined) {
      systemdBoot = signatureReport(sdboot, opts.certificates);
      if (!systemdBoot.valid) problems.push(`/${SEALED_SYSTEMD_BOOT}: ${systemdBoot.signed ? `signature invalid: ${systemdBoot.reason}` : 'not signed'}`);
      else if (systemdBoot.trusted === false) problems.push(`/${SEALED_SYSTEMD_BOOT}: not signed by a trusted certificate`);
    }
    let differences: DumpDifference[] | undefined;
    if (mismatch !== undefined) {
      const recorded = dumps.get(mismatch) ?? (dumps.size === 1 ? [...dumps.values()][0] : undefined);
      if (recorded === undefined) problems.push(`no recorded dumpfile (/boot/${mismatch}.dump) to explain the mismatch`);
      else {
        const normalised = writeDumpfile(parseDumpfile(recorded));
        differences = diffDumpfiles(normalised, writeDumpfile(tree));
        for (const d of differences.slice(0, 50)) problems.push(`  ${d.path}: ${d.kind}${d.fields ? ` (${d.fields.join(', ')})` : ''}`);
        if (differences.length > 50) problems.push(`  … ${differences.length - 50} more differences`);
      }
    }
    const ok = problems.filter((p) => !p.startsWith('  ')).length === 0;
    return { ok, algorithm, computedDigest: computed, ukis, systemdBoot, problems, warnings, differences };
  }
}
