/**
 * reference tier: the YAML `bootcfs status` writes (src/deploy/yaml.ts) read back by PyYAML — both its
 * pure-Python SafeLoader and the libyaml-based CSafeLoader — must equal the JSON of the same document:
 *
 *   - a real status document (readHostStatus over a repository with a pulled image, an origin file,
 *     a BLS entry, a /run staged marker),
 *   - seeded random BootcHost documents whose string fields (image names, versions, timestamps, digests)
 *     are drawn from YAML's trouble spots: implicit types of YAML 1.1 (yes/no/on/off, octal, sexagesimal,
 *     timestamps, floats with several dots) and 1.2, indicators, ": " and " #", quotes, backslashes,
 *     control characters, C1, U+2028/2029, BOM, non-ASCII and astral characters, edge blanks, empty.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Repository } from '../../src/repository/index.js';
import { pullImage } from '../../src/oci/pull.js';
import { writeOrigin, originFileName } from '../../src/boot/origin.js';
import { writeBlsEntry, entryFileName, sortKey } from '../../src/boot/bls.js';
import {
  readHostStatus, formatJson, formatYaml, type BootcHost, type BootEntry, type ImageStatus,
} from '../../src/deploy/status.js';
import { toYaml } from '../../src/deploy/yaml.js';
import { buildTar, writeOciLayout } from '../helpers/oci-layout.js';
import { Rng } from '../helpers/rng.js';
import { cases, run } from '../helpers/ref.js';

const PY = `
import sys, json, yaml
docs = json.load(sys.stdin)
out = {}
for name, loader in (('python', yaml.SafeLoader), ('libyaml', getattr(yaml, 'CSafeLoader', None))):
    if loader is None:
        sys.exit('PyYAML has no CSafeLoader (libyaml binding missing)')
    out[name] = [yaml.load(d, Loader=loader) for d in docs]
json.dump(out, sys.stdout, ensure_ascii=True)
`;

/** Both PyYAML loaders' parse of each YAML document. */
function pyParse(docs: string[]): { python: unknown[]; libyaml: unknown[] } {
  const r = run('python3', ['-c', PY], { input: JSON.stringify(docs) });
  assert.equal(r.status, 0, r.stderr.toString());
  return JSON.parse(r.stdout.toString('utf8')) as { python: unknown[]; libyaml: unknown[] };
}

const TRICKY = [
  '', ' ', 'yes', 'No', 'ON', 'off', 'y', 'n', '~', 'null', 'NULL', 'true', 'False', '.inf', '-.Inf', '.nan', '<<', '=',
  '0', '-1', '+1', '010', '0o17', '0x1F', '0b101', '1_000', '1:20', '-1:20:30', '1.0', '1e5', '1E+5', '6.8523015e+5',
  '42.20250102.0', '.5', '5.', '190:20:30.15', '2025-01-02', '2025-1-2', '2025-01-02T00:00:00Z', '2025-01-02 00:00:00 +1',
  '- x', '-x', '? x', ': x', 'a: b', 'a:b', 'a #b', 'a#b', '#a', '&a', '*a', '!a', '!!str', '|', '>', '%YAML', '@x', '`x',
  "'", '"', "it's", 'say "hi"', 'back\\slash', '[a]', '{a: 1}', 'a,b', 'a]', '---', '...', 'x:', 'x :', ' lead', 'trail ',
  'tab\there', 'line\nbreak', 'cr\rx', '\0', '\x07bell', '\x1b[0m', '\x7f', '\u0085', '\u00a0', '\u2028', '\u2029', '\ufeff',
  'ünïcödé', '€', '😀', 'a😀b', 'quay.io/example/os:latest', 'sha256:abc', 'docker://x/y:1', 'containers-storage:localhost/x',
];

function randomString(rng: Rng): string {
  if (rng.bool(0.4)) return rng.pick(TRICKY);
  const pool = ['a', 'Z', '0', '9', '.', ':', '-', '_', '/', ' ', '#', '\'', '"', '\\', '\n', '\t', ',', '[', '}', '?', '!', '&', '*',
    '|', '>', '%', '@', '`', 'e', 'E', '+', 'ü', '€', '😀', '\u0085', '\u2028', '\u00a0', '\x01', '\x7f', 'x', 'y', 'T', 'Z'];
  const n = rng.int(0, 12);
  let s = '';
  for (let i = 0; i < n; i++) s += rng.pick(pool);
  return rng.bool(0.2) ? rng.pick(TRICKY) + s : s;
}

function randomImage(rng: Rng): ImageStatus | null {
  if (rng.bool(0.2)) return null;
  const img: ImageStatus = {
    image: { image: randomString(rng), transport: rng.pick(['registry', 'oci', 'containers-storage', randomString(rng)]) },
    version: rng.bool(0.3) ? null : randomString(rng),
    timestamp: rng.bool(0.3) ? null : randomString(rng),
    imageDigest: randomString(rng),
    architecture: randomString(rng),
  };
  if (rng.bool(0.2)) img.image.signature = rng.pick(['containerPolicy', 'insecure', { ostreeRemote: randomString(rng) }] as const);
  return img;
}

