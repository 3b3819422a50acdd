/**
 * Self-signed X.509 v3 certificates for the Secure Boot key hierarchy (PK, KEK, db), built with pkijs/asn1js
 * from a Node KeyObject and signed with sha256WithRSAEncryption through Node's crypto.
 *
 * Extensions: subjectKeyIdentifier (SHA-1 of the subjectPublicKey bits, RFC 5280 §4.2.1.2 method 1, as
 * OpenSSL computes it), authorityKeyIdentifier (the same key id: the certificate is self-signed),
 * basicConstraints (critical; CA:TRUE for the PK and KEK, which certify the next level of the hierarchy,
 * CA:FALSE for a db signing certificate) and keyUsage (critical).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { BootcfsError } from '../errors.js';

export const OID_SHA256_WITH_RSA = '1.2.840.113549.1.1.11';
export const OID_RSA_ENCRYPTION = '1.2.840.113549.1.1.1';
export const OID_SHA256 = '2.16.840.1.101.3.4.2.1';
const OID_COMMON_NAME = '2.5.4.3';
const OID_SUBJECT_KEY_IDENTIFIER = '2.5.29.14';
const OID_KEY_USAGE = '2.5.29.15';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_AUTHORITY_KEY_IDENTIFIER = '2.5.29.35';

export type RsaKeyType = 'rsa2048' | 'rsa4096';

export function isRsaKeyType(v: string): v is RsaKeyType {
  return v === 'rsa2048' || v === 'rsa4096';
}

/** A fresh RSA key pair (public exponent 65537). */
export function generateRsaKey(keyType: RsaKeyType = 'rsa2048'): KeyObject {
  const modulusLength = keyType === 'rsa4096' ? 4096 : 2048;
  return generateKeyPairSync('rsa', { modulusLength, publicExponent: 0x10001 }).privateKey;
}

export interface SelfSignedCertificateOptions {
  /** Subject and issuer commonName. */
  commonName: string;
  /** Validity in days from `notBefore` (default 3650). */
  days?: number;
  /** Start of validity (default: now, truncated to the second). */
  notBefore?: Date;
  /** CA:TRUE in basicConstraints (and keyCertSign in keyUsage): for the PK and the KEK. */
  ca: boolean;
  /** Serial number bytes (default: 16 random bytes, top bit cleared so the INTEGER is positive). */
  serial?: Uint8Array;
}

export interface GeneratedCertificate {
  der: Buffer;
  pem: string;
}

