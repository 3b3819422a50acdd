/**
 * `bootcfs sbsign`, `bootcfs sbverify` (option- and exit-code-compatible with sbsigntools 0.9.4 for what
 * Secure Boot signing uses) and `bootcfs authenticode digest`.
 */
import { readFile } from 'node:fs/promises';
import { BootcfsError, FormatError } from '../../errors.js';
import { UsageError, parseCli, writeOut, type Command } from '../command.js';
import { withAtomicFile } from '../../util/atomic-file.js';
import {
  authenticodeDigest, buildAuthenticodeSignature, commandSigner, isAuthenticodeHash, keySigner, parseCertificates, signPe, verifyPe,
  type SignOptions, type Signer,
} from '../../authenticode/index.js';
import { authenticodeLayout } from '../../authenticode/digest.js';
import { isBareKernel, BareKernelError } from '../../authenticode/sign.js';

async function readInput(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new BootcfsError(err.code === 'ENOENT' ? 'ENOENT' : 'EIO', `cannot read ${what} '${file}': ${err.message}`);
  }
}

async function writeAtomic(target: string, data: Buffer): Promise<void> {
  await withAtomicFile(target, async (h) => {
    let off = 0;
    while (off < data.length) off += (await h.write(data, off, data.length - off)).bytesWritten;
  });
}

/** signingTime from SOURCE_DATE_EPOCH (reproducible builds), else now. */
function signingTime(): Date {
  const sde = process.env.SOURCE_DATE_EPOCH;
  if (sde === undefined || sde === '') return new Date();
  if (!/^\d+$/.test(sde)) throw new UsageError(`SOURCE_DATE_EPOCH must be a number of seconds, not '${sde}'`);
  return new Date(Number(sde) * 1000);
}

const SBSIGN_HELP = `Usage: bootcfs sbsign [options] --key <keyfile> --cert <certfile> <efi-boot-image>
Sign an EFI boot image for use with Secure Boot (Authenticode; compatible with sbsign).

Options:
  -k, --key <keyfile>        signing key (PEM: RSA, or ECDSA P-256/P-384)
  -c, --cert <certfile>      certificate (PEM x509; further PEM certificates in the file are embedded too)
  -a, --addcert <file>       additional intermediate certificates (PEM) to embed
  -o, --output <file>        write the signed image to <file> (default <efi-boot-image>.signed,
                             or <efi-boot-image>.pk7 with --detached); written atomically
  -d, --detached             write a detached PKCS#7 signature instead of a signed image
      --sign-with-command CMD
                             sign with an external signer instead of --key: CMD runs through /bin/sh,
                             gets the 32-byte SHA-256 to-be-signed digest on stdin (and as hex in
                             BOOTCFS_TBS_DIGEST) and prints the raw signature on stdout, e.g.
                             'openssl pkeyutl -sign -inkey db.key -pkeyopt digest:sha256'
      --allow-bare-kernel    sign a bare Linux kernel (bzImage that is not a UKI). Refused by default:
                             a db-signed kernel boots with any initrd and command line
      --append-signature     keep the existing signatures of a signed image and add one (sbsign 0.9.4
                             does this); by default they are replaced
  -v, --verbose              print the image digest
  -V, --version              print the version
  -h, --help                 show this help
The signingTime attribute is the current time, or SOURCE_DATE_EPOCH when set (reproducible output).
`;

const SBVERIFY_HELP = `Usage: bootcfs sbverify [options] --cert <certfile> <efi-boot-image>
Verify a UEFI Secure Boot image (Authenticode; compatible with sbverify).

Options:
  -c, --cert <certfile>  trusted certificate(s) (PEM or DER); the signer must be one of them or be issued
                         by one of them
  -l, --list             list all signatures (but don't verify)
  -v, --verbose          print the image digest and why each signature fails
  -h, --help             show this help
Exit status: 0 if a signature verifies against --cert ("Signature verification OK"), 1 otherwise
("Signature verification failed"); 0 for --list.
`;

