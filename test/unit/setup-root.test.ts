/**
 * bootcfs's initramfs setup-root (dracut/90bootcfs): the shell functions it is built from, run with the
 * shells an initramfs may have (dash as /bin/sh, bash — dracut's default — and busybox sh), and the
 * static properties of the dracut module and its systemd unit that the boot relies on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
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
