/**
 * OCI image sources against real components: layouts written here, pushed with real `skopeo copy` to
 * Debian's docker-registry (plain HTTP, and TLS + htpasswd), read back through our client and compared
 * byte for byte with the blobs we wrote and with what skopeo reports. Archives are made by skopeo too.
 * Faults come from a small Node proxy between our client and the registry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { gzipSync } from 'node:zlib';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cases, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { startRegistry, skopeoCopy, skopeoDigest, skopeoInspectRaw, type RegistryServer } from '../helpers/registry.js';
import { openImageSource, openLayer, type ImageSource } from '../../src/oci/source.js';
import { RegistryError, RegistrySource } from '../../src/oci/registry.js';
import { DigestMismatchError } from '../../src/oci/digest.js';
import { MediaTypes, type OciDescriptor } from '../../src/oci/types.js';

const ZSTD = '/usr/bin/zstd';
const TAR = '/usr/bin/tar';

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

// ----- a minimal OCI layout writer (private: test/helpers/oci-layout.ts was not available yet) -----

interface BuiltImage {
  manifestBytes: Buffer;
  manifestDigest: string;
  configBytes: Buffer;
  layers: Array<{ descriptor: OciDescriptor; blob: Buffer; tar: Buffer }>;
}

function writeBlob(dir: string, bytes: Buffer): string {
  const digest = sha256(bytes);
  mkdirSync(path.join(dir, 'blobs/sha256'), { recursive: true });
  writeFileSync(path.join(dir, 'blobs/sha256', digest.slice(7)), bytes);
  return digest;
}

/** A tar made by GNU tar from a few files whose contents depend on `seed`. */
function makeTar(work: string, seed: string, bigFile: number): Buffer {
  const root = mkdtempSync(path.join(work, 'tree-'));
  mkdirSync(path.join(root, 'etc'));
  writeFileSync(path.join(root, 'etc/hello'), `hello from ${seed}\n`);
  const big = Buffer.alloc(bigFile);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + seed.length * 7 + (i >> 9)) & 0xff;
  writeFileSync(path.join(root, `data-${seed}.bin`), big);
  const r = run(requireTool(TAR), ['--sort=name', '--mtime=@1700000000', '--owner=0', '--group=0', '--numeric-owner', '-C', root, '-cf', '-', '.']);
  assert.equal(r.status, 0, r.stderr.toString());
  rmSync(root, { recursive: true, force: true });
  return r.stdout;
}

/**
 * zstd as two frames with skippable frames between and after them (zstd:chunked puts its metadata in
 * skippable frames after the data). Not in front: skopeo 1.9.3 sniffs the first 4 bytes, would take
 * such a blob for uncompressed and gzip the raw zstd bytes (the unit tests cover a leading one).
 */
function zstdMultiFrame(work: string, tar: Buffer): Buffer {
  const half = Math.floor(tar.length / 2);
  const a = path.join(work, 'a');
  const b = path.join(work, 'b');
  writeFileSync(a, tar.subarray(0, half));
  writeFileSync(b, tar.subarray(half));
  const fa = run(requireTool(ZSTD), ['-q', '-c', a]);
  const fb = run(requireTool(ZSTD), ['-q', '-c', b]);
  assert.equal(fa.status, 0);
  assert.equal(fb.status, 0);
  const skippable = Buffer.alloc(8 + 5);
  skippable.writeUInt32LE(0x184d2a50, 0);
  skippable.writeUInt32LE(5, 4);
  skippable.write('skip!', 8);
  return Buffer.concat([fa.stdout, skippable, fb.stdout, skippable]);
}

