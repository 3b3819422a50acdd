/**
 * Paths to the reference tools the differential tests compare against. They are installed by
 * scripts/install-deps.sh; a missing tool is a test failure (never a skip): a tier that cannot run fails.
 */
import { existsSync } from 'node:fs';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const REF_PREFIX = process.env.BOOTCFS_REF ?? '/opt/bootcfs-ref';
export const KERNEL_CACHE = process.env.BOOTCFS_CACHE ?? '/var/cache/bootcfs';
export const MKCOMPOSEFS = `${REF_PREFIX}/composefs/bin/mkcomposefs`;
export const COMPOSEFS_INFO = `${REF_PREFIX}/composefs/bin/composefs-info`;
export const FSVERITY = '/usr/bin/fsverity';

/** Repository root (this file is dist/test/helpers/ref.js after the build). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const FIXTURES = path.join(REPO_ROOT, 'test/fixtures');
export const BOOTCFS_BIN = path.join(REPO_ROOT, 'bin/bootcfs');

export function requireTool(p: string): string {
  if (!existsSync(p)) throw new Error(`reference tool ${p} is missing: run scripts/install-deps.sh`);
  return p;
}

/** 'ci' (default) or 'full' (npm run test:full): scales generated-case counts. */
export const TEST_SIZE: 'ci' | 'full' = process.env.BOOTCFS_TEST_SIZE === 'full' ? 'full' : 'ci';
export function cases(ci: number, full: number): number {
  const override = process.env.BOOTCFS_CASES;
  if (override) return Number(override);
  return TEST_SIZE === 'full' ? full : ci;
}

export interface RunResult { status: number; stdout: Buffer; stderr: Buffer }
/** Run a program synchronously, capturing bytes. */
export function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): RunResult {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30, ...opts });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout as Buffer, stderr: r.stderr as Buffer };
}

export const isRoot = process.getuid?.() === 0;
