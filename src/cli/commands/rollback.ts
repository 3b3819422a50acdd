/**
 * `bootcfs rollback` (bootc rollback).
 */
import { parseCli, UsageError, writeOut, type Command } from '../command.js';
import { CONTEXT_HELP, CONTEXT_OPTIONS, contextFrom, reboot, requireBootedForApply } from './deploy-options.js';

const HELP = `Usage: bootcfs rollback [--apply] [--root DIR] [--boot-dir DIR]

Make the rollback deployment the default boot entry (the current one becomes the rollback); run again to
undo. A staged deployment is discarded. Each deployment keeps its own /etc: no merge happens.
Prints what boots next.

Options:
  --apply              reboot afterwards (systemctl reboot)
  --soft-reboot MODE   accepted for bootc compatibility; ignored (as bootc does for composefs)
${CONTEXT_HELP}`;

export const command: Command = {
  name: 'rollback',
  summary: 'make the rollback deployment the default (bootc rollback)',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parseCli(argv, { ...CONTEXT_OPTIONS, apply: { type: 'boolean' }, 'soft-reboot': { type: 'string' } });
    if (values.help) {
      await writeOut(process.stdout, HELP);
      return 0;
    }
    if (positionals.length !== 0) throw new UsageError('rollback takes no arguments');
    requireBootedForApply(values);
    const ctx = await contextFrom(values);
    const { rollback } = await import('../../deploy/rollback.js');
    const r = await rollback(ctx);
    await writeOut(process.stdout, `${r.messages.join('\n')}\n`);
    if (values.apply) reboot();
    return 0;
  },
};
