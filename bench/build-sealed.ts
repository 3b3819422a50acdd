/**
 * Sealed-image build (issue 4, "Performance"): the ~300 MB OS image of the import benchmark
 * (bench/oci-import.ts ensureBenchImage) plus one layer that makes it bootable (the Debian trixie guest
 * kernel at /usr/lib/modules/<kver>/vmlinuz, an initramfs.img, kargs.d, /sysroot), sealed end to end:
 *
 *   bootcfs  `bootcfs container build-sealed oci:IN:bench --output oci:OUT:sealed --key db.key --cert db.crt`
 *            (pull into a throwaway repository, digest, UKI, sign UKI + systemd-boot, write DEST with the
 *            source blobs + one layer, then pull DEST back and recompute its digest as a check).
 *   peer     the upstream recipe with reference tools: `skopeo copy oci:IN:bench oci:W:bench` +
 *            `umoci unpack` + bootable transform (`rm -rf rootfs/boot/*`) + `mkcomposefs --print-digest-only`
 *            + `ukify build --signtool sbsign …` + `sbsign` systemd-boot + `umoci insert` of /boot/EFI into
 *            a new layer of W:bench (the sealed image). sha256 digests (mkcomposefs knows no other) —
 *            bootcfs computes sha512 as bootc does, which costs it more, not less.
 *
 * Warm page cache (an untimed run of each first), `sync` before each timed run, best of RUNS.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { ensureBenchImage, timed, type Measured } from './oci-import.js';
import type { BenchResult } from './result.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(here, '../..');
const BOOTCFS = path.join(REPO_ROOT, 'bin/bootcfs');
const REF = process.env.BOOTCFS_REF ?? '/opt/bootcfs-ref';
const MKCOMPOSEFS = `${REF}/composefs/bin/mkcomposefs`;
const UKIFY = `${REF}/bin/ukify`;
const CACHE = process.env.BOOTCFS_CACHE ?? '/var/cache/bootcfs';
const SEALED_INPUT = path.join(CACHE, 'bench-sealed-input');
const RUNS = 2;
const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const SDBOOT = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';

function must(cmd: string, args: string[], input?: Buffer): Buffer {
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.toString()}`);
  return r.stdout;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The bench image + a bootable layer, as a layout tagged `bench` (blobs hardlinked from the import input). */
