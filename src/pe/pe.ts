/**
 * PE/COFF reader (Microsoft PE format specification): DOS header → `PE\0\0` → COFF file header → optional
 * header (PE32 or PE32+) → data directories → section table. Bounds-checked: every fault is a FormatError
 * with the byte offset where it was found. The parsed view keeps the file offsets that Authenticode and the
 * UKI writer need (checksum field, certificate-table directory entry, end of headers).
 *
 * Only what EFI images use is modelled; nothing here interprets code.
 */
import { FormatError } from '../errors.js';

export const IMAGE_FILE_MACHINE_AMD64 = 0x8664;
export const IMAGE_FILE_MACHINE_I386 = 0x14c;
export const IMAGE_FILE_MACHINE_ARM64 = 0xaa64;
export const PE32_MAGIC = 0x10b;
export const PE32PLUS_MAGIC = 0x20b;
/** Index of the certificate table (Authenticode signatures) in the data directories. */
export const DIR_SECURITY = 4;
export const DIR_BASERELOC = 5;

/** Section characteristics used by UKI sections. */
export const SCN_CNT_INITIALIZED_DATA = 0x00000040;
export const SCN_MEM_READ = 0x40000000;
export const SCN_MEM_WRITE = 0x80000000;
export const SCN_MEM_EXECUTE = 0x20000000;
export const SCN_CNT_CODE = 0x00000020;
export const SCN_MEM_DISCARDABLE = 0x02000000;

export interface PeSection {
  /** Section name as stored (up to 8 bytes, NUL padding removed; latin1). */
  name: string;
  virtualSize: number;
  virtualAddress: number;
  sizeOfRawData: number;
  pointerToRawData: number;
  characteristics: number;
  /** File offset of this section's 40-byte header. */
  headerOffset: number;
}

export interface DataDirectory {
  /** RVA, except for the certificate table, where it is a file offset. */
  address: number;
  size: number;
  /** File offset of this 8-byte directory entry. */
  entryOffset: number;
}

export interface PeImage {
  /** File offset of the `PE\0\0` signature (e_lfanew). */
  peOffset: number;
  machine: number;
  numberOfSections: number;
  timeDateStamp: number;
  sizeOfOptionalHeader: number;
  characteristics: number;
  /** File offset of the optional header. */
  optionalHeaderOffset: number;
  /** PE32+ (64-bit) or PE32. */
  is64: boolean;
  sectionAlignment: number;
  fileAlignment: number;
  sizeOfImage: number;
  sizeOfHeaders: number;
  /** File offset of the 4-byte CheckSum field. */
  checksumOffset: number;
  checksum: number;
  subsystem: number;
  imageBase: bigint;
  addressOfEntryPoint: number;
  dataDirectories: DataDirectory[];
  /** File offset of the section table. */
  sectionTableOffset: number;
  sections: PeSection[];
}

function need(buf: Buffer, off: number, len: number, what: string): void {
  if (off < 0 || len < 0 || off + len > buf.length) throw new FormatError(`PE: ${what} extends past the end of the file (${buf.length} bytes)`, off);
}

