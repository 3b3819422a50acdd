/**
 * Boot time of an installed sealed system (issue 5, "Performance"): the demo OS image sealed with throwaway
 * keys, `bootcfs install to-disk`, booted under OVMF with Secure Boot enforced (QEMU TCG, 1 CPU — no KVM on
 * these hosts, so absolute times are ~5–10× a real machine's). Two boots of the same disk:
 *   first boot   setup-root also enables fs-verity on every object (once per install);
 *   second boot  the steady state.
 * Figures (kernel clock): setup-root done, and the boot report at multi-user (os-image/bootcfs-boot-report.sh
 * prints its uptime first thing). Each row's ratio is setup-root's share of the time to multi-user — the part
 * of the boot bootcfs owns — and the setup-root step itself (start → done) is in the note.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateSecureBootKeys } from '../src/secureboot/index.js';
import { enrollVars, runOvmf } from '../test/helpers/ovmf.js';
import { waitForNoOtherVm } from '../test/helpers/os-image.js';
import { bootReport, installToDisk } from '../test/helpers/installed-disk.js';
import type { BenchResult } from './result.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(here, '../..');
const BOOTCFS = path.join(REPO_ROOT, 'bin/bootcfs');

function must(cmd: string, args: string[]): Buffer {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.toString().slice(-2000)}`);
  return r.stdout;
}

export async function run(): Promise<BenchResult[]> {
  const layout = must('bash', [path.join(REPO_ROOT, 'scripts/build-os-image.sh')]).toString().trim().split('\n').pop()!;
  const work = mkdtempSync('/var/tmp/bootcfs-bench-boot-');
  try {
    const keys = await generateSecureBootKeys(path.join(work, 'keys'), { commonName: 'bootcfs bench' });
    must(BOOTCFS, ['container', 'build-sealed', `oci:${layout}:v1`, '--output', `oci:${work}/sealed:v1`, '--key', keys.db.files.key, '--cert', keys.db.files.crt]);
    const disk = installToDisk(path.join(work, 'disk.img'), `oci:${work}/sealed:v1`);
    const vars = enrollVars(path.join(work, 'vars.fd'), { pk: keys.PK.files.crt, kek: keys.KEK.files.crt, db: keys.db.files.crt, ownerGuid: keys.ownerGuid });
    const rows: BenchResult[] = [];
    for (const which of ['first boot (fs-verity enabled on every object)', 'second boot']) {
      await waitForNoOtherVm();
      const r = await runOvmf({ disk: disk.disk, vars, secureBoot: true, timeoutMs: 20 * 60_000, until: /BOOTCFS-REPORT done|bootcfs-setup-root: FATAL/, memMiB: 1536 });
      const rep = bootReport(r.serial);
      const done = /bootcfs-setup-root: done at ([0-9.]+)s: .*\(setup took ([0-9.]+)s -> ([0-9.]+)s\)/.exec(r.serial);
      const first = /first boot: fs-verity enabled on (\d+) objects and checked \(([0-9.]+)s -> ([0-9.]+)s\)/.exec(r.serial);
      if (!done || !rep.has('uptime')) throw new Error(`boot did not reach the report:\n${r.serial.split('\n').slice(-30).join('\n')}`);
      const setupDone = Number(done[1]);
      const multiUser = Number(rep.get('uptime'));
      const setupSpan = Number(done[3]) - Number(done[2]);
      rows.push({
        name: `sealed boot under Secure Boot, ${which}: setup-root done vs multi-user (kernel clock)`,
        ours: setupDone,
        reference: multiUser,
        unit: 's',
        higherIsBetter: false,
        ratio: setupDone / multiUser,
        note: `QEMU TCG, 1 CPU, OVMF; setup-root itself ${setupSpan.toFixed(1)} s = ${((setupSpan / multiUser) * 100).toFixed(0)}% of the time to multi-user${first ? ` (of which fs-verity on ${first[1]} objects ${(Number(first[3]) - Number(first[2])).toFixed(1)} s)` : ''}; ${(r.durationMs / 1000).toFixed(0)} s wall from QEMU start to the report; install to-disk ${(disk.wallMs / 1000).toFixed(1)} s`,
      });
      // the report times a second (warm) `bootcfs status --json` and a bare `node -e 0` in the guest
      const st = /warm=(\d+) node-floor=(\d+)/.exec(rep.get('status-ms') ?? '');
      if (which === 'second boot' && st) {
        rows.push({
          name: 'status --json warm latency on the booted system (sealed install, QEMU TCG guest), vs node -e 0 in the guest',
          ours: Number(st[1]),
          reference: Number(st[2]),
          unit: 'ms',
          higherIsBetter: false,
          ratio: Number(st[1]) / Number(st[2]),
          note: 'one run each in the boot report at multi-user (os-image/bootcfs-boot-report.sh); TCG makes both ~10× slower than on hardware; the offline-root row of the day2 suite is the host-speed figure',
        });
      }
    }
    return rows;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
