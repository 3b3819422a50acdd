/**
 * Differential tests of the GPT writer/reader against gdisk's `sgdisk` and util-linux's `sfdisk`:
 *  - seeded layouts written by us into sparse files: `sgdisk -v` finds no problems, `sgdisk -i` and
 *    `sfdisk --json` report the same LBAs, types, GUIDs, names and attributes;
 *  - seeded tables made by `sgdisk -n/-t/-c/-u/-A/-U` are parsed by `readGpt` identically;
 *  - for the same layout and GUIDs our head (LBA 0..33) and tail (backup) are byte-identical to sgdisk's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  planGpt, writeGpt, readGpt, GPT_TYPE_ESP, GPT_TYPE_LINUX_ROOT_X86_64, GPT_TYPE_LINUX_FILESYSTEM,
  type GptLayout, type GptPartitionSpec, type DiskReader,
} from '../../src/install/gpt.js';
import { cases, requireTool, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';

const SGDISK = requireTool('/usr/sbin/sgdisk');
const SFDISK = requireTool('/usr/sbin/sfdisk');
const FDISK = requireTool('/usr/sbin/fdisk');
const MiB = 1024 * 1024;

function guid(rng: Rng): string {
  const h = rng.bytes(16).toString('hex').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Names sgdisk's `-c N:name` can express (no ':'; BMP characters only). */
function randomName(rng: Rng): string {
  const alphabet = ['a', 'Z', '0', '-', '_', '.', 'é', 'ß', 'Ж', '中'];
  const n = rng.int(1, 36);
  let s = '';
  for (let i = 0; i < n; i++) s += rng.pick(alphabet);
  return s;
}

function randomSpecs(rng: Rng): { specs: GptPartitionSpec[]; diskBytes: number } {
  const count = rng.int(1, 5);
  const specs: GptPartitionSpec[] = [];
  for (let i = 0; i < count; i++) {
    let attributes = 0n;
    for (const bit of [0, 1, 2, 48, 59, 60, 63]) if (rng.bool(0.25)) attributes |= 1n << BigInt(bit);
    specs.push({
      typeGuid: rng.pick([GPT_TYPE_ESP, GPT_TYPE_LINUX_ROOT_X86_64, GPT_TYPE_LINUX_FILESYSTEM, guid(rng)]),
      uniqueGuid: guid(rng),
      name: randomName(rng),
      sizeBytes: i === count - 1 && rng.bool() ? 'rest' : rng.int(1, 6 * MiB),
      attributes,
    });
  }
  return { specs, diskBytes: (count * 7 + rng.int(2, 30)) * MiB + rng.int(0, 2047) * 512 };
}

function fileReader(fd: number): DiskReader {
  return (offset, length) => {
    const b = Buffer.alloc(length);
    const n = readSync(fd, b, 0, length, offset);
    assert.equal(n, length, `short read at ${offset}`);
    return b;
  };
}

/** Write our GPT into a fresh sparse file. */
function writeImage(file: string, l: GptLayout): void {
  const { head, tail, tailOffset } = writeGpt(l);
  const fd = openSync(file, 'w');
  try {
    ftruncateSync(fd, l.totalLbas * l.sectorSize);
    writeSync(fd, head, 0, head.length, 0);
    writeSync(fd, tail, 0, tail.length, tailOffset);
  } finally {
    closeSync(fd);
  }
}

function readImage(file: string, diskBytes: number): ReturnType<typeof readGpt> {
  const fd = openSync(file, 'r');
  try {
    return readGpt(fileReader(fd), diskBytes);
  } finally {
    closeSync(fd);
  }
}

/** Create the same table with sgdisk (explicit start:end sectors, fixed GUIDs). */
function sgdiskCreate(file: string, diskBytes: number, l: GptLayout): void {
  const fd = openSync(file, 'w');
  ftruncateSync(fd, diskBytes);
  closeSync(fd);
  const args = ['-U', l.diskGuid];
  for (const p of l.partitions) {
    args.push('-n', `${p.number}:${p.firstLba}:${p.lastLba}`, '-t', `${p.number}:${p.typeGuid}`, '-c', `${p.number}:${p.name}`, '-u', `${p.number}:${p.uniqueGuid}`);
    for (let bit = 0n; bit < 64n; bit++) if (p.attributes & (1n << bit)) args.push('-A', `${p.number}:set:${bit}`);
  }
  args.push(file);
  const r = run(SGDISK, args);
  assert.equal(r.status, 0, `sgdisk ${args.join(' ')}: ${r.stderr.toString()}${r.stdout.toString()}`);
}

function sgdiskVerify(file: string): void {
  const v = run(SGDISK, ['-v', file]);
  const out = v.stdout.toString();
  assert.equal(v.status, 0, out + v.stderr.toString());
  assert.match(out, /No problems found/, out);
}

