/**
 * Import of a multi-layer OCI image of a real OS tree (issue 3, "Performance"):
 *
 *   bootcfs  `pullImage(repo, 'oci:DIR:TAG')` into an EMPTY insecure repository (sha512, v1 — the
 *            defaults), run in a child process (`node dist/bench/oci-import.js --pull-child REPO REF`)
 *            so that its wall time includes Node start-up like any CLI use, and its peak RSS is read
 *            with GNU time.
 *   peer     `skopeo copy oci:DIR:TAG oci:TMP:TAG` + `umoci unpack --image TMP:TAG BUNDLE` +
 *            `mkcomposefs --digest-store=STORE BUNDLE/rootfs IMG`, timed end to end (sum of the three
 *            steps; peak RSS = the largest of the three).
 *   bound    `zcat LAYERS | sha256sum`: the work no importer can avoid (decompress + hash every byte).
 *            Reported as throughput in uncompressed MB/s, bootcfs against the bound.
 *
 * Same input for all, page cache warm (one untimed pass of each side first), runs interleaved, `sync`
 * before each timed run so nobody pays for the previous run's dirty data; best of RUNS.
 *
 * The input is built once under /var/cache/bootcfs/bench-oci/ from the debootstrap minbase tree that
 * bench/mkcomposefs.ts caches (ensureRootfs): three gzip -6 layers (`usr`; `var` + `etc`; the rest),
 * plus a fourth layer of real files copied from this host's /usr/share (HOST_PAD: man, vim, perl, i18n,
 * at their own paths usr/share/…, about 110 MB) that brings the tree to the ~300 MB the issue asks for
 * — real OS files, not synthetic data. Each layer is written by GNU tar `--format=pax --xattrs
 * --numeric-owner --sort=name`, in an OCI image layout tagged `bench`; the note of each row gives the
 * real uncompressed size. A cache built with a different layer split is rebuilt (the marker records it).
 *
 * Standalone: `node dist/bench/oci-import.js` (as root: umoci unpack needs it to keep owners and
 * device nodes). BOOTCFS_BENCH_DIR picks the scratch dir (default: the system temp dir);
 * BOOTCFS_BENCH_CPU_PROF=DIR runs the bootcfs child under `node --cpu-prof --cpu-prof-dir=DIR`.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureRootfs } from './mkcomposefs.js';
import type { BenchResult } from './result.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(here, '../..');
const MKCOMPOSEFS = `${process.env.BOOTCFS_REF ?? '/opt/bootcfs-ref'}/composefs/bin/mkcomposefs`;
const CACHE = process.env.BOOTCFS_CACHE ?? '/var/cache/bootcfs';
const LAYOUT = path.join(CACHE, 'bench-oci');
const LAYOUT_MARKER = path.join(CACHE, 'bench-oci.complete');
const TAG = 'bench';
const RUNS = 3;
const TIME = '/usr/bin/time';

/** Directories of this host added as a fourth layer (paths relative to /). */
const HOST_PAD = ['usr/share/man', 'usr/share/vim', 'usr/share/perl', 'usr/share/i18n'];

/**
 * The layers: which top-level entries of the rootfs go into each (null = everything else), or (`host`)
 * which paths of this host's root.
 */
const LAYER_SPLIT: Array<{ label: string; entries: string[] | null; host?: boolean }> = [
  { label: 'usr', entries: ['usr'] },
  { label: 'var+etc', entries: ['var', 'etc'] },
  { label: 'rest', entries: null },
  { label: `host ${HOST_PAD.join(',')}`, entries: HOST_PAD, host: true },
];
const MARKER_TEXT = (rootfs: string): string => `layers of ${rootfs}: ${LAYER_SPLIT.map((l) => l.label).join('; ')}\n`;

function must(cmd: string, args: string[], opts: { stdout?: number } = {}): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', opts.stdout ?? 'ignore', 'pipe'] });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr?.toString() ?? ''}`);
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

