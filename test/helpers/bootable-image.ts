/**
 * A small bootable test image as an OCI layout, built from hand-made layers (no container engine):
 * the Debian trixie guest kernel at /usr/lib/modules/<kver>/vmlinuz, a busybox initramfs at
 * initramfs.img that prints a marker line with /proc/cmdline and powers off, /usr/lib/os-release,
 * kargs.d, /boot (with a stale file the bootable transform must drop), /sysroot, /run, and some ordinary
 * content (hardlinks, xattrs, a symlinked /etc/os-release). Two layers, gzip.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildTar, writeOciLayout, type TarWriteEntry, type WrittenImage } from './oci-layout.js';
import { guestKernel } from './vm.js';

export const BOOT_MARKER = 'BOOTCFS-SEALED-MARKER';

/** A busybox initramfs (gzip cpio) whose /init prints `${marker} sb=<...> cmdline=<...>` and powers off. */
export function markerInitramfs(marker = BOOT_MARKER): Buffer {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bootcfs-ird-'));
  try {
    for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp']) fs.mkdirSync(path.join(dir, d));
    fs.copyFileSync('/bin/busybox', path.join(dir, 'bin/busybox'));
    for (const a of ['sh', 'mount', 'cat', 'grep', 'dmesg', 'poweroff', 'sleep', 'head', 'echo']) fs.symlinkSync('busybox', path.join(dir, 'bin', a));
    fs.writeFileSync(path.join(dir, 'init'), `#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
SB=$(dmesg | grep -io 'secure boot [a-z]*' | head -1)
echo "${marker} sb='$SB' cmdline='$(cat /proc/cmdline)'"
poweroff -f
`, { mode: 0o755 });
    const list = execFileSync('find', ['.'], { cwd: dir });
    const cpio = execFileSync('cpio', ['-o', '-H', 'newc', '--quiet', '-R', '0:0'], { cwd: dir, input: list, maxBuffer: 1 << 28 });
    return execFileSync('gzip', ['-9n'], { input: cpio, maxBuffer: 1 << 28 });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export interface BootableImageOptions {
  /** extra kargs.d file content (kargs = [...]) */
  kargs?: string[];
  /** extra files in a third layer */
  extraFiles?: Array<{ path: string; content: Buffer; mode?: number }>;
  tag?: string;
  /** include /usr/lib/systemd/boot/efi/{linuxx64.efi.stub,systemd-bootx64.efi} from the host */
  withSystemdBoot?: boolean;
}

export interface BootableImage extends WrittenImage {
  kver: string;
  ref: string;
}

export function writeBootableImage(dir: string, opts: BootableImageOptions = {}): BootableImage {
  const k = guestKernel();
  const kver = k.version;
  const vmlinuz = fs.readFileSync(k.vmlinuz);
  const initramfs = markerInitramfs();
  const t = 1_700_000_000;
  const d = (p: string, mode = 0o755, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path: p, type: 'dir', mode, mtimeSec: t, ...extra });
  const f = (p: string, content: Buffer | string, mode = 0o644, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({
    path: p, type: 'reg', mode, mtimeSec: t, content: Buffer.isBuffer(content) ? content : Buffer.from(content), ...extra,
  });
  const base: TarWriteEntry[] = [
    d('usr'), d('usr/bin'), d('usr/lib'), d('usr/lib/modules'), d(`usr/lib/modules/${kver}`), d('usr/lib/bootc'), d('usr/lib/bootc/kargs.d'),
    d('usr/share'), d('usr/share/doc'),
    f('usr/lib/os-release', 'PRETTY_NAME="bootcfs test OS"\nNAME="bootcfs-test"\nID=bootcfs-test\nVERSION_ID=1\n'),
    f('usr/lib/bootc/kargs.d/10-console.toml', 'kargs = ["console=ttyS0", "panic=-1"]\n'),
    f('usr/bin/hello', '#!/bin/sh\necho hello from the sealed image, a file longer than sixty-four bytes\n', 0o755),
    { path: 'usr/bin/hello-again', type: 'hardlink', linkTarget: 'usr/bin/hello', mtimeSec: t },
    f('usr/share/doc/README', 'x'.repeat(5000), 0o644, { xattrs: { 'user.comment': Buffer.from([0, 1, 2, 255]) } }),
    d('etc'), { path: 'etc/os-release', type: 'symlink', linkTarget: '../usr/lib/os-release', mtimeSec: t },
    f('etc/hostname', 'sealed\n'),
    d('boot', 0o755, { xattrs: { 'user.keep': Buffer.from('boot-dir') } }), f('boot/stale-file-from-the-distro', 'dropped by the bootable transform\n'),
    d('sysroot'), d('run'), d('var'), d('tmp', 0o1777),
  ];
  if (opts.withSystemdBoot) {
    base.push(d('usr/lib/systemd'), d('usr/lib/systemd/boot'), d('usr/lib/systemd/boot/efi'),
      f('usr/lib/systemd/boot/efi/linuxx64.efi.stub', fs.readFileSync('/usr/lib/systemd/boot/efi/linuxx64.efi.stub')),
      f('usr/lib/systemd/boot/efi/systemd-bootx64.efi', fs.readFileSync('/usr/lib/systemd/boot/efi/systemd-bootx64.efi')));
  }
  const kernelLayer: TarWriteEntry[] = [
    d('usr'), d('usr/lib'), d('usr/lib/modules'), d(`usr/lib/modules/${kver}`),
    f(`usr/lib/modules/${kver}/vmlinuz`, vmlinuz), f(`usr/lib/modules/${kver}/initramfs.img`, initramfs),
    ...(opts.kargs ? [d('usr/lib/bootc'), d('usr/lib/bootc/kargs.d'), f('usr/lib/bootc/kargs.d/50-test.toml', `kargs = [${opts.kargs.map((a) => JSON.stringify(a)).join(', ')}]\n`)] : []),
  ];
  const layers = [{ tar: buildTar(base), compression: 'gzip' as const }, { tar: buildTar(kernelLayer), compression: 'gzip' as const }];
  if (opts.extraFiles?.length) {
    const dirs = new Set<string>();
    for (const e of opts.extraFiles) {
      const parts = e.path.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    }
    layers.push({ tar: buildTar([...[...dirs].sort().map((p) => d(p)), ...opts.extraFiles.map((e) => f(e.path, e.content, e.mode ?? 0o644))]), compression: 'gzip' as const });
  }
  const tag = opts.tag ?? 'latest';
  const written = writeOciLayout(dir, { layers, tag });
  return { ...written, kver, ref: `oci:${dir}:${tag}` };
}

export function sha256Hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
