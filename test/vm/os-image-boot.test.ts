/**
 * The demo OS image boots: Debian's kernel + the dracut (systemd) initramfs built by
 * scripts/build-os-image.sh + bootcfs's setup-root module, as a sealed UKI under OVMF (TCG, no Secure Boot
 * here: the Secure Boot chain has its own test). The root partition is found by its discoverable-partitions
 * type (the UKI has no root=).
 *
 * 1. A root partition without a composefs repository: setup-root runs, fails with its FATAL line, and the
 *    machine stops (reboot → QEMU exits with -no-reboot) without offering any shell.
 *    (Booting the whole demo image from a disk made by `bootcfs install to-disk`, sealed and unsealed, is
 *    test/vm/install-boot.test.ts.)
 * 2. First boot with composefs/.verity-pending (the installer's kernel could not enable fs-verity), sealed
 *    composefs=<digest>, a small tree: setup-root enables verity on every object, checks each against its
 *    name and mounts with verity=require; with one object altered before the boot it refuses (FATAL).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { BOOTCFS_BIN, isRoot, run } from '../helpers/ref.js';
import { buildEsp, buildGptDisk, requireFirmwareTools, runOvmf, setupModeVars, ESP_TYPE, LINUX_ROOT_X86_64_TYPE } from '../helpers/ovmf.js';
import { buildOsImage, extractKernelDir, makeRootFilesystem, makeTestSigningKey, sealOsImage, stageComposefsRoot, waitForNoOtherVm, type OsImage, type SealedOsImage } from '../helpers/os-image.js';

const SHELL_OFFERED = /Entering emergency mode|Give root password|Press Enter for maintenance|You are in (emergency|rescue) mode|dracut:\/#|\bsh-[0-9.]+#|\(initramfs\)/;
const FATAL = /bootcfs-setup-root: FATAL: (.*)/;
const STOPPED = /reboot: (Restarting system|Power down)|System halted/;

const work = mkdtempSync('/var/tmp/bootcfs-os-image-boot-');
// disk images are large: removed afterwards unless BOOTCFS_KEEP_VM_WORK is set (serial logs are in WORK/*-serial.log)
after(async () => {
  if (process.env.BOOTCFS_KEEP_VM_WORK) console.log(`# kept ${work}`);
  else await fsp.rm(work, { recursive: true, force: true });
});
let image: OsImage | undefined;
const sealed = new Map<string, SealedOsImage>();

function osImage(): OsImage {
  image ??= buildOsImage();
  return image;
}

function sealedImage(kind: 'sealed' | 'insecure'): SealedOsImage {
  let s = sealed.get(kind);
  if (!s) {
    const dir = path.join(work, kind);
    mkdirSync(dir, { recursive: true });
    const keys = makeTestSigningKey(dir);
    s = sealOsImage(`oci:${osImage().layout}:v1`, dir, keys, kind === 'insecure' ? ['--allow-missing-verity'] : []);
    sealed.set(kind, s);
  }
  return s;
}

async function bootDisk(name: string, s: SealedOsImage, rootImage: string, rootMiB: number, until: RegExp, timeoutMs: number) {
  requireFirmwareTools();
  const esp = buildEsp([
    { path: 'EFI/BOOT/BOOTX64.EFI', data: s.systemdBoot },
    { path: `EFI/Linux/bootcfs-${s.digest.slice(0, 16)}.efi`, data: s.uki },
    { path: 'loader/loader.conf', data: Buffer.from('timeout 0\neditor no\n') },
  ], 96, path.join(work, `${name}-esp.img`));
  const disk = path.join(work, `${name}-disk.img`);
  buildGptDisk(disk, [
    { type: ESP_TYPE, name: 'EFI-SYSTEM', sizeMiB: 96, image: esp },
    { type: LINUX_ROOT_X86_64_TYPE, name: 'root', sizeMiB: rootMiB, image: rootImage },
  ]);
  const waited = await waitForNoOtherVm();
  if (waited > 2000) console.log(`# ${name}: waited ${(waited / 1000).toFixed(1)} s for another VM to finish`);
  const vars = setupModeVars(path.join(work, `${name}-vars.fd`));
  const r = await runOvmf({ disk, vars, secureBoot: false, timeoutMs, until, refusal: null, memMiB: 1536 });
  await fsp.writeFile(path.join(work, `${name}-serial.log`), r.serial);
  return r;
}

/** Seconds since QEMU start at which `re` first appeared, from the kernel's printk clock when the line has one. */
function at(serial: string, re: RegExp): string {
  const line = serial.split('\n').find((l) => re.test(l));
  const m = line && /^\[\s*([0-9]+\.[0-9]+)\]/.exec(line);
  return m ? `${m[1]} s kernel time` : line ? 'seen' : 'not seen';
}

