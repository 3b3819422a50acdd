/**
 * Day-2 commands end to end in a booted guest (issue 6), in one QEMU run (OVMF, TCG, the guest reboots
 * itself): the demo image's v1 and v2 are pushed with skopeo to a real registry (Debian's docker-registry
 * on the host's loopback, reached from the guest as 10.0.2.2 through QEMU's user network); v1 is installed
 * with `bootcfs install to-disk` (unsealed, BLS); a test hook written offline into the deployment's /etc
 * (/etc/bootcfs-test-hook, run by the image's boot report) does one step per boot, counted in /var:
 *   boot 1 (v1): edit /etc/bootcfs-demo.conf, add /etc/local-added, `bootcfs switch docker://…/demo:v2
 *                --tls-verify=false`, `systemctl reboot` (bootcfs-finalize-staged.service merges /etc and
 *                swaps the entries at shutdown);
 *   boot 2 (v2): booted = v2 (its new file exists), the local /etc edits are kept (local wins over v2's
 *                release=2), rollback = v1; `bootcfs rollback`, reboot;
 *   boot 3 (v1): booted = v1 again, with v1's own /etc (edited, release=1), rollback = v2.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { isRoot } from '../helpers/ref.js';
import { requireFirmwareTools, runOvmf, setupModeVars } from '../helpers/ovmf.js';
import { buildOsImage, waitForNoOtherVm, type OsImage } from '../helpers/os-image.js';
import { installToDisk, writeEtcFile } from '../helpers/installed-disk.js';
import { skopeoCopy, startRegistry, type RegistryServer } from '../helpers/registry.js';

const FATAL = /bootcfs-setup-root: FATAL: (.*)/;
const SHELL_OFFERED = /Entering emergency mode|Give root password|Press Enter for maintenance|You are in (emergency|rescue) mode|dracut:\/#|\(initramfs\)/;
const HOOK_FAIL = /BOOTCFS-HOOK FAIL (.*)/;
const THIRD_REPORT = /(?:BOOTCFS-REPORT done[\s\S]*?){3}/;

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

/**
 * The guest's test hook: one step per boot (phase counter in /var, which every deployment shares). With
 * `powerCut`, boot 1 stages v2 and then waits for the power cut (no reboot, nothing finalized), and later
 * boots only report.
 */
