/**
 * `bootcfs install to-disk | to-filesystem | check` (bootc's `install` verbs for the composefs backend).
 */
import type { Command } from '../command.js';
import { parseCli, UsageError, writeOut } from '../command.js';
import { ProgressReporter } from '../../util/progress.js';
import { parseImageReference } from '../../oci/reference.js';
import type { HashAlgorithm } from '../../fsverity/digest.js';
import type { InstallResult } from '../../install/install.js';
import type { PullProgressEvent } from '../../oci/pull.js';

const TO_DISK_HELP = `Usage: bootcfs install to-disk [OPTIONS] --source IMAGE DEVICE-OR-IMAGE-FILE

Install IMAGE (oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE, docker://HOST/NAME[:TAG]) onto a
disk: a GPT with a FAT32 ESP (label EFI-SYSTEM) holding systemd-boot and the boot entry, and an ext4
root partition (discoverable-partitions x86-64 root type, 4 KiB blocks, verity feature) holding the
composefs repository (/composefs) and the deployment state (/state/deploy/<digest>).
A sealed image (built by 'bootcfs container build-sealed') boots its signed UKI (Type 2); any other
image gets a kernel + initrd + BLS entry (Type 1) with root=UUID=... composefs=<digest>.
Nothing is mounted: the target may be a disk image file. fs-verity is enabled on every object by
setup-root on the first boot (this machine's kernel is not the one that will verify them); every
object is checked against its name before the verified root is mounted.
The partition table is written last: an interrupted install leaves a disk with no partition table
(not bootable; 'bootcfs install check' says so).

Options:
  --source IMAGE           the image to install (alias: --source-imgref)
  --target-imgref IMAGE    the image reference 'bootcfs upgrade' fetches later (default: IMAGE), e.g.
                           docker://registry/os:stable when installing from a local copy
  --wipe                   erase an existing partition table
  --via-loopback           accepted for bootc compatibility (image files need no loop device here)
  --create SIZE            create the image file with SIZE (e.g. 4G) when it does not exist
  --karg ARG               extra kernel argument (Type 1 only; repeatable)
  --root-size SIZE         root partition size (default: the rest of the disk)
  --esp-size SIZE          ESP size (default 1G)
  --allow-missing-verity   composefs=? (fs-verity not required; insecure repository)
  --bootloader systemd     the only boot loader supported
  --filesystem ext4        the only root filesystem supported
  --composefs-backend      accepted for bootc compatibility (always composefs)
  --hash sha256|sha512     fs-verity algorithm of the repository (default sha512, as bootc)
  --boot-timeout SECONDS   systemd-boot menu timeout (default 5)
  --stage-dir DIR          where the root filesystem is staged (default $TMPDIR)
  --tls-verify=BOOL        verify registry TLS certificates (default true)
  --progress-fd N          JSON-lines progress on file descriptor N
  --json                   print the result as JSON
  -h, --help               show this help
`;

const TO_FS_HELP = `Usage: bootcfs install to-filesystem [OPTIONS] --source IMAGE --boot-mount ESP ROOT

Install IMAGE into the mounted root filesystem ROOT (composefs repository at ROOT/composefs,
deployment state at ROOT/state) and its boot files into the mounted ESP. fs-verity is enabled on every
object as it is written when ROOT's filesystem supports it (ext4 -O verity, 4 KiB blocks); otherwise it
is deferred to the first boot (composefs/.verity-pending). The boot entry is written last.

Options:
  --source IMAGE           the image to install (alias: --source-imgref)
  --target-imgref IMAGE    the image reference 'bootcfs upgrade' fetches later (default: IMAGE)
  --boot-mount ESP         the mounted ESP
  --root-uuid UUID         root filesystem UUID for Type 1 entries (default: from findmnt)
  --karg, --allow-missing-verity, --hash, --boot-timeout, --tls-verify, --progress-fd, --json,
  --bootloader, --composefs-backend: as for to-disk
  -h, --help               show this help
`;

const CHECK_HELP = `Usage: bootcfs install check DEVICE-OR-IMAGE-FILE

Says whether an install on the disk completed (exit 0) or not (exit 1): a valid GPT with an ESP and a
root partition, systemd-boot and a bootc boot entry whose files are on the ESP.
`;

