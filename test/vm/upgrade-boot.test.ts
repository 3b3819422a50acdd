/**
 * Day-2 commands end to end in a booted guest (issue 6), in one QEMU run per scenario (OVMF, TCG, the guest
 * reboots itself): images are pushed with skopeo to a real registry (Debian's docker-registry on the host's
 * loopback, reached from the guest as 10.0.2.2 through QEMU's user network); v1 is installed with
 * `bootcfs install to-disk --target-imgref docker://…/demo:stable` (unsealed, BLS), so `bootcfs upgrade`
 * follows the registry's `stable` tag. A test hook written offline into the deployment's /etc
 * (/etc/bootcfs-test-hook, run by the image's boot report) does one step per boot, counted in /var:
 *   boot 1 (v1): edit /etc/bootcfs-demo.conf, add /etc/local-added; `upgrade --check` (an update: stable is
 *                v2), `upgrade` (stages v2), `upgrade --apply` (reboots; bootcfs-finalize-staged.service
 *                merges /etc and swaps the entries at shutdown);
 *   boot 2 (v2): booted = v2 (its new file exists), the local /etc edits are kept (local wins over v2's
 *                release=2), rollback = v1; `bootcfs rollback`, reboot;
 *   boot 3 (v1): booted = v1 again, with v1's own /etc (edited, release=1), rollback = v2;
 *   then N upgrade cycles: the hook asks for cycle k, the host pushes to `stable` a new build (v2 or v1
 *   alternately, plus a layer with /usr/share/bootcfs-demo/cycle = k), the guest polls `upgrade --check`
 *   until it sees it, then `upgrade --apply`; each boot reports the ESP, repository and state usage and
 *   runs `bootcfs internals fsck` after the rollback and after the last cycle. N = 2 in CI, 20 in
 *   `npm run test:full`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, promises as fsp, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cases, isRoot } from '../helpers/ref.js';
import { requireFirmwareTools, runOvmf, setupModeVars } from '../helpers/ovmf.js';
import { buildOsImage, waitForNoOtherVm, type OsImage } from '../helpers/os-image.js';
import { installToDisk, writeEtcFile } from '../helpers/installed-disk.js';
import { skopeoCopy, startRegistry, type RegistryServer } from '../helpers/registry.js';
import { buildTar, deriveImage } from '../helpers/oci-layout.js';
import { Rng } from '../helpers/rng.js';

const FATAL = /bootcfs-setup-root: FATAL: (.*)/;
const SHELL_OFFERED = /Entering emergency mode|Give root password|Press Enter for maintenance|You are in (emergency|rescue) mode|dracut:\/#|\(initramfs\)/;
const HOOK_FAIL = /BOOTCFS-HOOK FAIL (.*)/;
const FINAL = /BOOTCFS-HOOK final/;

const work = mkdtempSync('/var/tmp/bootcfs-upgrade-boot-');
let image: OsImage;
let registry: RegistryServer | undefined;
after(async () => {
  await registry?.stop();
  if (process.env.BOOTCFS_KEEP_VM_WORK) console.log(`# kept ${work}`);
  else await fsp.rm(work, { recursive: true, force: true });
});

before(() => {
  if (!isRoot) assert.fail('this test needs root (OS image build, loop devices to write the test hook offline), as CI runs');
  requireFirmwareTools();
  image = buildOsImage();
  console.log(`# os image: ${image.layout} (${image.cached ? 'cached' : 'built'} in ${(image.buildMs / 1000).toFixed(1)} s)`);
});

/** The serial log, also written as it arrives (tail -f it while a long run goes on). */
function liveLog(file: string): (serial: string) => void {
  writeFileSync(file, '');
  let written = 0;
  return (serial) => {
    if (serial.length > written) {
      appendFileSync(file, serial.slice(written));
      written = serial.length;
    }
  };
}

