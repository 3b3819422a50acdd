/**
 * `bootcfs upgrade` (bootc upgrade, alias update) and the shared runner of `bootcfs switch`.
 */
import { parseCli, UsageError, writeOut, type Command } from '../command.js';
import type { UpgradeOptions, UpgradeResult } from '../../deploy/upgrade.js';
import { CONTEXT_HELP, CONTEXT_OPTIONS, contextFrom, progressFor, pullCallbacks, reboot, requireBootedForApply, startFinalizeUnit, tlsOption } from './deploy-options.js';

const HELP = `Usage: bootcfs upgrade [--check | --apply] [--download-only | --from-downloaded] [--quiet]
                       [--progress-fd N] [--json] [--tls-verify=BOOL] [--root DIR] [--boot-dir DIR]

Fetch the image the current deployment was installed from (its origin's reference) and, if it changed,
stage it as a new deployment: its state, boot files and loader/entries.staged (new deployment first,
current one as rollback). Nothing changes for the boot loader until composefs-finalize-staged (run at
shutdown by bootcfs-finalize-staged.service) merges /etc and swaps the entries in. An image whose /etc
cannot be merged with the local /etc is refused before anything is staged.

Options:
  --check              only report whether an update exists and how many bytes of layers this repository
                       lacks; writes nothing
  --apply              reboot after staging (systemctl reboot)
  --download-only      stage, but do not finalize at shutdown (upgrade --from-downloaded unlocks it)
  --from-downloaded    unlock a download-only staged deployment (finalized at the next shutdown)
  --quiet              no progress output on a terminal
  --progress-fd N      JSON-lines pull progress on file descriptor N
  --json               print the result as JSON (bootcfs extension)
  --tls-verify=BOOL    verify registry TLS certificates (default true)
${CONTEXT_HELP}
Exit status: 0 staged, nothing to do, or check done; 1 error (nothing staged); 2 usage.
`;

export const UPGRADE_OPTIONS = {
  ...CONTEXT_OPTIONS,
  apply: { type: 'boolean' },
  quiet: { type: 'boolean' },
  'progress-fd': { type: 'string' },
  json: { type: 'boolean' },
  'tls-verify': { type: 'string' },
} as const;

export function describeResult(r: UpgradeResult): string {
  if (r.kind !== 'check') return `${r.message}\n`;
  const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;
  if (!r.updateAvailable) {
    return r.staged ? `Update already staged: ${r.reference} (${r.manifestDigest})\n` : `No update available: ${r.reference} is still ${r.manifestDigest}\n`;
  }
  return `Update available for ${r.reference}\n  manifest ${r.manifestDigest} (current: ${r.currentManifestDigest ?? 'unknown'})\n  new: ${r.newLayers} of ${r.totalLayers} layers, ${r.newBytes} bytes (${mb(r.newBytes)} of ${mb(r.totalBytes)})\n`;
}

/** Runs upgrade/switch with parsed options and prints the result. */
export async function runUpgrade(values: { root?: string; 'boot-dir'?: string; 'run-dir'?: string; apply?: boolean; quiet?: boolean; 'progress-fd'?: string; json?: boolean; 'tls-verify'?: string }, opts: UpgradeOptions): Promise<number> {
  requireBootedForApply(values);
  const ctx = await contextFrom(values);
  const progress = values.quiet && values['progress-fd'] === undefined ? undefined : progressFor(values['progress-fd']);
  const { upgrade } = await import('../../deploy/upgrade.js');
  let r: UpgradeResult;
  try {
    r = await upgrade(ctx, { ...opts, registry: tlsOption(values['tls-verify']), ...(progress ? pullCallbacks(progress) : {}) });
  } finally {
    await progress?.close();
  }
  await writeOut(process.stdout, values.json ? `${JSON.stringify(r, null, 2)}\n` : describeResult(r));
  // the unit finalizes at shutdown (ExecStop): it must be active (bootc starts its unit the same way)
  if (values.root === undefined && (r.kind === 'staged' || r.kind === 'unlocked')) startFinalizeUnit();
  if (values.apply && (r.kind === 'staged' || r.kind === 'already-staged' || r.kind === 'unlocked')) reboot();
  return 0;
}

export const command: Command = {
  name: 'upgrade',
  summary: 'stage the newest version of the current image (bootc upgrade)',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCli(argv, { ...UPGRADE_OPTIONS, check: { type: 'boolean' }, 'download-only': { type: 'boolean' }, 'from-downloaded': { type: 'boolean' } });
    if (values.help) {
      await writeOut(process.stdout, HELP);
      return 0;
    }
    if (positionals.length !== 0) throw new UsageError(`upgrade takes no arguments (got '${positionals[0]}'); to change images use switch`);
    if (values.check && values.apply) throw new UsageError('--check and --apply exclude each other');
    if (values['download-only'] && values['from-downloaded']) throw new UsageError('--download-only and --from-downloaded exclude each other');
    if (values.check && (values['download-only'] || values['from-downloaded'])) throw new UsageError('--check stages nothing: it takes no --download-only/--from-downloaded');
    return runUpgrade(values, { check: values.check, downloadOnly: values['download-only'], fromDownloaded: values['from-downloaded'] });
  },
};
