/**
 * Signed updates of time-based authenticated UEFI variables (UEFI 2.10 §8.2.2): the `.auth` files that
 * `SetVariable()` takes for PK, KEK, db and dbx, as efitools' `sign-efi-sig-list` writes them.
 *
 *   .auth = EFI_VARIABLE_AUTHENTICATION_2 || Data
 *   EFI_VARIABLE_AUTHENTICATION_2 { EFI_TIME TimeStamp; WIN_CERTIFICATE_UEFI_GUID AuthInfo }
 *   EFI_TIME (16 bytes) { u16 Year; u8 Month, Day, Hour, Minute, Second, Pad1; u32 Nanosecond;
 *                         i16 TimeZone; u8 Daylight, Pad2 }
 *   WIN_CERTIFICATE_UEFI_GUID { u32 dwLength; u16 wRevision = 0x0200; u16 wCertificateType = 0x0EF1
 *                               (WIN_CERT_TYPE_EFI_GUID); EFI_GUID CertType = EFI_CERT_TYPE_PKCS7_GUID;
 *                               u8 CertData[dwLength - 24] }
 *
 * CertData is a DER PKCS#7 SignedData (not wrapped in a ContentInfo), detached, SHA-256, with the signer's
 * certificate and no authenticated attributes, over
 *   VariableName (UTF-16LE, no NUL) || VendorGuid || Attributes (u32) || TimeStamp || Data.
 * Without signed attributes the RSA PKCS#1 v1.5 signature is deterministic, so for the same key, certificate,
 * timestamp and payload the output is byte-identical to efitools 1.9.2's.
 */
import { createHash, sign, verify as cryptoVerify, X509Certificate, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { BootcfsError, FormatError } from '../errors.js';
import { EFI_GLOBAL_VARIABLE_GUID, EFI_IMAGE_SECURITY_DATABASE_GUID, decodeGuid, encodeGuid, isGuid } from './esl.js';
import { OID_RSA_ENCRYPTION, OID_SHA256, certificateDer, parseCertificate, privateKeyOf } from './x509.js';

/** EFI_CERT_TYPE_PKCS7_GUID 4aafd29d-68df-49ee-8aa9-347d375665a7 */
export const EFI_CERT_TYPE_PKCS7_GUID = '4aafd29d-68df-49ee-8aa9-347d375665a7';
export const WIN_CERT_TYPE_EFI_GUID = 0x0ef1;
export const WIN_CERT_REVISION = 0x0200;

export const EFI_VARIABLE_NON_VOLATILE = 0x1;
export const EFI_VARIABLE_BOOTSERVICE_ACCESS = 0x2;
export const EFI_VARIABLE_RUNTIME_ACCESS = 0x4;
export const EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20;
export const EFI_VARIABLE_APPEND_WRITE = 0x40;
/** NV | BS | RT | TIME_BASED_AUTHENTICATED_WRITE_ACCESS: what PK/KEK/db/dbx are written with. */
export const SECURE_BOOT_VARIABLE_ATTRIBUTES =
  EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS | EFI_VARIABLE_RUNTIME_ACCESS | EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS;

const OID_PKCS7_DATA = '1.2.840.113549.1.7.1';
const EFI_TIME_SIZE = 16;
const WIN_CERT_HEADER_SIZE = 24; // dwLength + wRevision + wCertificateType + CertType GUID
export const AUTH2_HEADER_SIZE = EFI_TIME_SIZE + WIN_CERT_HEADER_SIZE;

export type SecureBootVariable = 'PK' | 'KEK' | 'db' | 'dbx';

/** The vendor GUID of a Secure Boot variable (EFI_GLOBAL_VARIABLE for PK/KEK, the image security db GUID for db/dbx). */
export function vendorGuidOf(name: string): string {
  if (name === 'PK' || name === 'KEK') return EFI_GLOBAL_VARIABLE_GUID;
  if (name === 'db' || name === 'dbx') return EFI_IMAGE_SECURITY_DATABASE_GUID;
  throw new BootcfsError('EINVAL', `'${name}' is not a Secure Boot key variable (PK, KEK, db, dbx); pass vendorGuid`);
}

export interface EfiTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  nanosecond: number;
  timeZone: number;
  daylight: number;
}

/** EFI_TIME of a Date, in UTC, nanoseconds 0 (what sign-efi-sig-list writes). */
export function efiTimeOf(d: Date): EfiTime {
  return {
    year: d.getUTCFullYear(),
    month: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    hour: d.getUTCHours(),
    minute: d.getUTCMinutes(),
    second: d.getUTCSeconds(),
    nanosecond: 0,
    timeZone: 0,
    daylight: 0,
  };
}

export function encodeEfiTime(t: EfiTime): Buffer {
  const b = Buffer.alloc(EFI_TIME_SIZE);
  b.writeUInt16LE(t.year, 0);
  b.writeUInt8(t.month, 2);
  b.writeUInt8(t.day, 3);
  b.writeUInt8(t.hour, 4);
  b.writeUInt8(t.minute, 5);
  b.writeUInt8(t.second, 6);
  b.writeUInt32LE(t.nanosecond, 8);
  b.writeInt16LE(t.timeZone, 12);
  b.writeUInt8(t.daylight, 14);
  return b;
}

