/**
 * `bootcfs cfs oci mount [--bootable]` on the host kernel (root; erofs + overlayfs; an --insecure
 * repository because this host has no fs-verity): an image pulled with `oci pull --bootable` is mounted
 * through the CLI — the plain and the bootable image — and what the kernel shows is compared with
 * `umoci unpack` of the same layout, adjusted by the documented transforms only: xattr rule
 * bootcfs-xattrs-1, root metadata from /usr, /run emptied, and for the bootable image /boot and /sysroot
 * emptied with /usr's mtime and every inode labelled from the image's SELinux policy (expected labels
 * written out independently below).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BOOTCFS_BIN, isRoot, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { buildTar, writeOciLayout, type TarWriteEntry } from '../helpers/oci-layout.js';
import { compareViews, snapshotTree, umount, type EntryView } from '../helpers/mount.js';
import { keepXattr } from '../../src/oci/xattr-rule.js';

const UMOCI = '/usr/bin/umoci';

const POLICY = [
  '/.*\tsystem_u:object_r:default_t:s0',
  '/usr(/.*)?\tsystem_u:object_r:usr_t:s0',
  '/usr/bin/.*\t--\tsystem_u:object_r:bin_t:s0',
  '/etc(/.*)?\tsystem_u:object_r:etc_t:s0',
  '/boot\t-d\tsystem_u:object_r:boot_t:s0',
  '/var/lib/none(/.*)?\t<<none>>',
  '',
].join('\n');

function expectedLabel(p: string, type: string): string | undefined {
  if (p === '/var/lib/none' || p.startsWith('/var/lib/none/')) return undefined;
  if (p === '/boot' && type === 'dir') return 'system_u:object_r:boot_t:s0';
  if (p === '/etc' || p.startsWith('/etc/')) return 'system_u:object_r:etc_t:s0';
  if (type === 'reg' && p.startsWith('/usr/bin/')) return 'system_u:object_r:bin_t:s0';
  if (p === '/usr' || p.startsWith('/usr/')) return 'system_u:object_r:usr_t:s0';
  return 'system_u:object_r:default_t:s0';
}

function layers(rng: Rng): Buffer[] {
  const t = (): number => 1_600_000_000 + rng.int(0, 100_000);
  const dir = (p: string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path: p, type: 'dir', mode: 0o755, mtimeSec: t(), ...extra });
  const file = (p: string, content: Buffer | string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({
    path: p, type: 'reg', mode: 0o644, mtimeSec: t(), content: typeof content === 'string' ? Buffer.from(content) : content, ...extra,
  });
  const rnd = (n: number): Buffer => Buffer.from(rng.bytes(n));
  const host = { 'security.selinux': Buffer.from('system_u:object_r:container_file_t:s0\0') };
  const l1: TarWriteEntry[] = [
    dir('./', { mode: 0o700 }),
    dir('usr/', { xattrs: { 'user.k': Buffer.from('v') } }),
    dir('usr/bin/'),
    file('usr/bin/sh', rnd(rng.int(65, 100_000)), { mode: 0o755, xattrs: host }),
    { path: 'usr/bin/bash', type: 'hardlink', linkTarget: 'usr/bin/sh', mtimeSec: t() },
    file('usr/bin/tiny', rnd(rng.int(1, 64))),
    { path: 'usr/sbin', type: 'symlink', mode: 0o777, linkTarget: 'bin', mtimeSec: t() },
    dir('usr/share/'),
    file('usr/share/doc', rnd(rng.int(65, 10_000)), { uid: 1000, gid: 1000 }),
    dir('etc/'),
    file('etc/hostname', 'host\n', { xattrs: { ...host, 'user.bin': Buffer.from([0xff, 0]) } }),
    dir('etc/selinux/'),
    file('etc/selinux/config', 'SELINUX=enforcing\nSELINUXTYPE=targeted\n'),
    dir('etc/selinux/targeted/'),
    dir('etc/selinux/targeted/contexts/'),
    dir('etc/selinux/targeted/contexts/files/'),
    file('etc/selinux/targeted/contexts/files/file_contexts', POLICY),
    dir('boot/'),
    dir('boot/efi/'),
    file('boot/vmlinuz', rnd(rng.int(65, 50_000))),
    dir('sysroot/'),
    dir('sysroot/ostree/'),
    dir('var/'),
    dir('var/lib/'),
    dir('var/lib/none/'),
    file('var/lib/none/x', rnd(100), { xattrs: host }),
    { path: 'var/fifo', type: 'fifo', mode: 0o600, mtimeSec: t() },
    dir('run/'),
    file('run/pid', '1'),
  ];
  const l2: TarWriteEntry[] = [
    dir('usr/', { xattrs: { 'user.k': Buffer.from('second') } }),
    dir('usr/bin/'),
    file('usr/bin/new', rnd(rng.int(65, 5000))),
    dir('boot/'),
    file('boot/initrd', rnd(300)),
    dir('var/'),
    dir('var/lib/'),
    file('var/lib/.wh.gone', ''),
  ];
  return [l1, l2].map((e) => buildTar(e, { format: 'pax' }));
}

/** The umoci rootfs as the mounted composefs image must show it. */
function expectedView(src: Map<string, EntryView>, bootable: boolean): Map<string, EntryView> {
  const emptied = bootable ? ['/run', '/boot', '/sysroot'] : ['/run'];
  const out = new Map<string, EntryView>();
  for (const [p, e] of src) {
    if (emptied.some((d) => p.startsWith(`${d}/`))) continue;
    const xattrs = Object.fromEntries(Object.entries(e.xattrs).filter(([k]) => keepXattr(Buffer.from(k, 'utf8').toString('latin1'))));
    out.set(p, { ...e, xattrs });
  }
  const usr = out.get('/usr')!;
  const root = out.get('/')!;
  out.set('/', { ...root, mode: (root.mode & ~0o7777) | (usr.mode & 0o7777), uid: usr.uid, gid: usr.gid, mtimeNs: usr.mtimeNs, xattrs: { ...usr.xattrs } });
  for (const d of emptied) out.set(d, { ...out.get(d)!, mtimeNs: usr.mtimeNs, nlink: 2 });
  if (bootable) {
    for (const [p, e] of out) {
      const l = expectedLabel(p, e.type);
      const xattrs = { ...e.xattrs };
      if (l === undefined) delete xattrs['security.selinux'];
      else xattrs['security.selinux'] = Buffer.from(l).toString('hex');
      out.set(p, { ...e, xattrs });
    }
  }
  return out;
}

