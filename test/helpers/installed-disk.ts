/**
 * Helpers for tests of disks made by `bootcfs install to-disk`: install, alter files offline (as an
 * attacker with the disk could), read the boot report (os-image/bootcfs-boot-report.sh) off the serial
 * console. Altering goes through a read-only loop device at the root partition's offset (debugfs finds
 * the block) and one byte written into the disk image: needs root.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { BOOTCFS_BIN } from './ref.js';

export interface InstalledDisk {
  disk: string;
  digest: string;
  bootType: 'uki' | 'bls';
  verity: string;
  cmdline: string;
  entry: string;
  /** byte offsets of the partitions */
  espOffset: number;
  rootOffset: number;
  timingsMs: Record<string, number>;
  wallMs: number;
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 28 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().slice(-3000)}`);
  return r.stdout.toString();
}

/** `bootcfs install to-disk --json`; the disk file is created with `sizeGiB`. */
export function installToDisk(disk: string, source: string, extra: string[] = [], sizeGiB = 4): InstalledDisk {
  fs.rmSync(disk, { force: true });
  const t0 = Date.now();
  const out = sh(BOOTCFS_BIN, ['install', 'to-disk', '--create', `${sizeGiB}G`, '--boot-timeout', '0', '--source', source, '--json', ...extra, disk]);
  const wallMs = Date.now() - t0;
  const j = JSON.parse(out) as { digest: string; bootType: 'uki' | 'bls'; verity: string; cmdline: string; entry: string; timingsMs: Record<string, number>; partitions: Array<{ firstLba: number }> };
  return { disk, digest: j.digest, bootType: j.bootType, verity: j.verity, cmdline: j.cmdline, entry: j.entry, espOffset: j.partitions[0]!.firstLba * 512, rootOffset: j.partitions[1]!.firstLba * 512, timingsMs: j.timingsMs, wallMs };
}

/** Physical block (4 KiB) of byte `offset` of file `fsPath` in the ext4 root partition. */
export function blockOf(d: InstalledDisk, fsPath: string, offset: number): number {
  const loop = sh('losetup', ['-f', '--show', '-r', '-o', String(d.rootOffset), d.disk]).trim();
  try {
    // -c: the guest was stopped without unmounting, so the bitmaps on disk may not match their checksums
    // until the journal is replayed; catastrophic mode reads without them (lookups and bmap need none)
    const out = sh('debugfs', ['-c', '-R', `bmap ${fsPath} ${Math.floor(offset / 4096)}`, loop]).trim();
    const block = Number(out.split('\n').pop());
    if (!Number.isInteger(block) || block <= 0) throw new Error(`debugfs bmap ${fsPath}: ${out}`);
    return block;
  } finally {
    sh('losetup', ['-d', loop]);
  }
}

/** XORs one byte of `fsPath` at `offset` with `mask` directly in the disk image; returns a function undoing it. */
export function flipFileByte(d: InstalledDisk, fsPath: string, offset: number, mask = 0x01): () => void {
  const at = d.rootOffset + blockOf(d, fsPath, offset) * 4096 + (offset % 4096);
  const xor = (): void => {
    const fd = fs.openSync(d.disk, 'r+');
    try {
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, at);
      b[0] ^= mask;
      fs.writeSync(fd, b, 0, 1, at);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  };
  xor();
  return xor;
}

/** Replaces an ESP file of the disk with `data` (mtools, in place); returns a function restoring the original. */
export function replaceEspFile(d: InstalledDisk, espPath: string, data: Buffer, work: string): () => void {
  const img = `${d.disk}@@${d.espOffset}`;
  const orig = `${work}/esp-orig-${process.pid}`;
  const repl = `${work}/esp-repl-${process.pid}`;
  sh('mcopy', ['-n', '-o', '-i', img, `::/${espPath}`, orig]);
  fs.writeFileSync(repl, data);
  sh('mcopy', ['-o', '-i', img, repl, `::/${espPath}`]);
  return () => sh('mcopy', ['-o', '-i', img, orig, `::/${espPath}`]) as unknown as void;
}

export function readEspFile(d: InstalledDisk, espPath: string, work: string): Buffer {
  const out = `${work}/esp-read-${process.pid}`;
  sh('mcopy', ['-n', '-o', '-i', `${d.disk}@@${d.espOffset}`, `::/${espPath}`, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

/** `BOOTCFS-REPORT <key> <value>` lines of the serial console (the last value of each key). */
export function bootReport(serial: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of serial.split('\n')) {
    const r = /BOOTCFS-REPORT (\S+) ?(.*)$/.exec(line);
    if (r) m.set(r[1]!, r[2]!.trim());
  }
  return m;
}

/** The content of /usr/share/bootcfs-demo/canary.txt in the demo image (scripts/build-os-image.sh). */
export function canaryContent(): Buffer {
  let s = '';
  for (let i = 1; i <= 200; i++) s += `bootcfs canary line ${i}\n`;
  return Buffer.from(s);
}

/**
 * Writes `data` as `/state/deploy/<digest>/etc/<relPath>` (the deployment's /etc) on the root partition of the
 * installed disk, offline: debugfs -w on a read-write loop device at the partition's offset (replaces an
 * existing file; the parent directory must exist). Owner root:root, permission bits `mode`.
 */
export function writeEtcFile(d: InstalledDisk, digest: string, relPath: string, data: Buffer | string, mode: number, work: string): void {
  const src = `${work}/etc-write-${process.pid}`;
  fs.writeFileSync(src, data);
  const dest = `/state/deploy/${digest}/etc/${relPath.replace(/^\/+/, '')}`;
  const loop = sh('losetup', ['-f', '--show', '-o', String(d.rootOffset), d.disk]).trim();
  try {
    const exists = spawnSync('debugfs', ['-R', `stat ${dest}`, loop]).stdout.toString().includes('Inode:');
    const cmds = [...(exists ? [`rm ${dest}`] : []), `write ${src} ${dest}`, `sif ${dest} mode 0${(0o100000 | mode).toString(8)}`, `sif ${dest} uid 0`, `sif ${dest} gid 0`];
    const r = spawnSync('debugfs', ['-w', '-f', '-', loop], { input: cmds.join('\n') + '\n' });
    const err = r.stderr.toString().split('\n').filter((l) => l.trim() && !/^debugfs [0-9.]+ \(/.test(l));
    if (r.status !== 0 || err.length > 0) throw new Error(`debugfs -w (${cmds.join('; ')}) failed: ${err.join('\n')}`);
    const check = sh('debugfs', ['-R', `cat ${dest}`, loop]);
    if (check !== fs.readFileSync(src, 'utf8')) throw new Error(`debugfs: ${dest} does not read back as written`);
  } finally {
    sh('losetup', ['-d', loop]);
    fs.rmSync(src, { force: true });
  }
}
