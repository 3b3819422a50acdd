/**
 * Peak RSS of importing one ~2 GiB layer (issue 3, "Performance": < 256 MiB).
 *
 * Input (built once, cached under /var/cache/bootcfs/bench-2g/, marker bench-2g.complete): an OCI image
 * layout tagged `bench` with ONE uncompressed layer (media type ...tar) of about 2 GiB, written as a
 * stream (never held in memory): three big files (700, 600 and 400 MiB) and 40 000 small ones
 * (a quarter of 0..64 bytes, the rest 0..24 KiB; 400 directories of 100; sizes from the keystream) — content from AES-128-CTR over zeros with a fixed key, so the
 * layer is the same on every rebuild and incompressible like real binaries. The tar (ustar) is written
 * here and hashed while writing (the layer is stored uncompressed, so diff_id == blob digest).
 *
 * Measured: `node dist/bench/oci-import.js --pull-child REPO oci:LAYOUT:bench` (a fresh insecure sha512
 * v1 repository, one pullImage) under GNU time; its maximum resident set size is the figure. The
 * "reference" column is the issue's bound, 256 MiB — not a tool (nothing else here imports into a
 * composefs repository in one process).
 *
 * Standalone: `node dist/bench/oci-memory.js` (scratch dir: BOOTCFS_BENCH_DIR, default the temp dir).
 */
import { spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './result.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CACHE = process.env.BOOTCFS_CACHE ?? '/var/cache/bootcfs';
const LAYOUT = path.join(CACHE, 'bench-2g');
const MARKER = path.join(CACHE, 'bench-2g.complete');
const TAG = 'bench';
const TIME = '/usr/bin/time';
const LIMIT_MIB = 256;

const MiB = 1 << 20;
const BIG_FILES = [700 * MiB, 600 * MiB, 400 * MiB];
const SMALL_DIRS = 400;
const SMALL_PER_DIR = 100;

/** Deterministic incompressible bytes: AES-128-CTR keystream. */
class Keystream {
  private readonly cipher;
  constructor(key: number) {
    this.cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, key), Buffer.alloc(16, 0));
  }
  private readonly zeros = Buffer.alloc(MiB);
  next(n: number): Buffer {
    const out: Buffer[] = [];
    while (n > 0) {
      const k = Math.min(n, MiB);
      out.push(this.cipher.update(this.zeros.subarray(0, k)));
      n -= k;
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }
}

function octal(v: number, width: number): string {
  return v.toString(8).padStart(width - 1, '0') + '\0';
}

/** One ustar header (names < 100 bytes). */
function ustarHeader(name: string, type: '0' | '5', size: number, mode: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode, 8), 100, 'latin1');
  h.write(octal(0, 8), 108, 'latin1');
  h.write(octal(0, 8), 116, 'latin1');
  h.write(octal(size, 12), 124, 'latin1');
  h.write(octal(1_700_000_000, 12), 136, 'latin1');
  h.write(type, 156, 'latin1');
  h.write('ustar\0' + '00', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of h) sum += c;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

/** Writes the layer tar to `file` as a stream; returns its sha256 hex and size. */
async function writeLayer(file: string): Promise<{ hex: string; size: number; files: number }> {
  const out = createWriteStream(file);
  const hash = createHash('sha256');
  const ks = new Keystream(0x42);
  let size = 0;
  let files = 0;
  const put = async (b: Buffer): Promise<void> => {
    hash.update(b);
    size += b.length;
    if (!out.write(b)) await new Promise<void>((r) => out.once('drain', () => r()));
  };
  const pad = async (n: number): Promise<void> => {
    if (n % 512) await put(Buffer.alloc(512 - (n % 512)));
  };
  const reg = async (name: string, n: number): Promise<void> => {
    await put(ustarHeader(name, '0', n, 0o644));
    for (let left = n; left > 0; ) {
      const k = Math.min(left, 4 * MiB);
      await put(ks.next(k));
      left -= k;
    }
    await pad(n);
    files++;
  };
  await put(ustarHeader('usr/', '5', 0, 0o755));
  await put(ustarHeader('usr/lib/', '5', 0, 0o755));
  for (const [i, n] of BIG_FILES.entries()) await reg(`usr/lib/big${i}.bin`, n);
  await put(ustarHeader('usr/share/', '5', 0, 0o755));
  const sizes = new Keystream(0x17);
  const rand = (m: number): number => sizes.next(4).readUInt32LE(0) % m;
  for (let d = 0; d < SMALL_DIRS; d++) {
    const dir = `usr/share/d${String(d).padStart(3, '0')}/`;
    await put(ustarHeader(dir, '5', 0, 0o755));
    for (let f = 0; f < SMALL_PER_DIR; f++) await reg(`${dir}f${String(f).padStart(3, '0')}`, rand(4) === 0 ? rand(65) : rand(24 * 1024));
  }
  await put(Buffer.alloc(1024));
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return { hex: hash.digest('hex'), size, files };
}

