/**
 * Firmware test harness: boot disk images under OVMF (UEFI, optionally with Secure Boot enforced) in a TCG
 * QEMU and watch the serial console. Reused by every test that boots through firmware (Secure Boot, install).
 *
 * - `buildEsp`: a FAT32 image filled with mtools (this host kernel has no vfat, so nothing is mounted).
 * - `buildGptDisk`: a GPT disk (sgdisk) with partition images copied in by dd (conv=notrunc).
 * - `enrollVars` / `setupModeVars`: OVMF variable stores with our PK/KEK/db enrolled and Secure Boot on
 *   (virt-fw-vars), or blank (setup mode: no PK, nothing enforced; for systemd-boot's auto-enroll).
 * - `runOvmf`: q35 + SMM + secure pflash (the configuration in which OVMF's authenticated variables are
 *   actually protected), one CPU, serial on a pipe; stops at the first match of `until`, at a firmware /
 *   boot loader refusal, or at the timeout.
 * - `buildMarkerInitramfs`: a busybox initramfs that prints a marker line (with the kernel's Secure Boot
 *   and lockdown state and its command line) and powers off.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, promises as fsp, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const OVMF_CODE_SECBOOT = '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd';
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
export const SYSTEMD_BOOT_EFI = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
export const SYSTEMD_STUB_EFI = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
/** GPT type of an EFI System Partition (sgdisk code ef00). */
export const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
/** GPT type of a Linux root (x86-64) partition (sgdisk code 8304). */
export const LINUX_ROOT_X86_64_TYPE = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';

/** What OVMF and systemd-boot print when they refuse to run an image. */
export const REFUSAL_RE = /Security Violation|Access Denied|Failed to (load|start) image|Error loading|Error preparing/;