test('os image: a sealed UKI from the demo image boots its dracut initramfs; setup-root without a repository fails closed', { timeout: 40 * 60_000 }, async () => {
  if (!isRoot) assert.fail('this test needs root (the OS image build chroots, as CI runs)');
  const img = osImage();
  console.log(`# os image: ${img.layout} (${img.cached ? 'cached' : 'built'} in ${(img.buildMs / 1000).toFixed(1)} s)`);
  const s = sealedImage('sealed');
  console.log(`# sealed in ${(s.sealMs / 1000).toFixed(1)} s: ${s.cmdline}`);
  assert.match(s.cmdline, new RegExp(`(^| )composefs=${s.digest}( |$)`));
  assert.match(s.cmdline, /(^| )panic=-1( |$)/);
  assert.match(s.cmdline, /(^| )rd\.shell=0( |$)/);
  assert.doesNotMatch(s.cmdline, /(^| )root=/, 'a UKI built before the disk exists must not name the root');

  // an empty ext4 root partition: the root is found (DPS type) and mounted, but holds no composefs repository
  const emptyStage = path.join(work, 'empty-root');
  await fsp.mkdir(emptyStage, { recursive: true });
  const rootImg = path.join(work, 'empty-root.img');
  makeRootFilesystem(emptyStage, rootImg, 64);
  const r = await bootDisk('no-repo', s, rootImg, 64, SHELL_OFFERED, 8 * 60_000);
  console.log(`# no-repo boot: ${(r.durationMs / 1000).toFixed(1)} s until QEMU stopped; FATAL at ${at(r.serial, FATAL)}; stop at ${at(r.serial, STOPPED)}`);
  const tail = r.serial.split('\n').slice(-40).join('\n');
  assert.ok(!r.timedOut, `the guest did not stop within the timeout:\n${tail}`);
  assert.match(r.serial, /Linux version 6\.12/, 'the kernel started');
  assert.match(r.serial, /systemd\[1\]: .*initrd|Running in initrd|initrd-root-device\.target|Initrd Root/i, 'systemd runs in the initramfs');
  const fatal = FATAL.exec(r.serial);
  assert.ok(fatal, `no FATAL line from setup-root:\n${tail}`);
  assert.match(fatal[1]!, /no composefs repository at \/sysroot\/composefs/);
  assert.doesNotMatch(r.serial, SHELL_OFFERED, `a shell was offered after the failure:\n${tail}`);
  assert.match(r.serial, STOPPED, `the machine did not stop after the failure:\n${tail}`);
  assert.doesNotMatch(r.serial, /bootcfs-setup-root: done/);
});

/** A small tree (many small objects) whose sealed UKI uses the demo image's kernel and initramfs. */
async function smallSealedRoot(name: string, tamper: boolean): Promise<{ stage: string; uki: string; systemdBoot: string; digest: string; objects: number }> {
  const img = osImage();
  const dir = path.join(work, name);
  const rootfs = path.join(dir, 'rootfs');
  for (const d of ['usr/lib/bootc/kargs.d', 'usr/share/canary', 'etc', 'var/lib', 'boot', 'sysroot', 'dev', 'proc', 'sys', 'run', 'tmp']) {
    await fsp.mkdir(path.join(rootfs, d), { recursive: true });
  }
  await fsp.writeFile(path.join(rootfs, 'usr/lib/os-release'), 'NAME="bootcfs verity test"\nID=bootcfs-test\n');
  await fsp.writeFile(path.join(rootfs, 'usr/lib/bootc/kargs.d/10-test.toml'), 'kargs = ["console=ttyS0", "panic=-1", "rd.shell=0", "rw"]\n');
  const objects = 200;
  for (let i = 0; i < objects; i++) {
    await fsp.writeFile(path.join(rootfs, `usr/share/canary/f${i}`), `canary ${i} `.repeat(40 + i));
  }
  await fsp.writeFile(path.join(rootfs, 'etc/hostname'), 'verity-test\n');
  const kdir = extractKernelDir(img.layout, 'v1', path.join(dir, 'kernel'));
  const keys = makeTestSigningKey(dir);
  const uki = path.join(dir, 'uki.efi');
  const out = run(BOOTCFS_BIN, ['container', 'ukify', '--rootfs', rootfs, '--kernel-dir', kdir, '--output', uki, '--key', keys.key, '--cert', keys.cert]);
  assert.equal(out.status, 0, out.stderr.toString());
  const digest = /composefs=([0-9a-f]{128})/.exec(out.stdout.toString() + out.stderr.toString() + (await fsp.readFile(uki)).toString('latin1'))?.[1];
  assert.ok(digest, 'the UKI names a sealed composefs= digest');
  const stage = path.join(dir, 'stage');
  const repo = path.join(stage, 'composefs');
  assert.equal(run(BOOTCFS_BIN, ['cfs', '--repo', repo, '--insecure', 'init']).status, 0);
  const ci = run(BOOTCFS_BIN, ['cfs', '--repo', repo, '--insecure', 'create-image', '--bootable', rootfs]);
  assert.equal(ci.status, 0, ci.stderr.toString());
  assert.equal(ci.stdout.toString().trim().split('\n').pop()!.replace(/^.*?([0-9a-f]{128}).*$/, '$1'), digest, 'create-image --bootable gives the digest the UKI names');
  await fsp.mkdir(path.join(stage, 'state/deploy', digest, 'etc'), { recursive: true });
  await fsp.mkdir(path.join(stage, 'state/deploy', digest, 'var'), { recursive: true });
  await fsp.writeFile(path.join(repo, '.verity-pending'), '');
  if (tamper) {
    // the object holding f7 (a digest-named file in objects/): change one byte, as an attacker with the disk could
    const objs = path.join(repo, 'objects');
    const want = `canary 7 `.repeat(47);
    let victim: string | undefined;
    for (const sub of await fsp.readdir(objs)) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue;
      for (const f of await fsp.readdir(path.join(objs, sub))) {
        const p = path.join(objs, sub, f);
        if ((await fsp.readFile(p, 'latin1')) === want) victim = p;
      }
    }
    assert.ok(victim, 'found the object of f7');
    const b = await fsp.readFile(victim);
    b[5] ^= 1;
    await fsp.writeFile(victim, b);
  }
  return { stage, uki, systemdBoot: sealedImage('sealed').systemdBoot, digest, objects };
}

