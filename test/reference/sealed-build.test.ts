/**
 * `bootcfs container build-sealed / verify-sealed / compute-composefs-digest / ukify` end to end, checked
 * with the reference tools: sbverify accepts the UKI and systemd-boot inside DEST, ukify inspect reads the
 * UKI's .cmdline, umoci unpacks DEST and the digest of the unpacked directory equals the sealed one, and a
 * changed file in DEST makes verify-sealed fail and name the file.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { BOOTCFS_BIN, isRoot, requireTool, run, REF_PREFIX } from '../helpers/ref.js';
import { buildTar } from '../helpers/oci-layout.js';
import { writeBootableImage, type BootableImage } from '../helpers/bootable-image.js';

const UKIFY = `${REF_PREFIX}/bin/ukify`;
let work: string;
let img: BootableImage;
let key: string;
let cert: string;

function bootcfs(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = run(BOOTCFS_BIN, args, { env: { ...process.env, TMPDIR: work } });
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function unpack(ref: string, into: string): string {
  const args = ['unpack', ...(isRoot ? [] : ['--rootless']), '--image', ref.replace(/^oci:/, ''), into];
  const r = run(requireTool('/usr/bin/umoci'), args);
  assert.equal(r.status, 0, r.stderr.toString());
  return path.join(into, 'rootfs');
}

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'bootcfs-sealed-'));
  key = path.join(work, 'db.key');
  cert = path.join(work, 'db.crt');
  const r = run('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650', '-subj', '/CN=bootcfs sealed test db/', '-keyout', key, '-out', cert]);
  assert.equal(r.status, 0, r.stderr.toString());
  img = writeBootableImage(path.join(work, 'src'));
});

after(() => fs.rmSync(work, { recursive: true, force: true }));

test('build-sealed → verify-sealed, sbverify, ukify inspect, umoci digest: one invariant', () => {
  const dest = `oci:${path.join(work, 'dest')}:sealed`;
  const b = bootcfs(['container', 'build-sealed', img.ref, '--output', dest, '--key', key, '--cert', cert, '--karg', 'quiet', '--json']);
  assert.equal(b.status, 0, b.stderr);
  const res = JSON.parse(b.stdout) as { digest: string; kver: string; cmdline: string; checkedDigest: string; ukiPath: string };
  assert.match(res.digest, /^[0-9a-f]{128}$/);
  assert.equal(res.checkedDigest, res.digest);
  assert.equal(res.cmdline, `console=ttyS0 panic=-1 composefs=${res.digest} quiet`);

  const v = bootcfs(['container', 'verify-sealed', dest, '--cert', cert]);
  assert.equal(v.status, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /verify-sealed: OK/);

  // the same digest from the image reference, from the source image, and from DEST unpacked by umoci
  const fromDest = bootcfs(['container', 'compute-composefs-digest', '--image', dest]);
  assert.equal(fromDest.stdout.trim(), res.digest, fromDest.stderr);
  const fromSource = bootcfs(['container', 'compute-composefs-digest', '--image', img.ref]);
  assert.equal(fromSource.stdout.trim(), res.digest, fromSource.stderr);
  const rootfs = unpack(dest, path.join(work, 'dest-unpacked'));
  const fromDir = bootcfs(['container', 'compute-composefs-digest', rootfs]);
  assert.equal(fromDir.stdout.trim(), res.digest, fromDir.stderr);

  // the reference tools accept what build-sealed wrote
  const uki = path.join(rootfs, res.ukiPath);
  assert.equal(uki, path.join(rootfs, `boot/EFI/Linux/${res.kver}.efi`));
  for (const pe of [uki, path.join(rootfs, 'boot/EFI/systemd/systemd-bootx64.efi')]) {
    const s = run(requireTool('/usr/bin/sbverify'), ['--cert', cert, pe]);
    assert.equal(s.status, 0, `sbverify ${pe}: ${s.stdout}${s.stderr}`);
  }
  const ins = run(requireTool(UKIFY), ['inspect', uki, '--json=short']);
  assert.equal(ins.status, 0, ins.stderr.toString());
  const sections = JSON.parse(ins.stdout.toString()) as Record<string, { text?: string }>;
  assert.equal(sections['.cmdline']?.text?.trim(), res.cmdline);
  assert.equal(sections['.uname']?.text?.trim(), res.kver);
  assert.match(sections['.osrel']?.text ?? '', /ID=bootcfs-test/);
  // the recorded dumpfile is the sealed tree: mkcomposefs makes an image of the same digest... for sha256; here
  // check at least that it lists /usr/bin/hello and an empty /boot
  const dump = fs.readFileSync(path.join(rootfs, `boot/${res.kver}.dump`), 'latin1');
  assert.match(dump, /^\/usr\/bin\/hello /m);
  assert.doesNotMatch(dump, /^\/boot\/stale/m);
  // the source's /boot content is still there in DEST (only the transform empties it)
  assert.ok(fs.existsSync(path.join(rootfs, 'boot/stale-file-from-the-distro')));

  // reproducible: a second build gives the same digest and the same UKI
  const dest2 = `oci:${path.join(work, 'dest2')}:sealed`;
  const b2 = bootcfs(['container', 'build-sealed', img.ref, '--output', dest2, '--key', key, '--cert', cert, '--karg', 'quiet', '--json']);
  assert.equal(b2.status, 0, b2.stderr);
  const res2 = JSON.parse(b2.stdout) as typeof res & { layerDigest: string };
  assert.equal(res2.digest, res.digest);
  const rootfs2 = unpack(dest2, path.join(work, 'dest2-unpacked'));
  assert.ok(fs.readFileSync(path.join(rootfs2, res.ukiPath)).equals(fs.readFileSync(uki)), 'the UKI is byte-identical across builds');

  // a sealed image cannot be sealed again
  const again = bootcfs(['container', 'build-sealed', dest, '--output', `oci:${path.join(work, 'dest3')}`, '--key', key, '--cert', cert]);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /already carries a UKI/);
});

/** DEST + one layer that replaces `file` (as a registry user could push on top of a sealed image). */
function addLayer(layoutDir: string, fromTag: string, toTag: string, entries: Parameters<typeof buildTar>[0]): string {
  const index = JSON.parse(fs.readFileSync(path.join(layoutDir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === fromTag)!;
  const blob = (d: string): string => path.join(layoutDir, 'blobs/sha256', d.slice(7));
  const put = (b: Buffer): string => {
    const d = `sha256:${createHash('sha256').update(b).digest('hex')}`;
    fs.writeFileSync(blob(d), b);
    return d;
  };
  const manifest = JSON.parse(fs.readFileSync(blob(entry.digest), 'utf8'));
  const config = JSON.parse(fs.readFileSync(blob(manifest.config.digest), 'utf8'));
  const tar = buildTar(entries);
  const gz = gzipSync(tar);
  config.rootfs.diff_ids.push(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
  if (Array.isArray(config.history)) config.history.push({ created_by: 'tamper' });
  const cfg = Buffer.from(JSON.stringify(config));
  manifest.config = { ...manifest.config, digest: put(cfg), size: cfg.length };
  manifest.layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: put(gz), size: gz.length });
  const man = Buffer.from(JSON.stringify(manifest));
  index.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: put(man), size: man.length, annotations: { 'org.opencontainers.image.ref.name': toTag } } as never);
  fs.writeFileSync(path.join(layoutDir, 'index.json'), JSON.stringify(index));
  return `oci:${layoutDir}:${toTag}`;
}

