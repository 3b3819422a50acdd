/**
 * Day-2 commands on offline roots installed with `bootcfs install to-filesystem` into plain directories
 * (a tmp dir as ESP; nothing is mounted or booted): upgrade (--check, staging exactly as bootc lays out
 * loader/entries.staged), composefs-finalize-staged (/etc merge, swap), rollback (rollbackQueued,
 * revert, discarding a staged deployment), switch (no-op to the current image), download-only, the /etc
 * conflict refusal, gc (what goes, what stays) and delete-deployment, and N upgrade cycles alternating
 * v1/v2 images that must leave the ESP and the repository bounded. "Booted" is simulated by giving the
 * library a kernel command line. Needs root (install keeps owners).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import path from 'node:path';
import { cases, isRoot } from '../helpers/ref.js';
import { bootDigestOf, cli, cliWithProgress, installSystem, ROOT_UUID, setCurrent, usage, writeImage, type System, type Variant } from '../helpers/deploy-fixture.js';
import { readHostStatus } from '../../src/deploy/status.js';
import { deploymentComplete, listEntries, readDeploymentView, type DeployContext } from '../../src/deploy/deployments.js';
import { rollback } from '../../src/deploy/rollback.js';
import { collectGarbage } from '../../src/deploy/gc.js';
import { deleteDeployment } from '../../src/deploy/delete.js';
import { fsverityDigest } from '../../src/fsverity/digest.js';

const work = fs.mkdtempSync('/var/tmp/bootcfs-deploy-test-');
after(() => fs.rmSync(work, { recursive: true, force: true }));

before(() => {
  if (!isRoot) assert.fail('deploy tests need root (install keeps file owners), as CI runs');
});

const quiet = { log: () => undefined, warn: () => undefined };
const ctxOf = (s: System, booted?: string): DeployContext => ({ sysroot: s.root, bootDir: s.esp, runDir: s.run, ...(booted ? { cmdline: `root=UUID=${ROOT_UUID} rw composefs=${booted}` } : {}), ...quiet });
const status = (s: System, booted?: string) => readHostStatus({ sysroot: s.root, bootDir: s.esp, runDir: s.run, ...(booted ? { cmdline: `rw composefs=${booted}` } : {}), warn: () => undefined });

/** Every path under the system's directories with type, size, mode, mtime and content hash. */
function snapshot(s: System): string {
  const lines: string[] = [];
  const walk = (base: string, rel: string): void => {
    const p = path.join(base, rel);
    const st = fs.lstatSync(p);
    let h = '';
    if (st.isFile()) h = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    else if (st.isSymbolicLink()) h = fs.readlinkSync(p);
    lines.push(`${base}:${rel} ${st.mode.toString(8)} ${st.size} ${st.mtimeMs} ${h}`);
    if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) walk(base, path.join(rel, n));
  };
  for (const d of [s.root, s.esp, s.run]) walk(d, '');
  return lines.join('\n');
}

const entriesDir = (s: System, staged = false): string => path.join(s.esp, staged ? 'loader/entries.staged' : 'loader/entries');
const readEntries = (s: System, staged = false): Record<string, string> =>
  Object.fromEntries(fs.readdirSync(entriesDir(s, staged)).sort().map((n) => [n, fs.readFileSync(path.join(entriesDir(s, staged), n), 'utf8')]));

function type1Entry(o: { n: number; v: Variant; digest: string; kargs: string; primary: boolean; dirDigest?: string }): string {
  const dir = `/EFI/Linux/bootc_composefs-${o.dirDigest ?? o.digest}`;
  return `title bootcfs test ${o.v} build ${o.n}\nversion ${o.n}\nlinux ${dir}/vmlinuz\ninitrd ${dir}/initrd\n` +
    `options root=UUID=${ROOT_UUID} rw composefs=${o.digest} ${o.kargs}\nsort-key bootc-bootcfs-test-${o.primary ? 0 : 1}\n`;
}