function randomEntry(rng: Rng): BootEntry {
  return {
    image: randomImage(rng), cachedUpdate: rng.bool(0.1) ? randomImage(rng) : null,
    incompatible: rng.bool(), pinned: rng.bool(), softRebootCapable: rng.bool(), downloadOnly: rng.bool(), store: null, ostree: null,
    composefs: {
      verity: randomString(rng), bootType: rng.pick(['Bls', 'Uki'] as const), bootloader: rng.pick(['grub', 'grub-cc', 'systemd', 'none'] as const),
      bootDigest: rng.bool(0.3) ? null : randomString(rng), missingVerityAllowed: rng.bool(),
    },
  };
}

function randomHost(rng: Rng): BootcHost {
  const maybe = (): BootEntry | null => (rng.bool(0.4) ? null : randomEntry(rng));
  return {
    apiVersion: 'org.containers.bootc/v1', kind: 'BootcHost', metadata: { name: 'host' },
    spec: { image: rng.bool(0.3) ? null : { image: randomString(rng), transport: randomString(rng) }, bootOrder: rng.pick(['default', 'rollback'] as const) },
    status: {
      staged: maybe(), booted: maybe(), rollback: maybe(), otherDeployments: Array.from({ length: rng.int(0, 3) }, () => randomEntry(rng)),
      rollbackQueued: rng.bool(), type: null,
      usrOverlay: rng.bool(0.5) ? null : { accessMode: rng.pick(['readOnly', 'readWrite'] as const), persistence: rng.pick(['transient', 'persistent'] as const) },
      readOnly: rng.bool(),
    },
  };
}

test('PyYAML (SafeLoader and CSafeLoader) reads our YAML of a real status document as our JSON', async () => {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'bootcfs-status-yaml-'));
  try {
    const layout = path.join(dir, 'layout');
    writeOciLayout(layout, {
      layers: [{ tar: buildTar([{ path: 'usr/', type: 'dir', mode: 0o755 }, { path: 'usr/x', type: 'reg', content: Buffer.alloc(100, 1) }]) }],
      tag: 'v1', config: { created: '2025-01-02T03:04:05.5+02:00', config: { Labels: { 'org.opencontainers.image.version': '1.0' } } },
    });
    const root = path.join(dir, 'root');
    const esp = path.join(dir, 'esp');
    const repo = await Repository.init(path.join(root, 'composefs'), { insecure: true });
    const r = await pullImage(repo, `oci:${layout}:v1`, { tag: 'localhost/bootc' });
    await repo.close();
    const id = r.imageId.toString('hex');
    fs.mkdirSync(path.join(root, 'state/deploy', id, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(root, 'state/deploy', id, originFileName(id)), writeOrigin({
      imageReference: 'oci:/srv/my layout:v1', bootType: 'bls', bootDigest: 'a'.repeat(64), manifestDigest: r.manifestDigest, extra: [],
    }));
    fs.mkdirSync(path.join(esp, 'loader/entries.staged'), { recursive: true });
    fs.writeFileSync(path.join(esp, 'loader/entries.staged', entryFileName('os', '1.0', true)), writeBlsEntry({
      version: '1.0', linux: '/vmlinuz', initrd: [], options: [`composefs=?${id}`], sortKey: sortKey('os', true), extra: [],
    }));
    fs.mkdirSync(path.join(dir, 'run/composefs'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'run/composefs/staged-deployment'), JSON.stringify({ depl_id: id, finalization_locked: false }));
    const host = await readHostStatus({ sysroot: root, bootDir: esp, runDir: path.join(dir, 'run'), cmdline: 'rw' });
    assert.equal(host.status.staged?.image?.version, '1.0');
    assert.equal(host.status.staged?.image?.timestamp, '2025-01-02T01:04:05.500Z');
    const parsed = pyParse([formatYaml(host)]);
    const want = JSON.parse(formatJson(host)) as unknown;
    assert.deepEqual(parsed.python[0], want);
    assert.deepEqual(parsed.libyaml[0], want);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('PyYAML reads seeded random status documents (tricky strings) exactly as their JSON', () => {
  const n = cases(300, 5000);
  const rng = new Rng(0x5747);
  const hosts = Array.from({ length: n }, () => randomHost(rng));
  const yamls = hosts.map(formatYaml);
  // and every tricky scalar alone, as a value and as a key
  const scalars = TRICKY.map((s) => toYaml({ [s]: s, k: [s, { [s]: [] }] }));
  const t0 = Date.now();
  const parsed = pyParse([...yamls, ...scalars]);
  const ms = Date.now() - t0;
  for (const loader of ['python', 'libyaml'] as const) {
    hosts.forEach((h, i) => assert.deepEqual(parsed[loader][i], JSON.parse(formatJson(h)), `${loader}: document ${i}:\n${yamls[i]}`));
    TRICKY.forEach((s, i) => assert.deepEqual(parsed[loader][n + i], { [s]: s, k: [s, { [s]: [] }] }, `${loader}: ${JSON.stringify(s)}`));
  }
  assert.ok(ms < 120_000, `python took ${ms} ms`);
});