const AUTHENTICODE_HELP = `Usage: bootcfs authenticode digest [--hash ALG] FILE...

Print the Authenticode (PE image) digest of each FILE in hex: what a signature of FILE carries, and what
'osslsigncode verify' shows as "Calculated message digest".

Options:
  --hash ALG   sha256 (default), sha1, sha384 or sha512
  -h, --help   show this help
`;

async function sbsignRun(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    key: { type: 'string', short: 'k' },
    cert: { type: 'string', short: 'c' },
    addcert: { type: 'string', short: 'a' },
    output: { type: 'string', short: 'o' },
    detached: { type: 'boolean', short: 'd' },
    engine: { type: 'string', short: 'e' },
    'sign-with-command': { type: 'string' },
    'allow-bare-kernel': { type: 'boolean' },
    'append-signature': { type: 'boolean' },
    verbose: { type: 'boolean', short: 'v' },
    version: { type: 'boolean', short: 'V' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return writeOut(process.stdout, SBSIGN_HELP).then(() => 0);
  if (values.version) {
    const { VERSION } = await import('../../version.js');
    return writeOut(process.stdout, `bootcfs sbsign ${VERSION}\n`).then(() => 0);
  }
  if (positionals.length !== 1) throw new UsageError('sbsign: expected exactly one <efi-boot-image>');
  if (values.engine !== undefined) throw new UsageError('sbsign: --engine is not supported; use --sign-with-command for keys outside files');
  if (values.cert === undefined) throw new UsageError('sbsign: no certificate specified (with --cert)');
  const cmd = values['sign-with-command'];
  if (cmd === undefined && values.key === undefined) throw new UsageError('sbsign: no key specified (with --key or --sign-with-command)');
  if (cmd !== undefined && values.key !== undefined) throw new UsageError('sbsign: --key and --sign-with-command are mutually exclusive');
  const input = positionals[0]!;
  const output = values.output ?? `${input}.${values.detached ? 'pk7' : 'signed'}`;
  const certPem = await readInput(values.cert, 'certificate');
  let signer: Signer = cmd !== undefined ? commandSigner(cmd, certPem) : keySigner(await readInput(values.key!, 'key'), certPem);
  if (values.addcert !== undefined) {
    const extra = parseCertificates(await readInput(values.addcert, 'additional certificates'), 'additional certificates');
    signer = { ...signer, certificates: [...signer.certificates, ...extra], sign: signer.sign.bind(signer) };
  }
  const image = await readInput(input, 'image');
  const opts: SignOptions = {
    allowBareKernel: values['allow-bare-kernel'] ?? false,
    existingSignatures: values['append-signature'] ? 'append' : 'replace',
    signingTime: signingTime(),
  };
  if (values.verbose) await writeOut(process.stderr, `image digest: ${authenticodeDigest(stripForDigest(image)).toString('hex')}\n`);
  let out: Buffer;
  if (values.detached) {
    if (!opts.allowBareKernel && isBareKernel(image)) throw new BareKernelError();
    out = await buildAuthenticodeSignature(authenticodeDigest(stripForDigest(image)), signer, opts);
  } else {
    out = await signPe(image, signer, opts);
  }
  await writeAtomic(output, out);
  return 0;
}

/** The image without its certificate table (what a new signature covers). */
function stripForDigest(image: Buffer): Buffer {
  const layout = authenticodeLayout(image);
  if (layout.certTable === undefined || layout.certEntryOffset === undefined) return image;
  const base = Buffer.from(image.subarray(0, layout.dataEnd));
  base.fill(0, layout.certEntryOffset, layout.certEntryOffset + 8);
  return base;
}

async function sbverifyRun(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    cert: { type: 'string', short: 'c' },
    list: { type: 'boolean', short: 'l' },
    detached: { type: 'string', short: 'd' },
    'no-verify': { type: 'boolean', short: 'n' },
    verbose: { type: 'boolean', short: 'v' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return writeOut(process.stdout, SBVERIFY_HELP).then(() => 0);
  if (positionals.length !== 1) throw new UsageError('sbverify: expected exactly one <efi-boot-image>');
  if (values.detached !== undefined) throw new UsageError('sbverify: --detached is not supported');
  const image = await readInput(positionals[0]!, 'image');
  const trusted = values.cert !== undefined ? [await readInput(values.cert, 'certificate')] : undefined;
  const result = verifyPe(image, trusted ? { certificates: trusted } : {});
  if (values.list) {
    if (result.signatures.length === 0) await writeOut(process.stderr, 'No signature table present\n');
    let text = '';
    for (const s of result.signatures) {
      text += `signature ${s.index + 1}\nimage signature issuers:\n`;
      if (s.signerIssuer !== undefined) text += ` - ${s.signerIssuer}\n`;
      text += 'image signature certificates:\n';
      for (const der of s.certificates) {
        const { X509Certificate } = await import('node:crypto');
        const c = new X509Certificate(der);
        const one = (n: string): string => n.split('\n').filter(Boolean).map((l) => `/${l}`).join('');
        text += ` - subject: ${one(c.subject)}\n   issuer:  ${one(c.issuer)}\n`;
      }
      if (values.verbose) text += ` digest (${s.digestAlgorithm}): ${s.signedDigest.toString('hex')}\n`;
    }
    await writeOut(process.stdout, text);
    return 0;
  }
  if (values.verbose) await writeOut(process.stderr, `image digest: ${result.imageDigest.toString('hex')}\n`);
  let problem: string | undefined;
  if (result.signatures.length === 0) problem = 'No signature table present';
  else if (trusted === undefined) problem = 'no --cert given: no trusted certificate to verify the signer against';
  else if (!result.verified) problem = result.signatures.map((s) => `signature ${s.index + 1}: ${s.reason ?? 'not verified'}`).join('\n');
  if (problem !== undefined) {
    await writeOut(process.stderr, `${problem}\n`);
    await writeOut(process.stdout, 'Signature verification failed\n');
    return 1;
  }
  await writeOut(process.stdout, 'Signature verification OK\n');
  return 0;
}

async function digestRun(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, { hash: { type: 'string' }, help: { type: 'boolean', short: 'h' } });
  if (values.help) return writeOut(process.stdout, AUTHENTICODE_HELP).then(() => 0);
  const hash = values.hash ?? 'sha256';
  if (!isAuthenticodeHash(hash)) throw new UsageError(`unknown hash algorithm '${hash}' (available: sha256 sha1 sha384 sha512)`);
  if (positionals.length === 0) throw new UsageError('authenticode digest: no FILE given');
  for (const file of positionals) {
    const buf = await readInput(file, 'image');
    let d: Buffer;
    try {
      d = authenticodeDigest(buf, hash);
    } catch (e) {
      if (e instanceof FormatError) throw new FormatError(`${file}: ${e.message.replace(/ \(at byte offset \d+\)$/, '')}`, e.offset);
      throw e;
    }
    await writeOut(process.stdout, positionals.length > 1 ? `${d.toString('hex')}  ${file}\n` : `${d.toString('hex')}\n`);
  }
  return 0;
}

export const sbsignCommand: Command = {
  name: 'sbsign',
  summary: 'sign EFI images for Secure Boot (Authenticode, sbsign-compatible)',
  help: SBSIGN_HELP,
  run: sbsignRun,
};

export const sbverifyCommand: Command = {
  name: 'sbverify',
  summary: 'verify Secure Boot signatures of EFI images (sbverify-compatible)',
  help: SBVERIFY_HELP,
  run: sbverifyRun,
};

export const authenticodeCommand: Command = {
  name: 'authenticode',
  summary: 'Authenticode PE image digests',
  help: AUTHENTICODE_HELP,
  async run(argv: string[]): Promise<number> {
    const [verb, ...rest] = argv;
    switch (verb) {
      case 'digest':
        return digestRun(rest);
      case '--help':
      case '-h':
        await writeOut(process.stdout, AUTHENTICODE_HELP);
        return 0;
      case undefined:
        throw new UsageError('authenticode: missing subcommand (digest)');
      default:
        throw new UsageError(`authenticode: unknown subcommand '${verb}' (expected digest)`);
    }
  },
};
