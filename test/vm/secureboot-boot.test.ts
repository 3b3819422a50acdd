/**
 * vm tier: Secure Boot end to end under OVMF (TCG). Keys come from bootcfs's generateSecureBootKeys; the
 * firmware gets them either from virt-fw-vars (D-G) or from systemd-boot's auto-enroll of our .auth files (H).
 * The disk is GPT with one ESP: EFI/BOOT/BOOTX64.EFI = systemd-boot, EFI/Linux/x.efi = a UKI whose initramfs
 * prints a marker line (with the kernel's Secure Boot state) and powers off.
 *
 *   D  signed systemd-boot + signed UKI                → boots, kernel reports Secure Boot enabled
 *   E  signed systemd-boot + unsigned UKI              → refused
 *   F  signed systemd-boot + signed UKI, one cmdline byte changed → refused
 *   G  unsigned systemd-boot                           → refused by the firmware
 *   H  setup-mode firmware, loader/keys/auto/*.auth, `secure-boot-enroll force`
 *                                                      → keys enrolled, reboot, boots D's disk under SB
 * One VM at a time; each case is one TCG boot.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { generateSecureBootKeys, type SecureBootKeys } from '../../src/secureboot/index.js';
import { REPO_ROOT, run } from '../helpers/ref.js';
import { guestKernel } from '../helpers/vm.js';
import {
  ESP_TYPE,
  REFUSAL_RE,
  SYSTEMD_BOOT_EFI,
  SYSTEMD_STUB_EFI,
  buildEsp,
  buildGptDisk,
  buildMarkerInitramfs,
  enrollVars,
  printVars,
  requireFirmwareTools,
  runOvmf,
  setupModeVars,
  type EspFile,
} from '../helpers/ovmf.js';

const MARKER = 'BOOTCFS-SB-MARKER-5c1e';
const CMDLINE = 'console=ttyS0 quiet panic=-1 bootcfs.sbtest=1';
/** systemd-boot refusing the UKI (the firmware's LoadImage verdict, as systemd-boot reports it). */
const UKI_REFUSED = /Error loading \\EFI\\Linux\\x\.efi: (Access denied|Security violation)/i;
const BOOT_TIMEOUT_MS = 300_000;
const REFUSE_TIMEOUT_MS = 180_000;
const UKIFY = '/opt/bootcfs-ref/bin/ukify';
/** systemd-boot lists a UKI as a boot entry only if it has an .osrel section. */
const OS_RELEASE = 'ID=bootcfs-sbtest\nNAME="bootcfs Secure Boot test"\nVERSION_ID=1\n';

interface Signer {
  keyFile: string;
  certFile: string;
}

/**
 * The build/sign step, in one place. By default bootcfs's own UKI builder (dist/src/uki/uki.js `buildUki`)
 * and Authenticode signer (dist/src/authenticode/index.js `signPe` + `keySigner`) — missing ones fail the
 * test; BOOTCFS_SB_TEST_REFERENCE=1 uses the reference tools (ukify, sbsign) instead, to tell a bootcfs
 * bug from a harness problem. Either way sbverify must accept the signed images.
 */
interface Toolchain {
  name: string;
  buildUki(o: { linux: string; initrd: string; cmdline: string; osRelease: string; out: string }): Promise<void>;
  sign(input: string, out: string, s: Signer): Promise<void>;
}

const referenceToolchain: Toolchain = {
  name: 'reference (ukify + sbsign)',
  async buildUki(o) {
    const r = run(UKIFY, ['build', '--linux', o.linux, '--initrd', o.initrd, '--cmdline', o.cmdline, '--os-release', o.osRelease, '--stub', SYSTEMD_STUB_EFI, '--output', o.out]);
    assert.equal(r.status, 0, `ukify build failed: ${r.stderr.toString()}`);
  },
  async sign(input, out, s) {
    const r = run('sbsign', ['--key', s.keyFile, '--cert', s.certFile, '--output', out, input]);
    assert.equal(r.status, 0, `sbsign failed: ${r.stderr.toString()}`);
  },
};

async function bootcfsToolchain(): Promise<Toolchain | undefined> {
  const ukiJs = path.join(REPO_ROOT, 'dist/src/uki/uki.js');
  const acJs = path.join(REPO_ROOT, 'dist/src/authenticode/index.js');
  if (!existsSync(ukiJs) || !existsSync(acJs)) return undefined;
  const uki = (await import(pathToFileURL(ukiJs).href)) as Record<string, unknown>;
  const ac = (await import(pathToFileURL(acJs).href)) as Record<string, unknown>;
  if (typeof uki.buildUki !== 'function' || typeof ac.signPe !== 'function' || typeof ac.keySigner !== 'function') return undefined;
  const buildUki = uki.buildUki as (o: Record<string, unknown>) => Promise<Uint8Array> | Uint8Array;
  const signPe = ac.signPe as (pe: Uint8Array, signer: unknown) => Promise<Uint8Array> | Uint8Array;
  const keySigner = ac.keySigner as (keyPem: string, certPem: string) => unknown;
  return {
    name: 'bootcfs (buildUki + signPe)',
    async buildUki(o) {
      const pe = await buildUki({
        stub: readFileSync(SYSTEMD_STUB_EFI),
        linux: readFileSync(o.linux),
        initrds: [readFileSync(o.initrd)],
        cmdline: o.cmdline,
        osRelease: o.osRelease,
      });
      writeFileSync(o.out, pe);
    },
    async sign(input, out, s) {
      const signed = await signPe(readFileSync(input), keySigner(readFileSync(s.keyFile, 'utf8'), readFileSync(s.certFile, 'utf8')));
      writeFileSync(out, signed);
    },
  };
}