async function ensureSealedInput(): Promise<{ layout: string; kver: string; kernelBytes: number; initramfsBytes: number }> {
  const img = await ensureBenchImage();
  const kdir = path.join(CACHE, 'kernel');
  const kver = readFileSync(path.join(kdir, '.done'), 'utf8').trim();
  const vmlinuz = path.join(kdir, 'root/boot', `vmlinuz-${kver}`);
  const marker = path.join(SEALED_INPUT, '.complete');
  if (existsSync(marker) && readFileSync(marker, 'utf8') === `${img.layout} ${kver}\n`) {
    const m = JSON.parse(readFileSync(path.join(SEALED_INPUT, 'sizes.json'), 'utf8'));
    return { layout: SEALED_INPUT, kver, ...m };
  }
  rmSync(SEALED_INPUT, { recursive: true, force: true });
  mkdirSync(path.join(SEALED_INPUT, 'blobs/sha256'), { recursive: true });
  for (const b of readdirSync(path.join(img.layout, 'blobs/sha256'))) {
    linkSync(path.join(img.layout, 'blobs/sha256', b), path.join(SEALED_INPUT, 'blobs/sha256', b));
  }
  copyFileSync(path.join(img.layout, 'oci-layout'), path.join(SEALED_INPUT, 'oci-layout'));
  // the boot layer, with GNU tar from a staging directory
  const stage = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-bench-boot-'));
  const mods = path.join(stage, 'usr/lib/modules', kver);
  mkdirSync(mods, { recursive: true });
  mkdirSync(path.join(stage, 'usr/lib/bootc/kargs.d'), { recursive: true });
  mkdirSync(path.join(stage, 'sysroot'));
  mkdirSync(path.join(stage, 'boot'));
  copyFileSync(vmlinuz, path.join(mods, 'vmlinuz'));
  // an initramfs of realistic size: the kernel's modules directory as a zstd cpio (~ like MODULES=most)
  const modlist = must('sh', ['-c', `cd ${path.join(kdir, 'root')} && find usr/lib/modules/${kver}/kernel/fs usr/lib/modules/${kver}/kernel/drivers/block usr/lib/modules/${kver}/kernel/drivers/virtio | sort`]);
  const cpio = must('sh', ['-c', `cd ${path.join(kdir, 'root')} && cpio -o -H newc --quiet -R 0:0`], modlist);
  writeFileSync(path.join(mods, 'initramfs.img'), must('zstd', ['-q', '-19', '-c'], cpio));
  writeFileSync(path.join(stage, 'usr/lib/bootc/kargs.d/10-console.toml'), 'kargs = ["console=ttyS0", "panic=-1"]\n');
  const tar = must('tar', ['-C', stage, '--format=pax', '--numeric-owner', '--owner=0', '--group=0', '--sort=name', '--mtime=@1700000000', '--pax-option=delete=atime,delete=ctime', '-cf', '-', 'boot', 'sysroot', 'usr']);
  const kernelBytes = statSync(path.join(mods, 'vmlinuz')).size;
  const initramfsBytes = statSync(path.join(mods, 'initramfs.img')).size;
  rmSync(stage, { recursive: true, force: true });
  const gz = gzipSync(tar);
  writeFileSync(path.join(SEALED_INPUT, 'blobs/sha256', sha256(gz)), gz);
  // manifest + config from the import input's
  const index = JSON.parse(readFileSync(path.join(img.layout, 'index.json'), 'utf8'));
  const entry = index.manifests.find((m: { annotations?: Record<string, string> }) => m.annotations?.['org.opencontainers.image.ref.name'] === 'bench');
  const blob = (d: string): string => path.join(img.layout, 'blobs/sha256', d.slice(7));
  const manifest = JSON.parse(readFileSync(blob(entry.digest), 'utf8'));
  const config = JSON.parse(readFileSync(blob(manifest.config.digest), 'utf8'));
  config.rootfs.diff_ids.push(`sha256:${sha256(tar)}`);
  if (Array.isArray(config.history)) config.history.push({ created_by: 'bench: kernel, initramfs, kargs, /sysroot' });
  const cfg = Buffer.from(JSON.stringify(config));
  writeFileSync(path.join(SEALED_INPUT, 'blobs/sha256', sha256(cfg)), cfg);
  manifest.config = { ...manifest.config, digest: `sha256:${sha256(cfg)}`, size: cfg.length };
  manifest.layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${sha256(gz)}`, size: gz.length });
  const man = Buffer.from(JSON.stringify(manifest));
  writeFileSync(path.join(SEALED_INPUT, 'blobs/sha256', sha256(man)), man);
  writeFileSync(path.join(SEALED_INPUT, 'index.json'), JSON.stringify({
    schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha256(man)}`, size: man.length, annotations: { 'org.opencontainers.image.ref.name': 'bench' } }],
  }));
  writeFileSync(path.join(SEALED_INPUT, 'sizes.json'), JSON.stringify({ kernelBytes, initramfsBytes }));
  writeFileSync(marker, `${img.layout} ${kver}\n`);
  return { layout: SEALED_INPUT, kver, kernelBytes, initramfsBytes };
}

