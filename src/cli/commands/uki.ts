/**
 * `bootcfs uki build|inspect`: build an unsigned Unified Kernel Image like `ukify build`, and list its
 * sections like `ukify inspect`. Options follow ukify's names and meanings.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { UsageError, parseCli, writeOut, type Command } from '../command.js';
import { BootcfsError } from '../../errors.js';
import { withAtomicFile } from '../../util/atomic-file.js';
import { buildUkiDetailed, normalizeCmdline, DEFAULT_UKI_STUB } from '../../uki/uki.js';
import { formatInspectJson, formatInspectText, inspectUki } from '../../uki/inspect.js';

const BUILD_HELP = `Usage: bootcfs uki build --linux=KERNEL [--initrd=FILE]... [options] --output=OUT

Build an unsigned Unified Kernel Image: the systemd-stub EFI program with the kernel, initrds, command
line, os-release, ... as PE sections. The output is byte-identical to 'ukify build' (systemd 257) with
the same options (without signing and PCR signatures). OUT is written atomically.

Options:
  --linux=FILE          kernel image (gzip/zstd-compressed kernels are decompressed)
  --initrd=FILE         initrd; repeat for several (concatenated, each padded to 4 bytes)
  --cmdline=TEXT|@FILE  kernel command line (whitespace of TEXT is normalised; @FILE is used verbatim)
  --os-release=TEXT|@FILE  os-release (default: @/etc/os-release, or @/usr/lib/os-release;
                        an empty value leaves the section out)
  --uname=VERSION       kernel release (default: detected from the kernel)
  --sbat=TEXT|@FILE     SBAT entries (with their "sbat,1,..." header line); repeatable.
                        Default: the UKI entry ukify adds. Merged with the stub's and the kernel's .sbat.
  --devicetree=FILE     device tree (.dtb)
  --splash=FILE         boot splash bitmap (.splash)
  --pcrpkey=FILE        public key for PCR signatures (.pcrpkey)
  --microcode=FILE      CPU microcode initrd (.ucode)
  --section=NAME:TEXT|NAME:@FILE  an extra section; repeatable
  --stub=FILE           systemd-stub image (default: ${DEFAULT_UKI_STUB})
  --output=FILE         where to write the UKI (required)
  -h, --help            show this help
`;

const INSPECT_HELP = `Usage: bootcfs uki inspect FILE [--json=pretty|short|off] [-j] [--all]

List the UKI sections of FILE with their size, SHA-256 and (for text sections) content, in the same
format as 'ukify inspect'.

Options:
  --json=pretty|short|off  JSON output (default off: plain text)
  -j                    same as --json=pretty
  --all                 show every PE section, not only the UKI ones
  -h, --help            show this help
`;

const HELP = `Usage: bootcfs uki <build|inspect> [options]

Unified Kernel Images (ukify compatible):
  build     build an unsigned UKI from a kernel, initrds, command line and os-release
  inspect   list the sections of a UKI

Run 'bootcfs uki <subcommand> --help' for its options.
`;

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new BootcfsError(err.code === 'ENOENT' ? 'ENOENT' : 'EIO', `cannot read ${what} '${path}': ${err.message}`);
  }
}

/** TEXT or @FILE: a file's content is returned as bytes (verbatim), a text as a string. */
async function textOrFile(v: string, what: string): Promise<string | Buffer> {
  return v.startsWith('@') ? readInput(v.slice(1), what) : v;
}

