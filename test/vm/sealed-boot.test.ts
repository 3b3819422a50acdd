/**
 * vm tier: the output of `build-sealed` boots under Secure Boot. Keys from `bootcfs keys generate`
 * (library), the test image sealed with `bootcfs container build-sealed`, DEST unpacked, and its signed
 * systemd-boot and UKI put on an ESP; OVMF with our PK/KEK/db enrolled and Secure Boot enforced boots it,
 * and the UKI's initramfs prints the kernel command line: it carries `composefs=<the sealed digest>`.
 * One TCG boot (~20 s).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { generateSecureBootKeys } from '../../src/secureboot/index.js';
import { BOOTCFS_BIN, isRoot, run } from '../helpers/ref.js';
import { writeBootableImage, BOOT_MARKER } from '../helpers/bootable-image.js';
import { ESP_TYPE, buildEsp, buildGptDisk, enrollVars, requireFirmwareTools, runOvmf } from '../helpers/ovmf.js';

let work: string;
before(() => {
  requireFirmwareTools();
  work = fs.mkdtempSync(path.join(process.env.BOOTCFS_VM_SCRATCH ?? os.tmpdir(), 'bootcfs-sealed-boot-'));
});
after(() => fs.rmSync(work, { recursive: true, force: true }));

test('build-sealed output boots under Secure Boot with composefs=<digest> on the command line', async () => {
  const keys = await generateSecureBootKeys(path.join(work, 'keys'), { commonName: 'bootcfs sealed-boot test' });
  const img = writeBootableImage(path.join(work, 'src'));
  const b = run(BOOTCFS_BIN, ['container', 'build-sealed', img.ref, '--output', `oci:${path.join(work, 'dest')}:sealed`,
    '--key', path.join(work, 'keys/db.key'), '--cert', path.join(work, 'keys/db.crt'), '--json'], { env: { ...process.env, TMPDIR: work } });
  assert.equal(b.status, 0, b.stderr.toString());
  const res = JSON.parse(b.stdout.toString()) as { digest: string; ukiPath: string };
  const u = run('/usr/bin/umoci', ['unpack', ...(isRoot ? [] : ['--rootless']), '--image', `${path.join(work, 'dest')}:sealed`, path.join(work, 'bundle')]);
  assert.equal(u.status, 0, u.stderr.toString());
  const rootfs = path.join(work, 'bundle/rootfs');
  const esp = buildEsp([
    { path: 'EFI/BOOT/BOOTX64.EFI', data: path.join(rootfs, 'boot/EFI/systemd/systemd-bootx64.efi') },
    { path: 'EFI/Linux/sealed.efi', data: path.join(rootfs, res.ukiPath) },
    { path: 'loader/loader.conf', data: Buffer.from('timeout 0\nconsole-mode keep\neditor no\n') },
  ], 64, path.join(work, 'esp.img'));
  const disk = buildGptDisk(path.join(work, 'disk.img'), [{ type: ESP_TYPE, name: 'EFI-SYSTEM', sizeMiB: 64, image: esp }]).out;
  const vars = enrollVars(path.join(work, 'vars.fd'), {
    pk: path.join(work, 'keys/PK.crt'), kek: path.join(work, 'keys/KEK.crt'), db: path.join(work, 'keys/db.crt'), ownerGuid: keys.ownerGuid,
  });
  const r = await runOvmf({ disk, vars, secureBoot: true, timeoutMs: 300_000, until: new RegExp(`${BOOT_MARKER}.*cmdline='[^']*'`) });
  assert.ok(r.matched, `no marker (refused=${r.refused} ${r.refusalLine ?? ''}); serial tail:\n${r.serial.slice(-3000)}`);
  const line = r.serial.split('\n').find((l) => l.includes(BOOT_MARKER))!;
  assert.match(line, new RegExp(`composefs=${res.digest}( |')`), line);
  assert.match(line, /sb='secure boot enabled'/i, line);
  console.log(`sealed boot: marker after ${(r.durationMs / 1000).toFixed(1)} s`);
});
