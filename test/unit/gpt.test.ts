/**
 * GPT planner/writer/reader: seeded round trips, structural invariants of the written bytes, and hostile
 * tables (bad CRCs, absurd counts and sizes, overlapping partitions) that must give typed errors, plus the
 * fallback to the backup header when the primary is damaged.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import {
  planGpt, writeGpt, readGpt, encodeGuid, decodeGuid,
  GPT_TYPE_ESP, GPT_TYPE_LINUX_ROOT_X86_64, GPT_TYPE_LINUX_FILESYSTEM, GPT_ATTR_DPS_NO_AUTO,
  type GptLayout, type GptPartitionSpec,
} from '../../src/install/gpt.js';
import { BootcfsError, FormatError } from '../../src/errors.js';
import { Rng } from '../helpers/rng.js';
import { cases } from '../helpers/ref.js';

const MiB = 1024 * 1024;

function guid(rng: Rng): string {
  const h = rng.bytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function randomName(rng: Rng): string {
  const alphabet = ['a', 'Z', '0', '-', '_', ' ', 'é', 'ß', '€', '中'];
  const n = rng.int(0, 36);
  let s = '';
  for (let i = 0; i < n; i++) s += rng.pick(alphabet);
  return s;
}

/** A random layout that fits: 1..6 partitions, last one sometimes 'rest'. */
export function randomLayout(rng: Rng, sectorSize = rng.pick([512, 4096])): GptLayout {
  const count = rng.int(1, 6);
  const specs: GptPartitionSpec[] = [];
  for (let i = 0; i < count; i++) {
    specs.push({
      typeGuid: rng.pick([GPT_TYPE_ESP, GPT_TYPE_LINUX_ROOT_X86_64, GPT_TYPE_LINUX_FILESYSTEM, guid(rng)]),
      uniqueGuid: guid(rng),
      name: randomName(rng),
      sizeBytes: i === count - 1 && rng.bool() ? 'rest' : rng.int(1, 8 * MiB),
      attributes: rng.bool(0.3) ? (BigInt(rng.u32()) << 32n) | BigInt(rng.u32()) : 0n,
    });
  }
  const diskBytes = (count * 9 + rng.int(2, 40)) * MiB + rng.int(0, 100) * sectorSize;
  return planGpt({ diskBytes, sectorSize, partitions: specs, diskGuid: guid(rng) });
}

function image(l: GptLayout): Buffer {
  const { head, tail, tailOffset } = writeGpt(l);
  const img = Buffer.alloc(l.totalLbas * l.sectorSize);
  head.copy(img, 0);
  tail.copy(img, tailOffset);
  return img;
}

/**
 * A sparse in-memory disk: the written head and tail, zeros elsewhere (the random layouts are up to ~100 MiB,
 * too big to allocate hundreds of times). Edits go to `head`/`tail` directly.
 */
function sparseDisk(l: GptLayout): { head: Buffer; tail: Buffer; tailOffset: number; size: number; read: (o: number, n: number) => Buffer } {
  const { head, tail, tailOffset } = writeGpt(l);
  const size = l.totalLbas * l.sectorSize;
  const read = (o: number, n: number): Buffer => {
    assert.ok(o >= 0 && o + n <= size, `read ${o}+${n} outside the disk`);
    const out = Buffer.alloc(n);
    if (o < head.length) head.copy(out, 0, o, Math.min(head.length, o + n));
    if (o + n > tailOffset) tail.copy(out, Math.max(0, tailOffset - o), Math.max(0, o - tailOffset), o + n - tailOffset);
    return out;
  };
  return { head, tail, tailOffset, size, read };
}

/** Recompute the header CRC of the header at `lba` after an edit. */
function fixHeaderCrc(img: Buffer, ss: number, lba: number): void {
  const h = img.subarray(lba * ss, lba * ss + 92);
  h.writeUInt32LE(0, 16);
  h.writeUInt32LE(crc32(h), 16);
}

test('GUID mixed-endian encoding matches the UEFI example', () => {
  const b = encodeGuid(GPT_TYPE_ESP);
  assert.equal(b.toString('hex'), '28732ac11ff8d211ba4b00a0c93ec93b');
  assert.equal(decodeGuid(b), GPT_TYPE_ESP);
  assert.equal(decodeGuid(encodeGuid('4f68bce3-e8cd-4db1-96e7-fbcaf984b709')), GPT_TYPE_LINUX_ROOT_X86_64);
});

