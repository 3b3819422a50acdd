/**
 * EFI_SIGNATURE_LIST (UEFI 2.10 §32.4.1): the payload of the PK, KEK, db and dbx variables.
 *
 *   EFI_SIGNATURE_LIST { EFI_GUID SignatureType; UINT32 SignatureListSize; UINT32 SignatureHeaderSize;
 *                        UINT32 SignatureSize; UINT8 SignatureHeader[SignatureHeaderSize];
 *                        EFI_SIGNATURE_DATA Signatures[...] }           (all little-endian)
 *   EFI_SIGNATURE_DATA { EFI_GUID SignatureOwner; UINT8 SignatureData[SignatureSize - 16] }
 *
 * A signature database is a concatenation of lists. Within one list every entry has the same size, so an
 * X.509 list normally holds a single certificate (what efitools' `cert-to-efi-sig-list` writes); SHA-256
 * lists hold any number of 32-byte hashes. The writer is byte-identical to cert-to-efi-sig-list; the
 * reader checks every size against the buffer and the format and throws FormatError with the offset.
 */
import { randomUUID } from 'node:crypto';
import { BootcfsError, FormatError } from '../errors.js';

/** EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072 */
export const EFI_CERT_X509_GUID = 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072';
/** EFI_CERT_SHA256_GUID c1c41626-504c-4092-aca9-41f936934328 */
export const EFI_CERT_SHA256_GUID = 'c1c41626-504c-4092-aca9-41f936934328';
/** EFI_GLOBAL_VARIABLE (vendor GUID of PK and KEK) */
export const EFI_GLOBAL_VARIABLE_GUID = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
/** EFI_IMAGE_SECURITY_DATABASE_GUID (vendor GUID of db and dbx) */
export const EFI_IMAGE_SECURITY_DATABASE_GUID = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const ESL_HEADER_SIZE = 28;

export function isGuid(s: string): boolean {
  return GUID_RE.test(s);
}

/** A random (version 4) GUID, lower case. */
export function randomGuid(): string {
  return randomUUID();
}

/** EFI_GUID bytes: Data1 (u32), Data2 and Data3 (u16) little-endian, Data4 as 8 bytes in order. */
export function encodeGuid(guid: string): Buffer {
  if (!GUID_RE.test(guid)) throw new BootcfsError('EINVAL', `invalid GUID '${guid}' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`);
  const hex = guid.replace(/-/g, '');
  const b = Buffer.from(hex, 'hex');
  const out = Buffer.alloc(16);
  out.writeUInt32LE(b.readUInt32BE(0), 0);
  out.writeUInt16LE(b.readUInt16BE(4), 4);
  out.writeUInt16LE(b.readUInt16BE(6), 6);
  b.copy(out, 8, 8, 16);
  return out;
}

/** Inverse of encodeGuid (lower-case text form). */
export function decodeGuid(b: Uint8Array, offset = 0): string {
  if (offset + 16 > b.length) throw new FormatError('truncated GUID', offset);
  const v = Buffer.from(b.buffer, b.byteOffset + offset, 16);
  const h = (n: number, w: number) => n.toString(16).padStart(w, '0');
  const d4 = v.subarray(8, 16).toString('hex');
  return `${h(v.readUInt32LE(0), 8)}-${h(v.readUInt16LE(4), 4)}-${h(v.readUInt16LE(6), 4)}-${d4.slice(0, 4)}-${d4.slice(4)}`;
}

export interface SignatureEntry {
  /** SignatureOwner GUID */
  owner: string;
  /** SignatureData: a DER certificate for X.509 lists, a 32-byte digest for SHA-256 lists */
  data: Buffer;
}

export interface SignatureList {
  /** SignatureType GUID (EFI_CERT_X509_GUID, EFI_CERT_SHA256_GUID, ...) */
  type: string;
  /** SignatureHeader bytes (empty for the standard types) */
  header: Buffer;
  entries: SignatureEntry[];
}

