/**
 * `bootcfs cfs …` (the cfsctl repository verbs) end to end through the real CLI binary, as root, on
 * insecure repositories in temporary directories (this host has no fs-verity). Reference oracles:
 * fsverity-utils (`fsverity digest`: an image's id is the fs-verity digest of images/<id>), composefs-info
 * 1.0.8 (`objects`: the objects a v1 image references), and the kernel (erofs + overlayfs mount compared
 * with the source tree).
 *
 * Mount comparison: the source snapshot is turned into what the repository path must show — the xattr
 * rule bootcfs-xattrs-1 (keepXattr) applied to every entry, and the OCI root transform (root mode bits,
 * uid, gid, mtime and xattrs := /usr's; /run emptied with /usr's mtime and nlink 2) — then compared with
 * compareViews (its documented composefs/overlayfs differences apply). v2 images are not mounted here
 * (their mtimes have no nanoseconds by format; test/privileged/erofs-v2-kernel.test.ts covers v2 mounts).
 *
 * `cfs oci …`: generated two-layer OCI layouts (gzip + plain, whiteout, hardlink, xattrs) pulled through
 * the CLI; images/inspect/compute-id checked against the layout's own digests and bytes; and digest
 * reproducibility across the two paths: `cfs compute-id` of the rootfs that the real `umoci unpack`
 * extracts from the same layout equals the pulled image's id.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import path from 'node:path';
import { generateDiskTree } from '../helpers/gen-disk-tree.js';
import { compareViews, snapshotTree, umount, type EntryView } from '../helpers/mount.js';
import { BOOTCFS_BIN, COMPOSEFS_INFO, FSVERITY, cases, isRoot, requireTool, run, type RunResult } from '../helpers/ref.js';
import { keepXattr } from '../../src/oci/xattr-rule.js';
import { buildTar, writeOciLayout, type TarWriteEntry } from '../helpers/oci-layout.js';
import { Rng } from '../helpers/rng.js';

const UMOCI = '/usr/bin/umoci';

function cfs(repo: string, ...args: string[]): RunResult {
  return run(BOOTCFS_BIN, ['cfs', '--repo', repo, '--insecure', ...args]);
}

function ok(r: RunResult, what: string): string {
  assert.equal(r.status, 0, `${what}: exit ${r.status}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** Every object file under objects/ (hex ids). */
function objectFiles(repo: string): string[] {
  const out: string[] = [];
  const root = path.join(repo, 'objects');
  for (const d of fs.readdirSync(root)) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const f of fs.readdirSync(path.join(root, d))) if (!f.startsWith('.')) out.push(d + f);
  }
  return out.sort();
}

/** Apply the repository-path rules to a source snapshot: what the mounted image must show. */
function expectedView(src: Map<string, EntryView>): Map<string, EntryView> {
  const out = new Map<string, EntryView>();
  for (const [p, e] of src) {
    const xattrs: Record<string, string> = {};
    for (const [k, v] of Object.entries(e.xattrs)) if (keepXattr(k)) xattrs[k] = v;
    out.set(p, { ...e, xattrs });
  }
  const usr = out.get('/usr');
  assert.ok(usr && usr.type === 'dir');
  const root = out.get('/')!;
  out.set('/', { ...root, mode: (root.mode & ~0o7777) | (usr.mode & 0o7777), uid: usr.uid, gid: usr.gid, mtimeNs: usr.mtimeNs, xattrs: { ...usr.xattrs } });
  const run = out.get('/run');
  if (run) {
    for (const p of [...out.keys()]) if (p.startsWith('/run/')) out.delete(p);
    out.set('/run', { ...run, mtimeNs: usr.mtimeNs, nlink: 2 });
  }
  return out;
}

/** A generated tree plus the /usr the OCI transform needs and a non-empty /run it must empty. */
async function makeSource(dir: string, seed: number): Promise<void> {
  // v2 images allow symlink targets of at most 1024 bytes, and every source is built in both formats
  await generateDiskTree(dir, seed, { entries: 80, maxFileSize: 512 * 1024, longSymlinks: false });
  fs.mkdirSync(path.join(dir, 'usr/lib'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'usr/lib/data'), Buffer.alloc(70_000, seed & 0xff));
  fs.chmodSync(path.join(dir, 'usr'), 0o751);
  fs.chownSync(path.join(dir, 'usr'), 12, 34);
  fs.utimesSync(path.join(dir, 'usr'), 1_600_000_000.25, 1_600_000_000.25);
  fs.mkdirSync(path.join(dir, 'run/sub'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'run/sub/pid'), 'gone after the transform, '.repeat(5));
}

