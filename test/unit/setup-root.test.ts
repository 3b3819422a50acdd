/**
 * bootcfs's initramfs setup-root (dracut/90bootcfs): the shell functions it is built from, run with the
 * shells an initramfs may have (dash as /bin/sh, bash — dracut's default — and busybox sh), and the
 * static properties of the dracut module and its systemd unit that the boot relies on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, cases, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

const MODULE = path.join(REPO_ROOT, 'dracut/90bootcfs');
const LIB = path.join(MODULE, 'bootcfs-lib.sh');
const SHELLS: Array<[string, string[]]> = [
  ['dash', ['/bin/sh']],
  ['bash', ['/bin/bash']],
  ['busybox', ['/bin/busybox', 'sh']],
];

const H512 = 'a'.repeat(64) + '0123456789abcdef'.repeat(4);
const H512B = '5'.repeat(128);
const H256 = '0f'.repeat(32);

interface Parsed { rc: number; digest: string; insecure: string; error: string }

const PARSE = `. "$LIB"; for c in "$@"; do bootcfs_parse_cmdline "$c"; rc=$?; printf '%s|%s|%s|%s\\001' "$rc" "$BOOTCFS_DIGEST" "$BOOTCFS_INSECURE" "$BOOTCFS_ERROR"; done`;

/** Parses every command line with one shell process. */
function parseAll(shell: string[], cmdlines: string[], cwd?: string): Parsed[] {
  const r = run(shell[0]!, [...shell.slice(1), '-c', PARSE, 'sh', ...cmdlines], { env: { LIB, PATH: '/usr/bin:/bin' }, cwd });
  assert.equal(r.status, 0, `${shell.join(' ')}: ${r.stderr.toString()}`);
  const recs = r.stdout.toString('latin1').split('\x01');
  assert.equal(recs.pop(), '');
  assert.equal(recs.length, cmdlines.length);
  return recs.map((rec) => {
    const [rc, digest, insecure, ...err] = rec.split('|');
    return { rc: Number(rc), digest: digest!, insecure: insecure!, error: err.join('|') };
  });
}

/** The rule, independently: split on blanks, the last argument that starts with composefs= decides. */
function expected(cmdline: string): Parsed {
  const args = cmdline.split(/[ \t\n]+/).filter(Boolean);
  let last: string | undefined;
  for (const a of args) {
    if (a.startsWith('composefs=')) last = a.slice('composefs='.length);
    else if (a.includes('composefs=') && a.includes('"')) last = '"';
  }
  if (last === undefined) return { rc: 1, digest: '', insecure: 'n', error: '' };
  let insecure = 'n';
  if (last === '"') return { rc: 2, digest: '', insecure, error: '' };
  if (last.startsWith('?')) {
    insecure = 'y';
    last = last.slice(1);
  }
  if (!/^[0-9a-f]+$/.test(last) || (last.length !== 64 && last.length !== 128)) return { rc: 2, digest: '', insecure, error: '' };
  return { rc: 0, digest: last, insecure, error: '' };
}

type Case = [cmdline: string, want: Partial<Parsed>];

function checkAll(shellName: string, shell: string[], list: Case[], cwd?: string): void {
  const got = parseAll(shell, list.map(([c]) => c), cwd);
  list.forEach(([cmdline, want], i) => {
    const g = got[i]!;
    const label = `${shellName}: ${JSON.stringify(cmdline)} → ${JSON.stringify(g)}`;
    for (const k of Object.keys(want) as Array<keyof Parsed>) assert.equal(g[k], want[k], label);
    if (g.rc !== 0) assert.ok(g.error.length > 0, `${label}: an error must say why`);
  });
}

