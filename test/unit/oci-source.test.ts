/**
 * Unit tests of the OCI source layer: references, digests and streaming verification, media types,
 * decompression (zstd multi-frame/skippable made with the zstd CLI), platform selection, auth files,
 * hostile JSON and archives, header parsing of the registry client.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cases, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { BootcfsError, FormatError } from '../../src/errors.js';
import { parseImageReference, formatImageReference, ImageReferenceError } from '../../src/oci/reference.js';
import { DigestMismatchError, InvalidDigestError, SizeMismatchError, parseDigest, verifyBuffer, verifyStream, DigestVerifier } from '../../src/oci/digest.js';
import { MediaTypes, OciFormatError, layerCompression, parseImageConfig, parseManifestDocument, selectPlatformManifest, type OciIndex } from '../../src/oci/types.js';
import { DecompressionError, decompressLayer, decompressStream } from '../../src/oci/decompress.js';
import { AuthFileError, authFilePaths, lookupCredentials, matchAuthEntry, parseAuthFile } from '../../src/oci/auth.js';
import { parseRetryAfter, parseWwwAuthenticate, RetryBudget, RegistryError } from '../../src/oci/registry.js';
import { openImageSource, openLayer } from '../../src/oci/source.js';
import { TarArchive } from '../../src/oci/archive.js';

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const D1 = `sha256:${'a'.repeat(64)}`;
const D2 = `sha256:${'b'.repeat(64)}`;

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}
async function* chunked(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

test('image references: all four transports', () => {
  const ok: Array<[string, object, string?]> = [
    ['docker://busybox', { transport: 'docker', registry: 'docker.io', repository: 'library/busybox', tag: 'latest' }, 'docker://docker.io/library/busybox:latest'],
    ['docker://quay.io/fedora/fedora-bootc:42', { transport: 'docker', registry: 'quay.io', repository: 'fedora/fedora-bootc', tag: '42' }],
    ['docker://localhost/img', { transport: 'docker', registry: 'localhost', repository: 'img', tag: 'latest' }, 'docker://localhost/img:latest'],
    ['docker://localhost:5000/a/b/c:v1.2-x_y', { transport: 'docker', registry: 'localhost:5000', repository: 'a/b/c', tag: 'v1.2-x_y' }],
    ['docker://127.0.0.1:39999/test/nested/img:v1', { transport: 'docker', registry: '127.0.0.1:39999', repository: 'test/nested/img', tag: 'v1' }],
    ['docker://[::1]:5000/x', { transport: 'docker', registry: '[::1]:5000', repository: 'x', tag: 'latest' }, 'docker://[::1]:5000/x:latest'],
    [`docker://ghcr.io/o/r@${D1}`, { transport: 'docker', registry: 'ghcr.io', repository: 'o/r', digest: D1 }],
    [`docker://ghcr.io/o/r:t@${D1}`, { transport: 'docker', registry: 'ghcr.io', repository: 'o/r', tag: 't', digest: D1 }],
    ['docker://index.docker.io/user/app', { transport: 'docker', registry: 'docker.io', repository: 'user/app', tag: 'latest' }, 'docker://docker.io/user/app:latest'],
    ['docker://user/app:1', { transport: 'docker', registry: 'docker.io', repository: 'user/app', tag: '1' }, 'docker://docker.io/user/app:1'],
    ['docker://user/a.b__c-d--e:T', { transport: 'docker', registry: 'docker.io', repository: 'user/a.b__c-d--e', tag: 'T' }, 'docker://docker.io/user/a.b__c-d--e:T'],
    ['docker://busybox:1', { transport: 'docker', registry: 'docker.io', repository: 'library/busybox', tag: '1' }, 'docker://docker.io/library/busybox:1'],
    ['oci:/tmp/layout', { transport: 'oci', path: '/tmp/layout' }],
    ['oci:/tmp/layout:latest', { transport: 'oci', path: '/tmp/layout', tag: 'latest' }],
    ['oci:rel/dir:v1.0', { transport: 'oci', path: 'rel/dir', tag: 'v1.0' }],
    ['oci-archive:/x/img.tar', { transport: 'oci-archive', path: '/x/img.tar' }],
    ['oci-archive:/x/img.tar:tag', { transport: 'oci-archive', path: '/x/img.tar', tag: 'tag' }],
    ['docker-archive:/x/d.tar', { transport: 'docker-archive', path: '/x/d.tar' }],
    ['docker-archive:/x/d.tar:example.com/a/b:v1', { transport: 'docker-archive', path: '/x/d.tar', name: 'example.com/a/b:v1' }],
    ['docker-archive:/x/d.tar:@2', { transport: 'docker-archive', path: '/x/d.tar', index: 2 }],
  ];
  for (const [ref, want, canonical] of ok) {
    const got = parseImageReference(ref);
    assert.deepEqual(got, want, ref);
    assert.equal(formatImageReference(got), canonical ?? ref, ref);
  }
  const bad = [
    'busybox', // no transport
    'http://x/y',
    'docker:busybox',
    'docker://',
    'docker://Upper/Case',
    'docker://host:99999/x',
    'docker://host:port/x',
    'docker://x/y:bad tag',
    'docker://x/y:-lead',
    `docker://x/y@sha256:${'A'.repeat(64)}`,
    'docker://x/y@sha256:abc',
    `docker://x/y@md5:${'a'.repeat(32)}`,
    'docker://x//y',
    'docker://x/y/',
    `docker://${'a'.repeat(300)}`,
    'docker://-bad.host/x',
    'oci:',
    'oci::tag',
    'oci:/dir:bad tag',
    'docker-archive:/x:@abc',
    `docker-archive:/x:y@${D1}`,
  ];
  for (const ref of bad) assert.throws(() => parseImageReference(ref), ImageReferenceError, ref);
});

test('digests: parsing and buffer verification', () => {
  assert.deepEqual(parseDigest(D1), { algorithm: 'sha256', hex: 'a'.repeat(64) });
  assert.equal(parseDigest(`sha512:${'0'.repeat(128)}`).algorithm, 'sha512');
  for (const bad of ['', 'sha256', 'sha256:', `sha256:${'a'.repeat(63)}`, `sha256:${'g'.repeat(64)}`, `SHA256:${'a'.repeat(64)}`, `sha384:${'a'.repeat(96)}`, 42, null]) {
    assert.throws(() => parseDigest(bad), InvalidDigestError, String(bad));
  }
  const data = Buffer.from('hello');
  verifyBuffer(data, { digest: sha256(data), size: 5 }, 'x');
  const sha512 = `sha512:${createHash('sha512').update(data).digest('hex')}`;
  verifyBuffer(data, { digest: sha512 }, 'x');
  assert.throws(() => verifyBuffer(data, { digest: sha256(data), size: 6 }, 'x'), SizeMismatchError);
  assert.throws(() => verifyBuffer(data, { digest: D1 }, 'x'), DigestMismatchError);
});

test('streaming verification: exact, flipped byte, short, long', async () => {
  const seed = 0x0c1;
  const rng = new Rng(seed);
  const count = cases(20, 300);
  for (let i = 0; i < count; i++) {
    const data = Buffer.from(rng.bytes(1 + rng.int(0, 100_000 - 1)));
    const chunk = 1 + rng.int(0, 9000 - 1);
    const expected = { digest: sha256(data), size: data.length };
    assert.ok((await collect(verifyStream(chunked(data, chunk), expected, 'blob'))).equals(data), `seed ${seed} case ${i}`);

    // a flipped byte is caught at the end, after which the iteration yields nothing more
    const flipped = Buffer.from(data);
    flipped[rng.int(0, flipped.length - 1)]! ^= 0x40;
    let yielded = 0;
    await assert.rejects(
      (async () => {
        for await (const c of verifyStream(chunked(flipped, chunk), expected, 'blob')) yielded += c.length;
      })(),
      DigestMismatchError,
    );
    assert.equal(yielded, data.length);

    // short stream
    const short = data.subarray(0, data.length - 1 - rng.int(0, Math.min(data.length, 100) - 1));
    await assert.rejects(collect(verifyStream(chunked(short, chunk), expected, 'blob')), (e: unknown) => e instanceof SizeMismatchError && !/more/.test(e.message));

    // long stream: the chunk crossing the declared size is never handed on
    const long = Buffer.concat([data, Buffer.from(rng.bytes(1 + rng.int(0, 5000 - 1)))]);
    yielded = 0;
    await assert.rejects(
      (async () => {
        for await (const c of verifyStream(chunked(long, chunk), expected, 'blob')) yielded += c.length;
      })(),
      (e: unknown) => e instanceof SizeMismatchError && /more/.test(e.message),
    );
    assert.ok(yielded <= data.length, 'no byte beyond the declared size was yielded');
  }
  // a verifier refuses hostile sizes
  assert.throws(() => new DigestVerifier({ digest: D1, size: 2 ** 60 }, 'x'), BootcfsError);
  assert.throws(() => new DigestVerifier({ digest: D1, size: -1 }, 'x'), BootcfsError);
});

test('media types → compression', () => {
  assert.equal(layerCompression(MediaTypes.ociLayerTar), 'none');
  assert.equal(layerCompression(MediaTypes.ociLayerNondistTar), 'none');
  assert.equal(layerCompression(MediaTypes.ociLayerGzip), 'gzip');
  assert.equal(layerCompression(MediaTypes.ociLayerNondistGzip), 'gzip');
  assert.equal(layerCompression(MediaTypes.dockerLayerGzip), 'gzip');
  assert.equal(layerCompression(MediaTypes.dockerForeignLayerGzip), 'gzip');
  assert.equal(layerCompression(MediaTypes.ociLayerZstd), 'zstd');
  assert.equal(layerCompression(MediaTypes.ociLayerNondistZstd), 'zstd');
  for (const mt of ['application/vnd.oci.image.layer.v1.tar+bzip2', 'application/octet-stream', MediaTypes.ociConfig, '']) {
    assert.throws(() => layerCompression(mt), BootcfsError, mt);
  }
});

test('zstd: multi-frame with leading, middle and trailing skippable frames (zstd CLI); gzip multi-member', async () => {
  const zstd = requireTool('/usr/bin/zstd');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-zstd-'));
  try {
    const rng = new Rng(0x25d);
    const a = Buffer.from(rng.bytes(150_000).map((b) => b & 0x0f)); // compressible
    const b = Buffer.from(rng.bytes(70_000));
    writeFileSync(path.join(dir, 'a'), a);
    writeFileSync(path.join(dir, 'b'), b);
    // `zstd -c a > x; zstd -c b >> x`
    const fa = run(zstd, ['-q', '-c', path.join(dir, 'a')]).stdout;
    const fb = run(zstd, ['-q', '-c', path.join(dir, 'b')]).stdout;
    const skippable = (n: number, len: number): Buffer => {
      const s = Buffer.alloc(8 + len, 0x5a);
      s.writeUInt32LE(0x184d2a50 + n, 0);
      s.writeUInt32LE(len, 4);
      return s;
    };
    const x = Buffer.concat([skippable(0, 7), fa, skippable(15, 0), fb, skippable(3, 100)]);
    const want = Buffer.concat([a, b]);
    for (const chunk of [1 << 20, 4096, 13, 1]) {
      if (chunk === 1 && x.length > 300_000) continue;
      const got = await collect(decompressLayer(chunked(x, chunk), MediaTypes.ociLayerZstd));
      assert.ok(got.equals(want), `chunk ${chunk}`);
    }
    // truncated or garbage zstd → DecompressionError
    await assert.rejects(collect(decompressStream(chunked(x.subarray(0, x.length - 150), 4096), 'zstd')), DecompressionError);
    await assert.rejects(collect(decompressStream(chunked(Buffer.from('not zstd at all'), 4), 'zstd')), DecompressionError);
    await assert.rejects(collect(decompressStream(chunked(Buffer.alloc(0), 4), 'zstd')), DecompressionError);
    // gzip: two members concatenated decode to both; truncation → DecompressionError
    const gz = Buffer.concat([gzipSync(a), gzipSync(b)]);
    assert.ok((await collect(decompressLayer(chunked(gz, 999), MediaTypes.ociLayerGzip))).equals(want));
    await assert.rejects(collect(decompressStream(chunked(gz.subarray(0, 1000), 100), 'gzip')), DecompressionError);
    await assert.rejects(collect(decompressStream(chunked(Buffer.from('plain text'), 100), 'gzip')), DecompressionError);
    // a source error inside the decompressor reaches the consumer unchanged
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield gz.subarray(0, 100);
      throw new DigestMismatchError('blob', D1, D2);
    }
    await assert.rejects(collect(decompressStream(failing(), 'gzip')), DigestMismatchError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('platform selection from an index', () => {
  const m = (arch: string, variant?: string, os = 'linux', mediaType: string = MediaTypes.ociManifest) => ({
    mediaType,
    digest: sha256(Buffer.from(`${os}/${arch}/${variant}/${mediaType}`)),
    size: 100,
    platform: variant === undefined ? { os, architecture: arch } : { os, architecture: arch, variant },
  });
  const idx = (...manifests: ReturnType<typeof m>[]): OciIndex => ({ schemaVersion: 2, manifests });
  const amd = m('amd64');
  const amdV3 = m('amd64', 'v3');
  const amdV2 = m('amd64', 'v2');
  const arm64 = m('arm64', 'v8');
  const arm7 = m('arm', 'v7');
  const arm6 = m('arm', 'v6');
  const win = m('amd64', undefined, 'windows');
  const attestation = { ...m('unknown', undefined, 'unknown'), mediaType: MediaTypes.ociManifest };
  assert.equal(selectPlatformManifest(idx(arm64, win, amdV3, amd, attestation)), amd);
  assert.equal(selectPlatformManifest(idx(arm64, m('amd64', 'v1'))).platform!.variant, 'v1', 'v1 == baseline');
  assert.equal(selectPlatformManifest(idx(amdV3, amdV2, amd), { os: 'linux', architecture: 'amd64', variant: 'v3' }), amdV3);
  assert.equal(selectPlatformManifest(idx(amdV3, amdV2, amd), { os: 'linux', architecture: 'x86_64', variant: 'v4' }), amdV3, 'highest ≤ wanted');
  assert.equal(selectPlatformManifest(idx(amdV3, amd), { os: 'linux', architecture: 'amd64', variant: 'v2' }), amd);
  assert.equal(selectPlatformManifest(idx(amd, m('arm64')), { os: 'linux', architecture: 'aarch64' }).platform!.architecture, 'arm64', 'no variant == v8');
  assert.equal(selectPlatformManifest(idx(arm6, arm7), { os: 'linux', architecture: 'arm' }), arm7);
  assert.equal(selectPlatformManifest(idx(arm6, arm7), { os: 'linux', architecture: 'arm', variant: 'v6' }), arm6);
  assert.throws(() => selectPlatformManifest(idx(amdV3, arm64)), /no manifest for linux\/amd64.*linux\/amd64\/v3/, 'v3-only image on a baseline machine');
  assert.throws(() => selectPlatformManifest(idx(win, arm64)), (e: unknown) => e instanceof BootcfsError && e.code === 'ENOENT');
  assert.throws(() => selectPlatformManifest(idx()), /available: none/);
  // an artifact with a platform is not an image
  assert.throws(() => selectPlatformManifest(idx(m('amd64', undefined, 'linux', 'application/vnd.example.sbom'))), BootcfsError);
});

test('auth files: parsing, matching, lookup order', () => {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const entries = parseAuthFile(
    JSON.stringify({
      auths: {
        'registry.example.com': { auth: b64('host:pw') },
        'registry.example.com/team': { auth: b64('team:pw:with:colons') },
        'registry.example.com/team/app': { auth: b64('app:pw') },
        'https://index.docker.io/v1/': { auth: b64('hub:pw') },
        'localhost:5000': { username: 'u', password: 'p' },
        'empty.example.com': {},
        'tok.example.com': { auth: '', identitytoken: 'refresh' },
      },
      credHelpers: { 'gcr.io': 'gcloud' },
    }),
  );
  assert.deepEqual(matchAuthEntry(entries, 'registry.example.com', 'team/app/sub'), { username: 'app', password: 'pw' });
  assert.deepEqual(matchAuthEntry(entries, 'registry.example.com', 'team/other'), { username: 'team', password: 'pw:with:colons' });
  assert.deepEqual(matchAuthEntry(entries, 'registry.example.com', 'x'), { username: 'host', password: 'pw' });
  assert.deepEqual(matchAuthEntry(entries, 'docker.io', 'library/busybox'), { username: 'hub', password: 'pw' });
  assert.deepEqual(matchAuthEntry(entries, 'localhost:5000', 'a'), { username: 'u', password: 'p' });
  assert.equal(matchAuthEntry(entries, 'localhost', 'a'), undefined, 'port is part of the key');
  assert.equal(matchAuthEntry(entries, 'empty.example.com', 'a'), undefined);
  assert.equal(matchAuthEntry(entries, 'gcr.io', 'a'), undefined, 'credential helpers are not run');
  assert.equal(matchAuthEntry(entries, 'tok.example.com', 'a')?.identityToken, 'refresh');
  assert.deepEqual(parseAuthFile('{}'), []);

  const hostile = ['', '[]', 'null', '{"auths": []}', '{"auths": {"x": "str"}}', '{"auths": {"x": {"auth": 5}}}', '{"auths": {"x": {"auth": "!!!"}}}', `{"auths": {"x": {"auth": "${b64('nocolon')}"}}}`, '{"auths": {"x": {"username": 1, "password": "p"}}}', '{"auths": {"x": {"auth": "", "identitytoken": {}}}}', '{"auths": '];
  for (const h of hostile) assert.throws(() => parseAuthFile(h, 'f'), AuthFileError, h);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-auth-'));
  try {
    const home = path.join(dir, 'home');
    const runtime = path.join(dir, 'run');
    mkdirSync(path.join(home, '.docker'), { recursive: true });
    mkdirSync(path.join(runtime, 'containers'), { recursive: true });
    writeFileSync(path.join(home, '.docker/config.json'), JSON.stringify({ auths: { 'r.example': { auth: b64('docker:1') }, 'd.example': { auth: b64('docker:2') } } }));
    writeFileSync(path.join(runtime, 'containers/auth.json'), JSON.stringify({ auths: { 'r.example': { auth: b64('podman:1') } } }));
    const explicit = path.join(dir, 'explicit.json');
    writeFileSync(explicit, JSON.stringify({ auths: { 'r.example/ns': { auth: b64('explicit:1') } } }));
    const env = { REGISTRY_AUTH_FILE: explicit, XDG_RUNTIME_DIR: runtime };
    assert.deepEqual(authFilePaths({ env, home }), [explicit, path.join(runtime, 'containers/auth.json'), path.join(home, '.config/containers/auth.json'), path.join(home, '.docker/config.json')]);
    assert.equal(lookupCredentials('r.example', 'ns/app', { env, home })?.username, 'explicit');
    assert.equal(lookupCredentials('r.example', 'other', { env, home })?.username, 'podman');
    assert.equal(lookupCredentials('d.example', 'x', { env, home })?.username, 'docker');
    assert.equal(lookupCredentials('r.example', 'other', { env: {}, home })?.username, 'docker');
    assert.equal(lookupCredentials('none.example', 'x', { env, home }), undefined);
    writeFileSync(explicit, '{"auths": {"r.example": {"auth": 12}}}');
    assert.throws(() => lookupCredentials('zzz', 'x', { env, home }), AuthFileError, 'a broken file is an error, not skipped');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hostile manifests and configs → OciFormatError', () => {
  const desc = { mediaType: MediaTypes.ociConfig, digest: D1, size: 10 };
  const good = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc, layers: [{ ...desc, mediaType: MediaTypes.ociLayerGzip, digest: D2 }] };
  const parsed = parseManifestDocument(Buffer.from(JSON.stringify(good)));
  assert.equal(parsed.kind, 'manifest');
  assert.equal(parseManifestDocument(Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] }))).kind, 'index', 'structure decides without mediaType');
  const mutate = (f: (m: any) => void): Buffer => {
    const m = structuredClone(good) as any;
    f(m);
    return Buffer.from(JSON.stringify(m));
  };
  const hostile: Array<[string, Buffer, RegExp]> = [
    ['not json', Buffer.from('{'), /not valid JSON/],
    ['not utf-8', Buffer.from([0x7b, 0xff, 0x7d]), /UTF-8/],
    ['array', Buffer.from('[]'), /JSON object/],
    ['schema 1', mutate((m) => (m.schemaVersion = 1)), /schema 1/],
    ['schema "2"', mutate((m) => (m.schemaVersion = '2')), /schemaVersion/],
    ['config missing', mutate((m) => delete m.config), /config/],
    ['layers not array', mutate((m) => (m.layers = {})), /layers/],
    ['layer string', mutate((m) => (m.layers = ['x'])), /layers\[0\]/],
    ['size string', mutate((m) => (m.config.size = '10')), /config\.size/],
    ['size negative', mutate((m) => (m.config.size = -1)), /config\.size/],
    ['size huge', mutate((m) => (m.layers[0].size = 2 ** 64)), /layers\[0\]\.size/],
    ['size fraction', mutate((m) => (m.layers[0].size = 1.5)), /size/],
    ['digest bad', mutate((m) => (m.layers[0].digest = 'sha256:xyz')), /layers\[0\]\.digest/],
    ['digest missing', mutate((m) => delete m.config.digest), /config\.digest/],
    ['mediaType number', mutate((m) => (m.config.mediaType = 7)), /config\.mediaType/],
    ['urls wrong', mutate((m) => (m.layers[0].urls = [1])), /urls/],
    ['annotations wrong', mutate((m) => (m.annotations = { a: 1 })), /annotations\.a/],
    ['unknown type', mutate((m) => (m.mediaType = 'application/x-evil')), /unsupported media type/],
    ['too big', Buffer.alloc(5 * 1024 * 1024, 0x20), /exceeds the limit/],
  ];
  for (const [name, bytes, re] of hostile) {
    assert.throws(() => parseManifestDocument(bytes), (e: unknown) => e instanceof OciFormatError && re.test(e.message), name);
  }
  // served as an index but the document says manifest
  assert.throws(() => parseManifestDocument(Buffer.from(JSON.stringify(good)), MediaTypes.ociIndex), /served as/);
  assert.throws(() => parseManifestDocument(Buffer.from('{"schemaVersion":1}'), MediaTypes.dockerSchema1Signed), /schema 1/);
  const badIndex = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ mediaType: MediaTypes.ociManifest, digest: D1, size: 1, platform: { os: 'linux' } }] }));
  assert.throws(() => parseManifestDocument(badIndex), /platform\.architecture/);

  const config = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [D1] } };
  assert.deepEqual(parseImageConfig(Buffer.from(JSON.stringify(config))).rootfs.diff_ids, [D1]);
  const badConfigs: Array<[string, unknown]> = [
    ['no rootfs', { os: 'linux' }],
    ['rootfs type', { rootfs: { type: 'other', diff_ids: [] } }],
    ['diff_ids string', { rootfs: { type: 'layers', diff_ids: D1 } }],
    ['diff_id bad', { rootfs: { type: 'layers', diff_ids: ['sha256:1'] } }],
    ['os number', { os: 1, rootfs: { type: 'layers', diff_ids: [] } }],
    ['config array', { config: [], rootfs: { type: 'layers', diff_ids: [] } }],
    ['history object', { history: {}, rootfs: { type: 'layers', diff_ids: [] } }],
  ];
  for (const [name, c] of badConfigs) assert.throws(() => parseImageConfig(Buffer.from(JSON.stringify(c))), OciFormatError, name);
});

test('registry client helpers: WWW-Authenticate, Retry-After, retry budget', async () => {
  assert.deepEqual(parseWwwAuthenticate(['Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"']), [
    { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate(['Basic realm="Registry Realm"']), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  assert.deepEqual(parseWwwAuthenticate(['Bearer realm="a\\"b", error=invalid_token']), [{ scheme: 'bearer', params: { realm: 'a"b', error: 'invalid_token' } }]);
  assert.deepEqual(parseWwwAuthenticate(['Basic realm="x"', 'Bearer realm="y"']).map((c) => c.scheme), ['basic', 'bearer']);
  assert.equal(parseRetryAfter('3'), 3000);
  assert.ok((parseRetryAfter(new Date(Date.now() + 5000).toUTCString(), Date.now()) ?? 0) > 3000);
  assert.equal(parseRetryAfter('soon'), undefined);
  assert.equal(parseRetryAfter(undefined), undefined);
  const budget = new RetryBudget({ maxAttempts: 3, baseDelayMs: 1 }, 'op', 'u');
  await budget.wait(new Error('e1'));
  await budget.wait(new Error('e2'));
  await assert.rejects(budget.wait(new Error('e3')), (e: unknown) => e instanceof RegistryError && /giving up after 3 attempts.*e3/.test(e.message));
  const timeBound = new RetryBudget({ maxAttempts: 100, baseDelayMs: 1, maxTotalMs: 50 }, 'op', 'u');
  const t0 = Date.now();
  await assert.rejects(timeBound.wait(new Error('x'), 60_000), /giving up after 1 attempt/);
  assert.ok(Date.now() - t0 < 1000, 'a Retry-After beyond the total bound gives up at once');
});

/** Writes an OCI layout with one image; returns paths and contents. */
function writeLayout(dir: string, opts: { tamper?: boolean; loopIndex?: boolean } = {}) {
  const put = (bytes: Buffer): string => {
    const d = sha256(bytes);
    mkdirSync(path.join(dir, 'blobs/sha256'), { recursive: true });
    writeFileSync(path.join(dir, 'blobs/sha256', d.slice(7)), bytes);
    return d;
  };
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const tar = Buffer.alloc(2048, 0);
  tar.write('file', 0);
  const layer = gzipSync(tar);
  const layerDigest = put(layer);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(tar)] } }));
  const configDigest = put(config);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: MediaTypes.ociConfig, digest: configDigest, size: config.length }, layers: [{ mediaType: MediaTypes.ociLayerGzip, digest: layerDigest, size: layer.length }] }));
  const manifestDigest = put(manifest);
  if (opts.tamper) {
    const flipped = Buffer.from(layer);
    flipped[flipped.length - 5]! ^= 1;
    writeFileSync(path.join(dir, 'blobs/sha256', layerDigest.slice(7)), flipped);
  }
  let top: { mediaType: string; digest: string; size: number } = { mediaType: MediaTypes.ociManifest, digest: manifestDigest, size: manifest.length };
  if (opts.loopIndex) {
    // a chain of nested indexes deeper than the bound
    for (let i = 0; i < 10; i++) {
      const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ ...top, platform: { os: 'linux', architecture: 'amd64' } }] }));
      top = { mediaType: MediaTypes.ociIndex, digest: put(idx), size: idx.length };
    }
  }
  writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...top, annotations: { 'org.opencontainers.image.ref.name': 't' } }] }));
  return { tar, layer, manifest, manifestDigest, configDigest };
}

