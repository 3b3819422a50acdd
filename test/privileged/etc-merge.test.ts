/**
 * privileged tier (root): the /etc three-way merge (src/deploy/etc-merge.ts) the way finalize runs it,
 * on images pulled into a real composefs repository.
 *
 * Two OCI images (v1 = the booted deployment, v2 = the staged one) with an /etc holding owners, set-id
 * modes, `security.capability`, `security.*`/`trusted.*`/`user.*` xattrs, a character device, symlinks,
 * external (> 64 bytes) and inline files. v1's /etc is materialized as the old deployment's
 * `state/deploy/<old>/etc`, then edited as an admin would (chown, lchown, chmod u+s, setfattr security.* and
 * trusted.*, mknod, in-place edits, rm); v2's /etc is materialized as `state/deploy/<new>/etc`.
 * PRISTINE comes from the repository twice — the layer tree (`buildImageTree`, SHA-512 digests compared
 * against CURRENT) and the stored EROFS image (`imageToTree`, content read from `objects/<payload>`) —
 * and both must see the same local changes. The merge is applied and every entry of the result is checked
 * against the rules (owner, mode incl. set-id bits, every xattr, device number, content, target).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { applyEtcMerge, planEtcMerge, formatLocalChanges, type EtcMergePlan } from '../../src/deploy/etc-merge.js';
import { materializeTree } from '../../src/install/materialize.js';
import { Repository } from '../../src/repository/index.js';
import { pullImage } from '../../src/oci/pull.js';
import { buildImageTree, configDiffIds, repositoryContentReader } from '../../src/oci/image.js';
import { imageToTree } from '../../src/composefs/info.js';
import type { ContentReader } from '../../src/oci/bootable.js';
import { lookup, type Inode } from '../../src/tree/model.js';
import { lgetxattrs, lsetxattr } from '../../src/sys/libc.js';
import { buildTar, writeOciLayout, type TarWriteEntry } from '../helpers/oci-layout.js';
import { isRoot } from '../helpers/ref.js';

const work = fs.mkdtempSync('/var/tmp/bootcfs-etc-merge-');
after(() => fs.rmSync(work, { recursive: true, force: true }));

/** A valid VFS_CAP_REVISION_2 security.capability value granting cap_net_bind_service (bit 10). */
function capability(bit: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(0x02000000, 0);
  b.writeUInt32LE(1 << bit, 4);
  return b;
}
const BIG1 = Buffer.alloc(300, 'a');
const BIG2 = Buffer.alloc(300, 'b'); // same size, other bytes: only a digest or byte comparison tells
const SSHD1 = Buffer.from(`# sshd v1\n${'#'.repeat(200)}\n`);
const SSHD2 = Buffer.from(`# sshd v2\n${'#'.repeat(200)}\n`);

function etcLayer(v: 1 | 2): Buffer {
  const e: TarWriteEntry[] = [
    { path: 'usr/', type: 'dir', mode: 0o755 },
    { path: 'etc/', type: 'dir', mode: 0o755 },
    { path: 'etc/hostname', type: 'reg', mode: 0o644, content: Buffer.from(`v${v}-host\n`) },
    { path: 'etc/owned.conf', type: 'reg', mode: 0o640, uid: 0, gid: 42, content: Buffer.from(`owned v${v}\n`) },
    { path: 'etc/big.conf', type: 'reg', mode: 0o644, content: v === 1 ? BIG1 : Buffer.concat([BIG1, Buffer.from('+')]) },
    { path: 'etc/cap-tool', type: 'reg', mode: 0o755, content: Buffer.from(`tool v${v}\n`), xattrs: { 'security.capability': capability(10) } },
    { path: 'etc/labelled', type: 'reg', mode: 0o644, content: Buffer.from('l\n'), xattrs: { 'user.origin': Buffer.from(`image v${v}`) } },
    { path: 'etc/ssh/', type: 'dir', mode: 0o755 },
    { path: 'etc/ssh/sshd_config', type: 'reg', mode: 0o600, content: v === 1 ? SSHD1 : SSHD2 },
    { path: 'etc/ssh/moduli', type: 'reg', mode: 0o644, content: Buffer.from(`moduli v${v}\n`) },
    { path: 'etc/null-ish', type: 'chr', mode: 0o666, devMajor: 1, devMinor: v === 1 ? 3 : 5 },
    { path: 'etc/alt', type: 'symlink', linkTarget: 'hostname' },
    { path: 'etc/secret/', type: 'dir', mode: 0o700 },
    { path: 'etc/secret/key', type: 'reg', mode: 0o600, content: Buffer.from(`key v${v}\n`) },
  ];
  if (v === 2) {
    e.push({ path: 'etc/ssh/new_upstream', type: 'reg', mode: 0o644, content: Buffer.from('new\n') });
    e.push({ path: 'etc/secret/added-upstream', type: 'reg', mode: 0o600, uid: 0, gid: 0, content: Buffer.from('added\n') });
  }
  return buildTar(e);
}

interface Fixture { repo: Repository; repoPath: string; etc1: Inode; etc2: Inode; erofsEtc1: Inode; read: ContentReader }
let fx: Fixture;

