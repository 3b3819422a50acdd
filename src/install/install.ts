/**
 * `bootcfs install to-disk` and `install to-filesystem`.
 *
 * to-disk (a block device or a disk image file), without mounting anything:
 *   1. refuse a disk that has a partition table unless `wipe`; with `wipe`, zero both GPT headers and the
 *      protective MBR first — from here until step 5 the disk has no partition table, so firmware finds
 *      no ESP and nothing boots, and `bootcfs install check` reports it as incomplete;
 *   2. stage the root filesystem's tree in a temporary directory (writeDeployment: repository, deployment
 *      state; fs-verity deferred to the first boot, see deployment.ts);
 *   3. `mke2fs -t ext4 -b 4096 -O verity -d STAGE` straight into the root partition's byte range;
 *   4. the ESP: a FAT32 volume built in memory (src/install/fat.ts) and written to its range;
 *   5. fsync, then the GPT: backup entries + header, fsync, primary entries + header, fsync. The primary
 *      header is the last write; its CRC covers the entries, so a torn write reads as "no table".
 * A killed install therefore leaves a disk that is either complete or has no valid partition table.
 *
 * to-filesystem ROOT --boot-mount ESP: the same deployment written into mounted filesystems. fs-verity is
 * enabled as objects are written when ROOT's filesystem supports it, else deferred to the first boot.
 * The ESP files are written atomically, the BLS entry last: until it exists nothing boots the deployment.
 */
import { randomUUID } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BootcfsError, NotSupportedError } from '../errors.js';
import { enableVerity } from '../fsverity/kernel.js';
import { fsyncDir, writeFileAtomic } from '../util/atomic-file.js';
import { syncfsPaths } from '../sys/libc.js';
import { InstallError, writeDeployment, type DeployOptions, type PreparedDeployment } from './deployment.js';
import { buildFat32Image, fdSource, readFat32, writeFat32Image } from './fat.js';
import { GPT_TYPE_ESP, GPT_TYPE_LINUX_ROOT_X86_64, planGpt, readGpt, writeGpt, type GptLayout } from './gpt.js';

export const ESP_LABEL = 'EFI-SYSTEM';
export const ROOT_LABEL = 'root';
export const DEFAULT_ESP_BYTES = 1024 * 1024 * 1024;
const MIN_ROOT_BYTES = 256 * 1024 * 1024;

export interface InstallToDiskOptions extends Omit<DeployOptions, 'verity' | 'rootUuid'> {
  /** Block device or disk image file. */
  target: string;
  /** Erase an existing partition table. */
  wipe?: boolean;
  /** Create the image file with this size when it does not exist. */
  createSizeBytes?: number;
  espSizeBytes?: number;
  /** Root partition size (default: the rest of the disk). */
  rootSizeBytes?: number;
  /** Where the root filesystem's tree is staged (default: $TMPDIR). */
  stageDir?: string;
}

export interface InstallResult extends PreparedDeployment {
  target: string;
  layout?: GptLayout;
  rootUuid?: string;
  /** milliseconds per phase, total included */
  timings: Record<string, number>;
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => { if (err.length < 4000) err += d.toString(); });
    p.on('error', (e) => reject(new BootcfsError('ENOENT', `${cmd}: ${e.message} (install e2fsprogs)`)));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new BootcfsError('EIO', `${cmd} ${args.join(' ')} failed (exit ${code}): ${err.trim()}`))));
  });
}

async function deviceSize(target: string, st: fs.Stats): Promise<number> {
  if (st.isFile()) return st.size;
  if (st.isBlockDevice()) {
    const r = spawnSync('blockdev', ['--getsize64', target]);
    if (r.status !== 0) throw new BootcfsError('EIO', `blockdev --getsize64 ${target}: ${r.stderr?.toString().trim()}`);
    return Number(r.stdout.toString().trim());
  }
  throw new InstallError(`${target} is neither a block device nor a regular file`);
}

function pwriteAll(fd: number, data: Buffer, offset: number): void {
  let done = 0;
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, offset + done);
}

function preadAll(fd: number, length: number, offset: number): Buffer {
  const b = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, b, done, length - done, offset + done);
    if (n === 0) break;
    done += n;
  }
  return b;
}

/** What is on a disk: a partition table (and whether it is one bootcfs's install completed), or nothing. */
export interface DiskCheck {
  complete: boolean;
  reason: string;
  layout?: GptLayout;
}

/**
 * Reports whether an install on `target` completed: a valid GPT with an ESP and a root partition, and an
 * ESP whose FAT holds systemd-boot and a bootc entry whose files exist. A disk an interrupted install left
 * has no valid GPT and reads as incomplete.
 */