async function buildCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    linux: { type: 'string' },
    initrd: { type: 'string', multiple: true },
    cmdline: { type: 'string' },
    'os-release': { type: 'string' },
    uname: { type: 'string' },
    sbat: { type: 'string', multiple: true },
    devicetree: { type: 'string' },
    splash: { type: 'string' },
    pcrpkey: { type: 'string' },
    microcode: { type: 'string' },
    section: { type: 'string', multiple: true },
    stub: { type: 'string' },
    output: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return writeOut(process.stdout, BUILD_HELP).then(() => 0);
  if (positionals.length > 0) throw new UsageError(`uki build: unexpected argument '${positionals[0]}'`);
  if (values.linux === undefined) throw new UsageError('uki build: --linux is required');
  if (values.output === undefined) throw new UsageError('uki build: --output is required');
  const stub = await readInput(values.stub ?? DEFAULT_UKI_STUB, 'stub');
  const linux = await readInput(values.linux, 'kernel');
  const initrds = await Promise.all((values.initrd ?? []).map((p) => readInput(p, 'initrd')));
  let cmdline: string | Buffer | undefined;
  if (values.cmdline !== undefined) {
    const c = await textOrFile(values.cmdline, 'command line');
    cmdline = typeof c === 'string' ? normalizeCmdline(c) : c;
  }
  let osRelease: string | Buffer | undefined;
  if (values['os-release'] !== undefined) osRelease = await textOrFile(values['os-release'], 'os-release');
  else osRelease = await readInput(existsSync('/etc/os-release') ? '/etc/os-release' : '/usr/lib/os-release', 'os-release');
  const sbat: string[] = [];
  for (const s of values.sbat ?? []) {
    const t = await textOrFile(s, 'SBAT file');
    sbat.push(typeof t === 'string' ? t : t.toString('utf8'));
  }
  const extraSections: { name: string; data: Buffer }[] = [];
  for (const spec of values.section ?? []) {
    const parts = spec.split(':');
    if (parts.length !== 2) throw new UsageError(`uki build: cannot parse section spec '${spec}' (expected NAME:TEXT or NAME:@FILE)`);
    const c = await textOrFile(parts[1]!, `section ${parts[0]}`);
    extraSections.push({ name: parts[0]!, data: typeof c === 'string' ? Buffer.from(c, 'utf8') : c });
  }
  const opt = async (p: string | undefined, what: string) => (p === undefined ? undefined : readInput(p, what));
  const built = buildUkiDetailed({
    stub, linux, initrds, cmdline, osRelease, uname: values.uname, sbat: sbat.length > 0 ? sbat : undefined,
    dtb: await opt(values.devicetree, 'device tree'), splash: await opt(values.splash, 'splash image'),
    pcrpkey: await opt(values.pcrpkey, 'PCR public key'), microcode: await opt(values.microcode, 'microcode'),
    extraSections,
  });
  await withAtomicFile(values.output, async (h) => {
    await h.writeFile(built.image);
  }, { mode: 0o644 });
  await writeOut(process.stderr, `Wrote unsigned ${values.output} (${built.sections.join(' ')}${built.uname !== undefined ? `; uname ${built.uname}` : ''})\n`);
  return 0;
}

async function inspectCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    json: { type: 'string' },
    j: { type: 'boolean', short: 'j' },
    all: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return writeOut(process.stdout, INSPECT_HELP).then(() => 0);
  if (positionals.length !== 1) throw new UsageError('uki inspect: exactly one FILE expected');
  const json = values.j ? 'pretty' : (values.json ?? 'off');
  if (json !== 'pretty' && json !== 'short' && json !== 'off') throw new UsageError(`uki inspect: --json must be pretty, short or off, not '${json}'`);
  const info = inspectUki(await readInput(positionals[0]!, 'UKI'));
  const opts = { all: values.all ?? false };
  await writeOut(process.stdout, json === 'off' ? formatInspectText(info, opts) : formatInspectJson(info, json, opts));
  return 0;
}

export const command: Command = {
  name: 'uki',
  summary: 'build and inspect Unified Kernel Images (ukify compatible)',
  help: HELP,
  async run(argv: string[]): Promise<number> {
    const [verb, ...rest] = argv;
    switch (verb) {
      case 'build':
        return buildCmd(rest);
      case 'inspect':
        return inspectCmd(rest);
      case '--help':
      case '-h':
        await writeOut(process.stdout, HELP);
        return 0;
      case undefined:
        throw new UsageError('uki: missing subcommand (build or inspect)');
      default:
        throw new UsageError(`uki: unknown subcommand '${verb}' (expected build or inspect)`);
    }
  },
};