function writeJsonBlob(blobs: string, value: unknown): { digest: string; size: number } {
  const bytes = Buffer.from(JSON.stringify(value), 'utf8');
  const hex = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(path.join(blobs, hex), bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
}

interface BenchImage {
  layout: string;
  /** Compressed layer blobs, in manifest order. */
  layerFiles: string[];
  /** Sum of the uncompressed layer tar sizes. */
  uncompressedBytes: number;
  compressedBytes: number;
  /** Apparent size of the files of the rootfs the layers were made from (incl. the host padding). */
  treeBytes: number;
  /** Of which: the host files of the padding layer. */
  padBytes: number;
}

function apparentTreeBytes(dir: string): number {
  const r = spawnSync('du', ['-s', '-b', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`du -sb ${dir} failed: ${r.stderr}`);
  return Number(r.stdout.split(/\s+/)[0]);
}

/** Builds (once) the OCI layout of the minbase rootfs, or reuses the cached one. */
export async function ensureBenchImage(): Promise<BenchImage> {
  const rootfs = ensureRootfs();
  const upToDate = existsSync(LAYOUT_MARKER) && readFileSync(LAYOUT_MARKER, 'utf8') === MARKER_TEXT(rootfs) && existsSync(path.join(LAYOUT, 'index.json'));
  if (!upToDate) {
    const partial = `${LAYOUT}.partial`;
    rmSync(partial, { recursive: true, force: true });
    rmSync(LAYOUT, { recursive: true, force: true });
    const blobs = path.join(partial, 'blobs/sha256');
    mkdirSync(blobs, { recursive: true });
    console.log(`building ${LAYOUT} (${LAYER_SPLIT.length} gzip layers: ${rootfs} and this host's ${HOST_PAD.join(' ')})…`);
    const top = readdirSync(rootfs).sort();
    const claimed = new Set(LAYER_SPLIT.filter((l) => !l.host).flatMap((l) => l.entries ?? []));
    const layers: Array<{ digest: string; size: number; diffId: string }> = [];
    for (const [i, spec] of LAYER_SPLIT.entries()) {
      const entries = spec.host
        ? spec.entries!.filter((p) => existsSync(path.join('/', p)))
        : (spec.entries ?? top.filter((n) => !claimed.has(n))).filter((n) => top.includes(n));
      if (entries.length === 0) throw new Error(`bench layer '${spec.label}' has nothing to pack`);
      const tarFile = path.join(partial, `layer${i}.tar`);
      must('tar', [
        '--format=pax', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--sort=name',
        // atime/ctime records would make the layers differ on every rebuild.
        '--pax-option=delete=atime,delete=ctime',
        '-C', spec.host ? '/' : rootfs, '-cf', tarFile, ...entries,
      ]);
      const diffId = await sha256File(tarFile);
      must('gzip', ['-6', '-n', tarFile]);
      const gz = `${tarFile}.gz`;
      const hex = await sha256File(gz);
      const size = statSync(gz).size;
      renameSync(gz, path.join(blobs, hex));
      layers.push({ digest: `sha256:${hex}`, size, diffId: `sha256:${diffId}` });
    }
    const config = writeJsonBlob(blobs, {
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: LAYER_SPLIT.map((l) => ({ created_by: `bootcfs bench layer ${l.label}` })),
    });
    const manifest = writeJsonBlob(blobs, {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
    });
    writeFileSync(path.join(partial, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(path.join(partial, 'index.json'), JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': TAG } }],
    }));
    renameSync(partial, LAYOUT);
    writeFileSync(LAYOUT_MARKER, MARKER_TEXT(rootfs));
  }
  const index = JSON.parse(readFileSync(path.join(LAYOUT, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const blob = (d: string): string => path.join(LAYOUT, 'blobs/sha256', d.replace(/^sha256:/, ''));
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0]!.digest), 'utf8')) as { layers: Array<{ digest: string; size: number }> };
  const layerFiles = manifest.layers.map((l) => blob(l.digest));
  const compressedBytes = manifest.layers.reduce((s, l) => s + l.size, 0);
  // Uncompressed size: the gzip trailer holds it mod 2^32 — fine for layers < 4 GiB, which these are.
  const uncompressedBytes = layerFiles.reduce((s, f) => {
    const b = readFileSync(f);
    return s + b.readUInt32LE(b.length - 4);
  }, 0);
  // tree size: the minbase rootfs plus the host files of the padding layer (as packed; the host may
  // have changed since, so it is the sum of the padding layer's tar entries that counts — approximated
  // by the current apparent size of those directories)
  const pad = HOST_PAD.filter((p) => existsSync(path.join('/', p))).reduce((s, p) => s + apparentTreeBytes(path.join('/', p)), 0);
  return { layout: LAYOUT, layerFiles, uncompressedBytes, compressedBytes, treeBytes: apparentTreeBytes(rootfs) + pad, padBytes: pad };
}

export interface Measured {
  seconds: number;
  maxRssKiB: number;
  stdout?: string;
}

/** Runs a command under /usr/bin/time: wall time measured here, peak RSS from GNU time. */
export function timed(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Measured {
  if (!existsSync(TIME)) throw new Error(`${TIME} (GNU time) is missing: needed for peak RSS`);
  const rssFile = path.join(os.tmpdir(), `bootcfs-bench-rss-${process.pid}`);
  const t0 = process.hrtime.bigint();
  const r = spawnSync(TIME, ['-f', '%M', '-o', rssFile, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env, maxBuffer: 1 << 20 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString()}`);
  const maxRssKiB = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop());
  rmSync(rssFile, { force: true });
  return { seconds, maxRssKiB, stdout: r.stdout.toString() };
}

function syncAll(): void {
  spawnSync('sync', [], { stdio: 'ignore' });
}

function best(xs: Measured[]): Measured {
  return xs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
}

function countFiles(dir: string): number {
  let n = 0;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name));
      else if (e.isFile()) n++;
    }
  };
  if (existsSync(dir)) walk(dir);
  return n;
}

export async function run(): Promise<BenchResult[]> {
  if (!existsSync(MKCOMPOSEFS)) throw new Error(`reference tool ${MKCOMPOSEFS} is missing`);
  for (const tool of ['skopeo', 'umoci']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing`);
  }
  if (process.getuid?.() !== 0) throw new Error('the OCI import benchmark must run as root (umoci unpack of a real OS tree)');
  const self = fileURLToPath(import.meta.url);
  if (!existsSync(path.join(REPO_ROOT, 'dist/src/index.js'))) throw new Error('bootcfs is not built (npm run build)');
  const img = await ensureBenchImage();
  const ref = `oci:${img.layout}:${TAG}`;
  const scratch = mkdtempSync(path.join(process.env.BOOTCFS_BENCH_DIR ?? os.tmpdir(), 'bootcfs-bench-oci-'));
  const cpuProf = process.env.BOOTCFS_BENCH_CPU_PROF;
  try {
    const repoDir = path.join(scratch, 'repo');
    const peerLayout = path.join(scratch, 'peer-oci');
    const bundle = path.join(scratch, 'peer-bundle');
    const store = path.join(scratch, 'peer-store');
    const peerImg = path.join(scratch, 'peer.img');
    const peerSync: number[] = [];
    const ourPhases: string[] = [];
    const peerSteps: string[] = [];
    const shell = `zcat ${img.layerFiles.map((f) => `'${f}'`).join(' ')} | sha256sum`;

    const ours = (): Measured => {
      rmSync(repoDir, { recursive: true, force: true });
      syncAll();
      const nodeArgs = cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : [];
      const m = timed(process.execPath, [...nodeArgs, self, '--pull-child', repoDir, ref]);
      ourPhases.push(m.stdout?.trim().split('\n').pop() ?? '');
      return m;
    };
    const peer = (): Measured => {
      for (const d of [peerLayout, bundle, store, peerImg]) rmSync(d, { recursive: true, force: true });
      syncAll();
      const steps = [
        timed('skopeo', ['copy', '--quiet', ref, `oci:${peerLayout}:${TAG}`]),
        timed('umoci', ['unpack', '--image', `${peerLayout}:${TAG}`, bundle]),
        timed(MKCOMPOSEFS, [`--digest-store=${store}`, path.join(bundle, 'rootfs'), peerImg]),
      ];
      // Not part of the peer's time (none of the three tools makes its output durable), but bootcfs
      // does (syncfs before publishing refs): recorded so the report can say what durability costs.
      peerSync.push(timed('sync', []).seconds);
      peerSteps.push(steps.map((m) => m.seconds.toFixed(2)).join('+'));
      return { seconds: steps.reduce((s, m) => s + m.seconds, 0), maxRssKiB: Math.max(...steps.map((m) => m.maxRssKiB)) };
    };
    const bound = (): Measured => timed('bash', ['-o', 'pipefail', '-c', shell]);

    // Warm-up (untimed): page cache for the layout blobs, the tools, and Node's compiled modules.
    ours();
    peer();
    bound();
    ourPhases.length = 0;
    peerSync.length = 0;
    peerSteps.length = 0;
    const o: Measured[] = [];
    const p: Measured[] = [];
    const b: Measured[] = [];
    for (let i = 0; i < RUNS; i++) {
      if (i % 2 === 0) { o.push(ours()); p.push(peer()); } else { p.push(peer()); o.push(ours()); }
      b.push(bound());
    }
    const ourObjects = countFiles(path.join(repoDir, 'objects'));
    const peerObjects = countFiles(store);
    const bo = best(o);
    const bp = best(p);
    const bb = best(b);
    const mb = img.uncompressedBytes / 1e6;
    const input = `OS tree ${(img.treeBytes / 1e6).toFixed(0)} MB (minbase rootfs + ${(img.padBytes / 1e6).toFixed(0)} MB of this host's /usr/share files as a 4th layer), ${img.layerFiles.length} gzip layers ${(img.compressedBytes / 1e6).toFixed(0)} MB → ${mb.toFixed(0)} MB of tar`;
    const runs = (xs: Measured[]): string => xs.map((m) => m.seconds.toFixed(2)).join('/');
    return [
      {
        name: 'OCI import (oci: layout → empty repo) wall time, vs skopeo+umoci+mkcomposefs',
        ours: bo.seconds,
        reference: bp.seconds,
        unit: 's',
        higherIsBetter: false,
        ratio: bo.seconds / bp.seconds,
        note: `${input}; target ≤ 0.70×; best of ${RUNS}; all runs: ours ${runs(o)} s (${ourPhases.join('; ')}), peer ${runs(p)} s (skopeo+umoci+mkcomposefs ${peerSteps.join(', ')}; a \`sync\` after the peer took ${peerSync.map((x) => x.toFixed(2)).join('/')} s more, not counted; bootcfs runs syncfs inside its time); objects: ours ${ourObjects} (sha512 repo), peer ${peerObjects}`,
      },
      {
        name: 'OCI import peak RSS',
        ours: Math.max(...o.map((m) => m.maxRssKiB)) / 1024,
        reference: Math.max(...p.map((m) => m.maxRssKiB)) / 1024,
        unit: 'MiB',
        higherIsBetter: false,
        ratio: Math.max(...o.map((m) => m.maxRssKiB)) / Math.max(...p.map((m) => m.maxRssKiB)),
        note: 'peer: the largest of its three processes',
      },
      {
        name: 'OCI import throughput vs bound `zcat LAYERS | sha256sum`',
        ours: mb / bo.seconds,
        reference: mb / bb.seconds,
        unit: 'MB/s',
        higherIsBetter: true,
        ratio: bb.seconds / bo.seconds,
        note: `uncompressed tar MB per second; bound runs ${runs(b)} s`,
      },
    ];
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** The timed bootcfs side: a fresh insecure repository (defaults sha512, v1) and one pull. */
async function pullChild(repoDir: string, ref: string): Promise<void> {
  const { Repository, pullImage } = await import('../src/index.js');
  const repo = await Repository.init(repoDir, { insecure: true });
  try {
    let layersDone = 0;
    const r = await pullImage(repo, ref, {
      tag: TAG,
      onProgress: (ev) => {
        if (ev.kind === 'image') layersDone = layersDone || performance.now();
        else if (ev.kind === 'layer-done') layersDone = performance.now();
      },
    });
    const end = performance.now();
    // Phase times since process start (stdout's last line, read by run()).
    console.log(`${r.imageId.toString('hex').slice(0, 12)}…: layers ${(layersDone / 1000).toFixed(2)} s, image+refs ${((end - layersDone) / 1000).toFixed(2)} s`);
  } finally {
    await repo.close();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const child = process.argv[2] === '--pull-child';
  const main = child
    ? pullChild(process.argv[3]!, process.argv[4]!)
    : run().then((rows) => {
        for (const r of rows) {
          console.log(`${r.name}: ours ${r.ours.toFixed(2)} ${r.unit}, reference ${r.reference.toFixed(2)} ${r.unit}, ratio ${r.ratio.toFixed(2)}×${r.note ? ` — ${r.note}` : ''}`);
        }
      });
  main.catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