export async function checkInstalledDisk(target: string): Promise<DiskCheck> {
  const st = await fsp.stat(target);
  const size = await deviceSize(target, st);
  const fd = fs.openSync(target, 'r');
  try {
    let layout: GptLayout;
    try {
      layout = readGpt((off, len) => preadAll(fd, len, off), size).layout;
    } catch (e) {
      return { complete: false, reason: `no valid GPT (${(e as Error).message}): not installed, or the install was interrupted` };
    }
    const esp = layout.partitions.find((p) => p.typeGuid === GPT_TYPE_ESP);
    const root = layout.partitions.find((p) => p.typeGuid === GPT_TYPE_LINUX_ROOT_X86_64);
    if (!esp || !root) return { complete: false, reason: 'the GPT has no ESP or no x86-64 root partition', layout };
    const ss = layout.sectorSize;
    const vol = readFat32(fdSource(fd, esp.firstLba * ss, (esp.lastLba - esp.firstLba + 1) * ss));
    const names = new Set(vol.entries.filter((f) => !f.isDirectory).map((f) => f.path));
    if (!names.has('EFI/BOOT/BOOTX64.EFI')) return { complete: false, reason: 'the ESP has no EFI/BOOT/BOOTX64.EFI', layout };
    const entries = [...names].filter((n) => /^loader\/entries\/bootc_.*\.conf$/.test(n));
    if (entries.length === 0) return { complete: false, reason: 'the ESP has no bootc boot entry', layout };
    for (const e of entries) {
      const text = vol.readFile(e).toString('utf8');
      for (const m of text.matchAll(/^(?:efi|uki|linux|initrd)\s+\/(\S+)$/gm)) {
        if (!names.has(m[1]!)) return { complete: false, reason: `${e} names /${m[1]}, which is not on the ESP`, layout };
      }
    }
    return { complete: true, reason: `installed: ${entries.length} boot entr${entries.length === 1 ? 'y' : 'ies'}`, layout };
  } finally {
    fs.closeSync(fd);
  }
}

export async function installToDisk(opts: InstallToDiskOptions): Promise<InstallResult> {
  const t0 = Date.now();
  if (process.getuid?.() !== 0) throw new InstallError('install to-disk needs root (the root filesystem holds files owned by other users)');
  let st: fs.Stats;
  try {
    st = await fsp.stat(opts.target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || opts.createSizeBytes === undefined) throw new InstallError(`${opts.target}: ${(e as Error).message}`);
    const fh = await fsp.open(opts.target, 'wx', 0o644);
    await fh.truncate(opts.createSizeBytes);
    await fh.close();
    st = await fsp.stat(opts.target);
  }
  const size = await deviceSize(opts.target, st);
  const fd = fs.openSync(opts.target, st.isBlockDevice() ? fs.constants.O_RDWR | fs.constants.O_EXCL : fs.constants.O_RDWR);
  let stage: string | undefined;
  const timings: Record<string, number> = {};
  try {
    // 1. an existing table is kept unless --wipe; then both headers go first (the disk reads "not installed")
    const head = preadAll(fd, 34 * 512, 0);
    const hasMbr = head[510] === 0x55 && head[511] === 0xaa;
    if (hasMbr && !opts.wipe) throw new InstallError(`${opts.target} has a partition table: use --wipe to erase it`);
    const espBytes = opts.espSizeBytes ?? DEFAULT_ESP_BYTES;
    const layout = planGpt({
      diskBytes: size,
      partitions: [
        { typeGuid: GPT_TYPE_ESP, name: 'EFI System Partition', sizeBytes: espBytes },
        { typeGuid: GPT_TYPE_LINUX_ROOT_X86_64, name: ROOT_LABEL, sizeBytes: opts.rootSizeBytes ?? 'rest' },
      ],
    });
    const [espPart, rootPart] = layout.partitions as [GptLayout['partitions'][0], GptLayout['partitions'][0]];
    const ss = layout.sectorSize;
    const rootBytes = (rootPart.lastLba - rootPart.firstLba + 1) * ss;
    if (rootBytes < MIN_ROOT_BYTES) throw new InstallError(`${opts.target} is too small: the root partition would have ${rootBytes >> 20} MiB (at least ${MIN_ROOT_BYTES >> 20} MiB)`);

    pwriteAll(fd, Buffer.alloc(34 * 512), 0);
    pwriteAll(fd, Buffer.alloc(33 * 512), size - 33 * 512);
    fs.fsyncSync(fd);

    // 2. the root filesystem's tree
    stage = await fsp.mkdtemp(path.join(opts.stageDir ?? os.tmpdir(), 'bootcfs-install-'));
    await fsp.chmod(stage, 0o755);
    const rootUuid = randomUUID();
    const dep = await writeDeployment(stage, { ...opts, verity: 'deferred', rootUuid });
    Object.assign(timings, dep.timings);

    // 3. ext4 with 4 KiB blocks (fs-verity needs block size = page size) and the verity feature
    opts.onStep?.('mkfs');
    let t = Date.now();
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-O', 'verity', '-L', ROOT_LABEL, '-U', rootUuid,
      '-E', `offset=${rootPart.firstLba * ss},root_owner=0:0`, '-d', stage, opts.target, `${Math.floor(rootBytes / 1024)}k`]);
    timings.mkfs = Date.now() - t;

    // 4. the ESP
    opts.onStep?.('esp');
    t = Date.now();
    const fat = buildFat32Image({
      sizeBytes: (espPart.lastLba - espPart.firstLba + 1) * ss,
      label: ESP_LABEL,
      files: dep.espFiles,
      hiddenSectors: espPart.firstLba,
      timestamp: new Date(),
    });
    writeFat32Image(fat, fd, espPart.firstLba * ss);
    fs.fsyncSync(fd);
    timings.esp = Date.now() - t;

    // 5. the partition table, primary header last
    const gpt = writeGpt(layout);
    pwriteAll(fd, gpt.tail, gpt.tailOffset);
    fs.fsyncSync(fd);
    pwriteAll(fd, gpt.head.subarray(512), 512);
    fs.fsyncSync(fd);
    pwriteAll(fd, gpt.head.subarray(0, 512), 0);
    fs.fsyncSync(fd);
    if (st.isBlockDevice()) spawnSync('blockdev', ['--rereadpt', opts.target]);
    timings.total = Date.now() - t0;
    return { ...dep, target: opts.target, layout, rootUuid, timings };
  } finally {
    fs.closeSync(fd);
    if (stage) await fsp.rm(stage, { recursive: true, force: true });
  }
}

