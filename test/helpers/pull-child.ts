/**
 * Child process for the pull/gc fault tests (test/privileged/pull-faults.test.ts); the test SIGKILLs it.
 * Every phase change is written to stdout as one JSON line (pipe writes are synchronous on Linux, so the
 * parent knows the last phase reached before the kill).
 *
 *   node pull-child.js cycle REPO REF TAG      untag TAG, gc, then pull REF as TAG (one open repository)
 *   node pull-child.js pull-loop REPO STEPS    STEPS = JSON [{ ref, tag, untag? }]: per step open, pull,
 *                                              remove the `untag` tag, close (so a gc elsewhere can run between)
 *   node pull-child.js gc-loop REPO            open, gc, close — forever
 */
import { Repository } from '../../src/repository/index.js';
import { pullImage } from '../../src/oci/pull.js';
import { ociTagRef } from '../../src/oci/image.js';

const say = (o: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(o) + '\n');
};

async function main(): Promise<void> {
  const [mode, repoPath, a, b] = process.argv.slice(2);
  if (!repoPath) throw new Error('usage: pull-child.js cycle|pull-loop|gc-loop REPO ...');
  if (mode === 'cycle') {
    const repo = await Repository.open(repoPath);
    say({ phase: 'ready' });
    await repo.removeStreamRef(ociTagRef(b!));
    say({ phase: 'gc-start' });
    const g = await repo.gc();
    say({ phase: 'gc-done', removed: g.objectsRemoved });
    const r = await pullImage(repo, a!, { tag: b!, onProgress: (ev) => say({ phase: ev.kind, diffId: 'diffId' in ev ? ev.diffId : undefined }) });
    say({ phase: 'done', imageId: r.imageId.toString('hex') });
    await repo.close();
  } else if (mode === 'pull-loop') {
    const steps = JSON.parse(a!) as Array<{ ref: string; tag: string; untag?: string }>;
    say({ phase: 'ready' });
    for (const s of steps) {
      const repo = await Repository.open(repoPath);
      const r = await pullImage(repo, s.ref, { tag: s.tag });
      if (s.untag !== undefined) await repo.removeStreamRef(ociTagRef(s.untag));
      await repo.close();
      say({ phase: 'pulled', tag: s.tag, imageId: r.imageId.toString('hex'), imported: r.layersImported, skipped: r.layersSkipped });
    }
    say({ phase: 'done' });
  } else if (mode === 'gc-loop') {
    say({ phase: 'ready' });
    for (let i = 0; ; i++) {
      const repo = await Repository.open(repoPath);
      const g = await repo.gc();
      await repo.close();
      say({ phase: 'gc', i, removed: g.objectsRemoved });
      // Give the puller's open() a chance between two exclusive locks.
      await new Promise((r) => setTimeout(r, 5));
    }
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
