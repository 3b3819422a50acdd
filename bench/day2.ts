/**
 * Day-2 commands on an offline root (issue 6, "Performance"). The demo OS image (scripts/build-os-image.sh:
 * tags v1 and v2, v2 = v1 + one small layer) is installed once with `bootcfs install to-filesystem`
 * (v1, unsealed, into plain directories: root, ESP, run dir; this host has no fs-verity, so verity is
 * deferred). Each run works on a `cp -a` copy of that pristine v1 system:
 *
 *   switch    `bootcfs switch oci:LAYOUT:v2 --root R --boot-dir E --run-dir X`: pull (only the new layer is
 *             imported), the v2 composefs image, its state (/etc copy, origin), loader/entries.staged.
 *   status    `bootcfs status --json` on that root: staged v2 + the v1 deployment (offline: nothing is
 *             booted). Warm: 2 warm-up runs, then the median of STATUS_RUNS.
 *   finalize  `bootcfs composefs-finalize-staged` (/etc merge, entries swap, gc).
 *
 * Rows:
 *   1. status --json warm latency vs `node -e 0` (the bare runtime start every Node CLI pays), same run.
 *   2. bytes the upgrade writes: growth of root + ESP in allocated bytes (sum of st_blocks × 512 — `du -s
 *      --block-size=1`, hard links once) across switch + finalize, vs the apparent size of the v2 image's
 *      file tree (sum of regular file sizes in its composefs dump, hard links once). Also the write_bytes and
 *      wchar of the switch process tree from /proc/<sh>/io of a wrapper shell after it reaped the command
 *      (the kernel adds a reaped child's I/O counters to its parent's — no race with the exit).
 *   3. switch wall time vs a full re-install of v2 (`install to-filesystem` into fresh dirs), same run.
 * Best of RUNS for times (`sync` before each), warm page cache.
 */
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResult } from './result.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(here, '../..');
const BOOTCFS = path.join(REPO_ROOT, 'bin/bootcfs');
const ROOT_UUID = '0b5d7c1e-5c0f-4d7e-9b1e-2f6f1c0de001';
const RUNS = 2;
const STATUS_WARMUP = 2;
const STATUS_RUNS = 15;

