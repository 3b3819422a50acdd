/**
 * `bootcfs cfs …`: the composefs repository verbs of cfsctl (composefs-format.md §8), over the typed
 * library (src/repository/). Global options come before the verb:
 *
 *   bootcfs cfs [--repo DIR] [--insecure] VERB [options] ARGS
 *
 * Default repository: /sysroot/composefs as root, ~/.var/lib/composefs otherwise (cfsctl --system /
 * --user). Image names: a hex image id, `refs/NAME`, or a bare NAME meaning `refs/NAME`.
 *
 * Verbs: init, create-image, compute-id, image-objects, gc, fsck, mount, and `oci` pull / images /
 * inspect / compute-id / create-image / mount (src/oci/pull.ts, src/oci/image.ts). `--bootable` (pull,
 * compute-id, create-image, oci mount) selects the bootable image (src/oci/bootable.ts). Output: image ids as hex; gc as cfsctl
 * ("Objects: N removed (B bytes)"); fsck exits 1 on damage. Errors: `bootcfs: message`, exit 1; usage
 * errors exit 2 (UsageError).
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError, parseCli, writeOut, type Command } from '../command.js';
import { Repository } from '../../repository/repository.js';
import { formatGcResult } from '../../repository/gc.js';
import { formatFsckResult } from '../../repository/fsck.js';
import { computeDirectoryImageId, createImageFromDirectory } from '../../oci/directory-image.js';
import { mountImage } from '../../repository/mount.js';
import {
  BOOT_IMAGE_REF,
  IMAGE_REF,
  computeImageId,
  configStreamName,
  createImage,
  imageRefName,
  manifestStreamName,
  ociTagRef,
  recordedImageId,
  resolveConfigStream,
} from '../../oci/image.js';
import { pullImage } from '../../oci/pull.js';
import { ProgressReporter } from '../../util/progress.js';
import { BootcfsError } from '../../errors.js';
import { listObjects } from '../../composefs/info.js';
import { isHashAlgorithm } from '../../fsverity/index.js';
import type { ErofsFormatVersion } from '../../repository/meta.js';

interface Globals {
  repo: string;
  insecure: boolean;
}

const GLOBAL_OPTIONS = `Global options (before the command):
  --repo DIR        the repository (default: /sysroot/composefs as root, ~/.var/lib/composefs otherwise)
  --insecure        do not require fs-verity (init: record the repository as insecure; other commands:
                    open a repository without verification even if it is not declared insecure)
  -h, --help        show this help`;

const NAME_HELP = `NAME is a hex image id, refs/NAME, or a bare NAME (meaning refs/NAME).`;

interface Verb {
  summary: string;
  usage: string;
  help: string;
  run(g: Globals, argv: string[]): Promise<number>;
}

function defaultRepo(): string {
  return process.getuid?.() === 0 ? '/sysroot/composefs' : path.join(os.homedir(), '.var/lib/composefs');
}

function openRepo(g: Globals, opts: { readOnly?: boolean } = {}): Promise<Repository> {
  return Repository.open(g.repo, { insecure: g.insecure || undefined, readOnly: opts.readOnly });
}

async function withRepo<T>(g: Globals, fn: (r: Repository) => Promise<T>, opts: { readOnly?: boolean } = {}): Promise<T> {
  const repo = await openRepo(g, opts);
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

function positionals(verb: string, got: string[], min: number, max: number, usage: string): string[] {
  if (got.length < min) throw new UsageError(`cfs ${verb}: missing argument (usage: ${usage})`);
  if (got.length > max) throw new UsageError(`cfs ${verb}: unexpected argument '${got[max]}' (usage: ${usage})`);
  return got;
}

/** NAME → `images/` name: hex id as is, `refs/…` as is, anything else as `refs/NAME`. */
function imageName(repo: Repository, name: string): string {
  if (name.length === repo.digestSize * 2 && /^[0-9a-f]+$/.test(name)) return name;
  return name.startsWith('refs/') ? name : `refs/${name}`;
}

function helpOf(v: Verb): string {
  return `Usage: bootcfs cfs [--repo DIR] [--insecure] ${v.usage}\n\n${v.help}\n`;
}

const HELP_OPT = { help: { type: 'boolean', short: 'h' } } as const;

