/**
 * `bootcfs mkcomposefs [OPTIONS] SOURCE IMAGE`: drop-in for mkcomposefs 1.0.8 — same options (parsed
 * like getopt_long: `--opt=v` / `--opt v`, unique prefixes, permuted positionals, `--`), same
 * messages and exit status 1 for every failure, same stdout (image and/or the hex digest line).
 * Additions: `--format=v1|v2`, `--hash-alg=` (v2 only), `--preserve-hardlinks`, `--help` (exit 0).
 * Unlike the C tool, the image file is written atomically: nothing is left at IMAGE on failure.
 */
import { writeOut, type Command } from '../command.js';
import { BootcfsError, errnoName } from '../../errors.js';
import { BuildError, buildImage, openImageOutput, LCFS_VERSION_MAX, type ImageOutput, type MkcomposefsOptions } from '../../composefs/mkcomposefs.js';
import { closeHashPool, isHashAlgorithm } from '../../fsverity/index.js';

const USAGE = `Usage: bootcfs mkcomposefs [OPTIONS] SOURCE IMAGE
Options:
  --digest-store=PATH   Store content files in this directory
  --use-epoch           Make all mtimes zero
  --skip-devices        Don't store device nodes
  --skip-xattrs         Don't store file xattrs
  --user-xattrs         Only store user.* xattrs
  --print-digest        Print the digest of the image
  --print-digest-only   Print the digest of the image, don't write image
  --from-file           The source is a dump file, not a directory
  --min-version=N       Use this minimal format version (default=0)
  --max-version=N       Use this maximum format version (default=1)
  --threads=N           Use this to override the default number of threads used to calculate digest and copy files (default=2)
  --format=v1|v2        Image layout: v1 = mkcomposefs (default), v2 = composefs-rs
  --hash-alg=ALG        fs-verity hash for v2 images: sha256 (default) or sha512
  --preserve-hardlinks  Keep hardlinks of a source directory as hardlinks (mkcomposefs 1.0.8 does not)
  --help                Show this help
`;

const HELP = `${USAGE}
Build a composefs image from the directory SOURCE (or, with --from-file, from the dumpfile SOURCE;
'-' reads it from stdin). IMAGE '-' writes the image to stdout. Output is byte-identical to
mkcomposefs 1.0.8 for the v1 format. Environment: CFS_PARSE_STRICT (any value) makes dumpfile
parsing strict, as in the C tool.
`;

interface OptSpec {
  name: string;
  hasArg: boolean;
}
/** The options of mkcomposefs 1.0.8, matched first so that abbreviations resolve exactly as in C. */
const C_OPTIONS: OptSpec[] = [
  { name: 'skip-xattrs', hasArg: false },
  { name: 'user-xattrs', hasArg: false },
  { name: 'skip-devices', hasArg: false },
  { name: 'use-epoch', hasArg: false },
  { name: 'digest-store', hasArg: true },
  { name: 'print-digest', hasArg: false },
  { name: 'print-digest-only', hasArg: false },
  { name: 'from-file', hasArg: false },
  { name: 'max-version', hasArg: true },
  { name: 'min-version', hasArg: true },
  { name: 'threads', hasArg: true },
];
const EXTRA_OPTIONS: OptSpec[] = [
  { name: 'format', hasArg: true },
  { name: 'hash-alg', hasArg: true },
  { name: 'preserve-hardlinks', hasArg: false },
  { name: 'help', hasArg: false },
];

/** A command-line problem; `usage` says whether the usage text follows the message. */
class CliFailure extends Error {
  constructor(
    message: string,
    readonly usage: boolean,
    readonly prefixed: boolean,
  ) {
    super(message);
  }
}

/** getopt_long's option lookup: exact name, else a unique prefix (C options before our additions). */
function findOption(name: string): OptSpec | undefined {
  for (const set of [C_OPTIONS, EXTRA_OPTIONS]) {
    const exact = set.find((o) => o.name === name);
    if (exact) return exact;
  }
  for (const set of [C_OPTIONS, EXTRA_OPTIONS]) {
    const matches = set.filter((o) => o.name.startsWith(name));
    if (matches.length === 1) return matches[0];
    if (matches.length > 1) return undefined; // ambiguous
  }
  return undefined;
}

