/**
 * GUID Partition Table (UEFI 2.10 spec, chapter 5): planner, writer and reader side by side.
 *
 * On-disk layout for a disk of N logical blocks (LBAs) of `sectorSize` bytes:
 *   LBA 0            protective MBR (one partition of type 0xEE covering LBA 1..min(N-1, 2^32-1))
 *   LBA 1            primary GPT header
 *   LBA 2..          primary partition entry array (128 entries x 128 bytes = 16 KiB)
 *   first..last usable LBAs: partitions
 *   LBA N-1-k..N-2   backup partition entry array
 *   LBA N-1          backup GPT header
 * Headers and entry arrays are protected by CRC32 (the zlib polynomial). GUIDs are stored "mixed-endian":
 * the first three fields little-endian, the last two as bytes. Names are UTF-16LE, 36 code units max.
 *
 * The writer produces the same bytes as `sgdisk` (gdisk 1.0.x) for the same layout and GUIDs, including the
 * protective MBR's CHS fields (255 heads / 63 sectors geometry, 0xFFFFFF past cylinder 1023).
 */
import { randomUUID } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { BootcfsError, FormatError } from '../errors.js';

/** EFI System Partition. */
export const GPT_TYPE_ESP = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
/** Linux root (x86-64), Discoverable Partitions Specification. */
export const GPT_TYPE_LINUX_ROOT_X86_64 = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';
/** Linux filesystem data. */
export const GPT_TYPE_LINUX_FILESYSTEM = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

/** Attribute bits (UEFI: bits 0..2; bits 48..63 are type-specific, e.g. DPS read-only = 60, no-auto = 63). */
export const GPT_ATTR_REQUIRED_PARTITION = 1n << 0n;
export const GPT_ATTR_NO_BLOCK_IO_PROTOCOL = 1n << 1n;
export const GPT_ATTR_LEGACY_BIOS_BOOTABLE = 1n << 2n;
export const GPT_ATTR_DPS_READ_ONLY = 1n << 60n;
export const GPT_ATTR_DPS_NO_AUTO = 1n << 63n;

export const GPT_SIGNATURE = 'EFI PART';
export const GPT_REVISION = 0x00010000;
export const GPT_HEADER_SIZE = 92;
export const GPT_ENTRY_COUNT = 128;
export const GPT_ENTRY_SIZE = 128;
export const GPT_NAME_UNITS = 36;
/** Partition start alignment. */
export const GPT_ALIGNMENT_BYTES = 1024 * 1024;
/** Reader limit on an entry array's size (a hostile header must not make us allocate gigabytes). */
export const GPT_MAX_ENTRY_ARRAY_BYTES = 1024 * 1024;

const ZERO_GUID = '00000000-0000-0000-0000-000000000000';
const GUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export interface GptPartitionSpec {
  typeGuid: string;
  /** Random (v4) when omitted. */
  uniqueGuid?: string;
  /** At most 36 UTF-16 code units. */
  name: string;
  /** Size in bytes (rounded up to whole sectors), or 'rest' for everything up to the last usable LBA (last spec only). */
  sizeBytes: number | 'rest';
  attributes?: bigint;
}

export interface GptPlanOptions {
  diskBytes: number;
  sectorSize?: number;
  partitions: GptPartitionSpec[];
  /** Random (v4) when omitted. */
  diskGuid?: string;
}

export interface GptPartition {
  /** 1-based slot number in the entry array (the `N` of /dev/sdaN). */
  number: number;
  typeGuid: string;
  uniqueGuid: string;
  name: string;
  firstLba: number;
  /** Inclusive. */
  lastLba: number;
  attributes: bigint;
}

export interface GptLayout {
  sectorSize: number;
  /** Total LBAs on the disk. */
  totalLbas: number;
  diskGuid: string;
  firstUsableLba: number;
  lastUsableLba: number;
  /** LBA of the primary entry array (2) and of the backup entry array. */
  primaryEntriesLba: number;
  backupEntriesLba: number;
  entryCount: number;
  entrySize: number;
  partitions: GptPartition[];
}

function invalid(msg: string): never {
  throw new BootcfsError('EINVAL', msg);
}

function normalizeGuid(g: string, what: string): string {
  if (!GUID_RE.test(g)) invalid(`${what}: '${g}' is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`);
  return g.toUpperCase();
}

