/**
 * Authenticode signing of PE images (UEFI Secure Boot): a PKCS#7 SignedData whose content is an
 * SpcIndirectDataContent carrying the image digest, appended as a WIN_CERTIFICATE to the 8-byte-aligned
 * image, with the certificate-table directory entry and the PE checksum updated — laid out as sbsign does.
 *
 * The default signed attributes are the ones sbsign (OpenSSL's PKCS7_sign) writes: contentType,
 * signingTime, messageDigest and OpenSSL's default SMIMECapabilities. With the same key, certificate and
 * signing time, RSA signatures (PKCS#1 v1.5, deterministic) make the output byte-identical to sbsign's.
 */
import { spawn } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey, createPublicKey, privateEncrypt, verify as cryptoVerify, constants, type KeyObject } from 'node:crypto';
import { BootcfsError, FormatError } from '../errors.js';
import { findSection, parsePe, peChecksum } from '../pe/pe.js';
import { align8, authenticodeDigest, authenticodeLayout, type AuthenticodeHash } from './digest.js';
import { explicit, expectTag, integer, nullValue, octets, oid, parseDer, seq, setOf, time, tlv } from './der.js';
import { ecdsaKey } from './ecdsa.js';

export const OID = {
  signedData: '1.2.840.113549.1.7.2',
  spcIndirectData: '1.3.6.1.4.1.311.2.1.4',
  spcPeImageData: '1.3.6.1.4.1.311.2.1.15',
  spcSpOpusInfo: '1.3.6.1.4.1.311.2.1.12',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingTime: '1.2.840.113549.1.9.5',
  smimeCapabilities: '1.2.840.113549.1.9.15',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecPublicKey: '1.2.840.10045.2.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
} as const;

export const HASH_OID: Record<AuthenticodeHash, string> = {
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
};

export const WIN_CERT_REVISION_2_0 = 0x0200;
export const WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002;

/** A signing request for something that must not be signed, or a signer that failed. */
export class SigningError extends BootcfsError {
  constructor(message: string, code: 'EINVAL' | 'EIO' = 'EINVAL') {
    super(code, message);
    this.name = 'SigningError';
  }
}

/** Refusal to sign a bare Linux kernel (see `SignOptions.allowBareKernel`). */
export class BareKernelError extends SigningError {
  constructor() {
    super(
      'refusing to sign a bare Linux kernel (bzImage without a .linux section): under Secure Boot a db-signed kernel ' +
        'boots with any initrd and command line, which bypasses the composefs seal. Sign the UKI instead ' +
        '(or pass allowBareKernel / --allow-bare-kernel if you really mean it)',
    );
    this.name = 'BareKernelError';
  }
}

export interface Signer {
  /** DER certificates, the signer's first; all are embedded in the signature. */
  certificates: Buffer[];
  /** Signs the SHA-256 digest of the DER signed attributes; returns the raw signature (PKCS#1 v1.5, or DER ECDSA). */
  sign(tbsDigest: Buffer): Promise<Buffer>;
  keyAlgorithm: 'rsa' | 'ecdsa';
}

export interface SignOptions {
  /** Sign a bzImage that is not a UKI (default false: BareKernelError). */
  allowBareKernel?: boolean;
  /** An already-signed input: replace its signatures (default) or append one more WIN_CERTIFICATE (sbsign 0.9.4). */
  existingSignatures?: 'replace' | 'append';
  /** signingTime attribute: default now; null leaves the attribute out (reproducible output). */
  signingTime?: Date | null;
  /** 'sbsign' (default): contentType, signingTime, messageDigest, SMIMECapabilities as OpenSSL writes them;
   * 'minimal': contentType, SpcSpOpusInfo (empty, as osslsigncode writes it), messageDigest, signingTime. */
  attributes?: 'sbsign' | 'minimal';
}

// OpenSSL's default SMIMECapabilities (PKCS7_sign without PKCS7_NOSMIMECAP): aes-256/192/128-cbc, des-ede3-cbc,
// rc2-cbc 128, rc2-cbc 64, des-cbc, rc2-cbc 40.
function smimeCapabilities(): Buffer {
  const cap = (o: string, bits?: number): Buffer => (bits === undefined ? seq(oid(o)) : seq(oid(o), integer(bits)));
  const rc2 = '1.2.840.113549.3.2';
  return seq(
    cap('2.16.840.1.101.3.4.1.42'), cap('2.16.840.1.101.3.4.1.22'), cap('2.16.840.1.101.3.4.1.2'), cap('1.2.840.113549.3.7'),
    cap(rc2, 128), cap(rc2, 64), cap('1.3.14.3.2.7'), cap(rc2, 40),
  );
}