function cli(args: string[]): string {
  const r = run(BOOTCFS_BIN, args);
  assert.equal(r.status, 0, `bootcfs ${args.join(' ')}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

test('oci mount [--bootable] of a pulled image == umoci unpack (transforms applied)', async () => {
  assert.ok(isRoot, 'the privileged tier runs as root');
  requireTool(UMOCI);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-ocimount-'));
  try {
    const seed = Date.now() % 100000;
    const layout = writeOciLayout(path.join(dir, 'layout'), { layers: layers(new Rng(seed)).map((tar) => ({ tar, compression: 'gzip' as const })), tag: 'os' });
    const u = run(UMOCI, ['unpack', '--image', `${layout.dir}:os`, path.join(dir, 'bundle')]);
    assert.equal(u.status, 0, u.stderr.toString());
    const src = await snapshotTree(path.join(dir, 'bundle', 'rootfs'));
    const repo = path.join(dir, 'repo');
    cli(['cfs', '--repo', repo, '--insecure', 'init']);
    const out = cli(['cfs', '--repo', repo, 'oci', 'pull', '--bootable', `oci:${layout.dir}:os`, 'os']);
    const boot = /^boot +([0-9a-f]{128})$/m.exec(out)?.[1];
    assert.ok(boot, out);
    for (const bootable of [true, false]) {
      const mnt = path.join(dir, bootable ? 'mnt-boot' : 'mnt');
      mkdirSync(mnt);
      cli(['cfs', '--repo', repo, 'oci', 'mount', ...(bootable ? ['--bootable'] : []), 'os', mnt]);
      try {
        const got = await snapshotTree(mnt);
        assert.deepEqual(compareViews(expectedView(src, bootable), got), [], `seed ${seed} bootable=${bootable}`);
        if (bootable) assert.equal(got.get('/usr/bin/sh')!.xattrs['security.selinux'], Buffer.from('system_u:object_r:bin_t:s0').toString('hex'));
        else assert.equal(got.get('/usr/bin/sh')!.xattrs['security.selinux'], undefined);
      } finally {
        umount(mnt);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
