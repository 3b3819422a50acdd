/**
 * `bootcfs internals gc | fsck` (bootc internals composefs-gc / fsck).
 */
import { parseCli, UsageError, writeOut, type Command } from '../command.js';
import { CONTEXT_HELP, CONTEXT_OPTIONS, contextFrom } from './deploy-options.js';

const HELP = `Usage: bootcfs internals gc [--dry-run] [--json] [--root DIR] [--boot-dir DIR]
       bootcfs internals fsck [--json] [--root DIR] [--boot-dir DIR]

gc: keep the booted, staged and rollback deployments (every deployment a boot entry boots); delete boot
files no entry references, state directories of other deployments, an incomplete staged deployment,
tags bootcfs made for images no deployment uses, then the repository's unreachable images, streams
and objects. --dry-run reports what would go and deletes nothing (alias: composefs-gc).

fsck: re-measure every object of the repository and check every reference, and check that each boot
entry boots a complete deployment whose image is in the repository. Exit 1 if anything is damaged.

Options:
  --dry-run            gc: delete nothing
  --json               print the result as JSON
${CONTEXT_HELP}`;

export const command: Command = {
  name: 'internals',
  summary: 'maintenance: gc (garbage collection), fsck (consistency check)',
  help: HELP,
  async run(argv) {
    const [verb, ...rest] = argv;
    if (verb === undefined || verb === '--help' || verb === '-h') {
      await writeOut(process.stdout, HELP);
      return verb === undefined ? 2 : 0;
    }
    if (verb === 'gc' || verb === 'composefs-gc') {
      const { values, positionals } = parseCli(rest, { ...CONTEXT_OPTIONS, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } });
      if (values.help) {
        await writeOut(process.stdout, HELP);
        return 0;
      }
      if (positionals.length !== 0) throw new UsageError('internals gc takes no arguments');
      const ctx = await contextFrom(values);
      const { collectGarbage, formatDeployGcResult } = await import('../../deploy/gc.js');
      const r = await collectGarbage(ctx, { dryRun: values['dry-run'] });
      await writeOut(process.stdout, values.json ? `${JSON.stringify(r, null, 2)}\n` : formatDeployGcResult(r));
      return 0;
    }
    if (verb === 'fsck') {
      const { values, positionals } = parseCli(rest, { ...CONTEXT_OPTIONS, json: { type: 'boolean' } });
      if (values.help) {
        await writeOut(process.stdout, HELP);
        return 0;
      }
      if (positionals.length !== 0) throw new UsageError('internals fsck takes no arguments');
      const ctx = await contextFrom(values);
      const { fsckDeployments, formatDeploymentFsck } = await import('../../deploy/fsck.js');
      const r = await fsckDeployments(ctx);
      await writeOut(process.stdout, values.json ? `${JSON.stringify(r, null, 2)}\n` : formatDeploymentFsck(r));
      return r.ok ? 0 : 1;
    }
    throw new UsageError(`unknown internals verb '${verb}' (gc, fsck)`);
  },
};