function mountAndSnapshot(repo: string, name: string, mnt: string): Promise<Map<string, EntryView>> {
  fs.mkdirSync(mnt, { recursive: true });
  ok(cfs(repo, 'mount', name, mnt), 'mount');
  return snapshotTree(mnt).finally(() => umount(mnt));
}

const COMBOS = [
  { hash: 'sha512', format: 'v1' },
  { hash: 'sha256', format: 'v1' },
  { hash: 'sha512', format: 'v2' },
  { hash: 'sha256', format: 'v2' },
] as const;

test('cfs: --help of every verb exits 0, bad usage exits 2', () => {
  requireTool(BOOTCFS_BIN);
  for (const args of [['cfs', '--help'], ['cfs', '-h'], ['cfs', 'init', '--help'], ['cfs', '--help', 'gc']]) {
    const r = run(BOOTCFS_BIN, args);
    assert.equal(r.status, 0, args.join(' '));
    assert.match(r.stdout.toString(), /^Usage: bootcfs cfs/);
  }
  for (const verb of ['init', 'create-image', 'compute-id', 'image-objects', 'gc', 'fsck', 'mount', 'oci', 'oci pull', 'oci images', 'oci inspect', 'oci compute-id']) {
    for (const h of ['--help', '-h']) {
      const r = run(BOOTCFS_BIN, ['cfs', '--repo', '/nonexistent', ...verb.split(' '), h]);
      assert.equal(r.status, 0, `${verb} ${h}: ${r.stderr.toString()}`);
      assert.match(r.stdout.toString(), new RegExp(`^Usage: bootcfs cfs .*${verb.split(' ').pop()!}`));
    }
  }
  const bad: string[][] = [
    ['cfs'],
    ['cfs', 'frobnicate'],
    ['cfs', '--bogus', 'init'],
    ['cfs', '--repo'],
    ['cfs', '--repo', '/x', 'init', '--hash', 'md5'],
    ['cfs', '--repo', '/x', 'init', '--format', 'v3'],
    ['cfs', '--repo', '/x', 'init', 'extra'],
    ['cfs', '--repo', '/x', 'create-image'],
    ['cfs', '--repo', '/x', 'create-image', 'a', 'b', 'c'],
    ['cfs', '--repo', '/x', 'compute-id'],
    ['cfs', '--repo', '/x', 'image-objects'],
    ['cfs', '--repo', '/x', 'gc', 'x'],
    ['cfs', '--repo', '/x', 'gc', '--root'],
    ['cfs', '--repo', '/x', 'fsck', '--fix'],
    ['cfs', '--repo', '/x', 'mount', 'only-one'],
    ['cfs', '--repo', '/x', 'oci'],
    ['cfs', '--repo', '/x', 'oci', 'push'],
    ['cfs', '--repo', '/x', 'oci', 'pull'],
    ['cfs', '--repo', '/x', 'oci', 'pull', 'a', 'b', 'c'],
    ['cfs', '--repo', '/x', 'oci', 'pull', '--tls-verify=maybe', 'oci:/x'],
    ['cfs', '--repo', '/x', 'oci', 'images', 'x'],
    ['cfs', '--repo', '/x', 'oci', 'inspect'],
    ['cfs', '--repo', '/x', 'oci', 'inspect', '--manifest', '--config', 'x'],
    ['cfs', '--repo', '/x', 'oci', 'compute-id'],
  ];
  for (const args of bad) {
    const r = run(BOOTCFS_BIN, args);
    assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status} ${r.stderr.toString()}`);
    assert.match(r.stderr.toString(), /^bootcfs: /, args.join(' '));
  }
  // a runtime error (no repository) is exit 1 with one line
  const r = run(BOOTCFS_BIN, ['cfs', '--repo', '/nonexistent/repo', 'fsck']);
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /^bootcfs: no composefs repository at \/nonexistent\/repo\n$/);
});

test('cfs init: algorithms and formats, idempotent, conflicting re-init refused', () => {
  const work = fs.mkdtempSync('/var/tmp/bootcfs-cfsinit-');
  try {
    for (const { hash, format } of COMBOS) {
      const repo = path.join(work, `${hash}-${format}`, 'nested');
      ok(cfs(repo, 'init', '--hash', hash, '--format', format), 'init');
      assert.equal(fs.statSync(repo).mode & 0o777, 0o700);
      for (const d of ['objects', 'images', 'streams']) assert.ok(fs.statSync(path.join(repo, d)).isDirectory());
      const metaBytes = fs.readFileSync(path.join(repo, 'meta.json'));
      const meta = JSON.parse(metaBytes.toString());
      assert.equal(meta.algorithm, `fsverity-${hash}-12`);
      assert.deepEqual(meta.erofs_formats, { default: format === 'v1' ? 1 : 2 });
      assert.deepEqual(meta.features.compatible, ['insecure']);
      ok(cfs(repo, 'init', '--hash', hash, '--format', format), 're-init');
      assert.ok(fs.readFileSync(path.join(repo, 'meta.json')).equals(metaBytes));
      const other = cfs(repo, 'init', '--hash', hash === 'sha256' ? 'sha512' : 'sha256', '--format', format);
      assert.equal(other.status, 1);
      assert.match(other.stderr.toString(), /^bootcfs: .*already initialized with a different configuration/);
      assert.equal(cfs(repo, 'init', '--hash', hash, '--format', format === 'v1' ? 'v2' : 'v1').status, 1);
      assert.ok(fs.readFileSync(path.join(repo, 'meta.json')).equals(metaBytes));
    }
    // defaults: sha512, v1
    const def = path.join(work, 'default');
    ok(cfs(def, 'init'), 'init');
    const meta = JSON.parse(fs.readFileSync(path.join(def, 'meta.json'), 'utf8'));
    assert.equal(meta.algorithm, 'fsverity-sha512-12');
    assert.deepEqual(meta.erofs_formats, { default: 1 });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('cfs create-image / compute-id / image-objects / mount / gc on generated trees', { timeout: 600_000 }, async (t) => {
  assert.ok(isRoot, 'this test mounts images and needs root');
  requireTool(FSVERITY);
  requireTool(COMPOSEFS_INFO);
  const n = cases(1, 4);
  let mounts = 0;
  for (let i = 0; i < n; i++) {
    const seed = 3100 + i;
    const work = fs.mkdtempSync('/var/tmp/bootcfs-cfscli-');
    try {
      const src = path.join(work, 'src');
      await makeSource(src, seed);
      const want = expectedView(await snapshotTree(src));
      const ids = new Set<string>();
      for (const { hash, format } of COMBOS) {
        const ctx = `seed ${seed} ${hash}/${format}`;
        const repo = path.join(work, `repo-${hash}-${format}`);
        ok(cfs(repo, 'init', '--hash', hash, '--format', format), `${ctx}: init`);
        const computed = ok(cfs(repo, 'compute-id', src), `${ctx}: compute-id`).trim();
        assert.deepEqual(objectFiles(repo), [], `${ctx}: compute-id wrote objects`);
        const id = ok(cfs(repo, 'create-image', src, 'os/test'), `${ctx}: create-image`).trim();
        assert.match(id, new RegExp(`^[0-9a-f]{${hash === 'sha256' ? 64 : 128}}$`), ctx);
        assert.equal(id, computed, `${ctx}: create-image and compute-id disagree`);
        ids.add(id);
        // the id is the fs-verity digest of the stored image (fsverity-utils)
        const image = path.join(repo, 'images', id);
        const digest = ok(run(FSVERITY, ['digest', '--compact', `--hash-alg=${hash}`, image]), 'fsverity digest').trim();
        assert.equal(digest, id, `${ctx}: fs-verity digest of images/<id>`);
        assert.equal(fs.readlinkSync(path.join(repo, 'images/refs/os/test')), `../../${id}`);
        // a second create-image is idempotent
        assert.equal(ok(cfs(repo, 'create-image', src), `${ctx}: create-image again`).trim(), id);

        // image-objects: exactly the objects besides the image itself, by three names
        const listed = ok(cfs(repo, 'image-objects', 'os/test'), `${ctx}: image-objects`).trim().split('\n').filter(Boolean);
        assert.deepEqual(ok(cfs(repo, 'image-objects', `refs/os/test`), 'image-objects refs/').trim().split('\n').filter(Boolean), listed);
        assert.deepEqual(ok(cfs(repo, 'image-objects', id), 'image-objects id').trim().split('\n').filter(Boolean), listed);
        assert.ok(listed.length > 2, `${ctx}: too few objects (${listed.length})`);
        // The scan stores every file before the OCI transform empties /run: that one object is garbage.
        const runObject = ok(run(FSVERITY, ['digest', '--compact', `--hash-alg=${hash}`, path.join(src, 'run/sub/pid')]), 'fsverity digest').trim();
        assert.ok(!listed.includes(runObject), `${ctx}: /run content referenced by the image`);
        assert.deepEqual(objectFiles(repo), [...listed, id, runObject].sort(), `${ctx}: objects/ holds other objects than the image's`);
        if (format === 'v1') {
          const ref = ok(run(COMPOSEFS_INFO, ['objects', image]), 'composefs-info objects').trim().split('\n').map((l) => l.replace('/', ''));
          assert.deepEqual([...new Set(ref)].sort(), listed, `${ctx}: composefs-info objects differs`);

          // the kernel shows the source tree with the repository-path rules applied
          const got = await mountAndSnapshot(repo, 'os/test', path.join(work, 'mnt'));
          const diffs = compareViews(want, got);
          assert.deepEqual(diffs.slice(0, 20), [], `${ctx}: ${diffs.length} differences in the mount`);
          mounts++;
        }

        // gc: nothing to free while referenced; after removing the ref, dry run then the real thing
        const runSize = fs.statSync(path.join(src, 'run/sub/pid')).size;
        assert.match(ok(cfs(repo, 'gc'), 'gc'), new RegExp(`^Objects: 1 removed \\(${runSize} bytes\\)\n$`), `${ctx}: gc while referenced`);
        assert.deepEqual(objectFiles(repo), [...listed, id].sort());
        fs.unlinkSync(path.join(repo, 'images/refs/os/test'));
        const bytes = [...listed, id].reduce((s, o) => s + fs.statSync(path.join(repo, 'objects', o.slice(0, 2), o.slice(2))).size, 0);
        const count = listed.length + 1;
        const dry = ok(cfs(repo, 'gc', '--dry-run'), 'gc --dry-run');
        assert.match(dry, new RegExp(`^Objects: ${count} would be removed \\(${bytes} bytes\\)\n`), ctx);
        assert.equal(objectFiles(repo).length, count, `${ctx}: dry run deleted something`);
        assert.ok(fs.existsSync(path.join(repo, 'images', id)));
        const real = ok(cfs(repo, 'gc'), 'gc');
        assert.match(real, new RegExp(`^Objects: ${count} removed \\(${bytes} bytes\\)\n`), ctx);
        assert.deepEqual(objectFiles(repo), []);
        assert.ok(!fs.existsSync(path.join(repo, 'images', id)), `${ctx}: images/<id> survived gc`);
        assert.equal(cfs(repo, 'image-objects', id).status, 1);
      }
      assert.equal(ids.size, COMBOS.length, `seed ${seed}: two formats gave the same id`);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  t.diagnostic(`${n} generated trees × ${COMBOS.length} repository configurations; ${mounts} kernel mounts compared`);
});

