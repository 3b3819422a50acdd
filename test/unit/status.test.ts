/**
 * unit tier: `bootcfs status` (src/deploy/status.ts, src/deploy/yaml.ts, src/cli/commands/status.ts) on
 * synthetic installed systems built in a temp dir: a real composefs repository with images pulled from
 * OCI layouts, state/deploy/<id>/ with origin files, BLS Type 1 entries and Type 2 entries pointing at
 * PE files (the systemd stub + a .cmdline section) whose composefs= names the deployment.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Repository } from '../../src/repository/index.js';
import { pullImage } from '../../src/oci/pull.js';
import { writeOrigin, originFileName, type DeploymentOrigin } from '../../src/boot/origin.js';
import { writeBlsEntry, entryFileName, sortKey, ukiFileName, type1Dir, UKI_DIR, type BlsEntry } from '../../src/boot/bls.js';
import { addSections } from '../../src/pe/pe-writer.js';
import { SCN_CNT_INITIALIZED_DATA, SCN_MEM_READ } from '../../src/pe/pe.js';
import {
  readHostStatus, hostToPlain, formatJson, formatYaml, formatHumanReadable, filterToBooted, normalizeTimestamp, imageReferenceFromOrigin,
  parseStagedDeployment, usrOverlayFromMountinfo, readUkiCmdline, type BootcHost, type BootEntry, type HostStatusOptions,
} from '../../src/deploy/status.js';
import { toYaml, isSafePlainScalar } from '../../src/deploy/yaml.js';
import { BootcfsError } from '../../src/errors.js';
import { buildTar, writeOciLayout } from '../helpers/oci-layout.js';
import { REPO_ROOT } from '../helpers/ref.js';

const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';

// ------------------------------------------------------------------------------------------------
// Fixture: one repository with three images, shared by all scenarios (each scenario copies nothing:
// deployments point at it through their origin's manifest digest)

interface Img { ref: string; manifestDigest: string; id: string; version: string | null; timestamp: string | null; arch: string }

let fixture: Promise<{ base: string; images: Img[] }> | undefined;

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** Adds a manifest with annotations for an existing image of the layout (the helper writes none) under `tag`. */
function annotateManifest(layout: string, manifestDigest: string, tag: string, annotations: Record<string, string>): string {
  const blob = (d: string): string => path.join(layout, 'blobs/sha256', d.slice(7));
  const m = JSON.parse(fs.readFileSync(blob(manifestDigest), 'utf8')) as Record<string, unknown>;
  const bytes = Buffer.from(JSON.stringify({ ...m, annotations }));
  const digest = sha256(bytes);
  fs.writeFileSync(blob(digest), bytes);
  const indexPath = path.join(layout, 'index.json');
  const index = JSON.parse(fs.readFileSync(indexPath, 'utf8')) as { manifests: Array<Record<string, unknown>> };
  index.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: bytes.length, annotations: { 'org.opencontainers.image.ref.name': tag } });
  fs.writeFileSync(indexPath, JSON.stringify(index));
  return digest;
}

async function getFixture(): Promise<{ base: string; images: Img[] }> {
  fixture ??= (async () => {
    const base = fs.mkdtempSync(path.join(tmpdir(), 'bootcfs-status-'));
    process.on('exit', () => fs.rmSync(base, { recursive: true, force: true }));
    const layout = path.join(base, 'layout');
    const layer = (n: number): Buffer => buildTar([
      { path: 'usr/', type: 'dir', mode: 0o755 },
      { path: 'usr/lib/', type: 'dir', mode: 0o755 },
      { path: 'usr/lib/os-release', type: 'reg', content: Buffer.from(`ID=testos\nVERSION_ID=${n}\n`) },
      { path: `usr/lib/file${n}`, type: 'reg', content: Buffer.alloc(200 + n, n) },
    ]);
    // v1: version as a config label, created with an offset and nanoseconds
    const w1 = writeOciLayout(layout, {
      layers: [{ tar: layer(1) }], tag: 'v1',
      config: { created: '2025-01-02T03:04:05.123456789+01:00', config: { Labels: { 'org.opencontainers.image.version': '42.20250102.0' } } },
    });
    // v2: version as a manifest annotation (wins over the label), created in UTC; arm64
    const w2 = writeOciLayout(layout, {
      layers: [{ tar: layer(2) }], tag: 'v2-plain', architecture: 'arm64',
      config: { created: '2025-02-03T00:00:00Z', config: { Labels: { 'org.opencontainers.image.version': 'label-loses' } } },
    });
    const m2 = annotateManifest(layout, w2.manifestDigest, 'v2', { 'org.opencontainers.image.version': '43.0' });
    // v3: no version, no created
    writeOciLayout(layout, { layers: [{ tar: layer(3) }], tag: 'v3' });
    const repo = await Repository.init(path.join(base, 'repo'), { insecure: true });
    const images: Img[] = [];
    try {
      const specs: Array<[string, string, string | null, string | null, string]> = [
        ['v1', 'quay.io/example/os:v1', '42.20250102.0', '2025-01-02T02:04:05.123456789Z', 'amd64'],
        ['v2', 'quay.io/example/os:v2', '43.0', '2025-02-03T00:00:00Z', 'arm64'],
        ['v3', 'localhost/os-next', null, null, 'amd64'],
      ];
      for (const [tag, ref, version, timestamp, arch] of specs) {
        const r = await pullImage(repo, `oci:${layout}:${tag}`, { tag: `localhost/bootc-${tag}` });
        if (tag === 'v2') assert.equal(r.manifestDigest, m2);
        images.push({ ref, manifestDigest: r.manifestDigest, id: r.imageId.toString('hex'), version, timestamp, arch });
      }
    } finally {
      await repo.close();
    }
    assert.equal(images[0]!.id.length, 128);
    void w1;
    return { base, images };
  })();
  return fixture;
}

