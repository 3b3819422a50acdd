/**
 * Offline bootcfs systems for the day-2 tests (upgrade, finalize, rollback, gc): small synthetic bootable
 * images (random bytes as kernel, initramfs and systemd-boot: nothing boots them) written as OCI layouts,
 * and a root installed from one with `bootcfs install to-filesystem` into plain directories (a tmp dir
 * as ESP). Each image = a shared base layer + a variant layer (v1 or v2) + a one-file layer naming the
 * build, so every build has its own composefs digest:
 *
 *   v1: /etc/app.conf "mode=1", kernel K, initramfs I1, VERSION_ID=<n>
 *   v2: /etc/app.conf "mode=2" (a changed /etc default), /etc/new-in-v2.conf, /usr/share/app/v2-only,
 *       kernel K, initramfs I2 (another boot digest: its own kernel directory on the ESP)
 *
 * `current` is a symlink to the layout of the image an `upgrade` should find (the installed origin is
 * `oci:<dir>/current:os`), so retargeting it is "the registry got a new version".
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BOOTCFS_BIN, REPO_ROOT, type RunResult } from './ref.js';
import { Rng } from './rng.js';
import { buildTar, writeOciLayout, type TarWriteEntry } from './oci-layout.js';
import { buildUki } from '../../src/uki/uki.js';

export const KVER = '6.1.0-bootcfs-deploy';
export const ROOT_UUID = '0b5d7c1e-5c0f-4d7e-9b1e-2f6f1c0de001';
export const DEPLOY_CLI = path.join(REPO_ROOT, 'dist/test/helpers/deploy-cli.js');

const rng = new Rng(0xdec0de);
const bytes = (n: number): Buffer => rng.bytes(n);
const vmlinuz = bytes(200_000);
const initrd = { v1: bytes(120_000), v2: bytes(130_000) };
const sdboot = bytes(30_000);
const shared = Array.from({ length: 30 }, (_, i) => bytes(200 + i * 131));

export type Variant = 'v1' | 'v2';

export function bootDigestOf(v: Variant): string {
  return createHash('sha256').update(vmlinuz).update(initrd[v]).digest('hex');
}

const T = 1_700_000_000;
const d = (p: string, mode = 0o755): TarWriteEntry => ({ path: p, type: 'dir', mode, mtimeSec: T });
const f = (p: string, content: Buffer | string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path: p, type: 'reg', mode: 0o644, mtimeSec: T, content: Buffer.from(content), ...extra });

function baseLayer(): Buffer {
  const e: TarWriteEntry[] = [
    d('usr'), d('usr/lib'), d('usr/lib/modules'), d(`usr/lib/modules/${KVER}`), d('usr/lib/systemd'), d('usr/lib/systemd/boot'), d('usr/lib/systemd/boot/efi'),
    d('usr/lib/bootc'), d('usr/lib/bootc/kargs.d'), d('usr/share'), d('usr/share/data'), d('boot'), d('sysroot'), d('etc'), d('etc/sub'), d('var'), d('var/lib'),
    f(`usr/lib/modules/${KVER}/vmlinuz`, vmlinuz),
    f('usr/lib/systemd/boot/efi/systemd-bootx64.efi', sdboot),
    f('usr/lib/bootc/kargs.d/10-console.toml', 'kargs = ["console=ttyS0"]\n'),
    f('etc/hostname', 'deploy-test\n'),
    f('etc/shadow', 'root:*:19000:0:99999:7:::\n', { mode: 0o640, gid: 42 }),
    f('etc/sub/keep.conf', 'k'.repeat(3000)),
    { path: 'etc/os-release', type: 'symlink', linkTarget: '../usr/lib/os-release', mtimeSec: T },
    f('var/lib/marker', 'var\n'),
  ];
  shared.forEach((b, i) => e.push(f(`usr/share/data/f${i}`, b)));
  return buildTar(e);
}

function variantLayer(v: Variant): Buffer {
  const e: TarWriteEntry[] = [
    d('etc'), d('usr'), d('usr/lib'), d('usr/lib/modules'), d(`usr/lib/modules/${KVER}`), d('usr/share'), d('usr/share/app'),
    f(`usr/lib/modules/${KVER}/initramfs.img`, initrd[v]),
    f('etc/app.conf', `mode=${v === 'v1' ? 1 : 2}\n`),
    f('usr/share/app/common', `app ${v}\n`.repeat(40)),
  ];
  if (v === 'v2') e.push(d('usr/lib/bootc'), d('usr/lib/bootc/kargs.d'), f('usr/lib/bootc/kargs.d/20-v2.toml', 'kargs = ["v2.flag=1"]\n'), f('etc/new-in-v2.conf', 'added by v2\n'), f('usr/share/app/v2-only', 'only in v2 '.repeat(20)));
  return buildTar(e);
}

function buildLayer(n: number, v: Variant): Buffer {
  return buildTar([d('usr'), d('usr/lib'), f('usr/lib/os-release', `ID=bootcfs-test\nVERSION_ID=${n}\nPRETTY_NAME="bootcfs test ${v} build ${n}"\n`), d('usr/share'), f('usr/share/build', `build ${n} ${'.'.repeat(80)}\n`)]);
}

let base: Buffer | undefined;
const HOST_STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';

/**
 * Writes build `n` of variant `v` as the OCI layout `<dir>/img-<n>` (tag `os`); returns its directory.
 * `uki`: a sealed image: a fourth layer adds `/boot/EFI/Linux/<kver>.efi`, a UKI (host systemd-stub, the
 * image's kernel and initramfs) whose command line names the image's bootable composefs digest (the
 * bootable transform empties /boot, so adding it does not change the digest).
 */