/** Encode one EFI_SIGNATURE_LIST. All entries must have the same data size (the format has one SignatureSize). */
export function encodeSignatureList(list: SignatureList): Buffer {
  if (list.entries.length === 0) throw new BootcfsError('EINVAL', 'a signature list needs at least one entry');
  const dataSize = list.entries[0]!.data.length;
  for (const e of list.entries) {
    if (e.data.length !== dataSize) {
      throw new BootcfsError('EINVAL', 'all entries of one EFI_SIGNATURE_LIST must have the same size (use one list per certificate)');
    }
  }
  if (list.type.toLowerCase() === EFI_CERT_SHA256_GUID && dataSize !== 32) {
    throw new BootcfsError('EINVAL', `EFI_CERT_SHA256 entries are 32 bytes, got ${dataSize}`);
  }
  if (dataSize === 0) throw new BootcfsError('EINVAL', 'empty signature data');
  const sigSize = 16 + dataSize;
  const total = ESL_HEADER_SIZE + list.header.length + sigSize * list.entries.length;
  if (total > 0xffffffff) throw new BootcfsError('ELIMIT', 'signature list larger than 4 GiB');
  const out = Buffer.alloc(total);
  encodeGuid(list.type).copy(out, 0);
  out.writeUInt32LE(total, 16);
  out.writeUInt32LE(list.header.length, 20);
  out.writeUInt32LE(sigSize, 24);
  list.header.copy(out, ESL_HEADER_SIZE);
  let off = ESL_HEADER_SIZE + list.header.length;
  for (const e of list.entries) {
    encodeGuid(e.owner).copy(out, off);
    e.data.copy(out, off + 16);
    off += sigSize;
  }
  return out;
}

/** Encode a signature database: the concatenation of the lists. */
export function encodeSignatureDatabase(lists: SignatureList[]): Buffer {
  return Buffer.concat(lists.map(encodeSignatureList));
}

/** The ESL `cert-to-efi-sig-list -g OWNER cert.pem` writes: one X.509 list holding one certificate (DER). */
export function x509SignatureList(certDer: Uint8Array, owner: string): Buffer {
  return encodeSignatureList({ type: EFI_CERT_X509_GUID, header: Buffer.alloc(0), entries: [{ owner, data: Buffer.from(certDer) }] });
}

/** One EFI_CERT_SHA256 list with the given 32-byte digests (e.g. Authenticode hashes for db/dbx). */
export function sha256SignatureList(digests: Uint8Array[], owner: string): Buffer {
  return encodeSignatureList({
    type: EFI_CERT_SHA256_GUID,
    header: Buffer.alloc(0),
    entries: digests.map((d) => ({ owner, data: Buffer.from(d) })),
  });
}

/**
 * Parse a signature database (zero or more concatenated lists). Every size is checked against the buffer:
 * SignatureListSize ≥ 28 + SignatureHeaderSize, SignatureSize > 16, the entries exactly fill the list, and
 * known types have their fixed entry size. An empty buffer is an empty database.
 */
export function parseSignatureDatabase(buf: Uint8Array): SignatureList[] {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const lists: SignatureList[] = [];
  let off = 0;
  while (off < b.length) {
    if (b.length - off < ESL_HEADER_SIZE) throw new FormatError('truncated EFI_SIGNATURE_LIST header', off);
    const type = decodeGuid(b, off);
    const listSize = b.readUInt32LE(off + 16);
    const headerSize = b.readUInt32LE(off + 20);
    const sigSize = b.readUInt32LE(off + 24);
    if (listSize < ESL_HEADER_SIZE) throw new FormatError(`SignatureListSize ${listSize} smaller than the list header`, off + 16);
    if (listSize > b.length - off) throw new FormatError(`SignatureListSize ${listSize} runs past the end of the data`, off + 16);
    if (headerSize > listSize - ESL_HEADER_SIZE) throw new FormatError(`SignatureHeaderSize ${headerSize} exceeds the list`, off + 20);
    if (sigSize <= 16) throw new FormatError(`SignatureSize ${sigSize} too small (must exceed the 16-byte owner GUID)`, off + 24);
    const body = listSize - ESL_HEADER_SIZE - headerSize;
    if (body === 0 || body % sigSize !== 0) {
      throw new FormatError(`signature list body of ${body} bytes is not a positive multiple of SignatureSize ${sigSize}`, off + 24);
    }
    if (type === EFI_CERT_SHA256_GUID && sigSize !== 48) throw new FormatError(`EFI_CERT_SHA256 list with SignatureSize ${sigSize} (expected 48)`, off + 24);
    const header = Buffer.from(b.subarray(off + ESL_HEADER_SIZE, off + ESL_HEADER_SIZE + headerSize));
    const entries: SignatureEntry[] = [];
    for (let p = off + ESL_HEADER_SIZE + headerSize; p < off + listSize; p += sigSize) {
      entries.push({ owner: decodeGuid(b, p), data: Buffer.from(b.subarray(p + 16, p + sigSize)) });
    }
    lists.push({ type, header, entries });
    off += listSize;
  }
  return lists;
}

/** All certificates (DER) of the X.509 lists of a signature database, in order. */
export function certificatesOf(db: SignatureList[]): Array<{ owner: string; der: Buffer }> {
  const out: Array<{ owner: string; der: Buffer }> = [];
  for (const l of db) if (l.type === EFI_CERT_X509_GUID) for (const e of l.entries) out.push({ owner: e.owner, der: e.data });
  return out;
}
