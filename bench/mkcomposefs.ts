/**
 * `mkcomposefs --digest-store=S TREE img` (C, libcomposefs 1.0.8) vs `bin/bootcfs mkcomposefs
 * --digest-store=S2 TREE img2` on a Debian bookworm minbase rootfs: wall time (best of 3, runs
 * interleaved, fresh stores each run, `sync` before each run so neither side pays for the other's
 * dirty data) and peak RSS. Also checks that both produce identical images and identical stores.
 *
 * The rootfs is built once with `debootstrap --variant=minbase bookworm` (mirror taken from
 * /etc/apt/sources.list.d/debian.sources) under /var/cache/bootcfs/bench-rootfs and reused.
 * Standalone: `node dist/bench/mkcomposefs.js` (as root). BOOTCFS_BENCH_DIR picks the scratch dir
 * (default: the system temp dir); BOOTCFS_BENCH_ROOTFS uses another tree instead.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, lstatSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './result.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(here, '../..');
const BOOTCFS = path.join(REPO, 'bin/bootcfs');
const MKCOMPOSEFS = `${process.env.BOOTCFS_REF ?? '/opt/bootcfs-ref'}/composefs/bin/mkcomposefs`;
const CACHE = process.env.BOOTCFS_CACHE ?? '/var/cache/bootcfs';
const ROOTFS = path.join(CACHE, 'bench-rootfs');
const ROOTFS_MARKER = path.join(CACHE, 'bench-rootfs.complete');
const RUNS = 3;
const TIME = '/usr/bin/time';

/** The Debian mirror apt uses on this machine (first URIs of a stanza whose Suites include bookworm). */
function debianMirror(): string {
  const file = '/etc/apt/sources.list.d/debian.sources';
  if (existsSync(file)) {
    for (const stanza of readFileSync(file, 'utf8').split(/\n\s*\n/)) {
      const uris = /^URIs:\s*(\S+)/m.exec(stanza)?.[1];
      const suites = /^Suites:\s*(.+)$/m.exec(stanza)?.[1]?.split(/\s+/) ?? [];
      if (uris && suites.includes('bookworm')) return uris;
    }
  }
  return 'http://deb.debian.org/debian';
}

export function ensureRootfs(): string {
  if (process.env.BOOTCFS_BENCH_ROOTFS) return process.env.BOOTCFS_BENCH_ROOTFS;
  if (existsSync(ROOTFS_MARKER) && existsSync(path.join(ROOTFS, 'usr/bin'))) return ROOTFS;
  mkdirSync(CACHE, { recursive: true });
  const partial = `${ROOTFS}.partial`;
  rmSync(partial, { recursive: true, force: true });
  rmSync(ROOTFS, { recursive: true, force: true });
  const mirror = debianMirror();
  console.log(`building ${ROOTFS} with debootstrap (minbase bookworm from ${mirror})…`);
  const r = spawnSync('debootstrap', ['--variant=minbase', 'bookworm', partial, mirror], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.error) throw new Error(`debootstrap: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`debootstrap failed with status ${r.status}`);
  renameSync(partial, ROOTFS);
  writeFileSync(ROOTFS_MARKER, `debootstrap --variant=minbase bookworm ${mirror}\n`);
  return ROOTFS;
}

interface Measured {
  seconds: number;
  maxRssKiB: number;
}

/** Run a command under /usr/bin/time: wall time measured here, peak RSS from GNU time. */
function timed(cmd: string, args: string[]): Measured {
  const rssFile = path.join(os.tmpdir(), `bootcfs-bench-rss-${process.pid}`);
  const useTime = existsSync(TIME);
  const t0 = process.hrtime.bigint();
  const r = useTime
    ? spawnSync(TIME, ['-f', '%M', '-o', rssFile, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString()}`);
  let maxRssKiB = NaN;
  if (useTime) {
    maxRssKiB = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop());
    rmSync(rssFile, { force: true });
  }
  return { seconds, maxRssKiB };
}

function syncAll(): void {
  spawnSync('sync', [], { stdio: 'ignore' });
}

/** Every entry of a store: relative path, type, permission bits and (for files) size + content. */
function storeListing(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const name of readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(dir, r));
      if (st.isDirectory()) {
        out.push(`d ${r} ${(st.mode & 0o7777).toString(8)}`);
        walk(r);
      } else {
        out.push(`f ${r} ${(st.mode & 0o7777).toString(8)} ${st.size}`);
      }
    }
  };
  if (existsSync(dir)) walk('');
  return out;
}