function sh(cmd: string, args: string[], opts: { input?: Buffer; cwd?: string } = {}): Buffer {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30, input: opts.input, cwd: opts.cwd });
  if (r.error) throw new Error(`${cmd}: ${r.error.message} (is it installed? run scripts/install-deps.sh)`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.toString().slice(-2000)}`);
  return r.stdout as Buffer;
}

export function requireFirmwareTools(): void {
  for (const f of [OVMF_CODE_SECBOOT, OVMF_VARS, SYSTEMD_BOOT_EFI, SYSTEMD_STUB_EFI, '/bin/busybox']) {
    if (!existsSync(f)) throw new Error(`${f} is missing: run scripts/install-deps.sh`);
  }
  for (const t of ['qemu-system-x86_64', 'mkfs.vfat', 'mmd', 'mcopy', 'sgdisk', 'virt-fw-vars', 'cpio']) {
    const r = spawnSync('sh', ['-c', `command -v ${t}`]);
    if (r.status !== 0) throw new Error(`${t} is missing: run scripts/install-deps.sh`);
  }
}

export interface EspFile {
  /** Path inside the FAT filesystem, '/'-separated (e.g. EFI/BOOT/BOOTX64.EFI). */
  path: string;
  /** Content: bytes, or the path of a host file. */
  data: Buffer | string;
}

/** Build a FAT32 image of `sizeMiB` (≥ 33) at `out` containing `files` (directories are created). */
export function buildEsp(files: EspFile[], sizeMiB: number, out: string): string {
  if (sizeMiB < 33) throw new Error('FAT32 needs at least 33 MiB');
  sh('rm', ['-f', out]);
  sh('truncate', ['-s', `${sizeMiB}M`, out]);
  sh('mkfs.vfat', ['-F', '32', '-n', 'ESP', out]);
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.replace(/^\/+/, '').split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const sorted = [...dirs].sort((a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b));
  if (sorted.length) sh('mmd', ['-i', out, ...sorted.map((d) => `::/${d}`)]);
  const tmp = `${out}.content`;
  for (const f of files) {
    let src: string;
    if (typeof f.data === 'string') src = f.data;
    else {
      writeFileSync(tmp, f.data);
      src = tmp;
    }
    sh('mcopy', ['-o', '-i', out, src, `::/${f.path.replace(/^\/+/, '')}`]);
  }
  sh('rm', ['-f', tmp]);
  return out;
}

/** List a FAT image's files recursively (mdir -/ -b), for checks. */
export function listEsp(image: string): string[] {
  return sh('mdir', ['-i', image, '-/', '-b', '::/']).toString().split('\n').filter(Boolean);
}

export interface GptPartition {
  /** GPT type GUID or sgdisk short code (ef00, 8300, 8304, ...) */
  type: string;
  name: string;
  sizeMiB: number;
  /** Image copied to the start of the partition (must fit). */
  image?: string;
}

/** A GPT disk at `out`: partitions 1..n in order, 1 MiB aligned, filled from their images with dd. */
export function buildGptDisk(out: string, parts: GptPartition[]): { out: string; startsMiB: number[] } {
  sh('rm', ['-f', out]);
  const total = 1 + parts.reduce((s, p) => s + p.sizeMiB, 0) + 1;
  sh('truncate', ['-s', `${total}M`, out]);
  const args = ['-o'];
  const startsMiB: number[] = [];
  let start = 1;
  parts.forEach((p, i) => {
    const n = i + 1;
    args.push('-n', `${n}:${start * 2048}:${(start + p.sizeMiB) * 2048 - 1}`, '-t', `${n}:${p.type}`, '-c', `${n}:${p.name}`);
    startsMiB.push(start);
    start += p.sizeMiB;
  });
  sh('sgdisk', [...args, out]);
  parts.forEach((p, i) => {
    if (!p.image) return;
    const size = statSync(p.image).size;
    if (size > p.sizeMiB * 1024 * 1024) throw new Error(`${p.image} (${size} bytes) does not fit partition ${p.name}`);
    sh('dd', [`if=${p.image}`, `of=${out}`, 'bs=1M', `seek=${startsMiB[i]}`, 'conv=notrunc', 'status=none']);
  });
  return { out, startsMiB };
}

export interface EnrollOptions {
  /** PEM (or DER) certificate files */
  pk: string;
  kek: string | string[];
  db: string | string[];
  ownerGuid: string;
  /** Template variable store (default OVMF_VARS_4M.fd). */
  template?: string;
}

/** A variable store with PK/KEK/db enrolled and Secure Boot enabled (virt-fw-vars). */
export function enrollVars(out: string, o: EnrollOptions): string {
  const args = ['-i', o.template ?? OVMF_VARS, '-o', out, '--set-pk', o.ownerGuid, o.pk];
  for (const k of [o.kek].flat()) args.push('--add-kek', o.ownerGuid, k);
  for (const d of [o.db].flat()) args.push('--add-db', o.ownerGuid, d);
  args.push('--secure-boot');
  sh('virt-fw-vars', args);
  return out;
}

/** A blank variable store: no PK, i.e. setup mode (Secure Boot not enforced; keys may be enrolled). */
export function setupModeVars(out: string): string {
  copyFileSync(OVMF_VARS, out);
  return out;
}

/** virt-fw-vars --print of a variable store (to check what got enrolled). */
export function printVars(vars: string): string {
  return sh('virt-fw-vars', ['-i', vars, '--print', '--verbose']).toString();
}

export interface RunOvmfOptions {
  disk: string;
  /** Variable store; copied first unless `varsInPlace` (then the firmware's writes land in it). */
  vars: string;
  varsInPlace?: boolean;
  /** Use the Secure Boot capable firmware (SMM, secure pflash). Default true. */
  secureBoot?: boolean;
  timeoutMs: number;
  /** Stop as soon as the (ANSI-stripped) serial output matches. */
  until: RegExp;
  /** Stop when this matches (default REFUSAL_RE); pass null to never stop on refusals. */
  refusal?: RegExp | null;
  /** Let the guest reboot (default false: -no-reboot, a reset ends QEMU). */
  allowReboot?: boolean;
  memMiB?: number;
  /** 'none' (default): no network; 'user': one virtio NIC on QEMU's user network (the host's loopback is 10.0.2.2). */
  network?: 'none' | 'user';
  extraArgs?: string[];
  /**
   * Called with the whole (ANSI-stripped) serial output so far whenever more arrives, and a function that
   * kills QEMU now (a power cut): lets a test act while the guest runs (push an image, cut the power at
   * a given moment). Its `powerCut` result field is then true.
   */
  onSerial?: (serial: string, powerCut: () => void) => void;
}

export interface RunOvmfResult {
  /** serial console output, CRs and ANSI escape sequences removed */
  serial: string;
  durationMs: number;
  matched: boolean;
  refused: boolean;
  /** the line that matched `refusal`, if any */
  refusalLine?: string;
  timedOut: boolean;
  /** onSerial cut the power */
  powerCut: boolean;
  /** the variable store QEMU used (a copy unless varsInPlace) */
  varsUsed: string;
}

export function stripAnsi(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;=?]*[a-zA-Z]/g, '').replace(/\x1b[()][0-9A-Za-z]/g, '').replace(/\r/g, '');
}

/** Boot `disk` under OVMF; resolves when `until` or a refusal is seen (QEMU is killed), QEMU exits, or the timeout. */
export async function runOvmf(o: RunOvmfOptions): Promise<RunOvmfResult> {
  const sb = o.secureBoot ?? true;
  let vars = o.vars;
  if (!o.varsInPlace) {
    vars = `${o.vars}.run-${process.pid}-${Date.now()}`;
    await fsp.copyFile(o.vars, vars);
  }
  const code = sb ? OVMF_CODE_SECBOOT : OVMF_CODE;
  const machine = sb ? ['-machine', 'q35,smm=on', '-global', 'driver=cfi.pflash01,property=secure,value=on'] : ['-machine', 'q35'];
  const args = [
    ...machine, '-accel', 'tcg', '-smp', '1', '-m', String(o.memMiB ?? 1024),
    '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
    ...(o.network === 'user' ? ['-nic', 'user,model=virtio-net-pci'] : ['-nic', 'none']),
    ...(o.allowReboot ? [] : ['-no-reboot']),
    '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${code}`,
    '-drive', `if=pflash,format=raw,unit=1,file=${vars}`,
    '-drive', `file=${o.disk},format=raw,if=virtio`,
    ...(o.extraArgs ?? []),
  ];
  const refusal = o.refusal === undefined ? REFUSAL_RE : o.refusal;
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const q = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let raw = '';
    let matched = false;
    let refused = false;
    let timedOut = false;
    let powerCut = false;
    let refusalLine: string | undefined;
    const stop = () => {
      if (q.exitCode === null && q.signalCode === null) q.kill('SIGKILL');
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, o.timeoutMs);
    const onData = (d: Buffer) => {
      raw += d.toString('latin1');
      if (matched || refused || powerCut) return;
      const clean = stripAnsi(raw);
      o.onSerial?.(clean, () => {
        powerCut = true;
        stop();
      });
      if (powerCut) return;
      if (o.until.test(clean)) {
        matched = true;
        stop();
      } else if (refusal && refusal.test(clean)) {
        refused = true;
        // let the firmware finish printing the reason (the line is taken from the final output), then stop
        setTimeout(stop, 1500);
      }
    };
    q.stdout.on('data', onData);
    q.stderr.on('data', onData);
    q.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    q.on('close', () => {
      clearTimeout(timer);
      const serial = stripAnsi(raw);
      if (!matched && o.until.test(serial)) matched = true;
      if (refused && refusal) refusalLine = serial.split('\n').find((l) => refusal.test(l))?.trim();
      resolve({ serial, durationMs: Date.now() - t0, matched, refused, ...(refusalLine ? { refusalLine } : {}), timedOut, powerCut, varsUsed: vars });
    });
  });
}