test('verify-sealed: a changed file, a changed UKI, an untrusted signer are all caught and explained', () => {
  const dir = path.join(work, 'tamper');
  const b = bootcfs(['container', 'build-sealed', img.ref, '--output', `oci:${dir}:sealed`, '--key', key, '--cert', cert]);
  assert.equal(b.status, 0, b.stderr);

  const t = 1_700_000_000;
  const changed = addLayer(dir, 'sealed', 'changed', [
    { path: 'usr', type: 'dir', mode: 0o755, mtimeSec: t }, { path: 'usr/bin', type: 'dir', mode: 0o755, mtimeSec: t },
    { path: 'usr/bin/hello', type: 'reg', mode: 0o755, mtimeSec: t, content: Buffer.from('#!/bin/sh\necho this file was changed after sealing, and verify-sealed must say so\n') },
  ]);
  const v = bootcfs(['container', 'verify-sealed', changed, '--cert', cert]);
  assert.equal(v.status, 1, v.stdout);
  assert.match(v.stdout, /DOES NOT MATCH/);
  assert.match(v.stdout, /\/usr\/bin\/hello: changed \(size.*digest/);
  assert.match(v.stdout, /verify-sealed: FAILED/);
  const json = JSON.parse(bootcfs(['container', 'verify-sealed', changed, '--cert', cert, '--json']).stdout) as { differences: Array<{ path: string }> };
  assert.ok(json.differences.some((d) => d.path === '/usr/bin/hello'));

  // an untrusted certificate
  const other = path.join(work, 'other.crt');
  run('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=someone else/', '-keyout', path.join(work, 'other.key'), '-out', other]);
  const u = bootcfs(['container', 'verify-sealed', `oci:${dir}:sealed`, '--cert', other]);
  assert.equal(u.status, 1, u.stdout);
  assert.match(u.stdout, /not signed by a trusted certificate/);
});