test('planGpt aligns starts to 1 MiB and places the structures', () => {
  const l = planGpt({
    diskBytes: 64 * MiB,
    diskGuid: '11111111-2222-3333-4444-555555555555',
    partitions: [
      { typeGuid: GPT_TYPE_ESP, name: 'ESP', sizeBytes: 10 * MiB + 1 },
      { typeGuid: GPT_TYPE_LINUX_ROOT_X86_64, name: 'root', sizeBytes: 'rest', attributes: GPT_ATTR_DPS_NO_AUTO },
    ],
  });
  assert.equal(l.firstUsableLba, 34);
  assert.equal(l.lastUsableLba, 131038);
  assert.equal(l.backupEntriesLba, 131039);
  assert.deepEqual(l.partitions.map((p) => [p.firstLba, p.lastLba]), [[2048, 22528], [24576, 131038]]);
  const l4k = planGpt({ diskBytes: 64 * MiB, sectorSize: 4096, partitions: [{ typeGuid: GPT_TYPE_ESP, name: '', sizeBytes: 'rest' }] });
  assert.equal(l4k.firstUsableLba, 6);
  assert.equal(l4k.lastUsableLba, 16384 - 6);
  assert.equal(l4k.partitions[0]!.firstLba, 256);
  const w = writeGpt(l);
  assert.equal(w.head.length, 34 * 512);
  assert.equal(w.tail.length, 33 * 512);
  assert.equal(w.tailOffset + w.tail.length, 64 * MiB);
});

test('planGpt rejects impossible requests with typed errors', () => {
  const base = { diskBytes: 8 * MiB, partitions: [] as GptPartitionSpec[] };
  const bad: Array<[Partial<typeof base> & Record<string, unknown>, string]> = [
    [{ partitions: [{ typeGuid: GPT_TYPE_ESP, name: 'x', sizeBytes: 16 * MiB }] }, 'EINVAL'],
    [{ partitions: [{ typeGuid: 'not-a-guid', name: 'x', sizeBytes: MiB }] }, 'EINVAL'],
    [{ partitions: [{ typeGuid: '00000000-0000-0000-0000-000000000000', name: 'x', sizeBytes: MiB }] }, 'EINVAL'],
    [{ partitions: [{ typeGuid: GPT_TYPE_ESP, name: 'x'.repeat(37), sizeBytes: MiB }] }, 'ELIMIT'],
    [{ partitions: [{ typeGuid: GPT_TYPE_ESP, name: 'a', sizeBytes: 'rest' }, { typeGuid: GPT_TYPE_ESP, name: 'b', sizeBytes: MiB }] }, 'EINVAL'],
    [{ diskBytes: 8 * MiB + 1 }, 'EINVAL'],
    [{ diskBytes: 16 * 1024 }, 'EINVAL'],
    [{ sectorSize: 1000 }, 'EINVAL'],
    [{ partitions: [{ typeGuid: GPT_TYPE_ESP, name: 'x', sizeBytes: 0 }] }, 'EINVAL'],
  ];
  for (const [over, code] of bad) {
    assert.throws(() => planGpt({ ...base, ...over } as Parameters<typeof planGpt>[0]), (e: unknown) => e instanceof BootcfsError && e.code === code, JSON.stringify(over));
  }
});

test('writeGpt refuses edited layouts with overlapping or out-of-range partitions', () => {
  const l = randomLayout(new Rng(7), 512);
  const two = planGpt({
    diskBytes: 32 * MiB,
    partitions: [{ typeGuid: GPT_TYPE_ESP, name: 'a', sizeBytes: MiB }, { typeGuid: GPT_TYPE_ESP, name: 'b', sizeBytes: MiB }],
  });
  const overl = structuredClone(two);
  overl.partitions[1]!.firstLba = overl.partitions[0]!.lastLba;
  assert.throws(() => writeGpt(overl), /overlap/);
  const out = structuredClone(l);
  out.partitions[0]!.lastLba = l.lastUsableLba + 1;
  assert.throws(() => writeGpt(out), BootcfsError);
  const dup = structuredClone(two);
  dup.partitions[1]!.number = 1;
  assert.throws(() => writeGpt(dup), BootcfsError);
});