function hookScript(registryRef: string, powerCut = false): string {
  return `#!/bin/sh
# bootcfs upgrade-boot test hook (written offline by test/vm/upgrade-boot.test.ts)
PATH=/usr/sbin:/usr/bin:/sbin:/bin
S=/var/lib/bootcfs-test-phase
phase=$(cat $S 2>/dev/null || echo 0)
echo "phase $phase"
echo "v2-file $(cat /usr/share/bootcfs-demo/v2 2>&1)"
echo "local-added $(cat /etc/local-added 2>&1)"
echo "etc $(tr '\\n' ' ' < /etc/bootcfs-demo.conf)"
echo "boot-mount $(findmnt -n -o SOURCE,TARGET,FSTYPE /boot 2>&1 | tr '\\n' ' ')"
if [ ! -d /boot/loader/entries ] && [ ! -d /efi/loader/entries ] && [ ! -d /boot/efi/loader/entries ]; then
  # systemd did not mount the ESP (see the esp line of the boot report): mount it for bootcfs
  mount -t vfat /dev/vda1 /boot > /tmp/esp-mount 2>&1
  echo "esp-mounted-by-hook $? $(tr '\\n' ' ' < /tmp/esp-mount)"
fi
step() { # NAME COMMAND...: runs it, prints its output and exit status
  n=$1; shift
  "$@" > /tmp/hook-out 2>&1; rc=$?
  sed "s/^/$n: /" /tmp/hook-out
  echo "$n-rc $rc"
  return $rc
}
[ "$phase" = 0 ] || echo "status $(bootcfs status --json 2>&1 | tr -d '\\n' | tr -s ' ' ' ')"
case $phase in
0)
  printf 'local=edited-on-v1\\n' >> /etc/bootcfs-demo.conf
  echo 'added locally on v1' > /etc/local-added
  mkdir -p /etc/systemd/network
  printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nAddress=10.0.2.15/24\\nGateway=10.0.2.2\\n' > /etc/systemd/network/10-qemu-user.network
  systemctl start systemd-networkd
  up=no
  for i in $(seq 1 60); do
    if bash -c 'exec 3<>/dev/tcp/${registryRef.split('/')[0]!.replace(':', '/')}' 2>/dev/null; then up=yes; break; fi
    sleep 1
  done
  echo "registry-reachable $up after $i s"
  echo "networkctl $(networkctl --no-pager list 2>&1 | tr '\\n' ' ')"
  t0=$(cut -d' ' -f1 /proc/uptime)
  if step switch bootcfs switch --quiet --tls-verify=false docker://${registryRef}; then
    echo "switch-seconds $(awk -v a=$t0 '{print $1 - a}' /proc/uptime)"
    echo "status-staged $(bootcfs status --json 2>&1 | tr -d '\\n' | tr -s ' ' ' ')"
    echo 1 > $S; sync
${powerCut ? '    echo "staged: waiting for the power cut"\n    sleep 600' : '    echo "rebooting"\n    systemctl reboot --no-block'}
  else
    echo "FAIL switch"
  fi
  ;;
${powerCut ? '1)\n  echo "final"\n  ;;\n' : ''}1)
  if step rollback bootcfs rollback; then
    echo "status-rollback-queued $(bootcfs status --json 2>&1 | tr -d '\\n' | tr -s ' ' ' ')"
    echo 2 > $S; sync
    echo "rebooting"
    systemctl reboot --no-block
  else
    echo "FAIL rollback"
  fi
  ;;
*)
  echo "final"
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

test('v1 → /etc edits → switch to v2 from a registry → reboot (finalize) → v2 with the edits → rollback → reboot → v1', { timeout: 30 * 60_000 }, async () => {
  registry = await startRegistry();
  const t0 = Date.now();
  for (const tag of ['v1', 'v2']) skopeoCopy(`oci:${image.layout}:${tag}`, `docker://${registry.host}/demo:${tag}`, ['--dest-tls-verify=false']);
  console.log(`# pushed v1, v2 to ${registry.host}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const d = installToDisk(path.join(work, 'disk.img'), `oci:${image.layout}:v1`, ['--allow-missing-verity']);
  console.log(`# install to-disk v1: ${(d.wallMs / 1000).toFixed(1)} s, deployment ${d.digest.slice(0, 16)}…`);
  assert.equal(d.bootType, 'bls');
  const v1 = d.digest;
  const registryRef = `10.0.2.2:${registry.port}/demo:v2`;
  writeEtcFile(d, v1, 'bootcfs-test-hook', hookScript(registryRef), 0o755, work);

  const waited = await waitForNoOtherVm();
  if (waited > 2000) console.log(`# waited ${(waited / 1000).toFixed(1)} s for another VM to finish`);
  const r = await runOvmf({
    disk: d.disk, vars: setupModeVars(path.join(work, 'vars.fd')), secureBoot: false, allowReboot: true, network: 'user', memMiB: 1536,
    timeoutMs: 25 * 60_000, until: new RegExp(`${THIRD_REPORT.source}|${FATAL.source}|${SHELL_OFFERED.source}|${HOOK_FAIL.source}`),
  });
  await fsp.writeFile(path.join(work, 'serial.log'), r.serial);
  await fsp.writeFile('/var/tmp/bootcfs-upgrade-boot-serial.log', r.serial);
  const b = boots(r.serial);
  const uptimes = b.map((x) => x.report.get('uptime') ?? '?');
  console.log(`# one QEMU run with ${b.length} boots: ${(r.durationMs / 1000).toFixed(1)} s; report at uptime ${uptimes.join(' / ')} s; switch took ${b[0]?.hook.get('switch-seconds') ?? '?'} s in the guest`);
  for (const [i, x] of b.entries()) console.log(`# boot ${i + 1} hook:\n${x.hookLines.map((l) => `#   ${l.slice(0, 300)}`).join('\n')}`);
  assert.doesNotMatch(r.serial, FATAL, tail(r.serial));
  assert.doesNotMatch(r.serial, SHELL_OFFERED, tail(r.serial));
  assert.doesNotMatch(r.serial, HOOK_FAIL, tail(r.serial));
  assert.ok(r.matched && b.length === 3, `expected three boot reports, got ${b.length} (timed out: ${r.timedOut}):\n${tail(r.serial)}`);

  // boot 1: v1, edits made, v2 staged from the registry
  const [b1, b2, b3] = b as [typeof b[0], typeof b[0], typeof b[0]];
  assert.equal(b1.hook.get('phase'), '0');
  assert.equal(parseStatus(b1.report.get('status'), 'boot 1').status?.booted?.composefs?.verity, v1);
  assert.match(b1.report.get('etc')!, /release=1/);
  assert.match(b1.hook.get('v2-file')!, /No such file/);
  assert.equal(b1.hook.get('registry-reachable')?.split(' ')[0], 'yes', 'the guest reaches the registry');
  assert.equal(b1.hook.get('switch-rc'), '0', b1.hookLines.join('\n'));
  const staged = parseStatus(b1.hook.get('status-staged'), 'boot 1 after switch').status;
  const v2 = staged?.staged?.composefs?.verity;
  assert.ok(v2 && v2 !== v1, `switch staged a new deployment: ${b1.hook.get('status-staged')}`);
  assert.equal(staged?.booted?.composefs?.verity, v1);
  assert.equal(staged?.staged?.image?.version, '2');
  assert.match(b1.text, /Finalized staged deployment [0-9a-f]+/, 'the finalize unit finalized at shutdown');

  // boot 2: v2 booted, local /etc edits kept, v1 is the rollback
  assert.equal(b2.hook.get('phase'), '1');
  const s2 = parseStatus(b2.hook.get('status'), 'boot 2 (ESP mounted)').status;
  assert.equal(s2?.booted?.composefs?.verity, v2, 'v2 is booted');
  assert.equal(s2?.rollback?.composefs?.verity, v1, 'v1 is the rollback');
  assert.equal(s2?.booted?.image?.version, '2');
  assert.match(b2.report.get('cmdline')!, new RegExp(`composefs=\\??${v2}`));
  assert.match(b2.report.get('root')!, new RegExp(`^composefs:${v2} `));
  assert.match(b2.hook.get('v2-file')!, /exists only in v2/);
  assert.match(b2.hook.get('etc')!, /release=1 local=edited-on-v1/, 'the locally edited file wins over v2\'s change');
  assert.equal(b2.hook.get('local-added'), 'added locally on v1');
  assert.equal(b2.hook.get('rollback-rc'), '0', b2.hookLines.join('\n'));

  // boot 3: v1 again, v2 is the rollback
  assert.equal(b3.hook.get('phase'), '2');
  const s3 = parseStatus(b3.hook.get('status'), 'boot 3 (ESP mounted)').status;
  assert.equal(s3?.booted?.composefs?.verity, v1, 'v1 is booted again');
  assert.equal(s3?.rollback?.composefs?.verity, v2, 'v2 is the rollback');
  assert.match(b3.report.get('cmdline')!, new RegExp(`composefs=\\??${v1}`));
  assert.match(b3.hook.get('v2-file')!, /No such file/);
  assert.match(b3.hook.get('etc')!, /release=1 local=edited-on-v1/, 'v1 keeps its own (edited) /etc');
  assert.equal(b3.hook.get('local-added'), 'added locally on v1');
});

test('power cut right after staging (no shutdown, nothing finalized) → the old deployment boots, nothing staged', { timeout: 30 * 60_000 }, async () => {
  registry ??= await startRegistry();
  for (const tag of ['v1', 'v2']) skopeoCopy(`oci:${image.layout}:${tag}`, `docker://${registry.host}/demo:${tag}`, ['--dest-tls-verify=false']);
  const d = installToDisk(path.join(work, 'disk-cut.img'), `oci:${image.layout}:v1`, ['--allow-missing-verity']);
  const v1 = d.digest;
  writeEtcFile(d, v1, 'bootcfs-test-hook', hookScript(`10.0.2.2:${registry.port}/demo:v2`, true), 0o755, work);
  const vars = setupModeVars(path.join(work, 'vars-cut.fd'));
  await waitForNoOtherVm();
  const STAGED = /BOOTCFS-HOOK staged: waiting for the power cut/;
  const r1 = await runOvmf({
    disk: d.disk, vars, varsInPlace: true, secureBoot: false, network: 'user', memMiB: 1536, timeoutMs: 15 * 60_000,
    until: new RegExp(`${STAGED.source}|${FATAL.source}|${SHELL_OFFERED.source}|${HOOK_FAIL.source}`),
  });
  await fsp.writeFile('/var/tmp/bootcfs-upgrade-boot-cut1-serial.log', r1.serial);
  const c1 = boots(r1.serial)[0];
  console.log(`# power cut run 1: ${(r1.durationMs / 1000).toFixed(1)} s (QEMU killed after staging); switch ${c1?.hook.get('switch-seconds') ?? '?'} s`);
  assert.ok(r1.matched && STAGED.test(r1.serial), `v2 was not staged:\n${tail(r1.serial)}`);
  const v2 = parseStatus(c1!.hook.get('status-staged'), 'staged').status?.staged?.composefs?.verity;
  assert.ok(v2 && v2 !== v1);

  // the same machine (NIC included: without it the disk's PCI address moves and OVMF's stored boot order misses it)
  const r2 = await runOvmf({
    disk: d.disk, vars, varsInPlace: true, secureBoot: false, network: 'user', memMiB: 1536, timeoutMs: 10 * 60_000,
    until: new RegExp(`BOOTCFS-REPORT done|${FATAL.source}|${SHELL_OFFERED.source}`),
  });
  await fsp.writeFile('/var/tmp/bootcfs-upgrade-boot-cut2-serial.log', r2.serial);
  const c2 = boots(r2.serial)[0];
  console.log(`# power cut run 2: ${(r2.durationMs / 1000).toFixed(1)} s to the report`);
  assert.doesNotMatch(r2.serial, FATAL, tail(r2.serial));
  assert.doesNotMatch(r2.serial, SHELL_OFFERED, tail(r2.serial));
  assert.ok(c2?.report.has('done'), `no boot report after the power cut:\n${tail(r2.serial)}`);
  assert.equal(c2.hook.get('phase'), '1');
  const s = parseStatus(c2.hook.get('status'), 'after the power cut').status;
  assert.equal(s?.booted?.composefs?.verity, v1, 'the old deployment boots: nothing was finalized');
  assert.equal(s?.staged ?? null, null, 'nothing is staged after a power cut (the marker lived in /run)');
  assert.match(c2.report.get('cmdline')!, new RegExp(`composefs=\\??${v1}`));
  assert.match(c2.hook.get('v2-file')!, /No such file/);
  assert.match(c2.hook.get('etc')!, /release=1 local=edited-on-v1/);
});
