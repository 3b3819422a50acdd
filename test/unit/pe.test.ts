/**
 * PE/COFF reader and writer.
 * - parsePe on the real systemd-stub and systemd-boot images (installed by systemd-boot-efi): the
 *   fields EFI loaders rely on, sections inside the file, the checksum function on a known image.
 * - Hostile inputs: truncations at every header boundary (and every byte of the headers), seeded random
 *   byte corruptions of the headers, absurd counts and sizes. parsePe, inspectUki and addSections must
 *   return or throw a BootcfsError (parsePe: a FormatError with an offset inside the file's header range),
 *   never anything else, and fast (no hang).
 * - Writer round trip: seeded random sections added to the stub parse back with the same names,
 *   contents and characteristics, laid out as the PE spec requires (aligned, non-overlapping, in order).
 * Env: BOOTCFS_SEED=<n> fixes the base seed (otherwise random, printed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BootcfsError, FormatError } from '../../src/errors.js';
import { parsePe, sectionData, findSection, peChecksum, PE32PLUS_MAGIC, IMAGE_FILE_MACHINE_AMD64, type PeImage } from '../../src/pe/pe.js';
import { addSections, PeWriteError, SECTION_HEADER_SIZE, type NewSection } from '../../src/pe/pe-writer.js';
import { inspectUki } from '../../src/uki/inspect.js';
import { cases } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const SDBOOT = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
const BASE_SEED = process.env.BOOTCFS_SEED !== undefined ? Number(process.env.BOOTCFS_SEED) : (Math.random() * 2 ** 31) >>> 0;
console.log(`pe.test: BOOTCFS_SEED=${BASE_SEED}`);

const stub = readFileSync(STUB);
const sdboot = readFileSync(SDBOOT);

function checkLayout(buf: Buffer, pe: PeImage): void {
  assert.equal(pe.machine, IMAGE_FILE_MACHINE_AMD64);
  assert.ok(pe.is64);
  assert.equal(buf.readUInt16LE(pe.optionalHeaderOffset), PE32PLUS_MAGIC);
  assert.equal(pe.subsystem, 10, 'EFI application');
  assert.equal(pe.sections.length, pe.numberOfSections);
  assert.ok(pe.sectionTableOffset + pe.numberOfSections * SECTION_HEADER_SIZE <= pe.sizeOfHeaders);
  let prevVa = 0;
  for (const s of pe.sections) {
    assert.ok(s.virtualAddress >= prevVa, `${s.name} in VA order`);
    assert.equal(s.virtualAddress % pe.sectionAlignment, 0, `${s.name} VA aligned`);
    assert.ok(s.pointerToRawData + s.sizeOfRawData <= buf.length);
    prevVa = s.virtualAddress + s.virtualSize;
  }
  assert.ok(pe.sizeOfImage >= prevVa);
}

test('parsePe reads the real systemd-stub and systemd-boot images', () => {
  for (const buf of [stub, sdboot]) {
    const pe = parsePe(buf);
    checkLayout(buf, pe);
    assert.equal(pe.fileAlignment, 512);
    assert.equal(pe.sectionAlignment, 4096);
    for (const name of ['.text', '.data', '.sbat', '.sdmagic', '.reloc']) assert.ok(findSection(pe, name), `${name} present`);
    const sbat = sectionData(buf, findSection(pe, '.sbat')!).toString('latin1');
    assert.match(sbat, /^sbat,1,SBAT Version,sbat,1,/);
    assert.match(sbat, /systemd/);
    assert.match(sectionData(buf, findSection(pe, '.sdmagic')!).toString('latin1'), /#### LoaderInfo: systemd-(stub|boot) /);
    assert.equal(pe.dataDirectories[4]!.size, 0, 'unsigned');
    // The checksum field is 0 in these images; our checksum of a known layout is stable and field-independent.
    const c = peChecksum(buf, pe.checksumOffset);
    const copy = Buffer.from(buf);
    copy.writeUInt32LE(0xdeadbeef, pe.checksumOffset);
    assert.equal(peChecksum(copy, pe.checksumOffset), c);
  }
});

/** Offsets where header structures start or end: truncating there hits every "extends past the end" path. */
function headerBoundaries(buf: Buffer): number[] {
  const pe = parsePe(buf);
  const b = new Set<number>([0, 1, 2, 0x3c, 0x40, pe.peOffset, pe.peOffset + 4, pe.peOffset + 24, pe.optionalHeaderOffset,
    pe.optionalHeaderOffset + pe.sizeOfOptionalHeader, pe.sectionTableOffset]);
  for (const d of pe.dataDirectories) b.add(d.entryOffset);
  for (const s of pe.sections) {
    b.add(s.headerOffset); b.add(s.headerOffset + 40);
    b.add(s.pointerToRawData); b.add(s.pointerToRawData + s.sizeOfRawData - 1);
  }
  return [...b].filter((x) => x < buf.length).sort((x, y) => x - y);
}

