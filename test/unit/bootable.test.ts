/**
 * The bootable transform (src/oci/bootable.ts) and SELinux relabelling (src/oci/selinux.ts): policy
 * parsing with typed errors, last-match-wins / file types / <<none>> / .local / .subs semantics, the
 * literal-prefix index against a plain linear scan on generated policies and paths, /boot and /sysroot
 * handling, label stripping without a policy, and determinism.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../helpers/rng.js';
import {
  SelinuxPolicy,
  SelinuxPolicyError,
  literalPrefix,
  parseFileContexts,
  parseSubstitutions,
  selinuxRelabel,
  selinuxTypeOfConfig,
  NO_CONTEXT,
} from '../../src/oci/selinux.js';
import { BootTransformError, transformForBoot } from '../../src/oci/bootable.js';
import { Inode, S_IFIFO, S_IFLNK, S_IFREG, lookup, newDir, walk, type FileSystem } from '../../src/tree/model.js';
import { writeImageV1 } from '../../src/erofs/writer-v1.js';
import { fsverityDigest } from '../../src/fsverity/index.js';
import { cases } from '../helpers/ref.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const label = (fs: FileSystem, p: string): string | undefined => lookup(fs.root, p)?.xattrs.get('security.selinux')?.toString('latin1');

function file(content: string | Buffer, extra: Partial<{ mtimeSec: number; xattrs: Map<string, Buffer> }> = {}): Inode {
  const c = typeof content === 'string' ? b(content) : content;
  return new Inode({ mode: S_IFREG | 0o644, size: c.length, content: c, ...extra });
}

function put(fs: FileSystem, p: string, inode: Inode): Inode {
  const parts = p.split('/').filter(Boolean);
  let cur = fs.root;
  for (const c of parts.slice(0, -1)) {
    let next = cur.entries!.get(c);
    if (!next) cur.setEntry(c, (next = newDir()));
    cur = next;
  }
  cur.setEntry(parts[parts.length - 1]!, inode);
  return inode;
}

test('policy parsing: typed errors with file and 1-based line', () => {
  const bad: Array<[string, number, RegExp]> = [
    ['/a system_u:object_r:a_t:s0\n/b\n', 2, /missing context/],
    ['# c\n\n/a -x ctx\n', 3, /invalid file type/],
    ['/a -- \n', 1, /missing context after/],
    ['/a ctx extra\n', 1, /trailing data/],
    ['/ok ctx\n/a(b ctx\n', 2, /invalid regular expression/],
  ];
  for (const [text, line, re] of bad) {
    assert.throws(
      () => new SelinuxPolicy({ fileContexts: b(text) }),
      (e: unknown) => e instanceof SelinuxPolicyError && e.line === line && e.file === 'file_contexts' && re.test(e.message) && e.code === 'EFORMAT',
      text,
    );
  }
  assert.throws(
    () => new SelinuxPolicy({ fileContexts: b('/a ctx\n'), local: b('/x y\n/z\n') }),
    (e: unknown) => e instanceof SelinuxPolicyError && e.file === 'file_contexts.local' && e.line === 2,
  );
  assert.throws(
    () => parseSubstitutions(b('/a /b\n/c /d /e\n'), 'file_contexts.subs'),
    (e: unknown) => e instanceof SelinuxPolicyError && e.line === 2 && /trailing/.test(e.message),
  );
  assert.throws(() => parseFileContexts(Buffer.from([0x2f, 0xff, 0x20, 0x61, 0x0a])), (e: unknown) => e instanceof SelinuxPolicyError && e.line === 1);
  const rules = parseFileContexts(b('  # comment\n\n/usr(/.*)?\tsystem_u:object_r:usr_t:s0\n/bin/.* -- bin_t\n/x -d <<none>>\n'));
  assert.deepEqual(rules.map((r) => [r.regex, r.fileType, r.context, r.line]), [
    ['/usr(/.*)?', undefined, 'system_u:object_r:usr_t:s0', 3],
    ['/bin/.*', '-', 'bin_t', 4],
    ['/x', 'd', NO_CONTEXT, 5],
  ]);
  assert.equal(selinuxTypeOfConfig(b('# SELINUXTYPE=no\nSELINUX=enforcing\n selinuxtype = targeted \nSELINUXTYPE=mls\n')), 'targeted');
  assert.equal(selinuxTypeOfConfig(b('SELINUX=disabled\n')), undefined);
});

test('literal prefixes are sure prefixes', () => {
  const want: Array<[string, string]> = [
    ['/usr(/.*)?', '/usr'],
    ['/usr/lib/.*\\.so', '/usr/lib/'],
    ['/etc/foo\\.d(/.*)?', '/etc/foo.d'],
    ['/vars?/x', '/var'],
    ['/a+b', '/a'],
    ['/ab*c', '/a'],
    ['/x{2}', '/'],
    ['/a|/b', ''],
    ['(/a|/b)/c', ''],
    ['/[ab]/c', '/'],
    ['/a\\d', '/a'],
    ['.*', ''],
  ];
  for (const [re, p] of want) assert.equal(literalPrefix(re), p, re);
});

test('matching: last line wins, file types, <<none>>, .local after file_contexts, .subs aliases', () => {
  const fs: FileSystem = { root: newDir() };
  put(fs, '/usr/bin/tool', file('x'));
  put(fs, '/usr/bin/sh', new Inode({ mode: S_IFLNK | 0o777, target: 'tool' }));
  put(fs, '/usr/lib/fifo', new Inode({ mode: S_IFIFO | 0o600 }));
  const shared = put(fs, '/usr/lib/shared', file('hardlinked'));
  put(fs, '/var/zz-link', shared); // visited after /usr/lib/shared: its label wins
  put(fs, '/etc/secret', file('s', { xattrs: new Map([['security.selinux', b('host_t\0')], ['user.keep', b('1')]]) }));
  put(fs, '/home/alice/notes', file('n'));
  put(fs, '/srv/www/index', file('i'));
  put(fs, '/opt', newDir());
  const policy = {
    fileContexts: b(
      [
        '/.*\tsystem_u:object_r:default_t:s0',
        '/usr(/.*)?\tsystem_u:object_r:usr_t:s0',
        '/usr/bin(/.*)?\tsystem_u:object_r:bin_t:s0',
        '/usr/bin/.*\t-l\tsystem_u:object_r:link_t:s0',
        '/usr/lib/.*\t-p\tsystem_u:object_r:fifo_t:s0',
        '/var/.*\tsystem_u:object_r:var_t:s0',
        '/etc/secret\t<<none>>',
        '/\t-d\tsystem_u:object_r:root_t:s0',
        '/var/www(/.*)?\tsystem_u:object_r:httpd_t:s0',
      ].join('\n') + '\n',
    ),
    local: b('/usr/bin/tool\t--\tsystem_u:object_r:local_t:s0\n'),
    homedirs: b('/home/[^/]+/.*\tsystem_u:object_r:user_home_t:s0\n'),
    subs: b('/srv/www /var/www\n'),
  };
  selinuxRelabel(fs, policy);
  const expect: Record<string, string | undefined> = {
    '/': 'system_u:object_r:root_t:s0',
    '/usr': 'system_u:object_r:usr_t:s0',
    '/usr/bin': 'system_u:object_r:bin_t:s0',
    '/usr/bin/tool': 'system_u:object_r:local_t:s0',
    '/usr/bin/sh': 'system_u:object_r:link_t:s0',
    '/usr/lib': 'system_u:object_r:usr_t:s0',
    '/usr/lib/fifo': 'system_u:object_r:fifo_t:s0',
    '/usr/lib/shared': 'system_u:object_r:var_t:s0',
    '/var/zz-link': 'system_u:object_r:var_t:s0',
    '/etc': 'system_u:object_r:default_t:s0',
    '/etc/secret': undefined,
    '/home/alice': 'system_u:object_r:default_t:s0',
    '/home/alice/notes': 'system_u:object_r:user_home_t:s0',
    '/srv': 'system_u:object_r:default_t:s0',
    '/srv/www': 'system_u:object_r:httpd_t:s0',
    '/srv/www/index': 'system_u:object_r:httpd_t:s0',
    '/opt': 'system_u:object_r:default_t:s0',
  };
  for (const [p, want] of Object.entries(expect)) assert.equal(label(fs, p), want, p);
  assert.equal(lookup(fs.root, '/etc/secret')!.xattrs.get('user.keep')?.toString(), '1');
  // no trailing NUL: the value is the context bytes exactly
  assert.equal(lookup(fs.root, '/usr')!.xattrs.get('security.selinux')!.length, 'system_u:object_r:usr_t:s0'.length);
});

/** A random file_contexts line over a small alphabet of path components. */
function randomRule(rng: Rng): string {
  const comps = ['usr', 'lib', 'bin', 'etc', 'var', 'a', 'ab', 'x.d', 'lib64'];
  const pick = (): string => comps[rng.int(0, comps.length - 1)]!;
  const esc = (s: string): string => s.replace(/\./g, '\\.');
  const forms = [
    () => `/${esc(pick())}(/.*)?`,
    () => `/${esc(pick())}/${esc(pick())}(/.*)?`,
    () => `/${esc(pick())}/.*`,
    () => `/${esc(pick())}/[^/]+`,
    () => `/${esc(pick())}s?/${esc(pick())}`,
    () => `/(${esc(pick())}|${esc(pick())})/.*`,
    () => `/${esc(pick())}/${esc(pick())}\\.so(\\.[^/]*)*`,
    () => `.*/${esc(pick())}`,
    () => `/.*`,
    () => `/${pick().slice(0, 1)}.*`,
  ];
  const types = ['', '', '', ' --', ' -d', ' -l'];
  return `${forms[rng.int(0, forms.length - 1)]!()}${types[rng.int(0, types.length - 1)]} ctx_${rng.int(0, 99)}_t`;
}

