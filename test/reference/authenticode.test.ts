/**
 * Authenticode against the reference tools (sbsign/sbverify 0.9.4, osslsigncode 2.9, openssl, ukify 257).
 * Inputs (seeded, cases(6, 40)): systemd-boot, the systemd stub and ukify-built UKIs (the guest kernel, a random
 * initrd and command line), some with 1–15 random trailing bytes (odd sizes). For every input:
 *   - our digest == the digest osslsigncode calculates on the sbsign-signed file (and the one sbsign signed);
 *   - our signature with sbsign's signingTime is byte-identical to sbsign's whole output file;
 *   - our verifyPe accepts sbsign's and osslsigncode's signatures with their certificate, rejects another;
 *   - our 'minimal'-attribute signature (different bytes) is accepted by sbverify --cert and
 *     osslsigncode verify -CAfile; one flipped hashed byte → sbverify, osslsigncode and verifyPe reject;
 *   - an external signer (`openssl pkeyutl`) produces the same bytes as the in-process key (RSA is deterministic);
 *   - an ECDSA P-256 signature is accepted by osslsigncode and sbverify.
 * Then: re-signing (sbsign 0.9.4 appends: our 'append' is byte-identical; our default replaces), the bare-kernel
 * refusal, and the CLI (`bootcfs sbsign|sbverify|authenticode digest`) against sbsign/sbverify/osslsigncode.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import { BOOTCFS_BIN, REF_PREFIX, REPO_ROOT, cases, requireTool, run, type RunResult } from '../helpers/ref.js';
import { guestKernel } from '../helpers/vm.js';
import { Rng } from '../helpers/rng.js';
import { parsePe, DIR_SECURITY } from '../../src/pe/pe.js';
import { authenticodeDigest, commandSigner, keySigner, parseAuthenticodeSignature, signPe, verifyPe } from '../../src/authenticode/index.js';
import { OID } from '../../src/authenticode/sign.js';
import { decodeTime } from '../../src/authenticode/der.js';

const SBSIGN = '/usr/bin/sbsign';
const SBVERIFY = '/usr/bin/sbverify';
const OSSLSIGNCODE = '/usr/bin/osslsigncode';
const OPENSSL = '/usr/bin/openssl';
const UKIFY = `${REF_PREFIX}/bin/ukify`;
const SDBOOT = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bootcfs-authenticode-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const p = (name: string): string => path.join(tmp, name);

function ok(r: RunResult, what: string): string {
  assert.equal(r.status, 0, `${what}: exit ${r.status}\n${r.stdout.toString()}\n${r.stderr.toString()}`);
  return r.stdout.toString();
}

let keysMade = false;
function keys(): void {
  if (keysMade) return;
  for (const t of [SBSIGN, SBVERIFY, OSSLSIGNCODE, OPENSSL, UKIFY, SDBOOT, STUB]) requireTool(t);
  for (const [name, args] of [
    ['db', ['-newkey', 'rsa:2048']],
    ['other', ['-newkey', 'rsa:2048']],
    ['ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']],
  ] as const) {
    ok(run(OPENSSL, ['req', '-x509', ...args, '-nodes', '-subj', `/CN=${name}`, '-days', '3650', '-keyout', p(`${name}.key`), '-out', p(`${name}.crt`)]), `openssl req ${name}`);
  }
  keysMade = true;
}

/** osslsigncode's "Calculated message digest" for a signed file, and whether it verified against `ca`. */
function osslVerify(file: string, ca: string): { digest: string | undefined; ok: boolean; out: string } {
  const r = run(OSSLSIGNCODE, ['verify', '-CAfile', ca, '-in', file]);
  const out = r.stdout.toString() + r.stderr.toString();
  const m = /Calculated message digest\s*:\s*([0-9A-Fa-f]+)/.exec(out);
  return { digest: m?.[1]?.toLowerCase(), ok: r.status === 0 && /Signature verification: ok/.test(out), out };
}

function sbverify(file: string, cert: string): RunResult {
  return run(SBVERIFY, ['--cert', cert, file]);
}

