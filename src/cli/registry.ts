import type { Command } from './command.js';
import { command as cfs } from './commands/cfs.js';
import { command as composefsInfo } from './commands/composefs-info.js';
import { command as fsverity } from './commands/fsverity.js';
import { command as mkcomposefs } from './commands/mkcomposefs.js';

/** Every top-level verb. Each command module exports `command`. */
export const commands: Record<string, Command> = {
  mkcomposefs,
  'composefs-info': composefsInfo,
  fsverity,
  cfs,
};