/** parsePe, inspectUki and addSections on untrusted bytes: they may succeed or throw a BootcfsError. */
function hostile(buf: Buffer, what: string): void {
  const t0 = Date.now();
  try {
    parsePe(buf);
  } catch (e) {
    if (!(e instanceof FormatError)) throw new Error(`${what}: parsePe threw a non-FormatError: ${(e as Error).stack}`);
    assert.ok(Number.isInteger(e.offset) && e.offset >= 0, `${what}: FormatError offset ${e.offset}`);
    assert.match(e.message, /at byte offset \d+/);
  }
  for (const [name, f] of [
    ['inspectUki', () => inspectUki(buf)],
    ['addSections', () => addSections(buf, [{ name: '.cmdline', data: Buffer.from('x'), characteristics: 0x40000040 }, { name: '.sbat', data: Buffer.from('sbat,1\n'), characteristics: 0x40000040 }])],
  ] as const) {
    try {
      f();
    } catch (e) {
      if (!(e instanceof BootcfsError)) throw new Error(`${what}: ${name} threw a non-BootcfsError: ${(e as Error).stack}`);
    }
  }
  assert.ok(Date.now() - t0 < 2000, `${what}: took ${Date.now() - t0} ms`);
}

test('hostile: truncations at every header boundary and every header byte', () => {
  let n = 0;
  for (const buf of [stub, sdboot]) {
    const pe = parsePe(buf);
    const points = new Set([...headerBoundaries(buf), ...Array.from({ length: pe.sizeOfHeaders }, (_, i) => i)]);
    for (const p of points) {
      const t = buf.subarray(0, p);
      hostile(t, `truncated to ${p}`);
      n++;
      if (p < pe.sectionTableOffset + pe.numberOfSections * 40) assert.throws(() => parsePe(t), FormatError, `truncation at ${p} must fail`);
    }
  }
  console.log(`  ${n} truncations`);
});