let seq = 0;

interface Sys {
  root: string;
  esp: string;
  run: string;
  warnings: string[];
  opts(extra?: Partial<HostStatusOptions>): HostStatusOptions;
}

/** A fresh system (physical root, ESP, /run) whose repository is a symlink to the shared one. */
async function newSystem(): Promise<Sys & { images: Img[] }> {
  const { base, images } = await getFixture();
  const dir = path.join(base, `sys${seq++}`);
  const root = path.join(dir, 'root');
  const esp = path.join(dir, 'esp');
  const run = path.join(dir, 'run');
  fs.mkdirSync(path.join(root, 'state/os/default/var'), { recursive: true });
  fs.mkdirSync(path.join(esp, 'loader/entries'), { recursive: true });
  fs.mkdirSync(run, { recursive: true });
  fs.symlinkSync(path.join(base, 'repo'), path.join(root, 'composefs'));
  const warnings: string[] = [];
  return {
    root, esp, run, warnings, images,
    opts: (extra = {}) => ({ sysroot: root, bootDir: esp, runDir: run, warn: (m: string) => warnings.push(m), ...extra }),
  };
}

function deploy(sys: Sys, img: Img | undefined, id: string, o: Partial<DeploymentOrigin> = {}): void {
  const d = path.join(sys.root, 'state/deploy', id);
  fs.mkdirSync(path.join(d, 'etc'), { recursive: true });
  fs.symlinkSync('../../os/default/var', path.join(d, 'var'));
  const origin: DeploymentOrigin = {
    ...(img ? { imageReference: `${img.ref.startsWith('localhost/') ? 'containers-storage:' : 'docker://'}${img.ref}`, manifestDigest: img.manifestDigest } : {}),
    bootType: 'bls',
    bootDigest: createHash('sha256').update(id).digest('hex'),
    extra: [],
    ...o,
  };
  fs.writeFileSync(path.join(d, originFileName(id)), writeOrigin(origin));
}

function blsEntry(sys: Sys, id: string, primary: boolean, opts: { staged?: boolean; optional?: boolean; version?: string } = {}): void {
  const version = opts.version ?? (primary ? '2' : '1');
  const e: BlsEntry = {
    title: `TestOS ${version}`, version, linux: `/EFI/Linux/${type1Dir(id)}/vmlinuz`, initrd: [`/EFI/Linux/${type1Dir(id)}/initrd`],
    options: [`root=UUID=1234 rw composefs=${opts.optional ? '?' : ''}${id} console=ttyS0`], sortKey: sortKey('testos', primary), extra: [],
  };
  const dir = path.join(sys.esp, opts.staged ? 'loader/entries.staged' : 'loader/entries');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, entryFileName('testos', version, primary)), writeBlsEntry(e));
}

const stub = fs.readFileSync(STUB);

/** A UKI-like PE (the systemd stub + .cmdline) at EFI/Linux/bootc/bootc_composefs-<fileId>.efi, booting `cmdlineId`. */
function ukiEntry(sys: Sys, id: string, primary: boolean, opts: { staged?: boolean; key?: 'efi' | 'uki'; cmdlineId?: string; optional?: boolean; noFile?: boolean } = {}): void {
  const version = primary ? '2' : '1';
  const rel = `${UKI_DIR}/${ukiFileName(id)}`;
  if (!opts.noFile) {
    const cmdline = `rw composefs=${opts.optional ? '?' : ''}${opts.cmdlineId ?? id} console=ttyS0`;
    const pe = addSections(stub, [
      { name: '.cmdline', data: Buffer.from(`${cmdline}\0`), characteristics: SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ },
      { name: '.linux', data: Buffer.alloc(3000, 7), characteristics: SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ },
    ]);
    fs.mkdirSync(path.join(sys.esp, UKI_DIR), { recursive: true });
    fs.writeFileSync(path.join(sys.esp, rel), pe);
  }
  const e: BlsEntry = { title: `TestOS ${version}`, version, [opts.key ?? 'uki']: `/${rel}`, initrd: [], options: [], sortKey: sortKey('testos', primary), extra: [] };
  const dir = path.join(sys.esp, opts.staged ? 'loader/entries.staged' : 'loader/entries');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, entryFileName('testos', version, primary)), writeBlsEntry(e));
}

function stage(sys: Sys, id: string, locked: boolean): void {
  fs.mkdirSync(path.join(sys.run, 'composefs'), { recursive: true });
  fs.writeFileSync(path.join(sys.run, 'composefs/staged-deployment'), JSON.stringify({ depl_id: id, finalization_locked: locked }));
}