function buildImage(dir: string, work: string, seed: string, arch = 'amd64', withZstd = true): BuiltImage {
  const kinds: Array<[string, (t: Buffer) => Buffer]> = [
    [MediaTypes.ociLayerTar, (t) => t],
    [MediaTypes.ociLayerGzip, (t) => gzipSync(t)],
    [MediaTypes.ociLayerZstd, (t) => zstdMultiFrame(work, t)],
  ];
  if (!withZstd) kinds[2] = [MediaTypes.ociLayerGzip, (t) => gzipSync(t, { level: 1 })];
  const layers = kinds.map(([mediaType, compress], i) => {
    const tar = makeTar(work, `${seed}-${i}`, 70_000 + i * 1000);
    const blob = compress(tar);
    const digest = writeBlob(dir, blob);
    return { descriptor: { mediaType, digest, size: blob.length }, blob, tar };
  });
  const config = {
    architecture: arch,
    os: 'linux',
    config: { Env: ['PATH=/usr/bin'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l.tar)) },
    history: [{ created_by: `test ${seed}` }],
  };
  const configBytes = Buffer.from(JSON.stringify(config, null, 1));
  const configDigest = writeBlob(dir, configBytes);
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: configDigest, size: configBytes.length },
    layers: layers.map((l) => l.descriptor),
  };
  // Deliberately not compact JSON: a client that re-serialises would compute another digest.
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 3) + '\n');
  const manifestDigest = writeBlob(dir, manifestBytes);
  return { manifestBytes, manifestDigest, configBytes, layers };
}

interface Layout {
  dir: string;
  single: BuiltImage;
  amd64: BuiltImage;
  arm64: BuiltImage;
  /** no zstd layer: docker images cannot carry one */
  dockerable: BuiltImage;
  indexDigest: string;
}

function buildLayout(work: string): Layout {
  const dir = path.join(work, 'layout');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const single = buildImage(dir, work, 'single');
  const amd64 = buildImage(dir, work, 'multi-amd64', 'amd64');
  const arm64 = buildImage(dir, work, 'multi-arm64', 'arm64');
  const dockerable = buildImage(dir, work, 'gz', 'amd64', false);
  const nested = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociIndex,
      manifests: [
        { mediaType: MediaTypes.ociManifest, digest: arm64.manifestDigest, size: arm64.manifestBytes.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { mediaType: MediaTypes.ociManifest, digest: amd64.manifestDigest, size: amd64.manifestBytes.length, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    }),
  );
  const indexDigest = writeBlob(dir, nested);
  writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        { mediaType: MediaTypes.ociManifest, digest: single.manifestDigest, size: single.manifestBytes.length, annotations: { 'org.opencontainers.image.ref.name': 'v1' } },
        { mediaType: MediaTypes.ociIndex, digest: indexDigest, size: nested.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } },
        { mediaType: MediaTypes.ociManifest, digest: dockerable.manifestDigest, size: dockerable.manifestBytes.length, annotations: { 'org.opencontainers.image.ref.name': 'gz' } },
      ],
    }),
  );
  return { dir, single, amd64, arm64, dockerable, indexDigest };
}

/**
 * Full comparison of a source against the image we wrote. With `exactManifest` the manifest must be
 * ours byte for byte; otherwise (skopeo rewrote it: it gzips uncompressed layers when copying) the
 * manifest must be what skopeo reports (`rawManifest`), blobs we wrote must come back byte-identical,
 * and a blob skopeo made must decompress to our tar (checked against the diff_id while streaming).
 */
async function checkImage(src: ImageSource, want: BuiltImage, opts: { exactManifest: boolean; rawManifest?: Buffer }): Promise<void> {
  const m = await src.getManifest();
  if (opts.exactManifest) {
    assert.equal(m.digest, want.manifestDigest);
    assert.ok(m.bytes.equals(want.manifestBytes), 'manifest bytes as written');
  }
  if (opts.rawManifest !== undefined) assert.ok(m.bytes.equals(opts.rawManifest), 'manifest bytes == skopeo inspect --raw');
  assert.equal(m.digest, sha256(m.bytes));
  const c = await src.getConfig();
  assert.ok(c.bytes.equals(want.configBytes), 'config bytes identical');
  assert.equal(c.digest, sha256(want.configBytes));
  assert.notEqual(c.digest, m.digest);
  assert.deepEqual(c.config.rootfs.diff_ids, want.layers.map((l) => sha256(l.tar)));
  assert.equal(m.manifest.layers.length, want.layers.length);
  let identical = 0;
  for (let i = 0; i < want.layers.length; i++) {
    const d = m.manifest.layers[i]!;
    const blob = await collect(src.openBlob(d));
    assert.equal(sha256(blob), d.digest);
    if (d.digest === want.layers[i]!.descriptor.digest) {
      assert.deepEqual(d, want.layers[i]!.descriptor);
      assert.ok(blob.equals(want.layers[i]!.blob), `layer ${i} blob identical`);
      identical++;
    } else {
      assert.ok(!opts.exactManifest, `layer ${i} digest changed`);
    }
    const tar = await collect(openLayer(src, d, { diffId: c.config.rootfs.diff_ids[i]! }));
    assert.ok(tar.equals(want.layers[i]!.tar), `layer ${i} decompressed tar identical`);
  }
  if (opts.rawManifest !== undefined) assert.ok(identical >= 2, 'the gzip and zstd layers are copied unchanged by skopeo');
}