function sgdiskInfo(file: string, n: number): Record<string, string> {
  const r = run(SGDISK, ['-i', String(n), file]);
  assert.equal(r.status, 0, r.stderr.toString());
  const out: Record<string, string> = {};
  for (const line of r.stdout.toString().split('\n')) {
    const m = /^([^:]+): (.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

interface SfdiskJson {
  partitiontable: {
    label: string; id: string; firstlba: number; lastlba: number; sectorsize: number;
    partitions?: Array<{ start: number; size: number; type: string; uuid: string; name?: string; attrs?: string }>;
  };
}

/** `sfdisk --json` (512-byte sectors); for other sector sizes `fdisk -b N -l -x` parsed into the same shape. */
function sfdiskJson(file: string, sectorSize: number): SfdiskJson {
  if (sectorSize === 512) {
    const r = run(SFDISK, ['--json', file]);
    assert.equal(r.status, 0, r.stderr.toString());
    return JSON.parse(r.stdout.toString()) as SfdiskJson;
  }
  const r = run(FDISK, ['-b', String(sectorSize), '-l', '-x', '-o', 'Start,Sectors,Type-UUID,UUID,Name,Attrs', file]);
  const out = r.stdout.toString();
  assert.equal(r.status, 0, r.stderr.toString() + out);
  const field = (k: string): string => {
    const m = new RegExp(`^${k}: (.*)$`, 'm').exec(out);
    assert.ok(m, `fdisk output lacks '${k}':\n${out}`);
    return m[1]!.trim();
  };
  assert.match(field('Sector size \\(logical/physical\\)'), new RegExp(`^${sectorSize} bytes`));
  const rows = out.slice(out.indexOf('\n', out.search(/^ *Start +Sectors/m)) + 1).split('\n').filter((x) => x.trim());
  const partitions = rows.map((row) => {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(row);
    assert.ok(m, `unparsed fdisk row '${row}'`);
    const attrs = m[6]?.trim();
    return { start: Number(m[1]), size: Number(m[2]), type: m[3]!, uuid: m[4]!, name: m[5]!, ...(attrs ? { attrs } : {}) };
  });
  return {
    partitiontable: {
      label: field('Disklabel type'), id: field('Disk identifier'), sectorsize: sectorSize,
      firstlba: Number(field('First usable LBA')), lastlba: Number(field('Last usable LBA')), partitions,
    },
  };
}

/** sfdisk's attrs string for a 64-bit attribute value (util-linux gpt.c naming). */
function sfdiskAttrs(a: bigint): string | undefined {
  const words: string[] = [];
  if (a & 1n) words.push('RequiredPartition');
  if (a & 2n) words.push('NoBlockIOProtocol');
  if (a & 4n) words.push('LegacyBIOSBootable');
  const bits: number[] = [];
  for (let b = 48; b < 64; b++) if (a & (1n << BigInt(b))) bits.push(b);
  if (bits.length) words.push(`GUID:${bits.join(',')}`);
  return words.length ? words.join(' ') : undefined;
}

function compareWithTools(file: string, l: GptLayout, label: string): void {
  const j = sfdiskJson(file, l.sectorSize).partitiontable;
  assert.equal(j.label, 'gpt', label);
  assert.equal(j.id, l.diskGuid, label);
  assert.equal(j.firstlba, l.firstUsableLba, label);
  assert.equal(j.lastlba, l.lastUsableLba, label);
  const parts = j.partitions ?? [];
  assert.equal(parts.length, l.partitions.length, label);
  l.partitions.forEach((p, i) => {
    const s = parts[i]!;
    assert.equal(s.start, p.firstLba, label);
    assert.equal(s.size, p.lastLba - p.firstLba + 1, label);
    assert.equal(s.type, p.typeGuid, label);
    assert.equal(s.uuid, p.uniqueGuid, label);
    assert.equal(s.name ?? '', p.name, label);
    assert.equal(s.attrs, sfdiskAttrs(p.attributes), label);
  });
  if (l.sectorSize !== 512) return; // sgdisk has no option for a logical sector size on image files
  sgdiskVerify(file);
  for (const p of l.partitions) {
    const info = sgdiskInfo(file, p.number);
    assert.match(info['Partition GUID code']!, new RegExp(`^${p.typeGuid} `), label);
    assert.equal(info['Partition unique GUID'], p.uniqueGuid, label);
    assert.match(info['First sector']!, new RegExp(`^${p.firstLba} `), label);
    assert.match(info['Last sector']!, new RegExp(`^${p.lastLba} `), label);
    assert.equal(info['Attribute flags'], p.attributes.toString(16).padStart(16, '0').toUpperCase(), label);
    assert.equal(info['Partition name'], `'${p.name}'`, label);
  }
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-gpt-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

test('our GPTs (seeded, 512 and 4096-byte sectors) are read identically by sgdisk and sfdisk', () => {
  const n = cases(6, 60);
  for (let seed = 1; seed <= n; seed++) {
    const rng = new Rng(seed);
    const sectorSize = seed % 3 === 0 ? 4096 : 512;
    const { specs, diskBytes } = randomSpecs(rng);
    const l = planGpt({ diskBytes: diskBytes - (diskBytes % sectorSize), sectorSize, partitions: specs, diskGuid: guid(rng) });
    const file = path.join(tmp, `ours-${seed}.img`);
    writeImage(file, l);
    compareWithTools(file, l, `seed ${seed} (${sectorSize})`);
    rmSync(file);
  }
});

test('sgdisk-made GPTs are parsed by readGpt identically, and ours are byte-identical to them', () => {
  const n = cases(6, 60);
  for (let seed = 1; seed <= n; seed++) {
    const rng = new Rng(10_000 + seed);
    const { specs, diskBytes } = randomSpecs(rng);
    const l = planGpt({ diskBytes, partitions: specs, diskGuid: guid(rng) });
    const file = path.join(tmp, `sgdisk-${seed}.img`);
    sgdiskCreate(file, diskBytes, l);
    const r = readImage(file, diskBytes);
    assert.equal(r.source, 'primary', `seed ${seed}`);
    assert.deepEqual(r.problems, [], `seed ${seed}`);
    assert.deepEqual(r.layout, l, `seed ${seed}`);
    const { head, tail, tailOffset } = writeGpt(l);
    const fd = openSync(file, 'r');
    try {
      const read = fileReader(fd);
      assert.ok(read(0, head.length).equals(head), `seed ${seed}: head differs from sgdisk's`);
      assert.equal(tailOffset + tail.length, diskBytes);
      assert.ok(read(tailOffset, tail.length).equals(tail), `seed ${seed}: tail differs from sgdisk's`);
    } finally {
      closeSync(fd);
    }
    rmSync(file);
  }
});

test('byte identity with sgdisk at CHS and 32-bit MBR limits (8 GiB, 2 TiB, 3 TiB sparse disks)', () => {
  const rng = new Rng(424242);
  for (const diskBytes of [8 * 1024 * MiB, 2 * 1024 * 1024 * MiB, 3 * 1024 * 1024 * MiB]) {
    const l = planGpt({
      diskBytes,
      diskGuid: guid(rng),
      partitions: [
        { typeGuid: GPT_TYPE_ESP, uniqueGuid: guid(rng), name: 'ESP', sizeBytes: 512 * MiB },
        { typeGuid: GPT_TYPE_LINUX_ROOT_X86_64, uniqueGuid: guid(rng), name: 'root', sizeBytes: 'rest' },
      ],
    });
    const file = path.join(tmp, 'big.img');
    sgdiskCreate(file, diskBytes, l);
    const fd = openSync(file, 'r');
    try {
      const { head, tail, tailOffset } = writeGpt(l);
      const read = fileReader(fd);
      assert.ok(read(0, head.length).equals(head), `${diskBytes}: head differs from sgdisk's`);
      assert.ok(read(tailOffset, tail.length).equals(tail), `${diskBytes}: tail differs from sgdisk's`);
      assert.deepEqual(readGpt(read, diskBytes).layout, l);
    } finally {
      closeSync(fd);
    }
    rmSync(file);
  }
});

test('a damaged primary: readGpt, sgdisk and sfdisk all fall back to the backup we wrote', () => {
  const rng = new Rng(99);
  const { specs, diskBytes } = randomSpecs(rng);
  const l = planGpt({ diskBytes, partitions: specs, diskGuid: guid(rng) });
  const file = path.join(tmp, 'damaged.img');
  writeImage(file, l);
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.from('garbage!'), 0, 8, 512 + 40); // primary header: first usable LBA field
  closeSync(fd);
  const r = readImage(file, diskBytes);
  assert.equal(r.source, 'backup');
  assert.equal(r.primaryError?.offset, 512 + 16);
  assert.deepEqual(r.layout.partitions, l.partitions);
  const v = run(SGDISK, ['-v', file]);
  assert.match(v.stdout.toString() + v.stderr.toString(), /main header|primary|CRC/i);
  // sfdisk also falls back to the backup and sees the same partitions.
  const j = sfdiskJson(file, 512).partitiontable;
  assert.deepEqual((j.partitions ?? []).map((p) => [p.start, p.uuid]), l.partitions.map((p) => [p.firstLba, p.uniqueGuid]));
  rmSync(file);
});