test('the literal-prefix index gives the same answer as a linear scan of every rule', () => {
  const rng = new Rng(20261126);
  const comps = ['usr', 'lib', 'bin', 'etc', 'var', 'a', 'ab', 'x.d', 'lib64', 'libx.so.1', 'vars', 'q'];
  for (let round = 0; round < cases(20, 200); round++) {
    const lines = Array.from({ length: rng.int(1, 60) }, () => randomRule(rng));
    const text = lines.join('\n') + '\n';
    const policy = new SelinuxPolicy({ fileContexts: b(text) });
    const rules = parseFileContexts(b(text)).map((r) => ({ ...r, re: new RegExp(`^(?:${r.regex})${r.fileType ?? '.'}$`, 's') }));
    for (let i = 0; i < 200; i++) {
      const depth = rng.int(0, 4);
      const p = depth === 0 ? '/' : '/' + Array.from({ length: depth }, () => comps[rng.int(0, comps.length - 1)]).join('/');
      const t = ['-', 'd', 'l', 'p'][rng.int(0, 3)]!;
      let want: string | undefined;
      for (let j = rules.length - 1; j >= 0; j--) {
        if (rules[j]!.re.test(p + t)) {
          want = rules[j]!.context;
          break;
        }
      }
      assert.equal(policy.lookup(p, t), want, `round ${round}: ${p} ${t}\n${text}`);
    }
  }
});