function must(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Buffer {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30, ...(env ? { env } : {}) });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.toString().slice(-2000)}`);
  return r.stdout;
}

function timedMs(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Allocated bytes of a tree (st_blocks × 512, each inode once), after a sync: what `du -s --block-size=1` prints. */
function allocated(dir: string): number {
  return Number(must('du', ['-s', '--block-size=1', dir]).toString().split('\t')[0]);
}

/** Object files of a composefs repository (relative names → size). */
function objects(repo: string): Map<string, number> {
  const out = new Map<string, number>();
  const base = path.join(repo, 'objects');
  for (const d of readdirSync(base)) {
    for (const f of readdirSync(path.join(base, d))) {
      const p = path.join(base, d, f);
      const st = lstatSync(p);
      if (st.isFile()) out.set(`${d}/${f}`, st.blocks * 512);
    }
  }
  return out;
}

interface IoCounters { wchar: number; writeBytes: number; cancelledWriteBytes: number }

/**
 * Runs BOOTCFS ARGS under `sh`, which reads its own /proc/$$/io after waiting for it: the counters then
 * include the reaped command (and its children). Minus the same wrapper around `true`.
 */
function runWithIo(args: string[], ioFile: string): { stdout: Buffer; io: IoCounters; ms: number } {
  const wrap = (cmd: string, a: string[]): { stdout: Buffer; io: IoCounters } => {
    rmSync(ioFile, { force: true });
    const out = must('sh', ['-c', '"$@"; rc=$?; cat /proc/$$/io > "$IOFILE"; exit $rc', 'sh', cmd, ...a], { ...process.env, IOFILE: ioFile });
    const kv = new Map(readFileSync(ioFile, 'utf8').trim().split('\n').map((l) => { const [k, v] = l.split(':'); return [k!.trim(), Number(v)] as const; }));
    return { stdout: out, io: { wchar: kv.get('wchar')!, writeBytes: kv.get('write_bytes')!, cancelledWriteBytes: kv.get('cancelled_write_bytes')! } };
  };
  const base = wrap('true', []);
  spawnSync('sync');
  let r: { stdout: Buffer; io: IoCounters } | undefined;
  const ms = timedMs(() => { r = wrap(BOOTCFS, args); });
  return {
    stdout: r!.stdout,
    ms,
    io: { wchar: r!.io.wchar - base.io.wchar, writeBytes: r!.io.writeBytes - base.io.writeBytes, cancelledWriteBytes: r!.io.cancelledWriteBytes - base.io.cancelledWriteBytes },
  };
}

/** Sum of regular file sizes of a composefs image (hard links once), from its dump. */
function imageTreeBytes(image: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const line of must(BOOTCFS, ['composefs-info', 'dump', image]).toString().split('\n')) {
    const f = line.split(' ');
    // path size mode ...: a regular file's mode is 100xxx; a hard link's is @100xxx (counted at its target)
    if (f.length > 3 && /^10\d{4}$/.test(f[2]!)) {
      files++;
      bytes += Number(f[1]);
    }
  }
  return { files, bytes };
}

const MB = (n: number): string => `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)} MB`;

export async function run(): Promise<BenchResult[]> {
  const layout = must('bash', [path.join(REPO_ROOT, 'scripts/build-os-image.sh')]).toString().trim().split('\n').pop()!;
  const v1 = `oci:${layout}:v1`;
  const v2 = `oci:${layout}:v2`;
  const work = mkdtempSync('/var/tmp/bootcfs-bench-day2-');
  try {
    const install = (dir: string, src: string): { ms: number; digest: string } => {
      rmSync(dir, { recursive: true, force: true });
      for (const d of ['root', 'esp', 'run']) mkdirSync(path.join(dir, d), { recursive: true });
      spawnSync('sync');
      let out: Buffer = Buffer.alloc(0);
      const ms = timedMs(() => {
        out = must(BOOTCFS, ['install', 'to-filesystem', '--source', src, '--boot-mount', `${dir}/esp`, '--root-uuid', ROOT_UUID, '--allow-missing-verity', '--json', `${dir}/root`]);
      });
      return { ms, digest: (JSON.parse(out.toString()) as { digest: string }).digest };
    };
    const pristine = path.join(work, 'v1');
    const v1Digest = install(pristine, v1).digest;

    const switchMs: number[] = [];
    const finalizeMs: number[] = [];
    const reinstallMs: number[] = [];
    let statusMs: number[] = [];
    let nodeMs: number[] = [];
    let growth = { root: 0, esp: 0, objects: 0, newObjects: 0, erofs: 0, state: 0, streams: 0, afterSwitch: 0 };
    let io: IoCounters = { wchar: 0, writeBytes: 0, cancelledWriteBytes: 0 };
    let tree = { files: 0, bytes: 0 };
    let v2Digest = '';
    let layerBytes = 0;

    for (let i = 0; i < RUNS; i++) {
      const sys = path.join(work, 'sys');
      rmSync(sys, { recursive: true, force: true });
      must('cp', ['-a', pristine, sys]); // owners, modes, timestamps, xattrs as installed
      const root = `${sys}/root`;
      const esp = `${sys}/esp`;
      const args = ['--root', root, '--boot-dir', esp, '--run-dir', `${sys}/run`];
      spawnSync('sync');
      const before = { root: allocated(root), esp: allocated(esp), objects: allocated(`${root}/composefs/objects`), state: allocated(`${root}/state`), streams: allocated(`${root}/composefs/streams`), objs: objects(`${root}/composefs`) };

      const sw = runWithIo(['switch', '--quiet', '--json', ...args, v2], path.join(work, 'io.txt'));
      switchMs.push(sw.ms);
      const swJson = JSON.parse(sw.stdout.toString()) as { kind: string; deployment: string; layerBytesImported: number };
      if (swJson.kind !== 'staged') throw new Error(`switch did not stage: ${sw.stdout.toString()}`);
      v2Digest = swJson.deployment;
      layerBytes = swJson.layerBytesImported;
      spawnSync('sync');
      const afterSwitch = allocated(root) + allocated(esp);

      if (i === 0) {
        // status on the staged system, then the runtime floor, interleaved so load hits both alike
        const status = (): void => {
          const j = JSON.parse(must(BOOTCFS, ['status', '--json', ...args]).toString()) as { status: { staged: { composefs: { verity: string } } | null; otherDeployments: Array<{ composefs: { verity: string } }> } };
          if (j.status.staged?.composefs.verity !== v2Digest || j.status.otherDeployments[0]?.composefs.verity !== v1Digest) throw new Error('status --json does not show v2 staged and v1');
        };
        const bare = (): void => { must(process.execPath, ['-e', '0']); };
        for (let w = 0; w < STATUS_WARMUP; w++) { status(); bare(); }
        statusMs = [];
        nodeMs = [];
        for (let k = 0; k < STATUS_RUNS; k++) {
          statusMs.push(timedMs(status));
          nodeMs.push(timedMs(bare));
        }
      }

      spawnSync('sync');
      finalizeMs.push(timedMs(() => { must(BOOTCFS, ['composefs-finalize-staged', '--json', ...args]); }));
      spawnSync('sync');
      const afterObjs = objects(`${root}/composefs`);
      let newObjects = 0;
      let objBytes = 0;
      for (const [k, b] of afterObjs) if (!before.objs.has(k)) { newObjects++; objBytes += b; }
      const erofs = statSync(`${root}/composefs/images/${v2Digest}`);
      growth = {
        root: allocated(root) - before.root,
        esp: allocated(esp) - before.esp,
        objects: objBytes,
        newObjects,
        erofs: erofs.blocks * 512,
        state: allocated(`${root}/state`) - before.state,
        streams: allocated(`${root}/composefs/streams`) - before.streams,
        afterSwitch: afterSwitch - before.root - before.esp,
      };
      io = sw.io;
      if (i === 0) tree = imageTreeBytes(`${root}/composefs/images/${v2Digest}`);

      reinstallMs.push(install(path.join(work, 'fresh'), v2).ms);
      rmSync(path.join(work, 'fresh'), { recursive: true, force: true });
    }

    const written = growth.root + growth.esp;
    const load = `load average ${os.loadavg()[0]!.toFixed(1)} at the end (${os.cpus().length} CPUs)`;
    const statusMed = median(statusMs);
    const nodeMed = median(nodeMs);
    const swBest = Math.min(...switchMs);
    const reBest = Math.min(...reinstallMs);
    const fmtRuns = (xs: number[]): string => xs.map((m) => (m / 1000).toFixed(1)).join('/');
    return [
      {
        name: 'status --json warm latency, offline root (v2 staged + v1), vs node -e 0',
        ours: statusMed,
        reference: nodeMed,
        unit: 'ms',
        higherIsBetter: false,
        ratio: statusMed / nodeMed,
        note: `median of ${STATUS_RUNS} after ${STATUS_WARMUP} warm-up (runs interleaved with the reference); reference = bare Node start, the floor of any Node CLI; status min/max ${Math.min(...statusMs).toFixed(0)}/${Math.max(...statusMs).toFixed(0)} ms; bin/bootcfs is a sh wrapper that execs node; ${load}`,
      },
      {
        name: 'upgrade v1→v2 (switch + finalize, offline root): bytes written (root+ESP allocated growth) vs v2 image file tree',
        ours: written / 1e6,
        reference: tree.bytes / 1e6,
        unit: 'MB',
        higherIsBetter: false,
        ratio: written / tree.bytes,
        note: `written = ${((written / tree.bytes) * 100).toFixed(2)}% of the image; image tree ${tree.files} regular files (hard links once); imported layer ${layerBytes} B; growth: root ${MB(growth.root)} (${growth.newObjects} new objects ${MB(growth.objects)}, of which the v2 composefs (EROFS) image ${MB(growth.erofs)}; state/ ${MB(growth.state)} = the v2 deployment's /etc copy + origin; streams ${MB(growth.streams)}), ESP ${MB(growth.esp)}; after switch alone ${MB(growth.afterSwitch)}; switch process tree /proc io: write_bytes ${MB(io.writeBytes)} (cancelled ${MB(io.cancelledWriteBytes)}), wchar ${MB(io.wchar)}; switch ${fmtRuns(switchMs)} s, finalize ${fmtRuns(finalizeMs)} s (runs)`,
      },
      {
        name: 'upgrade v1→v2 (switch, offline root) wall time vs install to-filesystem of v2 into fresh dirs',
        ours: swBest / 1000,
        reference: reBest / 1000,
        unit: 's',
        higherIsBetter: false,
        ratio: swBest / reBest,
        note: `best of ${RUNS}; switch ${fmtRuns(switchMs)} s, re-install ${fmtRuns(reinstallMs)} s; finalize (not included) ${fmtRuns(finalizeMs)} s; sync before each, warm page cache; ${load}`,
      },
    ];
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