/** Every byte offset the Authenticode digest covers (headers minus CheckSum and the cert entry, data before the table). */
function hashedOffset(rng: Rng, signed: Buffer): number {
  const img = parsePe(signed);
  const dir = img.dataDirectories[DIR_SECURITY]!;
  for (;;) {
    const pos = rng.int(0, dir.address - 1);
    if (pos >= img.checksumOffset && pos < img.checksumOffset + 4) continue;
    if (pos >= dir.entryOffset && pos < dir.entryOffset + 8) continue;
    return pos;
  }
}

function makeInput(rng: Rng, i: number): { file: string; what: string } {
  const kind = i % 3;
  const file = p(`in-${i}.efi`);
  let what: string;
  if (kind === 0) {
    fs.copyFileSync(SDBOOT, file);
    what = 'systemd-boot';
  } else if (kind === 1) {
    fs.copyFileSync(STUB, file);
    what = 'stub';
  } else {
    const initrd = p(`initrd-${i}`);
    fs.writeFileSync(initrd, rng.bytes(rng.int(1, 300_000)));
    const cmdline = `composefs=${rng.bytes(32).toString('hex')} rw ${rng.bool() ? 'quiet ' : ''}x=${rng.u32()}`;
    ok(run(UKIFY, ['build', '--linux', guestKernel().vmlinuz, '--initrd', initrd, '--cmdline', cmdline, '--output', file]), 'ukify build');
    what = `UKI (initrd ${fs.statSync(initrd).size} bytes)`;
  }
  if (rng.bool(0.5)) {
    const n = rng.int(1, 15);
    fs.appendFileSync(file, rng.bytes(n));
    what += ` + ${n} trailing bytes`;
  }
  return { file, what };
}