test('hostile: absurd counts and sizes', () => {
  const pe = parsePe(stub);
  const coff = pe.peOffset + 4;
  const opt = pe.optionalHeaderOffset;
  const edits: [string, (b: Buffer) => void][] = [
    ['e_lfanew past end', (b) => b.writeUInt32LE(0xfffffff0, 0x3c)],
    ['e_lfanew = 0', (b) => b.writeUInt32LE(0, 0x3c)],
    ['65535 sections', (b) => b.writeUInt16LE(0xffff, coff + 2)],
    ['0 sections', (b) => b.writeUInt16LE(0, coff + 2)],
    ['SizeOfOptionalHeader 65535', (b) => b.writeUInt16LE(0xffff, coff + 16)],
    ['SizeOfOptionalHeader 0', (b) => b.writeUInt16LE(0, coff + 16)],
    ['NumberOfRvaAndSizes 2^32-1', (b) => b.writeUInt32LE(0xffffffff, opt + 108)],
    ['FileAlignment 0', (b) => b.writeUInt32LE(0, opt + 36)],
    ['FileAlignment 2^31', (b) => b.writeUInt32LE(0x80000000, opt + 36)],
    ['SectionAlignment 0', (b) => b.writeUInt32LE(0, opt + 32)],
    ['SizeOfHeaders 2^32-1', (b) => b.writeUInt32LE(0xffffffff, opt + 60)],
    ['section raw size 2^32-1', (b) => b.writeUInt32LE(0xffffffff, pe.sections[0]!.headerOffset + 16)],
    ['section raw ptr 2^32-1', (b) => b.writeUInt32LE(0xffffffff, pe.sections[1]!.headerOffset + 20)],
    ['bss-like section at 2^32-1', (b) => { b.writeUInt32LE(0, pe.sections[2]!.headerOffset + 16); b.writeUInt32LE(0xffffffff, pe.sections[2]!.headerOffset + 20); }],
    ['virtual size 2^32-1', (b) => b.writeUInt32LE(0xffffffff, pe.sections[5]!.headerOffset + 8)],
    ['virtual address 2^32-4096', (b) => b.writeUInt32LE(0xfffff000, pe.sections[5]!.headerOffset + 12)],
    ['certificate table past end', (b) => { b.writeUInt32LE(0x600, pe.dataDirectories[4]!.entryOffset); b.writeUInt32LE(0xffffff, pe.dataDirectories[4]!.entryOffset + 4); }],
    ['bad magic', (b) => b.writeUInt16LE(0x1234, opt)],
    ['no PE signature', (b) => b.writeUInt32LE(0, pe.peOffset)],
  ];
  for (const [what, edit] of edits) {
    const b = Buffer.from(stub);
    edit(b);
    hostile(b, what);
  }
  // The writer refuses a signed stub (a certificate table inside the file), like ukify.
  const signed = Buffer.concat([stub, Buffer.alloc(512)]);
  signed.writeUInt32LE(stub.length, pe.dataDirectories[4]!.entryOffset);
  signed.writeUInt32LE(512, pe.dataDirectories[4]!.entryOffset + 4);
  assert.throws(() => addSections(signed, [{ name: '.x', data: Buffer.alloc(1), characteristics: 0x40 }]), PeWriteError);
});

test('hostile: seeded random corruptions of the headers', () => {
  const n = cases(3000, 50000);
  for (let i = 0; i < n; i++) {
    const seed = (BASE_SEED + i) >>> 0;
    const rng = new Rng(seed);
    const src = rng.bool() ? stub : sdboot;
    const b = Buffer.from(src);
    const hdrEnd = parsePe(src).sizeOfHeaders;
    const k = rng.int(1, 8);
    for (let j = 0; j < k; j++) {
      const at = rng.int(0, hdrEnd - 4);
      switch (rng.int(0, 3)) {
        case 0: b[at] = rng.u32() & 0xff; break;
        case 1: b[at]! ^= 1 << rng.int(0, 7); break;
        case 2: b.writeUInt32LE(rng.pick([0, 1, 0x7fffffff, 0xffffffff, 0x80000000, 0x1000, 0x200, src.length, src.length + 1]), at); break;
        default: b.writeUInt16LE(rng.pick([0, 1, 0xffff, 0x8000, 40, 0x5a4d]), at); break;
      }
    }
    const cut = rng.bool(0.2) ? b.subarray(0, rng.int(0, b.length)) : b;
    hostile(cut, `seed ${seed}`);
  }
  console.log(`  ${n} corrupted images`);
});

