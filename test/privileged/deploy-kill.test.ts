/**
 * Power cuts (SIGKILL at seeded random points) during `upgrade` and during `composefs-finalize-staged`
 * on an offline root: afterwards `status` works and the default boot entry boots a complete deployment
 * (origin, etc/, every file its entry names, its composefs image in the repository); finishing the
 * interrupted work (finalize again, gc) leaves a root `internals fsck` finds clean. After a finalize
 * killed at any point, the default is the old or the new deployment, and running finalize again makes
 * it the new one.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import path from 'node:path';
import { cases, isRoot } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { cli, DEPLOY_CLI, installSystem, setCurrent, writeImage, type System } from '../helpers/deploy-fixture.js';
import { deploymentComplete, exchangePaths, listEntries, removeStagedEntries, type DeployContext } from '../../src/deploy/deployments.js';
import { finalizeStaged } from '../../src/deploy/finalize.js';

const work = fs.mkdtempSync('/var/tmp/bootcfs-deploy-kill-');
after(() => fs.rmSync(work, { recursive: true, force: true }));
before(() => {
  if (!isRoot) assert.fail('deploy tests need root (install keeps file owners), as CI runs');
});

const ctxOf = (s: System): DeployContext => ({ sysroot: s.root, bootDir: s.esp, runDir: s.run, log: () => undefined, warn: () => undefined });

/** Runs a verb and SIGKILLs it after `delayMs`; resolves whether it exited by itself first. */
function killAfter(verb: string, args: string[], delayMs: number): Promise<boolean> {
  const p = spawn(process.execPath, [DEPLOY_CLI, verb, ...args], { detached: true, stdio: 'ignore' });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, delayMs);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(signal === null && code === 0);
    });
  });
}

/** status works and the default entry boots a complete deployment whose image is in the repository; returns its id. */
async function assertBootable(s: System, what: string): Promise<string> {
  const st = cli('status', ['--root', s.root, '--boot-dir', s.esp, '--json']);
  assert.equal(st.status, 0, `${what}: status: ${st.stderr.toString()}`);
  JSON.parse(st.stdout.toString());
  const { entries } = await listEntries(ctxOf(s));
  assert.ok(entries.length >= 1, `${what}: loader/entries has a composefs entry`);
  const def = entries[0]!;
  assert.equal(await deploymentComplete(ctxOf(s), def.digest, def), undefined, `${what}: the default deployment is complete`);
  assert.ok(fs.existsSync(path.join(s.root, 'composefs/images', def.digest)), `${what}: the default's composefs image is in the repository`);
  return def.digest;
}

function assertClean(s: System, what: string): void {
  const g = cli('internals', ['gc', ...s.args]);
  assert.equal(g.status, 0, `${what}: gc: ${g.stderr.toString()}`);
  const f = cli('internals', ['fsck', ...s.args]);
  assert.equal(f.status, 0, `${what}: fsck: ${f.stdout.toString()}${f.stderr.toString()}`);
  assert.doesNotMatch(f.stdout.toString(), /^note:/m, `${what}: gc left nothing behind`);
}

let build = 1;
function nextImage(s: System): void {
  build++;
  writeImage(s.dir, build, build % 2 === 0 ? 'v2' : 'v1');
  setCurrent(s.dir, build);
}

test('upgrade killed at random points: the old default keeps booting, and the work can be finished', async () => {
  const s = installSystem(path.join(work, 'upgrade'));
  const rng = new Rng(0x0b0071);
  nextImage(s);
  let t0 = Date.now();
  assert.equal(cli('upgrade', s.args).status, 0);
  const full = Date.now() - t0;
  assert.equal(cli('composefs-finalize-staged', s.args).status, 0);
  const n = cases(5, 30);
  let interrupted = 0;
  for (let i = 0; i < n; i++) {
    const before = await assertBootable(s, `before kill ${i}`);
    nextImage(s);
    const delay = Math.floor(rng.float() * full * 1.1);
    t0 = Date.now();
    const finished = await killAfter('upgrade', ['--quiet', ...s.args], delay);
    if (!finished) interrupted++;
    const what = `upgrade killed after ${delay} ms (finished: ${finished})`;
    assert.equal(await assertBootable(s, what), before, `${what}: upgrade never changes the default`);
    // finish: finalize whatever is whole, then collect the rest
    const f = cli('composefs-finalize-staged', s.args);
    assert.equal(f.status, 0, `${what}: finalize: ${f.stderr.toString()}`);
    await assertBootable(s, `${what}, finalized`);
    assertClean(s, what);
  }
  console.log(`# ${n} upgrades killed over a ${full} ms upgrade: ${interrupted} interrupted`);
  assert.ok(interrupted > 0, 'some kills interrupted an upgrade');
});