const N = cases(6, 40);
const rng = new Rng(0x5b5164e);
for (let i = 0; i < N; i++) {
  test(`case ${i}: digest, byte-identity with sbsign, cross-verification, tamper, external signer, ECDSA`, async (t) => {
    keys();
    const { file, what } = makeInput(rng, i);
    t.diagnostic(what);
    const input = fs.readFileSync(file);
    const ourDigest = authenticodeDigest(input).toString('hex');

    // sbsign → osslsigncode's calculated digest, our verifyPe
    const sb = p(`sb-${i}.efi`);
    ok(run(SBSIGN, ['--key', p('db.key'), '--cert', p('db.crt'), '--output', sb, file]), 'sbsign');
    const sbBytes = fs.readFileSync(sb);
    const ov = osslVerify(sb, p('db.crt'));
    assert.ok(ov.ok, ov.out);
    assert.equal(ov.digest, ourDigest, 'osslsigncode digest of the sbsign-signed file');
    assert.equal(authenticodeDigest(sbBytes).toString('hex'), ourDigest);
    const vSb = verifyPe(sbBytes, { certificates: [fs.readFileSync(p('db.crt'))] });
    assert.equal(vSb.verified, true, vSb.signatures[0]?.reason);
    assert.equal(vSb.signatures[0]!.signedDigest.toString('hex'), ourDigest);
    assert.equal(verifyPe(sbBytes, { certificates: [fs.readFileSync(p('other.crt'))] }).verified, false);

    // ours with sbsign's signingTime: the whole file is identical
    const signer = keySigner(fs.readFileSync(p('db.key')), fs.readFileSync(p('db.crt')));
    const signingTime = vSb.signatures[0]!.signingTime;
    assert.ok(signingTime instanceof Date);
    const ours = await signPe(input, signer, { signingTime });
    assert.ok(ours.equals(sbBytes), `our signed file differs from sbsign's (${ours.length} vs ${sbBytes.length} bytes)`);

    // an external signer (openssl pkeyutl) gives the same bytes
    const viaCmd = await signPe(input, commandSigner(`${OPENSSL} pkeyutl -sign -inkey '${p('db.key')}' -pkeyopt digest:sha256`, fs.readFileSync(p('db.crt'))), { signingTime });
    assert.ok(viaCmd.equals(ours), 'pkeyutl-signed file differs');

    // a signature with different attributes: accepted by both tools; one flipped byte rejected by all three
    const minimal = await signPe(input, signer, { attributes: 'minimal', signingTime: null });
    const mf = p(`min-${i}.efi`);
    fs.writeFileSync(mf, minimal);
    assert.match(ok(sbverify(mf, p('db.crt')), 'sbverify our signature'), /Signature verification OK/);
    const om = osslVerify(mf, p('db.crt'));
    assert.ok(om.ok, om.out);
    assert.equal(om.digest, ourDigest);
    assert.equal(sbverify(mf, p('other.crt')).status, 1);
    const pos = hashedOffset(rng, minimal);
    const bad = Buffer.from(minimal);
    bad[pos] ^= 1 << rng.int(0, 7);
    const bf = p(`bad-${i}.efi`);
    fs.writeFileSync(bf, bad);
    assert.equal(sbverify(bf, p('db.crt')).status, 1, `sbverify accepted a flip at ${pos}`);
    assert.equal(osslVerify(bf, p('db.crt')).ok, false, `osslsigncode accepted a flip at ${pos}`);
    let rejected = true;
    try {
      rejected = !verifyPe(bad, { certificates: [fs.readFileSync(p('db.crt'))] }).verified;
    } catch {
      rejected = true; // unparsable after the flip (header field)
    }
    assert.ok(rejected, `verifyPe accepted a flip at ${pos}`);

    // osslsigncode's signature (SpcSpOpusInfo, padded WIN_CERTIFICATE length) verifies with ours
    const os1 = p(`oss-${i}.efi`);
    ok(run(OSSLSIGNCODE, ['sign', '-certs', p('db.crt'), '-key', p('db.key'), '-in', file, '-out', os1]), 'osslsigncode sign');
    const vOs = verifyPe(fs.readFileSync(os1), { certificates: [fs.readFileSync(p('db.crt'))] });
    assert.equal(vOs.verified, true, vOs.signatures[0]?.reason);
    assert.equal(vOs.signatures[0]!.signedDigest.toString('hex'), ourDigest);

    // ECDSA P-256
    const ec = await signPe(input, keySigner(fs.readFileSync(p('ec.key')), fs.readFileSync(p('ec.crt'))));
    const ef = p(`ec-${i}.efi`);
    fs.writeFileSync(ef, ec);
    const oe = osslVerify(ef, p('ec.crt'));
    assert.ok(oe.ok, oe.out);
    assert.match(ok(sbverify(ef, p('ec.crt')), 'sbverify ECDSA'), /Signature verification OK/);
  });
}

test('re-signing: sbsign 0.9.4 appends a signature (our append is byte-identical); our default replaces', async () => {
  keys();
  const once = p('resign-1.efi');
  const twice = p('resign-2.efi');
  ok(run(SBSIGN, ['--key', p('db.key'), '--cert', p('db.crt'), '--output', once, SDBOOT]), 'sbsign');
  ok(run(SBSIGN, ['--key', p('other.key'), '--cert', p('other.crt'), '--output', twice, once]), 'sbsign again');
  const twiceBytes = fs.readFileSync(twice);
  const v = verifyPe(twiceBytes, { certificates: [fs.readFileSync(p('db.crt')), fs.readFileSync(p('other.crt'))] });
  assert.deepEqual(v.signatures.map((s) => [s.signerSubject, s.verified]), [['/CN=db', true], ['/CN=other', true]]);
  const otherSigner = keySigner(fs.readFileSync(p('other.key')), fs.readFileSync(p('other.crt')));
  const appended = await signPe(fs.readFileSync(once), otherSigner, { existingSignatures: 'append', signingTime: v.signatures[1]!.signingTime });
  assert.ok(appended.equals(twiceBytes), 'our appended signature differs from sbsign');
  // sbverify --list lists both the same way through our CLI
  assert.equal(cli(['sbverify', '--list', twice]).stdout.toString(), ok(run(SBVERIFY, ['--list', twice]), 'sbverify --list'));
  // replace: one signature, accepted by sbverify and by osslsigncode (which rejects sbsign's two-entry table)
  const replaced = p('resign-replaced.efi');
  fs.writeFileSync(replaced, await signPe(fs.readFileSync(once), otherSigner));
  assert.equal(verifyPe(fs.readFileSync(replaced)).signatures.length, 1);
  assert.match(ok(sbverify(replaced, p('other.crt')), 'sbverify'), /Signature verification OK/);
  assert.equal(sbverify(replaced, p('db.crt')).status, 1);
  assert.ok(osslVerify(replaced, p('other.crt')).ok);
  assert.equal(osslVerify(twice, p('other.crt')).ok, false, 'osslsigncode now accepts two WIN_CERTIFICATEs: revisit the replace default');
});