function entryArraySectors(sectorSize: number, count = GPT_ENTRY_COUNT, size = GPT_ENTRY_SIZE): number {
  return Math.ceil((count * size) / sectorSize);
}

/** Compute a GPT layout: partitions in order, each starting on a 1 MiB boundary. */
export function planGpt(opts: GptPlanOptions): GptLayout {
  const sectorSize = opts.sectorSize ?? 512;
  if (![512, 1024, 2048, 4096].includes(sectorSize)) invalid(`sector size ${sectorSize} is not 512, 1024, 2048 or 4096`);
  const { diskBytes } = opts;
  if (!Number.isSafeInteger(diskBytes) || diskBytes <= 0 || diskBytes % sectorSize !== 0) {
    invalid(`disk size ${diskBytes} is not a positive multiple of the sector size ${sectorSize}`);
  }
  const totalLbas = diskBytes / sectorSize;
  const arrSectors = entryArraySectors(sectorSize);
  const firstUsableLba = 2 + arrSectors;
  const lastUsableLba = totalLbas - 2 - arrSectors;
  if (lastUsableLba < firstUsableLba) invalid(`disk of ${diskBytes} bytes is too small for a GPT`);
  const align = GPT_ALIGNMENT_BYTES / sectorSize;
  const partitions: GptPartition[] = [];
  if (opts.partitions.length > GPT_ENTRY_COUNT) invalid(`${opts.partitions.length} partitions exceed the ${GPT_ENTRY_COUNT} GPT entries`);
  let next = Math.ceil(firstUsableLba / align) * align;
  opts.partitions.forEach((p, i) => {
    const what = `partition ${i + 1}`;
    const typeGuid = normalizeGuid(p.typeGuid, `${what} type`);
    if (typeGuid === ZERO_GUID) invalid(`${what}: the type GUID must not be all zeros (that marks an unused entry)`);
    const uniqueGuid = normalizeGuid(p.uniqueGuid ?? randomUUID(), `${what} unique GUID`);
    encodeName(p.name, what);
    const attributes = p.attributes ?? 0n;
    if (attributes < 0n || attributes >= 1n << 64n) invalid(`${what}: attributes ${attributes} do not fit 64 bits`);
    const firstLba = next;
    let lastLba: number;
    if (p.sizeBytes === 'rest') {
      if (i !== opts.partitions.length - 1) invalid(`${what}: only the last partition may take the 'rest' of the disk`);
      lastLba = lastUsableLba;
    } else {
      if (!Number.isSafeInteger(p.sizeBytes) || p.sizeBytes <= 0) invalid(`${what}: size ${p.sizeBytes} is not a positive integer`);
      lastLba = firstLba + Math.ceil(p.sizeBytes / sectorSize) - 1;
    }
    if (firstLba > lastUsableLba || lastLba > lastUsableLba || lastLba < firstLba) {
      invalid(`${what} (${p.name}) does not fit: disk has ${diskBytes} bytes, usable LBAs ${firstUsableLba}..${lastUsableLba}`);
    }
    partitions.push({ number: i + 1, typeGuid, uniqueGuid, name: p.name, firstLba, lastLba, attributes });
    next = Math.ceil((lastLba + 1) / align) * align;
  });
  return {
    sectorSize,
    totalLbas,
    diskGuid: normalizeGuid(opts.diskGuid ?? randomUUID(), 'disk GUID'),
    firstUsableLba,
    lastUsableLba,
    primaryEntriesLba: 2,
    backupEntriesLba: totalLbas - 1 - arrSectors,
    entryCount: GPT_ENTRY_COUNT,
    entrySize: GPT_ENTRY_SIZE,
    partitions,
  };
}

// ---------------------------------------------------------------------------------------------- encoding