test('oci layout: verified reads, tampered blobs, bad diff_id, deep nesting', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-layout-'));
  try {
    const good = path.join(dir, 'good');
    mkdirSync(good);
    const w = writeLayout(good);
    const src = await openImageSource(`oci:${good}`);
    const m = await src.getManifest();
    assert.equal(m.digest, w.manifestDigest);
    assert.ok(m.bytes.equals(w.manifest));
    const c = await src.getConfig();
    assert.equal(c.digest, w.configDigest);
    assert.ok((await collect(openLayer(src, m.manifest.layers[0]!, { diffId: c.config.rootfs.diff_ids[0]! }))).equals(w.tar));
    await assert.rejects(collect(openLayer(src, m.manifest.layers[0]!, { diffId: D1 })), (e: unknown) => e instanceof DigestMismatchError && e.expected === D1);
    await assert.rejects(collect(src.openBlob({ mediaType: MediaTypes.ociLayerGzip, digest: D2, size: 1 })), (e: unknown) => e instanceof BootcfsError && e.code === 'ENOENT');
    // right digest, wrong declared size
    await assert.rejects(collect(src.openBlob({ ...m.manifest.layers[0]!, size: w.layer.length - 1 })), SizeMismatchError);
    await src.close();

    const bad = path.join(dir, 'bad');
    mkdirSync(bad);
    writeLayout(bad, { tamper: true });
    const t = await openImageSource(`oci:${bad}:t`);
    const tm = await t.getManifest();
    await assert.rejects(collect(t.openBlob(tm.manifest.layers[0]!)), DigestMismatchError);
    await assert.rejects(collect(openLayer(t, tm.manifest.layers[0]!)), (e: unknown) => e instanceof DigestMismatchError || e instanceof DecompressionError);
    await t.close();

    const deep = path.join(dir, 'deep');
    mkdirSync(deep);
    writeLayout(deep, { loopIndex: true });
    const d = await openImageSource(`oci:${deep}:t`);
    await assert.rejects(d.getManifest(), (e: unknown) => e instanceof BootcfsError && e.code === 'ELIMIT');
    await d.close();

    await assert.rejects(openImageSource(`oci:${path.join(dir, 'missing')}`), (e: unknown) => e instanceof BootcfsError && e.code === 'ENOENT');
    const notLayout = path.join(dir, 'empty');
    mkdirSync(notLayout);
    await assert.rejects(openImageSource(`oci:${notLayout}`), /not an OCI image layout/);
    writeFileSync(path.join(notLayout, 'oci-layout'), '{"imageLayoutVersion":"2.0.0"}');
    await assert.rejects(openImageSource(`oci:${notLayout}`), /unsupported version/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('archives: member index, links, hostile tars', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-archive-'));
  try {
    const tree = path.join(dir, 'tree');
    mkdirSync(path.join(tree, 'sub'), { recursive: true });
    const longName = `${'n'.repeat(120)}/${'m'.repeat(90)}`;
    mkdirSync(path.join(tree, 'n'.repeat(120)));
    writeFileSync(path.join(tree, longName), 'long');
    writeFileSync(path.join(tree, 'sub/file'), Buffer.alloc(1500, 7));
    mkdirSync(path.join(tree, 'sub2'));
    run('ln', ['-s', '../sub/file', path.join(tree, 'sub2/link')]); // how docker save shares layers
    run('ln', ['-s', '../../escape', path.join(tree, 'sub2/bad')]);
    run('ln', [path.join(tree, 'sub/file'), path.join(tree, 'sub2/hard')]);
    const tarFile = path.join(dir, 'a.tar');
    for (const format of ['gnu', 'posix']) {
      const r = run(requireTool('/usr/bin/tar'), [`--format=${format}`, '-C', tree, '-cf', tarFile, '.']);
      assert.equal(r.status, 0, r.stderr.toString());
      const a = await TarArchive.open(tarFile);
      try {
        assert.equal((await a.readSmall('sub/file', 1 << 20))!.length, 1500);
        assert.equal((await a.readSmall('./sub2/link', 1 << 20))!.length, 1500, 'symlink resolved');
        assert.equal(await a.readSmall('sub2/bad', 1 << 20), undefined, 'a link out of the archive resolves to nothing');
        assert.ok((await a.readSmall('sub2/hard', 1 << 20))!.equals(Buffer.alloc(1500, 7)), 'hardlink resolved');
        assert.ok([...a.members.values()].some((m) => m.hardlink), 'the archive really has a hardlink member');
        assert.equal((await a.readSmall(longName, 1 << 20))!.toString(), 'long', `${format} long name`);
        assert.equal(await a.readSmall('absent', 10), undefined);
        await assert.rejects(a.readSmall('sub/file', 100), (e: unknown) => e instanceof BootcfsError && e.code === 'ELIMIT');
      } finally {
        await a.close();
      }
    }
    const good = (await import('node:fs')).readFileSync(tarFile);
    const cases: Array<[string, Buffer]> = [
      ['truncated header', good.subarray(0, 700)],
      ['truncated data', good.subarray(0, good.indexOf('long') + 2)],
      ['bad checksum', Buffer.from(good.map((b, i) => (i === 10 ? b ^ 1 : b)))],
    ];
    for (const [name, bytes] of cases) {
      const f = path.join(dir, `${name}.tar`);
      writeFileSync(f, bytes);
      await assert.rejects(TarArchive.open(f), FormatError, name);
    }
    // an oci-archive / docker-archive that is not one
    await assert.rejects(openImageSource(`oci-archive:${tarFile}`), /not an OCI image layout/);
    await assert.rejects(openImageSource(`docker-archive:${tarFile}`), /not a docker-archive/);
    await assert.rejects(openImageSource(`docker-archive:${path.join(dir, 'nope.tar')}`), (e: unknown) => e instanceof BootcfsError && e.code === 'ENOENT');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
