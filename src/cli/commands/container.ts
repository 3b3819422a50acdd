/**
 * `bootcfs container …`: the build-time verbs of `bootc container`, for sealed images.
 *
 *   compute-composefs-digest (--image SOURCE | ROOTFS)   the bootable composefs digest
 *   ukify --rootfs DIR ... --output UKI                   a (signed) UKI for an unpacked rootfs
 *   build-sealed SOURCE --output DEST --key K --cert C    the whole sealed build, unprivileged
 *   verify-sealed SOURCE [--cert C]                        check a sealed image offline
 */
import { promises as fsp } from 'node:fs';
import { UsageError, parseCli, writeOut, type Command } from '../command.js';
import { isHashAlgorithm, type HashAlgorithm } from '../../fsverity/index.js';
import type { ErofsFormatVersion } from '../../repository/meta.js';
import { writeFileAtomic } from '../../util/atomic-file.js';

const HELP_OPT = { help: { type: 'boolean', short: 'h' } } as const;
const FORMAT_OPTS = { hash: { type: 'string' }, format: { type: 'string' } } as const;
const SIGN_OPTS = {
  key: { type: 'string' },
  cert: { type: 'string' },
  'sign-with-command': { type: 'string' },
} as const;

interface Sub {
  summary: string;
  help: string;
  run(argv: string[]): Promise<number>;
}

function formatOptions(values: { hash?: string; format?: string }): { algorithm: HashAlgorithm; format: ErofsFormatVersion } {
  const hash = values.hash ?? 'sha512';
  if (!isHashAlgorithm(hash)) throw new UsageError(`unknown hash algorithm '${hash}' (available: sha256 sha512)`);
  const f = values.format ?? 'v1';
  if (f !== 'v1' && f !== 'v2') throw new UsageError(`unknown image format '${f}' (available: v1 v2)`);
  return { algorithm: hash, format: f === 'v1' ? 1 : 2 };
}

async function signerFrom(values: { key?: string; cert?: string; 'sign-with-command'?: string }, required: boolean) {
  const { keySigner, commandSigner } = await import('../../authenticode/index.js');
  if (values.cert === undefined) {
    if (values.key !== undefined || values['sign-with-command'] !== undefined) throw new UsageError('--cert is required to sign');
    if (required) throw new UsageError('signing needs --cert and --key (or --sign-with-command)');
    return undefined;
  }
  const certPem = await fsp.readFile(values.cert);
  if (values['sign-with-command'] !== undefined) {
    if (values.key !== undefined) throw new UsageError('--key and --sign-with-command exclude each other');
    return commandSigner(values['sign-with-command'], certPem);
  }
  if (values.key === undefined) throw new UsageError('--key (or --sign-with-command) is required with --cert');
  return keySigner(await fsp.readFile(values.key), certPem);
}