function ab(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

function rsaAlgorithm(oid: string): pkijs.AlgorithmIdentifier {
  return new pkijs.AlgorithmIdentifier({ algorithmId: oid, algorithmParams: new asn1js.Null() });
}

function nameWithCommonName(cn: string): pkijs.RelativeDistinguishedNames {
  return new pkijs.RelativeDistinguishedNames({
    typesAndValues: [new pkijs.AttributeTypeAndValue({ type: OID_COMMON_NAME, value: new asn1js.Utf8String({ value: cn }) })],
  });
}

/** DER of a KeyUsage BIT STRING with the given bit numbers set (bit 0 = digitalSignature). */
function keyUsageBits(bits: number[]): asn1js.BitString {
  const max = Math.max(...bits);
  const nbytes = (max >> 3) + 1;
  const bytes = new Uint8Array(nbytes);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  const unused = 7 - (max & 7);
  return new asn1js.BitString({ valueHex: ab(bytes), unusedBits: unused });
}

function extension(oid: string, critical: boolean, value: asn1js.BaseBlock): pkijs.Extension {
  return new pkijs.Extension({ extnID: oid, critical, extnValue: value.toBER(false) });
}

/** PEM armour of DER bytes (64-column base64, like OpenSSL). */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** DER bytes of the first PEM block with `label` (or any label when omitted). */
export function fromPem(pem: string, label?: string): Buffer {
  const re = label
    ? new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`)
    : /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/;
  const m = re.exec(pem);
  if (!m) throw new BootcfsError('EFORMAT', `no PEM ${label ?? ''} block found`.replace('  ', ' '));
  return Buffer.from((label ? m[1] : m[2])!.replace(/\s+/g, ''), 'base64');
}

/** Certificate DER from PEM or DER input. */
export function certificateDer(input: Uint8Array | string): Buffer {
  if (typeof input === 'string') return fromPem(input, 'CERTIFICATE');
  const buf = Buffer.from(input);
  if (buf.subarray(0, 11).toString('latin1') === '-----BEGIN ') return fromPem(buf.toString('latin1'), 'CERTIFICATE');
  return buf;
}

/** The RSA private key a PEM/DER/KeyObject input denotes. */
export function privateKeyOf(key: KeyObject | string | Uint8Array): KeyObject {
  let k: KeyObject;
  if (typeof key === 'string') k = createPrivateKey(key);
  else if (key instanceof Uint8Array) {
    const b = Buffer.from(key);
    k = b.subarray(0, 11).toString('latin1') === '-----BEGIN ' ? createPrivateKey(b.toString('latin1')) : createPrivateKey({ key: b, format: 'der', type: 'pkcs8' });
  } else k = key;
  if (k.asymmetricKeyType !== 'rsa') throw new BootcfsError('EINVAL', `unsupported key type ${k.asymmetricKeyType}: only RSA keys are supported`);
  return k;
}

/** Generate a self-signed certificate for `key` (RSA). */
export function createSelfSignedCertificate(key: KeyObject, opts: SelfSignedCertificateOptions): GeneratedCertificate {
  if (key.type !== 'private' || key.asymmetricKeyType !== 'rsa') {
    throw new BootcfsError('EINVAL', 'a self-signed certificate needs an RSA private key');
  }
  if (opts.commonName.length === 0 || opts.commonName.length > 64) {
    throw new BootcfsError('EINVAL', 'commonName must be 1..64 characters (X.520 ub-common-name)');
  }
  const days = opts.days ?? 3650;
  if (!Number.isInteger(days) || days < 1) throw new BootcfsError('EINVAL', `invalid validity period: ${days} days`);
  const spkiDer = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const spki = pkijs.PublicKeyInfo.fromBER(ab(spkiDer));
  const keyId = createHash('sha1').update(new Uint8Array(spki.subjectPublicKey.valueBlock.valueHexView)).digest();

  let serial = opts.serial ? Buffer.from(opts.serial) : randomBytes(16);
  if (!opts.serial) {
    serial[0] = (serial[0]! & 0x7f) | 0x01; // positive, no leading zero byte needed, never 0
  }
  if (serial.length === 0 || serial.length > 20) throw new BootcfsError('EINVAL', 'serial must be 1..20 bytes');
  if (serial[0]! & 0x80) serial = Buffer.concat([Buffer.of(0), serial]);

  const notBefore = new Date(Math.floor((opts.notBefore ?? new Date()).getTime() / 1000) * 1000);
  const notAfter = new Date(notBefore.getTime() + days * 86_400_000);

  const cert = new pkijs.Certificate();
  cert.version = 2;
  cert.serialNumber = new asn1js.Integer({ valueHex: ab(serial) });
  cert.signature = rsaAlgorithm(OID_SHA256_WITH_RSA);
  cert.signatureAlgorithm = rsaAlgorithm(OID_SHA256_WITH_RSA);
  cert.issuer = nameWithCommonName(opts.commonName);
  cert.subject = nameWithCommonName(opts.commonName);
  cert.notBefore = new pkijs.Time({ type: notBefore.getUTCFullYear() < 2050 ? 0 : 1, value: notBefore });
  cert.notAfter = new pkijs.Time({ type: notAfter.getUTCFullYear() < 2050 ? 0 : 1, value: notAfter });
  cert.subjectPublicKeyInfo = spki;

  const basic = new pkijs.BasicConstraints({ cA: opts.ca });
  // keyUsage bits: 0 digitalSignature, 5 keyCertSign, 6 cRLSign
  const usage = opts.ca ? [0, 5, 6] : [0];
  const aki = new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: ab(keyId) }) });
  cert.extensions = [
    extension(OID_SUBJECT_KEY_IDENTIFIER, false, new asn1js.OctetString({ valueHex: ab(keyId) })),
    extension(OID_AUTHORITY_KEY_IDENTIFIER, false, aki.toSchema()),
    extension(OID_BASIC_CONSTRAINTS, true, basic.toSchema()),
    extension(OID_KEY_USAGE, true, keyUsageBits(usage)),
  ];

  const tbs = Buffer.from(cert.encodeTBS().toBER(false));
  const signature = sign('sha256', tbs, key);
  cert.tbsView = new Uint8Array(tbs);
  cert.signatureValue = new asn1js.BitString({ valueHex: ab(signature) });
  const der = Buffer.from(cert.toSchema(true).toBER(false));
  // Self-check: Node's X.509 parser must accept it and the self-signature must verify.
  const x = new X509Certificate(der);
  if (!x.verify(x.publicKey)) throw new BootcfsError('EINTERNAL', 'generated certificate does not verify');
  return { der, pem: toPem('CERTIFICATE', der) };
}

/** Parse a DER certificate with pkijs (for its issuer and serial number); malformed input is a FormatError-like EFORMAT. */
export function parseCertificate(der: Uint8Array): pkijs.Certificate {
  try {
    return pkijs.Certificate.fromBER(ab(der));
  } catch (e) {
    throw new BootcfsError('EFORMAT', `not a DER X.509 certificate: ${(e as Error).message}`);
  }
}