test('build-sealed with an external signer and --allow-missing-verity; errors are clear', () => {
  const dest = `oci:${path.join(work, 'ext')}:sealed`;
  const cmd = `openssl pkeyutl -sign -inkey ${key} -pkeyopt digest:sha256`;
  const b = bootcfs(['container', 'build-sealed', img.ref, '--output', dest, '--cert', cert, '--sign-with-command', cmd, '--allow-missing-verity', '--json']);
  assert.equal(b.status, 0, b.stderr);
  const res = JSON.parse(b.stdout) as { digest: string; cmdline: string; ukiPath: string };
  assert.match(res.cmdline, new RegExp(`composefs=\\?${res.digest}`));
  const rootfs = unpack(dest, path.join(work, 'ext-unpacked'));
  const s = run('/usr/bin/sbverify', ['--cert', cert, path.join(rootfs, res.ukiPath)]);
  assert.equal(s.status, 0, s.stderr.toString());
  const v = bootcfs(['container', 'verify-sealed', dest, '--cert', cert]);
  assert.equal(v.status, 0, v.stdout);
  assert.match(v.stdout, /warning: .*fs-verity optional/);

  const failing = bootcfs(['container', 'build-sealed', img.ref, '--output', `oci:${path.join(work, 'fail')}`, '--cert', cert, '--sign-with-command', 'false']);
  assert.equal(failing.status, 1);
  assert.doesNotMatch(failing.stderr, /at .*\.js/);
  assert.ok(!fs.existsSync(path.join(work, 'fail', 'index.json')), 'nothing written when signing fails');

  // no kernel in the image
  const noKernel = path.join(work, 'nokernel');
  fs.mkdirSync(noKernel);
  const plain = writeBootableImage(noKernel, { tag: 'x' });
  // drop the kernel layer: rewrite the manifest with only the first layer
  const idx = JSON.parse(fs.readFileSync(path.join(noKernel, 'index.json'), 'utf8'));
  const blob = (d: string): string => path.join(noKernel, 'blobs/sha256', d.slice(7));
  const man = JSON.parse(fs.readFileSync(blob(idx.manifests[0].digest), 'utf8'));
  const cfg = JSON.parse(fs.readFileSync(blob(man.config.digest), 'utf8'));
  man.layers = man.layers.slice(0, 1);
  cfg.rootfs.diff_ids = cfg.rootfs.diff_ids.slice(0, 1);
  const cfgB = Buffer.from(JSON.stringify(cfg));
  const cd = `sha256:${createHash('sha256').update(cfgB).digest('hex')}`;
  fs.writeFileSync(blob(cd), cfgB);
  man.config = { ...man.config, digest: cd, size: cfgB.length };
  const manB = Buffer.from(JSON.stringify(man));
  const md = `sha256:${createHash('sha256').update(manB).digest('hex')}`;
  fs.writeFileSync(blob(md), manB);
  idx.manifests[0] = { ...idx.manifests[0], digest: md, size: manB.length };
  fs.writeFileSync(path.join(noKernel, 'index.json'), JSON.stringify(idx));
  const nk = bootcfs(['container', 'build-sealed', plain.ref, '--output', `oci:${path.join(work, 'nk-out')}`, '--key', key, '--cert', cert]);
  assert.equal(nk.status, 1);
  assert.match(nk.stderr, /no kernel: no \/usr\/lib\/modules\/<kver>\/vmlinuz/);
});