interface ParsedArgs {
  options: Array<[string, string | undefined]>;
  positionals: string[];
}

function parseArgv(argv: string[]): ParsedArgs {
  const options: Array<[string, string | undefined]> = [];
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      const spec = findOption(name);
      if (!spec) throw new CliFailure('', true, false);
      let value: string | undefined;
      if (spec.hasArg) {
        if (eq >= 0) value = a.slice(eq + 1);
        else if (i + 1 < argv.length) value = argv[++i];
        else throw new CliFailure('option needs a value', false, false);
      } else if (eq >= 0) {
        throw new CliFailure('', true, false);
      }
      options.push([spec.name, value]);
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      if (a === '-h') {
        options.push(['help', undefined]);
        continue;
      }
      // mkcomposefs has no short options that do anything: getopt ends in its usage branch.
      throw new CliFailure('', true, false);
    }
    positionals.push(a);
  }
  return { options, positionals };
}

/** strtol(s, &end, 10) with the "whole string must be a number" check mkcomposefs applies. */
function parseCLong(s: string): number | undefined {
  if (!/^[ \t\n\v\f\r]*[+-]?\d+$/.test(s)) return undefined;
  const n = Number(s.trim());
  return Math.max(-(2 ** 63), Math.min(2 ** 63 - 1, n));
}

interface Invocation {
  source: string;
  image: string | undefined;
  printDigest: boolean;
  printDigestOnly: boolean;
  opts: MkcomposefsOptions;
  help: boolean;
}

function interpret(argv: string[]): Invocation {
  const { options, positionals } = parseArgv(argv);
  const opts: MkcomposefsOptions = {};
  let printDigest = false;
  let printDigestOnly = false;
  let versionSet = false;
  let minVersion = 0;
  let maxVersion = 0;
  let help = false;
  for (const [name, value] of options) {
    switch (name) {
      case 'use-epoch': opts.useEpoch = true; break;
      case 'skip-xattrs': opts.skipXattrs = true; break;
      case 'user-xattrs': opts.userXattrs = true; break;
      case 'skip-devices': opts.skipDevices = true; break;
      case 'digest-store': opts.digestStore = value!; break;
      case 'print-digest': printDigest = true; break;
      case 'print-digest-only': printDigest = printDigestOnly = true; break;
      case 'from-file': opts.fromFile = true; break;
      case 'min-version':
      case 'max-version': {
        const v = parseCLong(value!);
        if (v === undefined) throw new CliFailure(`Invalid ${name === 'min-version' ? 'min' : 'max'} version ${value}`, false, false);
        versionSet = true;
        if (name === 'min-version') minVersion = v;
        else maxVersion = v;
        break;
      }
      case 'threads': {
        const v = parseCLong(value!);
        if (v === undefined) throw new CliFailure(`Invalid threads count ${value}`, false, false);
        if (v <= 0) throw new CliFailure(`Invalid threads count ${v}`, false, false);
        opts.threads = Math.min(v, 1024);
        break;
      }
      case 'format':
        if (value !== 'v1' && value !== 'v2') throw new CliFailure(`Invalid format ${value} (expected v1 or v2)`, false, false);
        opts.format = value;
        break;
      case 'hash-alg':
        if (!isHashAlgorithm(value)) throw new CliFailure(`Invalid hash algorithm ${value} (expected sha256 or sha512)`, false, false);
        opts.algorithm = value;
        break;
      case 'preserve-hardlinks': opts.hardlinks = 'preserve'; break;
      case 'help': help = true; break;
    }
  }
  if (help) return { source: '', image: undefined, printDigest, printDigestOnly, opts, help };
  if (versionSet) {
    opts.minVersion = minVersion;
    opts.maxVersion = maxVersion;
  }
  if (positionals.length < 1) throw new CliFailure('No source path specified', true, false);
  const source = positionals[0]!;
  if (source === '') throw new CliFailure('Empty source path specified', false, true);
  if (positionals.length > 2) throw new CliFailure('Too many arguments', true, false);
  let image: string | undefined;
  if (positionals.length === 1) {
    if (!printDigestOnly) throw new CliFailure('No destination path specified', true, false);
  } else if (!printDigestOnly) {
    image = positionals[1]!;
  } else {
    throw new CliFailure('Cannot specify destination path with --print-digest-only', true, false);
  }
  if (opts.skipXattrs && opts.userXattrs) {
    // libcomposefs rejects the combination (EINVAL) when it reads the source directory.
    if (!opts.fromFile) throw new CliFailure(`error accessing ${source}: Invalid argument`, false, true);
    opts.userXattrs = false;
  }
  if (opts.format === 'v2' && (opts.minVersion !== undefined || opts.maxVersion !== undefined)) {
    throw new CliFailure('--min-version/--max-version apply to the v1 format only', false, true);
  }
  if (opts.algorithm && opts.algorithm !== 'sha256' && opts.format !== 'v2') {
    throw new CliFailure('--hash-alg=sha512 needs --format=v2 (v1 images use sha256)', false, true);
  }
  const versions = [opts.minVersion, opts.maxVersion].filter((v): v is number => v !== undefined);
  if (versions.some((v) => v > LCFS_VERSION_MAX)) throw new CliFailure('cannot write file: Invalid argument', false, true);
  if (versions.some((v) => v < 0)) throw new CliFailure('cannot write file: negative format versions are not supported', false, true);
  return { source, image, printDigest, printDigestOnly, opts, help };
}