export async function run(): Promise<BenchResult[]> {
  for (const t of ['/usr/bin/time', MKCOMPOSEFS, UKIFY, '/usr/bin/skopeo', '/usr/bin/umoci', '/usr/bin/sbsign', STUB, SDBOOT]) {
    if (!existsSync(t)) throw new Error(`${t} is missing: run scripts/install-deps.sh`);
  }
  const input = await ensureSealedInput();
  const scratch = mkdtempSync(path.join(process.env.BOOTCFS_BENCH_DIR ?? os.tmpdir(), 'bootcfs-bench-sealed-'));
  try {
    const key = path.join(scratch, 'db.key');
    const cert = path.join(scratch, 'db.crt');
    must('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650', '-subj', '/CN=bench db/', '-keyout', key, '-out', cert]);
    const ours = (i: number): Measured => {
      const out = path.join(scratch, `ours-${i}`);
      rmSync(out, { recursive: true, force: true });
      return timed(BOOTCFS, ['container', 'build-sealed', `oci:${input.layout}:bench`, '--output', `oci:${out}:sealed`, '--key', key, '--cert', cert, '--json']);
    };
    const peer = (i: number): { seconds: number; maxRssKiB: number; steps: number[]; digest: string } => {
      const w = path.join(scratch, `peer-${i}`);
      rmSync(w, { recursive: true, force: true });
      mkdirSync(w);
      const steps: Measured[] = [];
      steps.push(timed('/usr/bin/skopeo', ['copy', '-q', `oci:${input.layout}:bench`, `oci:${w}/img:bench`]));
      steps.push(timed('/usr/bin/umoci', ['unpack', '--image', `${w}/img:bench`, `${w}/bundle`]));
      const rootfs = `${w}/bundle/rootfs`;
      steps.push(timed('sh', ['-c', `rm -rf ${rootfs}/boot/* ${rootfs}/sysroot/* && mkdir -p ${rootfs}/sysroot`]));
      const d = timed(MKCOMPOSEFS, ['--print-digest-only', rootfs]);
      steps.push(d);
      const digest = (d.stdout ?? '').trim();
      const k = `${rootfs}/usr/lib/modules/${input.kver}`;
      mkdirSync(`${w}/boot/EFI/Linux`, { recursive: true });
      mkdirSync(`${w}/boot/EFI/systemd`, { recursive: true });
      steps.push(timed(UKIFY, ['build', '--linux', `${k}/vmlinuz`, '--initrd', `${k}/initramfs.img`, '--uname', input.kver, '--cmdline', `console=ttyS0 panic=-1 composefs=${digest}`,
        '--os-release', `@${rootfs}/usr/lib/os-release`, '--stub', STUB, '--signtool', 'sbsign', '--secureboot-private-key', key, '--secureboot-certificate', cert,
        '--output', `${w}/boot/EFI/Linux/${input.kver}.efi`]));
      steps.push(timed('/usr/bin/sbsign', ['--key', key, '--cert', cert, '--output', `${w}/boot/EFI/systemd/systemd-bootx64.efi`, SDBOOT]));
      steps.push(timed('/usr/bin/umoci', ['insert', '--image', `${w}/img:bench`, `${w}/boot/EFI`, '/boot/EFI']));
      return { seconds: steps.reduce((a, s) => a + s.seconds, 0), maxRssKiB: Math.max(...steps.map((s) => s.maxRssKiB)), steps: steps.map((s) => s.seconds), digest };
    };
    // warm-up (untimed)
    ours(0);
    peer(0);
    const o: Measured[] = [];
    const p: Array<ReturnType<typeof peer>> = [];
    for (let i = 1; i <= RUNS; i++) {
      must('sync', []);
      o.push(ours(i));
      must('sync', []);
      p.push(peer(i));
    }
    const bo = o.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    const bp = p.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    const res = JSON.parse(bo.stdout ?? '{}') as { digest: string; ukiSize: number };
    return [{
      name: 'build-sealed (oci: layout → signed sealed oci: image) wall time, vs skopeo+umoci+mkcomposefs+ukify/sbsign+umoci insert',
      ours: bo.seconds,
      reference: bp.seconds,
      unit: 's',
      higherIsBetter: false,
      ratio: bo.seconds / bp.seconds,
      note: `target ≤ 1.0×; input: the import image + kernel ${(input.kernelBytes / 1e6).toFixed(1)} MB + initramfs ${(input.initramfsBytes / 1e6).toFixed(1)} MB; best of ${RUNS}; all runs ours ${o.map((x) => x.seconds.toFixed(2)).join('/')} s, peer ${p.map((x) => x.seconds.toFixed(2)).join('/')} s (steps of the best: ${bp.steps.map((s) => s.toFixed(2)).join(' + ')}); peak RSS ours ${(bo.maxRssKiB / 1024).toFixed(0)} MiB, peer ${(bp.maxRssKiB / 1024).toFixed(0)} MiB; UKI ${(res.ukiSize / 1e6).toFixed(1)} MB; ours computes sha512 (bootc's), the peer sha256`,
    }];
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  run().then((r) => console.log(JSON.stringify(r, null, 2)), (e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
