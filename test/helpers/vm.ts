/**
 * QEMU guest harness for the vm tier. This host's kernel has no fs-verity, so everything that needs the
 * kernel's fs-verity (FS_IOC_ENABLE/MEASURE_VERITY, overlayfs `verity=require`) runs in a TCG guest booted
 * directly (-kernel/-initrd) with Debian trixie's kernel (6.12, FS_VERITY=y), which scripts/install-deps.sh
 * unpacks into $BOOTCFS_CACHE/kernel.
 *
 * Layout:
 * - initramfs: busybox + the few kernel modules needed (ext4, erofs, overlay, loop, virtio), /init mounts
 *   the disk and chroots into it.
 * - disk (/dev/vda): ext4 with 4 KiB blocks and the verity feature (smaller filesystems default to 1 KiB
 *   blocks, with which 4 KiB-Merkle-block verity fails), filled without mounting via `mke2fs -d STAGE`.
 *   STAGE holds a minimal runtime: node and its shared libraries at their host paths, busybox, fsverity-utils,
 *   this checkout's dist/ + runtime node_modules at /bootcfs, and whatever the caller adds.
 * - the guest runs one shell command in the chroot; its output comes back over the serial console, and a
 *   final `BOOTCFS-GUEST-EXIT <rc>` line carries the exit status.
 *
 * Later work (install/boot tests) reuses `stageRuntime`, `buildInitramfs` and `runQemu`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { promises as fsp, existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { KERNEL_CACHE, REPO_ROOT } from './ref.js';

export interface GuestKernel {
  version: string;
  vmlinuz: string;
  modroot: string;
}

export function guestKernel(): GuestKernel {
  const kdir = path.join(KERNEL_CACHE, 'kernel');
  const done = path.join(kdir, '.done');
  if (!existsSync(done)) {
    throw new Error(`guest kernel missing in ${kdir}: run scripts/install-deps.sh (as root)`);
  }
  const version = readFileSync(done, 'utf8').trim();
  return { version, vmlinuz: path.join(kdir, 'root/boot', `vmlinuz-${version}`), modroot: path.join(kdir, 'root') };
}

function sh(cmd: string, args: string[], opts: { cwd?: string; input?: Buffer } = {}): Buffer {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, input: opts.input, maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.toString().slice(-2000)}`);
  }
  return r.stdout as Buffer;
}

/** Shared libraries a binary needs (absolute paths, from ldd). */
function libsOf(bin: string): string[] {
  const out = sh('ldd', [bin]).toString();
  const libs = new Set<string>();
  for (const m of out.matchAll(/(\/[^\s]+\.so[^\s]*)/g)) libs.add(m[1]!);
  return [...libs];
}

async function copyWithParents(src: string, stage: string, dest = src): Promise<void> {
  const d = path.join(stage, dest);
  await fsp.mkdir(path.dirname(d), { recursive: true });
  await fsp.copyFile(src, d);
  const st = await fsp.stat(src);
  await fsp.chmod(d, st.mode & 0o7777);
}

const BUSYBOX_APPLETS_NEEDED = true;

/** Install busybox with all its applets into STAGE/bin (never overwriting busybox itself). */
async function installBusybox(stage: string): Promise<void> {
  const bb = '/bin/busybox';
  if (!existsSync(bb)) throw new Error('busybox-static is not installed: run scripts/install-deps.sh');
  await fsp.mkdir(path.join(stage, 'bin'), { recursive: true });
  await fsp.copyFile(bb, path.join(stage, 'bin/busybox'));
  await fsp.chmod(path.join(stage, 'bin/busybox'), 0o755);
  if (!BUSYBOX_APPLETS_NEEDED) return;
  const applets = sh(bb, ['--list']).toString().split('\n').filter((a) => a && a !== 'busybox');
  for (const a of applets) {
    const p = path.join(stage, 'bin', a);
    if (!existsSync(p)) await fsp.symlink('busybox', p);
  }
}

/**
 * A minimal runtime in STAGE for running bootcfs's compiled code: node + libs, busybox, fsverity-utils,
 * and /bootcfs = this checkout's package.json, dist/ and runtime node_modules (no dev dependencies).
 */