/** The message mkcomposefs prints for a failure in a given build step. */
function describe(e: unknown, source: string): string {
  if (e instanceof BuildError) {
    const cause = e.cause as NodeJS.ErrnoException | undefined;
    if (e.stage === 'read-dump' && cause && typeof cause.errno === 'number' && !(cause instanceof BootcfsError)) {
      return `open \`${source}\`: ${strerror(cause)}`;
    }
    if (e.stage === 'write') return `cannot write file: ${e.message}`;
    return e.message;
  }
  if (e instanceof Error) return e.message;
  return String(e);
}

function strerror(e: NodeJS.ErrnoException): string {
  // The C library's wording where we know it ("Is a directory"), else Node's ("ENOENT: no such…, open 'x'")
  if (typeof e.errno === 'number') {
    const known = /\((.*)\)$/.exec(errnoName(Math.abs(e.errno)));
    if (known) return known[1]!;
  }
  const m = /^[A-Z0-9]+: ([^,]+)/.exec(e.message);
  const text = m ? m[1]! : e.message;
  return text.charAt(0).toUpperCase() + text.slice(1);
}

async function run(argv: string[]): Promise<number> {
  let inv: Invocation;
  try {
    inv = interpret(argv);
  } catch (e) {
    if (!(e instanceof CliFailure)) throw e;
    if (e.message) process.stderr.write(e.prefixed ? `bootcfs: ${e.message}\n` : `${e.message}\n`);
    if (e.usage) process.stderr.write(USAGE);
    return 1;
  }
  if (inv.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const toStdout = inv.image === '-';
  if (toStdout && process.stdout.isTTY) {
    process.stderr.write('bootcfs: stdout is a tty.  Refusing to use it\n');
    return 1;
  }
  let out: ImageOutput | undefined;
  try {
    if (inv.image !== undefined && !toStdout) {
      try {
        out = await openImageOutput(inv.image);
      } catch (e) {
        process.stderr.write(`bootcfs: failed to open output file: ${strerror(e as NodeJS.ErrnoException)}\n`);
        return 1;
      }
    }
    const { image, digest } = await buildImage(inv.source, inv.opts);
    if (out) {
      await out.write(image);
      await out.commit();
      out = undefined;
    } else if (toStdout) {
      await writeOut(process.stdout, image);
    }
    if (inv.printDigest) await writeOut(process.stdout, `${digest.toString('hex')}\n`);
    return 0;
  } catch (e) {
    if (!(e instanceof BootcfsError) && typeof (e as NodeJS.ErrnoException)?.errno !== 'number') throw e;
    process.stderr.write(`bootcfs: ${describe(e, inv.source)}\n`);
    return 1;
  } finally {
    if (out) await out.discard();
    await closeHashPool();
  }
}

export const command: Command = {
  name: 'mkcomposefs',
  summary: 'build a composefs image from a directory or dumpfile (mkcomposefs-compatible)',
  help: HELP,
  run,
};