test('OCI layout, archives and registries read back byte-identical (skopeo as the reference)', { timeout: 180_000 }, async (t) => {
  requireTool(ZSTD);
  const work = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-oci-ref-'));
  let plain: RegistryServer | undefined;
  let secure: RegistryServer | undefined;
  try {
    const layout = buildLayout(work);

    await t.test('oci: layout, tag and nested index', async () => {
      const src = await openImageSource(`oci:${layout.dir}:v1`);
      try {
        await checkImage(src, layout.single, { exactManifest: true });
      } finally {
        await src.close();
      }
      const multi = await openImageSource(`oci:${layout.dir}:multi`);
      try {
        await checkImage(multi, layout.amd64, { exactManifest: true });
        assert.equal((await multi.getManifest()).indexDigest, layout.indexDigest);
      } finally {
        await multi.close();
      }
      const arm = await openImageSource(`oci:${layout.dir}:multi`, { platform: { os: 'linux', architecture: 'arm64' } });
      try {
        assert.equal((await arm.getManifest()).digest, layout.arm64.manifestDigest);
      } finally {
        await arm.close();
      }
      await assert.rejects(openImageSource(`oci:${layout.dir}`).then((s) => s.getManifest()), /holds 3 images/);
      await assert.rejects(openImageSource(`oci:${layout.dir}:nope`).then((s) => s.getManifest()), /no image tagged 'nope'/);
    });

    await t.test('oci-archive and docker-archive made by skopeo', async () => {
      const ociArchive = path.join(work, 'img.oci.tar');
      skopeoCopy(`oci:${layout.dir}:v1`, `oci-archive:${ociArchive}:v1`, ['--dest-oci-accept-uncompressed-layers']);
      const a = await openImageSource(`oci-archive:${ociArchive}:v1`);
      try {
        const raw = skopeoInspectRaw(`oci-archive:${ociArchive}:v1`);
        assert.equal((await a.getManifest()).digest, skopeoDigest(`oci-archive:${ociArchive}:v1`));
        // Nothing to convert: skopeo keeps our manifest byte for byte, so the digests are ours too.
        await checkImage(a, layout.single, { exactManifest: true, rawManifest: raw });
      } finally {
        await a.close();
      }
      const dockerArchive = path.join(work, 'img.docker.tar');
      // docker-archive stores layers uncompressed; skopeo decompresses the gzip ones.
      skopeoCopy(`oci:${layout.dir}:gz`, `docker-archive:${dockerArchive}:example.com/test/img:v1`);
      for (const ref of [`docker-archive:${dockerArchive}`, `docker-archive:${dockerArchive}:example.com/test/img:v1`, `docker-archive:${dockerArchive}:@0`]) {
        const d = await openImageSource(ref);
        try {
          await checkImage(d, layout.dockerable, { exactManifest: false });
          const { manifest } = await d.getManifest();
          const { config } = await d.getConfig();
          manifest.layers.forEach((l, i) => {
            // docker-archive layers are uncompressed tars: blob digest == diff_id.
            if (l.mediaType === MediaTypes.ociLayerTar) assert.equal(l.digest, config.rootfs.diff_ids[i]);
          });
        } finally {
          await d.close();
        }
      }
    });

    plain = await startRegistry();
    const plainHost = plain.host;
    await t.test('plain HTTP registry (loopback)', async () => {
      skopeoCopy(`oci:${layout.dir}:v1`, `docker://${plainHost}/test/nested/img:v1`, ['--dest-tls-verify=false']);
      const raw = skopeoInspectRaw(`docker://${plainHost}/test/nested/img:v1`, ['--tls-verify=false']);
      const skDigest = skopeoDigest(`docker://${plainHost}/test/nested/img:v1`, ['--tls-verify=false']);
      const src = await openImageSource(`docker://${plainHost}/test/nested/img:v1`);
      try {
        const m = await src.getManifest();
        assert.equal(m.digest, skDigest);
        assert.equal(m.digest, sha256(raw));
        await checkImage(src, layout.single, { exactManifest: false, rawManifest: raw });
        assert.equal((src as RegistrySource).client.scheme, 'http:');
      } finally {
        await src.close();
      }
      const byDigest = await openImageSource(`docker://${plainHost}/test/nested/img@${skDigest}`);
      try {
        assert.equal((await byDigest.getManifest()).digest, skDigest);
      } finally {
        await byDigest.close();
      }
      // multi-arch: push the whole index, pick linux/amd64
      skopeoCopy(`oci:${layout.dir}:multi`, `docker://${plainHost}/test/multi:1`, ['--dest-tls-verify=false', '--all']);
      const listDigest = skopeoDigest(`docker://${plainHost}/test/multi:1`, ['--tls-verify=false']);
      const multi = await openImageSource(`docker://${plainHost}/test/multi:1`);
      try {
        const m = await multi.getManifest();
        assert.equal(m.indexDigest, listDigest);
        const amdRaw = skopeoInspectRaw(`docker://${plainHost}/test/multi@${m.digest}`, ['--tls-verify=false']);
        await checkImage(multi, layout.amd64, { exactManifest: false, rawManifest: amdRaw });
      } finally {
        await multi.close();
      }
      // Docker schema 2: skopeo converts manifest and config; we check identity against skopeo and
      // every layer's content against the diff_ids.
      skopeoCopy(`oci:${layout.dir}:gz`, `docker://${plainHost}/test/docker:v2s2`, ['--dest-tls-verify=false', '--format', 'v2s2']);
      const dockerRaw = skopeoInspectRaw(`docker://${plainHost}/test/docker:v2s2`, ['--tls-verify=false']);
      const docker = await openImageSource(`docker://${plainHost}/test/docker:v2s2`);
      try {
        const m = await docker.getManifest();
        assert.equal(m.mediaType, MediaTypes.dockerManifest);
        assert.ok(m.bytes.equals(dockerRaw));
        assert.equal(m.digest, skopeoDigest(`docker://${plainHost}/test/docker:v2s2`, ['--tls-verify=false']));
        const c = await docker.getConfig();
        assert.equal(c.digest, sha256(c.bytes));
        assert.equal(m.manifest.config.mediaType, MediaTypes.dockerConfig);
        for (let i = 0; i < m.manifest.layers.length; i++) {
          assert.equal(m.manifest.layers[i]!.mediaType, MediaTypes.dockerLayerGzip);
          const tar = await collect(openLayer(docker, m.manifest.layers[i]!, { diffId: c.config.rootfs.diff_ids[i]! }));
          assert.ok(tar.equals(layout.dockerable.layers[i]!.tar));
        }
      } finally {
        await docker.close();
      }
      const missing = await openImageSource(`docker://${plainHost}/test/nested/img:absent`);
      try {
        await assert.rejects(missing.getManifest(), (e: unknown) => e instanceof RegistryError && e.status === 404);
      } finally {
        await missing.close();
      }
    });

    secure = await startRegistry({ tls: true, auth: { username: 'alice', password: 's3cret-pw' } });
    const sec = secure;
    await t.test('TLS + htpasswd registry, credentials from REGISTRY_AUTH_FILE', async () => {
      skopeoCopy(`oci:${layout.dir}:v1`, `docker://${sec.host}/secure/img:v1`, ['--dest-creds', 'alice:s3cret-pw', '--dest-cert-dir', sec.certDir!]);
      const inspectArgs = ['--creds', 'alice:s3cret-pw', '--cert-dir', sec.certDir!];
      const skDigest = skopeoDigest(`docker://${sec.host}/secure/img:v1`, inspectArgs);
      const authFile = path.join(work, 'auth.json');
      writeFileSync(authFile, JSON.stringify({ auths: { [sec.host]: { auth: Buffer.from('alice:s3cret-pw').toString('base64') } } }));
      const saved = process.env.REGISTRY_AUTH_FILE;
      process.env.REGISTRY_AUTH_FILE = authFile;
      try {
        const src = await openImageSource(`docker://${sec.host}/secure/img:v1`, { registry: { ca: sec.ca! } });
        try {
          assert.equal((await src.getManifest()).digest, skDigest);
          const raw = skopeoInspectRaw(`docker://${sec.host}/secure/img:v1`, inspectArgs);
          await checkImage(src, layout.single, { exactManifest: false, rawManifest: raw });
          assert.equal((src as RegistrySource).client.scheme, 'https:');
        } finally {
          await src.close();
        }
        // Without the CA the certificate fails and we must not fall back to plain HTTP.
        const noCa = await openImageSource(`docker://${sec.host}/secure/img:v1`);
        try {
          await assert.rejects(noCa.getManifest(), /certificate|self.signed|unable to verify/i);
        } finally {
          await noCa.close();
        }
      } finally {
        if (saved === undefined) delete process.env.REGISTRY_AUTH_FILE;
        else process.env.REGISTRY_AUTH_FILE = saved;
      }
      const anon = await openImageSource(`docker://${sec.host}/secure/img:v1`, {
        registry: { ca: sec.ca!, authLookup: { env: {}, home: path.join(work, 'nohome') } },
      });
      try {
        await assert.rejects(anon.getManifest(), /requires credentials/);
      } finally {
        await anon.close();
      }
      const wrong = await openImageSource(`docker://${sec.host}/secure/img:v1`, {
        registry: { ca: sec.ca!, credentials: { username: 'alice', password: 'wrong' } },
      });
      try {
        await assert.rejects(wrong.getManifest(), (e: unknown) => e instanceof RegistryError && e.status === 401);
      } finally {
        await wrong.close();
      }
    });

    await t.test('bearer tokens, redirects and faults through a proxy', async () => {
      const target = layout.single.layers[1]!.descriptor; // the gzip layer
      const proxy = await startProxy(plainHost, target.digest);
      try {
        const open = (retry = {}): Promise<ImageSource> =>
          openImageSource(`docker://127.0.0.1:${proxy.port}/test/nested/img:v1`, {
            registry: { credentials: { username: 'bob', password: 'pw' }, retry: { baseDelayMs: 20, ...retry } },
          });
        const readTarget = async (src: ImageSource): Promise<Buffer> => {
          const { manifest } = await src.getManifest();
          return collect(src.openBlob(manifest.layers[1]!));
        };

        // Bearer flow + redirect to another origin (Authorization must be dropped there).
        proxy.mode = 'redirect';
        let src = await open();
        try {
          assert.ok((await readTarget(src)).equals(layout.single.layers[1]!.blob));
          assert.ok(proxy.tokenRequests >= 1, 'token endpoint used');
          assert.equal(proxy.lastTokenQuery?.get('service'), 'bootcfs-proxy');
          assert.equal(proxy.lastTokenQuery?.get('scope'), 'repository:test/nested/img:pull');
          assert.equal(proxy.lastTokenAuth, `Basic ${Buffer.from('bob:pw').toString('base64')}`);
          assert.equal(proxy.redirectedWithAuth, false, 'Authorization dropped on redirect to another host');
          assert.ok(proxy.redirectsServed >= 1);
          for (const t of [MediaTypes.ociManifest, MediaTypes.ociIndex, MediaTypes.dockerManifest, MediaTypes.dockerManifestList]) {
            assert.ok(proxy.lastManifestAccept?.includes(t), `Accept lists ${t}`);
          }
        } finally {
          await src.close();
        }

        // anonymous bearer token (no credentials anywhere), with a ping that needs no auth: the
        // challenge arrives only with the first repository request
        proxy.mode = 'pass';
        proxy.allowAnonymous = true;
        proxy.openPing = true;
        const tokensBefore = proxy.tokenRequests;
        src = await openImageSource(`docker://127.0.0.1:${proxy.port}/test/nested/img:v1`, {
          registry: { authLookup: { env: {}, home: path.join(work, 'nohome') } },
        });
        try {
          assert.ok((await readTarget(src)).equals(layout.single.layers[1]!.blob));
          assert.equal(proxy.lastTokenAuth, undefined);
          assert.equal(proxy.tokenRequests, tokensBefore + 1, 'one token for the whole image');
        } finally {
          await src.close();
          proxy.allowAnonymous = false;
          proxy.openPing = false;
        }

        // (a) connection dropped mid-blob once, at seeded positions: resumed, verified, identical.
        const dropSeed = 0xd20;
        const dropRng = new Rng(dropSeed);
        const drops = cases(3, 30);
        for (let i = 0; i < drops; i++) {
          proxy.mode = 'drop-once';
          proxy.dropAt = 0.05 + 0.9 * dropRng.float();
          src = await open();
          try {
            assert.ok((await readTarget(src)).equals(layout.single.layers[1]!.blob), `drop seed ${dropSeed} case ${i}`);
            assert.equal(proxy.faultsInjected, 1);
            assert.ok(proxy.rangeRequests >= 1, 'resumed with a Range request');
          } finally {
            await src.close();
          }
        }

        // (b) 500 then 429 with Retry-After: 1 → retried, honoured, succeeds.
        proxy.mode = '500-then-429';
        src = await open();
        try {
          const t0 = Date.now();
          assert.ok((await readTarget(src)).equals(layout.single.layers[1]!.blob));
          assert.ok(Date.now() - t0 >= 900, 'Retry-After honoured');
          assert.equal(proxy.faultsInjected, 2);
        } finally {
          await src.close();
        }

        // (c) a flipped byte: digest error, and nothing after the mismatch is delivered.
        proxy.mode = 'flip';
        src = await open();
        try {
          await assert.rejects(readTarget(src), (e: unknown) => e instanceof DigestMismatchError && e.expected === target.digest);
          const { manifest, } = await src.getManifest();
          await assert.rejects(collect(openLayer(src, manifest.layers[1]!)), DigestMismatchError);
        } finally {
          await src.close();
        }

        // (d) always 500: gives up within the bound with a clear error.
        proxy.mode = 'always-500';
        src = await open({ maxAttempts: 4, maxTotalMs: 5000 });
        try {
          const t0 = Date.now();
          await assert.rejects(readTarget(src), (e: unknown) => e instanceof RegistryError && /giving up after 4 attempts/.test(e.message) && /HTTP 500/.test(e.message));
          assert.ok(Date.now() - t0 < 5000);
        } finally {
          await src.close();
        }
      } finally {
        await proxy.stop();
      }
    });
  } finally {
    await plain?.stop();
    await secure?.stop();
    rmSync(work, { recursive: true, force: true });
  }
});