const fakeId = (c: string): string => c.repeat(128);

// ------------------------------------------------------------------------------------------------
// Shape checks against bootc-composefs.md §5.3 (field by field)

/** Key sets (canonical JSON sorts keys; the declaration order is checked on hostToPlain and the YAML). */
const keysOf = (o: unknown): string[] => Object.keys(o as object).sort();
const sortedList = (l: string[]): string[] => [...l].sort();

const ENTRY_KEYS = ['image', 'cachedUpdate', 'incompatible', 'pinned', 'softRebootCapable', 'downloadOnly', 'store', 'ostree', 'composefs'];
const COMPOSEFS_KEYS = ['verity', 'bootType', 'bootloader', 'bootDigest', 'missingVerityAllowed'];
const IMAGE_KEYS = ['image', 'version', 'timestamp', 'imageDigest', 'architecture'];

function checkEntryShape(e: Record<string, unknown>, img: Img | null, id: string, bootType: 'Bls' | 'Uki'): void {
  assert.deepEqual(keysOf(e), sortedList(ENTRY_KEYS));
  assert.equal(e.cachedUpdate, null);
  assert.equal(e.incompatible, false);
  assert.equal(e.pinned, false);
  assert.equal(e.softRebootCapable, false);
  assert.equal(e.store, null);
  assert.equal(e.ostree, null);
  const c = e.composefs as Record<string, unknown>;
  assert.deepEqual(keysOf(c), sortedList(COMPOSEFS_KEYS));
  assert.equal(c.verity, id);
  assert.equal(c.bootType, bootType);
  assert.equal(c.bootloader, 'systemd');
  assert.equal(c.bootDigest, createHash('sha256').update(id).digest('hex'));
  if (img === null) {
    assert.equal(e.image, null);
    return;
  }
  const i = e.image as Record<string, unknown>;
  assert.deepEqual(keysOf(i), sortedList(IMAGE_KEYS));
  assert.deepEqual(i.image, { image: img.ref, transport: img.ref.startsWith('localhost') ? 'containers-storage' : 'registry' });
  assert.equal(i.version, img.version);
  assert.equal(i.timestamp, img.timestamp);
  assert.equal(i.imageDigest, img.manifestDigest);
  assert.equal(i.architecture, img.arch);
}

function checkHostShape(doc: Record<string, unknown>): void {
  assert.deepEqual(keysOf(doc), sortedList(['apiVersion', 'kind', 'metadata', 'spec', 'status']));
  assert.equal(doc.apiVersion, 'org.containers.bootc/v1');
  assert.equal(doc.kind, 'BootcHost');
  assert.deepEqual(doc.metadata, { name: 'host' });
  assert.deepEqual(keysOf(doc.spec), sortedList(['image', 'bootOrder']));
  const st = doc.status as Record<string, unknown>;
  const expected = ['staged', 'booted', 'rollback', ...('otherDeployments' in st ? ['otherDeployments'] : []), 'rollbackQueued', 'type', 'usrOverlay', 'readOnly'];
  assert.deepEqual(keysOf(st), sortedList(expected));
  if ('otherDeployments' in st) assert.ok((st.otherDeployments as unknown[]).length > 0, 'otherDeployments is omitted when empty');
  assert.equal(st.type, null);
}

/** JSON document as the CLI prints it, parsed, with its shape checked. */
function jsonDoc(host: BootcHost): Record<string, unknown> {
  const text = formatJson(host);
  assert.ok(!/\s/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, '""')), 'canonical JSON has no whitespace outside strings');
  const doc = JSON.parse(text) as Record<string, unknown>;
  // keys sorted at every level
  const sorted = (v: unknown): void => {
    if (v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) return v.forEach(sorted);
    const k = Object.keys(v);
    assert.deepEqual(k, [...k].sort());
    Object.values(v).forEach(sorted);
  };
  sorted(doc);
  // same content as the declaration-ordered document
  const plain = JSON.parse(JSON.stringify(host)) as { status: Record<string, unknown> };
  if ((plain.status.otherDeployments as unknown[]).length === 0) delete plain.status.otherDeployments;
  assert.deepEqual(doc, plain);
  return doc;
}

function entryDoc(doc: Record<string, unknown>, slot: string): Record<string, unknown> {
  return (doc.status as Record<string, unknown>)[slot] as Record<string, unknown>;
}

// ------------------------------------------------------------------------------------------------
// Scenarios

test('BLS: booted primary + rollback secondary; JSON shape field by field', async () => {
  const sys = await newSystem();
  const [a, b] = sys.images;
  deploy(sys, a, a!.id);
  deploy(sys, b, b!.id);
  blsEntry(sys, a!.id, true);
  blsEntry(sys, b!.id, false);
  const host = await readHostStatus(sys.opts({ cmdline: `BOOT_IMAGE=x root=UUID=1234 rw composefs=${a!.id}` }));
  const doc = jsonDoc(host);
  checkHostShape(doc);
  checkEntryShape(entryDoc(doc, 'booted'), a!, a!.id, 'Bls');
  checkEntryShape(entryDoc(doc, 'rollback'), b!, b!.id, 'Bls');
  assert.equal(entryDoc(doc, 'staged'), null);
  assert.equal((doc.status as Record<string, unknown>).rollbackQueued, false);
  assert.deepEqual(doc.spec, { image: { image: a!.ref, transport: 'registry' }, bootOrder: 'default' });
  assert.equal(entryDoc(doc, 'booted').downloadOnly, false);
  assert.equal((entryDoc(doc, 'booted').composefs as Record<string, unknown>).missingVerityAllowed, false);
  assert.deepEqual(sys.warnings, []);
});