export function decodeEfiTime(b: Uint8Array, off = 0): EfiTime {
  if (off + EFI_TIME_SIZE > b.length) throw new FormatError('truncated EFI_TIME', off);
  const v = Buffer.from(b.buffer, b.byteOffset + off, EFI_TIME_SIZE);
  return {
    year: v.readUInt16LE(0),
    month: v[2]!,
    day: v[3]!,
    hour: v[4]!,
    minute: v[5]!,
    second: v[6]!,
    nanosecond: v.readUInt32LE(8),
    timeZone: v.readInt16LE(12),
    daylight: v[14]!,
  };
}

/** The bytes the PKCS#7 signature covers: VariableName (UTF-16LE, no NUL) || VendorGuid || Attributes || TimeStamp || Data. */
export function authenticatedPayload(name: string, vendorGuid: string, attributes: number, timestamp: EfiTime, data: Uint8Array): Buffer {
  const attr = Buffer.alloc(4);
  attr.writeUInt32LE(attributes >>> 0, 0);
  return Buffer.concat([Buffer.from(name, 'utf16le'), encodeGuid(vendorGuid), attr, encodeEfiTime(timestamp), Buffer.from(data)]);
}

function ab(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

function algorithm(oid: string): pkijs.AlgorithmIdentifier {
  return new pkijs.AlgorithmIdentifier({ algorithmId: oid, algorithmParams: new asn1js.Null() });
}

/**
 * DER PKCS#7 SignedData (version 1), detached, SHA-256/RSA, signer certificate included, no authenticated
 * attributes — the form efitools' PKCS7_sign(..., PKCS7_BINARY|PKCS7_DETACHED|PKCS7_NOATTR) produces.
 */
export function pkcs7DetachedSignature(content: Uint8Array, key: KeyObject, certDer: Uint8Array): Buffer {
  const cert = parseCertificate(certDer);
  const signature = sign('sha256', content, key);
  const signerInfo = new pkijs.SignerInfo({
    version: 1,
    sid: new pkijs.IssuerAndSerialNumber({ issuer: cert.issuer, serialNumber: cert.serialNumber }),
    digestAlgorithm: algorithm(OID_SHA256),
    signatureAlgorithm: algorithm(OID_RSA_ENCRYPTION),
    signature: new asn1js.OctetString({ valueHex: ab(signature) }),
  });
  const signed = new pkijs.SignedData({
    version: 1,
    digestAlgorithms: [algorithm(OID_SHA256)],
    encapContentInfo: new pkijs.EncapsulatedContentInfo({ eContentType: OID_PKCS7_DATA }),
    certificates: [cert],
    signerInfos: [signerInfo],
  });
  return Buffer.from(signed.toSchema(true).toBER(false));
}

export interface SignVariableOptions {
  /** Variable name (PK, KEK, db, dbx or any other name with `vendorGuid`). */
  name: string;
  /** The new variable content (an EFI_SIGNATURE_LIST database for the Secure Boot variables). */
  data: Uint8Array;
  /** Signing key (PEM text, DER bytes or KeyObject) and its certificate (PEM or DER). */
  key: KeyObject | string | Uint8Array;
  cert: Uint8Array | string;
  /** Timestamp of the update (default now). Must be later than the variable's current one (unless appending). */
  timestamp?: Date;
  /** Vendor GUID; defaults to the standard one for PK/KEK/db/dbx. */
  vendorGuid?: string;
  /** Attributes (default NV|BS|RT|TIME_BASED_AUTHENTICATED_WRITE_ACCESS); `append` adds APPEND_WRITE. */
  attributes?: number;
  append?: boolean;
}

/** Build a complete `.auth` file (EFI_VARIABLE_AUTHENTICATION_2 followed by the data). */
export function signVariableUpdate(opts: SignVariableOptions): Buffer {
  const vendorGuid = opts.vendorGuid ?? vendorGuidOf(opts.name);
  if (!isGuid(vendorGuid)) throw new BootcfsError('EINVAL', `invalid vendor GUID '${vendorGuid}'`);
  if (opts.name.length === 0) throw new BootcfsError('EINVAL', 'empty variable name');
  let attributes = opts.attributes ?? SECURE_BOOT_VARIABLE_ATTRIBUTES;
  if (opts.append) attributes |= EFI_VARIABLE_APPEND_WRITE;
  const ts = efiTimeOf(opts.timestamp ?? new Date());
  const key = privateKeyOf(opts.key);
  const certDer = certificateDer(opts.cert);
  const x = new X509Certificate(certDer);
  if (!x.checkPrivateKey(key)) throw new BootcfsError('EINVAL', 'the signing key does not match the certificate');
  const payload = authenticatedPayload(opts.name, vendorGuid, attributes, ts, opts.data);
  const sig = pkcs7DetachedSignature(payload, key, certDer);
  const hdr = Buffer.alloc(AUTH2_HEADER_SIZE);
  encodeEfiTime(ts).copy(hdr, 0);
  hdr.writeUInt32LE(WIN_CERT_HEADER_SIZE + sig.length, 16);
  hdr.writeUInt16LE(WIN_CERT_REVISION, 20);
  hdr.writeUInt16LE(WIN_CERT_TYPE_EFI_GUID, 22);
  encodeGuid(EFI_CERT_TYPE_PKCS7_GUID).copy(hdr, 24);
  return Buffer.concat([hdr, sig, Buffer.from(opts.data)]);
}

export interface AuthenticatedVariable {
  timestamp: EfiTime;
  /** WIN_CERTIFICATE_UEFI_GUID.CertType (EFI_CERT_TYPE_PKCS7_GUID for a valid update) */
  certType: string;
  /** CertData: DER PKCS#7 SignedData */
  signedData: Buffer;
  /** The variable content that follows the header */
  data: Buffer;
}

/** Parse a `.auth` file; every length is checked against the buffer. */
export function parseAuthenticatedVariable(buf: Uint8Array): AuthenticatedVariable {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < AUTH2_HEADER_SIZE) throw new FormatError('truncated EFI_VARIABLE_AUTHENTICATION_2 header', 0);
  const timestamp = decodeEfiTime(b, 0);
  const dwLength = b.readUInt32LE(16);
  const revision = b.readUInt16LE(20);
  const certificateType = b.readUInt16LE(22);
  if (revision !== WIN_CERT_REVISION) throw new FormatError(`WIN_CERTIFICATE wRevision 0x${revision.toString(16)} (expected 0x200)`, 20);
  if (certificateType !== WIN_CERT_TYPE_EFI_GUID) {
    throw new FormatError(`WIN_CERTIFICATE wCertificateType 0x${certificateType.toString(16)} (expected 0xef1)`, 22);
  }
  if (dwLength < WIN_CERT_HEADER_SIZE || dwLength > b.length - EFI_TIME_SIZE) {
    throw new FormatError(`WIN_CERTIFICATE dwLength ${dwLength} out of range`, 16);
  }
  const certType = decodeGuid(b, 24);
  return {
    timestamp,
    certType,
    signedData: Buffer.from(b.subarray(AUTH2_HEADER_SIZE, EFI_TIME_SIZE + dwLength)),
    data: Buffer.from(b.subarray(EFI_TIME_SIZE + dwLength)),
  };
}