/** Build `k` of the cycle images: v2 (odd k) or v1 (even k) plus /usr/share/bootcfs-demo/cycle. */
function cycleImage(k: number): { ref: string; base: 'v1' | 'v2'; version: string } {
  const base = k % 2 === 1 ? 'v2' : 'v1';
  const T = 1_767_225_600; // 2026-01-01, as the demo image
  const dir = (p: string) => ({ path: p, type: 'dir' as const, mode: 0o755, mtimeSec: T });
  const tar = buildTar([dir('usr'), dir('usr/share'), dir('usr/share/bootcfs-demo'),
    { path: 'usr/share/bootcfs-demo/cycle', type: 'reg', mode: 0o644, mtimeSec: T, content: Buffer.from(`cycle ${k}\n`) }]);
  const version = `${base.slice(1)}.${k}`;
  const out = path.join(work, 'cycles');
  deriveImage(image.layout, base, out, `cycle-${k}`, tar, { 'org.opencontainers.image.version': version });
  return { ref: `oci:${out}:cycle-${k}`, base, version };
}

/** Shell lines the hook uses: QEMU user network up, registry reachable (HOST:PORT). */
function netScript(hostPort: string): string {
  return `net() {
  if [ ! -f /etc/systemd/network/10-qemu-user.network ]; then
    mkdir -p /etc/systemd/network
    printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nAddress=10.0.2.15/24\\nGateway=10.0.2.2\\n' > /etc/systemd/network/10-qemu-user.network
  fi
  systemctl start systemd-networkd
  up=no
  for i in $(seq 1 60); do
    if bash -c 'exec 3<>/dev/tcp/${hostPort.replace(':', '/')}' 2>/dev/null; then up=yes; break; fi
    sleep 1
  done
  echo "registry-reachable $up after $i s"
}`;
}

const COMMON_HOOK = `PATH=/usr/sbin:/usr/bin:/sbin:/bin
S=/var/lib/bootcfs-test-phase
phase=$(cat $S 2>/dev/null || echo 0)
echo "phase $phase"
echo "v2-file $(cat /usr/share/bootcfs-demo/v2 2>&1)"
echo "cycle-file $(cat /usr/share/bootcfs-demo/cycle 2>&1)"
echo "local-added $(cat /etc/local-added 2>&1)"
echo "etc $(tr '\\n' ' ' < /etc/bootcfs-demo.conf)"
echo "boot-mount $(findmnt -n -o SOURCE,TARGET,FSTYPE /boot 2>&1 | tr '\\n' ' ')"
echo "usage esp-files=$(find /boot/ -type f | wc -l) esp-bytes=$(du -sb /boot/ | cut -f1) repo-files=$(find /sysroot/composefs -type f | wc -l) repo-bytes=$(du -sb /sysroot/composefs | cut -f1) states=$(ls /sysroot/state/deploy | wc -l)"
step() { # NAME COMMAND...: runs it, prints its output and exit status
  n=$1; shift
  "$@" > /tmp/hook-out 2>&1; rc=$?
  sed "s/^/$n: /" /tmp/hook-out
  echo "$n-rc $rc"
  return $rc
}
json() { bootcfs status --json 2>&1 | tr -d '\\n' | tr -s ' ' ' '; }
[ "$phase" = 0 ] || echo "status $(json)"
`;

/**
 * The main scenario's hook (see the file comment); \`cycles\` upgrade cycles after the rollback.
 */
