/**
 * reference tier: bootcfs's Secure Boot key tooling against efitools 1.9.2, OpenSSL and virt-fw-vars.
 *
 * - ESL writer byte-identical to `cert-to-efi-sig-list -g GUID cert.pem` (OpenSSL- and bootcfs-made certs,
 *   random owner GUIDs); efitools' ESLs parse back to the same certificates and owners.
 * - .auth writer byte-identical to `sign-efi-sig-list -t TIME -g GUID -k KEY -c CERT VAR in.esl out.auth`
 *   for PK (signed by PK), KEK (signed by PK) and db (signed by KEK): efitools 1.9.2 signs without
 *   authenticated attributes, so its PKCS#7 is deterministic and must match ours byte for byte.
 * - our multi-list databases (X.509 and SHA-256) read back by `sig-list-to-certs`.
 * - virt-fw-vars enrolls our certificates.
 * - `bootcfs keys generate`: openssl parses every certificate, each verifies as self-signed, modes and layout
 *   are right, and efitools re-signing our ESLs with our keys at our timestamp reproduces our .auth files.
 * - the ESL and .auth readers reject truncated and inconsistent input with FormatError.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FormatError } from '../../src/errors.js';
import {
  EFI_CERT_SHA256_GUID,
  EFI_CERT_X509_GUID,
  createSelfSignedCertificate,
  decodeGuid,
  encodeGuid,
  encodeSignatureDatabase,
  generateRsaKey,
  parseAuthenticatedVariable,
  parseSignatureDatabase,
  sha256SignatureList,
  signVariableUpdate,
  verifyVariableUpdate,
  x509SignatureList,
  type EfiTime,
} from '../../src/secureboot/index.js';
import { command as keysCommand } from '../../src/cli/commands/keys.js';
import { cases, run } from '../helpers/ref.js';
import { Rng } from '../helpers/rng.js';
import { enrollVars, printVars } from '../helpers/ovmf.js';

const TOOLS = ['cert-to-efi-sig-list', 'sign-efi-sig-list', 'sig-list-to-certs', 'openssl', 'virt-fw-vars'];

function tool(cmd: string, args: string[], cwd?: string): Buffer {
  const r = run(cmd, args, cwd ? { cwd } : {});
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout;
}

function guidFrom(rng: Rng): string {
  const h = rng.bytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function timeString(t: EfiTime): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${t.year}-${p(t.month)}-${p(t.day)} ${p(t.hour)}:${p(t.minute)}:${p(t.second)}`;
}

interface KeyPair {
  key: string; // file
  crt: string; // file (PEM)
}

describe('Secure Boot keys vs efitools / OpenSSL / virt-fw-vars', () => {
  let work: string;
  const made: KeyPair[] = [];

  before(() => {
    for (const t of TOOLS) {
      const r = run('sh', ['-c', `command -v ${t}`]);
      assert.equal(r.status, 0, `${t} is missing: run scripts/install-deps.sh`);
    }
    work = mkdtempSync(path.join(os.tmpdir(), 'bootcfs-sbkeys-'));
    // certificates from both sides: OpenSSL's `req -x509` and our generator
    for (let i = 0; i < 2; i++) {
      const key = path.join(work, `ossl${i}.key`);
      const crt = path.join(work, `ossl${i}.crt`);
      tool('openssl', ['req', '-quiet', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '365', '-subj', `/CN=openssl test ${i}/`, '-keyout', key, '-out', crt]);
      made.push({ key, crt });
    }
    for (let i = 0; i < 2; i++) {
      const k = generateRsaKey(i === 0 ? 'rsa2048' : 'rsa4096');
      const c = createSelfSignedCertificate(k, { commonName: `bootcfs test ${i}`, ca: i === 0, days: 30 });
      const key = path.join(work, `ours${i}.key`);
      const crt = path.join(work, `ours${i}.crt`);
      writeFileSync(key, k.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
      writeFileSync(crt, c.pem);
      made.push({ key, crt });
    }
  });

  after(() => rmSync(work, { recursive: true, force: true }));

  test('our certificates parse with openssl and verify as self-signed', () => {
    for (const m of made.slice(2)) {
      const text = tool('openssl', ['x509', '-in', m.crt, '-noout', '-text']).toString();
      assert.match(text, /Version: 3 \(0x2\)/);
      assert.match(text, /Signature Algorithm: sha256WithRSAEncryption/);
      assert.match(text, /X509v3 Subject Key Identifier/);
      assert.match(text, /X509v3 Basic Constraints: critical/);
      assert.match(tool('openssl', ['verify', '-CAfile', m.crt, '-check_ss_sig', m.crt]).toString(), /: OK/);
      // SKI = SHA-1 of the subjectPublicKey bits, as OpenSSL computes it for its own certificates
      const x = new X509Certificate(readFileSync(m.crt));
      const spki = x.publicKey.export({ type: 'spki', format: 'der' });
      const bits = spki.subarray(spki.indexOf(Buffer.from([0x03, 0x82])) + 5); // BIT STRING contents after the unused-bits byte
      assert.ok(text.replace(/:/g, '').toUpperCase().includes(createHash('sha1').update(bits).digest('hex').toUpperCase()), 'SKI mismatch');
    }
  });

  test('ESL byte-identical to cert-to-efi-sig-list (several certs and owner GUIDs)', () => {
    const rng = new Rng(0x5b0071);
    const n = cases(3, 10);
    let compared = 0;
    for (const m of made) {
      for (let i = 0; i < n; i++) {
        const guid = i === 0 ? '00000000-0000-0000-0000-000000000000' : guidFrom(rng);
        const out = path.join(work, 'ref.esl');
        tool('cert-to-efi-sig-list', ['-g', guid, m.crt, out]);
        const ref = readFileSync(out);
        const der = new X509Certificate(readFileSync(m.crt)).raw;
        const ours = x509SignatureList(der, guid);
        assert.ok(ours.equals(ref), `ESL differs for ${m.crt} owner ${guid}`);
        // and the reader gets the same certificate and owner back from efitools' list
        const [list] = parseSignatureDatabase(ref);
        assert.equal(list!.type, EFI_CERT_X509_GUID);
        assert.equal(list!.entries[0]!.owner, guid);
        assert.ok(list!.entries[0]!.data.equals(der));
        compared++;
      }
    }
    assert.equal(compared, made.length * n);
  });

  test('our multi-list databases (X.509 + SHA-256) read back by sig-list-to-certs', () => {
    const rng = new Rng(77);
    const owners = made.map(() => guidFrom(rng));
    const ders = made.map((m) => new X509Certificate(readFileSync(m.crt)).raw);
    const hashes = [rng.bytes(32), rng.bytes(32), rng.bytes(32)];
    const hashOwner = guidFrom(rng);
    const db = Buffer.concat([...ders.map((d, i) => x509SignatureList(d, owners[i]!)), sha256SignatureList(hashes, hashOwner)]);
    const dir = path.join(work, 'readback');
    rmSync(dir, { recursive: true, force: true });
    tool('mkdir', ['-p', dir]);
    writeFileSync(path.join(dir, 'db.esl'), db);
    const log = tool('sig-list-to-certs', ['db.esl', 'out'], dir).toString();
    ders.forEach((d, i) => {
      assert.ok(readFileSync(path.join(dir, `out-${i}.der`)).equals(d), `certificate ${i} differs after sig-list-to-certs`);
      assert.match(log, new RegExp(`out-${i}\\.der: Guid ${owners[i]}`, 'i'));
    });
    const hashFiles = readdirSync(dir).filter((f) => f.endsWith('.hash')).sort();
    assert.equal(hashFiles.length, hashes.length, `sig-list-to-certs wrote ${readdirSync(dir).join(' ')}`);
    hashFiles.forEach((f, i) => assert.ok(readFileSync(path.join(dir, f)).equals(hashes[i]!), `hash ${f}`));
    // our reader and writer round-trip the database
    const parsed = parseSignatureDatabase(db);
    assert.equal(parsed.length, made.length + 1);
    assert.equal(parsed.at(-1)!.type, EFI_CERT_SHA256_GUID);
    assert.ok(encodeSignatureDatabase(parsed).equals(db));
  });

  test('.auth byte-identical to sign-efi-sig-list for PK (by PK), KEK (by PK), db (by KEK)', () => {
    const rng = new Rng(4242);
    const n = cases(2, 6);
    for (let i = 0; i < n; i++) {
      const [pk, kek, dbk] = i % 2 === 0 ? [made[0]!, made[1]!, made[2]!] : [made[2]!, made[3]!, made[0]!];
      const guid = guidFrom(rng);
      const ts = new Date(Date.UTC(2020 + rng.int(0, 10), rng.int(0, 11), rng.int(1, 28), rng.int(0, 23), rng.int(0, 59), rng.int(0, 59)));
      const tstr = timeString({ year: ts.getUTCFullYear(), month: ts.getUTCMonth() + 1, day: ts.getUTCDate(), hour: ts.getUTCHours(), minute: ts.getUTCMinutes(), second: ts.getUTCSeconds(), nanosecond: 0, timeZone: 0, daylight: 0 });
      for (const [name, content, signer] of [['PK', pk, pk], ['KEK', kek, pk], ['db', dbk, kek]] as const) {
        const esl = x509SignatureList(new X509Certificate(readFileSync(content.crt)).raw, guid);
        const eslFile = path.join(work, `${name}.esl`);
        const authFile = path.join(work, `${name}.auth`);
        writeFileSync(eslFile, esl);
        tool('sign-efi-sig-list', ['-t', tstr, '-g', guid, '-k', signer.key, '-c', signer.crt, name, eslFile, authFile]);
        const ref = readFileSync(authFile);
        const ours = signVariableUpdate({ name, data: esl, key: readFileSync(signer.key, 'utf8'), cert: readFileSync(signer.crt, 'utf8'), timestamp: ts });
        // structure first (clearer failure), then every byte
        const a = parseAuthenticatedVariable(ours);
        const b = parseAuthenticatedVariable(ref);
        assert.deepEqual(a.timestamp, b.timestamp, `${name}: EFI_TIME differs (${tstr})`);
        assert.equal(a.certType, b.certType);
        assert.ok(a.data.equals(b.data));
        assert.equal(a.signedData.length, b.signedData.length, `${name}: PKCS#7 length differs`);
        assert.ok(ours.equals(ref), `${name}: .auth differs from sign-efi-sig-list's`);
        assert.ok(verifyVariableUpdate(ref, name, readFileSync(signer.crt, 'utf8')), `${name}: efitools' .auth does not verify with our verifier`);
        // a different signer's certificate does not verify it
        const other = made.find((m) => m !== signer)!;
        assert.equal(verifyVariableUpdate(ours, name, readFileSync(other.crt, 'utf8')), false);
      }
    }
  });

  test('virt-fw-vars enrolls our certificates', () => {
    const out = path.join(work, 'vars.fd');
    const guid = '7e5d1c0a-6b3b-4c83-a4d3-5f0c2e9b1a11';
    enrollVars(out, { pk: made[2]!.crt, kek: made[3]!.crt, db: [made[2]!.crt, made[3]!.crt], ownerGuid: guid });
    const vars = printVars(out);
    assert.match(vars, /bootcfs test 0/);
    assert.match(vars, /bootcfs test 1/);
    assert.match(vars, /SecureBootEnable|SecureBoot/);
  });

  test('bootcfs keys generate: files, modes, openssl chain, efitools reproduces our .auth', async () => {
    const dir = path.join(work, 'generated');
    const guid = '0b1d2c3e-4f50-4617-8a9b-0c1d2e3f4a5b';
    assert.equal(await keysCommand.run(['generate', dir, '--common-name', 'ref test', '--owner-guid', guid]), 0);
    // refuses to overwrite existing keys
    await assert.rejects(keysCommand.run(['generate', dir]), /already exists/);
    await assert.rejects(keysCommand.run(['generate', dir, '--owner-guid', 'nope']), /invalid --owner-guid/);
    assert.equal(readFileSync(path.join(dir, 'GUID.txt'), 'utf8'), `${guid}\n`);
    const certs: Record<string, string> = {};
    for (const name of ['PK', 'KEK', 'db']) {
      const f = (ext: string) => path.join(dir, `${name}.${ext}`);
      assert.equal(statSync(f('key')).mode & 0o777, 0o600, `${name}.key mode`);
      const text = tool('openssl', ['x509', '-in', f('crt'), '-noout', '-text']).toString();
      assert.match(text, new RegExp(`Subject: CN ?= ?ref test ${name}`));
      assert.match(text, name === 'db' ? /CA:FALSE/ : /CA:TRUE/);
      assert.match(tool('openssl', ['verify', '-CAfile', f('crt'), f('crt')]).toString(), /: OK/);
      // DER = PEM, key matches certificate
      assert.ok(new X509Certificate(readFileSync(f('crt'))).raw.equals(readFileSync(f('der'))));
      assert.ok(new X509Certificate(readFileSync(f('der'))).checkPrivateKey((await import('node:crypto')).createPrivateKey(readFileSync(f('key')))));
      // ESL = cert-to-efi-sig-list
      tool('cert-to-efi-sig-list', ['-g', guid, f('crt'), path.join(work, 'gen.esl')]);
      assert.ok(readFileSync(f('esl')).equals(readFileSync(path.join(work, 'gen.esl'))), `${name}.esl differs`);
      assert.ok(readFileSync(path.join(dir, 'loader/keys/auto', `${name}.auth`)).equals(readFileSync(f('auth'))));
      certs[name] = f('crt');
    }
    // each .auth re-made by efitools with the expected signer at our timestamp is identical
    const signerOf: Record<string, string> = { PK: 'PK', KEK: 'PK', db: 'KEK' };
    for (const name of ['PK', 'KEK', 'db']) {
      const ours = readFileSync(path.join(dir, `${name}.auth`));
      const t = parseAuthenticatedVariable(ours).timestamp;
      const s = signerOf[name]!;
      const out = path.join(work, `gen-${name}.auth`);
      tool('sign-efi-sig-list', ['-t', timeString(t), '-g', guid, '-k', path.join(dir, `${s}.key`), '-c', path.join(dir, `${s}.crt`), name, path.join(dir, `${name}.esl`), out]);
      assert.ok(readFileSync(out).equals(ours), `${name}.auth differs from efitools' for the same signer and timestamp`);
      assert.ok(verifyVariableUpdate(ours, name, readFileSync(certs[s]!, 'utf8')));
    }
    assert.equal(await keysCommand.run(['generate', '--help']), 0);
  });

  test('ESL and .auth readers reject truncated and inconsistent input with FormatError', () => {
    const der = new X509Certificate(readFileSync(made[0]!.crt)).raw;
    const esl = x509SignatureList(der, '11111111-2222-3333-4444-555555555555');
    const bad: Array<[string, Buffer]> = [];
    for (const cut of [1, 16, 27, 28, 44, esl.length - 1]) bad.push([`truncated to ${cut}`, esl.subarray(0, cut)]);
    const mutate = (off: number, v: number) => {
      const b = Buffer.from(esl);
      b.writeUInt32LE(v, off);
      return b;
    };
    bad.push(['ListSize 0', mutate(16, 0)], ['ListSize huge', mutate(16, 0xffffffff)], ['ListSize +1', mutate(16, esl.length + 1)]);
    bad.push(['HeaderSize huge', mutate(20, 0xfffffff0)], ['SignatureSize 0', mutate(24, 0)], ['SignatureSize 16', mutate(24, 16)]);
    bad.push(['SignatureSize not dividing', mutate(24, esl.length - 28 - 1)]);
    const sha = sha256SignatureList([Buffer.alloc(32, 1)], '11111111-2222-3333-4444-555555555555');
    const shaBad = Buffer.from(sha);
    shaBad.writeUInt32LE(47, 24);
    bad.push(['SHA256 size 47', shaBad]);
    bad.push(['trailing garbage', Buffer.concat([esl, Buffer.alloc(5)])]);
    for (const [what, b] of bad) assert.throws(() => parseSignatureDatabase(b), FormatError, what);
    assert.deepEqual(parseSignatureDatabase(Buffer.alloc(0)), []);
    assert.equal(decodeGuid(encodeGuid('a5c059a1-94e4-4aa7-87b5-ab155c2bf072')), EFI_CERT_X509_GUID);

    const auth = signVariableUpdate({ name: 'db', data: esl, key: readFileSync(made[0]!.key, 'utf8'), cert: readFileSync(made[0]!.crt, 'utf8'), timestamp: new Date(0) });
    for (const cut of [0, 15, 39]) assert.throws(() => parseAuthenticatedVariable(auth.subarray(0, cut)), FormatError);
    const big = Buffer.from(auth);
    big.writeUInt32LE(auth.length, 16);
    assert.throws(() => parseAuthenticatedVariable(big), FormatError);
    // a changed payload byte breaks the signature
    const flipped = Buffer.from(auth);
    flipped[flipped.length - 1]! ^= 1;
    assert.equal(verifyVariableUpdate(auth, 'db', readFileSync(made[0]!.crt, 'utf8')), true);
    assert.equal(verifyVariableUpdate(flipped, 'db', readFileSync(made[0]!.crt, 'utf8')), false);
  });
});