/** Parses the headers of a PE/COFF image. Section contents are not read (use `sectionData`). */
export function parsePe(buf: Buffer): PeImage {
  need(buf, 0, 64, 'DOS header');
  if (buf.readUInt16LE(0) !== 0x5a4d) throw new FormatError('PE: no MZ signature', 0);
  const peOffset = buf.readUInt32LE(0x3c);
  need(buf, peOffset, 24, 'PE signature and COFF header');
  if (buf.readUInt32LE(peOffset) !== 0x00004550) throw new FormatError('PE: no PE\\0\\0 signature at e_lfanew', peOffset);
  const coff = peOffset + 4;
  const machine = buf.readUInt16LE(coff);
  const numberOfSections = buf.readUInt16LE(coff + 2);
  const timeDateStamp = buf.readUInt32LE(coff + 4);
  const sizeOfOptionalHeader = buf.readUInt16LE(coff + 16);
  const characteristics = buf.readUInt16LE(coff + 18);
  const opt = coff + 20;
  need(buf, opt, sizeOfOptionalHeader, 'optional header');
  if (sizeOfOptionalHeader < 2) throw new FormatError('PE: no optional header', coff + 16);
  const magic = buf.readUInt16LE(opt);
  if (magic !== PE32_MAGIC && magic !== PE32PLUS_MAGIC) throw new FormatError(`PE: unknown optional header magic 0x${magic.toString(16)}`, opt);
  const is64 = magic === PE32PLUS_MAGIC;
  // Fixed part: 96 bytes (PE32) / 112 bytes (PE32+) before the data directories.
  const fixed = is64 ? 112 : 96;
  if (sizeOfOptionalHeader < fixed) throw new FormatError(`PE: optional header too small (${sizeOfOptionalHeader} bytes)`, coff + 16);
  const addressOfEntryPoint = buf.readUInt32LE(opt + 16);
  const imageBase = is64 ? buf.readBigUInt64LE(opt + 24) : BigInt(buf.readUInt32LE(opt + 28));
  const sectionAlignment = buf.readUInt32LE(opt + 32);
  const fileAlignment = buf.readUInt32LE(opt + 36);
  const sizeOfImage = buf.readUInt32LE(opt + 56);
  const sizeOfHeaders = buf.readUInt32LE(opt + 60);
  const checksumOffset = opt + 64;
  const checksum = buf.readUInt32LE(checksumOffset);
  const subsystem = buf.readUInt16LE(opt + 68);
  const numberOfRvaAndSizes = buf.readUInt32LE(opt + fixed - 4);
  if (fixed + numberOfRvaAndSizes * 8 > sizeOfOptionalHeader) {
    throw new FormatError(`PE: ${numberOfRvaAndSizes} data directories do not fit the optional header`, opt + fixed - 4);
  }
  const dataDirectories: DataDirectory[] = [];
  for (let i = 0; i < numberOfRvaAndSizes; i++) {
    const entryOffset = opt + fixed + i * 8;
    dataDirectories.push({ address: buf.readUInt32LE(entryOffset), size: buf.readUInt32LE(entryOffset + 4), entryOffset });
  }
  const sectionTableOffset = opt + sizeOfOptionalHeader;
  need(buf, sectionTableOffset, numberOfSections * 40, 'section table');
  const sections: PeSection[] = [];
  for (let i = 0; i < numberOfSections; i++) {
    const h = sectionTableOffset + i * 40;
    const raw = buf.subarray(h, h + 8);
    const nul = raw.indexOf(0);
    const s: PeSection = {
      name: raw.subarray(0, nul < 0 ? 8 : nul).toString('latin1'),
      virtualSize: buf.readUInt32LE(h + 8),
      virtualAddress: buf.readUInt32LE(h + 12),
      sizeOfRawData: buf.readUInt32LE(h + 16),
      pointerToRawData: buf.readUInt32LE(h + 20),
      characteristics: buf.readUInt32LE(h + 36),
      headerOffset: h,
    };
    if (s.sizeOfRawData > 0 && s.pointerToRawData + s.sizeOfRawData > buf.length) {
      throw new FormatError(`PE: section '${printable(s.name)}' data (${s.sizeOfRawData} bytes at ${s.pointerToRawData}) extends past the end of the file`, h + 16);
    }
    sections.push(s);
  }
  const cert = dataDirectories[DIR_SECURITY];
  if (cert !== undefined && cert.size !== 0 && (cert.address < sizeOfHeaders || cert.address + cert.size > buf.length)) {
    throw new FormatError(`PE: certificate table (${cert.size} bytes at ${cert.address}) is outside the file`, cert.entryOffset);
  }
  return {
    peOffset, machine, numberOfSections, timeDateStamp, sizeOfOptionalHeader, characteristics, optionalHeaderOffset: opt, is64,
    sectionAlignment, fileAlignment, sizeOfImage, sizeOfHeaders, checksumOffset, checksum, subsystem, imageBase, addressOfEntryPoint,
    dataDirectories, sectionTableOffset, sections,
  };
}

export function findSection(pe: PeImage, name: string): PeSection | undefined {
  return pe.sections.find((s) => s.name === name);
}

/**
 * The bytes of a section as the loader sees them: raw data truncated to VirtualSize (raw data is padded to
 * FileAlignment). A VirtualSize larger than the raw data (zero-fill) returns only the stored bytes.
 */
export function sectionData(buf: Buffer, s: PeSection): Buffer {
  const len = Math.min(s.virtualSize === 0 ? s.sizeOfRawData : s.virtualSize, s.sizeOfRawData);
  return buf.subarray(s.pointerToRawData, s.pointerToRawData + len);
}

/**
 * The PE checksum (as IMAGEHLP's CheckSumMappedFile): 16-bit one's-complement-style sum of the file's
 * 16-bit words with the CheckSum field taken as zero, plus the file length.
 */
export function peChecksum(buf: Buffer, checksumOffset: number): number {
  let sum = 0;
  const n = buf.length & ~1;
  for (let i = 0; i < n; i += 2) {
    if (i === checksumOffset || i === checksumOffset + 2) continue;
    sum += buf.readUInt16LE(i);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (buf.length & 1) {
    sum += buf[buf.length - 1]!;
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum + buf.length) >>> 0;
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}
