import type { Command } from './command.js';

/**
 * Every top-level verb, loaded lazily: a verb imports only the layers it needs (`bootcfs fsverity` never
 * loads the OCI code), which keeps start-up fast.
 */
export interface CommandEntry {
  summary: string;
  load(): Promise<Command>;
}

export const commands: Record<string, CommandEntry> = {
  mkcomposefs: {
    summary: 'build a composefs image from a directory or dumpfile (mkcomposefs-compatible)',
    load: async () => (await import('./commands/mkcomposefs.js')).command,
  },
  'composefs-info': {
    summary: 'inspect composefs images (ls, objects, missing-objects, dump, measure-file)',
    load: async () => (await import('./commands/composefs-info.js')).command,
  },
  fsverity: {
    summary: 'fs-verity digests, measure and enable (fsverity-utils compatible)',
    load: async () => (await import('./commands/fsverity.js')).command,
  },
  cfs: {
    summary: 'composefs repository and OCI images (mirrors cfsctl)',
    load: async () => (await import('./commands/cfs.js')).command,
  },
};