test('BLS: rollback queued (the default entry is the rollback deployment) → bootOrder rollback', async () => {
  const sys = await newSystem();
  const [a, b] = sys.images;
  deploy(sys, a, a!.id);
  deploy(sys, b, b!.id);
  blsEntry(sys, b!.id, true);
  blsEntry(sys, a!.id, false);
  const host = await readHostStatus(sys.opts({ cmdline: `rw composefs=${a!.id}` }));
  assert.equal(host.status.booted?.composefs.verity, a!.id);
  assert.equal(host.status.rollback?.composefs.verity, b!.id);
  assert.equal(host.status.rollbackQueued, true);
  assert.equal(host.spec.bootOrder, 'rollback');
  assert.deepEqual(host.spec.image, { image: a!.ref, transport: 'registry' });
});

for (const key of ['uki', 'efi'] as const) {
  test(`UKI (${key} key): ids from the UKI .cmdline; queued and not queued (bootc's UKI branch is inverted)`, async () => {
    for (const queued of [false, true]) {
      const sys = await newSystem();
      const [a, b] = sys.images;
      deploy(sys, a, a!.id, { bootType: 'uki' });
      deploy(sys, b, b!.id, { bootType: 'uki' });
      ukiEntry(sys, a!.id, !queued, { key });
      ukiEntry(sys, b!.id, queued, { key });
      const host = await readHostStatus(sys.opts({ cmdline: `rw composefs=${a!.id}` }));
      const doc = jsonDoc(host);
      checkHostShape(doc);
      checkEntryShape(entryDoc(doc, 'booted'), a!, a!.id, 'Uki');
      checkEntryShape(entryDoc(doc, 'rollback'), b!, b!.id, 'Uki');
      assert.equal(host.status.rollbackQueued, queued);
      assert.equal(host.spec.bootOrder, queued ? 'rollback' : 'default');
      assert.deepEqual(sys.warnings, []);
    }
  });
}

test('UKI: the .cmdline wins over the file name; missing UKI falls back to the file name with a warning', async () => {
  const sys = await newSystem();
  const [a, b] = sys.images;
  deploy(sys, a, a!.id, { bootType: 'uki' });
  deploy(sys, b, b!.id, { bootType: 'uki' });
  // file named after a fake id, but its .cmdline boots a
  ukiEntry(sys, fakeId('e'), true, { cmdlineId: a!.id, optional: true });
  ukiEntry(sys, b!.id, false, { noFile: true });
  const host = await readHostStatus(sys.opts({ cmdline: `rw composefs=${a!.id}` }));
  assert.equal(host.status.booted?.composefs.verity, a!.id);
  assert.equal(host.status.rollback?.composefs.verity, b!.id);
  assert.equal(host.status.booted?.composefs.missingVerityAllowed, false, 'the booted one follows the running command line');
  assert.equal(sys.warnings.length, 2, sys.warnings.join('\n'));
  assert.ok(sys.warnings.join('\n').includes(`boots composefs=${a!.id}, not the id in its file name`));
  assert.match(sys.warnings.join('\n'), /cannot read .*bootc_composefs-.*using the id in its file name/);
  assert.equal(await readUkiCmdline(path.join(sys.esp, UKI_DIR, ukiFileName(fakeId('e')))), `rw composefs=?${a!.id} console=ttyS0`);
});

test('staged (download-only) from entries.staged + /run marker; rollback from loader/entries; spec.image = staged', async () => {
  const sys = await newSystem();
  const [a, b, c] = sys.images;
  for (const i of [a, b, c]) deploy(sys, i, i!.id);
  blsEntry(sys, a!.id, true);
  blsEntry(sys, b!.id, false);
  blsEntry(sys, c!.id, true, { staged: true, version: '3' });
  blsEntry(sys, a!.id, false, { staged: true, version: '2' });
  for (const locked of [true, false]) {
    stage(sys, c!.id, locked);
    const host = await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` }));
    const doc = jsonDoc(host);
    checkHostShape(doc);
    checkEntryShape(entryDoc(doc, 'staged'), c!, c!.id, 'Bls');
    assert.equal(host.status.staged?.downloadOnly, locked);
    assert.equal(host.status.booted?.composefs.verity, a!.id);
    assert.equal(host.status.rollback?.composefs.verity, b!.id);
    assert.deepEqual(host.status.otherDeployments, []);
    assert.equal(host.status.rollbackQueued, false);
    assert.deepEqual(host.spec.image, { image: 'localhost/os-next', transport: 'containers-storage' });
    // --booted drops staged and rollback
    const only = filterToBooted(host);
    assert.equal(only.status.staged, null);
    assert.equal(only.status.rollback, null);
    assert.equal(only.status.booted?.composefs.verity, a!.id);
  }
  // without the /run marker the staged entry's deployment is just another deployment
  fs.rmSync(path.join(sys.run, 'composefs'), { recursive: true });
  const host = await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` }));
  assert.equal(host.status.staged, null);
  assert.deepEqual(host.status.otherDeployments.map((e) => e.composefs.verity), [c!.id]);
});