const verbs: Record<string, Verb> = {
  init: {
    summary: 'create a repository (idempotent for the same configuration)',
    usage: 'init [--hash sha256|sha512] [--format v1|v2]',
    help: `Create the repository directory (mode 0700) with meta.json, objects/, images/ and streams/.
Re-running with the same configuration does nothing; a different configuration is refused.

Options:
  --hash ALG        fs-verity algorithm of object names: sha512 (default, as bootc) or sha256
  --format FMT      EROFS format of new images: v1 (default, C-compatible) or v2 (composefs-rs native)
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { hash: { type: 'string' }, format: { type: 'string' }, ...HELP_OPT });
      if (values.help) return printHelp('init');
      positionals('init', pos, 0, 0, this.usage);
      const hash = values.hash ?? 'sha512';
      if (!isHashAlgorithm(hash)) throw new UsageError(`unknown hash algorithm '${hash}' (available: sha256 sha512)`);
      const fmt = values.format ?? 'v1';
      const formats: Record<string, ErofsFormatVersion> = { v1: 1, v2: 2 };
      const erofsFormat = formats[fmt];
      if (erofsFormat === undefined) throw new UsageError(`unknown image format '${fmt}' (available: v1 v2)`);
      const repo = await Repository.init(g.repo, { algorithm: hash, erofsFormat, insecure: g.insecure });
      await repo.close();
      return 0;
    },
  },
  'create-image': {
    summary: 'build a composefs image from a directory into the repository',
    usage: 'create-image [--bootable] [--no-propagate-usr-to-root] DIR [NAME]',
    help: `Scan DIR (hardlinks preserved, files of up to 64 bytes inline), store its files as objects, apply
the xattr rule bootcfs-xattrs-1 (keep user.*, security.* except security.selinux, and POSIX ACLs) and
the OCI root transform (the root takes /usr's metadata; /run is emptied), write the image in the
repository's EROFS format and print its id (hex). With NAME, also point images/refs/NAME at it.

Options:
  --bootable                   apply the bootable transform: /boot and /sysroot emptied (mtime of /usr),
                               SELinux labels from the tree's policy (or all labels removed without one)
  --no-propagate-usr-to-root   skip the OCI root transform (needed for trees without /usr)
  -h, --help                   show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { bootable: { type: 'boolean' }, 'no-propagate-usr-to-root': { type: 'boolean' }, ...HELP_OPT });
      if (values.help) return printHelp('create-image');
      const [dir, name] = positionals('create-image', pos, 1, 2, this.usage) as [string, string | undefined];
      const id = await withRepo(g, (repo) =>
        createImageFromDirectory(repo, dir, { name, propagateUsrToRoot: !values['no-propagate-usr-to-root'], bootable: values.bootable }),
      );
      await writeOut(process.stdout, `${id.toString('hex')}\n`);
      return 0;
    },
  },
  'compute-id': {
    summary: 'print the image id create-image would produce, writing nothing',
    usage: 'compute-id [--bootable] [--no-propagate-usr-to-root] DIR',
    help: `Compute the image id (hex) of DIR exactly as create-image would, with the repository's algorithm
and EROFS format; nothing is written.

Options:
  --bootable                   apply the bootable transform (as create-image --bootable)
  --no-propagate-usr-to-root   skip the OCI root transform (needed for trees without /usr)
  -h, --help                   show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { bootable: { type: 'boolean' }, 'no-propagate-usr-to-root': { type: 'boolean' }, ...HELP_OPT });
      if (values.help) return printHelp('compute-id');
      const [dir] = positionals('compute-id', pos, 1, 1, this.usage) as [string];
      const cfg = await withRepo(g, async (repo) => ({ algorithm: repo.algorithm, erofsFormat: repo.erofsFormat }), { readOnly: true });
      const { id } = await computeDirectoryImageId(dir, cfg, { propagateUsrToRoot: !values['no-propagate-usr-to-root'], bootable: values.bootable });
      await writeOut(process.stdout, `${id.toString('hex')}\n`);
      return 0;
    },
  },
  'image-objects': {
    summary: 'list the objects an image references',
    usage: 'image-objects NAME',
    help: `Print the id (hex) of every object image NAME references, one per line, sorted.
${NAME_HELP}

Options:
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, HELP_OPT);
      if (values.help) return printHelp('image-objects');
      const [name] = positionals('image-objects', pos, 1, 1, this.usage) as [string];
      const ids = await withRepo(
        g,
        async (repo) => listObjects(await repo.openImage(imageName(repo, name))).map((o) => o.replace(/\//g, '')),
        { readOnly: true },
      );
      await writeOut(process.stdout, ids.map((i) => `${i}\n`).join(''));
      return 0;
    },
  },
  gc: {
    summary: 'delete images, streams and objects no ref reaches',
    usage: 'gc [--root NAME]... [--dry-run]',
    help: `Garbage-collect the repository: everything reachable from images/refs, streams/refs and the
extra roots stays; every other image and stream name and every unreferenced object is deleted.
Prints "Objects: N removed (B bytes)".

Options:
  -r, --root NAME   also keep image or stream NAME (repeatable)
  -n, --dry-run     report what would be removed; delete nothing
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, {
        root: { type: 'string', short: 'r', multiple: true },
        'dry-run': { type: 'boolean', short: 'n' },
        ...HELP_OPT,
      });
      if (values.help) return printHelp('gc');
      positionals('gc', pos, 0, 0, this.usage);
      const res = await withRepo(g, (repo) => repo.gc({ extraRoots: values.root ?? [], dryRun: values['dry-run'] ?? false }));
      await writeOut(process.stdout, formatGcResult(res));
      return 0;
    },
  },
  fsck: {
    summary: 'check the repository; exit 1 on damage',
    usage: 'fsck [--repair] [--json]',
    help: `Re-measure every object against its name and check every image, stream and ref. Exits 1 if
anything is damaged.

Options:
  --repair          delete damaged objects (the next pull or create-image stores them again)
  --json            print the result as JSON
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { repair: { type: 'boolean' }, json: { type: 'boolean' }, ...HELP_OPT });
      if (values.help) return printHelp('fsck');
      positionals('fsck', pos, 0, 0, this.usage);
      const res = await withRepo(g, (repo) => repo.fsck({ repair: values.repair ?? false }), { readOnly: !values.repair });
      await writeOut(process.stdout, values.json ? `${JSON.stringify(res, null, 2)}\n` : formatFsckResult(res));
      return res.ok ? 0 : 1;
    },
  },
  mount: {
    summary: 'mount an image read-only (erofs + overlayfs over the objects; root)',
    usage: 'mount NAME MOUNTPOINT',
    help: `Mount image NAME read-only at MOUNTPOINT: the EROFS image, stacked by overlayfs on the
repository's objects (data-only lower layer, metacopy=on, redirect_dir=on, and verity=require unless
the repository is insecure). The image is verified against its id first. Needs root.
${NAME_HELP}

Options:
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, HELP_OPT);
      if (values.help) return printHelp('mount');
      const [name, mountpoint] = positionals('mount', pos, 2, 2, this.usage) as [string, string];
      await withRepo(g, (repo) => mountImage(repo, imageName(repo, name), mountpoint), { readOnly: true });
      return 0;
    },
  },
};

// ------------------------------------------------------------------------------------------ oci

/** `streams/refs/oci/<encoded>` → tag (inverse of ociTagRef). */
function decodeTag(encoded: string): string {
  return encoded.replace(/%2F/g, '/').replace(/%25/g, '%');
}

/** The manifest stream of a tag or of `@sha256:<manifest digest>`. */
async function manifestStreamOf(repo: Repository, name: string): Promise<string> {
  const digest = /^@(sha256:[0-9a-f]{64})$/.exec(name);
  if (digest) return manifestStreamName(digest[1]!);
  const refs = await repo.streamRefs();
  const target = refs.get(ociTagRef(name));
  if (target === undefined) throw new BootcfsError('ENOENT', `no OCI image tagged '${name}' in the repository`);
  return target;
}

async function streamBytes(repo: Repository, name: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of repo.catStream(name)) parts.push(c);
  return Buffer.concat(parts);
}

/** Config digest named by a manifest stream's `config:` ref. */
async function configDigestOf(repo: Repository, manifestStream: string): Promise<string> {
  const ss = await repo.openStream(manifestStream);
  for (const [ref] of ss.namedRefs) if (ref.startsWith('config:')) return ref.slice('config:'.length);
  throw new BootcfsError('EFORMAT', `manifest stream '${manifestStream}' has no config reference`);
}

async function imageIdOf(repo: Repository, configDigest: string, ref: string = IMAGE_REF): Promise<string | undefined> {
  const ss = await repo.openStream(configStreamName(configDigest));
  return ss.namedRefs.get(ref)?.toString('hex');
}

/** `--progress-fd N` → N (an integer ≥ 1), or undefined. */
function progressFd(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v) || Number(v) < 1) throw new UsageError(`--progress-fd takes a file descriptor number ≥ 1, not '${v}'`);
  return Number(v);
}

const ociVerbs: Record<string, Verb> = {
  pull: {
    summary: 'pull an OCI image into the repository and build its composefs image',
    usage: 'oci pull [--bootable] [--tls-verify=false] [--progress-fd N] SOURCE [NAME]',
    help: `Pull SOURCE (oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE, docker://HOST/NAME[:TAG|@DIGEST])
into the repository: layers as splitstreams (files > 64 bytes as objects), the merged tree (xattr rule
bootcfs-xattrs-1, OCI root transform) as a composefs image, tagged NAME (default: SOURCE as given).
Layers already in the repository are not fetched again. Prints the manifest and config digests, the
image id and the tag. Plain HTTP is used for loopback registries only unless --tls-verify=false.

With --bootable the bootable image (/boot and /sysroot emptied, SELinux labels from the image's policy)
is built too, recorded as composefs.image.boot and printed as "boot". A progress bar per layer is
drawn on stderr when it is a terminal.

Options:
  --bootable          also build and record the bootable image
  --tls-verify=BOOL   verify registry TLS certificates (default true); false also permits plain HTTP
  --progress-fd N     write progress as JSON lines to file descriptor N: one object per event,
                      {"type":"layer-start"|"layer-progress"|"layer-done"|"image-done","digest",
                      "bytes","total","ts"} (bytes of the layer blob read so far; ≤ ~10 events/s per layer)
  -h, --help          show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, {
        bootable: { type: 'boolean' },
        'tls-verify': { type: 'string' },
        'progress-fd': { type: 'string' },
        ...HELP_OPT,
      });
      if (values.help) return printOciHelp('pull');
      const [source, name] = positionals('oci pull', pos, 1, 2, this.usage) as [string, string | undefined];
      const tv = values['tls-verify'];
      if (tv !== undefined && tv !== 'true' && tv !== 'false') throw new UsageError(`--tls-verify takes true or false, not '${tv}'`);
      const tag = name ?? source;
      const progress = new ProgressReporter({ fd: progressFd(values['progress-fd']), tty: process.stderr });
      let r;
      try {
        r = await withRepo(g, (repo) =>
          pullImage(repo, source, {
            tag,
            bootable: values.bootable,
            registry: tv === 'false' ? { tlsVerify: false } : undefined,
            onLayerBytes: progress.active ? (ev) => progress.layerProgress(ev.digest, ev.bytes) : undefined,
            onProgress: progress.active
              ? (ev) => {
                  if (ev.kind === 'layer-start') progress.layerStart(ev.digest, ev.size);
                  else if (ev.kind === 'layer-done') progress.layerDone(ev.digest);
                  else if (ev.kind === 'layer-skip') progress.layerDone(ev.digest, { bytes: ev.size, skipped: true });
                  else progress.imageDone(ev.imageId);
                }
              : undefined,
          }),
        );
      } finally {
        await progress.close();
      }
      await writeOut(
        process.stdout,
        `manifest ${r.manifestDigest}\nconfig   ${r.configDigest}\nverity   ${r.imageId.toString('hex')}\n` +
          (r.bootImageId && values.bootable ? `boot     ${r.bootImageId.toString('hex')}\n` : '') +
          `tagged   ${tag}\nlayers   ${r.layersImported} imported, ${r.layersSkipped} already present\n`,
      );
      return 0;
    },
  },
  images: {
    summary: 'list the tagged OCI images',
    usage: 'oci images [--json]',
    help: `List every tagged OCI image: tag, manifest digest, config digest and composefs image id.

Options:
  --json            print a JSON array of {name, manifest, config, image, bootImage}
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { json: { type: 'boolean' }, ...HELP_OPT });
      if (values.help) return printOciHelp('images');
      positionals('oci images', pos, 0, 0, this.usage);
      const rows = await withRepo(
        g,
        async (repo) => {
          const out: Array<{ name: string; manifest: string; config: string; image: string | undefined; bootImage: string | undefined }> = [];
          for (const [ref, stream] of await repo.streamRefs()) {
            if (!ref.startsWith('oci/') || !stream.startsWith('oci-manifest-')) continue;
            const config = await configDigestOf(repo, stream);
            out.push({
              name: decodeTag(ref.slice('oci/'.length)),
              manifest: stream.slice('oci-manifest-'.length),
              config,
              image: await imageIdOf(repo, config),
              bootImage: await imageIdOf(repo, config, BOOT_IMAGE_REF),
            });
          }
          return out;
        },
        { readOnly: true },
      );
      if (values.json) await writeOut(process.stdout, `${JSON.stringify(rows, null, 2)}\n`);
      else await writeOut(process.stdout, rows.map((r) => `${r.name}\t${r.manifest}\t${r.config}\t${r.image ?? '-'}\n`).join(''));
      return 0;
    },
  },
  inspect: {
    summary: 'show a stored OCI image (manifest, config, image id)',
    usage: 'oci inspect [--manifest | --config] NAME',
    help: `Print a stored OCI image as JSON: {name, manifestDigest, configDigest, image, bootImage, manifest, config}.
NAME is a tag or @sha256:<manifest digest>.

Options:
  --manifest        print the stored manifest bytes exactly as the registry served them
  --config          print the stored config bytes exactly as served
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { manifest: { type: 'boolean' }, config: { type: 'boolean' }, ...HELP_OPT });
      if (values.help) return printOciHelp('inspect');
      const [name] = positionals('oci inspect', pos, 1, 1, this.usage) as [string];
      if (values.manifest && values.config) throw new UsageError('oci inspect: --manifest and --config are exclusive');
      const out = await withRepo(
        g,
        async (repo) => {
          const ms = await manifestStreamOf(repo, name);
          const manifest = await streamBytes(repo, ms);
          if (values.manifest) return manifest;
          const configDigest = await configDigestOf(repo, ms);
          const config = await streamBytes(repo, configStreamName(configDigest));
          if (values.config) return config;
          const doc = {
            name,
            manifestDigest: ms.slice('oci-manifest-'.length),
            configDigest,
            image: (await imageIdOf(repo, configDigest)) ?? null,
            bootImage: (await imageIdOf(repo, configDigest, BOOT_IMAGE_REF)) ?? null,
            manifest: JSON.parse(manifest.toString('utf8')) as unknown,
            config: JSON.parse(config.toString('utf8')) as unknown,
          };
          return Buffer.from(`${JSON.stringify(doc, null, 2)}\n`);
        },
        { readOnly: true },
      );
      await writeOut(process.stdout, out);
      return 0;
    },
  },
  'compute-id': {
    summary: 'print the composefs image id of a stored OCI image, writing nothing',
    usage: 'oci compute-id [--bootable] NAME',
    help: `Rebuild the composefs image of a stored OCI image from its layer streams and print its id (hex),
without writing anything. NAME is a tag or @sha256:<config digest>.

Options:
  --bootable        the bootable image (/boot and /sysroot emptied, SELinux labels from the image's policy)
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { bootable: { type: 'boolean' }, ...HELP_OPT });
      if (values.help) return printOciHelp('compute-id');
      const [name] = positionals('oci compute-id', pos, 1, 1, this.usage) as [string];
      const id = await withRepo(
        g,
        async (repo) => {
          await resolveConfigStream(repo, name);
          return computeImageId(repo, name, { bootable: values.bootable });
        },
        { readOnly: true },
      );
      await writeOut(process.stdout, `${id.toString('hex')}\n`);
      return 0;
    },
  },
  'create-image': {
    summary: 'write the composefs image of a stored OCI image into images/',
    usage: 'oci create-image [--bootable] NAME [IMAGE-NAME]',
    help: `Build the composefs image of stored OCI image NAME (a tag or @sha256:<config digest>), write it to
images/ (and images/refs/IMAGE-NAME if given), record it in the image's config stream
(composefs.image, or composefs.image.boot with --bootable) and print its id (hex).

Options:
  --bootable        the bootable image (/boot and /sysroot emptied, SELinux labels from the image's policy)
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { bootable: { type: 'boolean' }, ...HELP_OPT });
      if (values.help) return printOciHelp('create-image');
      const [name, imageRef] = positionals('oci create-image', pos, 1, 2, this.usage) as [string, string | undefined];
      const id = await withRepo(g, (repo) => createImage(repo, name, { bootable: values.bootable, name: imageRef }));
      await writeOut(process.stdout, `${id.toString('hex')}\n`);
      return 0;
    },
  },
  mount: {
    summary: 'mount the composefs image of a stored OCI image (root)',
    usage: 'oci mount [--bootable] NAME MOUNTPOINT',
    help: `Mount the composefs image recorded for stored OCI image NAME (a tag or @sha256:<config digest>)
read-only at MOUNTPOINT, like 'cfs mount': composefs.image, or composefs.image.boot with --bootable
(made by 'oci pull --bootable' or 'oci create-image --bootable'). Needs root.

Options:
  --bootable        mount the bootable image
  -h, --help        show this help`,
    async run(g, argv) {
      const { values, positionals: pos } = parseCli(argv, { bootable: { type: 'boolean' }, ...HELP_OPT });
      if (values.help) return printOciHelp('mount');
      const [name, mountpoint] = positionals('oci mount', pos, 2, 2, this.usage) as [string, string];
      await withRepo(
        g,
        async (repo) => {
          const id = await recordedImageId(repo, name, { bootable: values.bootable });
          if (id === undefined) {
            throw new BootcfsError(
              'ENOENT',
              `OCI image '${name}' has no ${imageRefName(values.bootable)} image recorded (run 'cfs oci create-image${values.bootable ? ' --bootable' : ''} ${name}')`,
            );
          }
          await mountImage(repo, id.toString('hex'), mountpoint);
        },
        { readOnly: true },
      );
      return 0;
    },
  },
};

