/**
 * `bootcfs delete-deployment ID` (bootc delete-deployment, hidden there).
 */
import { parseCli, UsageError, writeOut, type Command } from '../command.js';
import { CONTEXT_HELP, CONTEXT_OPTIONS, contextFrom } from './deploy-options.js';

const HELP = `Usage: bootcfs delete-deployment [--root DIR] [--boot-dir DIR] ID

Remove deployment ID (its composefs digest, or a unique prefix of at least 8 hex digits): its boot entry
first, then garbage collection removes its state, boot files, tag and unreferenced objects. The booted
deployment cannot be deleted, nor the last bootable one; deleting the default makes the next entry the
default; deleting the staged deployment discards it.

Options:
${CONTEXT_HELP}`;

export const command: Command = {
  name: 'delete-deployment',
  summary: 'remove a deployment (bootc delete-deployment)',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCli(argv, { ...CONTEXT_OPTIONS });
    if (values.help) {
      await writeOut(process.stdout, HELP);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError('delete-deployment takes one deployment ID');
    const ctx = await contextFrom(values);
    const { deleteDeployment } = await import('../../deploy/delete.js');
    const r = await deleteDeployment(ctx, positionals[0]!);
    await writeOut(process.stdout, `${r.messages.join('\n')}\n`);
    return 0;
  },
};
