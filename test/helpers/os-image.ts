/**
 * The demo/test OS image (scripts/build-os-image.sh) and what boot tests do with it: seal it with a test
 * key, take the UKI and systemd-boot out of the sealed image, stage a physical root filesystem holding a
 * composefs repository and deployment state, and wait for other QEMU guests to finish (one VM at a time).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { BOOTCFS_BIN, REPO_ROOT } from './ref.js';

export const BUILD_OS_IMAGE = path.join(REPO_ROOT, 'scripts/build-os-image.sh');

function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, maxBuffer: 1 << 30 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString().slice(-3000)}`);
  return { stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

export interface OsImage {
  /** OCI image layout directory with the tags v1 and v2 */
  layout: string;
  /** whether the cached layout was reused */
  cached: boolean;
  buildMs: number;
  log: string;
}

/** Builds (or reuses the cached) demo OS image. Needs root for the first build of the base layer. */
export function buildOsImage(): OsImage {
  const t0 = Date.now();
  const { stdout, stderr } = sh('bash', [BUILD_OS_IMAGE]);
  const layout = stdout.trim().split('\n').pop()!;
  if (!existsSync(path.join(layout, 'index.json'))) throw new Error(`build-os-image.sh printed ${layout}, which is not an image layout`);
  return { layout, cached: /\] cached: /.test(stderr), buildMs: Date.now() - t0, log: stderr };
}

export interface TestSigningKey { key: string; cert: string }

/** A fresh self-signed RSA-2048 db key + certificate (openssl). */
export function makeTestSigningKey(dir: string): TestSigningKey {
  const key = path.join(dir, 'db.key');
  const cert = path.join(dir, 'db.crt');
  sh('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650', '-subj', '/CN=bootcfs test db/', '-keyout', key, '-out', cert]);
  return { key, cert };
}

export interface SealedOsImage {
  /** oci:DIR:TAG of the sealed image */
  ref: string;
  digest: string;
  cmdline: string;
  kver: string;
  /** host files taken out of the sealed image's last layer */
  uki: string;
  systemdBoot: string;
  sealMs: number;
}