test('missing origin: warned ("No origin file for deployment <id>") and skipped; state-only deployment → otherDeployments', async () => {
  const sys = await newSystem();
  const [a, b, c] = sys.images;
  deploy(sys, a, a!.id);
  blsEntry(sys, a!.id, true);
  blsEntry(sys, b!.id, false); // entry without state/origin
  deploy(sys, c, c!.id); // state dir without an entry
  fs.mkdirSync(path.join(sys.root, 'state/deploy', fakeId('d'), 'etc'), { recursive: true }); // state dir, no origin
  fs.mkdirSync(path.join(sys.root, 'state/deploy/not-a-digest'), { recursive: true }); // ignored
  const host = await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` }));
  assert.deepEqual(sys.warnings.sort(), [`No origin file for deployment ${b!.id}`, `No origin file for deployment ${fakeId('d')}`].sort());
  assert.equal(host.status.booted?.composefs.verity, a!.id);
  assert.equal(host.status.rollback, null);
  assert.deepEqual(host.status.otherDeployments.map((e) => e.composefs.verity), [c!.id]);
  const doc = jsonDoc(host);
  checkHostShape(doc);
  checkEntryShape((doc.status as { otherDeployments: Array<Record<string, unknown>> }).otherDeployments[0]!, c!, c!.id, 'Bls');
});

test('deployment without an image reference, with ?-entries, origin without manifest digest', async () => {
  const sys = await newSystem();
  const [a] = sys.images;
  const bare = fakeId('b');
  const noManifest = fakeId('c');
  deploy(sys, undefined, bare);
  deploy(sys, a, noManifest, { manifestDigest: undefined });
  blsEntry(sys, bare, true, { optional: true });
  blsEntry(sys, noManifest, false, { optional: true });
  const host = await readHostStatus(sys.opts({ cmdline: `composefs=?${bare}` }));
  const doc = jsonDoc(host);
  checkHostShape(doc);
  checkEntryShape(entryDoc(doc, 'booted'), null, bare, 'Bls');
  checkEntryShape(entryDoc(doc, 'rollback'), null, noManifest, 'Bls');
  assert.equal(host.status.booted?.composefs.missingVerityAllowed, true);
  assert.equal(host.status.rollback?.composefs.missingVerityAllowed, true);
  assert.equal(host.spec.image, null);
  assert.equal(sys.warnings.length, 1);
  assert.match(sys.warnings[0]!, /no \[image\] manifest_digest/);
  assert.equal(formatHumanReadable(host), [
    '● Booted composefs',
    `            Commit: ${bare}`,
    '',
    '  Rollback composefs',
    `              Commit: ${noManifest}`,
    '',
  ].join('\n'));
});

test('offline root: nothing booted, no rollback, every deployment in otherDeployments in boot order, no /run', async () => {
  const sys = await newSystem();
  const [a, b] = sys.images;
  deploy(sys, a, a!.id);
  deploy(sys, b, b!.id);
  blsEntry(sys, b!.id, true);
  blsEntry(sys, a!.id, false);
  stage(sys, a!.id, false); // ignored: offline has no runDir
  const host = await readHostStatus({ sysroot: sys.root, bootDir: sys.esp, warn: (m) => sys.warnings.push(m) });
  assert.equal(host.status.booted, null);
  assert.equal(host.status.staged, null);
  assert.equal(host.status.rollback, null);
  assert.deepEqual(host.status.otherDeployments.map((e) => e.composefs.verity), [b!.id, a!.id]);
  assert.equal(host.status.rollbackQueued, false);
  assert.deepEqual(host.spec, { image: { image: b!.ref, transport: 'registry' }, bootOrder: 'default' });
  checkHostShape(jsonDoc(host));
  // no boot dir at all: every deployment with an origin is "other", in id order
  const noBoot = await readHostStatus({ sysroot: sys.root, warn: (m) => sys.warnings.push(m) });
  assert.deepEqual(noBoot.status.otherDeployments.map((e) => e.composefs.verity), [a!.id, b!.id].sort());
  assert.equal(noBoot.status.rollback, null);
  assert.deepEqual(sys.warnings, []);
  // an empty root: the empty document bootc prints for a non-bootc system
  const empty = fs.mkdtempSync(path.join(tmpdir(), 'bootcfs-status-empty-'));
  try {
    const e = await readHostStatus({ sysroot: empty });
    assert.equal(formatJson(e), '{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","metadata":{"name":"host"},"spec":{"bootOrder":"default","image":null},"status":{"booted":null,"readOnly":false,"rollback":null,"rollbackQueued":false,"staged":null,"type":null,"usrOverlay":null}}');
    assert.equal(formatHumanReadable(e), 'System is not deployed via bootc.\n');
  } finally {
    fs.rmSync(empty, { recursive: true });
  }
});

test('conflicting boot types are an error; foreign and broken entries are ignored', async () => {
  const sys = await newSystem();
  const [a, b] = sys.images;
  deploy(sys, a, a!.id);
  deploy(sys, b, b!.id, { bootType: 'uki' });
  blsEntry(sys, a!.id, true);
  ukiEntry(sys, b!.id, false);
  await assert.rejects(readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` })), (e: unknown) => e instanceof BootcfsError && /Conflicting boot types/.test(e.message));

  const sys2 = await newSystem();
  deploy(sys2, a, a!.id);
  blsEntry(sys2, a!.id, true);
  fs.writeFileSync(path.join(sys2.esp, 'loader/entries/other-os.conf'), 'title Other\nversion 1\nlinux /vmlinuz\noptions root=/dev/sda2\nsort-key aaa\n');
  fs.writeFileSync(path.join(sys2.esp, 'loader/entries/broken.conf'), 'title Broken\n');
  fs.writeFileSync(path.join(sys2.esp, 'loader/entries/README'), 'not an entry');
  const host = await readHostStatus(sys2.opts({ cmdline: `composefs=${a!.id}` }));
  assert.equal(host.status.booted?.composefs.verity, a!.id);
  assert.equal(host.status.rollbackQueued, false, 'a foreign entry sorted first is not a queued rollback');
  assert.equal(sys2.warnings.length, 1);
  assert.match(sys2.warnings[0]!, /broken\.conf/);
});