const attribute = (type: string, value: Buffer): Buffer => seq(oid(type), setOf(value));

/** SpcIndirectDataContent for a PE image digest, as sbsign/signtool write it (file link "<<<Obsolete>>>"). */
export function spcIndirectDataContent(digest: Buffer, hash: AuthenticodeHash = 'sha256'): Buffer {
  const obsolete = Buffer.from('<<<Obsolete>>>', 'utf16le').swap16(); // BMPString is big-endian
  const peImageData = seq(tlv(0x03, Buffer.from([0])), explicit(0, tlv(0xa2, tlv(0x80, obsolete))));
  return seq(seq(oid(OID.spcPeImageData), peImageData), seq(seq(oid(HASH_OID[hash]), nullValue()), octets(digest)));
}

/** Issuer Name and serialNumber INTEGER of a DER certificate, as raw TLVs. */
export function certificateIssuerAndSerial(der: Buffer): { issuer: Buffer; serial: Buffer; spki: Buffer } {
  const cert = expectTag(parseDer(der, 'certificate'), 0x30, 'certificate');
  const tbs = expectTag(cert.children[0], 0x30, 'certificate: tbsCertificate', cert.offset);
  let i = tbs.children[0]?.tag === 0xa0 ? 1 : 0;
  const serial = expectTag(tbs.children[i++], 0x02, 'certificate: serialNumber', tbs.offset);
  i++; // signature algorithm
  const issuer = expectTag(tbs.children[i++], 0x30, 'certificate: issuer', tbs.offset);
  i += 2; // validity, subject
  const spki = expectTag(tbs.children[i], 0x30, 'certificate: subjectPublicKeyInfo', tbs.offset);
  return { issuer: issuer.raw, serial: serial.raw, spki: spki.raw };
}

/** True for a Linux bzImage ("HdrS" boot protocol magic at 0x202) that is not a UKI (no .linux section). */
export function isBareKernel(buf: Buffer): boolean {
  if (buf.length < 0x206 || buf.toString('latin1', 0x202, 0x206) !== 'HdrS') return false;
  return findSection(parsePe(buf), '.linux') === undefined;
}

/** The WIN_CERTIFICATE entries of a certificate table (each entry 8-byte aligned). Throws FormatError on malformed tables. */
export function parseCertificateTable(table: Buffer, tableOffset = 0): Array<{ offset: number; revision: number; type: number; data: Buffer }> {
  const out: Array<{ offset: number; revision: number; type: number; data: Buffer }> = [];
  let off = 0;
  while (off < table.length) {
    if (off + 8 > table.length) throw new FormatError(`WIN_CERTIFICATE header truncated (${table.length - off} bytes left)`, tableOffset + off);
    const length = table.readUInt32LE(off);
    const revision = table.readUInt16LE(off + 4);
    const type = table.readUInt16LE(off + 6);
    if (length < 8) throw new FormatError(`WIN_CERTIFICATE length ${length} is smaller than its header`, tableOffset + off);
    if (off + length > table.length) throw new FormatError(`WIN_CERTIFICATE (${length} bytes) extends past the certificate table (${table.length - off} bytes left)`, tableOffset + off);
    out.push({ offset: tableOffset + off, revision, type, data: table.subarray(off + 8, off + length) });
    off += align8(length);
  }
  if (out.length === 0) throw new FormatError('empty certificate table', tableOffset);
  return out;
}

function readCertificates(pem: string | Buffer, what: string): Buffer[] {
  const text = Buffer.isBuffer(pem) ? pem : Buffer.from(pem);
  if (!text.includes('-----BEGIN')) {
    // a single DER certificate
    return [Buffer.from(new X509Certificate(text).raw)];
  }
  const certs: Buffer[] = [];
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;
  for (let m; (m = re.exec(text.toString('latin1'))); ) {
    try {
      certs.push(Buffer.from(new X509Certificate(m[0]).raw));
    } catch (e) {
      throw new SigningError(`${what}: invalid certificate: ${(e as Error).message}`);
    }
  }
  if (certs.length === 0) throw new SigningError(`${what}: no PEM certificate found`);
  return certs;
}

/** Parses certificates given as PEM (one or more) or a single DER certificate. */
export function parseCertificates(data: string | Buffer, what = 'certificate'): Buffer[] {
  try {
    return readCertificates(data, what);
  } catch (e) {
    if (e instanceof BootcfsError) throw e;
    throw new SigningError(`${what}: invalid certificate: ${(e as Error).message}`);
  }
}

