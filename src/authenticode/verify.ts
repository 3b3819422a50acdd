/**
 * Authenticode verification of PE images: every WIN_CERTIFICATE in the certificate table is parsed; for each
 * PKCS#7 SignedData the SpcIndirectDataContent digest is compared with the recomputed image digest, the
 * messageDigest and contentType signed attributes are checked, the CMS signature over the signed attributes
 * is verified with the signer's certificate and, when trusted certificates are given, the signer must be one
 * of them or chain to one of them (through certificates embedded in the signature) by signature checks.
 * Like UEFI firmware and sbverify, certificate validity periods are not enforced.
 *
 * Structural faults (truncated tables, malformed ASN.1, lengths past the end) throw FormatError; a
 * well-formed signature that does not verify is reported with `verified: false` and a reason.
 */
import { X509Certificate, createHash, verify as cryptoVerify } from 'node:crypto';
import { FormatError } from '../errors.js';
import { parsePe } from '../pe/pe.js';
import { authenticodeLayout, digestOfLayout, type AuthenticodeHash } from './digest.js';
import { decodeOid, decodeTime, expectTag, parseDer, type DerNode } from './der.js';
import { HASH_OID, OID, WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA, parseCertificateTable, parseCertificates } from './sign.js';

export interface SignatureReport {
  /** Index of the WIN_CERTIFICATE in the table. */
  index: number;
  /** Digest algorithm of the SpcIndirectDataContent (OID when unknown). */
  digestAlgorithm: string;
  /** The image digest the signature carries. */
  signedDigest: Buffer;
  /** OpenSSL one-line form ("/CN=test") of the signer certificate's subject, if the signer certificate was found. */
  signerSubject: string | undefined;
  signerIssuer: string | undefined;
  /** The signingTime signed attribute, if any. */
  signingTime: Date | undefined;
  /** Certificates embedded in the signature (DER). */
  certificates: Buffer[];
  /** The signed digest equals the image's digest for that algorithm. */
  digestMatches: boolean;
  verified: boolean;
  reason?: string;
}

export interface VerifyResult {
  signatures: SignatureReport[];
  /** SHA-256 Authenticode digest of the image. */
  imageDigest: Buffer;
  /** There is at least one signature and every signature's digest equals the image's. */
  matches: boolean;
  /** At least one signature verified (UEFI accepts an image if any of its signatures is trusted). */
  verified: boolean;
}

export interface VerifyOptions {
  /** Trusted certificates (DER or PEM, one or more per buffer). When absent, trust is not checked. */
  certificates?: Array<Buffer | string>;
}

/** Signature algorithms a SignerInfo may name, with the key type they need. */
const SIGNATURE_ALGORITHMS = new Map<string, 'rsa' | 'ec'>([
  [OID.rsaEncryption, 'rsa'],
  ['1.2.840.113549.1.1.5', 'rsa'], // sha1WithRSAEncryption
  ['1.2.840.113549.1.1.11', 'rsa'], // sha256WithRSAEncryption
  ['1.2.840.113549.1.1.12', 'rsa'], // sha384WithRSAEncryption
  ['1.2.840.113549.1.1.13', 'rsa'], // sha512WithRSAEncryption
  [OID.ecPublicKey, 'ec'],
  [OID.ecdsaWithSha256, 'ec'],
  ['1.2.840.10045.4.3.3', 'ec'], // ecdsa-with-SHA384
  ['1.2.840.10045.4.3.4', 'ec'], // ecdsa-with-SHA512
]);

const HASH_BY_OID = new Map<string, AuthenticodeHash>(Object.entries(HASH_OID).map(([k, v]) => [v, k as AuthenticodeHash]));

/** OpenSSL's one-line form of an X.509 name as Node prints it ("CN=a\nO=b" → "/CN=a/O=b"). */
function oneline(name: string): string {
  return name.split('\n').filter((l) => l !== '').map((l) => `/${l}`).join('');
}

interface ParsedSignature {
  digestAlgorithm: string;
  signedDigest: Buffer;
  idcContent: Buffer;
  certificates: Buffer[];
  sidIssuer: Buffer | undefined;
  sidSerial: Buffer | undefined;
  signerDigestAlgorithm: string;
  signedAttrs: Buffer | undefined;
  attrs: Map<string, DerNode[]>;
  signatureAlgorithm: string;
  signature: Buffer;
}

