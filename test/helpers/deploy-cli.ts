/**
 * Runs a day-2 verb (upgrade, switch, rollback, composefs-finalize-staged, internals, delete-deployment)
 * as the bootcfs CLI does: through src/cli/registry.ts when the verb is registered there, else straight
 * from its command module (until the lead registers it). Same exit codes as bin/bootcfs: 0, 1 (error,
 * `bootcfs: msg`), 2 (usage).
 *
 *   node deploy-cli.js VERB ARGS...
 */
import { BootcfsError } from '../../src/errors.js';
import { UsageError, type Command } from '../../src/cli/command.js';
import { commands } from '../../src/cli/registry.js';

const MODULES: Record<string, () => Promise<Command>> = {
  upgrade: async () => (await import('../../src/cli/commands/upgrade.js')).command,
  switch: async () => (await import('../../src/cli/commands/switch.js')).command,
  rollback: async () => (await import('../../src/cli/commands/rollback.js')).command,
  'composefs-finalize-staged': async () => (await import('../../src/cli/commands/finalize.js')).command,
  internals: async () => (await import('../../src/cli/commands/internals.js')).command,
  'delete-deployment': async () => (await import('../../src/cli/commands/delete-deployment.js')).command,
  status: async () => (await import('../../src/cli/commands/status.js')).command,
};

async function main(): Promise<number> {
  const [verb, ...rest] = process.argv.slice(2);
  const load = Object.hasOwn(commands, verb ?? '') ? commands[verb!]!.load : MODULES[verb ?? ''];
  if (load === undefined) throw new UsageError(`unknown verb '${verb}'`);
  return (await load()).run(rest);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    if (e instanceof UsageError) {
      process.stderr.write(`bootcfs: ${e.message}\n`);
      process.exitCode = 2;
    } else if (e instanceof BootcfsError) {
      process.stderr.write(`bootcfs: ${e.message}\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`bootcfs: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exitCode = 70;
    }
  },
);