/** Encode a GUID string in the on-disk mixed-endian form. */
export function encodeGuid(g: string): Buffer {
  const hex = normalizeGuid(g, 'GUID').replaceAll('-', '');
  const b = Buffer.from(hex, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/** Decode 16 mixed-endian bytes to the canonical upper-case GUID string. */
export function decodeGuid(b: Uint8Array): string {
  const c = Buffer.from(b.subarray(0, 16));
  c.subarray(0, 4).reverse();
  c.subarray(4, 6).reverse();
  c.subarray(6, 8).reverse();
  const h = c.toString('hex').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function encodeName(name: string, what: string): Buffer {
  const b = Buffer.from(name, 'utf16le');
  if (b.length > GPT_NAME_UNITS * 2) {
    throw new BootcfsError('ELIMIT', `${what}: name '${name}' is ${b.length / 2} UTF-16 units, more than ${GPT_NAME_UNITS}`);
  }
  if (name.includes('\0')) invalid(`${what}: name contains a NUL character`);
  return b;
}

function chsBytes(lba: number): [number, number, number] {
  const heads = 255;
  const sectors = 63;
  const cyl = Math.floor(lba / (heads * sectors));
  if (cyl > 1023) return [0xff, 0xff, 0xff];
  const rem = lba % (heads * sectors);
  const head = Math.floor(rem / sectors);
  const sector = (rem % sectors) + 1;
  return [head, sector | ((cyl >> 8) << 6), cyl & 0xff];
}

function validateLayout(l: GptLayout): void {
  const arrSectors = entryArraySectors(l.sectorSize, l.entryCount, l.entrySize);
  if (l.entryCount !== GPT_ENTRY_COUNT || l.entrySize !== GPT_ENTRY_SIZE) invalid('only 128 entries of 128 bytes are written');
  if (l.primaryEntriesLba !== 2 || l.backupEntriesLba !== l.totalLbas - 1 - arrSectors) invalid('entry arrays are not at LBA 2 and before the backup header');
  if (l.firstUsableLba < 2 + arrSectors || l.lastUsableLba > l.backupEntriesLba - 1 || l.firstUsableLba > l.lastUsableLba) {
    invalid(`usable LBAs ${l.firstUsableLba}..${l.lastUsableLba} overlap the GPT structures`);
  }
  if (l.partitions.length > l.entryCount) invalid('too many partitions');
  const seen = new Set<number>();
  for (const p of l.partitions) {
    if (!Number.isInteger(p.number) || p.number < 1 || p.number > l.entryCount || seen.has(p.number)) invalid(`bad partition number ${p.number}`);
    seen.add(p.number);
    if (p.firstLba < l.firstUsableLba || p.lastLba > l.lastUsableLba || p.firstLba > p.lastLba) {
      invalid(`partition ${p.number}: LBAs ${p.firstLba}..${p.lastLba} outside usable ${l.firstUsableLba}..${l.lastUsableLba}`);
    }
  }
  const sorted = [...l.partitions].sort((a, b) => a.firstLba - b.firstLba);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.firstLba <= sorted[i - 1]!.lastLba) invalid(`partitions ${sorted[i - 1]!.number} and ${sorted[i]!.number} overlap`);
  }
}

function buildEntries(l: GptLayout): Buffer {
  const arr = Buffer.alloc(l.entryCount * l.entrySize);
  for (const p of l.partitions) {
    const o = (p.number - 1) * l.entrySize;
    encodeGuid(p.typeGuid).copy(arr, o);
    encodeGuid(p.uniqueGuid).copy(arr, o + 16);
    arr.writeBigUInt64LE(BigInt(p.firstLba), o + 32);
    arr.writeBigUInt64LE(BigInt(p.lastLba), o + 40);
    arr.writeBigUInt64LE(BigInt.asUintN(64, p.attributes), o + 48);
    encodeName(p.name, `partition ${p.number}`).copy(arr, o + 56);
  }
  return arr;
}

function buildHeader(l: GptLayout, myLba: number, altLba: number, entriesLba: number, entriesCrc: number): Buffer {
  const h = Buffer.alloc(l.sectorSize);
  h.write(GPT_SIGNATURE, 0, 'latin1');
  h.writeUInt32LE(GPT_REVISION, 8);
  h.writeUInt32LE(GPT_HEADER_SIZE, 12);
  h.writeBigUInt64LE(BigInt(myLba), 24);
  h.writeBigUInt64LE(BigInt(altLba), 32);
  h.writeBigUInt64LE(BigInt(l.firstUsableLba), 40);
  h.writeBigUInt64LE(BigInt(l.lastUsableLba), 48);
  encodeGuid(l.diskGuid).copy(h, 56);
  h.writeBigUInt64LE(BigInt(entriesLba), 72);
  h.writeUInt32LE(l.entryCount, 80);
  h.writeUInt32LE(l.entrySize, 84);
  h.writeUInt32LE(entriesCrc, 88);
  h.writeUInt32LE(crc32(h.subarray(0, GPT_HEADER_SIZE)), 16);
  return h;
}

function buildProtectiveMbr(l: GptLayout): Buffer {
  const mbr = Buffer.alloc(l.sectorSize);
  const size = Math.min(l.totalLbas - 1, 0xffffffff);
  const o = 446;
  mbr[o] = 0x00; // not bootable
  mbr[o + 1] = 0x00; mbr[o + 2] = 0x02; mbr[o + 3] = 0x00; // CHS of LBA 1
  mbr[o + 4] = 0xee;
  const [h, s, c] = chsBytes(size);
  mbr[o + 5] = h; mbr[o + 6] = s; mbr[o + 7] = c;
  mbr.writeUInt32LE(1, o + 8);
  mbr.writeUInt32LE(size, o + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  return mbr;
}

export interface GptImage {
  /** LBA 0 .. first entry-array end: protective MBR, primary header, primary entries. Write at byte 0. */
  head: Buffer;
  /** Backup entries followed by the backup header (the disk's last LBA). Write at `tailOffset`. */
  tail: Buffer;
  tailOffset: number;
}

/** Serialize a layout. Validates it first (a layout is a plain object and may have been edited). */
export function writeGpt(layout: GptLayout): GptImage {
  validateLayout(layout);
  const entries = buildEntries(layout);
  const entriesCrc = crc32(entries);
  const last = layout.totalLbas - 1;
  const arrBytes = entryArraySectors(layout.sectorSize) * layout.sectorSize;
  const pad = (b: Buffer) => (b.length === arrBytes ? b : Buffer.concat([b, Buffer.alloc(arrBytes - b.length)]));
  const head = Buffer.concat([
    buildProtectiveMbr(layout),
    buildHeader(layout, 1, last, layout.primaryEntriesLba, entriesCrc),
    pad(entries),
  ]);
  const tail = Buffer.concat([pad(entries), buildHeader(layout, last, 1, layout.backupEntriesLba, entriesCrc)]);
  return { head, tail, tailOffset: layout.backupEntriesLba * layout.sectorSize };
}

// ---------------------------------------------------------------------------------------------- reading

/** Random access to a disk: returns exactly `length` bytes at `offset` (or throws). */
export type DiskReader = (offset: number, length: number) => Buffer;

export interface GptReadOptions {
  /** Probed (512, then 4096) when omitted. */
  sectorSize?: number;
}

export interface GptReadResult {
  layout: GptLayout;
  /** Which header the layout comes from. */
  source: 'primary' | 'backup';
  /** Faults found in the other copy (empty when both copies are intact and agree). */
  problems: string[];
  /** The fault that made the reader fall back to the backup header, when `source` is 'backup'. */
  primaryError?: FormatError;
}

interface ParsedHeader {
  myLba: number;
  altLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
}

function u64(b: Buffer, o: number, base: number, what: string): number {
  const v = b.readBigUInt64LE(o);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`GPT ${what} ${v} is out of range`, base + o);
  return Number(v);
}

function parseHeader(read: DiskReader, sectorSize: number, totalLbas: number, lba: number): ParsedHeader {
  const base = lba * sectorSize;
  const h = read(base, sectorSize);
  if (h.length < sectorSize) throw new FormatError('GPT header sector is truncated', base);
  if (h.toString('latin1', 0, 8) !== GPT_SIGNATURE) throw new FormatError(`no GPT signature at LBA ${lba}`, base);
  const rev = h.readUInt32LE(8);
  if (rev >>> 16 !== 1) throw new FormatError(`GPT revision 0x${rev.toString(16)} is not 1.x`, base + 8);
  const hsize = h.readUInt32LE(12);
  if (hsize < GPT_HEADER_SIZE || hsize > sectorSize) throw new FormatError(`GPT header size ${hsize} is outside ${GPT_HEADER_SIZE}..${sectorSize}`, base + 12);
  const stored = h.readUInt32LE(16);
  const copy = Buffer.from(h.subarray(0, hsize));
  copy.writeUInt32LE(0, 16);
  const actual = crc32(copy);
  if (actual !== stored) {
    throw new FormatError(`GPT header CRC32 mismatch at LBA ${lba}: stored 0x${stored.toString(16)}, computed 0x${actual.toString(16)}`, base + 16);
  }
  const p: ParsedHeader = {
    myLba: u64(h, 24, base, 'my LBA'),
    altLba: u64(h, 32, base, 'alternate LBA'),
    firstUsableLba: u64(h, 40, base, 'first usable LBA'),
    lastUsableLba: u64(h, 48, base, 'last usable LBA'),
    diskGuid: decodeGuid(h.subarray(56, 72)),
    entriesLba: u64(h, 72, base, 'entry array LBA'),
    entryCount: h.readUInt32LE(80),
    entrySize: h.readUInt32LE(84),
    entriesCrc: h.readUInt32LE(88),
  };
  if (p.myLba !== lba) throw new FormatError(`GPT header at LBA ${lba} says it is at LBA ${p.myLba}`, base + 24);
  if (p.entrySize < 128 || p.entrySize > 4096 || (p.entrySize & (p.entrySize - 1)) !== 0) {
    throw new FormatError(`GPT entry size ${p.entrySize} is not 128 x 2^n (max 4096)`, base + 84);
  }
  if (p.entryCount === 0 || p.entryCount * p.entrySize > GPT_MAX_ENTRY_ARRAY_BYTES) {
    throw new FormatError(`GPT entry count ${p.entryCount} (x ${p.entrySize} bytes) is absurd`, base + 80);
  }
  const arrSectors = Math.ceil((p.entryCount * p.entrySize) / sectorSize);
  if (p.firstUsableLba > p.lastUsableLba + 1 || p.lastUsableLba >= totalLbas - 1 || p.firstUsableLba < 2) {
    throw new FormatError(`GPT usable LBAs ${p.firstUsableLba}..${p.lastUsableLba} do not fit a disk of ${totalLbas} LBAs`, base + 40);
  }
  const arrEnd = p.entriesLba + arrSectors - 1;
  const insideUsable = arrEnd >= p.firstUsableLba && p.entriesLba <= p.lastUsableLba;
  if (p.entriesLba < 2 || arrEnd >= totalLbas - 1 || insideUsable || (p.entriesLba <= lba && lba <= arrEnd)) {
    throw new FormatError(`GPT entry array at LBAs ${p.entriesLba}..${arrEnd} overlaps the usable area, a header or the disk end`, base + 72);
  }
  return p;
}

function parseEntries(read: DiskReader, sectorSize: number, hdr: ParsedHeader, hdrLba: number): GptPartition[] {
  const base = hdr.entriesLba * sectorSize;
  const len = hdr.entryCount * hdr.entrySize;
  const arr = read(base, len);
  if (arr.length < len) throw new FormatError('GPT entry array is truncated', base);
  const actual = crc32(arr);
  if (actual !== hdr.entriesCrc) {
    throw new FormatError(
      `GPT entry array CRC32 mismatch (header at LBA ${hdrLba}): stored 0x${hdr.entriesCrc.toString(16)}, computed 0x${actual.toString(16)}`,
      hdrLba * sectorSize + 88,
    );
  }
  const parts: GptPartition[] = [];
  for (let i = 0; i < hdr.entryCount; i++) {
    const o = i * hdr.entrySize;
    const typeGuid = decodeGuid(arr.subarray(o, o + 16));
    if (typeGuid === ZERO_GUID) continue;
    const firstLba = u64(arr, o + 32, base, `partition ${i + 1} first LBA`);
    const lastLba = u64(arr, o + 40, base, `partition ${i + 1} last LBA`);
    if (firstLba > lastLba || firstLba < hdr.firstUsableLba || lastLba > hdr.lastUsableLba) {
      throw new FormatError(
        `GPT partition ${i + 1} LBAs ${firstLba}..${lastLba} are outside the usable ${hdr.firstUsableLba}..${hdr.lastUsableLba}`,
        base + o + 32,
      );
    }
    const nameRaw = arr.subarray(o + 56, o + 56 + GPT_NAME_UNITS * 2);
    let units = 0;
    while (units < GPT_NAME_UNITS && nameRaw.readUInt16LE(units * 2) !== 0) units++;
    parts.push({
      number: i + 1,
      typeGuid,
      uniqueGuid: decodeGuid(arr.subarray(o + 16, o + 32)),
      name: nameRaw.toString('utf16le', 0, units * 2),
      firstLba,
      lastLba,
      attributes: arr.readBigUInt64LE(o + 48),
    });
  }
  const sorted = [...parts].sort((a, b) => a.firstLba - b.firstLba);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.firstLba <= a.lastLba) {
      throw new FormatError(`GPT partitions ${a.number} (${a.firstLba}..${a.lastLba}) and ${b.number} (${b.firstLba}..${b.lastLba}) overlap`, base + (b.number - 1) * hdr.entrySize + 32);
    }
  }
  return parts;
}

