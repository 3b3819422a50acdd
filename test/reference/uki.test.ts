/**
 * UKIs, differential against the real `ukify` (systemd 257) and python-pefile.
 * For seeded generated inputs — random kernel-like blobs and the real guest kernel (Debian 6.12 bzImage,
 * with and without --uname so both paths of the version detection run), 0..3 random initrds (sizes 0 and
 * unaligned included), command lines with random whitespace given as TEXT or @FILE (and whitespace-only:
 * left out), os-release as TEXT / @FILE / empty (left out), extra SBAT texts (valid and skipped ones),
 * device tree, splash, pcrpkey, microcode and --section extras — `bootcfs uki build` must write exactly the
 * bytes `ukify build` writes with the same options (no field excepted: ukify leaves CheckSum 0 and so do we).
 * Then on our UKI: `bootcfs uki inspect` (text, --json=short, --json=pretty, --all) prints exactly what
 * `ukify inspect` prints; pefile parses it and reports the same section table, header fields and section
 * digests as our parsePe/inspectUki.
 * Env: BOOTCFS_SEED=<n> fixes the base seed (otherwise random, printed); BOOTCFS_CASES overrides the count.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { gzipSync } from 'node:zlib';
import path from 'node:path';
import { command } from '../../src/cli/commands/uki.js';
import { buildUki, inspectUki, formatInspectJson, formatInspectText } from '../../src/uki/uki.js';
import { parsePe } from '../../src/pe/pe.js';
import { cases, requireTool, run, REF_PREFIX } from '../helpers/ref.js';
import { guestKernel } from '../helpers/vm.js';
import { Rng } from '../helpers/rng.js';

const UKIFY = `${REF_PREFIX}/bin/ukify`;
const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const PYTHON = '/usr/bin/python3';
const ENV = { ...process.env, LC_ALL: 'C.UTF-8', PYTHONDONTWRITEBYTECODE: '1' };
const BASE_SEED = process.env.BOOTCFS_SEED !== undefined ? Number(process.env.BOOTCFS_SEED) : (Math.random() * 2 ** 31) >>> 0;
console.log(`uki.test: BOOTCFS_SEED=${BASE_SEED}`);

const PEFILE_DUMP = `
import sys, json, hashlib, pefile
pe = pefile.PE(sys.argv[1], fast_load=True)
o = pe.OPTIONAL_HEADER
out = {'n': pe.FILE_HEADER.NumberOfSections, 'sizeOfImage': o.SizeOfImage, 'sizeOfHeaders': o.SizeOfHeaders,
       'checksum': o.CheckSum, 'dll': o.DllCharacteristics, 'warnings': pe.get_warnings(), 'sections': []}
for s in pe.sections:
    size = min(s.Misc_VirtualSize, s.SizeOfRawData)
    out['sections'].append([s.Name.rstrip(b'\\0').decode(), s.VirtualAddress, s.Misc_VirtualSize, s.SizeOfRawData,
        s.PointerToRawData, s.Characteristics, hashlib.sha256(s.get_data(length=size)).hexdigest()])
print(json.dumps(out))
`;

const WORDS = ['root=/dev/vda2', 'rw', 'quiet', 'console=ttyS0,115200', 'composefs=3f1a9c', 'ä=ö', 'rd.break', 'x', 'init=/sbin/init', 'systemd.unit=rescue.target'];
const WS = [' ', '  ', '\t', '\n', ' \t ', '\u00a0'];

function words(rng: Rng, n: number): string {
  let s = rng.bool(0.3) ? rng.pick(WS) : '';
  for (let i = 0; i < n; i++) s += rng.pick(WORDS) + (i + 1 < n || rng.bool(0.3) ? rng.pick(WS) : '');
  return s;
}

interface Case { args: string[]; describe: string }

function genCase(rng: Rng, dir: string, realKernel: string | undefined): Case {
  const args: string[] = [];
  const d: string[] = [];
  const file = (name: string, data: Buffer | string) => {
    const p = path.join(dir, name);
    writeFileSync(p, data);
    return p;
  };
  if (realKernel) {
    args.push(`--linux=${realKernel}`);
    d.push('real kernel');
    if (rng.bool(0.5)) args.push(`--uname=${rng.pick(['6.12.0-test', '1.2.3'])}`);
    else d.push('uname detected');
  } else {
    const k = rng.bytes(rng.pick([1, 4096, rng.int(2, 300000)]));
    k[0] = 0x4b; // no magic of a compressed or PE file
    args.push(`--linux=${file('vmlinuz', k)}`);
    d.push(`blob ${k.length}`);
    args.push(`--uname=${rng.pick(['', `${rng.int(2, 6)}.${rng.int(0, 20)}.${rng.int(0, 300)}-${rng.int(1, 99)}-generic`])}`);
  }
  const nInitrd = rng.int(0, 3);
  for (let i = 0; i < nInitrd; i++) args.push(`--initrd=${file(`initrd${i}`, rng.bytes(rng.pick([0, 1, 3, 4, rng.int(0, 100000)])))}`);
  d.push(`${nInitrd} initrds`);
  switch (rng.int(0, 3)) {
    case 0: break;
    case 1: args.push(`--cmdline=${words(rng, rng.int(1, 8))}`); break;
    case 2: args.push(`--cmdline=@${file('cmdline', words(rng, rng.int(0, 8)))}`); d.push('cmdline @file'); break;
    default: args.push(`--cmdline=${rng.pick(WS)}`); d.push('blank cmdline'); break;
  }
  const osr = `ID=bootcfs-test\nNAME="bootcfs ${rng.int(0, 999)}"\nVERSION_ID=${rng.int(1, 99)}\n${rng.bool(0.3) ? 'PRETTY_NAME="Ünïcode"\n' : ''}`;
  switch (rng.int(0, 2)) {
    case 0: args.push(`--os-release=${osr}`); break;
    case 1: args.push(`--os-release=@${file('os-release', osr)}`); break;
    default: args.push('--os-release='); d.push('no osrel'); break;
  }
  const nSbat = rng.pick([0, 0, 1, 2]);
  for (let i = 0; i < nSbat; i++) {
    const t = rng.bool(0.8)
      ? `sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\nvendor${i},${rng.int(1, 9)},Vendor,pkg,1,https://example.com/${i}\n`
      : `not-an-sbat-header\nignored,1\n`;
    args.push(`--sbat=${rng.bool() ? `@${file(`sbat${i}`, t)}` : t}`);
  }
  if (rng.bool(0.2)) args.push(`--devicetree=${file('dtb', rng.bytes(rng.int(0, 5000)))}`);
  if (rng.bool(0.2)) args.push(`--splash=${file('splash', rng.bytes(rng.int(0, 5000)))}`);
  if (rng.bool(0.2)) args.push(`--pcrpkey=${file('pcrpkey', `-----BEGIN PUBLIC KEY-----\n${rng.bytes(90).toString('base64')}\n-----END PUBLIC KEY-----\n`)}`);
  if (rng.bool(0.2)) args.push(`--microcode=${file('ucode', rng.bytes(rng.int(0, 5000)))}`);
  if (rng.bool(0.2)) args.push(`--section=.extra:${rng.bool() ? `@${file('extra', rng.bytes(rng.int(0, 3000)))}` : 'some text'}`);
  args.push(`--stub=${STUB}`);
  return { args, describe: d.join(', ') };
}

const UKI_COMMAND = new URL('../../src/cli/commands/uki.js', import.meta.url).href;
const RUNNER = `const { command } = await import(${JSON.stringify(UKI_COMMAND)});
try { process.exitCode = await command.run(JSON.parse(process.env.BOOTCFS_TEST_ARGV)); } catch (e) { console.error(e.message); process.exitCode = e.name === 'UsageError' ? 2 : 1; }`;

/** Runs \`bootcfs uki ARGV\` (our Command) in a child process, capturing stdout. */
async function runOurs(argv: string[]): Promise<{ code: number; out: string }> {
  const r = run(process.execPath, ['--input-type=module', '-e', RUNNER], { env: { ...ENV, BOOTCFS_TEST_ARGV: JSON.stringify(argv) } });
  if (r.status !== 0) console.error(r.stderr.toString());
  return { code: r.status, out: r.stdout.toString('utf8') };
}