/**
 * Check an `.auth` file the way firmware does for a time-based authenticated write: the PKCS#7 signer is
 * `trustedCertDer` (matched by issuer and serial), the digest algorithm is SHA-256 and the RSA signature over
 * the authenticated payload verifies with its public key. Returns false on a bad signature; throws on
 * malformed input.
 */
export function verifyVariableUpdate(auth: Uint8Array, name: string, trustedCert: Uint8Array | string, opts: { vendorGuid?: string; attributes?: number } = {}): boolean {
  const v = parseAuthenticatedVariable(auth);
  if (v.certType !== EFI_CERT_TYPE_PKCS7_GUID) return false;
  let sd: pkijs.SignedData;
  try {
    const asn = asn1js.fromBER(ab(v.signedData));
    if (asn.offset === -1) throw new Error(asn.result.error);
    sd = new pkijs.SignedData({ schema: asn.result });
  } catch (e) {
    throw new FormatError(`CertData is not a PKCS#7 SignedData: ${(e as Error).message}`, AUTH2_HEADER_SIZE);
  }
  const certDer = certificateDer(trustedCert);
  const trusted = parseCertificate(certDer);
  const payload = authenticatedPayload(name, opts.vendorGuid ?? vendorGuidOf(name), opts.attributes ?? SECURE_BOOT_VARIABLE_ATTRIBUTES, v.timestamp, v.data);
  for (const si of sd.signerInfos) {
    if (!(si.sid instanceof pkijs.IssuerAndSerialNumber)) continue;
    if (!si.sid.serialNumber.isEqual(trusted.serialNumber) || !si.sid.issuer.isEqual(trusted.issuer)) continue;
    if (si.digestAlgorithm.algorithmId !== OID_SHA256) continue;
    let signed: Buffer = payload;
    if (si.signedAttrs) {
      // messageDigest must match the content; the signature then covers the DER SET OF attributes
      const md = si.signedAttrs.attributes.find((a) => a.type === '1.2.840.113549.1.9.4');
      const want = createHash('sha256').update(payload).digest();
      const got = md?.values[0] instanceof asn1js.OctetString ? Buffer.from(md.values[0].valueBlock.valueHexView) : undefined;
      if (!got || !got.equals(want)) continue;
      signed = Buffer.from(si.signedAttrs.encodedValue);
      signed[0] = 0x31;
    }
    const ok = cryptoVerify('sha256', signed, new X509Certificate(certDer).publicKey, Buffer.from(si.signature.valueBlock.valueHexView));
    if (ok) return true;
  }
  return false;
}
