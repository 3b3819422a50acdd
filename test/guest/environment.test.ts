/**
 * Runs inside the vm-tier guest: checks the guest is what the other guest tests assume (a kernel with
 * fs-verity on an ext4 filesystem with 4 KiB blocks), using the reference fsverity-utils CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

const scratch = process.env.BOOTCFS_GUEST_SCRATCH ?? '/var/tmp/scratch';

test('guest kernel supports fs-verity (fsverity-utils enable/measure)', () => {
  const f = path.join(scratch, 'env-check');
  writeFileSync(f, Buffer.alloc(10000, 0x5a));
  execFileSync('fsverity', ['enable', f]);
  const measured = execFileSync('fsverity', ['measure', f]).toString().split(' ')[0];
  const digest = execFileSync('fsverity', ['digest', f]).toString().split(' ')[0];
  assert.equal(measured, digest);
});

test('guest kernel is new enough for composefs (>= 6.6)', () => {
  const [maj, min] = execFileSync('uname', ['-r']).toString().split('.').map(Number);
  assert.ok(maj! > 6 || (maj === 6 && min! >= 6), `kernel ${maj}.${min}`);
});