export interface InstallToFilesystemOptions extends Omit<DeployOptions, 'verity' | 'rootUuid'> {
  /** Mounted root filesystem (ext4 with the verity feature for sealed installs). */
  root: string;
  /** Mounted ESP. */
  bootMount: string;
  /** Root filesystem UUID for Type 1 entries (default: findmnt). */
  rootUuid?: string;
}

/** Whether fs-verity can be enabled on files of the filesystem holding `dir`. */
export async function verityWorksIn(dir: string): Promise<boolean> {
  const probe = path.join(dir, `.bootcfs-verity-probe-${process.pid}`);
  await fsp.writeFile(probe, 'probe');
  try {
    enableVerity(probe, 'sha256');
    return true;
  } catch (e) {
    if (e instanceof NotSupportedError) return false;
    throw e;
  } finally {
    await fsp.rm(probe, { force: true });
  }
}

export async function installToFilesystem(opts: InstallToFilesystemOptions): Promise<InstallResult> {
  const t0 = Date.now();
  for (const d of [opts.root, opts.bootMount]) {
    const st = await fsp.stat(d).catch(() => undefined);
    if (!st?.isDirectory()) throw new InstallError(`${d} is not a directory`);
  }
  let rootUuid = opts.rootUuid;
  if (rootUuid === undefined) {
    const r = spawnSync('findmnt', ['-n', '-o', 'UUID', '--target', opts.root]);
    const u = r.status === 0 ? r.stdout.toString().trim() : '';
    if (/^[0-9a-fA-F-]{8,}$/.test(u)) rootUuid = u;
  }
  const verity = (await verityWorksIn(opts.root)) ? 'enable' : 'deferred';
  const dep = await writeDeployment(opts.root, { ...opts, verity, rootUuid });
  let t = Date.now();
  // ESP: everything but the entry, then the entry (the commit point)
  const entry = dep.espFiles.find((f) => f.path === dep.entryPath)!;
  for (const f of [...dep.espFiles.filter((x) => x !== entry), entry]) {
    const target = path.join(opts.bootMount, f.path);
    await fsp.mkdir(path.dirname(target), { recursive: true });
    await writeFileAtomic(target, f.data, { mode: 0o644 });
  }
  await fsyncDir(opts.bootMount);
  await syncfsPaths(opts.root, opts.bootMount);
  const timings = { ...dep.timings, esp: Date.now() - t, total: Date.now() - t0 };
  return { ...dep, target: opts.root, rootUuid, timings };
}