function bootableTree(opts: { selinux?: boolean; mtime?: number } = {}): FileSystem {
  const fs: FileSystem = { root: newDir() };
  const usr = put(fs, '/usr', newDir({ mtimeSec: 1_700_000_000, mtimeNsec: 5 }));
  void usr;
  put(fs, '/usr/bin/x', file('x', { xattrs: new Map([['security.selinux', b('container_t\0')]]) }));
  put(fs, '/boot/vmlinuz', file('kernel'));
  put(fs, '/boot/EFI/Linux/uki.efi', file('uki'));
  lookup(fs.root, '/boot')!.mtimeSec = opts.mtime ?? 123;
  put(fs, '/sysroot/ostree', newDir());
  lookup(fs.root, '/sysroot')!.mtimeSec = (opts.mtime ?? 123) + 1;
  if (opts.selinux) {
    put(fs, '/etc/selinux/config', file('SELINUX=enforcing\nSELINUXTYPE=targeted\n'));
    put(fs, '/etc/selinux/targeted/contexts/files/file_contexts', new Inode({ mode: S_IFREG | 0o644, size: 200, digest: Buffer.alloc(64, 7) }));
  }
  return fs;
}

test('transformForBoot: /boot and /sysroot emptied with /usr mtime, labels stripped without policy', async () => {
  const a = bootableTree({ mtime: 1 });
  const r = await transformForBoot(a);
  assert.deepEqual(r, { selinux: 'stripped' });
  for (const d of ['/boot', '/sysroot']) {
    const n = lookup(a.root, d)!;
    assert.equal(n.entries!.size, 0, d);
    assert.equal(n.mtimeSec, 1_700_000_000);
    assert.equal(n.mtimeNsec, 5);
  }
  for (const [, inode] of walk(a.root)) assert.equal(inode.xattrs.has('security.selinux'), false);
  // two builds whose /boot and /sysroot differ only in content and mtime give the same image
  const c = bootableTree({ mtime: 999 });
  put(c, '/boot/other', file('different'));
  await transformForBoot(c);
  assert.ok(fsverityDigest(writeImageV1(a), 'sha256').equals(fsverityDigest(writeImageV1(c), 'sha256')));
});

