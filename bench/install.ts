/**
 * Install to-disk of the demo OS image (issue 5, "Performance"), sealed with a throwaway key:
 *
 *   bootcfs  `bootcfs install to-disk --create 4G --source oci:SEALED:v1 disk.img` (pull into a staged
 *            repository with every object hashed (sha512 fs-verity), bootable image, deployment state,
 *            mke2fs -d into the root partition, FAT32 ESP built in memory, GPT).
 *   peer     the same disk with reference tools, as the sealed-boot prototype built it: `skopeo copy` +
 *            `umoci unpack` + `mkcomposefs --digest-store` (sha256: the only algorithm it has) + `cp -a` of
 *            /etc and /var into the deployment state + `mke2fs -d` + `mkfs.vfat` + `mcopy` of systemd-boot,
 *            the UKI and the entry + `sgdisk` + `dd` of both filesystems into the disk image.
 *
 * The hashing share: fs-verity digests of every object of the installed repository computed again by the
 * same library code in one thread (bytes / time), divided by the install's wall time — an estimate of what
 * part of the install is hashing.
 * Best of RUNS, warm page cache, `sync` before each timed run.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fsverityDigest } from '../src/fsverity/digest.js';
import type { BenchResult } from './result.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(here, '../..');
const BOOTCFS = path.join(REPO_ROOT, 'bin/bootcfs');
const REF = process.env.BOOTCFS_REF ?? '/opt/bootcfs-ref';
const MKCOMPOSEFS = `${REF}/composefs/bin/mkcomposefs`;
const RUNS = 2;

function must(cmd: string, args: string[], opts: { cwd?: string } = {}): Buffer {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30, cwd: opts.cwd });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.toString().slice(-2000)}`);
  return r.stdout;
}

function timedMs(fn: () => void): number {
  spawnSync('sync');
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function walkFiles(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walkFiles(p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}

export async function run(): Promise<BenchResult[]> {
  const layout = must('bash', [path.join(REPO_ROOT, 'scripts/build-os-image.sh')]).toString().trim().split('\n').pop()!;
  const work = mkdtempSync('/var/tmp/bootcfs-bench-install-');
  try {
    // a sealed image of the demo OS (throwaway key)
    must('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '30', '-subj', '/CN=bench db/', '-keyout', `${work}/db.key`, '-out', `${work}/db.crt`]);
    must(BOOTCFS, ['container', 'build-sealed', `oci:${layout}:v1`, '--output', `oci:${work}/sealed:v1`, '--key', `${work}/db.key`, '--cert', `${work}/db.crt`]);
    const src = `oci:${work}/sealed:v1`;

    const ours = (): { ms: number; json: { timingsMs: Record<string, number>; digest: string } } => {
      rmSync(`${work}/ours.img`, { force: true });
      rmSync(`${work}/stage`, { recursive: true, force: true });
      mkdirSync(`${work}/stage`);
      let out: Buffer = Buffer.alloc(0);
      const ms = timedMs(() => { out = must(BOOTCFS, ['install', 'to-disk', '--create', '4G', '--stage-dir', `${work}/stage`, '--source', src, '--json', `${work}/ours.img`]); });
      return { ms, json: JSON.parse(out.toString()) };
    };
    const peer = (): number => {
      const p = `${work}/peer`;
      rmSync(p, { recursive: true, force: true });
      mkdirSync(p);
      return timedMs(() => {
        must('skopeo', ['copy', '--quiet', src, `oci:${p}/oci:v1`]);
        must('umoci', ['unpack', '--image', `${p}/oci:v1`, `${p}/bundle`]);
        const rootfs = `${p}/bundle/rootfs`;
        const stage = `${p}/stage`;
        mkdirSync(`${stage}/composefs/images`, { recursive: true });
        must('sh', ['-c', `rm -rf "${rootfs}/boot.sealed" && mv "${rootfs}/boot" "${rootfs}/boot.sealed" && mkdir "${rootfs}/boot" && touch -r "${rootfs}/boot.sealed" "${rootfs}/boot"`]);
        const digest = must(MKCOMPOSEFS, ['--digest-store', `${stage}/composefs/objects`, '--print-digest', rootfs, `${stage}/composefs/image.tmp`]).toString().trim();
        must('mv', [`${stage}/composefs/image.tmp`, `${stage}/composefs/images/${digest}`]);
        mkdirSync(`${stage}/state/deploy/${digest}`, { recursive: true });
        mkdirSync(`${stage}/state/os/default`, { recursive: true });
        must('cp', ['-a', `${rootfs}/etc`, `${stage}/state/deploy/${digest}/etc`]);
        must('cp', ['-a', `${rootfs}/var`, `${stage}/state/os/default/var`]);
        must('ln', ['-s', '../../os/default/var', `${stage}/state/deploy/${digest}/var`]);
        must('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-O', 'verity', '-L', 'root', '-d', stage, `${p}/root.img`, `${3 * 1024 - 1026}M`]);
        must('truncate', ['-s', '1G', `${p}/esp.img`]);
        must('mkfs.vfat', ['-F', '32', '-n', 'EFI-SYSTEM', `${p}/esp.img`]);
        const uki = readdirSync(`${rootfs}/boot.sealed/EFI/Linux`)[0]!;
        must('mmd', ['-i', `${p}/esp.img`, '::/EFI', '::/EFI/BOOT', '::/EFI/Linux', '::/EFI/Linux/bootc', '::/loader', '::/loader/entries']);
        writeFileSync(`${p}/entry.conf`, `title demo\nversion 1\nefi /EFI/Linux/bootc/bootc_composefs-${digest}.efi\nsort-key bootc-demo-0\n`);
        writeFileSync(`${p}/loader.conf`, 'timeout 5\n');
        must('mcopy', ['-i', `${p}/esp.img`, `${rootfs}/boot.sealed/EFI/systemd/systemd-bootx64.efi`, '::/EFI/BOOT/BOOTX64.EFI']);
        must('mcopy', ['-i', `${p}/esp.img`, `${rootfs}/boot.sealed/EFI/Linux/${uki}`, `::/EFI/Linux/bootc/bootc_composefs-${digest}.efi`]);
        must('mcopy', ['-i', `${p}/esp.img`, `${p}/entry.conf`, '::/loader/entries/bootc_demo-1-1.conf']);
        must('mcopy', ['-i', `${p}/esp.img`, `${p}/loader.conf`, '::/loader/loader.conf']);
        must('truncate', ['-s', '4G', `${p}/disk.img`]);
        must('sgdisk', ['-n', '1:2048:+1G', '-t', '1:EF00', '-n', '2:0:0', '-t', '2:8304', `${p}/disk.img`]);
        must('dd', [`if=${p}/esp.img`, `of=${p}/disk.img`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse', 'status=none']);
        must('dd', [`if=${p}/root.img`, `of=${p}/disk.img`, 'bs=1M', 'seek=1025', 'conv=notrunc,sparse', 'status=none']);
        must('sync', []);
      });
    };

    ours();
    peer();
    const oursRuns: Array<{ ms: number; json: { timingsMs: Record<string, number>; digest: string } }> = [];
    const peerRuns: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      oursRuns.push(ours());
      peerRuns.push(peer());
    }
    const best = oursRuns.reduce((a, b) => (b.ms < a.ms ? b : a));
    const peerBest = Math.min(...peerRuns);

    // hashing share: re-measure every object of a staged repository (same library code, one thread)
    const stage = `${work}/hash-stage`;
    mkdirSync(stage);
    must(BOOTCFS, ['cfs', '--repo', `${stage}/repo`, '--insecure', 'init']);
    must(BOOTCFS, ['cfs', '--repo', `${stage}/repo`, '--insecure', 'oci', 'pull', '--bootable', src, 'x']);
    const files = walkFiles(`${stage}/repo/objects`);
    let bytes = 0;
    const t0 = process.hrtime.bigint();
    for (const f of files) {
      const b = readFileSync(f);
      bytes += b.length;
      fsverityDigest(b, 'sha512');
    }
    const hashMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const share = hashMs / best.ms;
    const diskBytes = statSync(`${work}/ours.img`).size;
    const phases = Object.entries(best.json.timingsMs).filter(([k]) => k !== 'total').map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`).join(' + ');
    return [{
      name: 'install to-disk (demo OS, sealed) wall time, vs skopeo+umoci+mkcomposefs+cp+mke2fs+mkfs.vfat/mcopy+sgdisk+dd',
      ours: best.ms / 1000,
      reference: peerBest / 1000,
      unit: 's',
      higherIsBetter: false,
      ratio: best.ms / peerBest,
      note: `${files.length} objects, ${(bytes / 1e6).toFixed(0)} MB; ${(diskBytes / 2 ** 30).toFixed(0)} GiB disk image; best of ${RUNS}; all runs ours ${oursRuns.map((r) => (r.ms / 1000).toFixed(1)).join('/')} s (best: ${phases} s), peer ${peerRuns.map((m) => (m / 1000).toFixed(1)).join('/')} s; hashing (sha512 fs-verity of every object, one thread, same code) ${(hashMs / 1000).toFixed(1)} s = ${(share * 100).toFixed(0)}% of our wall time; the peer hashes sha256 and writes no repository streams`,
    }];
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