function hookScript(hostPort: string, cycles: number): string {
  return `#!/bin/sh
# bootcfs upgrade-boot test hook (written offline by test/vm/upgrade-boot.test.ts)
${COMMON_HOOK}${netScript(hostPort)}
U="--tls-verify=false"
case $phase in
0)
  printf 'local=edited-on-v1\\n' >> /etc/bootcfs-demo.conf
  echo 'added locally on v1' > /etc/local-added
  net
  step check bootcfs upgrade --check $U
  t0=$(cut -d' ' -f1 /proc/uptime)
  if step upgrade bootcfs upgrade --quiet $U; then
    echo "upgrade-seconds $(awk -v a=$t0 '{print $1 - a}' /proc/uptime)"
    echo "status-staged $(json)"
    echo 1 > $S; sync
    echo "applying"
    bootcfs upgrade --apply --quiet $U
    echo "apply-returned $?"
  else
    echo "FAIL upgrade"
  fi
  ;;
1)
  step fsck bootcfs internals fsck
  if step rollback bootcfs rollback; then
    echo "status-rollback-queued $(json)"
    echo 2 > $S; sync
    echo "rebooting"
    systemctl reboot --no-block
  else
    echo "FAIL rollback"
  fi
  ;;
*)
  k=$((phase - 1))
  if [ $k -gt ${cycles} ]; then
    step fsck bootcfs internals fsck
    echo "final"
    exit 0
  fi
  net
  md() { bootcfs upgrade --check --json $U 2>/dev/null | sed -n 's/^ *"manifestDigest": "\\(sha256:[0-9a-f]*\\)".*/\\1/p'; }
  before=$(md)
  echo "cycle-want $k (stable is $before)"
  found=no
  for i in $(seq 1 90); do
    now=$(md)
    if [ -n "$now" ] && [ "$now" != "$before" ]; then found=yes; break; fi
    sleep 2
  done
  echo "cycle-found $k $found after $i polls"
  [ $found = yes ] || { echo "FAIL cycle $k: no update appeared"; exit 0; }
  echo $((phase + 1)) > $S; sync
  t0=$(cut -d' ' -f1 /proc/uptime)
  bootcfs upgrade --apply --quiet $U > /tmp/apply-out 2>&1
  rc=$?
  sed 's/^/apply: /' /tmp/apply-out
  echo "apply-returned $rc after $(awk -v a=$t0 '{print $1 - a}' /proc/uptime) s"
  [ $rc = 0 ] || echo "FAIL cycle $k: upgrade --apply exited $rc"
  ;;
esac
`;
}

interface Status {
  status?: {
    booted?: { composefs?: { verity?: string }; image?: { version?: string | null; image?: { image?: string } } | null } | null;
    rollback?: { composefs?: { verity?: string }; image?: { version?: string | null } | null } | null;
    staged?: { composefs?: { verity?: string }; image?: { version?: string | null; image?: { image?: string } } | null } | null;
  };
}

/** The report and hook lines of each boot (the serial log split at each `BOOTCFS-REPORT uptime`). */
function boots(serial: string): Array<{ report: Map<string, string>; hook: Map<string, string>; hookLines: string[]; text: string }> {
  const parts = serial.split(/(?=BOOTCFS-REPORT uptime )/).slice(1);
  return parts.map((text) => {
    const report = new Map<string, string>();
    const hook = new Map<string, string>();
    const hookLines: string[] = [];
    for (const line of text.split('\n')) {
      const r = /BOOTCFS-REPORT (\S+) ?(.*)$/.exec(line);
      if (r) report.set(r[1]!, r[2]!.trim());
      const h = /BOOTCFS-HOOK (.*)$/.exec(line);
      if (h) {
        hookLines.push(h[1]!);
        const kv = /^(\S+) ?(.*)$/.exec(h[1]!);
        if (kv && !hook.has(kv[1]!)) hook.set(kv[1]!, kv[2]!.trim());
      }
    }
    return { report, hook, hookLines, text };
  });
}

function parseStatus(s: string | undefined, what: string): Status {
  try {
    return JSON.parse(s ?? '') as Status;
  } catch {
    assert.fail(`${what}: bootcfs status --json did not print JSON: ${s}`);
  }
}

const tail = (s: string, n = 80): string => s.split('\n').slice(-n).join('\n');

function usageOf(line: string | undefined): Record<string, number> {
  const u: Record<string, number> = {};
  for (const m of (line ?? '').matchAll(/([a-z-]+)=([0-9]+)/g)) u[m[1]!] = Number(m[2]);
  return u;
}

