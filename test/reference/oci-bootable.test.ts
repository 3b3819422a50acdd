/**
 * Bootable OCI images against real tools: layouts with a SELinux policy, /boot, /sysroot, hardlinks and
 * xattrs (zero and non-zero mtimes) are pulled with --bootable; the bootable image id must equal
 * `bootcfs cfs compute-id --bootable` of the same image unpacked by umoci, in two repository
 * configurations; the labels in the written image follow the policy; `oci create-image --bootable`
 * records composefs.image.boot (config and manifest streams rewritten, tag intact, fsck clean); an image
 * without /sysroot cannot be made bootable. Plus `oci pull --progress-fd 3` (JSON lines) and the
 * progress reporter's TTY bars.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BOOTCFS_BIN, cases, isRoot, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { buildTar, writeOciLayout, type TarWriteEntry } from '../helpers/oci-layout.js';
import { Repository } from '../../src/repository/index.js';
import { pullImage } from '../../src/oci/pull.js';
import { BOOT_IMAGE_REF, IMAGE_REF, computeImageId, configStreamName } from '../../src/oci/image.js';
import { computeDirectoryId } from '../../src/oci/directory-image.js';
import { BootTransformError } from '../../src/oci/bootable.js';
import { imageToTree } from '../../src/composefs/info.js';
import { lookup, walk } from '../../src/tree/model.js';
import { ProgressReporter, type ProgressEvent } from '../../src/util/progress.js';
import type { HashAlgorithm } from '../../src/fsverity/index.js';

const UMOCI = '/usr/bin/umoci';
const tmp = (): string => mkdtempSync(path.join(os.tmpdir(), 'bootcfs-bootable-'));

const FILE_CONTEXTS = [
  '# generated test policy',
  '/.*\tsystem_u:object_r:default_t:s0',
  '/\t-d\tsystem_u:object_r:root_t:s0',
  '/usr(/.*)?\tsystem_u:object_r:usr_t:s0',
  '/usr/bin/.*\t--\tsystem_u:object_r:bin_t:s0',
  '/usr/lib/lib[^/]*\\.so(\\.[0-9]+)*\t--\tsystem_u:object_r:lib_t:s0',
  '/etc(/.*)?\tsystem_u:object_r:etc_t:s0',
  '/boot(/.*)?\tsystem_u:object_r:boot_t:s0',
  '/var/www(/.*)?\tsystem_u:object_r:httpd_t:s0',
  '/var/run\t-l\tsystem_u:object_r:var_run_t:s0',
  '/opt/unlabelled(/.*)?\t<<none>>',
  '',
].join('\n');

/** Expected labels of the test policy, written independently of the implementation. */
function expectedLabel(p: string, type: string): string | undefined {
  const alias = p === '/srv/www' || p.startsWith('/srv/www/') ? '/var/www' + p.slice('/srv/www'.length) : p;
  const q = alias;
  if (q === '/opt/unlabelled' || q.startsWith('/opt/unlabelled/')) return undefined;
  if (q === '/var/run' && type === 'lnk') return 'system_u:object_r:var_run_t:s0';
  if (q === '/var/www' || q.startsWith('/var/www/')) return 'system_u:object_r:httpd_t:s0';
  if (q === '/boot' || q.startsWith('/boot/')) return 'system_u:object_r:boot_t:s0';
  if (q === '/etc' || q.startsWith('/etc/')) return 'system_u:object_r:etc_t:s0';
  if (type === 'reg' && /^\/usr\/lib\/lib[^/]*\.so(\.[0-9]+)*$/.test(q)) return 'system_u:object_r:lib_t:s0';
  if (type === 'reg' && q.startsWith('/usr/bin/')) return 'system_u:object_r:bin_t:s0';
  if (q === '/usr' || q.startsWith('/usr/')) return 'system_u:object_r:usr_t:s0';
  if (q === '/' && type === 'dir') return 'system_u:object_r:root_t:s0';
  return 'system_u:object_r:default_t:s0';
}

interface BootableOpts {
  zeroMtimes: boolean;
  selinux: boolean;
  sysroot?: boolean;
}