test('cfs fsck: clean, corrupt object named (exit 1), --repair drops it, then reported missing', async () => {
  const work = fs.mkdtempSync('/var/tmp/bootcfs-cfsfsck-');
  try {
    const src = path.join(work, 'src');
    await makeSource(src, 3200);
    const repo = path.join(work, 'repo');
    ok(cfs(repo, 'init'), 'init');
    const id = ok(cfs(repo, 'create-image', src, 'img'), 'create-image').trim();
    const clean = ok(cfs(repo, 'fsck'), 'fsck');
    assert.match(clean, /no problems found\n$/);
    const listed = ok(cfs(repo, 'image-objects', 'img'), 'image-objects').trim().split('\n');
    const victim = listed[listed.length >> 1]!;
    const file = path.join(repo, 'objects', victim.slice(0, 2), victim.slice(2));
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, 0);
    b[0]! ^= 0xff;
    fs.writeSync(fd, b, 0, 1, 0);
    fs.closeSync(fd);

    const bad = cfs(repo, 'fsck');
    assert.equal(bad.status, 1, bad.stdout.toString());
    assert.match(bad.stdout.toString(), new RegExp(`damaged object ${victim}`));
    const json = cfs(repo, 'fsck', '--json');
    assert.equal(json.status, 1);
    const parsed = JSON.parse(json.stdout.toString());
    assert.equal(parsed.ok, false);
    assert.deepEqual(parsed.damagedObjects.map((d: { object: string }) => d.object), [victim]);

    const repair = cfs(repo, 'fsck', '--repair');
    assert.equal(repair.status, 1, 'the image now misses an object: still damaged');
    assert.match(repair.stdout.toString(), new RegExp(`damaged object ${victim}: .*\\(removed\\)`));
    assert.ok(!fs.existsSync(file));

    const after = cfs(repo, 'fsck', '--json');
    assert.equal(after.status, 1);
    const a = JSON.parse(after.stdout.toString());
    assert.deepEqual(a.damagedObjects, []);
    assert.deepEqual(a.missingObjects.map((m: { object: string }) => m.object), [victim]);
    assert.match(a.missingObjects[0].referencedBy, new RegExp(id.slice(0, 16)));
    assert.match(cfs(repo, 'fsck').stdout.toString(), new RegExp(`missing object ${victim}`));

    // create-image again stores the object again: clean
    assert.equal(ok(cfs(repo, 'create-image', src, 'img'), 'create-image again').trim(), id);
    assert.match(ok(cfs(repo, 'fsck'), 'fsck after re-create'), /no problems found\n$/);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

/** A random two-layer image: /usr with files (some > 64 bytes, a hardlink), xattrs, a whiteout in layer 2. */
function randomLayers(seed: number): Buffer[] {
  const rng = new Rng(seed);
  const mt = () => ({ mtimeSec: rng.int(1_000_000_000, 1_800_000_000) });
  const files: TarWriteEntry[] = [];
  for (let i = 0; i < rng.int(5, 15); i++) {
    const size = rng.pick([0, 1, 64, 65, 4096, rng.int(100, 200_000)]);
    files.push({ path: `usr/lib/f${i}`, type: 'reg', mode: 0o644, uid: rng.int(0, 2000), gid: rng.int(0, 2000), ...mt(), content: Buffer.from(rng.bytes(size)), xattrs: rng.bool(0.3) ? { 'user.k': Buffer.from(rng.bytes(5)) } : undefined });
  }
  const l1 = buildTar([
    { path: 'usr/', type: 'dir', mode: 0o755, ...mt() },
    { path: 'usr/lib/', type: 'dir', mode: 0o755, ...mt(), xattrs: { 'user.dir': Buffer.from('d') } },
    ...files,
    { path: 'usr/lib/hard', type: 'hardlink', linkTarget: 'usr/lib/f0', ...mt() },
    { path: 'etc/', type: 'dir', mode: 0o755, ...mt() },
    { path: 'etc/gone', type: 'reg', mode: 0o600, ...mt(), content: Buffer.from('x'.repeat(100)) },
    // mode 0777 as real tar writers record symlinks: a tar symlink with other permission bits keeps them on
    // the OCI path but not on disk (symlinks are always 0777 there), so the two ids would differ.
    { path: 'etc/link', type: 'symlink', mode: 0o777, linkTarget: '../usr/lib/f1', ...mt() },
  ], { format: 'pax' });
  const l2 = buildTar([
    { path: 'etc/', type: 'dir', mode: 0o755, ...mt() },
    { path: 'etc/.wh.gone', type: 'reg', mode: 0o644, ...mt(), content: Buffer.alloc(0) },
    { path: 'etc/new', type: 'reg', mode: 0o640, ...mt(), content: Buffer.from(rng.bytes(3000)) },
  ], { format: 'pax' });
  return [l1, l2];
}

test('cfs oci pull / images / inspect / compute-id; the umoci-unpacked rootfs has the same cfs compute-id', { timeout: 300_000 }, async (t) => {
  assert.ok(isRoot, 'umoci unpack of owned files and the mount need root');
  requireTool(UMOCI);
  const n = cases(1, 10);
  for (let i = 0; i < n; i++) {
    const seed = 3300 + i;
    const work = fs.mkdtempSync('/var/tmp/bootcfs-cfsoci-');
    try {
      const [l1, l2] = randomLayers(seed);
      const layout = writeOciLayout(path.join(work, 'layout'), { layers: [{ tar: l1!, compression: 'gzip' }, { tar: l2!, compression: 'none' }], tag: 'v1' });
      const repo = path.join(work, 'repo');
      ok(cfs(repo, 'init'), 'init');
      const out = ok(cfs(repo, 'oci', 'pull', `oci:${layout.dir}:v1`, 'my/img'), `seed ${seed}: oci pull`);
      const field = (k: string) => new RegExp(`^${k} +(\\S+)$`, 'm').exec(out)?.[1];
      assert.equal(field('manifest'), layout.manifestDigest);
      assert.equal(field('config'), layout.configDigest);
      assert.equal(field('tagged'), 'my/img');
      const verity = field('verity')!;
      assert.match(verity, /^[0-9a-f]{128}$/);
      assert.match(out, /^layers +2 imported, 0 already present$/m);
      // re-pull: nothing imported again, same id
      const again = ok(cfs(repo, 'oci', 'pull', `oci:${layout.dir}:v1`, 'my/img'), 're-pull');
      assert.match(again, new RegExp(`^verity +${verity}$`, 'm'));
      assert.match(again, /^layers +0 imported, 2 already present$/m);

      assert.equal(ok(cfs(repo, 'oci', 'images'), 'oci images'), `my/img\t${layout.manifestDigest}\t${layout.configDigest}\t${verity}\n`);
      assert.deepEqual(JSON.parse(ok(cfs(repo, 'oci', 'images', '--json'), 'images --json')), [{ name: 'my/img', manifest: layout.manifestDigest, config: layout.configDigest, image: verity }]);
      const manifestBytes = fs.readFileSync(path.join(layout.dir, 'blobs/sha256', layout.manifestDigest.slice(7)));
      assert.ok(cfs(repo, 'oci', 'inspect', '--manifest', 'my/img').stdout.equals(manifestBytes), 'raw manifest');
      assert.ok(cfs(repo, 'oci', 'inspect', '--manifest', `@${layout.manifestDigest}`).stdout.equals(manifestBytes), 'raw manifest by digest');
      const configBytes = fs.readFileSync(path.join(layout.dir, 'blobs/sha256', layout.configDigest.slice(7)));
      assert.ok(cfs(repo, 'oci', 'inspect', '--config', 'my/img').stdout.equals(configBytes), 'raw config');
      const doc = JSON.parse(ok(cfs(repo, 'oci', 'inspect', 'my/img'), 'inspect'));
      assert.equal(doc.image, verity);
      assert.deepEqual(doc.config.rootfs.diff_ids, layout.diffIds);
      assert.equal(cfs(repo, 'oci', 'inspect', 'nope').status, 1);

      assert.equal(ok(cfs(repo, 'oci', 'compute-id', 'my/img'), 'oci compute-id').trim(), verity);
      assert.equal(ok(cfs(repo, 'oci', 'compute-id', `@${layout.configDigest}`), 'oci compute-id @config').trim(), verity);
      assert.equal(ok(cfs(repo, 'fsck'), 'fsck').split('\n').at(-2)!.endsWith('no problems found'), true);
      // digest reproducibility through the CLI: the directory path agrees with the OCI path
      const bundle = path.join(work, 'bundle');
      const u = run(UMOCI, ['unpack', '--image', `${layout.dir}:v1`, bundle]);
      assert.equal(u.status, 0, u.stderr.toString());
      assert.equal(ok(cfs(repo, 'compute-id', path.join(bundle, 'rootfs')), 'compute-id rootfs').trim(), verity, `seed ${seed}: cfs compute-id of the umoci rootfs`);
      // the pulled image survives gc while tagged (its objects are reached through the streams)
      assert.match(ok(cfs(repo, 'gc'), 'gc'), /^Objects: 0 removed/);
      assert.deepEqual(ok(cfs(repo, 'image-objects', verity), 'image-objects').trim().split('\n').filter(Boolean).filter((o) => !fs.existsSync(path.join(repo, 'objects', o.slice(0, 2), o.slice(2)))), []);
      const got = await mountAndSnapshot(repo, verity, path.join(work, 'mnt'));
      assert.equal(got.get('/etc/gone'), undefined, 'whiteout applied');
      assert.ok(got.get('/usr/lib/hard'), 'hardlink present');
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  t.diagnostic(`${n} generated OCI layouts pulled through the CLI and cross-checked with umoci unpack`);
});