function keyAlgorithmOf(key: KeyObject): 'rsa' | 'ecdsa' {
  if (key.asymmetricKeyType === 'rsa') return 'rsa';
  if (key.asymmetricKeyType === 'ec') return 'ecdsa';
  throw new SigningError(`unsupported key type '${key.asymmetricKeyType}' (RSA and ECDSA P-256/P-384 are supported)`);
}

const SHA256_DIGEST_INFO_PREFIX = Buffer.from('3031300d060960864801650304020105000420', 'hex');

/** A signer holding a private key (PEM/DER: PKCS#1, PKCS#8 or SEC1) and its certificate(s) in memory. */
export function keySigner(keyPem: string | Buffer, certPem: string | Buffer): Signer {
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (e) {
    throw new SigningError(`cannot read the private key: ${(e as Error).message}`);
  }
  const certificates = parseCertificates(certPem);
  const certKey = new X509Certificate(certificates[0]!).publicKey;
  const ours = createPublicKey(key).export({ type: 'spki', format: 'der' });
  if (!ours.equals(certKey.export({ type: 'spki', format: 'der' }))) throw new SigningError('the private key does not match the certificate');
  const keyAlgorithm = keyAlgorithmOf(key);
  if (keyAlgorithm === 'rsa') {
    return {
      certificates,
      keyAlgorithm,
      async sign(tbsDigest: Buffer): Promise<Buffer> {
        return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO_PREFIX, tbsDigest]));
      },
    };
  }
  const ec = ecdsaKey(key);
  return { certificates, keyAlgorithm, async sign(tbsDigest: Buffer): Promise<Buffer> { return ec.sign(tbsDigest); } };
}

/**
 * A signer that runs `cmd` (through /bin/sh) for every signature: the 32-byte to-be-signed digest is on its
 * stdin and, hex-encoded, in BOOTCFS_TBS_DIGEST; it prints the raw signature on stdout, e.g.
 * `openssl pkeyutl -sign -inkey db.key -pkeyopt digest:sha256`. `certPem` holds the signer's certificate.
 */
export function commandSigner(cmd: string, certPem: string | Buffer): Signer {
  const certificates = parseCertificates(certPem);
  const keyAlgorithm = keyAlgorithmOf(new X509Certificate(certificates[0]!).publicKey);
  return {
    certificates,
    keyAlgorithm,
    sign(tbsDigest: Buffer): Promise<Buffer> {
      return new Promise<Buffer>((resolve, reject) => {
        const child = spawn('/bin/sh', ['-c', cmd], {
          stdio: ['pipe', 'pipe', 'pipe'],
          env: { ...process.env, BOOTCFS_TBS_DIGEST: tbsDigest.toString('hex') },
        });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        child.stdout.on('data', (d: Buffer) => out.push(d));
        child.stderr.on('data', (d: Buffer) => err.push(d));
        child.stdin.on('error', () => undefined); // a signer that ignores stdin may close it early
        child.on('error', (e) => reject(new SigningError(`signing command failed to start: ${e.message}`, 'EIO')));
        child.on('close', (code, signal) => {
          const stderr = Buffer.concat(err).toString('utf8').trim().slice(0, 2000);
          if (code !== 0) {
            reject(new SigningError(`signing command ${signal ? `killed by ${signal}` : `exited with status ${code}`}${stderr ? `: ${stderr}` : ''}`, 'EIO'));
            return;
          }
          const sig = Buffer.concat(out);
          if (sig.length === 0) reject(new SigningError(`signing command printed no signature${stderr ? ` (stderr: ${stderr})` : ''}`, 'EIO'));
          else resolve(sig);
        });
        child.stdin.end(tbsDigest);
      });
    },
  };
}