for (const [name, shell] of SHELLS) {
  test(`setup-root cmdline (${name}): valid forms, last composefs= wins`, () => {
    const l: Case[] = [];
    l.push([`console=ttyS0 composefs=${H512} rw`, { rc: 0, digest: H512, insecure: 'n' }]);
    l.push([`composefs=${H256}`, { rc: 0, digest: H256, insecure: 'n' }]);
    l.push([`composefs=?${H512} panic=-1`, { rc: 0, digest: H512, insecure: 'y' }]);
    l.push([`composefs=${H512} quiet composefs=${H512B}`, { rc: 0, digest: H512B, insecure: 'n' }]);
    l.push([`composefs=?${H512} composefs=${H512B}`, { rc: 0, digest: H512B, insecure: 'n' }]);
    l.push([`composefs=${H512B} composefs=?${H512}`, { rc: 0, digest: H512, insecure: 'y' }]);
    // /proc/cmdline ends with a newline; several blanks and tabs separate arguments
    l.push([`  a=1\tcomposefs=${H512}   b=2\n`, { rc: 0, digest: H512 }]);
    l.push(['console=ttyS0 rw', { rc: 1, digest: '' }]);
    l.push([`xcomposefs=${H512} composefs.extra=1`, { rc: 1 }]);
    checkAll(name, shell, l);
  });

  test(`setup-root cmdline (${name}): invalid digests are refused, also when an earlier one is valid`, () => {
    const l: Case[] = [];
    for (const bad of ['', '?', H512.toUpperCase(), H512.slice(1), `${H512}0`, H256.slice(2), `${H512.slice(1)}g`, `?${H256}x`, '*', `${H256} `.trim() + '/']) {
      l.push([`composefs=${bad}`, { rc: 2, digest: '' }]);
      l.push([`composefs=${H512} composefs=${bad}`, { rc: 2, digest: '' }]);
    }
    l.push([`"composefs=${H512}"`, { rc: 2 }]);
    l.push([`composefs=${H256} "composefs=${H512}"`, { rc: 2 }]);
    checkAll(name, shell, l);
  });

  test(`setup-root cmdline (${name}): backslashes and glob characters are not interpreted (T11)`, () => {
    const l: Case[] = [];
    // systemd-boot prepends initrd=\EFI\...: echo in dash would turn \b into a backspace and \n into a newline
    l.push([`initrd=\\EFI\\Linux\\bootc_composefs-${H256}\\initrd composefs=?${H512}`, { rc: 0, digest: H512, insecure: 'y' }]);
    l.push([`composefs=${H512} a=x\\ncomposefs=${H512B}`, { rc: 0, digest: H512 }]);
    l.push([`composefs=${H512} a=\\bcomposefs=${H256}`, { rc: 0, digest: H512 }]);
    // glob characters must not expand to file names in the working directory
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-glob-'));
    try {
      writeFileSync(path.join(dir, `composefs=${H512B}`), '');
      checkAll(name, shell, l);
      const g: Case[] = [];
      g.push([`composefs=${H512} composefs*`, { rc: 0, digest: H512 }]);
      g.push([`composefs=${H512} c*`, { rc: 0, digest: H512 }]);
      checkAll(name, shell, g, dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('setup-root cmdline: random command lines agree with an independent implementation of the rule (all shells)', () => {
  const rng = new Rng(0x5e7a);
  const tokens = (): string => {
    const digest = (): string => {
      const len = rng.pick([64, 128, 128, 63, 129, 0]);
      let s = '';
      for (let i = 0; i < len; i++) s += rng.pick([...'0123456789abcdef', ...(rng.bool(0.02) ? 'AgZ*' : '')]);
      return s;
    };
    switch (rng.int(0, 6)) {
      case 0: return `composefs=${digest()}`;
      case 1: return `composefs=?${digest()}`;
      case 2: return `initrd=\\EFI\\Linux\\x${rng.int(0, 9)}\\b\\n\\t`;
      case 3: return rng.pick(['rw', 'ro', 'panic=-1', 'console=ttyS0,115200', 'rd.shell=0', 'quiet', '*', '?', '[a]']);
      case 4: return `x${rng.int(0, 99)}=composefs=${digest()}`;
      case 5: return `"composefs=${digest()}"`;
      default: return `k${rng.int(0, 9)}=${rng.bytes(rng.int(0, 6)).toString('hex')}`;
    }
  };
  const n = cases(400, 4000);
  const list: Case[] = [];
  for (let i = 0; i < n; i++) {
    const parts: string[] = [];
    const count = rng.int(0, 6);
    for (let j = 0; j < count; j++) parts.push(tokens());
    const line = parts.join(rng.pick([' ', '  ', '\t'])) + (rng.bool() ? '\n' : '');
    const want = expected(line);
    list.push([line, { rc: want.rc, digest: want.digest, ...(want.rc === 0 ? { insecure: want.insecure } : {}) }]);
  }
  for (const [name, shell] of SHELLS) checkAll(name, shell, list);
});

test('setup-root helpers: fsverity output, object names, algorithm by length', () => {
  const sh = (script: string, ...args: string[]): { status: number; out: string } => {
    const r = run('/bin/sh', ['-c', `. "$LIB"; ${script}`, 'sh', ...args], { env: { LIB, PATH: '/usr/bin:/bin' } });
    return { status: r.status, out: r.stdout.toString() };
  };
  assert.deepEqual(sh('bootcfs_parse_measure "$1"', `sha512:${H512} /proc/self/fd/3`), { status: 0, out: `sha512 ${H512}\n` });
  assert.deepEqual(sh('bootcfs_parse_measure "$1"', `sha256:${H256} /x`), { status: 0, out: `sha256 ${H256}\n` });
  assert.equal(sh('bootcfs_parse_measure "$1"', 'ERROR: file has no verity: No data available').status, 1);
  assert.equal(sh('bootcfs_parse_measure "$1"', `md5:${H256} /x`).status, 1);
  assert.deepEqual(sh('bootcfs_object_digest_from_path "$1"', `ab/${H512.slice(2)}`), { status: 0, out: `ab${H512.slice(2)}\n` });
  assert.deepEqual(sh('bootcfs_object_digest_from_path "$1"', `/sysroot/composefs/objects/0f/${H256.slice(2)}`), { status: 0, out: `${H256}\n` });
  assert.deepEqual(sh('bootcfs_verity_algorithm "$1"', H256), { status: 0, out: 'sha256\n' });
  assert.deepEqual(sh('bootcfs_verity_algorithm "$1"', H512), { status: 0, out: 'sha512\n' });
  assert.equal(sh('bootcfs_verity_algorithm "$1"', 'abc').status, 1);
});

test('setup-root unit and dracut module: ordering, fail-closed, everything the script runs is installed', () => {
  const unit = readFileSync(path.join(MODULE, 'bootcfs-setup-root.service'), 'utf8');
  const keys = new Map<string, string[]>();
  for (const line of unit.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) keys.set(m[1]!, [...(keys.get(m[1]!) ?? []), m[2]!]);
  }
  const words = (k: string): string[] => (keys.get(k) ?? []).join(' ').split(/\s+/).filter(Boolean);
  assert.ok(words('After').includes('sysroot.mount'), 'After=sysroot.mount');
  assert.ok(words('Before').includes('initrd-root-fs.target'), 'Before=initrd-root-fs.target');
  assert.ok(words('RequiredBy').includes('initrd-root-fs.target'), 'a failure must fail initrd-root-fs.target');
  assert.deepEqual(keys.get('DefaultDependencies'), ['no']);
  assert.deepEqual(keys.get('Type'), ['oneshot']);
  assert.match((keys.get('FailureAction') ?? [''])[0]!, /^(reboot|reboot-force|poweroff|poweroff-force|exit)$/, 'a failed setup must stop the boot, not open a shell');
  assert.ok(!/\bemergency\b/.test(words('OnFailure').join(' ')), 'no emergency shell on failure');
  assert.ok(words('ExecStart')[0] === '/usr/lib/bootcfs/bootcfs-setup-root');

  const setup = readFileSync(path.join(MODULE, 'module-setup.sh'), 'utf8');
  const script = readFileSync(path.join(MODULE, 'bootcfs-setup-root.sh'), 'utf8');
  const installed = new Set(
    [...setup.matchAll(/inst_multiple\s+([^\n]+)/g)].flatMap((m) => m[1]!.trim().split(/\s+/)),
  );
  // external commands the setup script runs: first words of commands, with comments and quoted text removed
  const builtins = new Set(['set', 'exit', 'exec', 'printf', 'read', 'case', 'esac', 'for', 'do', 'done', 'in', 'if', 'then', 'else', 'fi', 'while', 'break', 'continue', 'return', 'true', 'false', '.', 'local', 'shift']);
  const code = script
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\$\(\([^)]*\)\)/g, '0')
    .replace(/'[^']*'/g, "''")
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\s#.*$/gm, '');
  const used = new Set<string>();
  for (const m of code.matchAll(/(?:^|;|\||&&|\$\(|\(|\{|\bthen|\bdo|\belse|!)\s*([a-z][a-z0-9_.-]*)(?=\s|$|\))/gm)) {
    const w = m[1]!;
    if (builtins.has(w) || /^(bootcfs_|now$|say$|die$)/.test(w)) continue;
    used.add(w);
  }
  assert.ok(used.has('fsverity') && used.has('mount') && used.has('find'), `command scan found: ${[...used].join(' ')}`);
  const missing = [...used].filter((c) => !installed.has(c));
  assert.deepEqual(missing, [], `commands used by the setup script but not installed by module-setup.sh (used: ${[...used].join(' ')})`);
  for (const mod of ['erofs', 'overlay', 'loop']) assert.match(setup, new RegExp(`instmods[^\\n]*\\b${mod}\\b`), `kernel module ${mod}`);
});

// ---- bootcfs-verity-enable.pl: first-boot fs-verity in one perl process ----------------------------------
// This host has no fs-verity, so the enable/measure ioctls fail here for real (tmpfs: ENOTTY, ext4 without
// the verity feature: EOPNOTSUPP): these tests cover everything before the ioctls (arguments, which paths are
// objects, names) and that an ioctl failure stops the program with the object's name and errno. The
// enable + measure + compare path runs in the VM test (test/vm/os-image-boot.test.ts, "first boot").

const VERITY_ENABLE = path.join(MODULE, 'bootcfs-verity-enable.pl');
// run with an empty @INC and warnings on: the initramfs has /usr/bin/perl but no perl modules
const NO_MODULES = 'BEGIN { @INC = () } my $s = shift @ARGV; do $s; die "bootcfs-verity-enable did not exit: $@\\n";';

interface VerityRun { status: number; stdout: string; stderr: string }

function verityEnable(args: string[], paths: string[]): VerityRun {
  const input = Buffer.from(paths.map((p) => `${p}\0`).join(''));
  const r = run('/usr/bin/perl', ['-w', '-e', NO_MODULES, VERITY_ENABLE, ...args], { input, env: { PATH: '/usr/bin:/bin' } });
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** A scratch directory on tmpfs (no filesystem supports fs-verity less ambiguously). */
function scratch(): string {
  return mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'bootcfs-verity-'));
}

function put(file: string, data = 'x'): string {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, data);
  return file;
}

const HEX512 = (seed: number): string => createHash('sha512').update(`object ${seed}`).digest('hex');
const HEX256 = (seed: number): string => createHash('sha256').update(`object ${seed}`).digest('hex');
const objPath = (objs: string, hex: string): string => path.join(objs, hex.slice(0, 2), hex.slice(2));
const ONE_LINE = (s: string): void => assert.equal(s.split('\n').filter(Boolean).length, 1, `exactly one line on stderr, got: ${JSON.stringify(s)}`);

test('verity-enable: the program is executable perl, uses no modules, and refuses bad arguments (exit 2)', () => {
  const st = statSync(VERITY_ENABLE);
  assert.ok((st.mode & 0o111) !== 0, 'bootcfs-verity-enable.pl is executable');
  assert.match(readFileSync(VERITY_ENABLE, 'utf8').split('\n')[0]!, /^#!\/usr\/bin\/perl\b/);
  const src = readFileSync(VERITY_ENABLE, 'utf8').split('\n').filter((l) => !/^\s*#/.test(l)).join('\n');
  assert.doesNotMatch(src, /^\s*(use|require)\s+[A-Za-z]/m, 'no perl modules');
  assert.doesNotMatch(src, /%!|\$!\{/, '%! loads the Errno module');
  const dir = scratch();
  try {
    const objs = path.join(dir, 'objects');
    mkdirSync(objs);
    for (const [args, re] of [
      [[`--objects=${objs}`], /--hash-alg is required/],
      [['--hash-alg=sha512'], /--objects is required/],
      [['--hash-alg=md5', `--objects=${objs}`], /unsupported --hash-alg 'md5'/],
      [['--hash-alg=SHA512', `--objects=${objs}`], /unsupported --hash-alg/],
      [['--hash-alg=sha512', `--objects=${objs}`, '--verbose'], /unknown argument '--verbose'/],
      [['--hash-alg=sha512', objs], /unknown argument/],
    ] as Array<[string[], RegExp]>) {
      const r = verityEnable(args, []);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.match(r.stderr, /^usage: bootcfs-verity-enable /m);
      assert.equal(r.stdout, '');
    }
    // and run directly (shebang): an empty list is a valid, empty object store
    const direct = run(VERITY_ENABLE, ['--hash-alg=sha256', `--objects=${objs}/`], { input: Buffer.alloc(0) });
    assert.equal(direct.status, 0, direct.stderr.toString());
    assert.equal(direct.stdout.toString(), '0 objects checked (0 already had fs-verity), 0 skipped, 0 other files\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('verity-enable: only OBJECTS/xx/<name> files are objects; temporary and other files are skipped (NUL-separated list from find)', () => {
  const dir = scratch();
  try {
    const objs = path.join(dir, 'objects');
    const others = [
      put(path.join(objs, 'README')),
      put(path.join(objs, '.tmp-0123abcd-1')),
      put(path.join(objs, 'ab', '.tmp-0123abcd-2')),
      put(path.join(objs, 'zz', HEX512(1).slice(2))),
      put(path.join(objs, 'AB', HEX512(2).slice(2))),
      put(path.join(objs, 'abc', HEX512(3).slice(2))),
      put(path.join(objs, 'ab', 'cd', HEX512(4).slice(4))),
      put(path.join(objs, 'zz', 'a name\nwith a newline and spaces')),
    ];
    const f = run('find', [objs, '-type', 'f', '-print0']);
    assert.equal(f.status, 0);
    const listed = f.stdout.toString().split('\0').filter(Boolean);
    assert.equal(listed.length, others.length);
    for (const alg of ['sha256', 'sha512']) {
      const r = verityEnable([`--hash-alg=${alg}`, `--objects=${objs}`], listed);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.equal(r.stdout, `0 objects checked (0 already had fs-verity), ${others.length} skipped, 0 other files\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('verity-enable: an object whose name is not a digest of the algorithm is refused before anything is enabled', () => {
  const dir = scratch();
  try {
    const objs = path.join(dir, 'objects');
    const good512 = put(objPath(objs, HEX512(10)));
    const bad: Array<[alg: string, hex: string]> = [
      ['sha512', HEX512(11).slice(0, 127)],
      ['sha512', `${HEX512(12)}0`],
      ['sha512', HEX256(13)],
      ['sha512', HEX512(14).slice(0, 2) + HEX512(14).slice(2).toUpperCase()],
      ['sha512', `${HEX512(15).slice(0, 127)}g`],
      ['sha512', `${HEX512(16).slice(0, 64)}-${HEX512(16).slice(65)}`],
      ['sha256', HEX512(17)],
      ['sha256', HEX256(18).slice(0, 63)],
      ['sha256', `${HEX256(19).slice(0, 63)}G`],
    ];
    for (const [alg, hex] of bad) {
      const p = put(objPath(objs, hex));
      const rel = `${hex.slice(0, 2)}/${hex.slice(2)}`;
      // the bad object is refused by its name even though a good one comes first (whose ioctl would fail here)
      const list = alg === 'sha512' ? [p, good512] : [p];
      const r = verityEnable([`--hash-alg=${alg}`, `--objects=${objs}`], list);
      assert.equal(r.status, 1, `${alg} ${hex}: ${r.stdout}${r.stderr}`);
      assert.equal(r.stdout, '');
      ONE_LINE(r.stderr);
      const want = `bootcfs-verity-enable: object ${rel}: its name is not a ${alg} digest (${alg === 'sha256' ? 64 : 128} lowercase hex digits)`;
      assert.ok(r.stderr.startsWith(want), `${r.stderr} should start with ${want}`);
      rmSync(p);
    }
    // a path that is not under --objects is a caller error, named
    const outside = put(path.join(dir, 'elsewhere', HEX512(20)));
    const r = verityEnable(['--hash-alg=sha512', `--objects=${objs}`], [outside]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`^bootcfs-verity-enable: ${outside}: not under the object directory ${objs}\\n$`));
    // a prefix that is not a path component boundary is not "under"
    const sibling = put(path.join(`${objs}2`, 'ab', HEX512(21).slice(2)));
    assert.equal(verityEnable(['--hash-alg=sha512', `--objects=${objs}`], [sibling]).status, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('verity-enable: without fs-verity (this host) it stops at the first object with its name and the errno', () => {
  const dir = scratch();
  try {
    const objs = path.join(dir, 'objects');
    for (const [alg, hexOf] of [['sha512', HEX512], ['sha256', HEX256]] as const) {
      const skip = put(path.join(objs, 'ab', '.tmp-x'));
      const first = put(objPath(objs, hexOf(30)));
      const second = put(objPath(objs, hexOf(31)));
      const r = verityEnable([`--hash-alg=${alg}`, `--objects=${objs}/`], [skip, first, second]);
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.equal(r.stdout, '', 'no summary line on failure');
      ONE_LINE(r.stderr);
      const rel = `${hexOf(30).slice(0, 2)}/${hexOf(30).slice(2)}`;
      const m = new RegExp(`^bootcfs-verity-enable: object ${rel}: cannot enable fs-verity \\(FS_IOC_ENABLE_VERITY\\): (.+) \\(errno (\\d+)\\)\\n$`).exec(r.stderr);
      assert.ok(m, r.stderr);
      // ENOTTY (the filesystem has no fs-verity ioctls) or EOPNOTSUPP (it has them, the kernel/filesystem lacks verity)
      assert.ok(['25', '95'].includes(m[2]!), `errno ${m[2]} (${m[1]})`);
      assert.match(m[1]!, /Inappropriate ioctl|not supported/i);
      rmSync(objs, { recursive: true });
    }
    // a non-regular file where an object belongs (a symbolic link) is refused, not followed
    const target = put(path.join(dir, 'target'));
    const link = objPath(objs, HEX512(40));
    mkdirSync(path.dirname(link), { recursive: true });
    symlinkSync(target, link);
    const r = verityEnable(['--hash-alg=sha512', `--objects=${objs}`], [link]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `bootcfs-verity-enable: object ${HEX512(40).slice(0, 2)}/${HEX512(40).slice(2)}: not a regular file\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('verity-enable: --enable-only files (meta.json, the image) are enabled first, following a symbolic link; missing ones are an error', () => {
  const dir = scratch();
  try {
    const objs = path.join(dir, 'objects');
    mkdirSync(objs);
    const meta = put(path.join(dir, 'meta.json'), '{}');
    const img = path.join(dir, 'image');
    const obj = put(objPath(objs, HEX512(50)));
    symlinkSync(obj, img);
    const r1 = verityEnable(['--hash-alg=sha512', `--objects=${objs}`, `--enable-only=${meta}`, `--enable-only=${img}`], [obj]);
    assert.equal(r1.status, 1);
    assert.match(r1.stderr, new RegExp(`^bootcfs-verity-enable: ${meta}: cannot enable fs-verity \\(FS_IOC_ENABLE_VERITY\\): .+ \\(errno (25|95)\\)\\n$`));
    const r2 = verityEnable(['--hash-alg=sha512', `--objects=${objs}`, `--enable-only=${img}`], []);
    assert.match(r2.stderr, new RegExp(`^bootcfs-verity-enable: ${img}: cannot enable fs-verity `), 'a link to the image is followed, not refused');
    const r3 = verityEnable(['--hash-alg=sha512', `--objects=${objs}`, `--enable-only=${path.join(dir, 'missing.json')}`], []);
    assert.equal(r3.status, 1);
    assert.match(r3.stderr, /missing\.json: cannot stat: No such file or directory \(errno 2\)\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('setup-root dracut module: perl is required and installed, and the verity program is where the script runs it', () => {
  const setup = readFileSync(path.join(MODULE, 'module-setup.sh'), 'utf8');
  const script = readFileSync(path.join(MODULE, 'bootcfs-setup-root.sh'), 'utf8');
  const check = /check\(\) \{([\s\S]*?)\n\}/.exec(setup)?.[1] ?? '';
  assert.match(check, /require_binaries[^\n]*\bperl\b/, 'check() requires perl');
  assert.match(setup, /inst_multiple[^\n]*\bperl\b/, 'install() installs perl');
  const inst = /inst_script "\$moddir\/bootcfs-verity-enable\.pl" (\S+)/.exec(setup);
  assert.ok(inst, 'install() installs bootcfs-verity-enable.pl');
  assert.ok(script.includes(`VERITY_ENABLE=\${BOOTCFS_VERITY_ENABLE:-${inst[1]}}`), `the setup script runs ${inst[1]}`);
  // the first-boot block: one process fed by find -print0, meta.json and the image enabled too
  assert.match(script, /find "\$OBJS" -type f -print0 > /);
  assert.match(script, /--enable-only="\$REPO\/meta\.json"/);
  assert.match(script, /"\$VERITY_ENABLE" "\$@" < /);
  assert.doesNotMatch(script, /fsverity enable/, 'no fork per object');
});
