/**
 * The day-2 building blocks that need no repository: boot entry listing (systemd-boot order, foreign
 * entries), re-keying, entry directories written whole and exchanged (renameat2), the staged marker,
 * Type 1 options on upgrade (composefs= replaced in place, kargs.d delta), image reference
 * normalization, read-only mount detection, and rollback on a synthetic root (entries + origins only).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import {
  exchangePaths, listEntries, mountIsReadOnly, readStagedMarker, rekey, removeEntryTemps, removeStagedEntries, swapStagedEntries, writeEntriesDir,
  writeStagedMarker, entryOsId, type DeployContext,
} from '../../src/deploy/deployments.js';
import { normalizeImageReference, upgradeKargs } from '../../src/deploy/upgrade.js';
import { rollback } from '../../src/deploy/rollback.js';
import { parseBlsEntry } from '../../src/boot/bls.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bootcfs-deploy-unit-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));

const A = 'a'.repeat(128);
const B = 'b'.repeat(128);
const C = 'c'.repeat(128);

function entryText(digest: string, version: string, key: string): string {
  return `title OS ${version}\nversion ${version}\nlinux /EFI/Linux/bootc_composefs-${digest}/vmlinuz\ninitrd /EFI/Linux/bootc_composefs-${digest}/initrd\noptions root=UUID=x rw composefs=${digest}\nsort-key ${key}\n`;
}

function makeRoot(name: string, entries: Record<string, string>, ids: string[]): DeployContext {
  const base = path.join(work, name);
  const ctx: DeployContext = { sysroot: path.join(base, 'root'), bootDir: path.join(base, 'esp'), runDir: path.join(base, 'run'), log: () => undefined, warn: () => undefined };
  fs.mkdirSync(path.join(ctx.bootDir, 'loader/entries'), { recursive: true });
  for (const [n, t] of Object.entries(entries)) fs.writeFileSync(path.join(ctx.bootDir, 'loader/entries', n), t);
  for (const id of ids) {
    fs.mkdirSync(path.join(ctx.sysroot, 'state/deploy', id, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(ctx.sysroot, 'state/deploy', id, `${id}.origin`), `[origin]\ncontainer-image-reference = ostree-unverified-image:oci:/img-${id[0]}:os\n\n[boot]\nboot_type = bls\n`);
  }
  return ctx;
}

test('listEntries: composefs entries in systemd-boot order with their artifacts; other entries are foreign', async () => {
  const ctx = makeRoot('list', {
    'bootc_os-1-0.conf': entryText(A, '1', 'bootc-os-1'),
    'bootc_os-2-1.conf': entryText(B, '2', 'bootc-os-0'),
    'windows.conf': 'title Windows\nefi /EFI/Microsoft/Boot/bootmgfw.efi\n',
    'broken.conf': 'title no kernel\n',
  }, []);
  const l = await listEntries(ctx);
  assert.deepEqual(l.entries.map((e) => e.digest), [B, A]);
  assert.deepEqual(l.entries[0]!.artifacts, [`EFI/Linux/bootc_composefs-${B}`]);
  assert.deepEqual(l.foreign.sort(), ['broken.conf', 'windows.conf']);
  assert.equal(entryOsId(l.entries[0]!), 'os');
  const r = rekey(l.entries[1]!, 'os', true);
  assert.equal(r.fileName, 'bootc_os-1-1.conf');
  assert.equal(r.entry.sortKey, 'bootc-os-0');
  assert.deepEqual(await listEntries(ctx, 'loader/entries.staged'), { entries: [], foreign: [] });
});

test('writeEntriesDir publishes a whole directory (foreign entries copied), replacing an existing one; swap exchanges', async () => {
  const ctx = makeRoot('write', { 'bootc_os-1-1.conf': entryText(A, '1', 'bootc-os-0'), 'memtest.conf': 'title memtest\nefi /memtest.efi\n' }, []);
  const live = await listEntries(ctx);
  const b = parseBlsEntry(entryText(B, '2', 'bootc-os-0'));
  await writeEntriesDir(ctx, 'entries.staged', [{ fileName: 'bootc_os-2-1.conf', entry: b }, rekey(live.entries[0]!, 'os', false)], live.foreign);
  const staged = path.join(ctx.bootDir, 'loader/entries.staged');
  assert.deepEqual(fs.readdirSync(staged).sort(), ['bootc_os-1-0.conf', 'bootc_os-2-1.conf', 'memtest.conf']);
  assert.equal(fs.readFileSync(path.join(staged, 'bootc_os-1-0.conf'), 'utf8'), entryText(A, '1', 'bootc-os-1'));
  // replacing: the old staged directory is gone, no temporaries stay
  await writeEntriesDir(ctx, 'entries.staged', [{ fileName: 'bootc_os-2-1.conf', entry: b }]);
  assert.deepEqual(fs.readdirSync(staged), ['bootc_os-2-1.conf']);
  assert.deepEqual(fs.readdirSync(path.join(ctx.bootDir, 'loader')).sort(), ['entries', 'entries.staged']);
  await swapStagedEntries(ctx);
  assert.deepEqual(fs.readdirSync(path.join(ctx.bootDir, 'loader')).sort(), ['entries']);
  assert.deepEqual(fs.readdirSync(path.join(ctx.bootDir, 'loader/entries')), ['bootc_os-2-1.conf']);
  assert.equal(await removeStagedEntries(ctx), false);
  await assert.rejects(swapStagedEntries(ctx), /nothing to swap in/);
  // leftovers of killed writers
  fs.mkdirSync(path.join(ctx.bootDir, 'loader/.entries.staged.tmp-00aa11'));
  assert.deepEqual(await removeEntryTemps(ctx, true), ['loader/.entries.staged.tmp-00aa11']);
  assert.ok(fs.existsSync(path.join(ctx.bootDir, 'loader/.entries.staged.tmp-00aa11')));
  await removeEntryTemps(ctx);
  assert.ok(!fs.existsSync(path.join(ctx.bootDir, 'loader/.entries.staged.tmp-00aa11')));
});

test('exchangePaths swaps two directories atomically; a missing one is an error', () => {
  const a = path.join(work, 'xa');
  const b = path.join(work, 'xb');
  fs.mkdirSync(a);
  fs.mkdirSync(b);
  fs.writeFileSync(path.join(a, 'in-a'), '');
  exchangePaths(a, b);
  assert.deepEqual(fs.readdirSync(b), ['in-a']);
  assert.deepEqual(fs.readdirSync(a), []);
  assert.throws(() => exchangePaths(a, path.join(work, 'missing')), /renameat2.*ENOENT/);
});

test('staged marker: bootc\'s JSON, read back', async () => {
  const ctx = makeRoot('marker', {}, []);
  assert.equal(await readStagedMarker(ctx), undefined);
  await writeStagedMarker(ctx, { deplId: A, finalizationLocked: true });
  assert.equal(fs.readFileSync(path.join(ctx.runDir, 'composefs/staged-deployment'), 'utf8'), `{"depl_id":"${A}","finalization_locked":true}`);
  assert.deepEqual(await readStagedMarker(ctx), { deplId: A, finalizationLocked: true });
});

test('upgradeKargs: the current options, composefs= replaced where it was, kargs.d delta applied', () => {
  assert.deepEqual(upgradeKargs(`root=UUID=u rw composefs=${A} console=ttyS0 old.flag quiet`, ['console=ttyS0', 'old.flag'], ['console=ttyS0', 'new.flag=1'], B, false),
    ['root=UUID=u', 'rw', `composefs=${B}`, 'console=ttyS0', 'quiet', 'new.flag=1']);
  assert.deepEqual(upgradeKargs(`rw composefs=?${A}`, [], [], B, true), ['rw', `composefs=?${B}`]);
  // an argument the admin added by hand stays even if the old image also had it? only image kargs are removed
  assert.deepEqual(upgradeKargs('rw mine=1', [], ['mine=1'], C, false), ['rw', 'mine=1', `composefs=${C}`]);
});

test('normalizeImageReference: bootc\'s registry default and --transport', () => {
  assert.equal(normalizeImageReference('quay.io/x/os:latest'), 'docker://quay.io/x/os:latest');
  assert.equal(normalizeImageReference('localhost:5000/os'), 'docker://localhost:5000/os');
  assert.equal(normalizeImageReference('docker://quay.io/x'), 'docker://quay.io/x');
  assert.equal(normalizeImageReference('registry:quay.io/x'), 'docker://quay.io/x');
  assert.equal(normalizeImageReference('oci:/srv/layout:v2'), 'oci:/srv/layout:v2');
  assert.equal(normalizeImageReference('/srv/layout:v2', 'oci'), 'oci:/srv/layout:v2');
  assert.equal(normalizeImageReference('/srv/a.tar', 'oci-archive'), 'oci-archive:/srv/a.tar');
});

test('mountIsReadOnly reads the last mount on a path from mountinfo', () => {
  const mi = [
    '22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw',
    '30 22 8:2 / /sysroot rw,relatime shared:2 - ext4 /dev/sda2 rw',
    '31 22 8:2 / /sysroot ro,relatime shared:2 - ext4 /dev/sda2 rw',
  ].join('\n');
  assert.equal(mountIsReadOnly(mi, '/sysroot'), true);
  assert.equal(mountIsReadOnly(mi, '/'), false);
  assert.equal(mountIsReadOnly(mi, '/boot'), false);
});

test('rollback on a synthetic root: staged discarded, swap, revert, foreign entries kept, one entry refuses', async () => {
  const ctx = makeRoot('rb', { 'bootc_os-2-1.conf': entryText(B, '2', 'bootc-os-0'), 'bootc_os-1-0.conf': entryText(A, '1', 'bootc-os-1'), 'other.conf': 'title x\nefi /x.efi\n' }, [A, B]);
  fs.mkdirSync(path.join(ctx.bootDir, 'loader/entries.staged'));
  fs.writeFileSync(path.join(ctx.bootDir, 'loader/entries.staged', 'bootc_os-3-1.conf'), entryText(C, '3', 'bootc-os-0'));
  await writeStagedMarker(ctx, { deplId: C, finalizationLocked: false });
  const booted = { ...ctx, cmdline: `rw composefs=${B}` };
  const r = await rollback(booted);
  assert.deepEqual(r.messages, [`Discarding the staged deployment ${C}.`, `Next boot: rollback deployment ${A} (oci:/img-a:os)`]);
  assert.deepEqual(fs.readdirSync(path.join(ctx.bootDir, 'loader/entries')).sort(), ['bootc_os-1-1.conf', 'bootc_os-2-0.conf', 'other.conf']);
  assert.ok(!fs.existsSync(path.join(ctx.bootDir, 'loader/entries.staged')));
  assert.equal(await readStagedMarker(ctx), undefined);
  const back = await rollback(booted);
  assert.equal(back.reverted, true);
  assert.deepEqual(back.messages, ['notice: Reverting queued rollback state', `Next boot: current deployment ${B} (oci:/img-b:os)`]);
  assert.equal((await listEntries(ctx)).entries[0]!.digest, B);

  const one = makeRoot('rb1', { 'bootc_os-1-1.conf': entryText(A, '1', 'bootc-os-0') }, [A]);
  await assert.rejects(rollback(one), /No rollback deployment/);
});