test('seeded round trips: plan → write → read gives the same layout, both headers intact', () => {
  const n = cases(200, 2000);
  for (let seed = 1; seed <= n; seed++) {
    const rng = new Rng(seed);
    const l = randomLayout(rng);
    const d = sparseDisk(l);
    // protective MBR
    assert.equal(d.head.readUInt16LE(510), 0xaa55);
    assert.equal(d.head[446 + 4], 0xee);
    assert.equal(d.head.readUInt32LE(446 + 8), 1);
    assert.equal(d.head.readUInt32LE(446 + 12), Math.min(l.totalLbas - 1, 0xffffffff));
    const r = readGpt(d.read, d.size);
    assert.equal(r.source, 'primary', `seed ${seed}`);
    assert.deepEqual(r.problems, [], `seed ${seed}`);
    assert.deepEqual(r.layout, l, `seed ${seed}`);
    // With an explicit sector size it agrees.
    const r2 = readGpt(d.read, d.size, { sectorSize: l.sectorSize });
    assert.deepEqual(r2.layout, l);
  }
});

test('corrupt primary header or entries: falls back to the backup and reports it', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rng = new Rng(1000 + seed);
    const l = randomLayout(rng);
    const ss = l.sectorSize;
    const d = sparseDisk(l);
    const where = rng.pick(['header', 'entries', 'signature']);
    if (where === 'header') d.head[ss + rng.int(24, 91)]! ^= 1 << rng.int(0, 7);
    else if (where === 'signature') d.head.fill(0, ss, ss + 8);
    else d.head[2 * ss + rng.int(0, 128 * 128 - 1)]! ^= 1 << rng.int(0, 7);
    const r = readGpt(d.read, d.size, { sectorSize: ss });
    assert.equal(r.source, 'backup', `seed ${seed} ${where}`);
    assert.ok(r.primaryError instanceof FormatError);
    assert.equal(r.problems.length, 1);
    if (where === 'header') assert.equal(r.primaryError.offset, ss + 16);
    if (where === 'entries') assert.equal(r.primaryError.offset, ss + 88);
    assert.deepEqual(r.layout.partitions, l.partitions);
    assert.equal(r.layout.diskGuid, l.diskGuid);
  }
});

test('corrupt backup only: primary is used and the backup fault is reported', () => {
  const l = randomLayout(new Rng(5), 512);
  const d = sparseDisk(l);
  d.tail[d.tail.length - 512 + 40]! ^= 0xff;
  const r = readGpt(d.read, d.size);
  assert.equal(r.source, 'primary');
  assert.equal(r.problems.length, 1);
  assert.match(r.problems[0]!, /backup GPT: .*CRC32/);
});

test('both copies corrupt or absent: FormatError with the primary fault offset', () => {
  const l = randomLayout(new Rng(9), 512);
  const img = image(l);
  img[512 + 30]! ^= 1;
  img[img.length - 512 + 30]! ^= 1;
  assert.throws(() => readGpt(img, undefined, { sectorSize: 512 }), (e: unknown) => e instanceof FormatError && e.offset === 512 + 16);
  assert.throws(() => readGpt(Buffer.alloc(4 * MiB)), FormatError);
  assert.throws(() => readGpt(Buffer.alloc(1024)), FormatError);
});