function espFiles(bootloader: string, uki: string, loaderConf: string, extra: EspFile[] = []): EspFile[] {
  return [
    { path: 'EFI/BOOT/BOOTX64.EFI', data: bootloader },
    { path: 'EFI/Linux/x.efi', data: uki },
    { path: 'loader/loader.conf', data: Buffer.from(loaderConf) },
    ...extra,
  ];
}

describe('Secure Boot under OVMF: bootcfs keys, signed systemd-boot and UKI', { timeout: 1_800_000 }, () => {
  let work: string;
  let keys: SecureBootKeys;
  let tc: Toolchain;
  const disks: Record<string, string> = {};
  let varsSb: string;
  let varsSetup: string;

  before(async () => {
    requireFirmwareTools();
    work = mkdtempSync('/var/tmp/bootcfs-sb-');
    const kernel = guestKernel();
    keys = await generateSecureBootKeys(path.join(work, 'keys'), { commonName: 'bootcfs vm test' });
    if (process.env.BOOTCFS_SB_TEST_REFERENCE === '1') tc = referenceToolchain;
    else {
      const own = await bootcfsToolchain();
      assert.ok(own, 'dist/src/uki/uki.js (buildUki) or dist/src/authenticode/index.js (signPe, keySigner) is missing: build first');
      tc = own;
    }
    const initrd = await buildMarkerInitramfs(work, MARKER);
    const db: Signer = { keyFile: keys.db.files.key, certFile: keys.db.files.crt };
    const f = (n: string) => path.join(work, n);

    await tc.buildUki({ linux: kernel.vmlinuz, initrd, cmdline: CMDLINE, osRelease: OS_RELEASE, out: f('uki-unsigned.efi') });
    await tc.sign(f('uki-unsigned.efi'), f('uki-signed.efi'), db);
    await tc.sign(SYSTEMD_BOOT_EFI, f('sdboot-signed.efi'), db);
    for (const [file, ok] of [['uki-signed.efi', true], ['sdboot-signed.efi', true], ['uki-unsigned.efi', false]] as const) {
      const r = run('sbverify', ['--cert', keys.db.files.crt, f(file)]);
      assert.equal(r.status === 0, ok, `sbverify ${file}: ${r.stderr.toString()}`);
    }
    // F: one byte of the signed UKI's .cmdline changed
    const signed = readFileSync(f('uki-signed.efi'));
    const needle = Buffer.from('bootcfs.sbtest=1');
    const at = signed.indexOf(needle);
    assert.ok(at > 0 && signed.indexOf(needle, at + 1) < 0, 'cmdline not found exactly once in the signed UKI');
    const tampered = Buffer.from(signed);
    tampered[at + needle.length - 1] = 0x32; // '1' -> '2'
    writeFileSync(f('uki-tampered.efi'), tampered);
    assert.notEqual(run('sbverify', ['--cert', keys.db.files.crt, f('uki-tampered.efi')]).status, 0, 'tampered UKI still verifies');

    const conf = 'timeout 0\nconsole-mode keep\n';
    const mk = (name: string, files: EspFile[]) => {
      const esp = buildEsp(files, 64, f(`${name}.esp`));
      disks[name] = buildGptDisk(f(`${name}.img`), [{ type: ESP_TYPE, name: 'ESP', sizeMiB: 64, image: esp }]).out;
      rmSync(esp);
    };
    mk('D', espFiles(f('sdboot-signed.efi'), f('uki-signed.efi'), conf));
    mk('E', espFiles(f('sdboot-signed.efi'), f('uki-unsigned.efi'), conf));
    mk('F', espFiles(f('sdboot-signed.efi'), f('uki-tampered.efi'), conf));
    mk('G', espFiles(SYSTEMD_BOOT_EFI, f('uki-signed.efi'), conf));
    mk(
      'H',
      espFiles(f('sdboot-signed.efi'), f('uki-signed.efi'), 'timeout 0\nconsole-mode keep\nsecure-boot-enroll force\n',
        (['PK', 'KEK', 'db'] as const).map((n) => ({ path: `loader/keys/auto/${n}.auth`, data: readFileSync(path.join(keys.autoEnrollDir, `${n}.auth`)) }))),
    );
    varsSb = enrollVars(f('vars-sb.fd'), { pk: keys.PK.files.crt, kek: keys.KEK.files.crt, db: keys.db.files.crt, ownerGuid: keys.ownerGuid });
    varsSetup = setupModeVars(f('vars-setup.fd'));
  });

  after(() => {
    if (work && process.env.BOOTCFS_KEEP !== '1') rmSync(work, { recursive: true, force: true });
  });

  const markerRe = new RegExp(`${MARKER} .*`);
  /** For the cases that must boot: a refusal, systemd-boot's menu (no usable entry) or OVMF's setup UI end the run early. */
  const notBooting = new RegExp(`${REFUSAL_RE.source}|Reboot Into Firmware Interface|Boot Maintenance Manager`);

  test('D: signed systemd-boot + signed UKI boot with Secure Boot enforced', async (t) => {
    const r = await runOvmf({ disk: disks.D!, vars: varsSb, timeoutMs: BOOT_TIMEOUT_MS, until: /BOOTCFS-SB-MARKER-5c1e [^\n]*\n/, refusal: notBooting });
    t.diagnostic(`toolchain: ${tc.name}; ${(r.durationMs / 1000).toFixed(1)} s`);
    assert.ok(r.matched, `no marker; refused=${r.refused} (${r.refusalLine}) timedOut=${r.timedOut}\n${r.serial.slice(-3000)}`);
    const line = markerRe.exec(r.serial)![0];
    t.diagnostic(line);
    assert.match(line, /sb='Secure boot enabled'/i);
    assert.match(line, /cmdline='[^']*bootcfs\.sbtest=1/);
  });

  test('E: unsigned UKI is refused', async (t) => {
    const r = await runOvmf({ disk: disks.E!, vars: varsSb, timeoutMs: REFUSE_TIMEOUT_MS, until: markerRe });
    t.diagnostic(`${(r.durationMs / 1000).toFixed(1)} s: ${r.refusalLine}`);
    assert.ok(!r.matched, 'unsigned UKI booted under Secure Boot');
    assert.ok(r.refused, `no refusal seen (timedOut=${r.timedOut})\n${r.serial.slice(-3000)}`);
    assert.match(r.refusalLine!, UKI_REFUSED);
  });

  test('F: signed UKI with one changed cmdline byte is refused', async (t) => {
    const r = await runOvmf({ disk: disks.F!, vars: varsSb, timeoutMs: REFUSE_TIMEOUT_MS, until: markerRe });
    t.diagnostic(`${(r.durationMs / 1000).toFixed(1)} s: ${r.refusalLine}`);
    assert.ok(!r.matched, 'tampered UKI booted under Secure Boot');
    assert.ok(r.refused, `no refusal seen (timedOut=${r.timedOut})\n${r.serial.slice(-3000)}`);
    assert.match(r.refusalLine!, UKI_REFUSED);
  });

  test('G: unsigned systemd-boot is refused by the firmware', async (t) => {
    const r = await runOvmf({ disk: disks.G!, vars: varsSb, timeoutMs: REFUSE_TIMEOUT_MS, until: markerRe });
    t.diagnostic(`${(r.durationMs / 1000).toFixed(1)} s: ${r.refusalLine}`);
    assert.ok(!r.matched, 'unsigned systemd-boot booted under Secure Boot');
    assert.ok(r.refused, `no refusal seen (timedOut=${r.timedOut})\n${r.serial.slice(-3000)}`);
    assert.match(r.refusalLine!, /BdsDxe: failed to load .*Access Denied/);
    assert.doesNotMatch(r.serial, /systemd-boot/i, 'systemd-boot ran although unsigned');
  });

  test('H: systemd-boot auto-enrolls our .auth keys from setup mode, reboots, boots under Secure Boot', async (t) => {
    const r = await runOvmf({
      disk: disks.H!,
      vars: varsSetup,
      allowReboot: true,
      timeoutMs: BOOT_TIMEOUT_MS * 2,
      until: /BOOTCFS-SB-MARKER-5c1e [^\n]*\n/,
      refusal: notBooting,
    });
    t.diagnostic(`${(r.durationMs / 1000).toFixed(1)} s`);
    try {
      assert.match(r.serial, /Custom Secure Boot keys successfully enrolled/, `no enrollment\n${r.serial.slice(-3000)}`);
      assert.ok(r.matched, `no marker after enrollment; refused=${r.refused} (${r.refusalLine}) timedOut=${r.timedOut}\n${r.serial.slice(-3000)}`);
      const line = markerRe.exec(r.serial)![0];
      t.diagnostic(line);
      assert.match(line, /sb='Secure boot enabled'/i);
      // the firmware's store now holds exactly our certificates
      const vars = printVars(r.varsUsed);
      for (const n of ['PK', 'KEK', 'db'] as const) {
        assert.ok(vars.includes(`bootcfs vm test ${n}`), `${n} certificate not in the enrolled variables`);
      }
    } finally {
      rmSync(r.varsUsed, { force: true });
    }
  });
});
