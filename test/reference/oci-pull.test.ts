/**
 * OCI pull into a composefs repository, against real tools: the composefs-rs pinned image id, umoci
 * unpack of the same layouts (mounted image == unpacked rootfs; computeImageId == computeDirectoryId),
 * skopeo + docker-registry for a registry pull, and a tampered blob.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cases, isRoot, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { buildTar, writeOciLayout, type LayerCompressionKind, type TarWriteEntry } from '../helpers/oci-layout.js';
import { startRegistry, skopeoCopy } from '../helpers/registry.js';
import { compareViews, mountComposefs, snapshotTree, type EntryView } from '../helpers/mount.js';
import { Repository } from '../../src/repository/index.js';
import { pullImage } from '../../src/oci/pull.js';
import { computeImageId, layerStreamName } from '../../src/oci/image.js';
import { computeDirectoryId } from '../../src/oci/directory-image.js';
import { keepXattr } from '../../src/oci/xattr-rule.js';
import { BootcfsError } from '../../src/errors.js';
import type { HashAlgorithm } from '../../src/fsverity/index.js';

const UMOCI = '/usr/bin/umoci';
const PINNED_SHA512 =
  'f26c6eb439749b82f0d1520e83455bb21766572fb2b5cfe009dd7749a61caf74e0c42c56f1a2cbd9d359e7d172c8e2c65641666c9a18cc484a8b0f6e4e6d47ab';

const tmp = (): string => mkdtempSync(path.join(os.tmpdir(), 'bootcfs-pull-'));

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

test('xattr rule bootcfs-xattrs-1', () => {
  for (const k of ['user.a', 'user.', 'security.capability', 'security.ima', 'system.posix_acl_access', 'system.posix_acl_default']) assert.equal(keepXattr(k), true, k);
  for (const k of ['security.selinux', 'trusted.overlay.x', 'trusted.a', 'system.nfs4_acl', 'foo', 'users.x']) assert.equal(keepXattr(k), false, k);
});

test('composefs-rs pinned vector: create_oci_layout pulled into a sha512 v2 repository', async () => {
  const dir = tmp();
  try {
    const tar = buildTar([
      { path: 'usr/', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeSec: 1234567890 },
      // (at the root, not under usr/: composefs-rs integration-tests cli.rs create_oci_layout)
      { path: 'hello.txt', type: 'reg', mode: 0o644, uid: 0, gid: 0, mtimeSec: 1234567890, content: Buffer.from('hello from test layer\n') },
    ], { format: 'gnu' });
    const layout = writeOciLayout(path.join(dir, 'layout'), { layers: [{ tar }], tag: 'v1' });
    const repo = await Repository.init(path.join(dir, 'repo'), { algorithm: 'sha512', insecure: true, erofsFormat: 2 });
    try {
      const r = await pullImage(repo, `oci:${layout.dir}:v1`);
      assert.equal(r.imageId.toString('hex'), PINNED_SHA512);
      assert.equal(r.configDigest, layout.configDigest);
      assert.equal(r.manifestDigest, layout.manifestDigest);
      assert.deepEqual(await repo.listImages(), [PINNED_SHA512]);
      assert.equal((await computeImageId(repo, `oci:${layout.dir}:v1`)).toString('hex'), PINNED_SHA512);
      assert.equal((await computeImageId(repo, `@${layout.configDigest}`)).toString('hex'), PINNED_SHA512);
      const tags = await repo.streamRefs();
      assert.equal(tags.get(`oci/oci:${layout.dir.replace(/\//g, '%2F')}:v1`), `oci-manifest-${layout.manifestDigest}`);
      const cfg = await repo.openStream(`oci-config-${layout.configDigest}`);
      assert.deepEqual([...cfg.namedRefs.keys()].sort(), ['bootcfs.xattr-rule', 'composefs.image', layout.diffIds[0]!].sort());
      assert.equal(cfg.namedRefs.get('composefs.image')!.toString('hex'), PINNED_SHA512);
    } finally {
      await repo.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A random multi-layer image exercising whiteouts, opaque dirs, cross-layer hardlinks and xattrs. */