test('human-readable output (bootc layout), verbose rows, usr overlay', async () => {
  const sys = await newSystem();
  const [a, b, c] = sys.images;
  for (const i of [a, b, c]) deploy(sys, i, i!.id);
  blsEntry(sys, a!.id, true);
  blsEntry(sys, b!.id, false);
  blsEntry(sys, c!.id, true, { staged: true, version: '3' });
  stage(sys, c!.id, true);
  const host = await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}`, usrOverlay: usrOverlayFromMountinfo('100 1 0:50 / /usr rw,relatime shared:1 - overlay overlay rw\n') }));
  assert.equal(formatHumanReadable(host), [
    '  Staged image: containers-storage:localhost/os-next',
    `        Digest: ${c!.manifestDigest} (amd64)`,
    `        Verity: ${c!.id}`,
    '',
    `● Booted image: ${a!.ref}`,
    `        Digest: ${a!.manifestDigest} (amd64)`,
    `        Verity: ${a!.id}`,
    '       Version: 42.20250102.0 (2025-01-02T02:04:05Z)',
    '  /usr overlay: transient, read/write',
    '',
    `  Rollback image: ${b!.ref}`,
    `          Digest: ${b!.manifestDigest} (arm64)`,
    `          Verity: ${b!.id}`,
    '         Version: 43.0 (2025-02-03T00:00:00Z)',
    '',
  ].join('\n'));
  const v = formatHumanReadable(host, { verbose: true });
  assert.match(v, /^ {3}Soft-reboot: no\n {6}FsVerity: Enforced\n Download-only: yes\n\n● Booted/m);
  assert.match(v, /\n {3}Soft-reboot: no\n {6}FsVerity: Enforced\n\n {2}Rollback/);
  assert.equal(host.status.usrOverlay?.accessMode, 'readWrite');
  // "Timestamp:" when there is no version; "Other image" prefix
  fs.rmSync(path.join(sys.run, 'composefs'), { recursive: true });
  const h2 = await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` }));
  const other = formatHumanReadable(h2).split('\n\n')[2]!;
  assert.equal(other, [`   Other image: containers-storage:localhost/os-next`, `        Digest: ${c!.manifestDigest} (amd64)`, `        Verity: ${c!.id}\n`].join('\n'));
  const withTs = structuredClone(h2);
  withTs.status.otherDeployments[0]!.image!.timestamp = '2024-05-06T07:08:09.5Z';
  assert.match(formatHumanReadable(withTs), / {5}Timestamp: 2024-05-06T07:08:09Z\n$/);
});

