/**
 * vm tier: runs every test in test/guest/ inside a QEMU guest with Debian trixie's kernel (fs-verity
 * enabled), on an ext4 filesystem with 4 KiB blocks and the verity feature. Each guest test becomes a
 * subtest here, so a failure inside the guest fails this tier with the guest test's name.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildInitramfs, guestKernel, listGuestTests, makeExt4Disk, parseTap, runQemu, stageRuntime } from '../helpers/vm.js';

test('guest suite (fs-verity + composefs mounts in a trixie QEMU guest)', { timeout: 1_500_000 }, async (t) => {
  const kernel = guestKernel();
  const work = mkdtempSync('/var/tmp/bootcfs-vm-');
  try {
    const stage = path.join(work, 'stage');
    await stageRuntime(stage);
    const files = listGuestTests();
    assert.ok(files.length > 0, 'no guest tests were built');
    writeFileSync(
      path.join(stage, 'guest-run.sh'),
      [
        'export PATH=/bin:/usr/bin:/sbin:/usr/sbin HOME=/root',
        'mkdir -p /var/tmp/scratch/tmp /root',
        // same filesystem as the scratch trees (the tree generator renames sockets into place)
        'export TMPDIR=/var/tmp/scratch/tmp',
        'export BOOTCFS_GUEST_SCRATCH=/var/tmp/scratch BOOTCFS_IN_GUEST=1',
        'cd /bootcfs',
        `node --test --test-concurrency=1 --test-reporter=tap ${files.map((f) => `dist/test/guest/${f}`).join(' ')}`,
      ].join('\n') + '\n',
    );
    const disk = path.join(work, 'disk.img');
    makeExt4Disk(stage, disk, 1536);
    const initrd = await buildInitramfs(kernel, work);
    const verbose = process.env.BOOTCFS_VM_VERBOSE === '1';
    const res = await runQemu({ kernel, initrd, disk, timeoutMs: 1_200_000, onLine: verbose ? (l) => console.log(`[guest] ${l}`) : undefined });
    const results = parseTap(res.output);
    t.diagnostic(`guest kernel ${kernel.version}; VM wall time ${(res.wallMs / 1000).toFixed(1)} s; ${results.length} guest tests`);
    for (const r of results) {
      await t.test(`guest: ${r.name}`, () => {
        assert.ok(r.ok, `guest test failed: ${r.name}\n${res.output.slice(-6000)}`);
      });
    }
    assert.ok(results.length > 0, `guest ran no tests; console:\n${res.fullLog.slice(-6000)}`);
    assert.equal(res.guestExit, 0, `guest test run exited ${res.guestExit}; console:\n${res.output.slice(-8000)}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