/** Three layers of a small bootable OS image. */
export function bootableLayers(rng: Rng, o: BootableOpts): Buffer[] {
  const t = (): number => (o.zeroMtimes ? 0 : 1_650_000_000 + rng.int(0, 100_000));
  const dir = (p: string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path: p, type: 'dir', mode: 0o755, mtimeSec: t(), ...extra });
  const file = (p: string, content: Buffer | string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({
    path: p, type: 'reg', mode: 0o644, mtimeSec: t(), content: typeof content === 'string' ? Buffer.from(content) : content, ...extra,
  });
  const rnd = (n: number): Buffer => Buffer.from(rng.bytes(n));
  const hostLabel = { 'security.selinux': Buffer.from('system_u:object_r:container_file_t:s0\0') };
  const l1: TarWriteEntry[] = [
    dir('./'),
    dir('usr/', { xattrs: { 'user.usr': Buffer.from('u') } }),
    dir('usr/bin/'),
    file('usr/bin/sh', rnd(rng.int(65, 20_000)), { mode: 0o755, xattrs: { ...hostLabel, 'security.capability': Buffer.from('0100000200200000000000000000000000000000', 'hex') } }),
    { path: 'usr/bin/bash', type: 'hardlink', linkTarget: 'usr/bin/sh', mtimeSec: 0 },
    dir('usr/lib/'),
    file('usr/lib/libc.so.6', rnd(rng.int(65, 50_000))),
    file('usr/lib/libz.so', rnd(30)),
    file('usr/lib/os-release', 'NAME=Test\nVERSION_ID=1\n'),
    { path: 'usr/lib/fifo', type: 'fifo', mode: 0o600, mtimeSec: t() },
    dir('etc/'),
    file('etc/hostname', 'test\n', { xattrs: { ...hostLabel, 'user.x': Buffer.from([0, 1]) } }),
    dir('boot/'),
    file('boot/vmlinuz', rnd(rng.int(65, 40_000))),
    dir('boot/loader/'),
    dir('boot/loader/entries/'),
    file('boot/loader/entries/a.conf', 'title a\nlinux /vmlinuz\n'),
    dir('var/'),
    { path: 'var/run', type: 'symlink', mode: 0o777, linkTarget: '../run', mtimeSec: t() },
    dir('var/www/'),
    file('var/www/index.html', rnd(rng.int(0, 200))),
    dir('srv/'),
    dir('srv/www/'),
    file('srv/www/page', rnd(rng.int(0, 200))),
    dir('opt/'),
    dir('opt/unlabelled/'),
    file('opt/unlabelled/f', 'f', { xattrs: hostLabel }),
    dir('run/'),
    file('run/stale', 'x'),
  ];
  if (o.sysroot ?? true) l1.push(dir('sysroot/'), dir('sysroot/ostree/'), file('sysroot/ostree/deploy', rnd(100)));
  const l2: TarWriteEntry[] = [dir('etc/'), dir('usr/', { xattrs: { 'user.usr': Buffer.from('second') } }), dir('usr/lib/')];
  if (o.selinux) {
    l2.push(
      dir('etc/selinux/'),
      file('etc/selinux/config', '# test\nSELINUX=enforcing\nSELINUXTYPE=testpol\n'),
      dir('etc/selinux/testpol/'),
      dir('etc/selinux/testpol/contexts/'),
      dir('etc/selinux/testpol/contexts/files/'),
      file('etc/selinux/testpol/contexts/files/file_contexts', FILE_CONTEXTS),
      file('etc/selinux/testpol/contexts/files/file_contexts.subs_dist', '# aliases\n/srv/www /var/www\n'),
    );
  }
  l2.push({ path: 'usr/lib/libfoo.so.1', type: 'hardlink', linkTarget: 'usr/lib/libc.so.6', mtimeSec: 0 });
  const l3: TarWriteEntry[] = [dir('boot/'), file('boot/initrd', rnd(rng.int(65, 5000))), dir('var/'), dir('var/www/'), file('var/www/.wh.index.html', '')];
  return [l1, l2, l3].map((e) => buildTar(e, { format: 'pax' }));
}