const HELP = `Usage: bootcfs install <to-disk|to-filesystem|check> ...

  to-disk         install an image onto a disk or disk image file
  to-filesystem   install an image into mounted root and ESP filesystems
  check           report whether a disk holds a completed install

Run 'bootcfs install <verb> --help' for the options.
`;

/** `4G`, `512M`, `1024K`, plain bytes. */
export function parseSize(v: string, what: string): number {
  const m = /^([0-9]+)([KMGT]?)(i?B)?$/i.exec(v.trim());
  if (!m) throw new UsageError(`${what}: '${v}' is not a size (e.g. 4G, 512M)`);
  const mul = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  return Number(m[1]) * mul;
}

const COMMON = {
  source: { type: 'string' },
  'source-imgref': { type: 'string' },
  'target-imgref': { type: 'string' },
  karg: { type: 'string', multiple: true },
  'allow-missing-verity': { type: 'boolean' },
  bootloader: { type: 'string' },
  'composefs-backend': { type: 'boolean' },
  hash: { type: 'string' },
  'boot-timeout': { type: 'string' },
  'tls-verify': { type: 'string' },
  'progress-fd': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

interface CommonValues {
  source?: string; 'source-imgref'?: string; 'target-imgref'?: string; karg?: string[]; 'allow-missing-verity'?: boolean; bootloader?: string;
  hash?: string; 'boot-timeout'?: string; 'tls-verify'?: string; 'progress-fd'?: string; json?: boolean;
}

function common(values: CommonValues, progress: ProgressReporter) {
  const source = values.source ?? values['source-imgref'];
  if (source === undefined) throw new UsageError('--source IMAGE is required');
  if (values.bootloader !== undefined && values.bootloader !== 'systemd') throw new UsageError(`--bootloader ${values.bootloader}: only systemd (systemd-boot) is supported`);
  const hash = values.hash ?? 'sha512';
  if (hash !== 'sha256' && hash !== 'sha512') throw new UsageError(`--hash takes sha256 or sha512, not '${hash}'`);
  const tv = values['tls-verify'];
  if (tv !== undefined && tv !== 'true' && tv !== 'false') throw new UsageError(`--tls-verify takes true or false, not '${tv}'`);
  const bt = values['boot-timeout'];
  if (bt !== undefined && !/^[0-9]{1,4}$/.test(bt)) throw new UsageError(`--boot-timeout takes seconds, not '${bt}'`);
  const target = values['target-imgref'];
  if (target !== undefined) parseImageReference(target); // a typo fails now, not at the first upgrade
  return {
    source,
    targetImgref: target,
    kargs: values.karg ?? [],
    allowMissingVerity: values['allow-missing-verity'] ?? false,
    algorithm: hash as HashAlgorithm,
    bootTimeout: bt === undefined ? undefined : Number(bt),
    registry: tv === 'false' ? { tlsVerify: false } : undefined,
    onStep: (step: string) => progress.step(step),
    onLayerBytes: progress.active ? (ev: { digest: string; bytes: number }) => progress.layerProgress(ev.digest, ev.bytes) : undefined,
    onProgress: progress.active
      ? (ev: PullProgressEvent) => {
          if (ev.kind === 'layer-start') progress.layerStart(ev.digest, ev.size);
          else if (ev.kind === 'layer-done') progress.layerDone(ev.digest);
          else if (ev.kind === 'layer-skip') progress.layerDone(ev.digest, { bytes: ev.size, skipped: true });
          else progress.imageDone(ev.imageId);
        }
      : undefined,
  };
}

function progressFor(v: string | undefined): ProgressReporter {
  if (v !== undefined && (!/^[0-9]+$/.test(v) || Number(v) < 1)) throw new UsageError(`--progress-fd takes a file descriptor number ≥ 1, not '${v}'`);
  return new ProgressReporter({ fd: v === undefined ? undefined : Number(v), tty: process.stderr });
}

async function report(r: InstallResult, json: boolean | undefined): Promise<void> {
  const summary = {
    target: r.target,
    digest: r.digest,
    algorithm: r.algorithm,
    bootType: r.bootType,
    verity: r.verity,
    kver: r.kver,
    cmdline: r.cmdline,
    entry: r.entryPath,
    manifestDigest: r.manifestDigest,
    rootUuid: r.rootUuid,
    partitions: r.layout?.partitions.map((p) => ({ number: p.number, type: p.typeGuid, name: p.name, firstLba: p.firstLba, lastLba: p.lastLba, uuid: p.uniqueGuid })),
    etcFiles: r.etc.files,
    timingsMs: r.timings,
  };
  if (json) {
    await writeOut(process.stdout, `${JSON.stringify(summary, null, 2)}\n`);
    return;
  }
  const verity = { enable: 'enabled on every object', deferred: 'enabled and checked by setup-root on first boot', none: 'not required (composefs=?)' }[r.verity];
  await writeOut(process.stdout,
    `Installed ${r.digest}\n` +
    `  target     ${r.target}\n` +
    `  boot       ${r.bootType === 'uki' ? 'sealed UKI (Type 2)' : 'kernel + initrd (Type 1)'}, entry ${r.entryPath}\n` +
    `  fs-verity  ${r.algorithm}, ${verity}\n` +
    `  cmdline    ${r.cmdline}\n` +
    `  took       ${(r.timings.total! / 1000).toFixed(1)} s (${Object.entries(r.timings).filter(([k]) => k !== 'total').map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`).join(', ')})\n`);
}

async function toDisk(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, {
    ...COMMON,
    wipe: { type: 'boolean' },
    'via-loopback': { type: 'boolean' },
    create: { type: 'string' },
    'root-size': { type: 'string' },
    'esp-size': { type: 'string' },
    filesystem: { type: 'string' },
    'stage-dir': { type: 'string' },
  });
  if (values.help) {
    await writeOut(process.stdout, TO_DISK_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('install to-disk takes one DEVICE-OR-IMAGE-FILE');
  if (values.filesystem !== undefined && values.filesystem !== 'ext4') throw new UsageError(`--filesystem ${values.filesystem}: only ext4 is supported (fs-verity)`);
  const progress = progressFor(values['progress-fd']);
  const { installToDisk } = await import('../../install/install.js');
  let r: InstallResult;
  try {
    r = await installToDisk({
      ...common(values, progress),
      target: positionals[0]!,
      wipe: values.wipe,
      createSizeBytes: values.create === undefined ? undefined : parseSize(values.create, '--create'),
      rootSizeBytes: values['root-size'] === undefined ? undefined : parseSize(values['root-size'], '--root-size'),
      espSizeBytes: values['esp-size'] === undefined ? undefined : parseSize(values['esp-size'], '--esp-size'),
      stageDir: values['stage-dir'],
    });
  } finally {
    await progress.close();
  }
  await report(r, values.json);
  return 0;
}

async function toFilesystem(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, { ...COMMON, 'boot-mount': { type: 'string' }, 'root-uuid': { type: 'string' } });
  if (values.help) {
    await writeOut(process.stdout, TO_FS_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('install to-filesystem takes one ROOT directory');
  if (values['boot-mount'] === undefined) throw new UsageError('--boot-mount ESP is required');
  const progress = progressFor(values['progress-fd']);
  const { installToFilesystem } = await import('../../install/install.js');
  let r: InstallResult;
  try {
    r = await installToFilesystem({ ...common(values, progress), root: positionals[0]!, bootMount: values['boot-mount'], rootUuid: values['root-uuid'] });
  } finally {
    await progress.close();
  }
  await report(r, values.json);
  return 0;
}

async function check(argv: string[]): Promise<number> {
  const { values, positionals } = parseCli(argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } });
  if (values.help) {
    await writeOut(process.stdout, CHECK_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('install check takes one DEVICE-OR-IMAGE-FILE');
  const { checkInstalledDisk } = await import('../../install/install.js');
  const c = await checkInstalledDisk(positionals[0]!);
  await writeOut(process.stdout, values.json ? `${JSON.stringify({ complete: c.complete, reason: c.reason })}\n` : `${c.complete ? 'complete' : 'incomplete'}: ${c.reason}\n`);
  return c.complete ? 0 : 1;
}

export const command: Command = {
  name: 'install',
  summary: 'install an image onto a disk or into mounted filesystems (bootc install)',
  help: HELP,
  async run(argv) {
    const [verb, ...rest] = argv;
    if (verb === undefined || verb === '--help' || verb === '-h') {
      await writeOut(process.stdout, HELP);
      return verb === undefined ? 2 : 0;
    }
    if (verb === 'to-disk') return toDisk(rest);
    if (verb === 'to-filesystem') return toFilesystem(rest);
    if (verb === 'check') return check(rest);
    throw new UsageError(`unknown install verb '${verb}' (to-disk, to-filesystem, check)`);
  },
};
