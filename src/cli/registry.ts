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
  container: {
    summary: 'sealed images: compute-composefs-digest, ukify, build-sealed, verify-sealed',
    load: async () => (await import('./commands/container.js')).command,
  },
  uki: {
    summary: 'Unified Kernel Images: build and inspect (like ukify)',
    load: async () => (await import('./commands/uki.js')).command,
  },
  sbsign: {
    summary: 'sign a PE/EFI binary for Secure Boot (sbsign-compatible)',
    load: async () => (await import('./commands/authenticode.js')).sbsignCommand,
  },
  sbverify: {
    summary: 'verify the Authenticode signature of a PE/EFI binary (sbverify-compatible)',
    load: async () => (await import('./commands/authenticode.js')).sbverifyCommand,
  },
  authenticode: {
    summary: 'Authenticode digests, signing and verification of PE files',
    load: async () => (await import('./commands/authenticode.js')).authenticodeCommand,
  },
  status: {
    summary: 'show the booted, staged and rollback deployments (bootc status)',
    load: async () => (await import('./commands/status.js')).command,
  },
  upgrade: {
    summary: 'pull the newest version of the booted image and stage it (bootc upgrade)',
    load: async () => (await import('./commands/upgrade.js')).command,
  },
  update: {
    summary: 'alias of upgrade',
    load: async () => (await import('./commands/upgrade.js')).command,
  },
  switch: {
    summary: 'stage another image for the next boot (bootc switch)',
    load: async () => (await import('./commands/switch.js')).command,
  },
  rollback: {
    summary: 'make the previous deployment the default (bootc rollback)',
    load: async () => (await import('./commands/rollback.js')).command,
  },
  'composefs-finalize-staged': {
    summary: 'merge /etc and activate the staged deployment (run at shutdown)',
    load: async () => (await import('./commands/finalize.js')).command,
  },
  'delete-deployment': {
    summary: 'remove a deployment that is not booted',
    load: async () => (await import('./commands/delete-deployment.js')).command,
  },
  internals: {
    summary: 'internals gc [--dry-run] and internals fsck of deployments, boot entries and the repository',
    load: async () => (await import('./commands/internals.js')).command,
  },
  install: {
    summary: 'install an image onto a disk (to-disk) or mounted filesystems (to-filesystem); check a disk',
    load: async () => (await import('./commands/install.js')).command,
  },
  keys: {
    summary: 'Secure Boot keys: generate PK/KEK/db, signature lists and signed updates',
    load: async () => (await import('./commands/keys.js')).command,
  },
};