async function printOciHelp(verb: string): Promise<number> {
  await writeOut(process.stdout, helpOf(ociVerbs[verb]!));
  return 0;
}

const OCI_HELP = `Usage: bootcfs cfs [--repo DIR] [--insecure] oci COMMAND [options...]

OCI images in the repository, like cfsctl oci.

Commands:
${Object.entries(ociVerbs)
  .map(([n, v]) => `  ${n.padEnd(15)} ${v.summary}`)
  .join('\n')}

Run 'bootcfs cfs oci COMMAND --help' for a command's options.
`;

const ociVerb: Verb = {
  summary: 'OCI images: pull, images, inspect, compute-id, create-image, mount',
  usage: 'oci COMMAND [options...]',
  help: OCI_HELP,
  async run(g, argv) {
    const [sub, ...rest] = argv;
    if (sub === '--help' || sub === '-h') {
      await writeOut(process.stdout, OCI_HELP);
      return 0;
    }
    if (sub === undefined) throw new UsageError(`cfs oci: no command given (commands: ${Object.keys(ociVerbs).join(', ')})`);
    const v = ociVerbs[sub];
    if (v === undefined) throw new UsageError(`cfs oci: unknown command '${sub}' (commands: ${Object.keys(ociVerbs).join(', ')})`);
    return v.run(g, rest);
  },
};
verbs.oci = ociVerb;