function readCopy(read: DiskReader, sectorSize: number, totalLbas: number, lba: number): GptLayout {
  const hdr = parseHeader(read, sectorSize, totalLbas, lba);
  const partitions = parseEntries(read, sectorSize, hdr, lba);
  const arrSectors = Math.ceil((hdr.entryCount * hdr.entrySize) / sectorSize);
  return {
    sectorSize,
    totalLbas,
    diskGuid: hdr.diskGuid,
    firstUsableLba: hdr.firstUsableLba,
    lastUsableLba: hdr.lastUsableLba,
    primaryEntriesLba: lba === 1 ? hdr.entriesLba : 2,
    backupEntriesLba: lba === 1 ? totalLbas - 1 - arrSectors : hdr.entriesLba,
    entryCount: hdr.entryCount,
    entrySize: hdr.entrySize,
    partitions,
  };
}

function sameTable(a: GptLayout, b: GptLayout): boolean {
  if (a.diskGuid !== b.diskGuid || a.firstUsableLba !== b.firstUsableLba || a.lastUsableLba !== b.lastUsableLba) return false;
  if (a.entryCount !== b.entryCount || a.entrySize !== b.entrySize || a.partitions.length !== b.partitions.length) return false;
  return a.partitions.every((p, i) => {
    const q = b.partitions[i]!;
    return p.number === q.number && p.typeGuid === q.typeGuid && p.uniqueGuid === q.uniqueGuid && p.name === q.name &&
      p.firstLba === q.firstLba && p.lastLba === q.lastLba && p.attributes === q.attributes;
  });
}