function umociUnpack(layoutDir: string, tag: string, bundle: string): string {
  requireTool(UMOCI);
  const r = run(UMOCI, ['unpack', ...(isRoot ? [] : ['--rootless']), '--image', `${layoutDir}:${tag}`, bundle]);
  assert.equal(r.status, 0, r.stderr.toString());
  return path.join(bundle, 'rootfs');
}

function cli(args: string[]): string {
  const r = run(BOOTCFS_BIN, args);
  assert.equal(r.status, 0, `bootcfs ${args.join(' ')}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

test('bootable pull == compute-id --bootable of the umoci unpack; labels follow the policy', async () => {
  const n = cases(2, 6);
  const seed = Date.now() % 100000;
  for (let c = 0; c < n; c++) {
    const caseSeed = seed + c;
    const zeroMtimes = c % 2 === 0;
    const dir = tmp();
    try {
      const rng = new Rng(caseSeed);
      const layout = writeOciLayout(path.join(dir, 'layout'), {
        layers: bootableLayers(rng, { zeroMtimes, selinux: true }).map((tar, i) => ({ tar, compression: i === 1 ? 'none' : 'gzip' })),
        tag: 'os',
      });
      const rootfs = umociUnpack(layout.dir, 'os', path.join(dir, 'bundle'));
      for (const [alg, format] of [['sha512', 1], ['sha256', 2]] as Array<[HashAlgorithm, 1 | 2]>) {
        const what = `seed ${caseSeed} ${alg} v${format} zeroMtimes=${zeroMtimes}`;
        const repoDir = path.join(dir, `repo-${alg}-${format}`);
        const repo = await Repository.init(repoDir, { algorithm: alg, insecure: true, erofsFormat: format });
        let bootHex: string;
        let plainHex: string;
        try {
          const r = await pullImage(repo, `oci:${layout.dir}:os`, { tag: 'os', bootable: true });
          assert.ok(r.bootImageId, what);
          bootHex = r.bootImageId.toString('hex');
          plainHex = r.imageId.toString('hex');
          assert.notEqual(bootHex, plainHex, what);
          assert.equal((await computeImageId(repo, 'os', { bootable: true })).toString('hex'), bootHex, what);
          assert.equal((await computeImageId(repo, 'os')).toString('hex'), plainHex, what);
          const cfg = await repo.openStream(configStreamName(layout.configDigest));
          assert.equal(cfg.namedRefs.get(BOOT_IMAGE_REF)?.toString('hex'), bootHex, what);
          assert.equal(cfg.namedRefs.get(IMAGE_REF)?.toString('hex'), plainHex, what);
          assert.deepEqual((await repo.listImages()).sort(), [bootHex, plainHex].sort(), what);
          // the labels inside the bootable image
          const tree = imageToTree(readFileSync(repo.imagePath(bootHex)));
          let labelled = 0;
          for (const [p, inode] of walk(tree.root)) {
            if (p === '/usr/bin/bash' || p === '/usr/lib/libfoo.so.1') continue; // hardlinks: last name visited decides
            const got = inode.xattrs.get('security.selinux')?.toString('latin1');
            assert.equal(got, expectedLabel(p, inode.type), `${what}: label of ${p}`);
            if (got !== undefined) labelled++;
          }
          assert.ok(labelled > 20, what);
          // hardlinks share one inode: sh/bash (bash visited first, sh last), libc.so.6/libfoo.so.1 (libfoo last)
          assert.equal(lookup(tree.root, '/usr/bin/bash')!.xattrs.get('security.selinux')?.toString(), 'system_u:object_r:bin_t:s0');
          assert.equal(lookup(tree.root, '/usr/lib/libc.so.6')!.xattrs.get('security.selinux')?.toString(), 'system_u:object_r:lib_t:s0');
          for (const d of ['/boot', '/sysroot']) {
            const e = lookup(tree.root, d)!;
            assert.equal(e.entries!.size, 0, `${what}: ${d} emptied`);
            assert.equal(e.mtimeSec, lookup(tree.root, '/usr')!.mtimeSec, `${what}: ${d} mtime`);
          }
          assert.equal(lookup(tree.root, '/run')!.entries!.size, 0);
          assert.equal((await repo.fsck()).ok, true, what);
        } finally {
          await repo.close();
        }
        // the same image unpacked by umoci: library and CLI
        assert.equal((await computeDirectoryId(rootfs, { algorithm: alg, format, bootable: true })).toString('hex'), bootHex, `${what}: computeDirectoryId`);
        assert.equal(cli(['cfs', '--repo', repoDir, 'compute-id', '--bootable', rootfs]).trim(), bootHex, `${what}: cfs compute-id --bootable`);
        assert.equal(cli(['cfs', '--repo', repoDir, 'compute-id', rootfs]).trim(), plainHex, `${what}: cfs compute-id`);
        assert.equal(cli(['cfs', '--repo', repoDir, 'oci', 'compute-id', '--bootable', 'os']).trim(), bootHex, what);
        // cfs create-image --bootable DIR stores the same image
        assert.equal(cli(['cfs', '--repo', repoDir, 'create-image', '--bootable', rootfs, 'from-dir']).trim(), bootHex, what);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('oci create-image --bootable records composefs.image.boot; no policy strips labels; no /sysroot is refused', async () => {
  const dir = tmp();
  try {
    const rng = new Rng(99);
    const layout = writeOciLayout(path.join(dir, 'layout'), { layers: bootableLayers(rng, { zeroMtimes: false, selinux: false }).map((tar) => ({ tar })), tag: 'nopol' });
    const bad = writeOciLayout(path.join(dir, 'layout'), { layers: bootableLayers(rng, { zeroMtimes: false, selinux: true, sysroot: false }).map((tar) => ({ tar })), tag: 'nosysroot' });
    const repoDir = path.join(dir, 'repo');
    cli(['cfs', '--repo', repoDir, '--insecure', 'init']);
    const pulled = cli(['cfs', '--repo', repoDir, 'oci', 'pull', `oci:${layout.dir}:nopol`, 'nopol']);
    assert.doesNotMatch(pulled, /^boot /m);
    const before = JSON.parse(cli(['cfs', '--repo', repoDir, 'oci', 'images', '--json'])) as Array<{ name: string; image: string; bootImage?: string }>;
    assert.equal(before.length, 1);
    assert.equal(before[0]!.bootImage, undefined);
    const bootHex = cli(['cfs', '--repo', repoDir, 'oci', 'create-image', '--bootable', 'nopol', 'nopol-boot']).trim();
    assert.match(bootHex, /^[0-9a-f]{128}$/);
    assert.equal(cli(['cfs', '--repo', repoDir, 'oci', 'compute-id', '--bootable', 'nopol']).trim(), bootHex);
    const after = JSON.parse(cli(['cfs', '--repo', repoDir, 'oci', 'images', '--json'])) as Array<{ name: string; image: string; bootImage?: string }>;
    assert.equal(after[0]!.name, 'nopol');
    assert.equal(after[0]!.image, before[0]!.image);
    assert.equal(after[0]!.bootImage, bootHex);
    const inspect = JSON.parse(cli(['cfs', '--repo', repoDir, 'oci', 'inspect', 'nopol'])) as { bootImage: string };
    assert.equal(inspect.bootImage, bootHex);
    // plain create-image gives the recorded plain image; the ref names it
    assert.equal(cli(['cfs', '--repo', repoDir, 'oci', 'create-image', 'nopol']).trim(), before[0]!.image);
    assert.equal(cli(['cfs', '--repo', repoDir, 'image-objects', 'nopol-boot']).length > 0, true);
    const repo = await Repository.open(repoDir);
    try {
      // no policy: no security.selinux anywhere (the tars carry host labels)
      const tree = imageToTree(readFileSync(repo.imagePath(bootHex)));
      for (const [p, inode] of walk(tree.root)) assert.equal(inode.xattrs.has('security.selinux'), false, p);
      assert.equal((await repo.imageRefs()).get('nopol-boot'), bootHex);
      // a plain re-pull keeps the recorded bootable image
      await pullImage(repo, `oci:${layout.dir}:nopol`, { tag: 'nopol' });
      assert.equal((await repo.openStream(configStreamName(layout.configDigest))).namedRefs.get(BOOT_IMAGE_REF)?.toString('hex'), bootHex);
      // gc keeps both images (reachable through the config stream), fsck is clean
      await repo.gc();
      assert.ok((await repo.listImages()).includes(bootHex));
      assert.equal((await repo.fsck()).ok, true);
      // no /sysroot: typed error, nothing tagged
      await assert.rejects(pullImage(repo, `oci:${bad.dir}:nosysroot`, { tag: 'nosysroot', bootable: true }), (e: unknown) => e instanceof BootTransformError && /\/sysroot/.test((e as Error).message));
      assert.equal((await repo.streamRefs()).has('oci/nosysroot'), false);
    } finally {
      await repo.close();
    }
    const r = run(BOOTCFS_BIN, ['cfs', '--repo', repoDir, 'oci', 'pull', '--bootable', `oci:${bad.dir}:nosysroot`, 'nosysroot']);
    assert.equal(r.status, 1);
    assert.match(r.stderr.toString(), /^bootcfs: the image has no \/sysroot directory/m);
    const m = run(BOOTCFS_BIN, ['cfs', '--repo', repoDir, 'oci', 'mount', '--bootable', 'nosuch', path.join(dir, 'mnt')]);
    assert.equal(m.status, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs the CLI with a pipe on fd 3; resolves to stdout, the fd-3 text, stderr and the exit code. */
function runWithFd3(args: string[]): Promise<{ status: number; stdout: string; fd3: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(BOOTCFS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    const bufs: Record<string, Buffer[]> = { out: [], err: [], fd3: [] };
    child.stdout!.on('data', (d: Buffer) => bufs.out!.push(d));
    child.stderr!.on('data', (d: Buffer) => bufs.err!.push(d));
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (d: Buffer) => bufs.fd3!.push(d));
    child.on('error', reject);
    child.on('close', (status) =>
      resolve({ status: status ?? -1, stdout: Buffer.concat(bufs.out!).toString(), fd3: Buffer.concat(bufs.fd3!).toString(), stderr: Buffer.concat(bufs.err!).toString() }),
    );
  });
}

test('oci pull --progress-fd 3: JSON lines, bytes monotonic, final bytes == layer sizes, ≤ ~10 events/s per layer', async () => {
  const dir = tmp();
  try {
    const rng = new Rng(5150);
    const big = Buffer.from(rng.bytes(24 << 20));
    const layers = [
      buildTar([{ path: 'usr/', type: 'dir', mode: 0o755 }, { path: 'usr/big', type: 'reg', mode: 0o644, content: big }]),
      buildTar([{ path: 'etc/', type: 'dir', mode: 0o755 }, { path: 'etc/a', type: 'reg', mode: 0o644, content: Buffer.from(rng.bytes(5000)) }]),
    ];
    const layout = writeOciLayout(path.join(dir, 'layout'), { layers: layers.map((tar, i) => ({ tar, compression: i === 0 ? 'none' : 'gzip' })), tag: 'p' });
    const manifest = JSON.parse(readFileSync(path.join(layout.dir, 'blobs', 'sha256', layout.manifestDigest.slice(7)), 'utf8')) as { layers: Array<{ digest: string; size: number }> };
    const sizes = new Map(manifest.layers.map((l) => [l.digest, l.size]));
    const repoDir = path.join(dir, 'repo');
    cli(['cfs', '--repo', repoDir, '--insecure', 'init']);
    for (const round of ['fresh', 'again']) {
      const t0 = Date.now();
      const r = await runWithFd3(['cfs', '--repo', repoDir, 'oci', 'pull', '--progress-fd', '3', `oci:${layout.dir}:p`, 'p']);
      const elapsed = Date.now() - t0;
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '', 'no TTY: no bars');
      const verity = /^verity +([0-9a-f]+)$/m.exec(r.stdout)![1]!;
      assert.ok(r.fd3.endsWith('\n'));
      const events = r.fd3.trimEnd().split('\n').map((l) => JSON.parse(l) as ProgressEvent);
      const last = new Map<string, number>();
      const progressCount = new Map<string, number>();
      const done = new Map<string, ProgressEvent>();
      for (const e of events) {
        assert.ok(['layer-start', 'layer-progress', 'layer-done', 'image-done'].includes(e.type), JSON.stringify(e));
        assert.equal(typeof e.ts, 'number');
        assert.equal(typeof e.bytes, 'number');
        assert.equal(typeof e.total, 'number');
        if (e.type === 'image-done') continue;
        assert.equal(e.total, sizes.get(e.digest), JSON.stringify(e));
        if (e.type === 'layer-start') {
          assert.equal(last.has(e.digest), false);
          last.set(e.digest, e.bytes);
          continue;
        }
        assert.ok(last.has(e.digest), `event before layer-start: ${JSON.stringify(e)}`);
        assert.ok(e.bytes >= last.get(e.digest)!, `bytes not monotonic: ${JSON.stringify(e)}`);
        last.set(e.digest, e.bytes);
        if (e.type === 'layer-progress') progressCount.set(e.digest, (progressCount.get(e.digest) ?? 0) + 1);
        if (e.type === 'layer-done') done.set(e.digest, e);
      }
      assert.deepEqual([...done.keys()].sort(), [...sizes.keys()].sort(), round);
      for (const [d, e] of done) {
        assert.equal(e.bytes, sizes.get(d), `${round}: final bytes of ${d}`);
        assert.equal(e.skipped === true, round === 'again');
        assert.ok((progressCount.get(d) ?? 0) <= Math.ceil(elapsed / 100) + 1, `${round}: too many progress events for ${d}`);
      }
      const fin = events[events.length - 1]!;
      assert.equal(fin.type, 'image-done');
      assert.equal(fin.digest, verity);
      assert.equal(fin.bytes, [...sizes.values()].reduce((a, b) => a + b, 0));
    }
    const bad = run(BOOTCFS_BIN, ['cfs', '--repo', repoDir, 'oci', 'pull', '--progress-fd', 'x', `oci:${layout.dir}:p`]);
    assert.equal(bad.status, 2);
    const closed = run(BOOTCFS_BIN, ['cfs', '--repo', repoDir, 'oci', 'pull', '--progress-fd', '57', `oci:${layout.dir}:p`]);
    assert.equal(closed.status, 1);
    assert.match(closed.stderr.toString(), /not open/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('progress reporter: throttled per layer, TTY bars only on a TTY', async () => {
  let now = 1000;
  const writes: string[] = [];
  const tty = { isTTY: true, write: (s: string) => (writes.push(s), true) } as unknown as NodeJS.WriteStream;
  const p = new ProgressReporter({ tty, now: () => now });
  p.layerStart('sha256:aaaa', 1000);
  p.layerStart('sha256:bbbb', 10);
  for (let i = 1; i <= 100; i++) {
    now += 5;
    p.layerProgress('sha256:aaaa', i * 10);
  }
  p.layerDone('sha256:aaaa');
  p.layerDone('sha256:bbbb', { skipped: true, bytes: 10 });
  p.imageDone('ff');
  await p.close();
  const out = writes.join('');
  assert.match(out, /aaaa \[#{30}\] 1\.0 kB \/ 1\.0 kB done/);
  assert.match(out, /bbbb \[#{30}\] 10 B \/ 10 B exists/);
  assert.match(out, /\x1b\[2A/); // redrawn in place
  // 100 updates over 500 ms, one per ≥100 ms: at most 5 redraws from progress + 2 starts + 2 dones + image
  assert.ok(writes.length <= 10, String(writes.length));
  const silent = new ProgressReporter({ tty: { isTTY: false, write: () => assert.fail('wrote to a non-TTY') } as unknown as NodeJS.WriteStream });
  assert.equal(silent.active, false);
  silent.layerStart('sha256:c', 1);
  silent.layerDone('sha256:c');
  await silent.close();
});