const CYCLES = cases(2, 20);
test('v1 → /etc edits → upgrade to v2 from a registry → reboot (finalize) → v2 with the edits → rollback → v1 → N upgrade cycles', { timeout: (40 + 8 * CYCLES) * 60_000 }, async () => {
  const N = CYCLES;
  registry = await startRegistry();
  const t0 = Date.now();
  skopeoCopy(`oci:${image.layout}:v2`, `docker://${registry.host}/demo:stable`, ['--dest-tls-verify=false']);
  console.log(`# pushed v2 as demo:stable to ${registry.host}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const hostPort = `10.0.2.2:${registry.port}`;

  const d = installToDisk(path.join(work, 'disk.img'), `oci:${image.layout}:v1`, ['--allow-missing-verity', '--target-imgref', `docker://${hostPort}/demo:stable`]);
  console.log(`# install to-disk v1: ${(d.wallMs / 1000).toFixed(1)} s, deployment ${d.digest.slice(0, 16)}…`);
  assert.equal(d.bootType, 'bls');
  const v1 = d.digest;
  writeEtcFile(d, v1, 'bootcfs-test-hook', hookScript(hostPort, N), 0o755, work);

  // the host side of the cycles: when the guest asks for cycle k, push build k as demo:stable
  const pushed = new Map<number, { version: string; base: string; ms: number }>();
  const log = liveLog('/var/tmp/bootcfs-upgrade-boot-serial.log');
  let pushError: unknown;
  const onSerial = (serial: string): void => {
    log(serial);
    for (const m of serial.matchAll(/BOOTCFS-HOOK cycle-want (\d+)/g)) {
      const k = Number(m[1]);
      if (pushed.has(k) || pushError) continue;
      try {
        const p0 = Date.now();
        const c = cycleImage(k);
        skopeoCopy(c.ref, `docker://${registry!.host}/demo:stable`, ['--dest-tls-verify=false']);
        pushed.set(k, { version: c.version, base: c.base, ms: Date.now() - p0 });
      } catch (e) {
        pushError = e;
      }
    }
  };

  const waited = await waitForNoOtherVm();
  if (waited > 2000) console.log(`# waited ${(waited / 1000).toFixed(1)} s for another VM to finish`);
  const r = await runOvmf({
    disk: d.disk, vars: setupModeVars(path.join(work, 'vars.fd')), secureBoot: false, allowReboot: true, network: 'user', memMiB: 1536,
    timeoutMs: (25 + 7 * N) * 60_000 /* a cycle takes 4-5 min under TCG */, until: new RegExp(`${FINAL.source}|${FATAL.source}|${SHELL_OFFERED.source}|${HOOK_FAIL.source}`), onSerial,
  });
  await fsp.writeFile(path.join(work, 'serial.log'), r.serial);
  await fsp.writeFile('/var/tmp/bootcfs-upgrade-boot-serial.log', r.serial);
  if (pushError) throw pushError;
  const b = boots(r.serial);
  const uptimes = b.map((x) => x.report.get('uptime') ?? '?');
  console.log(`# one QEMU run with ${b.length} boots: ${(r.durationMs / 1000).toFixed(1)} s; report at uptime ${uptimes.join(' / ')} s; upgrade took ${b[0]?.hook.get('upgrade-seconds') ?? '?'} s in the guest`);
  for (const [i, x] of b.entries()) console.log(`# boot ${i + 1} hook:\n${x.hookLines.filter((l) => !l.startsWith('status ')).map((l) => `#   ${l.slice(0, 240)}`).join('\n')}`);
  assert.doesNotMatch(r.serial, FATAL, tail(r.serial));
  assert.doesNotMatch(r.serial, SHELL_OFFERED, tail(r.serial));
  assert.doesNotMatch(r.serial, HOOK_FAIL, tail(r.serial));
  assert.ok(r.matched && b.length === 3 + N, `expected ${3 + N} boot reports, got ${b.length} (timed out: ${r.timedOut}):\n${tail(r.serial)}`);

  // boot 1: v1, edits made, an update found, v2 staged from the registry, --apply rebooted
  const [b1, b2, b3] = b as [typeof b[0], typeof b[0], typeof b[0]];
  assert.equal(b1.hook.get('phase'), '0');
  assert.equal(parseStatus(b1.report.get('status'), 'boot 1').status?.booted?.composefs?.verity, v1);
  assert.match(b1.report.get('etc')!, /release=1/);
  assert.match(b1.hook.get('v2-file')!, /No such file/);
  assert.equal(b1.hook.get('registry-reachable')?.split(' ')[0], 'yes', 'the guest reaches the registry');
  assert.equal(b1.hook.get('check-rc'), '0', b1.hookLines.join('\n'));
  assert.ok(b1.hookLines.some((l) => l.startsWith(`check: Update available for docker://${hostPort}/demo:stable`)), b1.hookLines.join('\n'));
  assert.equal(b1.hook.get('upgrade-rc'), '0', b1.hookLines.join('\n'));
  const staged = parseStatus(b1.hook.get('status-staged'), 'boot 1 after upgrade').status;
  const v2 = staged?.staged?.composefs?.verity;
  assert.ok(v2 && v2 !== v1, `upgrade staged a new deployment: ${b1.hook.get('status-staged')}`);
  assert.equal(staged?.booted?.composefs?.verity, v1);
  assert.equal(staged?.staged?.image?.version, '2');
  assert.equal(staged?.staged?.image?.image?.image, `${hostPort}/demo:stable`);
  assert.match(b1.text, /Finalizing staged deployment [0-9a-f]+: merging \/etc/, 'the finalize unit ran at shutdown');
  assert.match(b1.text, /Finalized staged deployment [0-9a-f]+/, 'the finalize unit finalized at shutdown');
  assert.doesNotMatch(b1.text, /BOOTCFS-HOOK apply-returned [1-9]/, 'upgrade --apply rebooted without an error');

  // boot 2: v2 booted, local /etc edits kept, v1 is the rollback
  assert.equal(b2.hook.get('phase'), '1');
  const s2 = parseStatus(b2.hook.get('status'), 'boot 2').status;
  assert.equal(s2?.booted?.composefs?.verity, v2, 'v2 is booted');
  assert.equal(s2?.rollback?.composefs?.verity, v1, 'v1 is the rollback');
  assert.equal(s2?.booted?.image?.version, '2');
  assert.match(b2.report.get('cmdline')!, new RegExp(`composefs=\\??${v2}`));
  assert.match(b2.report.get('root')!, new RegExp(`^composefs:${v2} `));
  assert.match(b2.hook.get('v2-file')!, /exists only in v2/);
  assert.match(b2.hook.get('etc')!, /release=1 local=edited-on-v1/, 'the locally edited file wins over v2\'s change');
  assert.equal(b2.hook.get('local-added'), 'added locally on v1');
  assert.equal(b2.hook.get('fsck-rc'), '0', b2.hookLines.join('\n'));
  assert.equal(b2.hook.get('rollback-rc'), '0', b2.hookLines.join('\n'));

  // boot 3: v1 again, v2 is the rollback
  assert.equal(b3.hook.get('phase'), '2');
  const s3 = parseStatus(b3.hook.get('status'), 'boot 3').status;
  assert.equal(s3?.booted?.composefs?.verity, v1, 'v1 is booted again');
  assert.equal(s3?.rollback?.composefs?.verity, v2, 'v2 is the rollback');
  assert.match(b3.report.get('cmdline')!, new RegExp(`composefs=\\??${v1}`));
  assert.match(b3.hook.get('v2-file')!, /No such file/);
  assert.match(b3.hook.get('etc')!, /release=1 local=edited-on-v1/, 'v1 keeps its own (edited) /etc');
  assert.equal(b3.hook.get('local-added'), 'added locally on v1');

  // the cycles: boot 3+k runs build k; the ESP, the repository and the state stay at two deployments
  const rows: Array<Record<string, number>> = [];
  let prev: string | undefined = s3?.booted?.composefs?.verity;
  for (let k = 1; k <= N; k++) {
    const bk = b[2 + k]!;
    const want = pushed.get(k);
    assert.ok(want, `cycle ${k} was pushed`);
    assert.equal(bk.hook.get('cycle-file'), `cycle ${k}`, `boot ${3 + k} runs build ${k}:\n${bk.hookLines.join('\n')}`);
    const st = parseStatus(bk.hook.get('status'), `cycle ${k}`).status;
    assert.equal(st?.booted?.image?.version, want.version);
    assert.equal(st?.rollback?.composefs?.verity, prev, `cycle ${k}: the previous build is the rollback`);
    assert.equal(st?.staged ?? null, null);
    assert.match(bk.hook.get('v2-file')!, want.base === 'v2' ? /exists only in v2/ : /No such file/);
    assert.match(bk.hook.get('etc')!, /local=edited-on-v1/, `cycle ${k}: the local /etc edit survives every upgrade`);
    prev = st?.booted?.composefs?.verity;
    rows.push(usageOf(bk.hook.get('usage')));
  }
  // bootcfs internals fsck (every object's content, the entries, the state) after the last cycle
  assert.equal(b[2 + N]!.hook.get('fsck-rc'), '0', b[2 + N]!.hookLines.join('\n'));
  console.log(`# cycles: ESP files ${rows.map((u) => u['esp-files']).join(',')}; ESP KiB ${rows.map((u) => Math.round(u['esp-bytes']! / 1024)).join(',')}; repository files ${rows.map((u) => u['repo-files']).join(',')}; repository MiB ${rows.map((u) => (u['repo-bytes']! / 2 ** 20).toFixed(1)).join(',')}; state dirs ${rows.map((u) => u.states).join(',')}; pushes ${[...pushed.values()].map((p) => p.ms).join(',')} ms`);
  for (const [i, u] of rows.entries()) {
    assert.equal(u.states, 2, `cycle ${i + 1}: two deployments' state (booted + rollback)`);
    assert.equal(u['esp-files'], rows[0]!['esp-files'], `cycle ${i + 1}: the ESP holds the same files as after the first cycle`);
    assert.ok(Math.abs(u['esp-bytes']! - rows[0]!['esp-bytes']!) <= 64 * 1024, `cycle ${i + 1}: ESP bytes stay flat`);
    assert.ok(Math.abs(u['repo-files']! - rows[0]!['repo-files']!) <= 4, `cycle ${i + 1}: repository file count stays flat (${u['repo-files']} vs ${rows[0]!['repo-files']})`);
    assert.ok(u['repo-bytes']! <= rows[0]!['repo-bytes']! * 1.02 + 65536, `cycle ${i + 1}: repository bytes stay flat`);
  }
});

/**
 * The power-cut scenario's hook: boot 1 starts `upgrade` and the host cuts the power while it runs;
 * boot 2 (v1, nothing staged) checks the repository (fsck), stages v2 and waits for the power cut (no
 * shutdown: nothing finalized); boot 3 (v1 again) stages again and reboots with `--apply` (the host cuts
 * the power while the finalize unit runs at shutdown); boot 4 checks and reports.
 */
function powerCutHook(hostPort: string): string {
  return `#!/bin/sh
# bootcfs upgrade-boot power-cut test hook (written offline by test/vm/upgrade-boot.test.ts)
${COMMON_HOOK}${netScript(hostPort)}
U="--tls-verify=false"
case $phase in
0)
  printf 'local=edited-on-v1\\n' >> /etc/bootcfs-demo.conf
  net
  echo 1 > $S; sync
  echo "upgrading: the power goes during the upgrade"
  bootcfs upgrade --quiet $U
  echo "upgrade-finished-before-the-cut $?"
  sleep 600
  ;;
1)
  step fsck bootcfs internals fsck
  net
  if step upgrade bootcfs upgrade --quiet $U; then
    echo "status-staged $(json)"
    echo 2 > $S; sync
    echo "staged: waiting for the power cut"
    sleep 600
  else
    echo "FAIL upgrade"
  fi
  ;;
2)
  net
  if step upgrade bootcfs upgrade --quiet $U; then
    echo 3 > $S; sync
    echo "staged again: rebooting, the power goes while finalizing"
    bootcfs upgrade --apply --quiet $U
  else
    echo "FAIL upgrade"
  fi
  ;;
*)
  step fsck bootcfs internals fsck
  echo "final"
  ;;
esac
`;
}

test('power cut during the upgrade, right after staging, and during finalize at shutdown → the old or the new deployment boots, consistent', { timeout: 60 * 60_000 }, async () => {
  registry ??= await startRegistry();
  skopeoCopy(`oci:${image.layout}:v2`, `docker://${registry.host}/demo:stable`, ['--dest-tls-verify=false']);
  const hostPort = `10.0.2.2:${registry.port}`;
  const d = installToDisk(path.join(work, 'disk-cut.img'), `oci:${image.layout}:v1`, ['--allow-missing-verity', '--target-imgref', `docker://${hostPort}/demo:stable`]);
  const v1 = d.digest;
  writeEtcFile(d, v1, 'bootcfs-test-hook', powerCutHook(hostPort), 0o755, work);
  const vars = setupModeVars(path.join(work, 'vars-cut.fd'));
  // the same machine every run (NIC included: without it the disk's PCI address moves and OVMF's stored boot order misses it)
  const machine = { disk: d.disk, vars, varsInPlace: true, secureBoot: false, allowReboot: true, network: 'user' as const, memMiB: 1536 };
  const stops = `${FATAL.source}|${SHELL_OFFERED.source}|${HOOK_FAIL.source}`;
  const rng = new Rng(Number(process.env.BOOTCFS_SEED ?? 0x6f1a));
  const noBreakage = (serial: string): void => {
    assert.doesNotMatch(serial, FATAL, tail(serial));
    assert.doesNotMatch(serial, SHELL_OFFERED, tail(serial));
    assert.doesNotMatch(serial, HOOK_FAIL, tail(serial));
  };
  /** Cuts the power `delayMs` after `marker` first appears; the last console line before the cut. */
  const cutAfter = (marker: RegExp, delayMs: number, logFile: string) => {
    const log = liveLog(logFile);
    let timer: NodeJS.Timeout | undefined;
    const state = { lastLine: undefined as string | undefined, clear: () => clearTimeout(timer) };
    const onSerial = (serial: string, powerCut: () => void): void => {
      log(serial);
      if (timer === undefined && marker.test(serial)) {
        timer = setTimeout(() => {
          state.lastLine = serial.split('\n').filter((l) => l.trim()).slice(-1)[0];
          powerCut();
        }, delayMs);
      }
    };
    return { onSerial, state };
  };
  await waitForNoOtherVm();

  // 1. power cut while `upgrade` runs (it takes ~70 s in this TCG guest)
  const upgradeDelay = rng.int(3000, 60_000);
  const cut1 = cutAfter(/BOOTCFS-HOOK upgrading: the power goes during the upgrade/, upgradeDelay, '/var/tmp/bootcfs-upgrade-boot-cut1-serial.log');
  const r1 = await runOvmf({ ...machine, timeoutMs: 15 * 60_000, until: new RegExp(stops), onSerial: cut1.onSerial });
  cut1.state.clear();
  noBreakage(r1.serial);
  const finishedFirst = /BOOTCFS-HOOK upgrade-finished-before-the-cut/.test(r1.serial);
  console.log(`# power cut run 1: ${(r1.durationMs / 1000).toFixed(1)} s; cut ${upgradeDelay} ms after the upgrade started (${finishedFirst ? 'it had finished' : 'it was running'}; last line: ${cut1.state.lastLine?.slice(0, 160) ?? 'none'})`);
  assert.ok(r1.powerCut, `the power was not cut during the upgrade:\n${tail(r1.serial)}`);

  // 2. v1 boots, nothing staged, the repository passes fsck; v2 is staged, then the power goes
  const STAGED = /BOOTCFS-HOOK staged: waiting for the power cut/;
  const r2 = await runOvmf({ ...machine, timeoutMs: 20 * 60_000, until: new RegExp(`${STAGED.source}|${stops}`), onSerial: liveLog('/var/tmp/bootcfs-upgrade-boot-cut2-serial.log') });
  noBreakage(r2.serial);
  const c2 = boots(r2.serial)[0];
  console.log(`# power cut run 2: ${(r2.durationMs / 1000).toFixed(1)} s (QEMU killed after staging)`);
  assert.ok(r2.matched && STAGED.test(r2.serial), `v2 was not staged after the cut during the upgrade:\n${tail(r2.serial)}`);
  assert.equal(c2!.hook.get('phase'), '1');
  assert.equal(c2!.hook.get('fsck-rc'), '0', `bootcfs internals fsck after the cut during the upgrade:\n${c2!.hookLines.join('\n')}`);
  const s2 = parseStatus(c2!.hook.get('status'), 'after the cut during the upgrade').status;
  assert.equal(s2?.booted?.composefs?.verity, v1, 'the old deployment boots after a cut during the upgrade');
  assert.equal(s2?.staged ?? null, null, 'nothing is staged after a power cut (the marker lived in /run)');
  assert.match(c2!.hook.get('etc')!, /release=1 local=edited-on-v1/);
  const v2 = parseStatus(c2!.hook.get('status-staged'), 'staged').status?.staged?.composefs?.verity;
  assert.ok(v2 && v2 !== v1);

  // 3. v1 boots, nothing staged; it stages again and reboots; the power goes while finalize runs
  const finalizeDelay = rng.int(0, 4000);
  const cut3 = cutAfter(/Finalizing staged deployment [0-9a-f]+/, finalizeDelay, '/var/tmp/bootcfs-upgrade-boot-cut3-serial.log');
  const r3 = await runOvmf({ ...machine, timeoutMs: 20 * 60_000, until: new RegExp(`BOOTCFS-REPORT uptime[\\s\\S]*BOOTCFS-REPORT uptime|${stops}`), onSerial: cut3.onSerial });
  cut3.state.clear();
  noBreakage(r3.serial);
  const c3 = boots(r3.serial)[0];
  console.log(`# power cut run 3: ${(r3.durationMs / 1000).toFixed(1)} s; power cut ${finalizeDelay} ms after "Finalizing staged deployment" (last line before: ${cut3.state.lastLine?.slice(0, 160) ?? 'none'}); finalized before the cut: ${/Finalized staged deployment/.test(r3.serial)}`);
  assert.ok(c3?.report.has('status'), `no boot report after the power cut after staging:\n${tail(r3.serial)}`);
  assert.equal(c3!.hook.get('phase'), '2');
  const s3 = parseStatus(c3!.hook.get('status'), 'after the power cut after staging').status;
  assert.equal(s3?.booted?.composefs?.verity, v1, 'the old deployment boots: nothing was finalized');
  assert.equal(s3?.staged ?? null, null, 'nothing is staged after a power cut (the marker lived in /run)');
  assert.match(c3!.report.get('cmdline')!, new RegExp(`composefs=\\??${v1}`));
  assert.match(c3!.hook.get('v2-file')!, /No such file/);
  assert.ok(r3.powerCut, `the power was not cut during finalize:\n${tail(r3.serial)}`);

  // 4. after the cut during finalize: v1 (cut before the swap) or v2 (after), a consistent system either way
  const r4 = await runOvmf({ ...machine, timeoutMs: 25 * 60_000, until: new RegExp(`BOOTCFS-REPORT done|${stops}`), onSerial: liveLog('/var/tmp/bootcfs-upgrade-boot-cut4-serial.log') });
  noBreakage(r4.serial);
  const c4 = boots(r4.serial)[0];
  assert.ok(c4?.report.has('done'), `no boot report after the power cut during finalize:\n${tail(r4.serial)}`);
  const s4 = parseStatus(c4.hook.get('status'), 'after the power cut during finalize').status;
  const booted = s4?.booted?.composefs?.verity;
  console.log(`# power cut run 4: ${(r4.durationMs / 1000).toFixed(1)} s to the report; booted ${booted === v2 ? 'the new deployment (v2)' : booted === v1 ? 'the old deployment (v1)' : booted}`);
  assert.ok(booted === v1 || booted === v2, `the old or the new deployment boots, not ${booted}`);
  assert.equal(s4?.staged ?? null, null);
  assert.equal(c4.hook.get('fsck-rc'), '0', `bootcfs internals fsck after the cut:\n${c4.hookLines.join('\n')}`);
  assert.match(c4.hook.get('etc')!, /local=edited-on-v1/, 'the local /etc edit survives on whichever deployment boots');
  if (booted === v2) {
    assert.equal(s4?.rollback?.composefs?.verity, v1);
    assert.match(c4.hook.get('v2-file')!, /exists only in v2/);
  } else {
    assert.match(c4.hook.get('v2-file')!, /No such file/);
  }
});