/**
 * A busybox initramfs whose /init prints one line
 *   `<marker> kernel=<release> sb='<dmesg secure boot line>' lockdown='<mode>' cmdline='<cmdline>'`
 * and powers off. Returns the path of the gzip'd newc cpio.
 */
export async function buildMarkerInitramfs(work: string, marker: string): Promise<string> {
  const root = path.join(work, 'marker-initramfs');
  await fsp.rm(root, { recursive: true, force: true });
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp']) await fsp.mkdir(path.join(root, d), { recursive: true });
  await fsp.copyFile('/bin/busybox', path.join(root, 'bin/busybox'));
  await fsp.chmod(path.join(root, 'bin/busybox'), 0o755);
  for (const a of ['sh', 'mount', 'cat', 'grep', 'dmesg', 'poweroff', 'sleep', 'head', 'uname', 'echo']) {
    await fsp.symlink('busybox', path.join(root, 'bin', a));
  }
  const init = `#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
SB=$(dmesg | grep -io 'secure boot [a-z]*' | head -1)
LD=$(cat /sys/kernel/security/lockdown 2>/dev/null)
echo "${marker} kernel=$(uname -r) sb='$SB' lockdown='$LD' cmdline='$(cat /proc/cmdline)'"
poweroff -f
`;
  await fsp.writeFile(path.join(root, 'init'), init, { mode: 0o755 });
  const list = sh('find', ['.'], { cwd: root });
  const cpio = sh('cpio', ['-o', '-H', 'newc', '--quiet', '-R', '0:0'], { cwd: root, input: list });
  const out = path.join(work, 'marker-initramfs.cpio.gz');
  await fsp.writeFile(out, sh('gzip', ['-9n'], { input: cpio }));
  return out;
}