test('hostile headers and entries (CRCs fixed up) give typed errors, never crashes or huge reads', () => {
  const ss = 512;
  const l = planGpt({
    diskBytes: 16 * MiB,
    partitions: [
      { typeGuid: GPT_TYPE_ESP, uniqueGuid: 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE', name: 'a', sizeBytes: MiB },
      { typeGuid: GPT_TYPE_LINUX_FILESYSTEM, uniqueGuid: 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEF', name: 'b', sizeBytes: MiB },
    ],
  });
  const pristine = image(l);
  const lastLba = l.totalLbas - 1;
  /** Apply `edit` to both headers (recomputing header CRCs), so no fallback can save the table. */
  const hostile = (edit: (img: Buffer, hdrOff: number) => void, fixEntriesCrc = false): Buffer => {
    const img = Buffer.from(pristine);
    for (const lba of [1, lastLba]) {
      const off = lba * ss;
      edit(img, off);
      if (fixEntriesCrc) {
        const eLba = Number(img.readBigUInt64LE(off + 72));
        img.writeUInt32LE(crc32(img.subarray(eLba * ss, eLba * ss + 128 * 128)), off + 88);
      }
      fixHeaderCrc(img, ss, lba);
    }
    return img;
  };
  const cases: Array<[string, Buffer, RegExp, number]> = [
    ['entry count 2^32-1', hostile((b, o) => b.writeUInt32LE(0xffffffff, o + 80)), /entry count/, ss + 80],
    ['entry count 0', hostile((b, o) => b.writeUInt32LE(0, o + 80)), /entry count/, ss + 80],
    ['entry size 129', hostile((b, o) => b.writeUInt32LE(129, o + 84)), /entry size/, ss + 84],
    ['entry size 2^31', hostile((b, o) => b.writeUInt32LE(0x80000000, o + 84)), /entry size/, ss + 84],
    ['header size 2^32-1', hostile((b, o) => b.writeUInt32LE(0xffffffff, o + 12)), /header size/, ss + 12],
    ['header size 20', hostile((b, o) => b.writeUInt32LE(20, o + 12)), /header size/, ss + 12],
    ['revision 2.0', hostile((b, o) => b.writeUInt32LE(0x20000, o + 8)), /revision/, ss + 8],
    ['last usable beyond disk', hostile((b, o) => b.writeBigUInt64LE(1n << 62n, o + 48)), /out of range|usable/, ss + 48],
    ['last usable past the end', hostile((b, o) => b.writeBigUInt64LE(BigInt(lastLba), o + 48)), /usable/, ss + 40],
    ['entries LBA in usable area', hostile((b, o) => b.writeBigUInt64LE(4096n, o + 72)), /entry array/, ss + 72],
    ['entries LBA 2^63', hostile((b, o) => b.writeBigUInt64LE(1n << 63n, o + 72)), /out of range/, ss + 72],
    ['my LBA wrong', hostile((b, o) => b.writeBigUInt64LE(7n, o + 24)), /says it is at/, ss + 24],
    [
      'overlapping partitions',
      hostile((b, o) => {
        const eLba = Number(b.readBigUInt64LE(o + 72));
        const e1 = eLba * ss + 128; // entry 2
        b.writeBigUInt64LE(BigInt(l.partitions[0]!.lastLba), e1 + 32);
      }, true),
      /overlap/,
      2 * ss + 128 + 32,
    ],
    [
      'partition beyond last usable',
      hostile((b, o) => {
        const eLba = Number(b.readBigUInt64LE(o + 72));
        b.writeBigUInt64LE(BigInt(l.lastUsableLba + 1), eLba * ss + 40);
      }, true),
      /outside the usable/,
      2 * ss + 32,
    ],
    [
      'partition first > last',
      hostile((b, o) => {
        const eLba = Number(b.readBigUInt64LE(o + 72));
        b.writeBigUInt64LE(10n, eLba * ss + 40);
      }, true),
      /outside the usable/,
      2 * ss + 32,
    ],
    ['entries CRC wrong', hostile((b, o) => b.writeUInt32LE(0x12345678, o + 88)), /entry array CRC32/, ss + 88],
  ];
  for (const [what, img, re, offset] of cases) {
    assert.throws(
      () => readGpt(img, undefined, { sectorSize: ss }),
      (e: unknown) => e instanceof FormatError && re.test(e.message) && e.offset === offset,
      what,
    );
  }
});

test('random byte damage in the GPT area never escapes as an untyped error', () => {
  const n = cases(300, 3000);
  const l = planGpt({
    diskBytes: 4 * MiB,
    partitions: [
      { typeGuid: GPT_TYPE_ESP, name: 'esp', sizeBytes: MiB },
      { typeGuid: GPT_TYPE_LINUX_ROOT_X86_64, name: 'root', sizeBytes: 'rest' },
    ],
  });
  const pristine = image(l);
  for (let seed = 1; seed <= n; seed++) {
    const rng = new Rng(seed);
    const img = Buffer.from(pristine);
    for (let k = rng.int(1, 20); k > 0; k--) {
      const area = rng.bool() ? rng.int(0, 34 * 512 - 1) : img.length - rng.int(1, 33 * 512);
      img[area] = rng.u32() & 0xff;
    }
    try {
      const r = readGpt(img);
      assert.ok(r.layout.partitions.length <= 128);
    } catch (e) {
      assert.ok(e instanceof FormatError, `seed ${seed}: ${String(e)}`);
    }
  }
});

test('reader-function form requires diskBytes; truncated reads are FormatErrors', () => {
  assert.throws(() => readGpt(() => Buffer.alloc(0)), BootcfsError);
  const l = randomLayout(new Rng(3), 512);
  const img = image(l);
  // Claim a disk larger than the buffer: the backup lookup reads past the end.
  const r = readGpt(Buffer.concat([img.subarray(0, 34 * 512)]), img.length, { sectorSize: 512 });
  assert.equal(r.source, 'primary');
  assert.match(r.problems[0]!, /beyond the image end/);
});