// ---- CLI ----

/** The CLI through bin/bootcfs once the verbs are registered; until then through the command module directly. */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
  const registry = fs.readFileSync(path.join(REPO_ROOT, 'src/cli/registry.ts'), 'utf8');
  const opts = { env: { ...process.env, ...env } };
  if (/\bsbsign\b/.test(registry)) return run(BOOTCFS_BIN, args, opts);
  const shim = p('cli-shim.mjs');
  if (!fs.existsSync(shim)) {
    fs.writeFileSync(shim, `import { sbsignCommand, sbverifyCommand, authenticodeCommand } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/src/cli/commands/authenticode.js'))};
import { UsageError } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/src/cli/command.js'))};
import { BootcfsError } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/src/errors.js'))};
const cmds = { sbsign: sbsignCommand, sbverify: sbverifyCommand, authenticode: authenticodeCommand };
const [verb, ...rest] = process.argv.slice(2);
cmds[verb].run(rest).then((c) => { process.exitCode = c; }, (e) => {
  process.stderr.write('bootcfs: ' + e.message + '\\n');
  process.exitCode = e instanceof UsageError ? 2 : e instanceof BootcfsError ? 1 : 70;
});
`);
  }
  return run(process.execPath, [shim, ...args], opts);
}

test('CLI: authenticode digest, sbsign (byte-identical to sbsign), sbverify exit codes and messages, external signer, --help', async () => {
  keys();
  const rng2 = new Rng(99);
  const { file } = makeInput(rng2, 1000); // 1000 % 3 == 1: the stub (+ maybe trailing bytes); UKIs are covered above
  const sb = p('cli-sb.efi');
  ok(run(SBSIGN, ['--key', p('db.key'), '--cert', p('db.crt'), '--output', sb, file]), 'sbsign');
  const ov = osslVerify(sb, p('db.crt'));
  assert.equal(ok(cli(['authenticode', 'digest', file]), 'authenticode digest').trim(), ov.digest);
  assert.equal(ok(cli(['authenticode', 'digest', '--hash', 'sha256', sb]), 'authenticode digest').trim(), ov.digest);
  assert.equal(ok(cli(['authenticode', 'digest', '--hash', 'sha1', file]), 'digest sha1').trim().length, 40);
  assert.equal(cli(['authenticode', 'digest', '--hash', 'md5', file]).status, 2);

  // bootcfs sbsign with sbsign's signing time (SOURCE_DATE_EPOCH) → identical file; default output FILE.signed
  const when = verifyPe(fs.readFileSync(sb)).signatures[0]!.signingTime!;
  const r = cli(['sbsign', '--key', p('db.key'), '--cert', p('db.crt'), file], { SOURCE_DATE_EPOCH: String(when.getTime() / 1000) });
  ok(r, 'bootcfs sbsign');
  assert.ok(fs.readFileSync(`${file}.signed`).equals(fs.readFileSync(sb)), 'bootcfs sbsign output differs from sbsign');

  // --detached: the PKCS#7 blob alone, identical to sbsign --detached given its signingTime
  const pk7 = p('cli-sb.pk7');
  ok(run(SBSIGN, ['--detached', '--key', p('db.key'), '--cert', p('db.crt'), '--output', pk7, file]), 'sbsign --detached');
  const pk7Time = decodeTime(parseAuthenticodeSignature(fs.readFileSync(pk7)).attrs.get(OID.signingTime)![0]!, 'signingTime');
  ok(cli(['sbsign', '--detached', '--key', p('db.key'), '--cert', p('db.crt'), file], { SOURCE_DATE_EPOCH: String(pk7Time.getTime() / 1000) }), 'bootcfs sbsign --detached');
  assert.ok(fs.readFileSync(`${file}.pk7`).equals(fs.readFileSync(pk7)), 'detached signature differs from sbsign --detached');

  // sbverify: OK / failed, exit codes as sbverify
  const good = cli(['sbverify', '--cert', p('db.crt'), sb]);
  assert.equal(good.status, 0, good.stderr.toString());
  assert.equal(good.stdout.toString(), 'Signature verification OK\n');
  const wrong = cli(['sbverify', '--cert', p('other.crt'), sb]);
  assert.equal(wrong.status, run(SBVERIFY, ['--cert', p('other.crt'), sb]).status);
  assert.equal(wrong.stdout.toString(), 'Signature verification failed\n');
  const unsigned = cli(['sbverify', '--cert', p('db.crt'), file]);
  assert.equal(unsigned.status, run(SBVERIFY, ['--cert', p('db.crt'), file]).status);
  assert.equal(unsigned.status, 1);
  const bad = Buffer.from(fs.readFileSync(sb));
  bad[hashedOffset(rng2, bad)] ^= 0x10;
  fs.writeFileSync(p('cli-bad.efi'), bad);
  assert.equal(cli(['sbverify', '--cert', p('db.crt'), p('cli-bad.efi')]).status, 1);
  assert.equal(run(SBVERIFY, ['--cert', p('db.crt'), p('cli-bad.efi')]).status, 1);
  assert.equal(cli(['sbverify', '--list', sb]).stdout.toString(), ok(run(SBVERIFY, ['--list', sb]), 'sbverify --list'));

  // external signer through the CLI → sbverify accepts
  const ext = p('cli-ext.efi');
  ok(cli(['sbsign', '--sign-with-command', `${OPENSSL} pkeyutl -sign -inkey '${p('db.key')}' -pkeyopt digest:sha256`, '--cert', p('db.crt'), '--output', ext, file]), 'sbsign --sign-with-command');
  assert.match(ok(sbverify(ext, p('db.crt')), 'sbverify'), /Signature verification OK/);
  // a failing external signer: exit 1, clear message, nothing written
  const failing = p('cli-fail.efi');
  const f = cli(['sbsign', '--sign-with-command', 'echo HSM offline >&2; exit 4', '--cert', p('db.crt'), '--output', failing, file]);
  assert.equal(f.status, 1);
  assert.match(f.stderr.toString(), /status 4: HSM offline/);
  assert.equal(fs.existsSync(failing), false);
  assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.includes('cli-fail')), []);

  for (const verb of [['sbsign'], ['sbverify'], ['authenticode'], ['authenticode', 'digest']]) {
    const h = cli([...verb, '--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout.toString(), /^Usage: bootcfs /);
  }
  assert.equal(cli(['sbsign', '--cert', p('db.crt'), file]).status, 2, 'missing --key is a usage error');
});

test('CLI: a bare kernel is refused (exit 1, nothing written) unless --allow-bare-kernel; sbverify then accepts it', () => {
  keys();
  const kernel = p('vmlinuz');
  fs.copyFileSync(guestKernel().vmlinuz, kernel);
  const out = p('vmlinuz.signed');
  const r = cli(['sbsign', '--key', p('db.key'), '--cert', p('db.crt'), kernel]);
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /refusing to sign a bare Linux kernel/);
  assert.equal(fs.existsSync(out), false);
  ok(cli(['sbsign', '--allow-bare-kernel', '--key', p('db.key'), '--cert', p('db.crt'), kernel]), 'sbsign --allow-bare-kernel');
  assert.match(ok(sbverify(out, p('db.crt')), 'sbverify bare kernel'), /Signature verification OK/);
  // the real sbsign signs it without a word — which is why we refuse by default
  ok(run(SBSIGN, ['--key', p('db.key'), '--cert', p('db.crt'), '--output', p('vmlinuz.sbsign'), kernel]), 'sbsign bare kernel');
});