/** Parses an Authenticode PKCS#7 SignedData blob; offsets in errors are within the blob. */
export function parseAuthenticodeSignature(blob: Buffer): ParsedSignature {
  const what = 'Authenticode signature';
  const root = expectTag(parseDer(blob, what, 7), 0x30, `${what}: ContentInfo`);
  if (decodeOid(expectTag(root.children[0], 0x06, `${what}: contentType`, root.offset), `${what}: contentType`) !== OID.signedData) {
    throw new FormatError(`${what}: not a PKCS#7 SignedData`, root.offset);
  }
  const sdWrap = expectTag(root.children[1], 0xa0, `${what}: content`, root.offset);
  const sd = expectTag(sdWrap.children[0], 0x30, `${what}: SignedData`, sdWrap.offset);
  const kids = sd.children;
  const sdVersion = expectTag(kids[0], 0x02, `${what}: SignedData version`, sd.offset);
  if (!sdVersion.content.equals(Buffer.from([1]))) throw new FormatError(`${what}: SignedData version is not 1`, sdVersion.offset);
  const digestAlgorithms = expectTag(kids[1], 0x31, `${what}: digestAlgorithms`, sd.offset).children.map((a) =>
    decodeOid(expectTag(expectTag(a, 0x30, `${what}: digestAlgorithms`).children[0], 0x06, `${what}: digestAlgorithms`, a.offset), `${what}: digestAlgorithms`));
  const encap = expectTag(kids[2], 0x30, `${what}: encapContentInfo`, sd.offset);
  const encapType = decodeOid(expectTag(encap.children[0], 0x06, `${what}: eContentType`, encap.offset), `${what}: eContentType`);
  if (encapType !== OID.spcIndirectData) throw new FormatError(`${what}: content is ${encapType}, not SpcIndirectDataContent`, encap.offset);
  const eWrap = expectTag(encap.children[1], 0xa0, `${what}: eContent`, encap.offset);
  const idc = expectTag(eWrap.children[0], 0x30, `${what}: SpcIndirectDataContent`, eWrap.offset);
  expectTag(idc.children[0], 0x30, `${what}: SpcIndirectDataContent.data`, idc.offset);
  const digestInfo = expectTag(idc.children[1], 0x30, `${what}: DigestInfo`, idc.offset);
  const algId = expectTag(digestInfo.children[0], 0x30, `${what}: DigestInfo algorithm`, digestInfo.offset);
  const digestAlgOid = decodeOid(expectTag(algId.children[0], 0x06, `${what}: digest algorithm`, algId.offset), `${what}: digest algorithm`);
  const signedDigest = expectTag(digestInfo.children[1], 0x04, `${what}: DigestInfo digest`, digestInfo.offset).content;
  let i = 3;
  const certificates: Buffer[] = [];
  if (kids[i]?.tag === 0xa0) {
    for (const c of kids[i]!.children) certificates.push(expectTag(c, 0x30, `${what}: certificate`).raw);
    i++;
  }
  if (kids[i]?.tag === 0xa1) i++; // CRLs
  const signerInfos = expectTag(kids[i], 0x31, `${what}: signerInfos`, sd.offset);
  if (signerInfos.children.length !== 1) throw new FormatError(`${what}: ${signerInfos.children.length} SignerInfos (Authenticode requires exactly one)`, signerInfos.offset);
  const si = expectTag(signerInfos.children[0], 0x30, `${what}: SignerInfo`, signerInfos.offset);
  const s = si.children;
  const siVersion = expectTag(s[0], 0x02, `${what}: SignerInfo version`, si.offset);
  if (!siVersion.content.equals(Buffer.from([1]))) throw new FormatError(`${what}: SignerInfo version is not 1`, siVersion.offset);
  const sid = s[1];
  let sidIssuer: Buffer | undefined;
  let sidSerial: Buffer | undefined;
  if (sid?.tag === 0x30) {
    sidIssuer = expectTag(sid.children[0], 0x30, `${what}: sid issuer`, sid.offset).raw;
    sidSerial = expectTag(sid.children[1], 0x02, `${what}: sid serialNumber`, sid.offset).content;
  } else if (sid?.tag !== 0x80) {
    throw new FormatError(`${what}: bad SignerInfo sid`, sid?.offset ?? si.offset);
  }
  const sdAlg = expectTag(s[2], 0x30, `${what}: SignerInfo digestAlgorithm`, si.offset);
  const signerDigestAlgorithm = decodeOid(expectTag(sdAlg.children[0], 0x06, `${what}: digestAlgorithm`, sdAlg.offset), `${what}: digestAlgorithm`);
  let j = 3;
  let signedAttrs: Buffer | undefined;
  const attrs = new Map<string, DerNode[]>();
  if (s[j]?.tag === 0xa0) {
    const a = s[j]!;
    signedAttrs = Buffer.from(a.raw);
    signedAttrs[0] = 0x31;
    for (const attr of a.children) {
      expectTag(attr, 0x30, `${what}: Attribute`);
      const type = decodeOid(expectTag(attr.children[0], 0x06, `${what}: Attribute type`, attr.offset), `${what}: Attribute type`);
      const values = expectTag(attr.children[1], 0x31, `${what}: Attribute values`, attr.offset).children;
      if (attrs.has(type)) throw new FormatError(`${what}: duplicate signed attribute ${type}`, attr.offset);
      attrs.set(type, values);
    }
    j++;
  }
  const sigAlg = expectTag(s[j], 0x30, `${what}: signatureAlgorithm`, si.offset);
  const signatureAlgorithm = decodeOid(expectTag(sigAlg.children[0], 0x06, `${what}: signatureAlgorithm`, sigAlg.offset), `${what}: signatureAlgorithm`);
  const signature = expectTag(s[j + 1], 0x04, `${what}: signature`, si.offset).content;
  if (!digestAlgorithms.includes(signerDigestAlgorithm)) throw new FormatError(`${what}: the signer's digest algorithm is not among the SignedData digestAlgorithms`, sd.offset);
  return {
    digestAlgorithm: digestAlgOid, signedDigest, idcContent: idc.content, certificates, sidIssuer, sidSerial,
    signerDigestAlgorithm, signedAttrs, attrs, signatureAlgorithm, signature,
  };
}