/**
 * Read a GPT from an in-memory image or a random-access reader. The primary header (LBA 1) is used when
 * it and its entries are intact; otherwise the backup header (last LBA) is, and `source` says so.
 * Throws FormatError (with the primary's fault offset) when neither copy is usable.
 */
export function readGpt(src: Buffer | DiskReader, diskBytes?: number, opts: GptReadOptions = {}): GptReadResult {
  let read: DiskReader;
  if (Buffer.isBuffer(src)) {
    const buf = src;
    read = (offset, length) => {
      if (offset < 0 || offset + length > buf.length) throw new FormatError(`read of ${length} bytes beyond the image end (${buf.length})`, offset);
      return buf.subarray(offset, offset + length);
    };
    diskBytes ??= buf.length;
  } else {
    read = src;
    if (diskBytes === undefined) invalid('readGpt: diskBytes is required with a reader function');
  }
  const sizes = opts.sectorSize !== undefined ? [opts.sectorSize] : [512, 4096];
  let firstErr: FormatError | undefined;
  for (const sectorSize of sizes) {
    if (diskBytes % sectorSize !== 0) {
      firstErr ??= new FormatError(`disk size ${diskBytes} is not a multiple of the sector size ${sectorSize}`, 0);
      continue;
    }
    const totalLbas = diskBytes / sectorSize;
    const minLbas = 2 * 2 + 2 * Math.ceil(GPT_ENTRY_COUNT * GPT_ENTRY_SIZE / sectorSize);
    if (totalLbas < minLbas) {
      firstErr ??= new FormatError(`disk of ${diskBytes} bytes is too small to hold a GPT`, 0);
      continue;
    }
    let primary: GptLayout | undefined;
    let primaryError: FormatError | undefined;
    try {
      primary = readCopy(read, sectorSize, totalLbas, 1);
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      primaryError = e;
    }
    let backup: GptLayout | undefined;
    let backupError: FormatError | undefined;
    try {
      backup = readCopy(read, sectorSize, totalLbas, totalLbas - 1);
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      backupError = e;
    }
    if (primary) {
      const problems: string[] = [];
      if (backupError) problems.push(`backup GPT: ${backupError.message}`);
      else if (backup && !sameTable(primary, backup)) problems.push('backup GPT differs from the primary');
      return { layout: primary, source: 'primary', problems };
    }
    if (backup) {
      return { layout: backup, source: 'backup', problems: [`primary GPT: ${primaryError!.message}`], primaryError: primaryError! };
    }
    // A missing signature at 512 may mean 4096-byte sectors; keep the first error for the report.
    firstErr ??= primaryError!;
  }
  throw firstErr ?? new FormatError('no GPT found', 0);
}
