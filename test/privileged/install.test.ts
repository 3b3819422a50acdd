/**
 * `bootcfs install to-disk / to-filesystem / check` on a small synthetic bootable image (kernel and
 * initramfs are random bytes: nothing is booted here — the VM tier boots the real OS image). Checked with
 * the real tools: sgdisk -v, fsck.fat, e2fsck, a read-only ext4 loop mount, our fsck of the repository.
 * Interrupted installs: SIGKILL at random points (seeded), then `install check` must say either
 * "complete" (and the filesystems check clean) or "incomplete: no valid GPT" — never anything between.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import path from 'node:path';
import { BOOTCFS_BIN, cases, isRoot, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { buildTar, writeOciLayout, type TarWriteEntry } from '../helpers/oci-layout.js';
import { lgetxattrs } from '../../src/sys/libc.js';

const work = fs.mkdtempSync('/var/tmp/bootcfs-install-test-');
const mounts: string[] = [];
after(() => {
  for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
  fs.rmSync(work, { recursive: true, force: true });
});

const KVER = '6.1.0-bootcfs-test';
const vmlinuz = randomBytes(300_000);
const initramfs = randomBytes(200_000);
const sdboot = randomBytes(50_000);
let source = '';

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.status} ${r.stderr?.toString()}`);
  return r.stdout.toString();
}

before(() => {
  if (!isRoot) assert.fail('install tests need root (file ownership, loop devices), as CI runs');
  const d = (p: string, mode = 0o755): TarWriteEntry => ({ path: p, type: 'dir', mode });
  const f = (p: string, content: Buffer | string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path: p, type: 'reg', mode: 0o644, content: Buffer.from(content), ...extra });
  const entries: TarWriteEntry[] = [
    d('usr'), d('usr/lib'), d('usr/lib/modules'), d(`usr/lib/modules/${KVER}`), d('usr/lib/systemd'), d('usr/lib/systemd/boot'), d('usr/lib/systemd/boot/efi'),
    d('usr/lib/bootc'), d('usr/lib/bootc/kargs.d'), d('usr/share'), d('usr/share/data'), d('boot'), d('sysroot'), d('etc'), d('etc/sub'), d('var'), d('var/lib'), d('var/lib/app', 0o750),
    f(`usr/lib/modules/${KVER}/vmlinuz`, vmlinuz), f(`usr/lib/modules/${KVER}/initramfs.img`, initramfs),
    f('usr/lib/systemd/boot/efi/systemd-bootx64.efi', sdboot),
    f('usr/lib/os-release', 'ID=bootcfs-test\nVERSION_ID=7\nPRETTY_NAME="bootcfs test OS 7"\n'),
    f('usr/lib/bootc/kargs.d/10-test.toml', 'kargs = ["console=ttyS0", "quiet"]\n'),
    f('etc/hostname', 'install-test\n'),
    f('etc/shadow', 'root:*:19000:0:99999:7:::\n', { mode: 0o640, gid: 42 }),
    f('etc/sub/big.conf', 'x'.repeat(5000), { xattrs: { 'user.bootcfs-test': Buffer.from('value') } }),
    { path: 'etc/os-release', type: 'symlink', linkTarget: '../usr/lib/os-release' },
    f('var/lib/app/state', 'state\n', { uid: 1000, gid: 1000 }),
  ];
  for (let i = 0; i < 50; i++) entries.push(f(`usr/share/data/f${i}`, randomBytes(100 + i * 97)));
  const img = writeOciLayout(path.join(work, 'layout'), { layers: [{ tar: buildTar(entries), compression: 'gzip' }], tag: 'v1' });
  source = `oci:${img.dir}:v1`;
});

interface Installed { digest: string; cmdline: string; entry: string; partitions: Array<{ firstLba: number; lastLba: number; type: string }>; verity: string; bootType: string }

function loop(disk: string, p: { firstLba: number; lastLba: number }, ro = true): string {
  return sh('losetup', ['-f', '--show', ...(ro ? ['-r'] : []), '-o', String(p.firstLba * 512), '--sizelimit', String((p.lastLba - p.firstLba + 1) * 512), disk]).trim();
}

test('install to-disk: GPT, FAT32 ESP and ext4 root that the real tools accept, deployment as bootc lays it out', () => {
  const disk = path.join(work, 'disk.img');
  const r = run(BOOTCFS_BIN, ['install', 'to-disk', '--create', '1G', '--esp-size', '100M', '--stage-dir', work, '--source', source, '--json', disk]);
  assert.equal(r.status, 0, r.stderr.toString());
  const j = JSON.parse(r.stdout.toString()) as Installed;
  assert.equal(j.bootType, 'bls');
  assert.equal(j.verity, 'deferred');
  assert.match(j.cmdline, new RegExp(`^root=UUID=[0-9a-f-]{36} rw composefs=${j.digest} console=ttyS0 quiet$`));
  assert.match(sh('sgdisk', ['-v', disk]), /No problems found/);
  const parts = sh('sgdisk', ['-p', disk]);
  assert.match(parts, /EF00/);
  assert.match(parts, /8304/, 'root partition has the discoverable x86-64 root type');
  assert.equal(run(BOOTCFS_BIN, ['install', 'check', disk]).status, 0);

  const esp = loop(disk, j.partitions[0]!);
  try {
    sh('fsck.fat', ['-n', esp]);
  } finally {
    sh('losetup', ['-d', esp]);
  }
  const img = `${disk}@@${j.partitions[0]!.firstLba * 512}`;
  const entryText = sh('mtype', ['-i', img, `::/${j.entry}`]);
  assert.equal(j.entry, 'loader/entries/bootc_bootcfs_test-7-1.conf');
  assert.match(entryText, /^title bootcfs test OS 7\nversion 7\nlinux \/EFI\/Linux\/bootc_composefs-[0-9a-f]{128}\/vmlinuz\ninitrd .*\/initrd\noptions root=UUID=/);
  assert.match(entryText, /\nsort-key bootc-bootcfs-test-0\n/);
  const kfile = path.join(work, 'vmlinuz.out');
  sh('mcopy', ['-n', '-i', img, `::/EFI/Linux/bootc_composefs-${j.digest}/vmlinuz`, kfile]);
  assert.ok(fs.readFileSync(kfile).equals(vmlinuz), 'the kernel on the ESP is the image\'s');
  sh('mcopy', ['-n', '-o', '-i', img, '::/EFI/BOOT/BOOTX64.EFI', kfile]);
  assert.ok(fs.readFileSync(kfile).equals(sdboot), 'systemd-boot on the ESP is the image\'s');

  const rootDev = loop(disk, j.partitions[1]!);
  const mnt = path.join(work, 'mnt');
  fs.mkdirSync(mnt);
  try {
    spawnSync('e2fsck', ['-fn', rootDev]);
    assert.equal(spawnSync('e2fsck', ['-fn', rootDev]).status, 0, 'e2fsck finds the root filesystem clean');
    assert.match(sh('dumpe2fs', ['-h', rootDev]), /Filesystem features:.*verity/);
    assert.match(sh('dumpe2fs', ['-h', rootDev]), /Block size:\s+4096/);
    sh('mount', ['-t', 'ext4', '-o', 'ro', rootDev, mnt]);
    mounts.push(mnt);
    const dep = path.join(mnt, 'state/deploy', j.digest);
    const shadow = fs.statSync(path.join(dep, 'etc/shadow'));
    assert.equal(shadow.mode & 0o7777, 0o640);
    assert.equal(shadow.gid, 42);
    assert.equal(fs.readlinkSync(path.join(dep, 'etc/os-release')), '../usr/lib/os-release');
    assert.equal(fs.readFileSync(path.join(dep, 'etc/sub/big.conf'), 'utf8'), 'x'.repeat(5000));
    assert.equal(lgetxattrs(path.join(dep, 'etc/sub/big.conf')).get('user.bootcfs-test')?.toString(), 'value');
    assert.equal(fs.readlinkSync(path.join(dep, 'var')), '../../os/default/var');
    const st = fs.statSync(path.join(mnt, 'state/os/default/var/lib/app/state'));
    assert.equal(st.uid, 1000);
    assert.equal(fs.statSync(path.join(mnt, 'state/os/default/var/lib/app')).mode & 0o7777, 0o750);
    const origin = fs.readFileSync(path.join(dep, `${j.digest}.origin`), 'utf8');
    assert.match(origin, new RegExp(`^\\[origin\\]\ncontainer-image-reference = ostree-unverified-image:${source.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n\n\\[boot\\]\nboot_type = bls\ndigest = ${createHash('sha256').update(vmlinuz).update(initramfs).digest('hex')}\n\n\\[image\\]\nmanifest_digest = sha256:[0-9a-f]{64}\n$`));
    assert.ok(fs.existsSync(path.join(mnt, 'composefs/.verity-pending')));
    assert.doesNotMatch(fs.readFileSync(path.join(mnt, 'composefs/meta.json'), 'utf8'), /insecure/, 'the repository is declared secure (verity enabled at first boot)');
    assert.equal(fs.readlinkSync(path.join(mnt, 'composefs/images', j.digest)), `../objects/${j.digest.slice(0, 2)}/${j.digest.slice(2)}`);
    const fsck = run(BOOTCFS_BIN, ['cfs', '--repo', path.join(mnt, 'composefs'), '--insecure', 'fsck']);
    assert.equal(fsck.status, 0, fsck.stdout.toString() + fsck.stderr.toString());
  } finally {
    spawnSync('umount', [mnt]);
    mounts.pop();
    sh('losetup', ['-d', rootDev]);
  }

  // a disk with a partition table is not touched without --wipe
  const before = createHash('sha256').update(fs.readFileSync(disk)).digest('hex');
  const again = run(BOOTCFS_BIN, ['install', 'to-disk', '--source', source, disk]);
  assert.equal(again.status, 1);
  assert.match(again.stderr.toString(), /has a partition table: use --wipe/);
  assert.doesNotMatch(again.stderr.toString(), /\n\s+at /, 'no stack trace');
  assert.equal(createHash('sha256').update(fs.readFileSync(disk)).digest('hex'), before, 'the disk is unchanged');
  fs.copyFileSync(disk, path.join(work, 'complete.img'));
});

test('install to-filesystem: mounted ext4 root + ESP directory; the entry names the filesystem UUID', () => {
  const img = path.join(work, 'rootfs.img');
  sh('truncate', ['-s', '512M', img]);
  sh('mkfs.ext4', ['-q', '-b', '4096', '-O', 'verity', img]);
  const mnt = path.join(work, 'fsroot');
  const espDir = path.join(work, 'esp');
  fs.mkdirSync(mnt);
  fs.mkdirSync(espDir);
  sh('mount', ['-o', 'loop', img, mnt]);
  mounts.push(mnt);
  try {
    const r = run(BOOTCFS_BIN, ['install', 'to-filesystem', '--source', source, '--boot-mount', espDir, '--json', mnt]);
    assert.equal(r.status, 0, r.stderr.toString());
    const j = JSON.parse(r.stdout.toString()) as Installed & { rootUuid: string };
    const uuid = sh('blkid', ['-s', 'UUID', '-o', 'value', img]).trim();
    assert.equal(j.rootUuid, uuid);
    assert.match(fs.readFileSync(path.join(espDir, j.entry), 'utf8'), new RegExp(`options root=UUID=${uuid} rw composefs=${j.digest}`));
    assert.ok(fs.readFileSync(path.join(espDir, `EFI/Linux/bootc_composefs-${j.digest}/initrd`)).equals(initramfs));
    // this host's kernel has no fs-verity: deferred
    assert.equal(j.verity, 'deferred');
    assert.ok(fs.existsSync(path.join(mnt, 'composefs/.verity-pending')));
    assert.ok(fs.statSync(path.join(mnt, 'state/deploy', j.digest, 'etc/hostname')).isFile());
    // a second install into the same root is refused
    const again = run(BOOTCFS_BIN, ['install', 'to-filesystem', '--source', source, '--boot-mount', espDir, mnt]);
    assert.equal(again.status, 1);
    assert.match(again.stderr.toString(), /already holds a composefs repository/);
  } finally {
    spawnSync('umount', [mnt]);
    mounts.pop();
  }
});

test('install to-disk killed at random points: the disk is complete or has no partition table', async () => {
  const disk = path.join(work, 'kill.img');
  const complete = path.join(work, 'complete.img');
  assert.ok(fs.existsSync(complete), 'the first test left a complete install');
  const rng = new Rng(0x5eed1);
  // how long an install takes here
  fs.copyFileSync(complete, disk);
  let t0 = Date.now();
  assert.equal(run(BOOTCFS_BIN, ['install', 'to-disk', '--wipe', '--stage-dir', work, '--esp-size', '100M', '--source', source, disk]).status, 0);
  const full = Date.now() - t0;
  const n = cases(6, 40);
  let incomplete = 0;
  let completed = 0;
  for (let i = 0; i < n; i++) {
    fs.copyFileSync(complete, disk);
    const delay = Math.floor(rng.float() * full * 1.1);
    const p = spawn(BOOTCFS_BIN, ['install', 'to-disk', '--wipe', '--stage-dir', work, '--esp-size', '100M', '--source', source, disk], { detached: true, stdio: 'ignore' });
    t0 = Date.now();
    const exited = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        try { process.kill(-p.pid!, 'SIGKILL'); } catch { /* gone */ }
        resolve(false);
      }, delay);
      p.on('exit', () => { clearTimeout(timer); resolve(true); });
    });
    await new Promise((r) => setTimeout(r, 300));
    const c = run(BOOTCFS_BIN, ['install', 'check', disk]);
    const out = c.stdout.toString();
    if (c.status === 0) {
      completed++;
      assert.match(out, /^complete: /);
      // a complete disk's root filesystem is whole (partition 2 from sgdisk -i)
      const info = sh('sgdisk', ['-i', '2', disk]);
      const first = Number(/First sector: (\d+)/.exec(info)![1]);
      const last = Number(/Last sector: (\d+)/.exec(info)![1]);
      const dev = loop(disk, { firstLba: first, lastLba: last });
      try {
        assert.equal(spawnSync('e2fsck', ['-fn', dev]).status, 0, 'a disk that reads as complete has a clean root filesystem');
      } finally {
        sh('losetup', ['-d', dev]);
      }
    } else {
      incomplete++;
      assert.match(out, /^incomplete: no valid GPT/, `kill after ${delay} ms (exited ${exited}): ${out}`);
    }
    for (const e of fs.readdirSync(work)) if (e.startsWith('bootcfs-install-')) fs.rmSync(path.join(work, e), { recursive: true, force: true });
  }
  console.log(`# ${n} kills over a ${full} ms install: ${incomplete} incomplete (no partition table), ${completed} complete`);
  assert.ok(incomplete > 0, 'some kills interrupted the install');
});
