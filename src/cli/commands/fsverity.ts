/**
 * `bootcfs fsverity digest|measure|enable`: option- and output-compatible with fsverity-utils 1.5 for
 * what composefs uses (4096-byte blocks, no salt, no built-in signatures).
 */
import { UsageError, parseCli, writeOut, type Command } from '../command.js';
import {
  DIGEST_SIZE,
  HASH_ALGORITHM_ID,
  enableVerity,
  formatDigest,
  fsverityDigestFile,
  isHashAlgorithm,
  measureVerity,
  type HashAlgorithm,
} from '../../fsverity/index.js';

const DIGEST_HELP = `Usage: bootcfs fsverity digest FILE... [--hash-alg=HASH_ALG] [--block-size=4096] [--compact] [--for-builtin-sig]

Compute the fs-verity digest of each FILE in userspace (no kernel support needed) and print
"HASH_ALG:HEX FILE" per file, exactly like 'fsverity digest'.

Options:
  --hash-alg=HASH_ALG   sha256 (default) or sha512
  --block-size=SIZE     Merkle tree block size; only 4096 (the default) is supported
  --compact             print only the hex digest
  --for-builtin-sig     print the hex of the "FSVerity" formatted digest (what the kernel's
                        built-in signatures sign) instead of HASH_ALG:HEX
  -h, --help            show this help
Salts (--salt) and --out-merkle-tree/--out-descriptor are not supported: composefs uses neither.
`;

const MEASURE_HELP = `Usage: bootcfs fsverity measure FILE...

Print the fs-verity digest the kernel enforces for each FILE ("HASH_ALG:HEX FILE"), like
'fsverity measure'. Fails if the kernel or filesystem lacks fs-verity or FILE does not have it enabled.

Options:
  -h, --help            show this help
`;

const ENABLE_HELP = `Usage: bootcfs fsverity enable FILE... [--hash-alg=HASH_ALG] [--block-size=4096]

Enable fs-verity on each FILE (like 'fsverity enable'): the kernel builds the Merkle tree, the file
becomes read-only and every read of it is verified. FILE must not be open for writing.
Fails if fs-verity is already enabled on FILE, or the kernel or filesystem does not support it.

Options:
  --hash-alg=HASH_ALG   sha256 (default) or sha512
  --block-size=SIZE     Merkle tree block size; only 4096 (the default) is supported
  -h, --help            show this help
Salts (--salt) and built-in signatures (--signature) are not supported.
`;

const HELP = `Usage: bootcfs fsverity <digest|measure|enable> [options] FILE...

fs-verity tools, compatible with fsverity-utils:
  digest    compute fs-verity digests in userspace
  measure   print the digest of files that have fs-verity enabled
  enable    enable fs-verity on files

Run 'bootcfs fsverity <subcommand> --help' for its options.
`;

function hashAlg(v: string | undefined): HashAlgorithm {
  if (v === undefined) return 'sha256';
  if (!isHashAlgorithm(v)) throw new UsageError(`unknown hash algorithm: '${v}' (available: sha256 sha512)`);
  return v;
}

function checkBlockSize(v: string | undefined): void {
  if (v !== undefined && v !== '4096') {
    throw new UsageError(`unsupported block size '${v}': bootcfs only supports --block-size=4096 (what composefs uses)`);
  }
}

function checkSalt(v: string | undefined): void {
  // fsverity-utils treats an empty --salt as "no salt"
  if (v !== undefined && v !== '') throw new UsageError('salts are not supported (composefs uses fs-verity without a salt)');
}

function files(positionals: string[], verb: string): string[] {
  if (positionals.length === 0) throw new UsageError(`fsverity ${verb}: no FILE given`);
  return positionals;
}

/** struct fsverity_formatted_digest: "FSVerity", le16 algorithm, le16 size, digest. */
function builtinSigDigest(alg: HashAlgorithm, digest: Buffer): Buffer {
  const head = Buffer.alloc(12);
  head.write('FSVerity', 0, 'latin1');
  head.writeUInt16LE(HASH_ALGORITHM_ID[alg], 8);
  head.writeUInt16LE(DIGEST_SIZE[alg], 10);
  return Buffer.concat([head, digest]);
}

async function digestCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    'hash-alg': { type: 'string' },
    'block-size': { type: 'string' },
    salt: { type: 'string' },
    compact: { type: 'boolean' },
    'for-builtin-sig': { type: 'boolean' },
    'out-merkle-tree': { type: 'string' },
    'out-descriptor': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return writeOut(process.stdout, DIGEST_HELP).then(() => 0);
  const alg = hashAlg(values['hash-alg']);
  checkBlockSize(values['block-size']);
  checkSalt(values.salt);
  if (values['out-merkle-tree'] !== undefined || values['out-descriptor'] !== undefined) {
    throw new UsageError('--out-merkle-tree and --out-descriptor are not supported by bootcfs');
  }
  for (const file of files(positionals, 'digest')) {
    const digest = await fsverityDigestFile(file, alg);
    const shown = values['for-builtin-sig'] ? builtinSigDigest(alg, digest).toString('hex') : values.compact ? digest.toString('hex') : formatDigest(alg, digest);
    await writeOut(process.stdout, values.compact ? `${shown}\n` : `${shown} ${file}\n`);
  }
  return 0;
}

async function measureCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, { help: { type: 'boolean', short: 'h' } });
  if (values.help) return writeOut(process.stdout, MEASURE_HELP).then(() => 0);
  for (const file of files(positionals, 'measure')) {
    const { algorithm, digest } = measureVerity(file);
    await writeOut(process.stdout, `${formatDigest(algorithm, digest)} ${file}\n`);
  }
  return 0;
}

async function enableCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    'hash-alg': { type: 'string' },
    'block-size': { type: 'string' },
    salt: { type: 'string' },
    signature: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return writeOut(process.stdout, ENABLE_HELP).then(() => 0);
  const alg = hashAlg(values['hash-alg']);
  checkBlockSize(values['block-size']);
  checkSalt(values.salt);
  if (values.signature !== undefined) throw new UsageError('built-in signatures (--signature) are not supported by bootcfs');
  for (const file of files(positionals, 'enable')) enableVerity(file, alg);
  return 0;
}

export const command: Command = {
  name: 'fsverity',
  summary: 'fs-verity digests, measure and enable (fsverity-utils compatible)',
  help: HELP,
  async run(argv: string[]): Promise<number> {
    const [verb, ...rest] = argv;
    switch (verb) {
      case 'digest':
        return digestCmd(rest);
      case 'measure':
        return measureCmd(rest);
      case 'enable':
        return enableCmd(rest);
      case '--help':
      case '-h':
        await writeOut(process.stdout, HELP);
        return 0;
      case undefined:
        throw new UsageError("fsverity: missing subcommand (digest, measure or enable)");
      default:
        throw new UsageError(`fsverity: unknown subcommand '${verb}' (expected digest, measure or enable)`);
    }
  },
};
