/**
 * PE/COFF writer: appends sections to an existing image (an EFI stub) the way systemd's `ukify build`
 * (systemd 257, through python-pefile) does, so that the output is byte-identical to ukify's:
 *
 * 1. A COFF symbol table (plus string table) that ends exactly at the end of the file is cut off, the
 *    header fields pointing at it are zeroed and IMAGE_FILE_LOCAL_SYMS_STRIPPED is set.
 * 2. Every existing section's PointerToRawData and SizeOfRawData are rounded up to FileAlignment, with zero
 *    bytes inserted into the file where that moves data (old stubs were stripped unaligned).
 * 3. SizeOfHeaders is rounded up to FileAlignment (the space before the first section's raw data is unused).
 * 4. Each new section gets the next 40-byte header slot after the last section header; it must end within
 *    SizeOfHeaders (ukify: "Not enough header space"). We additionally refuse a slot that would overlap a
 *    section's raw data (ukify would silently overwrite it; that never happens with SizeOfHeaders ≤ the
 *    first PointerToRawData). Its VirtualAddress is the end of the last section's virtual range rounded up
 *    to SectionAlignment; its raw data starts at the file length rounded up to FileAlignment and is padded
 *    with zeros to FileAlignment; VirtualSize is the exact data length.
 * 5. A new section whose name equals one of the image's ORIGINAL sections (e.g. `.sbat`) replaces that
 *    section's content in place instead (it must fit its SizeOfRawData; the rest is zero-filled and
 *    VirtualSize becomes the new length). This is ukify's `.sbat` merge.
 * 6. NumberOfSections, SizeOfInitializedData (+ VirtualSize of every appended section, code or not, as
 *    ukify does), SizeOfImage (end of the last section's virtual range rounded to SectionAlignment) are
 *    updated; CheckSum is set to 0 like ukify (or computed, on request).
 *
 * A signed input (non-empty certificate table) is refused, like ukify.
 *
 * One deliberate difference: ukify splices a merged section's content up to the NEXT section's
 * PointerToRawData; we overwrite exactly [PointerToRawData, +SizeOfRawData). The two agree whenever the
 * sections' raw data are contiguous (every systemd stub); with a gap ukify would shift later data.
 */
import { FormatError, BootcfsError } from '../errors.js';
import { parsePe, peChecksum, DIR_SECURITY, type PeImage } from './pe.js';

export const IMAGE_FILE_LOCAL_SYMS_STRIPPED = 0x0008;
export const IMAGE_DLLCHARACTERISTICS_NX_COMPAT = 0x0100;
/** Size of one section header in the section table. */
export const SECTION_HEADER_SIZE = 40;

export interface NewSection {
  /** ASCII, at most 8 bytes. */
  name: string;
  data: Buffer;
  /** IMAGE_SCN_* flags of the section header. */
  characteristics: number;
  /**
   * If the input image already has a section with this name, overwrite its content in place (ukify does
   * this for every name except `.dtbauto`). Default true.
   */
  replaceExisting?: boolean;
}

export interface AddSectionsOptions {
  /** Bits to clear in the optional header's DllCharacteristics (ukify clears NX_COMPAT if the kernel lacks it). */
  clearDllCharacteristics?: number;
  /** 'zero' (default, what ukify writes) or 'compute' (the IMAGEHLP checksum of the output). */
  checksum?: 'zero' | 'compute';
}

/** Thrown when the image cannot take the requested sections (no header room, signed stub, ...). */
export class PeWriteError extends BootcfsError {
  constructor(message: string) {
    super('EINVAL', message);
    this.name = 'PeWriteError';
  }
}

import { roundUp } from '../util/align.js';
export { roundUp };

/** Optional-header field offsets (same for PE32 and PE32+). */
const OPT_SIZE_OF_INITIALIZED_DATA = 8;
const OPT_SIZE_OF_IMAGE = 56;
const OPT_SIZE_OF_HEADERS = 60;
const OPT_DLL_CHARACTERISTICS = 70;