/** `bootcfs container build-sealed SOURCE --output oci:OUTDIR/sealed:TAG`, then extracts the UKI and systemd-boot. */
export function sealOsImage(source: string, outDir: string, keys: TestSigningKey, extra: string[] = []): SealedOsImage {
  const t0 = Date.now();
  const layout = path.join(outDir, 'sealed');
  const ref = `oci:${layout}:sealed`;
  const { stdout } = sh(BOOTCFS_BIN, ['container', 'build-sealed', source, '--output', ref, '--key', keys.key, '--cert', keys.cert, '--json', ...extra]);
  const r = JSON.parse(stdout) as { digest: string; cmdline: string; kver: string; ukiPath: string };
  const sealMs = Date.now() - t0;
  const index = JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'sealed')!;
  const blob = (d: string): string => path.join(layout, 'blobs', ...d.split(':'));
  const manifest = JSON.parse(readFileSync(blob(entry.digest), 'utf8')) as { layers: Array<{ digest: string }> };
  const last = blob(manifest.layers[manifest.layers.length - 1]!.digest);
  const ex = path.join(outDir, 'boot');
  sh('mkdir', ['-p', ex]);
  sh('tar', ['-xzf', last, '-C', ex, r.ukiPath.replace(/^\//, ''), 'boot/EFI/systemd/systemd-bootx64.efi']);
  return { ref, digest: r.digest, cmdline: r.cmdline, kver: r.kver, uki: path.join(ex, r.ukiPath), systemdBoot: path.join(ex, 'boot/EFI/systemd/systemd-bootx64.efi'), sealMs };
}

/**
 * A physical root filesystem tree at STAGE as an install would leave it: composefs/ (an insecure repository
 * holding SOURCE pulled with --bootable), state/deploy/<digest>/{etc, var -> ../../os/default/var},
 * state/os/default/var, with /etc and /var taken from the image's layers. Returns the bootable digest.
 */
export async function stageComposefsRoot(stage: string, source: string, layoutDir: string, tag: string): Promise<string> {
  const repo = path.join(stage, 'composefs');
  sh(BOOTCFS_BIN, ['cfs', '--repo', repo, '--insecure', 'init']);
  const out = sh(BOOTCFS_BIN, ['cfs', '--repo', repo, '--insecure', 'oci', 'pull', '--bootable', source, 'os']).stdout;
  const m = /^boot\s*:?\s*(?:sha512:|sha256:)?([0-9a-f]{64,128})\s*$/m.exec(out);
  if (!m) throw new Error(`cfs oci pull --bootable printed no boot digest:\n${out}`);
  const digest = m[1]!;
  // /etc and /var of the image: the layers of TAG in order (GNU tar applies later layers over earlier ones)
  const index = JSON.parse(readFileSync(path.join(layoutDir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const entry = index.manifests.find((e) => e.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!entry) throw new Error(`${layoutDir} has no tag ${tag}`);
  const blob = (d: string): string => path.join(layoutDir, 'blobs', ...d.split(':'));
  const manifest = JSON.parse(readFileSync(blob(entry.digest), 'utf8')) as { layers: Array<{ digest: string; mediaType: string }> };
  const tree = path.join(stage, '.image-tree');
  await fsp.mkdir(tree, { recursive: true });
  for (const l of manifest.layers) {
    const list = spawnSync('tar', ['-tf', blob(l.digest)], { maxBuffer: 1 << 30 }).stdout.toString().split('\n');
    const want = ['etc', 'var'].filter((d) => list.some((p) => p === d || p === `${d}/` || p.startsWith(`${d}/`)));
    if (want.length === 0) continue;
    sh('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '-xpf', blob(l.digest), '-C', tree, ...want]);
  }
  const deploy = path.join(stage, 'state/deploy', digest);
  await fsp.mkdir(deploy, { recursive: true });
  await fsp.mkdir(path.join(stage, 'state/os/default'), { recursive: true });
  await fsp.rename(path.join(tree, 'etc'), path.join(deploy, 'etc'));
  await fsp.rename(path.join(tree, 'var'), path.join(stage, 'state/os/default/var'));
  await fsp.symlink('../../os/default/var', path.join(deploy, 'var'));
  await fsp.rm(tree, { recursive: true, force: true });
  return digest;
}

/** An ext4 filesystem image (4 KiB blocks, verity feature) of STAGE, made without mounting. */
export function makeRootFilesystem(stage: string, image: string, sizeMiB: number): void {
  sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-O', 'verity', '-L', 'root', '-d', stage, image, `${sizeMiB}M`]);
}

/** Waits until no other QEMU guest runs on this host (other sessions boot VMs too; TCG timings need the CPU). */
export async function waitForNoOtherVm(maxMs = 15 * 60_000): Promise<number> {
  // BOOTCFS_VM_PARALLEL=1: a developer runs a second VM test beside a long one on purpose (slower, not wrong)
  if (process.env.BOOTCFS_VM_PARALLEL === '1') return 0;
  const t0 = Date.now();
  for (;;) {
    const r = spawnSync('pgrep', ['-x', 'qemu-system-x86']);
    const r2 = spawnSync('pgrep', ['-f', '^qemu-system-x86_64 ']);
    if (r.status !== 0 && r2.status !== 0) return Date.now() - t0;
    if (Date.now() - t0 > maxMs) throw new Error('another QEMU guest has been running for too long');
    await new Promise((res) => setTimeout(res, 2000));
  }
}

/** Copies usr/lib/modules/<kver>/{vmlinuz,initramfs.img} out of TAG's layers into DIR/<kver>/ (a --kernel-dir). */
export function extractKernelDir(layoutDir: string, tag: string, dir: string): string {
  const index = JSON.parse(readFileSync(path.join(layoutDir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const entry = index.manifests.find((e) => e.annotations?.['org.opencontainers.image.ref.name'] === tag)!;
  const blob = (d: string): string => path.join(layoutDir, 'blobs', ...d.split(':'));
  const manifest = JSON.parse(readFileSync(blob(entry.digest), 'utf8')) as { layers: Array<{ digest: string }> };
  for (const l of manifest.layers) {
    const names = spawnSync('tar', ['-tf', blob(l.digest)], { maxBuffer: 1 << 30 }).stdout.toString().split('\n')
      .filter((n) => /^usr\/lib\/modules\/[^/]+\/(vmlinuz|initramfs\.img)$/.test(n));
    if (names.length === 0) continue;
    sh('mkdir', ['-p', dir]);
    sh('tar', ['-xf', blob(l.digest), '-C', dir, ...names]);
  }
  const mods = path.join(dir, 'usr/lib/modules');
  const kver = spawnSync('ls', [mods]).stdout.toString().trim();
  if (!kver || kver.includes('\n')) throw new Error(`expected one kernel in ${tag}, found '${kver}'`);
  return path.join(mods, kver);
}