function layerBlobSizes(layout: string): Map<string, number> {
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const manifest = JSON.parse(fs.readFileSync(path.join(layout, 'blobs/sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { layers: Array<{ digest: string; size: number }> };
  return new Map(manifest.layers.map((l) => [l.digest, l.size]));
}

let sys: System;
let v2 = '';

test('upgrade --check reports the update and its new bytes, and writes nothing', async () => {
  sys = installSystem(path.join(work, 'main'));
  const none = cli('upgrade', ['--check', ...sys.args]);
  assert.equal(none.status, 0, none.stderr.toString());
  assert.match(none.stdout.toString(), /^No update available: /);

  writeImage(sys.dir, 2, 'v2');
  setCurrent(sys.dir, 2);
  const before = snapshot(sys);
  const r = cli('upgrade', ['--check', '--json', ...sys.args]);
  assert.equal(r.status, 0, r.stderr.toString());
  const j = JSON.parse(r.stdout.toString()) as { kind: string; updateAvailable: boolean; newBytes: number; newLayers: number; totalLayers: number };
  assert.equal(j.kind, 'check');
  assert.equal(j.updateAvailable, true);
  // the base layer is shared with v1; the variant and build layers are new
  const v1Sizes = layerBlobSizes(path.join(sys.dir, 'img-1'));
  const v2Sizes = layerBlobSizes(path.join(sys.dir, 'img-2'));
  const expected = [...v2Sizes].filter(([d]) => !v1Sizes.has(d)).reduce((a, [, n]) => a + n, 0);
  assert.equal(j.totalLayers, 3);
  assert.equal(j.newLayers, 2);
  assert.equal(j.newBytes, expected);
  const human = cli('upgrade', ['--check', ...sys.args]);
  assert.match(human.stdout.toString(), new RegExp(`^Update available for ${sys.source.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n.*\n  new: 2 of 3 layers, ${expected} bytes`));
  assert.equal(snapshot(sys), before, '--check changed nothing on the root, the ESP or the run dir');
  assert.equal(cli('upgrade', ['--check', '--apply', ...sys.args]).status, 2, '--check and --apply exclude each other');
});

test('upgrade v1→v2 stages: loader/entries.staged exactly as bootc, the marker, the state; status shows it staged', async () => {
  const v1 = sys.installed;
  const liveBefore = readEntries(sys);
  const r = cliWithProgress('upgrade', sys.args);
  assert.equal(r.status, 0, r.stderr.toString());
  // --progress-fd: JSON lines for the pull — the shared base layer skipped, the others imported
  const kinds = r.progress.map((e) => e.type);
  assert.ok(kinds.includes('layer-start') && kinds.includes('layer-done'), `progress events: ${JSON.stringify(r.progress)}`);
  assert.ok(r.progress.some((e) => e.type === 'layer-done' && e.skipped === true), 'the layer the repository has is reported skipped');
  assert.ok(r.progress.some((e) => e.type === 'layer-done' && e.skipped !== true), 'the new layers are reported imported');
  for (const e of r.progress) assert.equal(typeof e.ts, 'number');
  const marker = JSON.parse(fs.readFileSync(path.join(sys.run, 'composefs/staged-deployment'), 'utf8')) as { depl_id: string };
  v2 = marker.depl_id;
  assert.match(v2, /^[0-9a-f]{128}$/);
  assert.equal(fs.readFileSync(path.join(sys.run, 'composefs/staged-deployment'), 'utf8'), `{"depl_id":"${v2}","finalization_locked":false}`);
  assert.match(r.stdout.toString(), new RegExp(`^Staged deployment ${v2} `));
  assert.deepEqual(readEntries(sys), liveBefore, 'loader/entries is untouched until finalize');
  assert.deepEqual(readEntries(sys, true), {
    'bootc_bootcfs_test-2-1.conf': type1Entry({ n: 2, v: 'v2', digest: v2, kargs: 'console=ttyS0 v2.flag=1', primary: true }),
    'bootc_bootcfs_test-1-0.conf': type1Entry({ n: 1, v: 'v1', digest: v1, kargs: 'console=ttyS0', primary: false }),
  });
  // boot files: v2 has its own initramfs → its own kernel directory
  const kdir = path.join(sys.esp, `EFI/Linux/bootc_composefs-${v2}`);
  assert.equal(createHash('sha256').update(fs.readFileSync(path.join(kdir, 'vmlinuz'))).update(fs.readFileSync(path.join(kdir, 'initrd'))).digest('hex'), bootDigestOf('v2'));
  // state: etc is the new image's /etc (merged at finalize), var link, origin
  const st = path.join(sys.root, 'state/deploy', v2);
  assert.equal(fs.readFileSync(path.join(st, 'etc/app.conf'), 'utf8'), 'mode=2\n');
  assert.ok(fs.existsSync(path.join(st, 'etc/new-in-v2.conf')));
  assert.equal(fs.readlinkSync(path.join(st, 'var')), '../../os/default/var');
  assert.match(fs.readFileSync(path.join(st, `${v2}.origin`), 'utf8'), new RegExp(`^\\[origin\\]\ncontainer-image-reference = ostree-unverified-image:${sys.source.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n\n\\[boot\\]\nboot_type = bls\ndigest = ${bootDigestOf('v2')}\n\n\\[image\\]\nmanifest_digest = sha256:[0-9a-f]{64}\n$`));

  const offline = await status(sys);
  assert.equal(offline.status.staged?.composefs.verity, v2);
  assert.equal(offline.status.staged?.downloadOnly, false);
  assert.deepEqual(offline.status.otherDeployments.map((d) => d.composefs.verity), [v1]);
  const booted = await status(sys, v1);
  assert.equal(booted.status.booted?.composefs.verity, v1);
  assert.equal(booted.status.staged?.composefs.verity, v2);
  assert.equal(booted.status.rollback, null);
  assert.equal(booted.status.rollbackQueued, false);

  // again: already staged, nothing written
  const snap = snapshot(sys);
  const again = cli('upgrade', sys.args);
  assert.equal(again.status, 0);
  assert.match(again.stdout.toString(), /^Update already staged/);
  assert.equal(snapshot(sys), snap);
});

test('composefs-finalize-staged merges /etc and swaps the entries: v2 default, v1 rollback', async () => {
  const v1 = sys.installed;
  const etc1 = path.join(sys.root, 'state/deploy', v1, 'etc');
  // local changes in the running (v1) /etc
  fs.writeFileSync(path.join(etc1, 'hostname'), 'edited-locally\n');
  fs.writeFileSync(path.join(etc1, 'local.conf'), 'added locally\n');
  fs.rmSync(path.join(etc1, 'sub/keep.conf'));
  const staged = readEntries(sys, true);
  const r = cli('composefs-finalize-staged', sys.args);
  assert.equal(r.status, 0, r.stderr.toString());
  assert.match(r.stdout.toString(), new RegExp(`^Finalized staged deployment ${v2}`));
  assert.deepEqual(readEntries(sys), staged, 'loader/entries is what was staged');
  assert.ok(!fs.existsSync(entriesDir(sys, true)));
  assert.ok(!fs.existsSync(path.join(sys.run, 'composefs/staged-deployment')));
  const etc2 = path.join(sys.root, 'state/deploy', v2, 'etc');
  assert.equal(fs.readFileSync(path.join(etc2, 'hostname'), 'utf8'), 'edited-locally\n', 'a local edit survives');
  assert.equal(fs.readFileSync(path.join(etc2, 'local.conf'), 'utf8'), 'added locally\n', 'a local addition survives');
  assert.ok(!fs.existsSync(path.join(etc2, 'sub/keep.conf')), 'a local deletion stays deleted');
  assert.equal(fs.readFileSync(path.join(etc2, 'app.conf'), 'utf8'), 'mode=2\n', 'an untouched file follows the new image');
  assert.equal(fs.readFileSync(path.join(etc2, 'new-in-v2.conf'), 'utf8'), 'added by v2\n');
  assert.equal(fs.statSync(path.join(etc2, 'shadow')).gid, 42);

  const after = await status(sys, v2); // after the reboot
  assert.equal(after.status.booted?.composefs.verity, v2);
  assert.equal(after.status.rollback?.composefs.verity, v1);
  assert.equal(after.status.staged, null);
  assert.equal(after.status.rollbackQueued, false);
  const beforeReboot = await status(sys, v1);
  assert.equal(beforeReboot.status.rollbackQueued, true, 'still booted in v1, the default is v2');
  // nothing staged: finalize does nothing
  const again = cli('composefs-finalize-staged', sys.args);
  assert.equal(again.status, 0);
  assert.match(again.stdout.toString(), /^No staged deployment/);
});

test('rollback makes v1 the default (rollbackQueued), again reverts; offline CLI rollback swaps', async () => {
  const v1 = sys.installed;
  const r = await rollback(ctxOf(sys, v2));
  assert.deepEqual(r.messages, [`Next boot: rollback deployment ${v1} (${sys.source})`]);
  assert.equal(r.nextDefault, v1);
  assert.deepEqual(Object.keys(readEntries(sys)), ['bootc_bootcfs_test-1-1.conf', 'bootc_bootcfs_test-2-0.conf']);
  assert.match(readEntries(sys)['bootc_bootcfs_test-1-1.conf']!, /\nsort-key bootc-bootcfs-test-0\n$/);
  let st = await status(sys, v2);
  assert.equal(st.status.rollbackQueued, true);
  assert.equal(st.spec.bootOrder, 'rollback');
  assert.equal(st.status.rollback?.composefs.verity, v1);
  const back = await rollback(ctxOf(sys, v2));
  assert.deepEqual(back.messages, ['notice: Reverting queued rollback state', `Next boot: current deployment ${v2} (${sys.source})`]);
  st = await status(sys, v2);
  assert.equal(st.status.rollbackQueued, false);
  assert.equal(st.spec.bootOrder, 'default');
  // the CLI, offline: the default and the second entry swap
  const c = cli('rollback', sys.args);
  assert.equal(c.status, 0, c.stderr.toString());
  assert.equal(c.stdout.toString(), `Next boot: ${v1} (${sys.source})\n`);
  assert.equal((await listEntries(ctxOf(sys))).entries[0]!.digest, v1);
  assert.equal(cli('rollback', sys.args).status, 0);
  assert.equal((await listEntries(ctxOf(sys))).entries[0]!.digest, v2);
  assert.equal(cli('rollback', ['--apply', ...sys.args]).status, 2, '--apply needs a booted system');
});

test('switch to the current image is a no-op; to the rollback image it is refused', () => {
  const snap = snapshot(sys);
  const same = cli('switch', [...sys.args, sys.source]);
  assert.equal(same.status, 0, same.stderr.toString());
  assert.match(same.stdout.toString(), /^Image specification is unchanged: /);
  // the same image by another reference: same manifest
  const other = cli('switch', [...sys.args, `oci:${path.join(sys.dir, 'img-2')}:os`]);
  assert.equal(other.status, 0, other.stderr.toString());
  assert.match(other.stdout.toString(), /^No update available: .* is the current deployment's image/);
  assert.equal(snapshot(sys), snap, 'nothing written');
  const rb = cli('switch', [...sys.args, `oci:${path.join(sys.dir, 'img-1')}:os`]);
  assert.equal(rb.status, 1);
  assert.match(rb.stderr.toString(), /same fs-verity digest as an existing deployment: .*use bootcfs rollback/);
  assert.ok(!fs.existsSync(entriesDir(sys, true)));
});

test('a local /etc change that conflicts with the new image refuses to stage', async () => {
  writeImage(sys.dir, 3, 'v1');
  setCurrent(sys.dir, 3);
  const etc2 = path.join(sys.root, 'state/deploy', v2, 'etc');
  // app.conf is a file in both images; locally it became a directory
  fs.rmSync(path.join(etc2, 'app.conf'));
  fs.mkdirSync(path.join(etc2, 'app.conf'));
  fs.writeFileSync(path.join(etc2, 'app.conf/x'), 'x\n');
  const states = fs.readdirSync(path.join(sys.root, 'state/deploy')).sort();
  const r = cli('upgrade', sys.args);
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /Merge conflicts found in etc/);
  assert.match(r.stderr.toString(), /app\.conf/);
  assert.ok(!fs.existsSync(entriesDir(sys, true)), 'nothing staged');
  assert.ok(!fs.existsSync(path.join(sys.run, 'composefs/staged-deployment')));
  assert.deepEqual(fs.readdirSync(path.join(sys.root, 'state/deploy')).sort(), states, 'no new state');
  fs.rmSync(path.join(etc2, 'app.conf'), { recursive: true });
  fs.writeFileSync(path.join(etc2, 'app.conf'), 'mode=local\n');
});

test('download-only: staged locked, finalize leaves it, --from-downloaded unlocks it; rollback discards a staged deployment', async () => {
  const d = cli('upgrade', ['--download-only', ...sys.args]);
  assert.equal(d.status, 0, d.stderr.toString());
  const view = await readDeploymentView(ctxOf(sys));
  const v3 = view.marker!.deplId;
  assert.equal(view.marker!.finalizationLocked, true);
  assert.equal((await status(sys)).status.staged?.downloadOnly, true);
  const f = cli('composefs-finalize-staged', sys.args);
  assert.equal(f.status, 0);
  assert.match(f.stdout.toString(), /download-only: not finalized/);
  assert.ok(fs.existsSync(entriesDir(sys, true)));
  assert.equal(cli('upgrade', ['--from-downloaded', ...sys.args]).status, 0);
  assert.equal((await readDeploymentView(ctxOf(sys))).marker!.finalizationLocked, false);
  const r = await rollback(ctxOf(sys, v2));
  assert.equal(r.discardedStaged, v3);
  assert.equal(r.messages[0], `Discarding the staged deployment ${v3}.`);
  assert.ok(!fs.existsSync(entriesDir(sys, true)));
  assert.ok(!fs.existsSync(path.join(sys.run, 'composefs/staged-deployment')));
  await rollback(ctxOf(sys, v2)); // v2 default again
});

test('gc deletes unreferenced boot files, state, tags and objects, and keeps every live one', async () => {
  const v1 = sys.installed;
  // leftovers: an orphaned state dir and boot files, a stale tag; v3 (discarded above) left its own
  const fake = 'ab'.repeat(64);
  fs.mkdirSync(path.join(sys.root, 'state/deploy', fake, 'etc'), { recursive: true });
  fs.mkdirSync(path.join(sys.esp, `EFI/Linux/bootc_composefs-${fake}`), { recursive: true });
  fs.writeFileSync(path.join(sys.esp, `EFI/Linux/bootc_composefs-${fake}/vmlinuz`), 'k');
  fs.mkdirSync(path.join(sys.esp, 'EFI/Linux/bootc'), { recursive: true });
  fs.writeFileSync(path.join(sys.esp, `EFI/Linux/bootc/bootc_composefs-${fake}.efi`), 'uki');
  fs.writeFileSync(path.join(sys.esp, 'EFI/Linux/.vmlinuz.tmp-0123ab'), 'torn');
  // the object of build 3's /usr/share/build (only build 3 has it) must go; build 2's must stay
  const buildObject = (n: number): string => {
    const hex = fsverityDigest(Buffer.from(`build ${n} ${'.'.repeat(80)}\n`), 'sha512').toString('hex');
    return path.join(sys.root, 'composefs/objects', hex.slice(0, 2), hex.slice(2));
  };
  assert.ok(fs.existsSync(buildObject(3)), 'build 3 was pulled');
  const orphanState = fs.readdirSync(path.join(sys.root, 'state/deploy')).filter((n) => n !== v1 && n !== v2);
  assert.ok(orphanState.length >= 2);

  const snap = snapshot(sys);
  const dry = cli('internals', ['gc', '--dry-run', '--json', ...sys.args]);
  assert.equal(dry.status, 0, dry.stderr.toString());
  const dj = JSON.parse(dry.stdout.toString()) as { dryRun: boolean; bootFilesRemoved: string[]; stateDirsRemoved: string[] };
  assert.equal(dj.dryRun, true);
  assert.ok(dj.bootFilesRemoved.includes(`EFI/Linux/bootc_composefs-${fake}`));
  assert.equal(snapshot(sys), snap, '--dry-run deletes nothing');

  const g = await collectGarbage(ctxOf(sys, v2));
  assert.deepEqual(g.kept, [v1, v2].sort());
  assert.deepEqual(g.bootFilesRemoved.sort(), [`EFI/Linux/bootc/bootc_composefs-${fake}.efi`, ...orphanState.filter((n) => n !== fake && fs.existsSync(path.join(sys.esp, `EFI/Linux/bootc_composefs-${n}`))).map((n) => `EFI/Linux/bootc_composefs-${n}`), `EFI/Linux/bootc_composefs-${fake}`].sort());
  assert.deepEqual(g.stateDirsRemoved.sort(), orphanState.sort());
  assert.deepEqual(g.tempFilesRemoved, ['EFI/Linux/.vmlinuz.tmp-0123ab']);
  assert.ok(g.repository!.objectsRemoved > 0);
  assert.ok(!fs.existsSync(buildObject(3)), 'an object only a collected image used is gone');
  assert.ok(fs.existsSync(buildObject(2)), 'the live images\' objects stay');
  assert.ok(fs.existsSync(buildObject(1)));
  assert.deepEqual(fs.readdirSync(path.join(sys.root, 'state/deploy')).sort(), [v1, v2].sort());
  for (const e of (await listEntries(ctxOf(sys))).entries) assert.equal(await deploymentComplete(ctxOf(sys), e.digest, e), undefined);
  const tags = fs.readdirSync(path.join(sys.root, 'composefs/streams/refs/oci')).sort();
  assert.equal(tags.length, 2);
  for (const t of tags) assert.match(t, /^localhost%2Fbootc-sha256:[0-9a-f]{64}$/);
  const fsck = cli('internals', ['fsck', ...sys.args]);
  assert.equal(fsck.status, 0, fsck.stdout.toString() + fsck.stderr.toString());
  assert.doesNotMatch(fsck.stdout.toString(), /^note:/m, 'nothing left for gc');
  // a second gc has nothing to do
  const g2 = await collectGarbage(ctxOf(sys, v2));
  assert.deepEqual([g2.bootFilesRemoved, g2.stateDirsRemoved, g2.tagsRemoved, g2.repository!.objectsRemoved], [[], [], [], 0]);
});

test('delete-deployment: not the booted one, not the last; the rollback goes with everything it had', async () => {
  const v1 = sys.installed;
  await assert.rejects(deleteDeployment(ctxOf(sys, v2), v2.slice(0, 12)), /cannot delete the booted deployment/);
  const r = cli('delete-deployment', [...sys.args, v1.slice(0, 16)]);
  assert.equal(r.status, 0, r.stderr.toString());
  assert.match(r.stdout.toString(), new RegExp(`Deleted deployment ${v1}`));
  assert.deepEqual(Object.keys(readEntries(sys)), ['bootc_bootcfs_test-2-1.conf']);
  assert.ok(!fs.existsSync(path.join(sys.root, 'state/deploy', v1)));
  assert.ok(!fs.existsSync(path.join(sys.esp, `EFI/Linux/bootc_composefs-${v1}`)));
  const last = cli('delete-deployment', [...sys.args, v2]);
  assert.equal(last.status, 1);
  assert.match(last.stderr.toString(), /only boot entry/);
  assert.equal(cli('delete-deployment', [...sys.args, 'zz']).status, 1);
  assert.equal(cli('internals', ['fsck', ...sys.args]).status, 0);
});

test('upgrade cycles alternating v1/v2 images keep the ESP and the repository bounded', async () => {
  const s = installSystem(path.join(work, 'cycles'));
  const n = cases(6, 20);
  const rows: Array<{ esp: { files: number; bytes: number }; repo: { files: number; bytes: number }; states: number }> = [];
  const t0 = Date.now();
  for (let i = 2; i <= n + 1; i++) {
    writeImage(s.dir, i, i % 2 === 0 ? 'v2' : 'v1');
    setCurrent(s.dir, i);
    const u = cli('upgrade', ['--quiet', ...s.args]);
    assert.equal(u.status, 0, `cycle ${i}: ${u.stderr.toString()}`);
    const f = cli('composefs-finalize-staged', s.args);
    assert.equal(f.status, 0, `cycle ${i}: ${f.stderr.toString()}`);
    fs.rmSync(path.join(s.dir, `img-${i - 1}`), { recursive: true, force: true });
    rows.push({ esp: usage(s.esp), repo: usage(path.join(s.root, 'composefs')), states: fs.readdirSync(path.join(s.root, 'state/deploy')).length });
  }
  const ms = Date.now() - t0;
  console.log(`# ${n} upgrade+finalize cycles in ${ms} ms (${Math.round(ms / n)} ms each); ESP ${rows.map((r) => r.esp.files).join(',')} files; repository ${rows.map((r) => r.repo.files).join(',')} files, ${rows.map((r) => Math.round(r.repo.bytes / 1024)).join(',')} KiB`);
  // from the second cycle on, two deployments (one v1, one v2 build) are live: the same shape every time
  const steady = rows.slice(1);
  for (const r of steady) {
    assert.equal(r.states, 2);
    // systemd-boot ×2, loader.conf, 2 entries, 2 kernel directories × 2 files
    assert.equal(r.esp.files, 9);
  }
  const files = steady.map((r) => r.repo.files);
  const bytes = steady.map((r) => r.repo.bytes);
  assert.ok(Math.max(...files) - Math.min(...files) <= 2, `repository file count stays flat: ${files.join(',')}`);
  assert.ok(Math.max(...bytes) <= Math.min(...bytes) * 1.02 + 4096, `repository bytes stay flat: ${bytes.join(',')}`);
  const view = await readDeploymentView(ctxOf(s));
  assert.equal(view.live.entries.length, 2);
  assert.equal(cli('internals', ['fsck', ...s.args]).status, 0);
});

test('sealed UKI images: staged entries name the new UKI, finalize swaps, gc removes the UKI that fell out', async () => {
  const s = installSystem(path.join(work, 'uki'), { uki: true });
  const ukiDir = path.join(s.esp, 'EFI/Linux/bootc');
  assert.deepEqual(fs.readdirSync(ukiDir), [`bootc_composefs-${s.installed}.efi`]);
  const ids = [s.installed];
  for (let i = 2; i <= 3; i++) {
    writeImage(s.dir, i, i % 2 === 0 ? 'v2' : 'v1', { uki: true });
    setCurrent(s.dir, i);
    const u = cli('upgrade', ['--quiet', '--json', ...s.args]);
    assert.equal(u.status, 0, u.stderr.toString());
    const j = JSON.parse(u.stdout.toString()) as { kind: string; deployment: string; bootType: string; bootFiles: string[] };
    assert.equal(j.kind, 'staged');
    assert.equal(j.bootType, 'uki');
    assert.deepEqual(j.bootFiles, [`EFI/Linux/bootc/bootc_composefs-${j.deployment}.efi`]);
    const prev = ids[ids.length - 1]!;
    assert.deepEqual(readEntries(s, true), {
      [`bootc_bootcfs_test-${i}-1.conf`]: `title bootcfs test ${i % 2 === 0 ? 'v2' : 'v1'} build ${i}\nversion ${i}\nefi /EFI/Linux/bootc/bootc_composefs-${j.deployment}.efi\nsort-key bootc-bootcfs-test-0\n`,
      [`bootc_bootcfs_test-${i - 1}-0.conf`]: `title bootcfs test ${i % 2 === 0 ? 'v1' : 'v2'} build ${i - 1}\nversion ${i - 1}\nefi /EFI/Linux/bootc/bootc_composefs-${prev}.efi\nsort-key bootc-bootcfs-test-1\n`,
    });
    const st = await status(s, prev);
    assert.equal(st.status.staged?.composefs.verity, j.deployment);
    assert.equal(st.status.staged?.composefs.bootType, 'Uki');
    const f = cli('composefs-finalize-staged', s.args);
    assert.equal(f.status, 0, f.stderr.toString());
    ids.push(j.deployment);
    // the UKIs of the default and the rollback, nothing else
    assert.deepEqual(fs.readdirSync(ukiDir).sort(), ids.slice(-2).map((d) => `bootc_composefs-${d}.efi`).sort());
    const after = await status(s, j.deployment);
    assert.equal(after.status.booted?.composefs.verity, j.deployment);
    assert.equal(after.status.rollback?.composefs.verity, prev);
    assert.equal(after.status.rollbackQueued, false);
  }
  assert.equal(cli('internals', ['fsck', ...s.args]).status, 0);
});