/** Steps 1–3: normalise the input image as ukify does before adding anything. */
function normalizeImage(input: Buffer): Buffer {
  let buf = Buffer.from(input);
  let pe = parsePe(buf);
  const coff = pe.peOffset + 4;
  const symbolTable = buf.readUInt32LE(coff + 8);
  if (symbolTable !== 0) {
    const numberOfSymbols = buf.readUInt32LE(coff + 12);
    let size = 18 * numberOfSymbols;
    const strOff = symbolTable + size;
    if (strOff + 4 <= buf.length) size += buf.readUInt32LE(strOff);
    if (symbolTable + size === buf.length) {
      buf = Buffer.from(buf.subarray(0, symbolTable));
      buf.writeUInt32LE(0, coff + 8);
      buf.writeUInt32LE(0, coff + 12);
      buf.writeUInt16LE(buf.readUInt16LE(coff + 18) | IMAGE_FILE_LOCAL_SYMS_STRIPPED, coff + 18);
    }
  }
  const fa = pe.fileAlignment;
  // ukify does not check these; we refuse what the PE specification forbids rather than pad by gigabytes.
  const pow2 = (x: number) => x > 0 && (x & (x - 1)) === 0;
  if (!pow2(fa) || fa > 0x10000) throw new FormatError(`PE: FileAlignment ${fa} is not a power of 2 up to 64 KiB`, pe.optionalHeaderOffset + 36);
  if (!pow2(pe.sectionAlignment) || pe.sectionAlignment < fa) {
    throw new FormatError(`PE: SectionAlignment ${pe.sectionAlignment} is not a power of 2 >= FileAlignment`, pe.optionalHeaderOffset + 32);
  }
  const ptr = pe.sections.map((s) => s.pointerToRawData);
  const size = pe.sections.map((s) => s.sizeOfRawData);
  for (let i = 0; i < ptr.length; i++) {
    const oldp = ptr[i]!;
    const oldsz = size[i]!;
    const newp = roundUp(oldp, fa);
    const newsz = roundUp(oldsz, fa);
    const padp = newp - oldp;
    const padsz = newsz - oldsz;
    ptr[i] = newp;
    size[i] = newsz;
    for (let j = i + 1; j < ptr.length; j++) ptr[j] = ptr[j]! + padp + padsz;
    if (padp !== 0 || padsz !== 0) {
      buf = Buffer.concat([buf.subarray(0, oldp), Buffer.alloc(padp), buf.subarray(oldp, oldp + oldsz), Buffer.alloc(padsz), buf.subarray(oldp + oldsz)]);
    }
  }
  pe.sections.forEach((s, i) => {
    buf.writeUInt32LE(size[i]! >>> 0, s.headerOffset + 16);
    buf.writeUInt32LE(ptr[i]! >>> 0, s.headerOffset + 20);
  });
  const opt = pe.optionalHeaderOffset;
  buf.writeUInt32LE(roundUp(pe.sizeOfHeaders, fa) >>> 0, opt + OPT_SIZE_OF_HEADERS);
  return buf;
}

/**
 * Returns a new image: `image` with `sections` added (or merged into same-named original sections), laid
 * out exactly as ukify 257 does. The input buffer is not modified.
 */