function best(xs: Measured[]): Measured {
  return xs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
}

export async function run(): Promise<BenchResult[]> {
  if (!existsSync(MKCOMPOSEFS)) throw new Error(`reference tool ${MKCOMPOSEFS} is missing`);
  if (!existsSync(path.join(REPO, 'dist/src/cli/main.js'))) throw new Error('bootcfs is not built (npm run build)');
  const tree = ensureRootfs();
  const scratch = mkdtempSync(path.join(process.env.BOOTCFS_BENCH_DIR ?? os.tmpdir(), 'bootcfs-bench-mkcfs-'));
  try {
    const img1 = path.join(scratch, 'ref.img');
    const img2 = path.join(scratch, 'ours.img');
    const s1 = path.join(scratch, 'store-ref');
    const s2 = path.join(scratch, 'store-ours');
    const refStore: Measured[] = [];
    const oursStore: Measured[] = [];
    const refPlain: Measured[] = [];
    const oursPlain: Measured[] = [];
    // Warm the page cache for the tree (both sides then read it from memory).
    timed(MKCOMPOSEFS, ['--print-digest-only', tree]);
    for (let i = 0; i < RUNS; i++) {
      for (const side of i % 2 === 0 ? ['ref', 'ours'] : ['ours', 'ref']) {
        rmSync(side === 'ref' ? s1 : s2, { recursive: true, force: true });
        syncAll();
        if (side === 'ref') refStore.push(timed(MKCOMPOSEFS, [`--digest-store=${s1}`, tree, img1]));
        else oursStore.push(timed(BOOTCFS, ['mkcomposefs', `--digest-store=${s2}`, tree, img2]));
      }
      if (!readFileSync(img1).equals(readFileSync(img2))) throw new Error('bootcfs and mkcomposefs images differ');
      const l1 = storeListing(s1);
      const l2 = storeListing(s2);
      if (l1.join('\n') !== l2.join('\n')) throw new Error('bootcfs and mkcomposefs object stores differ');
    }
    for (let i = 0; i < RUNS; i++) {
      syncAll();
      refPlain.push(timed(MKCOMPOSEFS, [tree, img1]));
      syncAll();
      oursPlain.push(timed(BOOTCFS, ['mkcomposefs', tree, img2]));
    }
    if (!readFileSync(img1).equals(readFileSync(img2))) throw new Error('bootcfs and mkcomposefs images differ (no store)');
    const objects = storeListing(s2).filter((l) => l.startsWith('f ')).length;
    const rs = best(refStore);
    const os_ = best(oursStore);
    const rp = best(refPlain);
    const op = best(oursPlain);
    const peakRef = Math.max(...refStore.map((m) => m.maxRssKiB)) / 1024;
    const peakOurs = Math.max(...oursStore.map((m) => m.maxRssKiB)) / 1024;
    const note = `${tree}, ${objects} objects; best of ${RUNS}; all runs: ours ${oursStore.map((m) => m.seconds.toFixed(2)).join('/')} s, ref ${refStore.map((m) => m.seconds.toFixed(2)).join('/')} s`;
    return [
      { name: 'mkcomposefs --digest-store (minbase rootfs) wall time', ours: os_.seconds, reference: rs.seconds, unit: 's', higherIsBetter: false, ratio: os_.seconds / rs.seconds, note },
      { name: 'mkcomposefs --digest-store peak RSS', ours: peakOurs, reference: peakRef, unit: 'MiB', higherIsBetter: false, ratio: peakOurs / peakRef },
      {
        name: 'mkcomposefs without store (minbase rootfs) wall time',
        ours: op.seconds,
        reference: rp.seconds,
        unit: 's',
        higherIsBetter: false,
        ratio: op.seconds / rp.seconds,
        note: `all runs: ours ${oursPlain.map((m) => m.seconds.toFixed(2)).join('/')} s, ref ${refPlain.map((m) => m.seconds.toFixed(2)).join('/')} s; ours includes Node start-up and fsync of the image`,
      },
    ];
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  run().then(
    (rows) => {
      for (const r of rows) {
        console.log(`${r.name}: ours ${r.ours.toFixed(2)} ${r.unit}, reference ${r.reference.toFixed(2)} ${r.unit}, ratio ${r.ratio.toFixed(2)}×${r.note ? ` — ${r.note}` : ''}`);
      }
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
