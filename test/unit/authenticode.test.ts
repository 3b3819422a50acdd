/**
 * Authenticode, pure: synthetic PE images (seeded), certificates built in-test (self-signed and CA-issued, RSA
 * and ECDSA P-256/P-384) — no external tools. Proves: the digest equals an independent formula (hash the file
 * without the CheckSum field and the certificate directory entry, zero-padded to 8) on contiguous images;
 * sign → verify round trips for RSA and ECDSA, trust by identity and by issuer, rejection of untrusted
 * signers and of any tampered hashed byte; replace/append of existing signatures; the bare-kernel refusal;
 * external-signer failures; and that hostile certificate tables / PKCS#7 blobs only ever raise FormatError.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { Rng } from '../helpers/rng.js';
import { cases } from '../helpers/ref.js';
import { FormatError, BootcfsError } from '../../src/errors.js';
import { parsePe, peChecksum, DIR_SECURITY } from '../../src/pe/pe.js';
import {
  BareKernelError, SigningError, authenticodeDigest, commandSigner, keySigner, parseAuthenticodeSignature, signPe, verifyPe, type Signer,
} from '../../src/authenticode/index.js';
import { explicit, integer, nullValue, oid, seq, setOf, time, tlv } from '../../src/authenticode/der.js';

// ---- synthetic PE32+ images ----

interface PeSpec { sections: Array<{ name: string; raw: number }>; trailing: number; hdrS?: boolean }

function makePe(rng: Rng, spec: PeSpec): Buffer {
  const headers = 0x400;
  const total = headers + spec.sections.reduce((a, s) => a + s.raw, 0) + spec.trailing;
  const b = rng.bytes(total);
  b.fill(0, 0, headers);
  b.write('MZ', 0, 'latin1');
  b.writeUInt32LE(0x80, 0x3c);
  b.write('PE\0\0', 0x80, 'latin1');
  const coff = 0x84;
  b.writeUInt16LE(0x8664, coff);
  b.writeUInt16LE(spec.sections.length, coff + 2);
  b.writeUInt16LE(240, coff + 16);
  b.writeUInt16LE(0x22, coff + 18);
  const opt = coff + 20;
  b.writeUInt16LE(0x20b, opt);
  b.writeUInt32LE(0x1000, opt + 32);
  b.writeUInt32LE(0x200, opt + 36);
  b.writeUInt32LE(headers, opt + 60);
  b.writeUInt32LE(rng.u32(), opt + 64); // stale checksum: excluded from the digest
  b.writeUInt16LE(10, opt + 68);
  b.writeUInt32LE(16, opt + 108);
  let ptr = headers;
  spec.sections.forEach((s, i) => {
    const h = opt + 240 + i * 40;
    b.write(s.name, h, 'latin1');
    b.writeUInt32LE(s.raw, h + 8);
    b.writeUInt32LE(0x1000 * (i + 1), h + 12);
    b.writeUInt32LE(s.raw, h + 16);
    b.writeUInt32LE(ptr, h + 20);
    b.writeUInt32LE(0x40000040, h + 36);
    ptr += s.raw;
  });
  if (spec.hdrS) b.write('HdrS', 0x202, 'latin1');
  return b;
}

function randomPe(rng: Rng): Buffer {
  const n = rng.int(1, 3);
  const sections = Array.from({ length: n }, (_, i) => ({ name: ['.text', '.data', '.rodata'][i]!, raw: 0x200 * rng.int(1, 8) }));
  return makePe(rng, { sections, trailing: rng.pick([0, 0, rng.int(1, 15), rng.int(16, 700)]) });
}

// ---- certificates built in-test ----

interface Identity { key: KeyObject; certDer: Buffer; certPem: string; keyPem: string }

function name(cn: string): Buffer {
  return seq(setOf(seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(cn)))));
}

function makeCert(subjectCn: string, subjectKey: { publicKey: KeyObject }, issuerCn: string, issuerKey: KeyObject, serial: number): Buffer {
  const isRsa = issuerKey.asymmetricKeyType === 'rsa';
  const sigAlg = isRsa ? seq(oid('1.2.840.113549.1.1.11'), nullValue()) : seq(oid('1.2.840.10045.4.3.2'));
  const spki = subjectKey.publicKey.export({ type: 'spki', format: 'der' });
  const tbs = seq(
    explicit(0, integer(2)), integer(serial), sigAlg, name(issuerCn),
    seq(time(new Date('2020-01-01T00:00:00Z')), time(new Date('2040-01-01T00:00:00Z'))), name(subjectCn), spki,
  );
  const sig = cryptoSign('sha256', tbs, issuerKey);
  return seq(tbs, sigAlg, tlv(0x03, Buffer.concat([Buffer.from([0]), sig])));
}

const pem = (der: Buffer): string => `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`;

function identity(kind: 'rsa' | 'P-256' | 'P-384', cn: string, issuer?: { cn: string; key: KeyObject }, serial = 1): Identity {
  const kp = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: kind });
  const certDer = makeCert(cn, kp, issuer?.cn ?? cn, issuer?.key ?? kp.privateKey, serial);
  return { key: kp.privateKey, certDer, certPem: pem(certDer), keyPem: kp.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

const rsa = identity('rsa', 'db');
const other = identity('rsa', 'other', undefined, 7);
const rsaSigner = keySigner(rsa.keyPem, rsa.certPem);

// ---- tests ----

test('digest equals the independent formula on contiguous images (seeded)', () => {
  const rng = new Rng(0xa17c0de);
  for (let i = 0; i < cases(40, 400); i++) {
    const pe = randomPe(rng);
    const img = parsePe(pe);
    const cert = img.dataDirectories[DIR_SECURITY]!.entryOffset;
    const padded = Buffer.concat([pe, Buffer.alloc((8 - (pe.length % 8)) % 8)]);
    const expected = createHash('sha256')
      .update(padded.subarray(0, img.checksumOffset))
      .update(padded.subarray(img.checksumOffset + 4, cert))
      .update(padded.subarray(cert + 8))
      .digest();
    assert.deepEqual(authenticodeDigest(pe), expected, `case ${i}`);
    assert.equal(authenticodeDigest(pe, 'sha512').length, 64);
  }
});

test('RSA: sign → verify, layout (8-aligned table, directory, checksum), trust, tamper (seeded)', async () => {
  const rng = new Rng(77);
  for (let i = 0; i < cases(8, 60); i++) {
    const pe = randomPe(rng);
    const signed = await signPe(pe, rsaSigner, { signingTime: new Date('2030-05-06T07:08:09Z') });
    const img = parsePe(signed);
    const dir = img.dataDirectories[DIR_SECURITY]!;
    assert.equal(dir.address % 8, 0);
    assert.equal(dir.address + dir.size, signed.length);
    assert.equal(dir.address, Math.ceil(pe.length / 8) * 8);
    assert.deepEqual(signed.subarray(0, img.checksumOffset), pe.subarray(0, img.checksumOffset));
    assert.equal(signed.readUInt32LE(dir.address + 4), 0x00020200);
    assert.equal(img.checksum, peChecksum(signed, img.checksumOffset));
    assert.deepEqual(authenticodeDigest(signed), authenticodeDigest(pe));
    const v = verifyPe(signed, { certificates: [rsa.certPem] });
    assert.equal(v.verified, true, v.signatures[0]?.reason);
    assert.equal(v.matches, true);
    assert.equal(v.signatures[0]!.signerSubject, '/CN=db');
    assert.deepEqual(v.signatures[0]!.signingTime, new Date('2030-05-06T07:08:09Z'));
    assert.equal(verifyPe(signed, { certificates: [other.certDer] }).verified, false);
    assert.equal(verifyPe(signed).verified, true); // integrity only
    // one flipped byte anywhere the digest covers → rejected
    let pos: number;
    do pos = rng.int(0, dir.address - 1);
    while ((pos >= img.checksumOffset && pos < img.checksumOffset + 4) || (pos >= dir.entryOffset && pos < dir.entryOffset + 8) || (pos >= pe.length && pos < dir.address));
    const bad = Buffer.from(signed);
    bad[pos] ^= 1 << rng.int(0, 7);
    let rejected = true;
    try {
      rejected = !verifyPe(bad, { certificates: [rsa.certPem] }).verified;
    } catch (e) {
      assert.ok(e instanceof FormatError, String(e)); // a flip in a header field may make the PE unparsable
    }
    assert.ok(rejected, `flip at ${pos} accepted`);
  }
});

test('RSA signatures are deterministic: same input, key and signingTime → identical files', async () => {
  const pe = randomPe(new Rng(5));
  const t = new Date('2031-01-01T00:00:00Z');
  assert.deepEqual(await signPe(pe, rsaSigner, { signingTime: t }), await signPe(pe, rsaSigner, { signingTime: t }));
  const noTime = verifyPe(await signPe(pe, rsaSigner, { signingTime: null, attributes: 'minimal' }), { certificates: [rsa.certPem] });
  assert.equal(noTime.verified, true);
  assert.equal(noTime.signatures[0]!.signingTime, undefined);
});

for (const curve of ['P-256', 'P-384'] as const) {
  test(`ECDSA ${curve}: sign → verify with ours; wrong cert rejected`, async () => {
    const ec = identity(curve, `ec-${curve}`);
    const signer = keySigner(ec.keyPem, ec.certPem);
    assert.equal(signer.keyAlgorithm, 'ecdsa');
    const rng = new Rng(curve === 'P-256' ? 256 : 384);
    for (let i = 0; i < 3; i++) {
      const signed = await signPe(randomPe(rng), signer);
      const v = verifyPe(signed, { certificates: [ec.certDer] });
      assert.equal(v.verified, true, v.signatures[0]?.reason);
      assert.equal(verifyPe(signed, { certificates: [rsa.certDer] }).verified, false);
    }
  });
}

test('trust by issuer: a CA-issued signer verifies against the CA, not against an unrelated cert', async () => {
  const caKp = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const caDer = makeCert('ca', caKp, 'ca', caKp.privateKey, 100);
  const leaf = identity('P-256', 'leaf', { cn: 'ca', key: caKp.privateKey }, 101);
  const signed = await signPe(randomPe(new Rng(9)), keySigner(leaf.keyPem, leaf.certPem));
  assert.equal(verifyPe(signed, { certificates: [caDer] }).verified, true);
  assert.equal(verifyPe(signed, { certificates: [pem(caDer)] }).signatures[0]!.signerIssuer, '/CN=ca');
  assert.equal(verifyPe(signed, { certificates: [other.certDer] }).verified, false);
  // a forged "ca" (same name, different key) is not an issuer
  const fakeCaKp = generateKeyPairSync('rsa', { modulusLength: 2048 });
  assert.equal(verifyPe(signed, { certificates: [makeCert('ca', fakeCaKp, 'ca', fakeCaKp.privateKey, 100)] }).verified, false);
});

test('existing signatures: replaced by default, kept with append', async () => {
  const pe = randomPe(new Rng(11));
  const once = await signPe(pe, rsaSigner);
  const otherSigner = keySigner(other.keyPem, other.certPem);
  const replaced = await signPe(once, otherSigner);
  const vr = verifyPe(replaced, { certificates: [rsa.certDer, other.certDer] });
  assert.deepEqual(vr.signatures.map((s) => s.signerSubject), ['/CN=other']);
  const appended = await signPe(once, otherSigner, { existingSignatures: 'append' });
  const va = verifyPe(appended, { certificates: [rsa.certDer, other.certDer] });
  assert.deepEqual(va.signatures.map((s) => [s.signerSubject, s.verified]), [['/CN=db', true], ['/CN=other', true]]);
  const first = parsePe(once).dataDirectories[DIR_SECURITY]!;
  assert.deepEqual(appended.subarray(first.address, once.length), once.subarray(first.address), 'first WIN_CERTIFICATE kept verbatim');
  assert.equal(parsePe(appended).dataDirectories[DIR_SECURITY]!.address, first.address);
});

test('bare kernels are refused unless allowed; UKIs (.linux section) are signed', async () => {
  const rng = new Rng(12);
  const bare = makePe(rng, { sections: [{ name: '.text', raw: 0x400 }], trailing: 3, hdrS: true });
  await assert.rejects(signPe(bare, rsaSigner), BareKernelError);
  assert.equal(verifyPe(await signPe(bare, rsaSigner, { allowBareKernel: true }), { certificates: [rsa.certDer] }).verified, true);
  const uki = makePe(rng, { sections: [{ name: '.text', raw: 0x400 }, { name: '.linux', raw: 0x600 }], trailing: 0, hdrS: true });
  assert.equal(verifyPe(await signPe(uki, rsaSigner), { certificates: [rsa.certDer] }).verified, true);
});

test('key/cert mismatch and external signer failures are typed errors; nothing is returned', async () => {
  assert.throws(() => keySigner(other.keyPem, rsa.certPem), SigningError);
  assert.throws(() => keySigner('not a key', rsa.certPem), SigningError);
  assert.throws(() => keySigner(rsa.keyPem, 'no cert here'), SigningError);
  const pe = randomPe(new Rng(13));
  await assert.rejects(signPe(pe, commandSigner('echo oops >&2; exit 3', rsa.certPem)), (e: unknown) => e instanceof SigningError && /status 3: oops/.test(e.message));
  await assert.rejects(signPe(pe, commandSigner('cat >/dev/null', rsa.certPem)), (e: unknown) => e instanceof SigningError && /no signature/.test(e.message));
  // prints garbage (here: the digest itself) → the signature does not verify with the certificate
  await assert.rejects(signPe(pe, commandSigner('cat', rsa.certPem)), (e: unknown) => e instanceof SigningError && /does not verify/.test(e.message));
  // the digest is given in the environment too
  const seen: string[] = [];
  const probe: Signer = { ...commandSigner('printf %s "$BOOTCFS_TBS_DIGEST"', rsa.certPem) };
  const inner = probe.sign;
  probe.sign = async (d) => { const out = await inner(d); seen.push(out.toString(), d.toString('hex')); return out; };
  await assert.rejects(signPe(pe, probe), SigningError);
  assert.equal(seen[0], seen[1]);
});

test('hostile certificate tables → FormatError', async () => {
  const pe = randomPe(new Rng(14));
  const signed = await signPe(pe, rsaSigner);
  const img = parsePe(signed);
  const dir = img.dataDirectories[DIR_SECURITY]!;
  const withDir = (addr: number, size: number, buf = signed): Buffer => {
    const b = Buffer.from(buf);
    b.writeUInt32LE(addr, dir.entryOffset);
    b.writeUInt32LE(size, dir.entryOffset + 4);
    return b;
  };
  const bad: Array<[string, Buffer]> = [
    ['size past EOF', withDir(dir.address, dir.size + 8)],
    ['table not at end', withDir(dir.address, dir.size - 8)],
    ['truncated file', signed.subarray(0, signed.length - 5)],
    ['table shorter than a header', withDir(signed.length - 4, 4)],
  ];
  const lenTooSmall = Buffer.from(signed);
  lenTooSmall.writeUInt32LE(4, dir.address);
  bad.push(['WIN_CERTIFICATE length < 8', lenTooSmall]);
  const lenPast = Buffer.from(signed);
  lenPast.writeUInt32LE(dir.size + 100, dir.address);
  bad.push(['WIN_CERTIFICATE length past table', lenPast]);
  const garbage = Buffer.from(signed);
  garbage.fill(0xff, dir.address + 8, dir.address + 40);
  bad.push(['garbage ASN.1', garbage]);
  for (const [what, b] of bad) assert.throws(() => verifyPe(b), FormatError, what);
  for (const [what, b] of bad.slice(0, 3)) await assert.rejects(signPe(b, rsaSigner), FormatError, what);
  // a WIN_CERTIFICATE of another type is reported, not accepted
  const otherType = Buffer.from(signed);
  otherType.writeUInt16LE(0x0001, dir.address + 6);
  const v = verifyPe(otherType, { certificates: [rsa.certDer] });
  assert.equal(v.verified, false);
  assert.match(v.signatures[0]!.reason!, /unsupported WIN_CERTIFICATE/);
});

test('hostile PKCS#7 blobs (seeded mutations and truncations) → FormatError or a failed verification, never anything else', async () => {
  const rng = new Rng(15);
  const signed = await signPe(randomPe(rng), rsaSigner);
  const dir = parsePe(signed).dataDirectories[DIR_SECURITY]!;
  const blob = signed.subarray(dir.address + 8, dir.address + signed.readUInt32LE(dir.address));
  let formatErrors = 0;
  let failed = 0;
  const n = cases(400, 5000);
  for (let i = 0; i < n; i++) {
    const m = Buffer.from(blob);
    const kind = rng.int(0, 2);
    let mutated: Buffer;
    if (kind === 0) {
      for (let k = rng.int(1, 4); k > 0; k--) m[rng.int(0, m.length - 1)] = rng.int(0, 255);
      mutated = m;
    } else if (kind === 1) mutated = m.subarray(0, rng.int(0, m.length - 1));
    else mutated = Buffer.concat([m.subarray(0, rng.int(0, m.length)), rng.bytes(rng.int(1, 64))]);
    try {
      parseAuthenticodeSignature(mutated);
    } catch (e) {
      assert.ok(e instanceof FormatError, `parse case ${i}: ${String(e)}`);
    }
    const length = 8 + mutated.length;
    const entry = Buffer.alloc((length + 7) & ~7);
    entry.writeUInt32LE(length, 0);
    entry.writeUInt32LE(0x00020200, 4);
    mutated.copy(entry, 8);
    const file = Buffer.concat([signed.subarray(0, dir.address), entry]);
    file.writeUInt32LE(entry.length, dir.entryOffset + 4);
    try {
      const v = verifyPe(file, { certificates: [rsa.certDer] });
      if (!v.verified) failed++;
      else assert.ok(mutated.equals(blob) || kind === 0, `case ${i}: a truncated/extended blob verified`);
    } catch (e) {
      assert.ok(e instanceof BootcfsError, `verify case ${i}: ${String(e)}`);
      formatErrors++;
    }
  }
  assert.ok(formatErrors > n / 4 && failed > 0, `formatErrors=${formatErrors} failed=${failed}`);
});