export function addSections(image: Buffer, sections: readonly NewSection[], opts: AddSectionsOptions = {}): Buffer {
  const head = normalizeImage(image);
  let pe: PeImage;
  try {
    pe = parsePe(head);
  } catch (e) {
    throw e instanceof FormatError ? e : new FormatError(`PE: ${(e as Error).message}`, 0);
  }
  const sec = pe.dataDirectories[DIR_SECURITY];
  if (sec !== undefined && sec.address !== 0) throw new PeWriteError('the stub image is signed (it has a certificate table); refusing to add sections');
  const fa = pe.fileAlignment;
  const sa = pe.sectionAlignment;
  const opt = pe.optionalHeaderOffset;
  const original = pe.sections.slice();
  const firstRaw = Math.min(...original.filter((s) => s.sizeOfRawData > 0).map((s) => s.pointerToRawData), Infinity);

  // The tail: appended section data, after the (normalised) original image.
  const tail: Buffer[] = [];
  let length = head.length;
  let numberOfSections = pe.numberOfSections;
  let lastHeader = pe.sectionTableOffset + (numberOfSections - 1) * SECTION_HEADER_SIZE;
  let lastVa = original.length > 0 ? original[original.length - 1]!.virtualAddress : 0;
  let lastVsize = original.length > 0 ? original[original.length - 1]!.virtualSize : 0;
  let initData = head.readUInt32LE(opt + OPT_SIZE_OF_INITIALIZED_DATA);

  for (const s of sections) {
    const nameBytes = Buffer.from(s.name, 'latin1');
    if (s.name.length === 0 || nameBytes.length > 8 || !/^[\x20-\x7e]+$/.test(s.name)) {
      throw new PeWriteError(`bad section name '${s.name}': must be 1..8 printable ASCII characters`);
    }
    const offset = numberOfSections === 0 ? pe.sectionTableOffset : lastHeader + SECTION_HEADER_SIZE;
    if (offset + SECTION_HEADER_SIZE > pe.sizeOfHeaders) {
      throw new PeWriteError(`not enough header space to add section ${s.name} (SizeOfHeaders ${pe.sizeOfHeaders}, ${numberOfSections} sections)`);
    }
    if (offset + SECTION_HEADER_SIZE > firstRaw || offset + SECTION_HEADER_SIZE > head.length) {
      throw new PeWriteError(`not enough header space to add section ${s.name}: its header would overlap section data or pass the end of the file`);
    }
    const vsize = s.data.length;
    const existing = (s.replaceExisting ?? true) ? original.find((o) => o.name === s.name) : undefined;
    if (existing !== undefined) {
      if (vsize > existing.sizeOfRawData) {
        throw new PeWriteError(`not enough space in existing section ${s.name} (${existing.sizeOfRawData} bytes) for ${vsize} bytes`);
      }
      s.data.copy(head, existing.pointerToRawData);
      head.fill(0, existing.pointerToRawData + vsize, existing.pointerToRawData + existing.sizeOfRawData);
      head.writeUInt32LE(vsize, existing.headerOffset + 8);
      if (existing === original[original.length - 1] && numberOfSections === original.length) lastVsize = vsize;
      continue;
    }
    const rawPtr = roundUp(length, fa);
    const rawSize = roundUp(vsize, fa);
    const va = roundUp(lastVa + lastVsize, sa);
    if (rawPtr + rawSize > 0xffffffff || va + vsize > 0xffffffff) throw new PeWriteError(`section ${s.name} does not fit in a 4 GiB PE image`);
    const h = Buffer.alloc(SECTION_HEADER_SIZE);
    nameBytes.copy(h, 0);
    h.writeUInt32LE(vsize, 8);
    h.writeUInt32LE(va, 12);
    h.writeUInt32LE(rawSize, 16);
    h.writeUInt32LE(rawPtr, 20);
    h.writeUInt32LE(s.characteristics >>> 0, 36);
    h.copy(head, offset);
    if (rawPtr > length) tail.push(Buffer.alloc(rawPtr - length));
    tail.push(s.data);
    if (rawSize > vsize) tail.push(Buffer.alloc(rawSize - vsize));
    length = rawPtr + rawSize;
    numberOfSections++;
    lastHeader = offset;
    lastVa = va;
    lastVsize = vsize;
    initData += vsize;
    if (initData > 0xffffffff) throw new PeWriteError('SizeOfInitializedData overflows 32 bits');
  }
  head.writeUInt16LE(numberOfSections, pe.peOffset + 4 + 2);
  head.writeUInt32LE(initData, opt + OPT_SIZE_OF_INITIALIZED_DATA);
  if (opts.clearDllCharacteristics) {
    head.writeUInt16LE(head.readUInt16LE(opt + OPT_DLL_CHARACTERISTICS) & ~opts.clearDllCharacteristics & 0xffff, opt + OPT_DLL_CHARACTERISTICS);
  }
  const sizeOfImage = roundUp(lastVa + lastVsize, sa);
  if (sizeOfImage > 0xffffffff) throw new PeWriteError('SizeOfImage overflows 32 bits');
  head.writeUInt32LE(sizeOfImage, opt + OPT_SIZE_OF_IMAGE);
  head.writeUInt32LE(0, pe.checksumOffset);
  const out = tail.length === 0 ? head : Buffer.concat([head, ...tail], length);
  if (opts.checksum === 'compute') out.writeUInt32LE(peChecksum(out, pe.checksumOffset), pe.checksumOffset);
  return out;
}