// ----- fault-injecting proxy ---------------------------------------------------------------------

type ProxyMode = 'pass' | 'redirect' | 'drop-once' | '500-then-429' | 'flip' | 'always-500';

interface Proxy {
  port: number;
  mode: ProxyMode;
  faultsInjected: number;
  rangeRequests: number;
  tokenRequests: number;
  lastTokenQuery: URLSearchParams | undefined;
  lastTokenAuth: string | undefined;
  redirectsServed: number;
  redirectedWithAuth: boolean;
  lastManifestAccept: string | undefined;
  allowAnonymous: boolean;
  openPing: boolean;
  /** where in the blob (fraction) drop-once cuts the connection */
  dropAt: number;
  stop(): Promise<void>;
}

/**
 * Sits in front of a plain registry: demands a Bearer token (issued by its own /token endpoint, which
 * requires Basic credentials), forwards authorised requests, and injects faults on one blob.
 */
async function startProxy(upstream: string, blobDigest: string): Promise<Proxy> {
  const TOKEN = 'tok-' + Math.random().toString(36).slice(2);
  let mode: ProxyMode = 'pass';
  const state: Proxy = {
    port: 0,
    get mode() {
      return mode;
    },
    set mode(m: ProxyMode) {
      mode = m;
      state.faultsInjected = 0;
      state.rangeRequests = 0;
    },
    faultsInjected: 0,
    rangeRequests: 0,
    tokenRequests: 0,
    lastTokenQuery: undefined,
    lastTokenAuth: undefined,
    redirectsServed: 0,
    redirectedWithAuth: false,
    lastManifestAccept: undefined,
    allowAnonymous: false,
    openPing: false,
    dropAt: 0.5,
    stop: async () => {},
  };
  const forward = (req: http.IncomingMessage, res: http.ServerResponse, pathname: string, transform?: (b: Buffer) => Buffer, dropHalf = false): void => {
    const headers: http.OutgoingHttpHeaders = { ...req.headers, host: upstream };
    delete headers.authorization;
    const up = http.request(`http://${upstream}${pathname}`, { method: req.method, headers }, (ur) => {
      if (!transform && !dropHalf) {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
        return;
      }
      const parts: Buffer[] = [];
      ur.on('data', (d: Buffer) => parts.push(d));
      ur.on('end', () => {
        let body: Buffer = Buffer.concat(parts);
        if (transform) body = transform(body);
        res.writeHead(ur.statusCode ?? 502, { ...ur.headers, 'content-length': String(body.length) });
        if (dropHalf) {
          res.write(body.subarray(0, Math.floor(body.length * state.dropAt)), () => res.socket?.destroy());
        } else {
          res.end(body);
        }
      });
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  let storagePort = 0;
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/token') {
      state.tokenRequests++;
      state.lastTokenQuery = url.searchParams;
      state.lastTokenAuth = req.headers.authorization;
      const anonymousOk = state.allowAnonymous && req.headers.authorization === undefined;
      if (!anonymousOk && req.headers.authorization !== `Basic ${Buffer.from('bob:pw').toString('base64')}`) {
        res.writeHead(401).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: TOKEN, expires_in: 300 }));
      return;
    }
    if (url.pathname.startsWith('/redirected/')) {
      // Served by the "blob storage" listener, another origin than the registry's: no credentials allowed.
      if (req.headers.authorization !== undefined) state.redirectedWithAuth = true;
      forward(req, res, url.pathname.slice('/redirected'.length));
      return;
    }
    if (url.pathname === '/v2/' && state.openPing) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${state.port}/token",service="bootcfs-proxy"`, 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}');
      return;
    }
    if (url.pathname.includes('/manifests/')) state.lastManifestAccept = req.headers.accept;
    const isTarget = url.pathname.endsWith(`/blobs/${blobDigest}`);
    if (isTarget && req.headers.range !== undefined) state.rangeRequests++;
    if (isTarget) {
      switch (mode) {
        case 'redirect':
          state.redirectsServed++;
          res.writeHead(307, { location: `http://127.0.0.1:${storagePort}/redirected${url.pathname}` }).end();
          return;
        case 'drop-once':
          if (state.faultsInjected === 0) {
            state.faultsInjected++;
            forward(req, res, url.pathname, undefined, true);
            return;
          }
          break;
        case '500-then-429':
          if (state.faultsInjected === 0) {
            state.faultsInjected++;
            res.writeHead(500).end('boom');
            return;
          }
          if (state.faultsInjected === 1) {
            state.faultsInjected++;
            res.writeHead(429, { 'retry-after': '1' }).end('slow down');
            return;
          }
          break;
        case 'flip':
          state.faultsInjected++;
          forward(req, res, url.pathname, (b) => {
            const c = Buffer.from(b);
            c[Math.floor(c.length / 3)]! ^= 0x01;
            return c;
          });
          return;
        case 'always-500':
          state.faultsInjected++;
          res.writeHead(500).end('always broken');
          return;
        case 'pass':
          break;
      }
    }
    forward(req, res, url.pathname + url.search);
  };
  const server = http.createServer(handler);
  const storage = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => storage.listen(0, '127.0.0.1', r));
  state.port = (server.address() as { port: number }).port;
  storagePort = (storage.address() as { port: number }).port;
  const close = (srv: http.Server): Promise<void> =>
    new Promise<void>((r) => {
      srv.closeAllConnections();
      srv.close(() => r());
    });
  state.stop = async () => {
    await close(server);
    await close(storage);
  };
  return state;
}
