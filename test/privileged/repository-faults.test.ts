/**
 * Crash safety of the repository: a child process writes objects, splitstreams (with named refs to earlier
 * streams), images and refs, removes refs and runs gc, in an endless seeded loop; it is killed with SIGKILL
 * after a seeded random delay. After every kill the repository must be consistent: fsck clean (every
 * object's digest equals its name, no dangling ref, no image/stream pointing at a missing object, every
 * stream and image parses). Leftover temporary files are allowed after a kill and must all be removed by gc.
 * The same repository accumulates over all cases, so later kills hit a larger, older repository.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Repository, formatFsckResult } from '../../src/repository/index.js';
import { Rng } from '../helpers/rng.js';
import { cases, REPO_ROOT } from '../helpers/ref.js';

const dist = (p: string) => JSON.stringify(path.join(REPO_ROOT, 'dist/src', p));

/** The writer: everything a pull + gc does to a repository, forever. */
const CHILD = `
import { Repository } from ${dist('repository/index.js')};
import { SplitStreamWriter } from ${dist('splitstream/index.js')};
import { fsverityDigest } from ${dist('fsverity/index.js')};
import { Inode, newDir, S_IFREG } from ${dist('tree/model.js')};
import { writeImageV1 } from ${dist('erofs/writer-v1.js')};
const [repoPath, seedText] = process.argv.slice(-2);
let s = Number(seedText) >>> 0;
const rnd = (n) => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s % n; };
const bytes = (n) => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = rnd(256); return b; };
const repo = await Repository.open(repoPath);
process.stdout.write('ready\\n');
const streams = [];
for (let i = 0; ; i++) {
  const op = rnd(10);
  if (op < 5) {
    const w = new SplitStreamWriter(repo, { algorithm: repo.algorithm, contentType: 'ocilayer' });
    for (let k = rnd(12); k >= 0; k--) {
      if (rnd(2)) w.writeInline(bytes(rnd(600)));
      else if (rnd(3)) await w.writeExternalData(bytes(65 + rnd(20000)));
      else {
        async function* chunks() { for (let c = rnd(5); c >= 0; c--) yield bytes(rnd(30000)); }
        const data = [];
        const d = await repo.ensureObject((async function* () { for await (const c of chunks()) { data.push(c); yield c; } })());
        w.writeExternal(d, Buffer.concat(data).length);
      }
    }
    // Refer to an earlier stream only if it is still there (an untagged one may have been collected).
    const parent = streams.length ? await repo.hasStream(streams[rnd(streams.length)]) : undefined;
    if (parent && rnd(2)) w.addNamedRef('parent', parent);
    const name = 'oci-layer-' + s.toString(16) + '-' + i;
    await repo.writeStream(name, w, rnd(2) ? 'oci/tag' + rnd(6) : undefined);
    streams.push(name);
  } else if (op < 8) {
    const root = newDir();
    for (let k = rnd(8); k >= 0; k--) {
      const data = bytes(1 + rnd(9000));
      const d = await repo.ensureObject(data);
      const hex = d.toString('hex');
      root.setEntry('f' + k, new Inode({ mode: S_IFREG | 0o644, size: data.length, payload: hex.slice(0, 2) + '/' + hex.slice(2), digest: d }));
    }
    root.setEntry('salt' + bytes(4).toString('hex'), new Inode({ mode: S_IFREG | 0o644, size: 0 }));
    await repo.writeImage(writeImageV1({ root }), rnd(2) ? 'img/' + rnd(5) : undefined);
  } else if (op < 9) {
    if (rnd(2)) await repo.removeImageRef('img/' + rnd(5));
    else await repo.removeStreamRef('oci/tag' + rnd(6));
  } else {
    await repo.gc();
  }
}
`;

function tempFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name.startsWith('.')) out.push(path.join(d, e.name));
      if (e.isDirectory()) walk(path.join(d, e.name));
    }
  };
  walk(dir);
  return out;
}

test('repository: SIGKILL at random points during writes and gc leaves a consistent repository', async () => {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'bootcfs-faults-'));
  const repoPath = path.join(dir, 'repo');
  const script = path.join(dir, 'child.mjs');
  fs.writeFileSync(script, CHILD);
  try {
    await (await Repository.init(repoPath, { algorithm: 'sha256', insecure: true })).close();
    const n = cases(10, 50);
    const rng = new Rng(0xfa17);
    let sawTemps = 0;
    for (let c = 0; c < n; c++) {
      const seed = rng.u32();
      const delay = rng.int(30, 900);
      const child = spawn(process.execPath, [script, repoPath, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (b) => (stderr += b));
      const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, sig) => resolve(sig ?? code)));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (b) => String(b).includes('ready') && resolve());
        child.on('exit', () => reject(new Error(`child exited early (case ${c}, seed ${seed}): ${stderr}`)));
      });
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGKILL');
      assert.equal(await exited, 'SIGKILL', `case ${c} (seed ${seed}): the writer died on its own: ${stderr}`);
      const repo = await Repository.open(repoPath);
      try {
        const r = await repo.fsck();
        assert.equal(r.ok, true, `case ${c} (seed ${seed}, killed after ${delay} ms):\n${formatFsckResult(r)}`);
        sawTemps += r.tempFiles;
      } finally {
        await repo.close();
      }
    }
    const repo = await Repository.open(repoPath);
    try {
      const g = await repo.gc();
      assert.deepEqual(tempFiles(repoPath), [], 'gc removes every leftover temporary file');
      const r = await repo.fsck();
      assert.equal(r.ok, true, formatFsckResult(r));
      assert.ok(r.objectsChecked > 0);
      console.log(`${n} kills; ${sawTemps} leftover temporary files seen; final gc removed ${g.objectsRemoved} objects, ${g.tempFilesRemoved} temp files; ${r.objectsChecked} objects remain`);
    } finally {
      await repo.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