function makeLayers(rng: Rng, compressions: LayerCompressionKind[]): Array<{ tar: Buffer; compression: LayerCompressionKind }> {
  const t0 = 1_600_000_000 + rng.int(0, 1_000_000);
  const dir = (p: string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path: p, type: 'dir', mode: 0o755, mtimeSec: t0, ...extra });
  const file = (p: string, size: number, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({
    path: p, type: 'reg', mode: 0o644, mtimeSec: t0 + rng.int(0, 1000), content: Buffer.from(rng.bytes(size)), ...extra,
  });
  const bigSize = () => [65, 4096, 4097, 70_000, rng.int(65, 300_000)][rng.int(0, 4)]!;
  const l1: TarWriteEntry[] = [
    dir('./', { mode: 0o700 }),
    dir('usr/', { xattrs: { 'user.root-of-usr': Buffer.from([0, 1, 2]) } }),
    dir('usr/bin/'),
    file('usr/bin/tool', bigSize(), { mode: 0o755, xattrs: { 'security.capability': Buffer.from('0100000200200000000000000000000000000000', 'hex') } }),
    { path: 'usr/bin/tool-link', type: 'hardlink', linkTarget: 'usr/bin/tool', mtimeSec: t0 },
    file('usr/bin/small', rng.int(1, 64), { uid: 1000, gid: 100 }),
    file('usr/bin/empty', 0),
    { path: 'usr/sbin', type: 'symlink', mode: 0o777, linkTarget: 'bin', mtimeSec: t0 },
    dir('etc/'),
    file('etc/conf', rng.int(0, 200), { xattrs: { 'user.bin': Buffer.from([0xff, 0, 0x0a, 0x80]), 'trusted.hidden': Buffer.from('x'), 'security.selinux': Buffer.from('system_u:object_r:etc_t:s0\0') } }),
    dir('opt/'),
    dir('opt/old/'),
    file('opt/old/a', bigSize()),
    file('opt/old/b', 10),
    dir('var/'),
    file('var/gone', 100),
    file('var/stays', 100),
    dir('run/'),
    file('run/pidfile', 5),
    { path: 'var/fifo', type: 'fifo', mode: 0o600, mtimeSec: t0 },
  ];
  for (let i = 0; i < rng.int(0, 6); i++) l1.push(file(`usr/bin/gen${i}`, rng.int(0, 2) === 0 ? rng.int(0, 64) : bigSize()));
  const t1 = t0 + 5000;
  const l2: TarWriteEntry[] = [
    dir('usr/', { mtimeSec: t1, xattrs: { 'user.root-of-usr': Buffer.from('second') } }),
    dir('usr/lib/', { mtimeSec: t1 }),
    { path: 'usr/lib/tool-hl', type: 'hardlink', linkTarget: 'usr/bin/tool', mtimeSec: t1 },
    dir('var/', { mtimeSec: t1 }),
    { path: 'var/.wh.gone', type: 'reg', mode: 0o644, mtimeSec: t1, content: Buffer.alloc(0) },
    dir('opt/', { mtimeSec: t1 }),
    dir('opt/old/', { mtimeSec: t1 }),
    { path: 'opt/old/.wh..wh..opq', type: 'reg', mode: 0o644, mtimeSec: t1, content: Buffer.alloc(0) },
    file('opt/old/new', bigSize(), { mtimeSec: t1 }),
    dir('etc/', { mtimeSec: t1 }),
    file('etc/conf', rng.int(65, 5000), { mtimeSec: t1, xattrs: { 'user.v': Buffer.from('2') } }),
  ];
  const l3: TarWriteEntry[] = [dir('etc/', { mtimeSec: t1 + 1 }), file('etc/third', rng.int(0, 100), { mtimeSec: t1 + 1 })];
  return [l1, l2, l3].map((entries, i) => ({ tar: buildTar(entries, { format: 'pax' }), compression: compressions[i % compressions.length]! }));
}