/** Builds the DER PKCS#7 ContentInfo (SignedData) for an image digest. */
export async function buildAuthenticodeSignature(imageDigest: Buffer, signer: Signer, opts: SignOptions = {}): Promise<Buffer> {
  if (signer.certificates.length === 0) throw new SigningError('signer has no certificate');
  const idc = spcIndirectDataContent(imageDigest, 'sha256');
  const idcNode = parseDer(idc, 'SpcIndirectDataContent');
  const messageDigest = createHash('sha256').update(idcNode.content).digest();
  const signingTime = opts.signingTime === undefined ? new Date() : opts.signingTime;
  const attrs = [attribute(OID.contentType, oid(OID.spcIndirectData)), attribute(OID.messageDigest, octets(messageDigest))];
  if (signingTime !== null) attrs.push(attribute(OID.signingTime, time(signingTime)));
  if ((opts.attributes ?? 'sbsign') === 'sbsign') attrs.push(attribute(OID.smimeCapabilities, smimeCapabilities()));
  else attrs.push(attribute(OID.spcSpOpusInfo, seq()));
  const signedAttrsSet = setOf(...attrs);
  const tbsDigest = createHash('sha256').update(signedAttrsSet).digest();
  const signature = await signer.sign(tbsDigest);
  if (!Buffer.isBuffer(signature) || signature.length === 0) throw new SigningError('signer returned an empty signature', 'EIO');
  let signerCert: X509Certificate;
  try {
    signerCert = new X509Certificate(signer.certificates[0]!);
  } catch (e) {
    throw new SigningError(`signer certificate: ${(e as Error).message}`);
  }
  let ok = false;
  try {
    ok = cryptoVerify('sha256', signedAttrsSet, signerCert.publicKey, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new SigningError(`the signature the signer returned does not verify with the certificate's public key (${signature.length} bytes)`, 'EIO');
  const { issuer, serial } = certificateIssuerAndSerial(signer.certificates[0]!);
  const digestAlg = seq(oid(HASH_OID.sha256), nullValue());
  const sigAlg = signer.keyAlgorithm === 'rsa' ? seq(oid(OID.rsaEncryption), nullValue()) : seq(oid(OID.ecdsaWithSha256));
  const signedAttrs = Buffer.from(signedAttrsSet);
  signedAttrs[0] = 0xa0; // [0] IMPLICIT SET OF Attribute
  const signerInfo = seq(integer(1), seq(issuer, serial), digestAlg, signedAttrs, sigAlg, octets(signature));
  const signedData = seq(
    integer(1),
    setOf(digestAlg),
    seq(oid(OID.spcIndirectData), explicit(0, idc)),
    tlv(0xa0, ...signer.certificates),
    setOf(signerInfo),
  );
  return seq(oid(OID.signedData), explicit(0, signedData));
}

/** One WIN_CERTIFICATE (revision 2.0, PKCS_SIGNED_DATA), zero-padded to 8 bytes. */
export function winCertificate(pkcs7: Buffer): Buffer {
  const length = 8 + pkcs7.length;
  const out = Buffer.alloc(align8(length));
  out.writeUInt32LE(length, 0);
  out.writeUInt16LE(WIN_CERT_REVISION_2_0, 4);
  out.writeUInt16LE(WIN_CERT_TYPE_PKCS_SIGNED_DATA, 6);
  pkcs7.copy(out, 8);
  return out;
}

/**
 * Signs a PE image: returns a new buffer (the input is not modified). Refuses bare kernels unless
 * `allowBareKernel`. An already-signed input has its signatures replaced (or, with existingSignatures
 * 'append', keeps them and gets one more WIN_CERTIFICATE).
 */
export async function signPe(pe: Buffer, signer: Signer, opts: SignOptions = {}): Promise<Buffer> {
  const image = parsePe(pe);
  const layout = authenticodeLayout(pe, image);
  if (layout.certEntryOffset === undefined) throw new FormatError('PE: the optional header has no certificate-table directory entry', image.optionalHeaderOffset);
  if (!opts.allowBareKernel && isBareKernel(pe)) throw new BareKernelError();
  const append = opts.existingSignatures === 'append' && layout.certTable !== undefined;
  let existing: Buffer = Buffer.alloc(0);
  if (append) {
    const t = layout.certTable!;
    if (t.offset % 8 !== 0) throw new FormatError('PE: the existing certificate table is not 8-byte aligned; cannot append a signature', layout.certEntryOffset);
    existing = pe.subarray(t.offset);
    parseCertificateTable(existing, t.offset);
  }
  const dataEnd = layout.dataEnd;
  const base = Buffer.alloc(align8(dataEnd));
  pe.copy(base, 0, 0, dataEnd);
  base.fill(0, layout.certEntryOffset, layout.certEntryOffset + 8);
  const digest = authenticodeDigest(base, 'sha256');
  const pkcs7 = await buildAuthenticodeSignature(digest, signer, opts);
  const table = Buffer.concat([existing, winCertificate(pkcs7)]);
  const out = Buffer.concat([base, table]);
  out.writeUInt32LE(base.length, layout.certEntryOffset);
  out.writeUInt32LE(table.length, layout.certEntryOffset + 4);
  out.writeUInt32LE(peChecksum(out, image.checksumOffset), image.checksumOffset);
  return out;
}
