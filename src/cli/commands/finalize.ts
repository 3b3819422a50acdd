/**
 * `bootcfs composefs-finalize-staged` (bootc composefs-finalize-staged), run at shutdown by
 * bootcfs-finalize-staged.service.
 */
import { parseCli, UsageError, writeOut, type Command } from '../command.js';
import { CONTEXT_HELP, CONTEXT_OPTIONS, contextFrom } from './deploy-options.js';

const HELP = `Usage: bootcfs composefs-finalize-staged [--json] [--root DIR] [--boot-dir DIR] [--run-dir DIR]

Finalize the staged deployment (run at shutdown by bootcfs-finalize-staged.service): merge /etc three
ways (the current image's /etc, the live /etc, the new image's /etc: local edits, additions and
deletions are kept, untouched files follow the new image) into the new deployment, then swap
loader/entries.staged in atomically, then collect garbage. On a merge conflict, or if the staged
deployment is incomplete, nothing is swapped: the current default keeps booting (exit 1).
Nothing staged, or a download-only deployment: nothing to do (exit 0).

Options:
  --json               print the result as JSON
${CONTEXT_HELP}`;

export const command: Command = {
  name: 'composefs-finalize-staged',
  summary: 'merge /etc and swap in the staged deployment (run at shutdown)',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCli(argv, { ...CONTEXT_OPTIONS, json: { type: 'boolean' } });
    if (values.help) {
      await writeOut(process.stdout, HELP);
      return 0;
    }
    if (positionals.length !== 0) throw new UsageError('composefs-finalize-staged takes no arguments');
    const ctx = await contextFrom(values);
    const { finalizeStaged } = await import('../../deploy/finalize.js');
    const r = await finalizeStaged(ctx, {
      onBegin: (id) => process.stderr.write(`Finalizing staged deployment ${id}: merging /etc, then swapping the boot entries\n`),
    });
    await writeOut(process.stdout, values.json ? `${JSON.stringify(r, null, 2)}\n` : `${r.message}\n`);
    return 0;
  },
};