test('transformForBoot: policy read through the content reader; missing dirs and files are typed errors', async () => {
  const rulesText = '/.*\tsystem_u:object_r:default_t:s0\n/usr(/.*)?\tsystem_u:object_r:usr_t:s0\n/boot\t-d\tsystem_u:object_r:boot_t:s0\n';
  const fc = b(rulesText + '#'.repeat(200 - rulesText.length - 1) + '\n');
  assert.equal(fc.length, 200);
  const fs = bootableTree({ selinux: true });
  const reads: string[] = [];
  const r = await transformForBoot(fs, {
    readContent: async (inode, p) => {
      reads.push(p);
      assert.ok(inode.digest!.equals(Buffer.alloc(64, 7)));
      return fc;
    },
  });
  assert.deepEqual(r, { selinux: 'relabelled', policy: 'targeted' });
  assert.deepEqual(reads, ['/etc/selinux/targeted/contexts/files/file_contexts']);
  assert.equal(label(fs, '/usr/bin/x'), 'system_u:object_r:usr_t:s0');
  assert.equal(label(fs, '/boot'), 'system_u:object_r:boot_t:s0');
  assert.equal(label(fs, '/etc/selinux/config'), 'system_u:object_r:default_t:s0');

  await assert.rejects(transformForBoot(bootableTree({ selinux: true })), BootTransformError); // no reader for an external file
  await assert.rejects(
    transformForBoot(bootableTree({ selinux: true }), { readContent: async () => Buffer.alloc(10) }),
    (e: unknown) => e instanceof BootTransformError && /10 bytes/.test((e as Error).message),
  );
  const bad = bootableTree({ selinux: true });
  await assert.rejects(
    transformForBoot(bad, { readContent: async () => Buffer.concat([b('/a ctx\n/b -q ctx\n'), Buffer.alloc(200 - 17, 0x23)]) }),
    (e: unknown) => e instanceof SelinuxPolicyError && e.line === 2,
  );
  assert.equal(lookup(bad.root, '/boot')!.entries!.size, 2, 'a bad policy leaves the tree unchanged');

  for (const missing of ['boot', 'sysroot', 'usr']) {
    const t = bootableTree();
    t.root.entries!.delete(missing);
    await assert.rejects(transformForBoot(t), (e: unknown) => e instanceof BootTransformError && e.message.includes(`/${missing}`), missing);
  }
  const notDir = bootableTree();
  notDir.root.setEntry('sysroot', file('x'));
  await assert.rejects(transformForBoot(notDir), /not a directory/);
  const noPolicyDir = bootableTree();
  put(noPolicyDir, '/etc/selinux/config', file('SELINUXTYPE=mls\n'));
  await assert.rejects(transformForBoot(noPolicyDir), (e: unknown) => e instanceof BootTransformError && /mls/.test((e as Error).message));
  const noFc = bootableTree();
  put(noFc, '/etc/selinux/config', file('SELINUXTYPE=t\n'));
  put(noFc, '/etc/selinux/t/contexts/files/file_contexts.local', file('/a b\n'));
  await assert.rejects(transformForBoot(noFc), /no file_contexts/);
  // config without SELINUXTYPE: labels stripped
  const noType = bootableTree();
  put(noType, '/etc/selinux/config', file('SELINUX=disabled\n'));
  assert.deepEqual(await transformForBoot(noType), { selinux: 'stripped' });
  assert.equal(label(noType, '/usr/bin/x'), undefined);
});