const subs: Record<string, Sub> = {
  'compute-composefs-digest': {
    summary: 'print the composefs digest of an image after the bootable transform',
    help: `Usage: bootcfs container compute-composefs-digest [options] (--image SOURCE | ROOTFS)

Print the fs-verity digest (hex) of the composefs image the installer and the booted system compute for
an image: OCI root transform, then the bootable transform (/boot and /sysroot emptied with pinned mtimes,
SELinux labels from the image's policy). From an image reference (layers streamed and measured, nothing stored;
oci:, oci-archive:, docker-archive:, docker://) or from the same image unpacked into ROOTFS: both give the
same digest.

Options:
  --image SOURCE             compute from an image reference
  --hash ALG                 sha512 (default, as bootc) or sha256
  --format FMT               v1 (default) or v2
  --write-dumpfile-to FILE   also write the bootable tree's composefs dumpfile
  -h, --help                 show this help`,
    async run(argv) {
      const { values, positionals } = parseCli(argv, { image: { type: 'string' }, 'write-dumpfile-to': { type: 'string' }, ...FORMAT_OPTS, ...HELP_OPT });
      if (values.help) return help(this);
      const { algorithm, format } = formatOptions(values);
      if ((values.image === undefined) === (positionals.length === 0)) throw new UsageError('give either --image SOURCE or ROOTFS');
      if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
      const m = await import('../../seal/digest.js');
      const dumpfile = values['write-dumpfile-to'] !== undefined;
      const r = values.image !== undefined
        ? await m.computeComposefsDigestOfImage(values.image, { algorithm, format, dumpfile })
        : await m.computeComposefsDigestOfDirectory(positionals[0]!, { algorithm, format, dumpfile });
      if (r.dumpfile) await writeFileAtomic(values['write-dumpfile-to']!, r.dumpfile);
      await writeOut(process.stdout, `${r.digest}\n`);
      return 0;
    },
  },
  ukify: {
    summary: 'build a (signed) UKI for an unpacked rootfs with its composefs digest',
    help: `Usage: bootcfs container ukify --rootfs DIR --output UKI [options]

Like 'bootc container ukify', without ukify: computes the bootable composefs digest of DIR, reads
DIR/usr/lib/bootc/kargs.d, and builds a UKI from DIR/usr/lib/modules/<kver>/{vmlinuz,initramfs.img}
(or --kernel-dir) with .cmdline = kargs + composefs=<digest> + --karg values, .osrel from
DIR/usr/lib/os-release and .uname = kver, on the systemd stub (DIR's, else the host's). With --key/--cert
(or --sign-with-command/--cert) the UKI is signed for Secure Boot.

Options:
  --rootfs DIR                the unpacked image
  --output FILE               where to write the UKI (atomically)
  --kernel-dir DIR            take vmlinuz and initramfs.img from DIR (kver = its name)
  --karg ARG                  extra kernel argument (repeatable)
  --allow-missing-verity      composefs=?<digest> (fs-verity optional at boot)
  --stub FILE                 systemd stub to use
  --key FILE --cert FILE      sign with this key and certificate
  --sign-with-command CMD     sign with an external command (gets the 32-byte digest on stdin, prints the signature)
  --hash ALG, --format FMT    digest algorithm / image format (sha512, v1)
  -h, --help                  show this help`,
    async run(argv) {
      const { values, positionals } = parseCli(argv, {
        rootfs: { type: 'string' }, output: { type: 'string' }, 'kernel-dir': { type: 'string' }, karg: { type: 'string', multiple: true },
        'allow-missing-verity': { type: 'boolean' }, stub: { type: 'string' }, ...SIGN_OPTS, ...FORMAT_OPTS, ...HELP_OPT,
      });
      if (values.help) return help(this);
      if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
      if (values.rootfs === undefined || values.output === undefined) throw new UsageError('--rootfs and --output are required');
      const { algorithm, format } = formatOptions(values);
      const signer = await signerFrom(values, false);
      const { ukifyRootfs } = await import('../../seal/ukify.js');
      const r = await ukifyRootfs(values.rootfs, {
        kernelDir: values['kernel-dir'], kargs: values.karg, allowMissingVerity: values['allow-missing-verity'], stubPath: values.stub, signer, algorithm, format,
      });
      await writeFileAtomic(values.output, r.uki);
      await writeOut(process.stderr, `composefs digest ${r.digest}; cmdline: ${r.cmdline}\n`);
      return 0;
    },
  },
  'build-sealed': {
    summary: 'build a sealed image (signed UKI with composefs=<digest>) from an image',
    help: `Usage: bootcfs container build-sealed SOURCE --output DEST (--key K --cert C | --sign-with-command CMD --cert C) [options]

Pull SOURCE, compute its bootable composefs digest, build a UKI whose .cmdline carries composefs=<digest>
(kernel and initramfs from /usr/lib/modules/<kver>/, kargs from /usr/lib/bootc/kargs.d), sign it and
systemd-boot, and write DEST = SOURCE plus one layer that adds only under /boot:
/boot/EFI/Linux/<kver>.efi, /boot/EFI/systemd/systemd-bootx64.efi and /boot/<kver>.dump (the sealed tree,
for verify-sealed). DEST's bootable digest is recomputed after writing and must equal the sealed one.
No root, no mounts, no container engine.

SOURCE: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE, docker://REF. DEST: oci:DIR[:TAG],
oci-archive:FILE[:TAG] or docker://REF (pushed).

Options:
  --output DEST               the sealed image
  --key FILE --cert FILE      Secure Boot signing key and certificate (db)
  --sign-with-command CMD     external signer (HSM/CI): gets the 32-byte to-be-signed digest on stdin
                              (and in $BOOTCFS_TBS_DIGEST as hex), prints the raw signature
  --karg ARG                  extra kernel argument (repeatable)
  --allow-missing-verity      composefs=?<digest>: boot even where fs-verity is missing (not sealed!)
  --kver VERSION              kernel to use when the image has several
  --stub FILE                 systemd stub (default: the image's, else the host's)
  --systemd-boot FILE         systemd-boot binary (default: the image's, else the host's)
  --hash ALG, --format FMT    digest algorithm / image format (sha512, v1)
  --write-dumpfile-to FILE    also write the sealed tree's dumpfile here
  --json                      print the result as JSON
  -h, --help                  show this help`,
    async run(argv) {
      const { values, positionals } = parseCli(argv, {
        output: { type: 'string' }, karg: { type: 'string', multiple: true }, 'allow-missing-verity': { type: 'boolean' }, kver: { type: 'string' },
        stub: { type: 'string' }, 'systemd-boot': { type: 'string' }, 'write-dumpfile-to': { type: 'string' }, json: { type: 'boolean' },
        ...SIGN_OPTS, ...FORMAT_OPTS, ...HELP_OPT,
      });
      if (values.help) return help(this);
      if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'missing SOURCE' : `unexpected argument '${positionals[1]}'`);
      if (values.output === undefined) throw new UsageError('--output DEST is required');
      const { algorithm, format } = formatOptions(values);
      const signer = (await signerFrom(values, true))!;
      const { buildSealed } = await import('../../seal/build.js');
      const r = await buildSealed(positionals[0]!, values.output, {
        signer, kargs: values.karg, allowMissingVerity: values['allow-missing-verity'], kver: values.kver, stubPath: values.stub,
        systemdBootPath: values['systemd-boot'], algorithm, format, writeDumpfileTo: values['write-dumpfile-to'],
      });
      if (values.json) await writeOut(process.stdout, `${JSON.stringify(r, null, 2)}\n`);
      else {
        await writeOut(process.stdout, `composefs digest: ${r.algorithm}:${r.digest}\nkernel: ${r.kver}\ncmdline: ${r.cmdline}\nUKI: ${r.ukiPath} (${r.ukiSize} bytes, signed)\nmanifest: ${r.manifestDigest}\nconfig: ${r.configDigest}\n`);
      }
      return 0;
    },
  },
  'verify-sealed': {
    summary: 'check a sealed image offline: signatures, cmdline digest, recomputed digest',
    help: `Usage: bootcfs container verify-sealed SOURCE [--cert FILE]... [--json]

Check a sealed image without booting it: every UKI under /boot/EFI/Linux is signed (by one of the --cert
certificates, when given) and its .cmdline composefs= digest equals the image's bootable digest
recomputed from its layers; systemd-boot is signed. On a digest mismatch, the dumpfile recorded at build
time (/boot/<kver>.dump) is compared with the image's tree and every differing path is listed.
Exit status: 0 all checks pass, 1 a check failed.

Options:
  --cert FILE                 trusted signing certificate (PEM or DER; repeatable)
  --hash ALG, --format FMT    digest algorithm / image format the seal used (sha512, v1)
  --json                      print the full report as JSON
  -h, --help                  show this help`,
    async run(argv) {
      const { values, positionals } = parseCli(argv, { cert: { type: 'string', multiple: true }, json: { type: 'boolean' }, ...FORMAT_OPTS, ...HELP_OPT });
      if (values.help) return help(this);
      if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'missing SOURCE' : `unexpected argument '${positionals[1]}'`);
      const { algorithm, format } = formatOptions(values);
      const certificates = values.cert ? await Promise.all(values.cert.map((c) => fsp.readFile(c))) : undefined;
      const { verifySealed } = await import('../../seal/verify.js');
      const r = await verifySealed(positionals[0]!, { certificates, algorithm, format });
      if (values.json) await writeOut(process.stdout, `${JSON.stringify(r, null, 2)}\n`);
      else {
        const lines = [`image digest (bootable, ${r.algorithm}): ${r.computedDigest}`];
        for (const u of r.ukis) {
          lines.push(`${u.path}: composefs=${u.verityOptional ? '?' : ''}${u.composefsDigest ?? '(none)'} ${u.digestMatches ? 'matches' : 'DOES NOT MATCH'}; signature ${u.signature.valid ? 'valid' : 'INVALID'}${u.signature.trusted === undefined ? ' (no --cert given: trust not checked)' : u.signature.trusted ? ', trusted' : ', NOT TRUSTED'}${u.signature.signers.length ? ` [${u.signature.signers.join('; ')}]` : ''}`);
        }
        if (r.systemdBoot) lines.push(`systemd-boot: signature ${r.systemdBoot.valid ? 'valid' : 'INVALID'}${r.systemdBoot.trusted === undefined ? '' : r.systemdBoot.trusted ? ', trusted' : ', NOT TRUSTED'}`);
        for (const w of r.warnings) lines.push(`warning: ${w}`);
        for (const p of r.problems) lines.push(p.startsWith('  ') ? p : `problem: ${p}`);
        lines.push(r.ok ? 'verify-sealed: OK' : 'verify-sealed: FAILED');
        await writeOut(process.stdout, `${lines.join('\n')}\n`);
      }
      return r.ok ? 0 : 1;
    },
  },
};

async function help(s: Sub): Promise<number> {
  await writeOut(process.stdout, `${s.help}\n`);
  return 0;
}

const HELP = `Usage: bootcfs container COMMAND [options...]

Build-time commands for sealed images (like bootc container).

Commands:
${Object.entries(subs).map(([n, s]) => `  ${n.padEnd(26)} ${s.summary}`).join('\n')}

Run 'bootcfs container COMMAND --help' for a command's options.`;

export const command: Command = {
  name: 'container',
  summary: 'sealed images: compute-composefs-digest, ukify, build-sealed, verify-sealed',
  help: HELP,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub === undefined) throw new UsageError(`container: no command given (commands: ${Object.keys(subs).join(', ')})`);
    if (sub === '--help' || sub === '-h') {
      await writeOut(process.stdout, `${HELP}\n`);
      return 0;
    }
    const s = subs[sub];
    if (s === undefined) throw new UsageError(`container: unknown command '${sub}' (commands: ${Object.keys(subs).join(', ')})`);
    return s.run(rest);
  },
};

