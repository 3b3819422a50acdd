/**
 * Options and helpers the day-2 verbs share (upgrade, switch, rollback, composefs-finalize-staged,
 * internals, delete-deployment): where the system is (booted defaults or an offline root), progress
 * output for pulls, and the reboot of `--apply`.
 */
import { spawnSync } from 'node:child_process';
import { UsageError } from '../command.js';
import { BootcfsError } from '../../errors.js';
import type { DeployContext } from '../../deploy/deployments.js';
import type { PullProgressEvent, LayerBytesEvent } from '../../oci/pull.js';
import { ProgressReporter } from '../../util/progress.js';

export const CONTEXT_OPTIONS = {
  root: { type: 'string' },
  'boot-dir': { type: 'string' },
  'run-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const CONTEXT_HELP = `  --root DIR           an offline physical root (not booted): its default boot entry is the current
                       deployment; the staged marker lives in DIR/run unless --run-dir is given
  --boot-dir DIR       the directory holding loader/entries (the ESP). Default: the first of /boot, /efi,
                       /boot/efi with loader/entries (offline: under DIR)
  --run-dir DIR        where composefs/staged-deployment is (default /run; offline DIR/run)
  -h, --help           show this help

On a booted system the physical root is /sysroot (remounted read-write while the command runs), the
booted deployment is composefs= of /proc/cmdline.
`;

export async function contextFrom(values: { root?: string; 'boot-dir'?: string; 'run-dir'?: string }): Promise<DeployContext> {
  const { deployContext } = await import('../../deploy/deployments.js');
  return deployContext({ root: values.root, bootDir: values['boot-dir'], runDir: values['run-dir'] });
}

/** `--progress-fd N` / a TTY on stderr: the pull's progress. */
export function progressFor(v: string | undefined): ProgressReporter {
  if (v !== undefined && (!/^[0-9]+$/.test(v) || Number(v) < 1)) throw new UsageError(`--progress-fd takes a file descriptor number ≥ 1, not '${v}'`);
  return new ProgressReporter({ fd: v === undefined ? undefined : Number(v), tty: process.stderr });
}

export function pullCallbacks(progress: ProgressReporter): { onProgress?: (ev: PullProgressEvent) => void; onLayerBytes?: (ev: LayerBytesEvent) => void } {
  if (!progress.active) return {};
  return {
    onLayerBytes: (ev) => progress.layerProgress(ev.digest, ev.bytes),
    onProgress: (ev) => {
      if (ev.kind === 'layer-start') progress.layerStart(ev.digest, ev.size);
      else if (ev.kind === 'layer-done') progress.layerDone(ev.digest);
      else if (ev.kind === 'layer-skip') progress.layerDone(ev.digest, { bytes: ev.size, skipped: true });
      else progress.imageDone(ev.imageId);
    },
  };
}

export function tlsOption(v: string | undefined): { tlsVerify: boolean } | undefined {
  if (v !== undefined && v !== 'true' && v !== 'false') throw new UsageError(`--tls-verify takes true or false, not '${v}'`);
  return v === 'false' ? { tlsVerify: false } : undefined;
}

/** `--apply`: reboot through systemd (only on a booted system). */
export function requireBootedForApply(values: { root?: string; apply?: boolean }): void {
  if (values.apply && values.root !== undefined) throw new UsageError('--apply reboots the running system: it cannot be combined with --root');
}

/**
 * Reboots through systemd. Without a D-Bus system bus (minimal images) `systemctl reboot` cannot ask
 * logind first, says so, and may exit non-zero although it queued reboot.target through systemd's
 * private socket: then the system is going down ("stopping"), which is success.
 */
export function reboot(): void {
  const r = spawnSync('systemctl', ['reboot'], { stdio: ['ignore', 'inherit', 'pipe'] });
  if (r.status === 0) return;
  const err = r.error?.message ?? (r.stderr?.toString().trim() || `exit ${r.status}`);
  for (let i = 0; i < 20; i++) {
    const s = spawnSync('systemctl', ['is-system-running'], { stdio: ['ignore', 'pipe', 'ignore'] });
    if (s.stdout?.toString().trim() === 'stopping') return;
    spawnSync('sleep', ['0.5']);
  }
  throw new BootcfsError('EIO', `systemctl reboot failed: ${err}`);
}

export const FINALIZE_UNIT = 'bootcfs-finalize-staged.service';

/** Starts the finalize unit (its ExecStop finalizes at shutdown); a warning if systemd cannot. */
export function startFinalizeUnit(): void {
  const r = spawnSync('systemctl', ['start', FINALIZE_UNIT], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) process.stderr.write(`warning: systemctl start ${FINALIZE_UNIT} failed (${r.error?.message ?? r.stderr?.toString().trim()}): run 'bootcfs composefs-finalize-staged' before rebooting\n`);
}