/** ext4 inode flags of FILE in the root partition (GPT partition 2) of DISK, or undefined when FILE does not exist (debugfs). */
function rootFileFlags(disk: string, file: string): number | undefined {
  const info = run('sgdisk', ['-i', '2', disk]);
  assert.equal(info.status, 0, info.stderr.toString());
  const start = /First sector: (\d+)/.exec(info.stdout.toString())?.[1];
  assert.ok(start, info.stdout.toString());
  const part = `${disk}.root-after-boot`;
  const dd = run('dd', [`if=${disk}`, `of=${part}`, 'bs=512', `skip=${start}`, 'count=131072', 'status=none']);
  assert.equal(dd.status, 0, dd.stderr.toString());
  const st = run('debugfs', ['-R', `stat ${file}`, part]);
  const flags = /Flags: (0x[0-9a-f]+)/.exec(st.stdout.toString())?.[1];
  return flags === undefined ? undefined : Number(flags);
}
const EXT4_VERITY_FL = 0x100000;

test('os image: first boot with .verity-pending enables and checks fs-verity on every object; an altered object is refused', { timeout: 40 * 60_000 }, async () => {
  if (!isRoot) assert.fail('this test needs root (the OS image build chroots, as CI runs)');
  for (const tamper of [false, true]) {
    const name = tamper ? 'verity-pending-tampered' : 'verity-pending';
    const r0 = await smallSealedRoot(name, tamper);
    const rootImg = path.join(work, `${name}-root.img`);
    makeRootFilesystem(r0.stage, rootImg, 64);
    const s: SealedOsImage = { ref: '', digest: r0.digest, cmdline: '', kver: '', uki: r0.uki, systemdBoot: r0.systemdBoot, sealMs: 0 };
    const r = await bootDisk(name, s, rootImg, 64, /bootcfs-setup-root: (done|FATAL)[^\n]*\n/, 8 * 60_000);
    const tail = r.serial.split('\n').slice(-30).join('\n');
    const first = /first boot: fs-verity enabled on (\d+) objects and checked \(([0-9.]+)s -> ([0-9.]+)s\)/.exec(r.serial);
    if (!tamper) {
      assert.ok(first, `no first-boot verity line:\n${tail}`);
      console.log(`# ${name}: ${first[1]} objects enabled and measured in ${(Number(first[3]) - Number(first[2])).toFixed(2)} s (TCG; ${((Number(first[3]) - Number(first[2])) * 1000 / Number(first[1])).toFixed(1)} ms/object)`);
      assert.ok(Number(first[1]) >= r0.objects, `every object (${r0.objects} files + the image) had verity enabled`);
      assert.doesNotMatch(r.serial, FATAL, tail);
      assert.match(r.serial, new RegExp(`bootcfs-setup-root: done .* / = composefs:${r0.digest}`), tail);
      // on the disk after the boot: meta.json has fs-verity (the repository is secure now), the marker is gone
      const disk = path.join(work, `${name}-disk.img`);
      const metaFlags = rootFileFlags(disk, '/composefs/meta.json');
      assert.ok(metaFlags !== undefined && (metaFlags & EXT4_VERITY_FL) !== 0, `meta.json has fs-verity after the first boot (flags ${metaFlags?.toString(16)})`);
      assert.equal(rootFileFlags(disk, '/composefs/.verity-pending'), undefined, '.verity-pending was removed');
    } else {
      const fatal = FATAL.exec(r.serial);
      assert.ok(fatal, `no FATAL line:\n${tail}`);
      assert.match(fatal[1]!, /does not match its name/, fatal[1]);
      assert.notEqual(rootFileFlags(path.join(work, `${name}-disk.img`), '/composefs/.verity-pending'), undefined, 'a refused first boot keeps .verity-pending');
      console.log(`# ${name}: refused: ${fatal[1]!.slice(0, 160)}`);
    }
  }
});