test('writer round trip: added sections parse back with their contents', () => {
  const n = cases(200, 3000);
  const names = ['.osrel', '.cmdline', '.dtb', '.uname', '.splash', '.pcrpkey', '.linux', '.initrd', '.ucode', '.a', '.bb', '.ccc1234'];
  for (let i = 0; i < n; i++) {
    const seed = (BASE_SEED + 1000003 * i) >>> 0;
    const rng = new Rng(seed);
    const pick = names.filter(() => rng.bool(0.5));
    const secs: NewSection[] = pick.map((name) => ({
      name, data: rng.bytes(rng.pick([0, 1, 511, 512, 513, 4095, 4096, 4097, rng.int(0, 70000)])), characteristics: rng.pick([0x40000040, 0x40000020, 0xc0000040]),
    }));
    const sbat = rng.bool(0.5) ? Buffer.from(`sbat,1,SBAT Version,sbat,1,x\n${'e,1,E,e,1,u\n'.repeat(rng.int(0, 20))}`) : undefined;
    if (sbat) secs.push({ name: '.sbat', data: sbat, characteristics: 0x40000040 });
    const out = addSections(stub, secs);
    const pe = parsePe(out);
    checkLayout(out, pe);
    const orig = parsePe(stub);
    const appended = secs.filter((s) => s.name !== '.sbat');
    assert.equal(pe.numberOfSections, orig.numberOfSections + appended.length, `seed ${seed}`);
    appended.forEach((s, j) => {
      const got = pe.sections[orig.numberOfSections + j]!;
      assert.equal(got.name, s.name);
      assert.equal(got.characteristics, s.characteristics);
      assert.equal(got.virtualSize, s.data.length);
      assert.equal(got.pointerToRawData % pe.fileAlignment, 0);
      assert.equal(got.sizeOfRawData % pe.fileAlignment, 0);
      assert.ok(sectionData(out, got).equals(s.data), `seed ${seed}: ${s.name} content`);
      assert.ok(out.subarray(got.pointerToRawData + s.data.length, got.pointerToRawData + got.sizeOfRawData).every((x) => x === 0), 'zero padding');
    });
    // The original sections keep their bytes (except .sbat when replaced).
    for (const s of orig.sections) {
      const now = findSection(pe, s.name)!;
      if (s.name === '.sbat' && sbat) assert.ok(sectionData(out, now).equals(sbat));
      else assert.ok(sectionData(out, now).equals(sectionData(stub, s)), `${s.name} unchanged`);
    }
    assert.equal(pe.checksum, 0, 'checksum zero like ukify');
    const last = pe.sections[pe.sections.length - 1]!;
    assert.equal(pe.sizeOfImage, Math.ceil((last.virtualAddress + last.virtualSize) / 4096) * 4096);
    const withSum = addSections(stub, secs, { checksum: 'compute' });
    assert.equal(parsePe(withSum).checksum, peChecksum(withSum, pe.checksumOffset));
    assert.notEqual(parsePe(withSum).checksum, 0);
  }
  console.log(`  ${n} round trips`);
});

test('writer: header space exhaustion is a clear error, not corruption', () => {
  const pe = parsePe(stub);
  const room = Math.floor((pe.sizeOfHeaders - (pe.sectionTableOffset + pe.numberOfSections * 40)) / 40);
  const mk = (k: number) => Array.from({ length: k }, (_, i) => ({ name: `.s${i}`, data: Buffer.from([i]), characteristics: 0x40000040 }));
  const ok = parsePe(addSections(stub, mk(room)));
  assert.equal(ok.numberOfSections, pe.numberOfSections + room);
  assert.throws(() => addSections(stub, mk(room + 1)), (e: unknown) => e instanceof PeWriteError && /not enough header space to add section \.s\d+/.test(e.message));
  assert.throws(() => addSections(stub, [{ name: '.sbat', data: Buffer.alloc(pe.sections.find((s) => s.name === '.sbat')!.sizeOfRawData + 1, 0x41), characteristics: 0x40 }]),
    (e: unknown) => e instanceof PeWriteError && /not enough space in existing section \.sbat/.test(e.message));
  assert.throws(() => addSections(stub, [{ name: '.toolongname', data: Buffer.alloc(1), characteristics: 0x40 }]), PeWriteError);
});