function diffOffsets(a: Buffer, b: Buffer): string {
  const out: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length) && out.length < 16; i++) if (a[i] !== b[i]) out.push(i);
  return `lengths ${a.length}/${b.length}, first differing offsets: ${out.join(',')}`;
}

test('bootcfs uki build is byte-identical to ukify build; inspect and pefile agree', async () => {
  requireTool(UKIFY);
  requireTool(STUB);
  const n = cases(8, 60);
  const kernel = guestKernel().vmlinuz;
  const t0 = Date.now();
  let withKernel = 0;
  for (let i = 0; i < n; i++) {
    const seed = (BASE_SEED + i) >>> 0;
    const rng = new Rng(seed);
    const dir = mkdtempSync(path.join(tmpdir(), 'bootcfs-uki-'));
    try {
      const real = i % 4 === 0 || rng.bool(0.1);
      if (real) withKernel++;
      const c = genCase(rng, dir, real ? kernel : undefined);
      const refOut = path.join(dir, 'ref.efi');
      const ourOut = path.join(dir, 'ours.efi');
      const r = run(UKIFY, ['build', ...c.args, `--output=${refOut}`], { env: ENV });
      assert.equal(r.status, 0, `seed ${seed} (${c.describe}): ukify failed: ${r.stderr.toString()}`);
      const ours = await runOurs(['build', ...c.args, `--output=${ourOut}`]);
      assert.equal(ours.code, 0);
      const ref = readFileSync(refOut);
      const mine = readFileSync(ourOut);
      assert.ok(mine.equals(ref), `seed ${seed} (${c.describe}): UKI differs from ukify's: ${diffOffsets(mine, ref)}`);

      // ukify inspect on our UKI == bootcfs uki inspect, in every output format.
      for (const fmt of [[], ['--json=short'], ['--json=pretty'], ['--all'], ['--all', '--json=short']]) {
        const ri = run(UKIFY, ['inspect', ourOut, ...fmt], { env: ENV });
        assert.equal(ri.status, 0, `ukify inspect ${fmt.join(' ')}: ${ri.stderr.toString()}`);
        // The CLI verb is a thin printer of these (its own process run is checked once per case below).
        const all = fmt.includes('--all');
        const json = fmt.find((f) => f.startsWith('--json='))?.slice(7) as 'short' | 'pretty' | undefined;
        const info = inspectUki(mine);
        const oi = json ? formatInspectJson(info, json, { all }) : formatInspectText(info, { all });
        assert.equal(oi, ri.stdout.toString('utf8'), `seed ${seed}: inspect ${fmt.join(' ')} output`);
        if (fmt.length === 0) assert.equal((await runOurs(['inspect', ourOut])).out, oi, 'bootcfs uki inspect prints the report');
      }

      // pefile's view of our UKI == ours.
      const pr = run(PYTHON, ['-c', PEFILE_DUMP, ourOut], { env: ENV });
      assert.equal(pr.status, 0, pr.stderr.toString());
      const py = JSON.parse(pr.stdout.toString()) as { n: number; sizeOfImage: number; sizeOfHeaders: number; checksum: number; dll: number; warnings: string[]; sections: [string, number, number, number, number, number, string][] };
      const pe = parsePe(mine);
      const info = inspectUki(mine);
      assert.deepEqual(py.warnings, [], `seed ${seed}: pefile warnings`);
      assert.equal(py.n, pe.numberOfSections);
      assert.equal(py.sizeOfImage, pe.sizeOfImage);
      assert.equal(py.sizeOfHeaders, pe.sizeOfHeaders);
      assert.equal(py.checksum, pe.checksum);
      assert.equal(py.dll, mine.readUInt16LE(pe.optionalHeaderOffset + 70));
      assert.deepEqual(py.sections, info.sections.map((s) => [s.name, s.virtualAddress, s.virtualSize, s.sizeOfRawData, s.pointerToRawData, s.characteristics, s.sha256]));
      const names = info.sections.map((s) => s.name);
      assert.ok(names.includes('.linux') && names.includes('.sbat'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log(`  ${n} cases (${withKernel} with the real kernel) in ${Date.now() - t0} ms`);
});

test('buildUki (library) equals ukify for the real kernel, several initrds and a detected uname', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'bootcfs-uki-'));
  try {
    const rng = new Rng(BASE_SEED ^ 0x5eed);
    const kernel = guestKernel();
    const initrds = [rng.bytes(1001), rng.bytes(0), rng.bytes(4096), rng.bytes(7)];
    initrds.forEach((b, i) => writeFileSync(path.join(dir, `i${i}`), b));
    const osr = 'ID=x\nVERSION_ID=1\n';
    const cmdline = 'root=/dev/vda2 rw console=ttyS0';
    const r = run(UKIFY, ['build', `--linux=${kernel.vmlinuz}`, ...initrds.map((_, i) => `--initrd=${path.join(dir, `i${i}`)}`), `--cmdline=${cmdline}`,
      `--os-release=${osr}`, `--stub=${STUB}`, `--output=${path.join(dir, 'ref.efi')}`], { env: ENV });
    assert.equal(r.status, 0, r.stderr.toString());
    const mine = buildUki({ stub: readFileSync(STUB), linux: readFileSync(kernel.vmlinuz), initrds, cmdline, osRelease: osr });
    const ref = readFileSync(path.join(dir, 'ref.efi'));
    assert.ok(mine.equals(ref), diffOffsets(mine, ref));
    const uname = inspectUki(mine).sections.find((s) => s.name === '.uname');
    assert.equal(uname?.text, kernel.version);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('gzip-compressed kernel is decompressed, and a kernel without NX_COMPAT clears it in the UKI, like ukify', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'bootcfs-uki-'));
  try {
    const k = readFileSync(guestKernel().vmlinuz);
    const lfanew = k.readUInt32LE(0x3c);
    const noNx = Buffer.from(k);
    noNx.writeUInt16LE(noNx.readUInt16LE(lfanew + 24 + 70) & ~0x100, lfanew + 24 + 70);
    for (const [name, data, nx] of [['vmlinuz.gz', gzipSync(k), true], ['vmlinuz-nonx', noNx, false]] as const) {
      const kp = path.join(dir, name);
      writeFileSync(kp, data);
      const args = ['build', `--linux=${kp}`, '--os-release=', '--cmdline=quiet', `--stub=${STUB}`];
      const r = run(UKIFY, [...args, `--output=${path.join(dir, 'ref.efi')}`], { env: ENV });
      assert.equal(r.status, 0, r.stderr.toString());
      assert.equal((await runOurs([...args, `--output=${path.join(dir, 'ours.efi')}`])).code, 0);
      const mine = readFileSync(path.join(dir, 'ours.efi'));
      const ref = readFileSync(path.join(dir, 'ref.efi'));
      assert.ok(mine.equals(ref), `${name}: ${diffOffsets(mine, ref)}`);
      const pe = parsePe(mine);
      assert.equal((mine.readUInt16LE(pe.optionalHeaderOffset + 70) & 0x100) !== 0, nx, `${name}: NX_COMPAT`);
      const linux = inspectUki(mine).sections.find((s) => s.name === '.linux')!;
      assert.equal(linux.size, k.length, `${name}: .linux is the uncompressed kernel`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bootcfs uki: --help on every verb, usage errors', async () => {
  for (const argv of [['--help'], ['build', '--help'], ['inspect', '--help']]) {
    const r = await runOurs(argv);
    assert.equal(r.code, 0);
    assert.match(r.out, /^Usage: bootcfs uki/);
  }
  await assert.rejects(command.run(['build', '--output=/nonexistent/x']), /--linux is required/);
  const bad = await runOurs(['build', '--linux=/nonexistent/k', '--output=/tmp/x.efi']);
  assert.equal(bad.code, 1);
  await assert.rejects(command.run(['frobnicate']), /unknown subcommand/);
  await assert.rejects(command.run(['inspect', '--json=yaml', STUB]), /--json must be/);
});