function writeJsonBlob(blobs: string, value: unknown): { digest: string; size: number } {
  const bytes = Buffer.from(JSON.stringify(value), 'utf8');
  const hex = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(path.join(blobs, hex), bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
}

/** Builds (once) the 2 GiB single-layer layout, or reuses the cached one. Returns the layer size. */
export async function ensureBigLayerImage(): Promise<{ layout: string; layerBytes: number; files: number }> {
  const info = path.join(LAYOUT, 'bench-2g.json');
  if (!(existsSync(MARKER) && existsSync(info))) {
    const partial = `${LAYOUT}.partial`;
    rmSync(partial, { recursive: true, force: true });
    rmSync(LAYOUT, { recursive: true, force: true });
    const blobs = path.join(partial, 'blobs/sha256');
    mkdirSync(blobs, { recursive: true });
    console.log(`building ${LAYOUT} (one ~2 GiB layer, streamed)…`);
    const tmpTar = path.join(partial, 'layer.tar');
    const l = await writeLayer(tmpTar);
    renameSync(tmpTar, path.join(blobs, l.hex));
    const config = writeJsonBlob(blobs, { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [`sha256:${l.hex}`] } });
    const manifest = writeJsonBlob(blobs, {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${l.hex}`, size: l.size }],
    });
    writeFileSync(path.join(partial, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(path.join(partial, 'index.json'), JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': TAG } }],
    }));
    writeFileSync(path.join(partial, 'bench-2g.json'), JSON.stringify({ layerBytes: l.size, files: l.files }));
    renameSync(partial, LAYOUT);
    writeFileSync(MARKER, 'one uncompressed ~2 GiB layer\n');
  }
  const { layerBytes, files } = JSON.parse(readFileSync(info, 'utf8')) as { layerBytes: number; files: number };
  return { layout: LAYOUT, layerBytes, files };
}

export async function run(): Promise<BenchResult[]> {
  if (!existsSync(TIME)) throw new Error(`${TIME} (GNU time) is missing: needed for peak RSS`);
  const img = await ensureBigLayerImage();
  const scratch = mkdtempSync(path.join(process.env.BOOTCFS_BENCH_DIR ?? os.tmpdir(), 'bootcfs-bench-mem-'));
  try {
    const repoDir = path.join(scratch, 'repo');
    const rssFile = path.join(scratch, 'rss');
    const child = path.join(here, 'oci-import.js');
    const t0 = process.hrtime.bigint();
    const r = spawnSync(TIME, ['-f', '%M', '-o', rssFile, process.execPath, child, '--pull-child', repoDir, `oci:${img.layout}:${TAG}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`pull of the 2 GiB layer failed (${r.status}): ${r.stderr.toString()}`);
    const rssMiB = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop()) / 1024;
    const gib = img.layerBytes / 2 ** 30;
    return [
      {
        name: `OCI import peak RSS, one ${gib.toFixed(2)} GiB layer, vs the issue's bound`,
        ours: rssMiB,
        reference: LIMIT_MIB,
        unit: 'MiB',
        higherIsBetter: false,
        ratio: rssMiB / LIMIT_MIB,
        note: `reference = the 256 MiB limit (not a tool); ${img.files} files (3 big: 700/600/400 MiB, the rest ≤ 24 KiB), uncompressed tar, sha512 v1 insecure repo; pull took ${seconds.toFixed(1)} s (${(img.layerBytes / 1e6 / seconds).toFixed(0)} MB/s)`,
      },
    ];
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  run()
    .then((rows) => {
      for (const r of rows) console.log(`${r.name}: ours ${r.ours.toFixed(1)} ${r.unit}, reference ${r.reference.toFixed(1)} ${r.unit}, ratio ${r.ratio.toFixed(2)}×${r.note ? ` — ${r.note}` : ''}`);
    })
    .catch((e) => {
      console.error(e);
      process.exitCode = 1;
    });
}
