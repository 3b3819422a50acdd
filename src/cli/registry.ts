import type { Command } from './command.js';

/** Every top-level verb. Each command module exports `command`. */
export const commands: Record<string, Command> = {};