test('YAML: bootc field order, serde_yaml sequence layout, quoting of ambiguous strings', async () => {
  const sys = await newSystem();
  const [a, b, c] = sys.images;
  for (const i of [a, b, c]) deploy(sys, i, i!.id);
  blsEntry(sys, a!.id, true);
  deploy(sys, undefined, fakeId('1')); // all-digit verity must be quoted
  const host = await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` }));
  const y = formatYaml(host);
  // declaration order (bootc's struct order) of the serialized document
  const plain = hostToPlain(host) as { status: { booted: Record<string, unknown>; otherDeployments: unknown[] } };
  assert.deepEqual(Object.keys(plain), ['apiVersion', 'kind', 'metadata', 'spec', 'status']);
  assert.deepEqual(Object.keys(plain.status), ['staged', 'booted', 'rollback', 'otherDeployments', 'rollbackQueued', 'type', 'usrOverlay', 'readOnly']);
  assert.deepEqual(Object.keys(plain.status.booted), ENTRY_KEYS);
  assert.deepEqual(Object.keys(plain.status.booted.image as object), IMAGE_KEYS);
  assert.deepEqual(Object.keys(plain.status.booted.composefs as object), COMPOSEFS_KEYS);
  const lines = y.split('\n');
  assert.deepEqual(lines.slice(0, 9), [
    'apiVersion: org.containers.bootc/v1', 'kind: BootcHost', 'metadata:', '  name: host', 'spec:', '  image:',
    `    image: ${a!.ref}`, '    transport: registry', '  bootOrder: default',
  ]);
  assert.ok(y.includes(`  booted:\n    image:\n      image:\n        image: ${a!.ref}\n        transport: registry\n      version: '42.20250102.0'\n      timestamp: '2025-01-02T02:04:05.123456789Z'\n      imageDigest: ${a!.manifestDigest}\n      architecture: amd64\n    cachedUpdate: null\n    incompatible: false\n    pinned: false\n    softRebootCapable: false\n    downloadOnly: false\n    store: null\n    ostree: null\n    composefs:\n      verity: ${a!.id.match(/^[0-9]/) ? `'${a!.id}'` : a!.id}\n      bootType: Bls\n      bootloader: systemd\n`), y);
  assert.ok(y.includes(`  otherDeployments:\n  - image: null\n    cachedUpdate: null\n`), y);
  assert.ok(y.includes(`\n  - image:\n      image:\n        image: ${b!.ref}\n        transport: registry\n      version: '43.0'\n`), y);
  assert.ok(y.includes(`      verity: '${fakeId('1')}'\n`), y);
  assert.ok(y.endsWith('  rollbackQueued: false\n  type: null\n  usrOverlay: null\n  readOnly: false\n'), y);
  // scalar quoting
  const q: Array<[string, string]> = [
    ['plain', 'plain'], ['', "''"], ['yes', "'yes'"], ['Off', "'Off'"], ['~', "'~'"], ['null', "'null'"], ['1.0', "'1.0'"], ['0o17', "'0o17'"],
    ['12e3', "'12e3'"], ['1:30', "'1:30'"], ['2025-01-01', "'2025-01-01'"], ['-x', "'-x'"], ['a: b', "'a: b'"], ['a #b', "'a #b'"],
    ["it's", "it's"], [" lead", "' lead'"], ['a\nb', '"a\\nb"'], ['tab\t', '"tab\\t"'], ['\u0085', '"\\u0085"'], ['ünï', "'ünï'"],
    ['@x', "'@x'"], ['x,y', "'x,y'"], ['sha256:abc', 'sha256:abc'], ['docker://q/x:1', 'docker://q/x:1'], ['=', "'='"], ['<<', "'<<'"],
  ];
  for (const [s, want] of q) assert.equal(toYaml({ k: s }), `k: ${want}\n`, JSON.stringify(s));
  assert.equal(isSafePlainScalar('42.20250102.0'), false, 'version-like strings are quoted (YAML 1.1 float syntax allows several dots)');
  assert.equal(toYaml({ a: [], b: {}, c: [1, [2, 3], { d: null }] }), 'a: []\nb: {}\nc:\n- 1\n- - 2\n  - 3\n- d: null\n');
});

test('timestamps as chrono prints DateTime<Utc>; image references; staged marker; mountinfo', () => {
  const ts: Array<[string, string | undefined]> = [
    ['2025-01-02T00:00:00Z', '2025-01-02T00:00:00Z'],
    ['2025-01-02T00:00:00.000Z', '2025-01-02T00:00:00Z'],
    ['2025-01-02T00:00:00.5Z', '2025-01-02T00:00:00.500Z'],
    ['2025-01-02T00:00:00.123400Z', '2025-01-02T00:00:00.123400Z'],
    ['2025-01-02T00:00:00.1234567891Z', '2025-01-02T00:00:00.123456789Z'],
    ['2025-01-01T00:30:00+01:00', '2024-12-31T23:30:00Z'],
    ['2024-02-29t12:00:00-02:30', '2024-02-29T14:30:00Z'],
    ['2023-02-29T12:00:00Z', undefined], ['2025-01-02', undefined], ['2025-01-02T00:00:00', undefined], ['garbage', undefined],
    ['2016-12-31T23:59:60Z', '2016-12-31T23:59:60Z'], ['2017-01-01T00:59:60.25+01:00', '2016-12-31T23:59:60.250Z'],
  ];
  for (const [i, want] of ts) assert.equal(normalizeTimestamp(i), want, i);
  assert.deepEqual(imageReferenceFromOrigin('docker://quay.io/x/y:tag'), { image: 'quay.io/x/y:tag', transport: 'registry' });
  assert.deepEqual(imageReferenceFromOrigin('registry:quay.io/x'), { image: 'quay.io/x', transport: 'registry' });
  assert.deepEqual(imageReferenceFromOrigin('oci:/srv/layout:v1'), { image: '/srv/layout:v1', transport: 'oci' });
  assert.deepEqual(imageReferenceFromOrigin('containers-storage:localhost/img'), { image: 'localhost/img', transport: 'containers-storage' });
  assert.deepEqual(imageReferenceFromOrigin('ostree-image-signed:docker://q/x'), { image: 'q/x', transport: 'registry', signature: 'containerPolicy' });
  assert.deepEqual(imageReferenceFromOrigin('ostree-remote-image:fedora:oci:/d'), { image: '/d', transport: 'oci', signature: { ostreeRemote: 'fedora' } });
  for (const bad of ['quay.io/x', 'docker:quay.io/x', 'ftp:x', 'oci:']) assert.throws(() => imageReferenceFromOrigin(bad), BootcfsError, bad);
  assert.deepEqual(parseStagedDeployment('{"depl_id":"ab","finalization_locked":true}'), { deplId: 'ab', finalizationLocked: true });
  for (const bad of ['', '{}', '{"depl_id":1,"finalization_locked":false}', '[]', 'null']) assert.throws(() => parseStagedDeployment(bad), BootcfsError);
  assert.equal(usrOverlayFromMountinfo('22 1 0:21 / / ro - overlay composefs ro\n'), null);
  assert.deepEqual(usrOverlayFromMountinfo('22 1 0:21 / / ro - overlay composefs ro\n30 22 0:40 / /usr ro,relatime - overlay overlay ro\n'), { accessMode: 'readOnly', persistence: 'transient' });
});

// ------------------------------------------------------------------------------------------------
// CLI (the command module run in a child process; the registry is the lead's)

function cli(args: string[]): { status: number; stdout: string; stderr: string } {
  const mod = path.join(REPO_ROOT, 'dist/src/cli/commands/status.js');
  const script = `import(${JSON.stringify(mod)}).then(async ({ command }) => {
    try { process.exitCode = await command.run(${JSON.stringify(args)}); }
    catch (e) { process.stderr.write('bootcfs: ' + e.message + '\\n'); process.exitCode = e.name === 'UsageError' ? 2 : 1; }
  });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test('CLI: --root/--boot-dir offline, --json/--format, --booted, usage errors, --help', async () => {
  const sys = await newSystem();
  const [a, b] = sys.images;
  deploy(sys, a, a!.id);
  deploy(sys, b, b!.id);
  blsEntry(sys, a!.id, true);
  blsEntry(sys, b!.id, false);
  const base = ['--root', sys.root, '--boot-dir', sys.esp];
  const j = cli([...base, '--json']);
  assert.equal(j.status, 0, j.stderr);
  const expected = formatJson(await readHostStatus({ sysroot: sys.root, bootDir: sys.esp }));
  assert.equal(j.stdout, expected);
  assert.equal(cli([...base, '--format', 'json', '--format-version', '0']).stdout, expected);
  const y = cli([...base]); // not a TTY → YAML
  assert.equal(y.status, 0, y.stderr);
  assert.match(y.stdout, /^apiVersion: org\.containers\.bootc\/v1\n/);
  const h = cli([...base, '--format=humanreadable']);
  assert.match(h.stdout, /^ {3}Other image: quay\.io\/example\/os:v1\n/);
  assert.match(h.stdout, /\n\n {3}Other image: quay\.io\/example\/os:v2\n/);
  const booted = JSON.parse(cli([...base, '--json', '--booted']).stdout) as { status: Record<string, unknown> };
  assert.equal(booted.status.rollback, null);
  assert.equal(booted.status.booted, null);
  // the ESP found under the root without --boot-dir: DIR/boot
  fs.renameSync(sys.esp, path.join(sys.root, 'boot'));
  assert.equal(cli(['--root', sys.root, '--json']).stdout, expected);
  for (const bad of [['--format', 'xml'], ['--format-version', '2'], ['--json', '--format', 'yaml'], ['extra'], ['--nope']]) {
    const r = cli([...base, ...bad]);
    assert.equal(r.status, 2, `${bad.join(' ')}: ${r.stderr}`);
  }
  assert.equal(cli(['--root', path.join(sys.root, 'missing')]).status, 2);
  const help = cli(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Usage: bootcfs status /);
});

test('image metadata: missing repository or a manifest digest not in it → image null with a warning, nothing else lost', async () => {
  const sys = await newSystem();
  const [a, b] = sys.images;
  deploy(sys, a, a!.id);
  deploy(sys, b, b!.id, { manifestDigest: `sha256:${'0'.repeat(64)}` });
  blsEntry(sys, a!.id, true);
  blsEntry(sys, b!.id, false);
  const host = await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` }));
  assert.equal(host.status.booted?.image?.imageDigest, a!.manifestDigest);
  assert.equal(host.status.rollback?.image, null);
  assert.equal(host.status.rollback?.composefs.verity, b!.id);
  assert.equal(sys.warnings.length, 1);
  assert.match(sys.warnings[0]!, new RegExp(`deployment ${b!.id}: no image information: .*oci-manifest-sha256:0{64}`));
  fs.unlinkSync(path.join(sys.root, 'composefs'));
  sys.warnings.length = 0;
  const h2 = await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` }));
  assert.equal(h2.status.booted?.image, null);
  assert.equal(h2.status.booted?.composefs.verity, a!.id);
  assert.match(sys.warnings[0]!, /cannot open the repository/);
  assert.equal(sys.warnings.length, 3);
});

test('status reads the repository without writing to it', async () => {
  const sys = await newSystem();
  const [a] = sys.images;
  deploy(sys, a, a!.id);
  blsEntry(sys, a!.id, true);
  const snapshot = (): string => spawnSync('find', [path.join(sys.root, 'composefs/'), '-printf', '%p %s %T@\\n'], { encoding: 'utf8' }).stdout;
  const before = snapshot();
  await readHostStatus(sys.opts({ cmdline: `composefs=${a!.id}` }));
  assert.equal(snapshot(), before);
});

export type { BootEntry };