export function writeImage(dir: string, n: number, v: Variant, opts: { uki?: boolean } = {}): string {
  base ??= baseLayer();
  const out = path.join(dir, `img-${n}`);
  fs.rmSync(out, { recursive: true, force: true });
  const layers = [{ tar: base, compression: 'gzip' as const }, { tar: variantLayer(v), compression: 'gzip' as const }, { tar: buildLayer(n, v), compression: 'gzip' as const }];
  writeOciLayout(out, { tag: 'os', layers });
  if (opts.uki) {
    const digest = sh(BOOTCFS_BIN, ['container', 'compute-composefs-digest', '--image', `oci:${out}:os`]).trim();
    const uki = buildUki({
      stub: fs.readFileSync(HOST_STUB), linux: vmlinuz, initrds: [initrd[v]], uname: KVER, cmdline: `composefs=${digest} console=ttyS0`,
      osRelease: `ID=bootcfs-test\nVERSION_ID=${n}\nPRETTY_NAME="bootcfs test ${v} build ${n}"\n`,
    });
    fs.rmSync(out, { recursive: true, force: true });
    const bootLayer = buildTar([d('boot'), d('boot/EFI'), d('boot/EFI/Linux'), f(`boot/EFI/Linux/${KVER}.efi`, uki)]);
    writeOciLayout(out, { tag: 'os', layers: [...layers, { tar: bootLayer, compression: 'gzip' }] });
  }
  return out;
}

/** Points `<dir>/current` at `<dir>/img-<n>` (atomically). */
export function setCurrent(dir: string, n: number): void {
  const tmp = path.join(dir, `.current-${process.pid}`);
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(`img-${n}`, tmp);
  fs.renameSync(tmp, path.join(dir, 'current'));
}

export interface System {
  dir: string;
  root: string;
  esp: string;
  run: string;
  /** `--root R --boot-dir E --run-dir X` */
  args: string[];
  source: string;
  installed: string;
}

export function sh(cmd: string, args: string[], opts: { input?: string } = {}): string {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 28, input: opts.input });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().slice(-3000)}`);
  return r.stdout.toString();
}

/** A fresh system in `dir`: image 1 (v1) written, `current` → 1, installed with install to-filesystem. */
export function installSystem(dir: string, opts: { uki?: boolean } = {}): System {
  fs.mkdirSync(dir, { recursive: true });
  writeImage(dir, 1, 'v1', opts);
  setCurrent(dir, 1);
  const root = path.join(dir, 'root');
  const esp = path.join(dir, 'esp');
  const run = path.join(dir, 'run');
  for (const p of [root, esp, run]) fs.mkdirSync(p, { recursive: true });
  const source = `oci:${path.join(dir, 'current')}:os`;
  const j = JSON.parse(sh(BOOTCFS_BIN, ['install', 'to-filesystem', '--source', source, '--boot-mount', esp, '--root-uuid', ROOT_UUID, '--json', root])) as { digest: string };
  return { dir, root, esp, run, args: ['--root', root, '--boot-dir', esp, '--run-dir', run], source, installed: j.digest };
}

/** Runs a day-2 verb through the CLI (test/helpers/deploy-cli.ts). */
export function cli(verb: string, args: string[]): RunResult {
  const r = spawnSync(process.execPath, [DEPLOY_CLI, verb, ...args], { maxBuffer: 1 << 28 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** `cli` with `--progress-fd 3` added and file descriptor 3 captured: the progress JSON lines. */
export function cliWithProgress(verb: string, args: string[]): RunResult & { progress: Array<Record<string, unknown>> } {
  const r = spawnSync(process.execPath, [DEPLOY_CLI, verb, '--progress-fd', '3', ...args], { maxBuffer: 1 << 28, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  if (r.error) throw r.error;
  const fd3 = (r.output[3] as Buffer | null)?.toString() ?? '';
  const progress = fd3.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, progress };
}

/** Files and bytes under a directory (regular files; symlinks counted as files of 0 bytes). */
export function usage(dir: string): { files: number; bytes: number } {
  let files = 0;
  let total = 0;
  const walk = (p: string): void => {
    for (const e of fs.readdirSync(p, { withFileTypes: true })) {
      const q = path.join(p, e.name);
      if (e.isDirectory()) walk(q);
      else {
        files++;
        if (e.isFile()) total += fs.statSync(q).size;
      }
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return { files, bytes: total };
}