function x509(der: Buffer, what: string): X509Certificate {
  try {
    const c = new X509Certificate(der);
    void c.publicKey; // decoded lazily by Node: fail here, typed, rather than later
    return c;
  } catch (e) {
    throw new FormatError(`${what}: invalid certificate (${(e as Error).message})`, 0);
  }
}

function stripIntZeros(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

function issuerAndSerial(der: Buffer): { issuer: Buffer; serial: Buffer } {
  const cert = parseDer(der, 'certificate');
  const tbs = expectTag(cert.children[0], 0x30, 'certificate: tbsCertificate', cert.offset);
  let i = tbs.children[0]?.tag === 0xa0 ? 1 : 0;
  const serial = expectTag(tbs.children[i++], 0x02, 'certificate: serialNumber', tbs.offset).content;
  i++;
  const issuer = expectTag(tbs.children[i], 0x30, 'certificate: issuer', tbs.offset).raw;
  return { issuer, serial };
}

function chainsToTrusted(signer: X509Certificate, embedded: X509Certificate[], trusted: X509Certificate[]): boolean {
  let current = signer;
  const seen = new Set<string>();
  for (let depth = 0; depth < 10; depth++) {
    if (trusted.some((t) => t.raw.equals(current.raw))) return true;
    if (trusted.some((t) => current.checkIssued(t) && current.verify(t.publicKey))) return true;
    seen.add(current.fingerprint256);
    const next = embedded.find((c) => !seen.has(c.fingerprint256) && current.checkIssued(c) && current.verify(c.publicKey));
    if (next === undefined) return false;
    current = next;
  }
  return false;
}

function checkSignature(index: number, entry: { offset: number; revision: number; type: number; data: Buffer }, buf: Buffer, layout: ReturnType<typeof authenticodeLayout>, trusted: X509Certificate[] | undefined): SignatureReport {
  const base = { index, signerSubject: undefined, signerIssuer: undefined, signingTime: undefined, certificates: [] as Buffer[], digestMatches: false };
  if (entry.revision !== WIN_CERT_REVISION_2_0 || entry.type !== WIN_CERT_TYPE_PKCS_SIGNED_DATA) {
    return { ...base, digestAlgorithm: '', signedDigest: Buffer.alloc(0), verified: false, reason: `unsupported WIN_CERTIFICATE (revision 0x${entry.revision.toString(16)}, type 0x${entry.type.toString(16)})` };
  }
  let p: ParsedSignature;
  try {
    p = parseAuthenticodeSignature(entry.data);
  } catch (e) {
    if (e instanceof FormatError) throw new FormatError(`WIN_CERTIFICATE ${index}: ${e.message}`, entry.offset + 8 + e.offset);
    throw e;
  }
  const hash = HASH_BY_OID.get(p.digestAlgorithm);
  const timeValue = p.attrs.get(OID.signingTime)?.[0];
  const r: SignatureReport = {
    ...base,
    digestAlgorithm: hash ?? p.digestAlgorithm,
    signedDigest: p.signedDigest,
    certificates: p.certificates,
    signingTime: timeValue ? decodeTime(timeValue, 'signingTime') : undefined,
    verified: false,
  };
  const embedded = p.certificates.map((c) => x509(c, `WIN_CERTIFICATE ${index}`));
  const signerIdx = p.sidIssuer === undefined ? -1 : p.certificates.findIndex((c) => {
    const { issuer, serial } = issuerAndSerial(c);
    return issuer.equals(p.sidIssuer!) && stripIntZeros(serial).equals(stripIntZeros(p.sidSerial!));
  });
  const signer = signerIdx >= 0 ? embedded[signerIdx] : undefined;
  if (signer) {
    r.signerSubject = oneline(signer.subject);
    r.signerIssuer = oneline(signer.issuer);
  }
  const fail = (reason: string): SignatureReport => ({ ...r, reason });
  if (hash === undefined) return fail(`unsupported digest algorithm ${p.digestAlgorithm}`);
  const imageDigest = digestOfLayout(buf, layout, hash);
  if (!imageDigest.equals(p.signedDigest)) return fail(`image digest mismatch: signed ${p.signedDigest.toString('hex')}, image ${imageDigest.toString('hex')}`);
  r.digestMatches = true;
  const signerHash = HASH_BY_OID.get(p.signerDigestAlgorithm);
  if (signerHash === undefined) return fail(`unsupported signer digest algorithm ${p.signerDigestAlgorithm}`);
  if (p.signedAttrs === undefined) return fail('no signed attributes');
  const ct = p.attrs.get(OID.contentType);
  if (ct?.length !== 1 || ct[0]!.tag !== 0x06 || decodeOid(ct[0]!, 'contentType attribute') !== OID.spcIndirectData) return fail('contentType attribute is not SpcIndirectDataContent');
  const md = p.attrs.get(OID.messageDigest);
  if (md?.length !== 1 || md[0]!.tag !== 0x04) return fail('missing or malformed messageDigest attribute');
  if (!md[0]!.content.equals(createHash(signerHash).update(p.idcContent).digest())) return fail('messageDigest attribute does not match the signed content');
  if (signer === undefined) return fail('the signer certificate is not in the signature');
  const keyType = SIGNATURE_ALGORITHMS.get(p.signatureAlgorithm);
  if (keyType === undefined) return fail(`unsupported signature algorithm ${p.signatureAlgorithm}`);
  if (keyType !== signer.publicKey.asymmetricKeyType) return fail(`signature algorithm ${p.signatureAlgorithm} does not match the signer's ${signer.publicKey.asymmetricKeyType} key`);
  let sigOk = false;
  try {
    sigOk = cryptoVerify(signerHash, p.signedAttrs, signer.publicKey, p.signature);
  } catch (e) {
    return fail(`signature check failed: ${(e as Error).message}`);
  }
  if (!sigOk) return fail('the signature over the signed attributes does not verify with the signer certificate');
  if (trusted !== undefined && !chainsToTrusted(signer, embedded, trusted)) return fail('the signer certificate is not trusted (not one of, nor issued by, the given certificates)');
  return { ...r, verified: true };
}

/** Verifies every Authenticode signature of a PE image. */
export function verifyPe(pe: Buffer, opts: VerifyOptions = {}): VerifyResult {
  const image = parsePe(pe);
  const layout = authenticodeLayout(pe, image);
  const trusted = opts.certificates?.flatMap((c) => parseCertificates(c, 'trusted certificate').map((d) => new X509Certificate(d)));
  const imageDigest = digestOfLayout(pe, layout, 'sha256');
  const signatures: SignatureReport[] = [];
  if (layout.certTable !== undefined) {
    const { offset, size } = layout.certTable;
    const entries = parseCertificateTable(pe.subarray(offset, offset + size), offset);
    entries.forEach((e, i) => signatures.push(checkSignature(i, e, pe, layout, trusted)));
  }
  return {
    signatures,
    imageDigest,
    matches: signatures.length > 0 && signatures.every((s) => s.digestMatches),
    verified: signatures.some((s) => s.verified),
  };
}
