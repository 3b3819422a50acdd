/**
 * `bootcfs status`: the BootcHost document of a composefs system, like `bootc status` (bootc-composefs.md §5).
 */
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UsageError, parseCli, writeOut, type Command } from '../command.js';
import {
  filterToBooted, formatHumanReadable, formatJson, formatYaml, isBackingDeviceReadOnly, readHostStatus, usrOverlayFromMountinfo,
  ENTRIES_DIR, type HostStatusOptions,
} from '../../deploy/status.js';

const HELP = `Usage: bootcfs status [--format humanreadable|yaml|json | --json] [--format-version 0|1] [--booted]
                      [-v] [--root DIR] [--boot-dir DIR]

Show the deployments of a composefs system as bootc does: the BootcHost document (apiVersion
org.containers.bootc/v1) with the staged, booted and rollback deployments and any others.

Options:
  --format FORMAT      humanreadable, yaml or json (default: humanreadable when stdout is a terminal,
                       else yaml); json is canonical (keys sorted, compact)
  --json               same as --format json
  --format-version N   0 or 1 (both mean v1)
  --booted             show only the booted deployment (drop staged and rollback)
  -v, --verbose        human-readable output: also soft-reboot, fs-verity enforcement, download-only
  --root DIR           an offline physical root (not booted): nothing is booted; a staged deployment is read
                       from DIR/run/composefs (where offline upgrade/switch record it; --run-dir to change);
                       the boot loader's default entry is listed first among the other deployments
  --run-dir DIR        where composefs/staged-deployment is (default /run, offline DIR/run)
  --boot-dir DIR       the directory holding loader/entries (the ESP). Default: the first of /boot, /efi,
                       /boot/efi that has loader/entries (offline: DIR/boot, DIR/efi, DIR/boot/efi)
  -h, --help           show this help

On a booted system the physical root is /sysroot, the booted deployment is the composefs= argument of
/proc/cmdline and a staged deployment is named by /run/composefs/staged-deployment.
`;

function findBootDir(candidates: string[]): string | undefined {
  return candidates.find((d) => existsSync(path.join(d, ENTRIES_DIR)));
}

export const command: Command = {
  name: 'status',
  summary: 'show the booted, staged and rollback deployments (bootc status)',
  help: HELP,
  async run(argv: string[]): Promise<number> {
    const { values, positionals } = parseCli(argv, {
      format: { type: 'string' },
      json: { type: 'boolean' },
      'format-version': { type: 'string' },
      booted: { type: 'boolean' },
      verbose: { type: 'boolean', short: 'v' },
      root: { type: 'string' },
      'boot-dir': { type: 'string' },
      'run-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      await writeOut(process.stdout, HELP);
      return 0;
    }
    if (positionals.length !== 0) throw new UsageError(`status takes no arguments (got '${positionals[0]}')`);
    const fv = values['format-version'];
    if (fv !== undefined && fv !== '0' && fv !== '1') throw new UsageError(`unsupported format version '${fv}' (0 or 1)`);
    let format = values.format;
    if (format !== undefined && !['humanreadable', 'yaml', 'json'].includes(format)) {
      throw new UsageError(`invalid --format '${format}' (humanreadable, yaml or json)`);
    }
    if (values.json) {
      if (format !== undefined && format !== 'json') throw new UsageError('--json conflicts with --format ' + format);
      format = 'json';
    }
    format ??= process.stdout.isTTY ? 'humanreadable' : 'yaml';

    const opts: HostStatusOptions = { sysroot: '/sysroot' };
    if (values.root !== undefined) {
      const root = path.resolve(values.root);
      const st = await fsp.stat(root).catch(() => undefined);
      if (!st?.isDirectory()) throw new UsageError(`--root ${values.root} is not a directory`);
      opts.sysroot = root;
      opts.runDir = path.resolve(values['run-dir'] ?? path.join(root, 'run'));
      const boot = values['boot-dir'] ?? findBootDir([path.join(root, 'boot'), path.join(root, 'efi'), path.join(root, 'boot/efi')]);
      if (boot !== undefined) opts.bootDir = path.resolve(boot);
      else process.stderr.write(`warning: no loader/entries under ${root} (use --boot-dir): boot entries not read\n`);
    } else {
      opts.cmdline = await fsp.readFile('/proc/cmdline', 'utf8');
      opts.runDir = path.resolve(values['run-dir'] ?? '/run');
      const boot = values['boot-dir'] ?? findBootDir(['/boot', '/efi', '/boot/efi']);
      if (boot !== undefined) opts.bootDir = path.resolve(boot);
      const mountinfo = await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
      opts.usrOverlay = usrOverlayFromMountinfo(mountinfo);
      opts.readOnly = await isBackingDeviceReadOnly(opts.sysroot);
    }
    if (opts.bootDir !== undefined && !existsSync(opts.bootDir)) throw new UsageError(`--boot-dir ${opts.bootDir} does not exist`);

    let host = await readHostStatus(opts);
    if (values.booted) host = filterToBooted(host);
    const out = format === 'json' ? formatJson(host) : format === 'yaml' ? formatYaml(host) : formatHumanReadable(host, { verbose: values.verbose ?? false });
    await writeOut(process.stdout, out);
    return 0;
  },
};