before(async () => {
  if (!isRoot) assert.fail('etc-merge privileged tests need root (owners, security.*/trusted.* xattrs, mknod), as CI runs');
  const layout = path.join(work, 'layout');
  writeOciLayout(layout, { layers: [{ tar: etcLayer(1) }], tag: 'v1' });
  writeOciLayout(layout, { layers: [{ tar: etcLayer(2) }], tag: 'v2' });
  const repoPath = path.join(work, 'repo');
  const repo = await Repository.init(repoPath, { insecure: true });
  const trees: Inode[] = [];
  let imageId1: Buffer | undefined;
  for (const tag of ['v1', 'v2']) {
    const r = await pullImage(repo, `oci:${layout}:${tag}`, { tag: `localhost/bootc-${tag}` });
    imageId1 ??= r.imageId;
    const tree = await buildImageTree(repo, await configDiffIds(repo, r.configStream));
    const etc = lookup(tree.root, '/etc');
    assert.ok(etc?.isDir);
    trees.push(etc);
  }
  const fromRepo = repositoryContentReader(repo);
  const read: ContentReader = async (inode, p) => inode.content ?? (inode.size === 0 ? Buffer.alloc(0) : fromRepo(inode, p));
  // the same old image, read back from its stored EROFS file (what a mounted pristine /etc would show)
  const erofs = imageToTree(fs.readFileSync(path.join(repoPath, 'images', imageId1!.toString('hex'))));
  const erofsEtc1 = lookup(erofs.root, '/etc');
  assert.ok(erofsEtc1?.isDir);
  fx = { repo, repoPath, etc1: trees[0]!, etc2: trees[1]!, erofsEtc1, read };
});
after(async () => {
  await fx?.repo.close();
});