test('container ukify builds the same UKI from the unpacked rootfs as build-sealed from the image', () => {
  const dest = `oci:${path.join(work, 'uk')}:sealed`;
  const b = bootcfs(['container', 'build-sealed', img.ref, '--output', dest, '--key', key, '--cert', cert, '--json']);
  assert.equal(b.status, 0, b.stderr);
  const res = JSON.parse(b.stdout) as { ukiPath: string };
  const srcRootfs = unpack(img.ref, path.join(work, 'src-unpacked'));
  const out = path.join(work, 'ukify.efi');
  const u = bootcfs(['container', 'ukify', '--rootfs', srcRootfs, '--output', out, '--key', key, '--cert', cert]);
  assert.equal(u.status, 0, u.stderr);
  const sealedRootfs = unpack(dest, path.join(work, 'uk-unpacked'));
  assert.ok(fs.readFileSync(out).equals(fs.readFileSync(path.join(sealedRootfs, res.ukiPath))), 'same UKI bytes from both paths');
});

test('build-sealed from and to a real registry (docker-registry on loopback); skopeo reads the result', async () => {
  const { startRegistry, skopeoCopy } = await import('../helpers/registry.js');
  const reg = await startRegistry();
  try {
    skopeoCopy(img.ref, `docker://${reg.host}/os/base:v1`, ['--dest-tls-verify=false']);
    const b = bootcfs(['container', 'build-sealed', `docker://${reg.host}/os/base:v1`, '--output', `docker://${reg.host}/os/sealed:v1`, '--key', key, '--cert', cert, '--json']);
    assert.equal(b.status, 0, b.stderr + reg.log());
    const res = JSON.parse(b.stdout) as { digest: string; ukiPath: string; manifestDigest: string };
    const v = bootcfs(['container', 'verify-sealed', `docker://${reg.host}/os/sealed:v1`, '--cert', cert]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
    const local = path.join(work, 'from-registry');
    skopeoCopy(`docker://${reg.host}/os/sealed:v1`, `oci:${local}:x`, ['--src-tls-verify=false']);
    const rootfs = unpack(`oci:${local}:x`, path.join(work, 'from-registry-unpacked'));
    const s = run('/usr/bin/sbverify', ['--cert', cert, path.join(rootfs, res.ukiPath)]);
    assert.equal(s.status, 0, s.stderr.toString());
    const again = bootcfs(['container', 'compute-composefs-digest', rootfs]);
    assert.equal(again.stdout.trim(), res.digest);
  } finally {
    await reg.stop();
  }
});

test('build-sealed to an oci-archive: skopeo reads it and verify-sealed passes', () => {
  const archive = path.join(work, 'sealed.tar');
  const b = bootcfs(['container', 'build-sealed', img.ref, '--output', `oci-archive:${archive}:v1`, '--key', key, '--cert', cert, '--json']);
  assert.equal(b.status, 0, b.stderr);
  const res = JSON.parse(b.stdout) as { manifestDigest: string };
  const s = run('/usr/bin/skopeo', ['inspect', '--raw', `oci-archive:${archive}:v1`]);
  assert.equal(s.status, 0, s.stderr.toString());
  assert.equal(`sha256:${createHash('sha256').update(s.stdout).digest('hex')}`, res.manifestDigest);
  const v = bootcfs(['container', 'verify-sealed', `oci-archive:${archive}:v1`, '--cert', cert]);
  assert.equal(v.status, 0, v.stdout + v.stderr);
  assert.ok(!fs.readdirSync(work).some((n) => n.startsWith('.bootcfs-archive-')), 'the staging layout is removed');
});