/** The umoci rootfs as the composefs image must show it: xattr rule applied, OCI root transform, /run emptied. */
function expectedView(src: Map<string, EntryView>): Map<string, EntryView> {
  const out = new Map<string, EntryView>();
  for (const [p, e] of src) {
    if (p.startsWith('/run/')) continue;
    const xattrs = Object.fromEntries(Object.entries(e.xattrs).filter(([k]) => keepXattr(Buffer.from(k, 'utf8').toString('latin1'))));
    out.set(p, { ...e, xattrs });
  }
  const usr = out.get('/usr')!;
  const root = out.get('/')!;
  out.set('/', { ...root, mode: (root.mode & ~0o7777) | (usr.mode & 0o7777), uid: usr.uid, gid: usr.gid, mtimeNs: usr.mtimeNs, xattrs: { ...usr.xattrs } });
  const runDir = out.get('/run');
  if (runDir) out.set('/run', { ...runDir, mtimeNs: usr.mtimeNs });
  return out;
}

test('multi-layer layouts: streams reproduce the tars, re-pull is a no-op, image == umoci unpack', async (t) => {
  requireTool(UMOCI);
  const n = cases(2, 8);
  const seed = Date.now() % 100000;
  for (let c = 0; c < n; c++) {
    const caseSeed = seed + c;
    const dir = tmp();
    try {
      const rng = new Rng(caseSeed);
      // umoci cannot read zstd layers: the umoci comparison uses a gzip/none copy of the same layers;
      // the zstd copy must give the same image.
      const layers = makeLayers(rng, ['gzip', 'none', 'gzip']);
      const layout = writeOciLayout(path.join(dir, 'layout'), { layers, tag: 'gz' });
      const zlayout = writeOciLayout(path.join(dir, 'layout'), { layers: layers.map((l) => ({ tar: l.tar, compression: 'zstd' as const })), tag: 'zst' });
      const ids = new Map<string, string>();
      for (const [alg, format] of [['sha512', 1], ['sha256', 2], ['sha256', 1], ['sha512', 2]] as Array<[HashAlgorithm, 1 | 2]>) {
        const repo = await Repository.init(path.join(dir, `repo-${alg}-${format}`), { algorithm: alg, insecure: true, erofsFormat: format });
        try {
          const events: string[] = [];
          const r = await pullImage(repo, `oci:${layout.dir}:gz`, { tag: 'gz', onProgress: (e) => events.push(e.kind) });
          assert.equal(r.layersImported, 3, `seed ${caseSeed}`);
          for (let i = 0; i < layers.length; i++) {
            const back = await collect(repo.catStream(layerStreamName(layout.diffIds[i]!)));
            assert.ok(back.equals(layers[i]!.tar), `seed ${caseSeed}: layer ${i} stream does not reproduce the tar`);
          }
          const again = await pullImage(repo, `oci:${layout.dir}:gz`, { tag: 'gz' });
          assert.equal(again.layersImported, 0);
          assert.equal(again.layersSkipped, 3);
          assert.ok(again.imageId.equals(r.imageId));
          const z = await pullImage(repo, `oci:${zlayout.dir}:zst`, { tag: 'zst' });
          assert.equal(z.layersImported, 0, 'same diff_ids: zstd layers reuse the streams');
          assert.ok(z.imageId.equals(r.imageId));
          assert.ok((await computeImageId(repo, 'gz')).equals(r.imageId));
          // the other algorithm / format, computed from this repository, must match the repository that uses it
          const other = alg === 'sha256' ? 'sha512' : 'sha256';
          ids.set(`x-${other}-${3 - format}`, (await computeImageId(repo, 'gz', { algorithm: other, format: (3 - format) as 1 | 2 })).toString('hex'));
          ids.set(`${alg}-${format}`, r.imageId.toString('hex'));
          const fsck = await repo.fsck();
          assert.equal(fsck.ok, true, `seed ${caseSeed}: ${JSON.stringify(fsck)}`);
          if (alg === 'sha512' && format === 1 && isRoot) {
            // mount the image over objects/ and compare with umoci's unpack
            await t.test(`mount seed ${caseSeed}`, async () => {
              const bundle = path.join(dir, 'bundle');
              const u = run(UMOCI, ['unpack', '--image', `${layout.dir}:gz`, bundle]);
              assert.equal(u.status, 0, u.stderr.toString());
              const rootfs = path.join(bundle, 'rootfs');
              const work = path.join(dir, 'mnt');
              const m = mountComposefs(repo.imagePath(r.imageId.toString('hex')), path.join(repo.path, 'objects'), work);
              try {
                const diffs = compareViews(expectedView(await snapshotTree(rootfs)), await snapshotTree(m.root));
                assert.deepEqual(diffs, [], `seed ${caseSeed}`);
              } finally {
                m.unmount();
              }
              for (const [a, f] of [['sha512', 1], ['sha256', 2], ['sha256', 1], ['sha512', 2]] as Array<[HashAlgorithm, 1 | 2]>) {
                ids.set(`dir-${a}-${f}`, (await computeDirectoryId(rootfs, { algorithm: a, format: f })).toString('hex'));
              }
            });
          }
        } finally {
          await repo.close();
        }
      }
      for (const k of ['sha512-1', 'sha256-2', 'sha256-1', 'sha512-2']) assert.equal(ids.get(`x-${k}`), ids.get(k), `seed ${caseSeed}: computeImageId cross ${k}`);
      if (isRoot) {
        for (const k of ['sha512-1', 'sha256-2', 'sha256-1', 'sha512-2']) assert.equal(ids.get(`dir-${k}`), ids.get(k), `seed ${caseSeed}: computeDirectoryId ${k}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('pull from a registry (skopeo copy) gives the same image id as from the layout', async () => {
  const dir = tmp();
  const server = await startRegistry();
  try {
    const layers = makeLayers(new Rng(4242), ['gzip', 'zstd', 'none']);
    const layout = writeOciLayout(path.join(dir, 'layout'), { layers, tag: 'v1' });
    skopeoCopy(`oci:${layout.dir}:v1`, `docker://${server.host}/test/pull:v1`, ['--dest-tls-verify=false']);
    const a = await Repository.init(path.join(dir, 'a'), { insecure: true });
    const b = await Repository.init(path.join(dir, 'b'), { insecure: true });
    try {
      const fromLayout = await pullImage(a, `oci:${layout.dir}:v1`);
      const fromRegistry = await pullImage(b, `docker://${server.host}/test/pull:v1`, { tag: 'reg/v1' });
      assert.equal(fromRegistry.imageId.toString('hex'), fromLayout.imageId.toString('hex'));
      assert.equal((await b.streamRefs()).get('oci/reg%2Fv1'), fromRegistry.manifestStream);
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a tampered layer blob: typed error, nothing published, fsck clean', async () => {
  const dir = tmp();
  try {
    const layers = makeLayers(new Rng(777), ['gzip', 'none', 'none']);
    const layout = writeOciLayout(path.join(dir, 'layout'), { layers, tag: 'v1' });
    // flip one byte in the middle of the uncompressed second layer (same size, wrong digest)
    const blobs = path.join(layout.dir, 'blobs', 'sha256');
    const victim = path.join(blobs, layout.layerDigests[1]!.slice(7));
    const bytes = readFileSync(victim);
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    writeFileSync(victim, bytes);
    assert.ok(readdirSync(blobs).length >= 4);
    const repo = await Repository.init(path.join(dir, 'repo'), { insecure: true });
    try {
      await assert.rejects(pullImage(repo, `oci:${layout.dir}:v1`), (e: unknown) => e instanceof BootcfsError && /digest|mismatch/i.test((e as Error).message));
      assert.equal(await repo.hasStream(layerStreamName(layout.diffIds[1]!)), undefined);
      assert.deepEqual([...(await repo.streamRefs()).keys()], []);
      assert.deepEqual(await repo.listImages(), []);
      const fsck = await repo.fsck();
      assert.equal(fsck.ok, true, JSON.stringify(fsck));
    } finally {
      await repo.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
