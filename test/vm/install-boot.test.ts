/**
 * The product end to end (issue 5): the demo OS image → `bootcfs container build-sealed` (fresh test keys)
 * → `bootcfs install to-disk` a disk image → boot it under OVMF with the keys enrolled and Secure Boot
 * enforced (QEMU TCG, one CPU). The demo image's boot report (os-image/bootcfs-boot-report.sh) prints on
 * the serial console what the guest sees. Then the disk is altered offline and booted again:
 *   1. first boot: setup-root enables fs-verity on every object (this host's kernel cannot) and checks
 *      each against its name; `/` is composefs:<digest> with verity=require, Secure Boot is on, every
 *      object's kernel-measured digest equals its name, a file reads as in the image, status names the
 *      booted deployment;
 *   2. one byte of an object (the canary file) flipped → reading that file fails with EIO, the rest runs;
 *   3. one byte of the composefs image flipped → setup-root refuses to mount it and says why; the machine
 *      stops without a shell;
 *   4. the UKI on the ESP modified → the firmware refuses it;
 *   5. an unsealed install (BLS Type 1, composefs=?) of the same image boots without Secure Boot.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, promises as fsp } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { generateSecureBootKeys, type SecureBootKeys } from '../../src/secureboot/index.js';
import { fsverityDigest } from '../../src/fsverity/digest.js';
import { BOOTCFS_BIN, isRoot, run } from '../helpers/ref.js';
import { enrollVars, requireFirmwareTools, runOvmf, setupModeVars } from '../helpers/ovmf.js';
import { buildOsImage, waitForNoOtherVm, type OsImage } from '../helpers/os-image.js';
import { bootReport, canaryContent, flipFileByte, installToDisk, readEspFile, replaceEspFile, type InstalledDisk } from '../helpers/installed-disk.js';

const SHELL_OFFERED = /Entering emergency mode|Give root password|Press Enter for maintenance|You are in (emergency|rescue) mode|dracut:\/#|\bsh-[0-9.]+#|\(initramfs\)/;
const FATAL = /bootcfs-setup-root: FATAL: (.*)/;
const STOPPED = /reboot: (Restarting system|Power down)|System halted/;
const REPORT_DONE = /BOOTCFS-REPORT done/;
const CANARY = '/usr/share/bootcfs-demo/canary.txt';

const work = mkdtempSync('/var/tmp/bootcfs-install-boot-');
after(async () => {
  if (process.env.BOOTCFS_KEEP_VM_WORK) console.log(`# kept ${work}`);
  else await fsp.rm(work, { recursive: true, force: true });
});

let image: OsImage;
let keys: SecureBootKeys;
let sealed: InstalledDisk;
let varsSb: string;

before(async () => {
  if (!isRoot) assert.fail('this test needs root (OS image build, loop devices for offline tampering), as CI runs');
  requireFirmwareTools();
  image = buildOsImage();
  console.log(`# os image: ${image.layout} (${image.cached ? 'cached' : 'built'} in ${(image.buildMs / 1000).toFixed(1)} s)`);
  keys = await generateSecureBootKeys(path.join(work, 'keys'), { commonName: 'bootcfs install test' });
  varsSb = enrollVars(path.join(work, 'vars-sb.fd'), { pk: keys.PK.files.crt, kek: keys.KEK.files.crt, db: keys.db.files.crt, ownerGuid: keys.ownerGuid });
});

async function boot(name: string, disk: string, vars: string, secureBoot: boolean, until: RegExp, timeoutMs: number) {
  const waited = await waitForNoOtherVm();
  if (waited > 2000) console.log(`# ${name}: waited ${(waited / 1000).toFixed(1)} s for another VM to finish`);
  const r = await runOvmf({ disk, vars, secureBoot, timeoutMs, until, memMiB: 1536 });
  await fsp.writeFile(path.join(work, `${name}-serial.log`), r.serial);
  return r;
}

function kernelTime(serial: string, re: RegExp): number | undefined {
  const line = serial.split('\n').find((l) => re.test(l));
  const m = line && /^\[\s*([0-9]+\.[0-9]+)\]/.exec(line);
  return m ? Number(m[1]) : undefined;
}

const tail = (s: string, n = 60): string => s.split('\n').slice(-n).join('\n');

test('sealed: build-sealed → install to-disk → Secure Boot → verified composefs root; tampering is refused', { timeout: 60 * 60_000 }, async () => {
  // seal with the db key, install
  const t0 = Date.now();
  const sealedRef = `oci:${path.join(work, 'sealed')}:v1`;
  const b = run(BOOTCFS_BIN, ['container', 'build-sealed', `oci:${image.layout}:v1`, '--output', sealedRef, '--key', keys.db.files.key, '--cert', keys.db.files.crt, '--json']);
  assert.equal(b.status, 0, b.stderr.toString());
  const built = JSON.parse(b.stdout.toString()) as { digest: string };
  console.log(`# build-sealed: ${((Date.now() - t0) / 1000).toFixed(1)} s, composefs=${built.digest.slice(0, 16)}…`);
  sealed = installToDisk(path.join(work, 'sealed.img'), sealedRef);
  console.log(`# install to-disk: ${(sealed.wallMs / 1000).toFixed(1)} s wall (${Object.entries(sealed.timingsMs).map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`).join(', ')})`);
  assert.equal(sealed.digest, built.digest, 'the installed deployment is the digest the UKI was sealed with');
  assert.equal(sealed.bootType, 'uki');
  assert.equal(sealed.verity, 'deferred', 'this host cannot enable fs-verity: deferred to the first boot');
  const chk = run(BOOTCFS_BIN, ['install', 'check', sealed.disk]);
  assert.equal(chk.status, 0, chk.stdout.toString() + chk.stderr.toString());

  // 1. first boot under Secure Boot
  const r1 = await boot('sealed-first', sealed.disk, varsSb, true, new RegExp(`${REPORT_DONE.source}|${FATAL.source}|${SHELL_OFFERED.source}`), 20 * 60_000);
  const rep = bootReport(r1.serial);
  const first = /first boot: fs-verity enabled on (\d+) objects and checked \(([0-9.]+)s -> ([0-9.]+)s\)/.exec(r1.serial);
  const setupDone = /bootcfs-setup-root: done at ([0-9.]+)s/.exec(r1.serial);
  console.log(`# first boot: ${(r1.durationMs / 1000).toFixed(1)} s to the report (QEMU start); verity: ${first ? `${first[1]} objects in ${(Number(first[3]) - Number(first[2])).toFixed(1)} s` : 'no line'}; setup-root done at ${setupDone?.[1] ?? '?'} s; report at uptime ${rep.get('uptime') ?? '?'} s`);
  assert.doesNotMatch(r1.serial, FATAL, tail(r1.serial));
  assert.doesNotMatch(r1.serial, SHELL_OFFERED, tail(r1.serial));
  assert.ok(r1.matched && rep.has('done'), `no boot report:\n${tail(r1.serial)}`);
  assert.match(r1.serial, /secureboot: Secure boot enabled/, 'the kernel reports Secure Boot');
  assert.equal(rep.get('secureboot'), '1', 'SecureBoot variable = 1');
  assert.ok(first && Number(first[1]) > 5000, `setup-root enabled fs-verity on every object at first boot:\n${tail(r1.serial)}`);
  assert.match(rep.get('cmdline')!, new RegExp(`(^| )composefs=${sealed.digest}( |$)`));
  const root = rep.get('root')!;
  assert.match(root, new RegExp(`^composefs:${sealed.digest} overlay `), root);
  assert.match(root, /verity=require/, root);
  const verity = /objects=(\d+) ok=(\d+) bad=(\d+)/.exec(rep.get('verity')!);
  assert.ok(verity, rep.get('verity'));
  assert.ok(Number(verity[1]) > 5000 && verity[1] === verity[2] && verity[3] === '0', `every object has fs-verity equal to its name: ${rep.get('verity')}`);
  assert.equal(rep.get('canary')!.split(' ')[0], createHash('sha256').update(canaryContent()).digest('hex'), 'a file reads as in the image');
  assert.match(rep.get('etc')!, /release=1/);
  assert.equal(rep.get('esp'), '/dev/vda1 vfat', 'systemd mounts the ESP at /boot (setup-root names the boot disk in /run/systemd/volatile-root)');
  const status = rep.get('status')!;
  let host: { status?: { booted?: { composefs?: { verity?: string; bootType?: string } } } };
  try {
    host = JSON.parse(status) as typeof host;
  } catch {
    assert.fail(`bootcfs status --json did not print JSON: ${status}`);
  }
  assert.equal(host.status?.booted?.composefs?.verity, sealed.digest, `status names the booted deployment: ${status.slice(0, 400)}`);

  // 2. one byte of the canary's object flipped offline → EIO on read, the system still comes up
  const canaryHex = fsverityDigest(canaryContent(), 'sha512').toString('hex');
  const undoObject = flipFileByte(sealed, `/composefs/objects/${canaryHex.slice(0, 2)}/${canaryHex.slice(2)}`, 100);
  const r2 = await boot('sealed-object-tampered', sealed.disk, varsSb, true, new RegExp(`${REPORT_DONE.source}|${FATAL.source}|${SHELL_OFFERED.source}`), 15 * 60_000);
  const rep2 = bootReport(r2.serial);
  console.log(`# object tampered: ${(r2.durationMs / 1000).toFixed(1)} s; canary: ${rep2.get('canary')}`);
  assert.ok(rep2.has('done'), `no boot report after tampering an object:\n${tail(r2.serial)}`);
  assert.match(rep2.get('canary')!, /Input\/output error/, 'reading the altered file fails with EIO');
  assert.match(r2.serial, /fs-verity.*FILE CORRUPTED|FILE CORRUPTED/i, 'the kernel logs the verity failure');
  undoObject();

  // 3. one byte of the composefs image flipped → setup-root refuses, the machine stops, no shell
  const undoImage = flipFileByte(sealed, `/composefs/objects/${sealed.digest.slice(0, 2)}/${sealed.digest.slice(2)}`, 2000);
  const r3 = await boot('sealed-image-tampered', sealed.disk, varsSb, true, new RegExp(`${STOPPED.source}|${SHELL_OFFERED.source}|${REPORT_DONE.source}`), 10 * 60_000);
  const fatal = FATAL.exec(r3.serial);
  console.log(`# image tampered: ${(r3.durationMs / 1000).toFixed(1)} s; ${fatal?.[0] ?? 'no FATAL'}`);
  assert.ok(fatal, `setup-root did not refuse the altered image:\n${tail(r3.serial)}`);
  assert.doesNotMatch(r3.serial, SHELL_OFFERED, tail(r3.serial));
  assert.doesNotMatch(r3.serial, REPORT_DONE);
  assert.match(r3.serial, STOPPED, tail(r3.serial));
  undoImage();

  // 4. a modified UKI → the firmware refuses to start it
  const ukiPath = `EFI/Linux/bootc/bootc_composefs-${sealed.digest}.efi`;
  const uki = readEspFile(sealed, ukiPath, work);
  const bad = Buffer.from(uki);
  bad[Math.floor(bad.length / 2)] ^= 0xff;
  const undoUki = replaceEspFile(sealed, ukiPath, bad, work);
  const r4 = await boot('sealed-uki-tampered', sealed.disk, varsSb, true, /Linux version|BOOTCFS-REPORT/, 5 * 60_000);
  console.log(`# UKI tampered: ${(r4.durationMs / 1000).toFixed(1)} s; ${r4.refusalLine ?? 'no refusal line'}`);
  assert.ok(r4.refused, `the firmware did not refuse the modified UKI:\n${tail(r4.serial, 30)}`);
  assert.doesNotMatch(r4.serial, /Linux version/);
  undoUki();
});

test('unsealed: install to-disk (BLS Type 1, composefs=?) of the same image boots without Secure Boot', { timeout: 40 * 60_000 }, async () => {
  const d = installToDisk(path.join(work, 'unsealed.img'), `oci:${image.layout}:v1`, ['--allow-missing-verity']);
  console.log(`# install to-disk (unsealed): ${(d.wallMs / 1000).toFixed(1)} s`);
  assert.equal(d.bootType, 'bls');
  assert.equal(d.verity, 'none');
  assert.match(d.cmdline, new RegExp(`(^| )composefs=\\?${d.digest}( |$)`));
  assert.match(d.cmdline, /(^| )root=UUID=[0-9a-f-]{36}( |$)/);
  const r = await boot('unsealed', d.disk, setupModeVars(path.join(work, 'vars-setup.fd')), false, new RegExp(`${REPORT_DONE.source}|${FATAL.source}|${SHELL_OFFERED.source}`), 15 * 60_000);
  const rep = bootReport(r.serial);
  console.log(`# unsealed boot: ${(r.durationMs / 1000).toFixed(1)} s to the report; setup-root done at ${kernelTime(r.serial, /bootcfs-setup-root: done/) ?? '?'} s`);
  assert.ok(rep.has('done'), `no boot report:\n${tail(r.serial)}`);
  assert.match(rep.get('cmdline')!, new RegExp(`composefs=\\?${d.digest}`));
  assert.match(rep.get('root')!, new RegExp(`^composefs:${d.digest} overlay `));
  assert.doesNotMatch(rep.get('root')!, /verity=require/);
  assert.equal(rep.get('canary')!.split(' ')[0], createHash('sha256').update(canaryContent()).digest('hex'));
});

