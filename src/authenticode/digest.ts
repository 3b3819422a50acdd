/**
 * The Authenticode PE image hash (Microsoft "Windows Authenticode Portable Executable Signature Format",
 * as UEFI firmware — EDK2's DxeImageVerificationLib — and sbsign compute it):
 *
 *   1. the headers [0, SizeOfHeaders) without the 4-byte CheckSum field and the 8-byte certificate-table
 *      data-directory entry;
 *   2. every section with SizeOfRawData > 0, in PointerToRawData order (raw size, not VirtualSize);
 *   3. the rest of the file: from offset SUM_OF_BYTES_HASHED (SizeOfHeaders + the raw sizes) up to the
 *      certificate table (or the end of an unsigned file);
 *   4. for an unsigned file whose length is not a multiple of 8: the zero bytes that pad it to 8 — signing
 *      (sbsign, osslsigncode, and `signPe`) pads the file there so the certificate table is 8-aligned, so this
 *      is the digest the file carries once signed.
 *
 * A signed file's certificate table must be the last thing in the file (every signer puts it there; data
 * after it would be covered by no signature).
 */
import { createHash } from 'node:crypto';
import { FormatError } from '../errors.js';
import { DIR_SECURITY, parsePe, type PeImage } from '../pe/pe.js';

export type AuthenticodeHash = 'sha1' | 'sha256' | 'sha384' | 'sha512';
export const AUTHENTICODE_HASHES: readonly AuthenticodeHash[] = ['sha1', 'sha256', 'sha384', 'sha512'];

export function isAuthenticodeHash(v: string): v is AuthenticodeHash {
  return (AUTHENTICODE_HASHES as readonly string[]).includes(v);
}

/** Where the certificate table and the signed data of a PE file are. */
export interface AuthenticodeLayout {
  pe: PeImage;
  /** File offset of the certificate-table data-directory entry, or undefined if the image has fewer than 5 directories. */
  certEntryOffset: number | undefined;
  /** The certificate table (WIN_CERTIFICATE list) if the file is signed. */
  certTable: { offset: number; size: number } | undefined;
  /** End of the non-signature data: the certificate table's offset, or the file length when unsigned. */
  dataEnd: number;
  /** Byte ranges [start, end) that are hashed, in order (the zero padding is not among them). */
  regions: Array<[number, number]>;
  /** Zero bytes hashed after the regions (unsigned files whose length is not a multiple of 8). */
  padding: number;
}

export function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Computes which bytes of `buf` the Authenticode digest covers. Throws FormatError on inconsistent images. */
export function authenticodeLayout(buf: Buffer, pe: PeImage = parsePe(buf)): AuthenticodeLayout {
  const certDir = pe.dataDirectories[DIR_SECURITY];
  const certEntryOffset = certDir?.entryOffset;
  let certTable: AuthenticodeLayout['certTable'];
  if (certDir !== undefined && certDir.size !== 0) {
    if (certDir.address + certDir.size !== buf.length) {
      throw new FormatError(
        `PE: certificate table (${certDir.size} bytes at ${certDir.address}) is not at the end of the file (${buf.length} bytes)`,
        certDir.entryOffset,
      );
    }
    certTable = { offset: certDir.address, size: certDir.size };
  }
  const dataEnd = certTable ? certTable.offset : buf.length;
  const { checksumOffset, sizeOfHeaders } = pe;
  if (sizeOfHeaders > dataEnd) throw new FormatError(`PE: SizeOfHeaders (${sizeOfHeaders}) extends past the image data (${dataEnd} bytes)`, pe.optionalHeaderOffset + 60);
  const headerEnd = pe.sectionTableOffset + pe.numberOfSections * 40;
  if (sizeOfHeaders < headerEnd) throw new FormatError(`PE: SizeOfHeaders (${sizeOfHeaders}) is smaller than the headers (${headerEnd} bytes)`, pe.optionalHeaderOffset + 60);
  const regions: Array<[number, number]> = [[0, checksumOffset]];
  if (certEntryOffset !== undefined) {
    regions.push([checksumOffset + 4, certEntryOffset], [certEntryOffset + 8, sizeOfHeaders]);
  } else {
    regions.push([checksumOffset + 4, sizeOfHeaders]);
  }
  let hashed = sizeOfHeaders;
  const sections = pe.sections.filter((s) => s.sizeOfRawData > 0).sort((a, b) => a.pointerToRawData - b.pointerToRawData);
  for (const s of sections) {
    const end = s.pointerToRawData + s.sizeOfRawData;
    if (end > dataEnd) throw new FormatError(`PE: section '${s.name.replace(/[^\x20-\x7e]/g, '?')}' extends into the certificate table`, s.headerOffset + 16);
    regions.push([s.pointerToRawData, end]);
    hashed += s.sizeOfRawData;
  }
  if (hashed > dataEnd) {
    throw new FormatError(`PE: headers and sections add up to ${hashed} bytes, more than the ${dataEnd} bytes of image data (overlapping sections)`, pe.sectionTableOffset);
  }
  if (hashed < dataEnd) regions.push([hashed, dataEnd]);
  const padding = certTable ? 0 : align8(dataEnd) - dataEnd;
  return { pe, certEntryOffset, certTable, dataEnd, regions, padding };
}

/** The Authenticode digest of a PE image (see the module comment for exactly what is hashed). */
export function authenticodeDigest(pe: Buffer, hash: AuthenticodeHash = 'sha256'): Buffer {
  return digestOfLayout(pe, authenticodeLayout(pe), hash);
}

export function digestOfLayout(buf: Buffer, layout: AuthenticodeLayout, hash: AuthenticodeHash): Buffer {
  const h = createHash(hash);
  for (const [start, end] of layout.regions) h.update(buf.subarray(start, end));
  if (layout.padding > 0) h.update(Buffer.alloc(layout.padding));
  return h.digest();
}