test('composefs-finalize-staged killed at random points: old or new default, never a broken one; finalize again completes it', async () => {
  const s = installSystem(path.join(work, 'finalize'));
  const rng = new Rng(0xf1a1);
  build = 1;
  nextImage(s);
  assert.equal(cli('upgrade', s.args).status, 0);
  let t0 = Date.now();
  assert.equal(cli('composefs-finalize-staged', s.args).status, 0);
  const full = Date.now() - t0;
  const n = cases(5, 30);
  let interrupted = 0;
  for (let i = 0; i < n; i++) {
    const old = await assertBootable(s, `before kill ${i}`);
    nextImage(s);
    assert.equal(cli('upgrade', ['--quiet', ...s.args]).status, 0);
    const staged = JSON.parse(fs.readFileSync(path.join(s.run, 'composefs/staged-deployment'), 'utf8')) as { depl_id: string };
    const delay = Math.floor(rng.float() * full * 1.1);
    t0 = Date.now();
    const finished = await killAfter('composefs-finalize-staged', s.args, delay);
    if (!finished) interrupted++;
    const what = `finalize killed after ${delay} ms (finished: ${finished})`;
    const def = await assertBootable(s, what);
    assert.ok(def === old || def === staged.depl_id, `${what}: the default is the old or the new deployment`);
    const again = cli('composefs-finalize-staged', s.args);
    assert.equal(again.status, 0, `${what}: finalize again: ${again.stderr.toString()}`);
    assert.equal(await assertBootable(s, `${what}, finalized again`), staged.depl_id, `${what}: the new deployment is the default`);
    const { entries } = await listEntries(ctxOf(s));
    assert.deepEqual(entries.map((e) => e.digest), [staged.depl_id, old], `${what}: the old deployment is the rollback`);
    assertClean(s, what);
  }
  console.log(`# ${n} finalizes killed over a ${full} ms finalize: ${interrupted} interrupted`);
  assert.ok(interrupted > 0, 'some kills interrupted a finalize');
});

test('finalize stopped right after the exchange, or before removing the marker, completes when run again', async () => {
  const s = installSystem(path.join(work, 'resume'));
  build = 1;
  const ctx = ctxOf(s);
  const loader = path.join(s.esp, 'loader');
  for (const stop of ['after-exchange', 'before-marker-removal'] as const) {
    const old = await assertBootable(s, `${stop}: before`);
    nextImage(s);
    assert.equal(cli('upgrade', ['--quiet', ...s.args]).status, 0);
    const id = (JSON.parse(fs.readFileSync(path.join(s.run, 'composefs/staged-deployment'), 'utf8')) as { depl_id: string }).depl_id;
    // what a killed finalize leaves at that point
    exchangePaths(path.join(loader, 'entries.staged'), path.join(loader, 'entries'));
    if (stop === 'before-marker-removal') await removeStagedEntries(ctx);
    assert.equal(await assertBootable(s, stop), id, `${stop}: the new deployment already boots`);
    const r = await finalizeStaged(ctx);
    assert.equal(r.kind, 'finalized');
    assert.match(r.message, /was already the default; cleaned up/);
    assert.ok(!fs.existsSync(path.join(loader, 'entries.staged')));
    assert.ok(!fs.existsSync(path.join(s.run, 'composefs/staged-deployment')));
    assert.deepEqual((await listEntries(ctx)).entries.map((e) => e.digest), [id, old]);
    assertClean(s, stop);
  }
});