export async function stageRuntime(stage: string): Promise<void> {
  await installBusybox(stage);
  for (const d of ['proc', 'sys', 'dev', 'tmp', 'run', 'var/tmp', 'etc', 'usr/sbin', 'sbin']) {
    await fsp.mkdir(path.join(stage, d), { recursive: true });
  }
  await fsp.chmod(path.join(stage, 'tmp'), 0o1777);
  const node = process.execPath;
  for (const bin of [node, '/usr/bin/fsverity']) {
    await copyWithParents(bin, stage);
    for (const lib of libsOf(bin)) await copyWithParents(lib, stage);
  }
  // koffi's native module links against libstdc++ etc.; node already brought those, but be exact:
  const koffiNode = path.join(REPO_ROOT, 'node_modules/@koromix/koffi-linux-x64/linux_x64/koffi.node');
  if (existsSync(koffiNode)) for (const lib of libsOf(koffiNode)) await copyWithParents(lib, stage);
  await fsp.writeFile(path.join(stage, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  await fsp.writeFile(path.join(stage, 'etc/group'), 'root:x:0:\n');
  const app = path.join(stage, 'bootcfs');
  await fsp.mkdir(app, { recursive: true });
  await fsp.copyFile(path.join(REPO_ROOT, 'package.json'), path.join(app, 'package.json'));
  sh('cp', ['-a', path.join(REPO_ROOT, 'dist'), app]);
  // the runtime dependencies (npm's view, so transitive and optional ones are included), no dev dependencies
  await fsp.mkdir(path.join(app, 'node_modules'), { recursive: true });
  const prod = sh('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: REPO_ROOT }).toString().split('\n');
  for (const line of prod) {
    const rel = path.relative(REPO_ROOT, line.trim());
    if (!/^node_modules\/(@[^/]+\/)?[^/@][^/]*$/.test(rel)) continue; // top-level packages; nested ones come along
    const dest = path.join(app, rel);
    await fsp.mkdir(path.dirname(dest), { recursive: true });
    if (!existsSync(dest)) sh('cp', ['-a', path.join(REPO_ROOT, rel), dest]);
  }
  await fsp.mkdir(path.join(app, 'bin'), { recursive: true });
  await fsp.copyFile(path.join(REPO_ROOT, 'bin/bootcfs'), path.join(app, 'bin/bootcfs'));
  await fsp.chmod(path.join(app, 'bin/bootcfs'), 0o755);
  // test fixtures are small and some guest tests use them
  sh('cp', ['-a', path.join(REPO_ROOT, 'test'), path.join(app, 'test')]);
}

/** Build an ext4 image (4 KiB blocks, verity feature) from STAGE without mounting anything. */
export function makeExt4Disk(stage: string, image: string, sizeMiB: number): void {
  sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-O', 'verity', '-d', stage, image, `${sizeMiB}M`]);
}

const GUEST_MODULES = ['crc32c_generic', 'loop', 'ext4', 'erofs', 'overlay', 'virtio_pci', 'virtio_blk'];

/** Resolve modules (with dependencies, in load order) from modules.dep. */
function resolveModules(k: GuestKernel, names: string[]): string[] {
  const mdir = path.join(k.modroot, 'lib/modules', k.version);
  const dep = readFileSync(path.join(mdir, 'modules.dep'), 'utf8').split('\n');
  const builtin = readFileSync(path.join(mdir, 'modules.builtin'), 'utf8');
  const byName = new Map<string, { file: string; deps: string[] }>();
  for (const line of dep) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const file = line.slice(0, i);
    const base = path.basename(file).replace(/\.ko(\.xz|\.zst)?$/, '');
    byName.set(base.replace(/-/g, '_'), { file, deps: line.slice(i + 1).trim().split(/\s+/).filter(Boolean) });
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const add = (name: string) => {
    const key = name.replace(/-/g, '_');
    const ent = byName.get(key);
    if (!ent) {
      if (new RegExp(`/${name}\\.ko`).test(builtin)) return;
      throw new Error(`kernel module ${name} not found for ${k.version}`);
    }
    for (const d of ent.deps) add(path.basename(d).replace(/\.ko(\.xz|\.zst)?$/, ''));
    if (!seen.has(ent.file)) {
      seen.add(ent.file);
      order.push(path.join(mdir, ent.file));
    }
  };
  for (const n of names) add(n);
  return order;
}

const INIT_SCRIPT = `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null || echo "insmod $m failed"; done
echo 1 > /proc/sys/kernel/printk
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /mnt
if ! mount -t ext4 /dev/vda /mnt; then echo "BOOTCFS-GUEST-EXIT 99"; poweroff -f; fi
mount -t proc proc /mnt/proc; mount -t sysfs sys /mnt/sys; mount -o bind /dev /mnt/dev; mount -t tmpfs tmp /mnt/tmp
echo "BOOTCFS-GUEST-START $(uname -r)"
chroot /mnt /bin/sh /guest-run.sh
rc=$?
echo "BOOTCFS-GUEST-EXIT $rc"
sync; umount /mnt/tmp /mnt/dev /mnt/sys /mnt/proc 2>/dev/null; umount /mnt 2>/dev/null
poweroff -f
`;

/** Busybox initramfs that loads the guest modules, mounts /dev/vda and runs /guest-run.sh in it. */
export async function buildInitramfs(k: GuestKernel, work: string): Promise<string> {
  const root = path.join(work, 'initramfs');
  await fsp.rm(root, { recursive: true, force: true });
  await installBusybox(root);
  for (const d of ['proc', 'sys', 'dev', 'mnt', 'tmp', 'lib/modules']) await fsp.mkdir(path.join(root, d), { recursive: true });
  const order: string[] = [];
  for (const f of resolveModules(k, GUEST_MODULES)) {
    const base = path.basename(f).replace(/\.(xz|zst)$/, '');
    const dest = path.join(root, 'lib/modules', base);
    if (f.endsWith('.xz')) await fsp.writeFile(dest, sh('xz', ['-dc', f]));
    else if (f.endsWith('.zst')) await fsp.writeFile(dest, sh('zstd', ['-qdc', f]));
    else await fsp.copyFile(f, dest);
    order.push(base);
  }
  await fsp.writeFile(path.join(root, 'modules.order'), order.join('\n') + '\n');
  await fsp.writeFile(path.join(root, 'init'), INIT_SCRIPT, { mode: 0o755 });
  const list = sh('find', ['.'], { cwd: root });
  const cpio = sh('cpio', ['-o', '-H', 'newc', '--quiet'], { cwd: root, input: list });
  const out = path.join(work, 'initramfs.cpio.gz');
  await fsp.writeFile(out, sh('gzip', ['-1'], { input: cpio }));
  return out;
}

export interface QemuResult {
  /** exit status of the guest command, or undefined if the guest never reported one */
  guestExit: number | undefined;
  /** serial console output between the start and exit markers */
  output: string;
  fullLog: string;
  wallMs: number;
}

/** Boot the guest kernel with the initramfs and disk; resolves when QEMU exits (guest powers off). */
export function runQemu(opts: {
  kernel: GuestKernel;
  initrd: string;
  disk: string;
  memMiB?: number;
  timeoutMs?: number;
  onLine?: (line: string) => void;
}): Promise<QemuResult> {
  const t0 = Date.now();
  const args = [
    '-machine', 'q35', '-accel', 'tcg', '-m', String(opts.memMiB ?? 2048), '-smp', '1',
    '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', opts.kernel.vmlinuz, '-initrd', opts.initrd,
    '-append', 'console=ttyS0 quiet panic=-1',
    '-drive', `file=${opts.disk},if=virtio,format=raw`,
  ];
  return new Promise((resolve, reject) => {
    const q = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    let pending = '';
    const timer = setTimeout(() => q.kill('SIGKILL'), opts.timeoutMs ?? 900_000);
    const onData = (d: Buffer) => {
      const s = d.toString('utf8').replace(/\r/g, '');
      log += s;
      pending += s;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        opts.onLine?.(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    };
    q.stdout.on('data', onData);
    q.stderr.on('data', onData);
    q.on('error', reject);
    q.on('close', () => {
      clearTimeout(timer);
      const m = /BOOTCFS-GUEST-EXIT (\d+)/.exec(log);
      const start = log.indexOf('BOOTCFS-GUEST-START');
      const end = log.indexOf('BOOTCFS-GUEST-EXIT');
      resolve({
        guestExit: m ? Number(m[1]) : undefined,
        output: start >= 0 ? log.slice(start, end >= 0 ? end : undefined) : '',
        fullLog: log,
        wallMs: Date.now() - t0,
      });
    });
  });
}

/** Parse node:test TAP output ("ok N - name" / "not ok N - name") of top-level tests. */
export function parseTap(out: string): Array<{ ok: boolean; name: string }> {
  const res: Array<{ ok: boolean; name: string }> = [];
  for (const line of out.split('\n')) {
    const m = /^(not ok|ok) \d+ - (.*?)(\s+#.*)?$/.exec(line);
    if (m) res.push({ ok: m[1] === 'ok', name: m[2]! });
  }
  return res;
}

export function listGuestTests(): string[] {
  const dir = path.join(REPO_ROOT, 'dist/test/guest');
  return readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort();
}