async function printHelp(verb: string): Promise<number> {
  await writeOut(process.stdout, verb === 'oci' ? OCI_HELP : helpOf(verbs[verb]!));
  return 0;
}

const HELP = `Usage: bootcfs cfs [--repo DIR] [--insecure] COMMAND [options...]

composefs repositories, like cfsctl.

Commands:
${Object.entries(verbs)
  .map(([n, v]) => `  ${n.padEnd(15)} ${v.summary}`)
  .join('\n')}

${GLOBAL_OPTIONS}

Run 'bootcfs cfs COMMAND --help' for a command's options.`;

/** Split off the global options; everything from the verb on belongs to the verb. */
function parseGlobals(argv: string[]): { g: Globals; verb: string | undefined; rest: string[]; help: boolean } {
  let repo: string | undefined;
  let insecure = false;
  let help = false;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--repo') {
      if (i + 1 >= argv.length) throw new UsageError("option '--repo' needs a value");
      repo = argv[++i]!;
    } else if (a.startsWith('--repo=')) repo = a.slice('--repo='.length);
    else if (a === '--insecure') insecure = true;
    else if (a === '--help' || a === '-h') help = true;
    else if (a.startsWith('-') && a !== '-') throw new UsageError(`unknown option '${a}' (global options: --repo, --insecure)`);
    else break;
  }
  if (repo === '') throw new UsageError("option '--repo' needs a non-empty value");
  return { g: { repo: repo ?? defaultRepo(), insecure }, verb: argv[i], rest: argv.slice(i + 1), help };
}

export const command: Command = {
  name: 'cfs',
  summary: 'composefs repositories (init, create-image, compute-id, mount, gc, fsck, ...)',
  help: HELP,
  async run(argv) {
    const { g, verb, rest, help } = parseGlobals(argv);
    if (verb === undefined) {
      if (!help) throw new UsageError(`cfs: no command given (commands: ${Object.keys(verbs).join(', ')})`);
      await writeOut(process.stdout, `${HELP}\n`);
      return 0;
    }
    const v = verbs[verb];
    if (v === undefined) throw new UsageError(`cfs: unknown command '${verb}' (commands: ${Object.keys(verbs).join(', ')})`);
    if (help) return printHelp(verb);
    return v.run(g, rest);
  },
};

/** The verbs, for tests and other front ends. */
export const CFS_VERBS: readonly string[] = Object.keys(verbs);