function describe(p: string): string {
  const st = fs.lstatSync(p);
  const xs = [...lgetxattrs(p)].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([k, v]) => `${k}=${v.toString('hex')}`).join(',');
  let what: string;
  if (st.isFile()) what = `f ${createHash('sha256').update(fs.readFileSync(p)).digest('hex').slice(0, 16)}`;
  else if (st.isSymbolicLink()) what = `l ->${fs.readlinkSync(p)}`;
  else if (st.isDirectory()) what = 'd';
  else if (st.isCharacterDevice()) what = `c ${st.rdev}`;
  else what = 'other';
  const perm = st.isSymbolicLink() ? '' : ` ${(st.mode & 0o7777).toString(8)}`;
  return `${what}${perm} ${st.uid}:${st.gid} x=[${xs}]`;
}
function describeTree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (rel: string): void => {
    const abs = rel === '' ? dir : path.join(dir, rel);
    out.set(rel, describe(abs));
    if (fs.lstatSync(abs).isDirectory()) for (const n of fs.readdirSync(abs).sort()) visit(rel === '' ? n : `${rel}/${n}`);
  };
  visit('');
  return out;
}

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr?.toString()}`);
}

test('etc merge at finalize: owners, set-id modes, security.*/trusted.* xattrs, devices, against a pulled repository', async () => {
  const deploy = path.join(work, 'root/state/deploy');
  const oldEtc = path.join(deploy, 'old/etc');
  const newEtc = path.join(deploy, 'new/etc');
  await materializeTree(fx.etc1, oldEtc, fx.read);
  await materializeTree(fx.etc2, newEtc, fx.read);
  const image2 = describeTree(newEtc);
  const cur = (p: string): string => path.join(oldEtc, p);

  // the admin's edits
  fs.chownSync(cur('owned.conf'), 4242, 4343); // owner only
  fs.writeFileSync(cur('big.conf'), BIG2); // same size, other bytes
  lsetxattr(cur('cap-tool'), 'security.bootcfs-label', Buffer.from('local'));
  lsetxattr(cur('labelled'), 'user.origin', Buffer.from('edited locally'));
  fs.lchownSync(cur('alt'), 77, 78); // a symlink's owner
  fs.rmSync(cur('ssh/moduli')); // deleted locally, changed upstream
  fs.chownSync(cur('secret'), 1000, 1000); // directory owner
  sh('mknod', [cur('mydev'), 'c', '10', '200']);
  fs.chmodSync(cur('mydev'), 0o620);
  fs.writeFileSync(cur('local-only.conf'), 'mine\n');
  fs.chownSync(cur('local-only.conf'), 1234, 5678);
  fs.chmodSync(cur('local-only.conf'), 0o4750); // after chown, as an admin would
  lsetxattr(cur('local-only.conf'), 'trusted.bootcfs', Buffer.from([0, 1, 2, 255]));
  lsetxattr(cur('local-only.conf'), 'security.bootcfs', Buffer.from('sec'));
  const current = describeTree(oldEtc);

  const plan = await planEtcMerge({ pristine: fx.etc1, current: oldEtc, next: fx.etc2, read: fx.read });
  const changes = formatLocalChanges(plan.localChanges);
  assert.equal(changes, [
    'M alt (owner)',
    'M big.conf (content)',
    'M cap-tool (xattrs)',
    'M labelled (xattrs)',
    'A local-only.conf',
    'A mydev',
    'M owned.conf (owner)',
    'M secret (owner)',
    'D ssh/moduli',
  ].join('\n'));
  assert.deepEqual(plan.conflicts, []);

  // the same PRISTINE read from the stored EROFS image (SHA-512 repository: no sha256 metacopy digest, so
  // same-size files are compared against the object's bytes)
  let objectReads = 0;
  const fromObjects: ContentReader = async (inode) => {
    objectReads++;
    assert.ok(inode.payload !== undefined, 'an external file of the EROFS image has a payload');
    return fs.readFileSync(path.join(fx.repoPath, 'objects', inode.payload));
  };
  const plan2: EtcMergePlan = await planEtcMerge({ pristine: fx.erofsEtc1, current: oldEtc, next: fx.etc2, read: fx.read, readPristine: fromObjects });
  assert.equal(formatLocalChanges(plan2.localChanges), changes);
  assert.ok(objectReads >= 2, `${objectReads} objects read`);

  await applyEtcMerge(plan, newEtc);
  const merged = describeTree(newEtc);
  const fromCurrent = ['alt', 'big.conf', 'cap-tool', 'labelled', 'local-only.conf', 'mydev', 'owned.conf', 'secret'];
  const fromNew = ['', 'hostname', 'null-ish', 'ssh', 'ssh/sshd_config', 'ssh/new_upstream', 'secret/key', 'secret/added-upstream'];
  assert.deepEqual([...merged.keys()].sort(), [...fromCurrent, ...fromNew].sort(), 'ssh/moduli stays deleted');
  for (const p of fromCurrent) assert.equal(merged.get(p), current.get(p), `${p} keeps the local version`);
  for (const p of fromNew) assert.equal(merged.get(p), image2.get(p), `${p} follows the new image`);
  // spot checks of what the descriptors encode
  const lo = fs.lstatSync(path.join(newEtc, 'local-only.conf'));
  assert.equal(lo.mode & 0o7777, 0o4750, 'set-uid survives the chown');
  assert.deepEqual([lo.uid, lo.gid], [1234, 5678]);
  assert.deepEqual(lgetxattrs(path.join(newEtc, 'local-only.conf')).get('trusted.bootcfs'), Buffer.from([0, 1, 2, 255]));
  assert.deepEqual(lgetxattrs(path.join(newEtc, 'cap-tool')).get('security.capability'), capability(10));
  assert.equal(fs.lstatSync(path.join(newEtc, 'mydev')).rdev, (10 << 8) | 200);
  assert.equal(fs.lstatSync(path.join(newEtc, 'null-ish')).rdev, (1 << 8) | 5, 'untouched device follows the new image');
  assert.equal(fs.readFileSync(path.join(newEtc, 'hostname'), 'utf8'), 'v2-host\n');
  assert.deepEqual(fs.readFileSync(path.join(newEtc, 'big.conf')), BIG2);
  assert.deepEqual(fs.readdirSync(path.dirname(newEtc)), ['etc'], 'no temp directory left');
});

test('etc merge: a local owner or xattr change where the new image has a directory is a conflict; nothing is written', async () => {
  const base = path.join(work, 'conflict');
  const oldEtc = path.join(base, 'old/etc');
  const newEtc = path.join(base, 'new/etc');
  await materializeTree(fx.etc1, oldEtc, fx.read);
  await materializeTree(fx.etc2, newEtc, fx.read);
  const before = describeTree(newEtc);
  // v2 keeps hostname a file; make NEW's hostname a directory in a copy of the tree
  const { Inode: InodeClass, S_IFDIR } = await import('../../src/tree/model.js');
  const next = new InodeClass({ mode: fx.etc2.mode, uid: fx.etc2.uid, gid: fx.etc2.gid });
  for (const [n, k] of fx.etc2.entries!) next.setEntry(n, k);
  next.setEntry('hostname', new InodeClass({ mode: S_IFDIR | 0o755 }));
  next.setEntry('owned.conf', new InodeClass({ mode: S_IFDIR | 0o755 }));
  fs.chownSync(path.join(oldEtc, 'hostname'), 0, 7); // group only
  lsetxattr(path.join(oldEtc, 'owned.conf'), 'security.bootcfs', Buffer.from('x'));
  fs.chownSync(path.join(oldEtc, 'secret'), 5, 5);
  next.setEntry('secret', new InodeClass({ mode: 0o100644, size: 0 }));
  const plan = await planEtcMerge({ pristine: fx.etc1, current: oldEtc, next, read: fx.read });
  assert.deepEqual(plan.conflicts.map((c) => [c.path, c.kind]), [
    ['hostname', 'local-file-vs-new-directory'],
    ['owned.conf', 'local-file-vs-new-directory'],
    ['secret', 'local-directory-vs-new-file'],
  ]);
  await assert.rejects(applyEtcMerge(plan, newEtc), /Merge conflicts found in etc/);
  assert.deepEqual(describeTree(newEtc), before);
});
